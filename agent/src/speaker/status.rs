//! What the agent tells about itself: the status document (`nonstop-agent
//! status`, `GET /status`) and the Prometheus metrics (`GET /metrics`).
//!
//! Each peer task publishes its [`PeerStatus`] on a watch channel; readers
//! take a snapshot, so serving status never blocks a session.

use std::net::IpAddr;
use std::sync::Arc;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// Metric label values in snake_case, as Prometheus names things
/// (`rolled_back`, `route_refresh`), whatever the Rust or JSON spelling.
macro_rules! label_values {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            /// The value as a metric label carries it.
            pub fn label(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),*
                }
            }
        }

        impl EncodeLabelValue for $ty {
            fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
                encoder.write_str(self.label())
            }
        }
    };
}

/// The whole status document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub version: String,
    pub pid: u32,
    /// The pod the agent runs in (`--pod`, `NONSTOP_POD`), when it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    pub asn: u32,
    pub router_id: String,
    pub listen: String,
    pub uptime_seconds: u64,
    /// Announcements the agent means to send now: the configured ones but
    /// those their checks keep out (not probed yet, or withdrawn).
    pub routes_announced: usize,
    /// `active` (this agent speaks for the node) or `retired` (it handed
    /// everything to its successor and holds nothing).
    pub role: Role,
    /// Set once retired: the agent that took over.
    pub successor: Option<AgentRef>,
    /// The last handoff this agent took part in, either side.
    pub last_handoff: Option<HandoffReport>,
    pub peers: Vec<PeerStatus>,
    /// Each BMP collector's connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bmp: Vec<CollectorStatus>,
    /// Each checked announcement's verdict.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckStatus>,
    /// The published set in force (`PUT /announcements`), when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published: Option<PublishedStatus>,
    /// The config's peers this node does not run though it matches their
    /// selector, each with why: no usable address here (a node annotation,
    /// a default route), or one another peer already has.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers_not_run: Vec<String>,
}

/// The published set, as `/status` tells it (`GET /announcements` has it whole).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedStatus {
    pub version: String,
    pub prefixes: usize,
}

/// A checked announcement, as `/status` tells it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckStatus {
    pub prefix: String,
    /// `unknown` (not probed yet), `up` (announced), `draining` (sent with
    /// GRACEFUL_SHUTDOWN, to be withdrawn), `down` (withdrawn).
    pub verdict: String,
    /// Since when (Unix ms).
    pub since_ms: u64,
    /// What the last probe saw.
    pub detail: String,
}

/// The checks' status as the speaker last wrote it, for `/status`.
pub type CheckBoard = std::sync::Arc<std::sync::Mutex<Vec<CheckStatus>>>;

/// A BMP collector's connection, as `/status` tells it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CollectorStatus {
    /// `address:port`.
    pub collector: String,
    pub up: bool,
    /// Since when it is up, or down (Unix ms).
    pub since_ms: u64,
    /// Connections made by this agent (one carried on from a predecessor
    /// is not counted).
    pub connects: u64,
    /// Carried on from the predecessor agent in a handoff.
    pub carried_on: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    #[default]
    Active,
    Retired,
}

/// Another agent, as it introduced itself in the handoff.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentRef {
    pub pid: u32,
    pub version: String,
}

/// What a handoff did, as each side saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HandoffReport {
    /// `successor`: this agent took over; `predecessor`: it handed over.
    pub role: HandoffRole,
    pub result: HandoffResult,
    /// Why it was refused or rolled back, or what was missing.
    pub reason: Option<String>,
    /// The agent at the other end.
    pub other: AgentRef,
    pub sessions: usize,
    pub listeners: usize,
    /// Bytes of session and routing state that crossed.
    pub state_bytes: usize,
    /// The longest any session went untended: from the predecessor's last
    /// read of it to the moment the successor's task took it up (successor
    /// side only; none when no session was adopted).
    pub pause_ms: Option<f64>,
    /// Unix time (ms) it ended.
    pub at_ms: u64,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum HandoffRole {
    Successor,
    Predecessor,
}

label_values!(HandoffRole { Successor => "successor", Predecessor => "predecessor" });

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum HandoffResult {
    /// Everything crossed; the predecessor retired.
    Completed,
    /// The predecessor died mid-way: what crossed was kept, the rest fell
    /// back to Graceful Restart.
    Partial,
    /// The predecessor refused the successor at HELLO.
    Refused,
    /// An error or a timeout before commit; the predecessor carried on.
    RolledBack,
}

label_values!(HandoffResult {
    Completed => "completed",
    Partial => "partial",
    Refused => "refused",
    RolledBack => "rolled_back",
});

