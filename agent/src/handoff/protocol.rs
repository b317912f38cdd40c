//! The messages of the handoff, agent to agent over the state dir's
//! AF_UNIX SOCK_SEQPACKET socket: one message per packet, descriptors beside
//! them as SCM_RIGHTS.
//!
//! ```text
//!  successor (new)                         predecessor (old)
//!   HELLO {versions, token, can carry} ──▶  admit? ──▶ WELCOME {peers} | ABORT(reason)
//!                                     ◀──  RIB {peer, part, UPDATE bytes} …   snapshot, live
//!                                     ◀──  COPIED
//!   READY (all of it applied) ────────▶
//!                                     ◀──  EVENTS {peer, JSON} …   if HELLO asked; sessions live
//!                                          ── every session frozen: the pause starts ──
//!                                     ◀──  LISTENERS            + BGP, admin fds (admin alone: no BGP listener)
//!                                     ◀──  SESSIONS [≤253]      + their fds
//!                                     ◀──  RIB {peer, part, …} …   what changed since the snapshot
//!                                     ◀──  DONE {sessions}
//!   COMMIT ───────────────────────────▶    (not timed out?) RETIRE | ABORT
//!   resumes every session only after RETIRE: at most one writer, always
//! ```
//!
//! The full tables cross while the sessions still run (the successor decodes
//! them as they come); the pause only carries what changed meanwhile.
//!
//! Wire form: one kind byte, then the body — JSON for the small control
//! messages, raw BGP UPDATE messages (our own codec) for routing state.

use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

/// Version of this message set; both sides must speak the same.
pub const PROTOCOL: u16 = 2;
/// Version of the session state layout a predecessor writes.
pub const STATE_SCHEMA: u16 = 1;
/// Most descriptors one packet may carry (the kernel's SCM_MAX_FD).
pub const MAX_FDS: usize = 253;

/// Something a session may have negotiated that a successor must be able to
/// carry on, or refuse the handoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Feature {
    Ipv4Unicast,
    Ipv6Unicast,
    FourOctetAs,
    ExtendedMessage,
    RouteRefresh,
    EnhancedRouteRefresh,
    GracefulRestart,
    NotificationGracefulRestart,
    LongLivedGracefulRestart,
    TcpMd5,
}

impl Feature {
    /// Every feature this build can carry.
    pub const ALL: [Feature; 10] = [
        Feature::Ipv4Unicast,
        Feature::Ipv6Unicast,
        Feature::FourOctetAs,
        Feature::ExtendedMessage,
        Feature::RouteRefresh,
        Feature::EnhancedRouteRefresh,
        Feature::GracefulRestart,
        Feature::NotificationGracefulRestart,
        Feature::LongLivedGracefulRestart,
        Feature::TcpMd5,
    ];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u16,
    /// The session state layout the successor reads.
    pub state_schema: u16,
    pub agent_version: String,
    pub pid: u32,
    /// Proves the successor may read the state dir (a file only its owner reads).
    pub token: String,
    pub can_carry: Vec<Feature>,
    /// The pod the successor runs in and when that pod was made
    /// (`name@created-ms`), when the operator runs it. A predecessor gives
    /// no second try to an incarnation whose handoff already failed here:
    /// its pod is being rolled back, and the kubelet restarting its
    /// container before the deletion lands must not hand it the node.
    /// Absent from older agents' HELLO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
    /// The successor keeps each session's recent events: send them (after
    /// READY, before the freeze). A predecessor that does not know the
    /// field ignores it, and one that does sends nothing to a successor
    /// that leaves it out: either side may be the older.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub events: bool,
    /// The successor carries BMP collector connections on: send them
    /// (MONITORS, in the pause) rather than closing them. Like `events`,
    /// either side may be the older.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitors: bool,
    /// The successor starts its checked announcements from our verdicts:
    /// send them (VERDICTS, in the pause). Either side may be the older;
    /// an older successor probes afresh (a cold start's verdicts).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub verdicts: bool,
}

/// A checked announcement's verdict at the freeze; a drain's end is given
/// as the milliseconds it has left (the two agents' clocks differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedVerdict {
    pub prefix: crate::route::Prefix,
    pub verdict: crate::health::Verdict,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    pub agent_version: String,
    pub pid: u32,
    /// Every configured peer; RIB messages name a peer by its index here.
    pub peers: Vec<IpAddr>,
}

