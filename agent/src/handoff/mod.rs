//! Hitless handoff: a successor agent on the same node takes the listener and
//! every live session over from the running agent (the README's "The ways an
//! agent stops"). This module owns the protocol and its decisions, sans I/O:
//!
//! ```text
//!  protocol      — the messages and their bytes
//!  admit         — does the predecessor accept this successor? (versions,
//!                  token, every feature its sessions negotiated)
//!  session_state — a live session frozen to bytes and negotiated again
//!  rib_state     — a session's RIBs as BGP UPDATE streams and back
//!  transport     — the SOCK_SEQPACKET channel with SCM_RIGHTS
//! ```
//!
//! The conversations themselves (sockets, the lock, freezing and resuming
//! peer tasks) are the speaker's edge: `speaker::handoff` and
//! `speaker::peer::handoff`.

pub mod protocol;
pub mod rib_state;
pub mod session_state;
pub mod transport;

use std::collections::BTreeSet;
use std::net::IpAddr;

use protocol::{Feature, Hello, PROTOCOL, STATE_SCHEMA};

use crate::session::Negotiated;
use crate::wire::AfiSafi;

/// Why a predecessor refuses a successor; the text goes to both logs and to
/// the successor's exit message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("handoff protocol {theirs} is not {ours}, the one this agent speaks")]
    Protocol { ours: u16, theirs: u16 },
    #[error("the successor reads session state schema {theirs}; this agent writes {ours}")]
    StateSchema { ours: u16, theirs: u16 },
    #[error("the successor's token does not match the state dir's")]
    Token,
    #[error("the successor cannot carry {feature:?}, negotiated with {peer}")]
    Feature { feature: Feature, peer: IpAddr },
}

/// The features a session negotiated that whoever runs it must support.
pub fn features(n: &Negotiated, md5: bool) -> BTreeSet<Feature> {
    let mut out = BTreeSet::new();
    for f in &n.families {
        match *f {
            AfiSafi::IPV4_UNICAST => out.insert(Feature::Ipv4Unicast),
            AfiSafi::IPV6_UNICAST => out.insert(Feature::Ipv6Unicast),
            _ => false,
        };
    }
    let flags = [
        (n.wire.four_octet_as, Feature::FourOctetAs),
        (n.wire.extended_messages, Feature::ExtendedMessage),
        (n.route_refresh, Feature::RouteRefresh),
        (n.enhanced_route_refresh, Feature::EnhancedRouteRefresh),
        (n.graceful_restart, Feature::GracefulRestart),
        (n.notification_gr, Feature::NotificationGracefulRestart),
        (n.long_lived, Feature::LongLivedGracefulRestart),
        (md5, Feature::TcpMd5),
    ];
    out.extend(flags.into_iter().filter(|(on, _)| *on).map(|(_, f)| f));
    out
}

/// The predecessor's decision on a HELLO: the first reason to refuse, in the
/// order a person would fix them (versions, then identity, then features).
pub fn admit(
    hello: &Hello,
    token: &str,
    sessions: &[(IpAddr, BTreeSet<Feature>)],
) -> Result<(), Refusal> {
    if hello.protocol != PROTOCOL {
        return Err(Refusal::Protocol { ours: PROTOCOL, theirs: hello.protocol });
    }
    if hello.state_schema != STATE_SCHEMA {
        return Err(Refusal::StateSchema { ours: STATE_SCHEMA, theirs: hello.state_schema });
    }
    if hello.token != token {
        return Err(Refusal::Token);
    }
    for (peer, needed) in sessions {
        if let Some(feature) = needed.iter().find(|f| !hello.can_carry.contains(f)) {
            return Err(Refusal::Feature { feature: *feature, peer: *peer });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