/// Metric labels of a handoff.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandoffLabels {
    pub role: HandoffRole,
    pub result: HandoffResult,
}

/// One peer, as its task last published it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub address: String,
    pub asn: u32,
    pub state: crate::session::State,
    /// Seconds since the session reached Established (0 when it is not).
    pub uptime_seconds: u64,
    /// Unix time (ms) of the last change to or from Established; the
    /// operator lists it in the gateway's status (older agents' status
    /// lacks it, and the gateway's then shows no `establishedSince`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub established_since_ms: Option<u64>,
    pub established_transitions: u64,
    pub local_address: Option<String>,
    pub hold_time: Option<u16>,
    pub keepalive_time: Option<u16>,
    pub capabilities: Vec<String>,
    pub families: Vec<String>,
    pub routes_received: usize,
    /// Received routes kept only because the peer is restarting (RFC 4724)
    /// or by Long-Lived GR (RFC 9494).
    pub routes_stale: usize,
    pub routes_advertised: usize,
    /// Announcements that cannot be sent to this peer, with the reason.
    pub routes_skipped: Vec<String>,
    /// Announcements from the peer its import policy refused, since the
    /// session came up (all of them with `accept: none`).
    pub routes_refused: u64,
    /// A family at or past the warning share of `maxPrefixes`, or held down
    /// after a reset for it.
    pub prefix_limit: Option<String>,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub last_error: Option<String>,
    /// Why the session was last reset with a NOTIFICATION, sent or received.
    /// Kept through the failed connections that may follow (a router may
    /// refuse them for a while after a NOTIFICATION), which overwrite
    /// `last_error`; cleared when the session is Established.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reset: Option<String>,
    /// The session's recent events, oldest first (`GET /events`, `show
    /// events`; left out of `/status`).
    #[serde(skip)]
    pub events: Vec<SessionEvent>,
}

/// `GET /events`: each peer's recent session events.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventsDocument {
    pub peers: Vec<PeerEvents>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PeerEvents {
    pub address: String,
    /// Oldest first.
    pub events: Vec<SessionEvent>,
}

/// Something that happened to a peer's session, as `show events` lists it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionEvent {
    /// Unix time (ms) of its last occurrence.
    pub at_ms: u64,
    pub kind: SessionEventKind,
    pub detail: String,
    /// How many times in a row it happened (a dial failing every retry).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum SessionEventKind {
    /// Both OPENs agreed; the detail has what each side offered.
    Established,
    /// The session went down, with the reason.
    Down,
    NotificationSent,
    /// The peer's NOTIFICATION, decoded (code, subcode, shutdown message).
    NotificationReceived,
    /// A dial or a connection failed under the session.
    Connection,
    /// Two connections at once (RFC 4271 §6.8): which was kept.
    Collision,
    /// Helping a restarting peer, its End-of-RIB, stale timers (RFC 4724,
    /// RFC 9494).
    GracefulRestart,
    /// Decommission: GRACEFUL_SHUTDOWN sent, the drain over.
    Drain,
    /// The peer went past `maxPrefixes`, or sent a malformed UPDATE.
    Import,
    /// The session crossed between agents.
    Handoff,
}

impl SessionEventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionEventKind::Established => "established",
            SessionEventKind::Down => "down",
            SessionEventKind::NotificationSent => "notification-sent",
            SessionEventKind::NotificationReceived => "notification-received",
            SessionEventKind::Connection => "connection",
            SessionEventKind::Collision => "collision",
            SessionEventKind::GracefulRestart => "graceful-restart",
            SessionEventKind::Drain => "drain",
            SessionEventKind::Import => "import",
            SessionEventKind::Handoff => "handoff",
        }
    }
}

/// Metric label: which peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

/// Metric label: which checked announcement.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PrefixLabel {
    pub prefix: String,
}

/// Metric label: which BMP collector (`address:port`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CollectorLabel {
    pub collector: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    Received,
    Sent,
}

label_values!(Direction { Received => "received", Sent => "sent" });

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum MessageKind {
    Open,
    Update,
    Notification,
    Keepalive,
    RouteRefresh,
}

label_values!(MessageKind {
    Open => "open",
    Update => "update",
    Notification => "notification",
    Keepalive => "keepalive",
    RouteRefresh => "route_refresh",
});

impl MessageKind {
    /// Every kind, in declaration order (`kind as usize` indexes it).
    pub const ALL: [MessageKind; 5] = [
        MessageKind::Open,
        MessageKind::Update,
        MessageKind::Notification,
        MessageKind::Keepalive,
        MessageKind::RouteRefresh,
    ];