/// One Established session, frozen at a message boundary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionState {
    pub peer: IpAddr,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Both OPENs as sent, framed: the successor negotiates them again and
    /// gets exactly the same session parameters.
    pub local_open: Vec<u8>,
    pub peer_open: Vec<u8>,
    pub keepalive_time: u16,
    /// Milliseconds left on the hold timer (None: hold time 0).
    pub hold_remaining_ms: Option<u64>,
    /// Milliseconds until our next KEEPALIVE is due (None: hold time 0, or
    /// a predecessor older than this field; the successor then sends one at
    /// once). Optional on the wire both ways, so agents with and without it
    /// hand over to each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_remaining_ms: Option<u64>,
    pub established_since_ms: u64,
    pub established_transitions: u64,
    pub features: Vec<Feature>,
    /// CLOCK_MONOTONIC (ns) of the predecessor's last read of the session.
    pub frozen_at_ns: u64,
}

/// Which part of a session's routing state a RIB message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RibPart {
    /// What the peer sent us, fresh.
    In,
    /// Kept for a restarting peer (RFC 4724).
    InStale,
    /// Kept by Long-Lived GR (RFC 9494).
    InLongLived,
    /// What the peer has from us.
    Out,
    /// Bytes read off the socket that are not yet a whole message; the
    /// successor reads them first (raw bytes, not UPDATEs).
    Unread,
    /// Bytes queued for the socket but not yet written; the successor writes
    /// them first, before its KEEPALIVE (raw bytes).
    Unwritten,
    /// Prefixes gone from the Adj-RIB-In since the snapshot (withdrawals).
    InGone,
    /// Prefixes gone from the Adj-RIB-Out since the snapshot (withdrawals).
    OutGone,
}

impl RibPart {
    const ALL: [RibPart; 8] = [
        RibPart::In,
        RibPart::InStale,
        RibPart::InLongLived,
        RibPart::Out,
        RibPart::Unread,
        RibPart::Unwritten,
        RibPart::InGone,
        RibPart::OutGone,
    ];

    /// Whether the part is a stream of UPDATE messages (cut at message
    /// boundaries) rather than raw socket bytes.
    pub fn is_updates(self) -> bool {
        !matches!(self, RibPart::Unread | RibPart::Unwritten)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Hello(Hello),
    Welcome(Welcome),
    /// The reason, for the other side's log and status.
    Abort(String),
    /// Comes with 2 descriptors: the BGP listener, then the admin listener.
    Listeners,
    /// Comes with one descriptor per session, in order.
    Sessions(Vec<SessionState>),
    /// BGP UPDATE messages (4-octet AS, extended length) for one peer,
    /// by its index in WELCOME's `peers`; applied in the order they come.
    Rib {
        session: u32,
        part: RibPart,
        updates: Vec<u8>,
    },
    Done {
        sessions: u32,
    },
    Commit,
    Retire,
    /// The first pass (every table as it stood, sessions running) is sent.
    Copied,
    /// The successor has applied all of the first pass: freeze now, so that
    /// none of it is left to do in the pause.
    Ready,
    /// One peer's recent session events (by its index in WELCOME's
    /// `peers`), as the JSON of `Vec<SessionEvent>`: the successor decodes
    /// them once its sessions run, not while they wait.
    Events {
        session: u32,
        json: Vec<u8>,
    },
    /// Comes with one descriptor per BMP collector connection, in order:
    /// each collector's address. Every message the frozen sessions made
    /// has been written to them; the successor writes on.
    Monitors(Vec<std::net::SocketAddr>),
    /// Every checked announcement's verdict, so the successor's sessions
    /// announce what ours did.
    Verdicts(Vec<CarriedVerdict>),
}

/// A handoff message that cannot be used, said so that a person can act.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad handoff message: {0}")]
pub struct BadMessage(pub String);

const HELLO: u8 = 1;
const WELCOME: u8 = 2;
const ABORT: u8 = 3;
const LISTENERS: u8 = 4;
const SESSIONS: u8 = 5;
const RIB: u8 = 6;
const DONE: u8 = 7;
const COMMIT: u8 = 8;
const RETIRE: u8 = 9;
const COPIED: u8 = 10;
const READY: u8 = 11;
const EVENTS: u8 = 12;
const MONITORS: u8 = 13;
const VERDICTS: u8 = 14;

fn json<T: Serialize>(kind: u8, value: &T) -> Vec<u8> {
    let mut out = vec![kind];
    serde_json::to_writer(&mut out, value).expect("handoff messages serialise");
    out
}

fn parse<'a, T: Deserialize<'a>>(what: &str, body: &'a [u8]) -> Result<T, BadMessage> {
    serde_json::from_slice(body).map_err(|e| BadMessage(format!("{what}: {e}")))
}

impl Message {
    pub fn name(&self) -> &'static str {
        match self {
            Message::Hello(_) => "HELLO",
            Message::Welcome(_) => "WELCOME",
            Message::Abort(_) => "ABORT",
            Message::Listeners => "LISTENERS",
            Message::Sessions(_) => "SESSIONS",
            Message::Rib { .. } => "RIB",
            Message::Done { .. } => "DONE",
            Message::Commit => "COMMIT",
            Message::Retire => "RETIRE",
            Message::Copied => "COPIED",
            Message::Ready => "READY",
            Message::Events { .. } => "EVENTS",
            Message::Monitors(_) => "MONITORS",
            Message::Verdicts(_) => "VERDICTS",
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        match self {
            Message::Hello(h) => json(HELLO, h),
            Message::Welcome(w) => json(WELCOME, w),
            Message::Abort(reason) => json(ABORT, reason),
            Message::Listeners => vec![LISTENERS],
            Message::Sessions(s) => json(SESSIONS, s),
            Message::Rib { session, part, updates } => {
                let part = RibPart::ALL.iter().position(|p| p == part).expect("listed") as u8;
                let mut out = Vec::with_capacity(updates.len() + 6);
                out.push(RIB);
                out.extend_from_slice(&session.to_be_bytes());
                out.push(part);
                out.extend_from_slice(updates);
                out
            }
            Message::Done { sessions } => json(DONE, sessions),
            Message::Commit => vec![COMMIT],
            Message::Retire => vec![RETIRE],
            Message::Copied => vec![COPIED],
            Message::Ready => vec![READY],
            Message::Events { session, json } => {
                let mut out = Vec::with_capacity(json.len() + 5);
                out.push(EVENTS);
                out.extend_from_slice(&session.to_be_bytes());
                out.extend_from_slice(json);
                out
            }
            Message::Monitors(collectors) => json(MONITORS, collectors),
            Message::Verdicts(verdicts) => json(VERDICTS, verdicts),
        }
    }

