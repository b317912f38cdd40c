//! One task per configured peer. Its protocol lives in a sans-IO
//! [`PeerCore`] (`core`): both connection slots and their session FSMs,
//! both Adj-RIBs, the Graceful Restart helper, collisions, the drain and the
//! prefix limit, driven by events and answering with effects. Its
//! [`PeerTask`] (`task`) owns the sockets, the dial, the deadline and the
//! command channel, and nothing else touches them.
//!
//! ```text
//!  speaker ──PeerCommand──▶ PeerTask ──PeerStatus (watch)──▶ status readers
//!                            │ sockets, dial, deadline
//!                            │   ▲ PeerEffect
//!                            ▼   │
//!                           PeerCore: main slot (Session), inbound slot (a
//!                                     colliding connection, until §6.8
//!                                     decides), AdjRibIn, AdjRibOut
//! ```
//!
//! Connections and collisions are in `connections`, session events in
//! `events`, the prefix limit in `limits`, the status in `report`, the
//! handoff's core half in `handoff`.

mod connections;
mod core;
mod event_log;
mod events;
mod handoff;
mod limits;
mod monitor;
mod report;
mod task;

pub use self::core::{ConnId, ConnInfo, PeerCore, PeerEffect, PeerEvent};
pub use handoff::{Adopted, FrozenPeer, RibSnapshot, Thaw};
pub use task::{Begin, PeerTask};

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::{Announcement, Peer};
use crate::handoff::protocol::Feature;
use crate::session::{LocalOffer, SessionConfig};
use crate::wire::{AfiSafi, Capability, GrFamily, GracefulRestartCap, LlgrFamily, Notification};

/// What the speaker asks of a peer task.
#[derive(Debug)]
pub enum PeerCommand {
    /// The peer connected to our listener.
    Inbound(TcpStream),
    /// The routes to announce changed.
    Announce(Arc<Vec<Announcement>>),
    /// Close the session with this NOTIFICATION and end the task.
    Stop(Notification),
    /// Graceful restart stop: close without a NOTIFICATION, so the peer keeps
    /// our routes stale (RFC 4724), and end the task.
    Vanish,
    /// Going away for good (RFC 8326): announce everything again with
    /// GRACEFUL_SHUTDOWN, wait `drain`, then Cease (Hard Reset under the
    /// N-bit) with this message, and end the task.
    Decommission { drain: Duration, message: String },
    /// What the Established session negotiated that a successor must be
    /// able to carry (None: no Established session to hand off).
    Features(tokio::sync::oneshot::Sender<Option<std::collections::BTreeSet<Feature>>>),
    /// A copy of both RIBs for a handoff to send while the session runs
    /// (None: no Established session to hand off).
    Snapshot(tokio::sync::oneshot::Sender<Option<Arc<RibSnapshot>>>),
    /// A copy of both RIBs as they are, for `GET /routes` (stale routes of
    /// a session that is down included).
    Tables(tokio::sync::oneshot::Sender<Arc<RibSnapshot>>),
    /// The session's recent events, for a successor to keep.
    Events(tokio::sync::oneshot::Sender<Vec<crate::speaker::status::SessionEvent>>),
    /// Events a predecessor recorded for this peer, older than ours.
    Inherit(Vec<crate::speaker::status::SessionEvent>),
    /// A BMP collector connection (by id) was just made: publish Peer Up
    /// and both Adj-RIBs for it alone.
    Replay(u64),
    /// Pause for a handoff: reply with the frozen session (None when not
    /// Established) and its routing state as changed since `base` (all of
    /// it without one), then wait for how the handoff ended.
    Freeze {
        reply: tokio::sync::oneshot::Sender<Option<FrozenPeer>>,
        thaw: tokio::sync::oneshot::Receiver<Thaw>,
        base: Option<Arc<RibSnapshot>>,
    },
}

/// How a peer task starts, beyond the peer's config.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// The TCP MD5 key (RFC 2385), read from the peer's Secret.
    pub password: Option<Arc<[u8]>>,
    /// The peer's metric series if looked up already (a successor does
    /// it before its handoff's pause).
    pub series: Option<crate::speaker::status::PeerSeries>,
    /// Where to publish what the session does for BMP collectors.
    pub tap: Option<crate::speaker::monitor::Tap>,
}

/// The local side of every session of this agent.
#[derive(Debug, Clone)]
pub struct Local {
    pub asn: u32,
    pub router_id: Ipv4Addr,
}

/// The capabilities we offer a peer, from its config.
pub fn capabilities(peer: &Peer, local_asn: u32) -> Vec<Capability> {
    let families: Vec<AfiSafi> = peer.families.iter().map(|f| AfiSafi::from(*f)).collect();
    let mut caps: Vec<Capability> =
        families.iter().map(|f| Capability::Multiprotocol(*f)).collect();
    caps.extend([
        Capability::RouteRefresh,
        Capability::EnhancedRouteRefresh,
        Capability::ExtendedMessage,
        Capability::FourOctetAs(local_asn),
    ]);
    let gr = &peer.graceful_restart;
    if gr.enabled {
        caps.push(Capability::GracefulRestart(GracefulRestartCap {
            restarting: false,
            notification: gr.notification,
            restart_time: gr.restart_time,
            families: families.iter().map(|f| GrFamily { family: *f, forwarding: true }).collect(),
        }));
        if gr.long_lived_stale_time > 0 {
            caps.push(Capability::LongLivedGracefulRestart(
                families
                    .iter()
                    .map(|f| LlgrFamily {
                        family: *f,
                        forwarding: true,
                        stale_time: gr.long_lived_stale_time,
                    })
                    .collect(),
            ));
        }
    }
    caps
}

fn session_config(peer: &Peer, local: &Local, passive: bool) -> SessionConfig {
    SessionConfig {
        offer: LocalOffer {
            asn: local.asn,
            router_id: local.router_id,
            hold_time: peer.hold_time,
            keepalive_time: peer.keepalive_time,
            peer_asn: peer.asn,
            capabilities: capabilities(peer, local.asn),
        },
        connect_retry: Duration::from_secs(u64::from(peer.connect_retry_time)),
        passive,
    }
}

#[cfg(test)]
mod core_tests;