    pub fn of(m: &crate::wire::Message) -> Self {
        use crate::wire::Message::*;
        match m {
            Open(_) => MessageKind::Open,
            Update(_) => MessageKind::Update,
            Notification(_) => MessageKind::Notification,
            Keepalive => MessageKind::Keepalive,
            RouteRefresh(_) => MessageKind::RouteRefresh,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MessageLabels {
    pub peer: String,
    pub direction: Direction,
    pub kind: MessageKind,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub peer: String,
    pub direction: Direction,
}

/// Kinds of errors a session can meet.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bytes that could not be decoded; the session was reset.
    Decode,
    /// An UPDATE attribute handled by RFC 7606 without a reset.
    MalformedAttribute,
    /// The peer sent a NOTIFICATION.
    NotificationReceived,
    HoldTimerExpired,
    /// Connecting, reading or writing failed.
    Transport,
    /// The peer went past `maxPrefixes` for a family.
    PrefixLimit,
    /// An AS_PATH from an external peer that RFC 7606 §7.2 treats as withdrawn.
    MalformedAsPath,
}

label_values!(ErrorKind {
    Decode => "decode",
    MalformedAttribute => "malformed_attribute",
    NotificationReceived => "notification_received",
    HoldTimerExpired => "hold_timer_expired",
    Transport => "transport",
    PrefixLimit => "prefix_limit",
    MalformedAsPath => "malformed_as_path",
});

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub peer: String,
    pub kind: ErrorKind,
}

/// The agent's metrics; cheap to clone, shared by the peer tasks.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub established: Family<PeerLabel, Gauge>,
    pub messages: Family<MessageLabels, Counter>,
    pub routes: Family<RouteLabels, Gauge>,
    pub errors: Family<ErrorLabels, Counter>,
    pub refused: Family<PeerLabel, Counter>,
    pub handoffs: Family<HandoffLabels, Counter>,
    pub handoff_pause: Histogram,
    pub handoff_sessions: Gauge,
    pub handoff_state_bytes: Gauge,
    pub bmp_up: Family<CollectorLabel, Gauge>,
    pub bmp_connects: Family<CollectorLabel, Counter>,
    pub bmp_sent_bytes: Family<CollectorLabel, Counter>,
    pub check_up: Family<PrefixLabel, Gauge>,
    pub check_failures: Family<PrefixLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            established: Family::default(),
            messages: Family::default(),
            routes: Family::default(),
            errors: Family::default(),
            refused: Family::default(),
            handoffs: Family::default(),
            // 0.5 ms … ~4 s: a single session pauses for about a
            // millisecond, a full table for hundreds.
            handoff_pause: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            handoff_sessions: Gauge::default(),
            handoff_state_bytes: Gauge::default(),
            bmp_up: Family::default(),
            bmp_connects: Family::default(),
            bmp_sent_bytes: Family::default(),
            check_up: Family::default(),
            check_failures: Family::default(),
        }
    }
}