    pub fn decode(packet: &[u8]) -> Result<Message, BadMessage> {
        let Some((&kind, body)) = packet.split_first() else {
            return Err(BadMessage("empty packet".into()));
        };
        let bare = |m: Message| {
            if body.is_empty() {
                Ok(m)
            } else {
                Err(BadMessage(format!("{} carries {} unexpected bytes", m.name(), body.len())))
            }
        };
        match kind {
            HELLO => parse("HELLO", body).map(Message::Hello),
            WELCOME => parse("WELCOME", body).map(Message::Welcome),
            ABORT => parse("ABORT", body).map(Message::Abort),
            LISTENERS => bare(Message::Listeners),
            SESSIONS => parse("SESSIONS", body).map(Message::Sessions),
            RIB => {
                let [a, b, c, d, part, updates @ ..] = body else {
                    return Err(BadMessage(format!(
                        "RIB of {} bytes is shorter than its header",
                        body.len()
                    )));
                };
                let Some(&part) = RibPart::ALL.get(usize::from(*part)) else {
                    return Err(BadMessage(format!("RIB part {part} is not known")));
                };
                let session = u32::from_be_bytes([*a, *b, *c, *d]);
                Ok(Message::Rib { session, part, updates: updates.to_vec() })
            }
            DONE => parse("DONE", body).map(|sessions| Message::Done { sessions }),
            COMMIT => bare(Message::Commit),
            RETIRE => bare(Message::Retire),
            COPIED => bare(Message::Copied),
            READY => bare(Message::Ready),
            EVENTS => match body {
                [a, b, c, d, json @ ..] => Ok(Message::Events {
                    session: u32::from_be_bytes([*a, *b, *c, *d]),
                    json: json.to_vec(),
                }),
                _ => Err(BadMessage(format!(
                    "EVENTS of {} bytes is shorter than its header",
                    body.len()
                ))),
            },
            MONITORS => parse("MONITORS", body).map(Message::Monitors),
            VERDICTS => parse("VERDICTS", body).map(Message::Verdicts),
            other => Err(BadMessage(format!("message kind {other} is not known"))),
        }
    }
}
