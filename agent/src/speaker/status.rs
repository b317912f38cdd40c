//! What the agent tells about itself: the status document (`nonstop-agent
//! status`, `GET /status`) and the Prometheus metrics (`GET /metrics`).
//!
//! Each peer task publishes its [`PeerStatus`] on a watch channel; readers
//! take a snapshot, so serving status never blocks a session.

use std::net::IpAddr;
use std::sync::Arc;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

/// The whole status document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentStatus {
    pub version: String,
    pub pid: u32,
    pub asn: u32,
    pub router_id: String,
    pub listen: String,
    pub uptime_seconds: u64,
    pub routes_announced: usize,
    pub peers: Vec<PeerStatus>,
}

/// One peer, as its task last published it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerStatus {
    pub address: String,
    pub asn: u32,
    pub state: String,
    /// Seconds since the session reached Established (0 when it is not).
    pub uptime_seconds: u64,
    /// Unix time (ms) of the last change to or from Established.
    #[serde(skip)]
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
    pub messages_received: u64,
    pub messages_sent: u64,
    pub last_error: Option<String>,
}

/// Metric label: which peer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabel {
    pub peer: String,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    Received,
    Sent,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum MessageKind {
    Open,
    Update,
    Notification,
    Keepalive,
    RouteRefresh,
}

impl MessageKind {
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
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
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
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub peer: String,
    pub kind: ErrorKind,
}

/// The agent's metrics; cheap to clone, shared by the peer tasks.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub established: Family<PeerLabel, Gauge>,
    pub messages: Family<MessageLabels, Counter>,
    pub routes: Family<RouteLabels, Gauge>,
    pub errors: Family<ErrorLabels, Counter>,
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
    }

    pub fn message(&self, peer: IpAddr, direction: Direction, kind: MessageKind) {
        let labels = MessageLabels { peer: peer.to_string(), direction, kind };
        self.messages.get_or_create(&labels).inc();
    }

    pub fn error(&self, peer: IpAddr, kind: ErrorKind) {
        self.errors.get_or_create(&ErrorLabels { peer: peer.to_string(), kind }).inc();
    }
}

/// The registry rendered as OpenMetrics text.
pub fn render_metrics(registry: &Arc<Registry>) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry).expect("writing to a String");
    out
}