/// `nonstop_build_info{component, version} 1`, Prometheus' build-info
/// convention: which build a scrape came from, for dashboards and alerts to
/// join other series on. `component` is `agent` or `operator`. And
/// `process_start_time_seconds`, by which restarts show.
pub fn register_build_info(registry: &mut Registry, component: &str) {
    let labels = vec![
        ("component".to_string(), component.to_string()),
        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
    ];
    registry.register("nonstop_build", "The build that runs", Info::new(labels));
    // The standard process metric: a change of it on the same pod is a
    // restart in place (the agent's pods restart on failure).
    let started: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    started.set(now.map(|d| d.as_secs_f64()).unwrap_or_default());
    registry.register(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch",
        started,
    );
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "nonstop_bgp_session_established",
            "1 while the session with the peer is Established",
            self.established.clone(),
        );
        registry.register(
            "nonstop_bgp_messages",
            "BGP messages by peer, direction and type",
            self.messages.clone(),
        );
        registry.register(
            "nonstop_bgp_routes",
            "Routes in the Adj-RIB-In (received) and Adj-RIB-Out (sent) of each peer",
            self.routes.clone(),
        );
        registry.register("nonstop_bgp_errors", "Session errors by kind", self.errors.clone());
        registry.register(
            "nonstop_bgp_routes_refused",
            "Announcements the peer's import policy refused",
            self.refused.clone(),
        );
        registry.register(
            "nonstop_handoffs",
            "Handoffs this agent took part in, by its role and the result",
            self.handoffs.clone(),
        );
        registry.register(
            "nonstop_handoff_pause_seconds",
            "From the predecessor's last read of a session to the successor's first",
            self.handoff_pause.clone(),
        );
        registry.register(
            "nonstop_handoff_sessions",
            "Sessions passed in the last handoff",
            self.handoff_sessions.clone(),
        );
        registry.register(
            "nonstop_handoff_state_bytes",
            "Bytes of session and routing state passed in the last handoff",
            self.handoff_state_bytes.clone(),
        );
        registry.register(
            "nonstop_bmp_up",
            "1 while the connection to the BMP collector is up",
            self.bmp_up.clone(),
        );
        registry.register(
            "nonstop_bmp_connects",
            "Connections made to the BMP collector (each one is told everything)",
            self.bmp_connects.clone(),
        );
        registry.register(
            "nonstop_bmp_sent_bytes",
            "Bytes of BMP messages written to the collector",
            self.bmp_sent_bytes.clone(),
        );
        registry.register(
            "nonstop_check_up",
            "1 while the checked prefix is announced as configured; 0 while its check \
             has not passed yet, drains it or withdraws it",
            self.check_up.clone(),
        );
        registry.register(
            "nonstop_check_failures",
            "Probes of the checked prefix's service that failed",
            self.check_failures.clone(),
        );
    }

    pub fn handoff(&self, report: &HandoffReport) {
        let labels = HandoffLabels { role: report.role, result: report.result };
        self.handoffs.get_or_create(&labels).inc();
        if let Some(ms) = report.pause_ms {
            self.handoff_pause.observe(ms / 1000.0);
        }
        self.handoff_sessions.set(report.sessions as i64);
        self.handoff_state_bytes.set(report.state_bytes as i64);
    }

    pub fn message(&self, peer: IpAddr, direction: Direction, kind: MessageKind) {
        let labels = MessageLabels { peer: peer.to_string(), direction, kind };
        self.messages.get_or_create(&labels).inc();
    }

    pub fn error(&self, peer: IpAddr, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { peer: peer.to_string(), kind }).inc();
    }
}

/// One peer's metric series, looked up once: their labels are strings, and
/// a lookup per message allocated them anew. A clone of a series is the
/// same series.
#[derive(Debug, Clone)]
pub struct PeerSeries {
    received: [Counter; 5],
    sent: [Counter; 5],
    pub routes_received: Gauge,
    pub routes_sent: Gauge,
    /// 1 while the session is Established.
    pub established: Gauge,
}

impl PeerSeries {
    pub fn new(metrics: &Metrics, peer: IpAddr) -> Self {
        use MessageKind::*;
        let peer = peer.to_string();
        let messages = |direction| {
            [Open, Update, Notification, Keepalive, RouteRefresh].map(|kind| {
                let labels = MessageLabels { peer: peer.clone(), direction, kind };
                metrics.messages.get_or_create(&labels).clone()
            })
        };
        let routes = |direction| {
            let labels = RouteLabels { peer: peer.clone(), direction };
            metrics.routes.get_or_create(&labels).clone()
        };
        Self {
            received: messages(Direction::Received),
            sent: messages(Direction::Sent),
            routes_received: routes(Direction::Received),
            routes_sent: routes(Direction::Sent),
            established: metrics.established.get_or_create(&PeerLabel { peer }).clone(),
        }
    }

    pub fn message(&self, direction: Direction, kind: MessageKind) -> &Counter {
        let i = kind as usize;
        match direction {
            Direction::Received => &self.received[i],
            Direction::Sent => &self.sent[i],
        }
    }
}

/// `nonstop_agent_start_time_seconds{agent_pod}`: when this agent started,
/// labelled with its own pod. On the host network every agent of a node
/// answers on the same port, and during a handoff the old pod's address
/// already answers with the new agent; a scraper labels what it reads by the
/// pod it asked. The agent's own pod in the series keeps the new agent's
/// start from reading as a restart of the old pod: a change of this value
/// within one series is a restart in place.
pub fn register_agent_start(registry: &mut Registry, pod: Option<&str>) {
    #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
    struct AgentPod {
        agent_pod: String,
    }
    let started: Family<AgentPod, Gauge<f64, std::sync::atomic::AtomicU64>> = Family::default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    started
        .get_or_create(&AgentPod { agent_pod: pod.unwrap_or_default().to_string() })
        .set(now.map(|d| d.as_secs_f64()).unwrap_or_default());
    registry.register(
        "nonstop_agent_start_time_seconds",
        "When this agent started (Unix seconds), labelled with the pod it runs in",
        started,
    );
}

/// The registry rendered as OpenMetrics text.
pub fn render_metrics(registry: &Arc<Registry>) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}
