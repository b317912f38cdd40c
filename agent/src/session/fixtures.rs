//! Sessions for tests elsewhere in the crate: our offer (AS 65001, 10.0.0.1)
//! and the peer's OPEN (AS 65000, 10.0.0.2), negotiated.

use std::net::Ipv4Addr;

use super::{LocalOffer, Negotiated, negotiate};
use crate::wire::{AfiSafi, Capability, GracefulRestartCap, LlgrFamily, Open};

/// The Graceful Restart capability (restart time 30 s), with or without the N-bit.
pub fn gr(notification: bool) -> Capability {
    Capability::GracefulRestart(GracefulRestartCap {
        restarting: false,
        notification,
        restart_time: 30,
        families: vec![],
    })
}

/// The Long-Lived GR capability for IPv4 unicast.
pub fn llgr(stale_time: u32) -> Capability {
    Capability::LongLivedGracefulRestart(vec![LlgrFamily {
        family: AfiSafi::IPV4_UNICAST,
        forwarding: true,
        stale_time,
    }])
}

/// What a session with these capabilities on each side negotiates (both
/// sides also send the 4-octet AS capability).
pub fn negotiated(mut ours: Vec<Capability>, mut theirs: Vec<Capability>) -> Negotiated {
    ours.push(Capability::FourOctetAs(65001));
    theirs.push(Capability::FourOctetAs(65000));
    let offer = LocalOffer {
        asn: 65001,
        router_id: Ipv4Addr::new(10, 0, 0, 1),
        hold_time: 90,
        keepalive_time: None,
        peer_asn: 65000,
        capabilities: ours,
    };
    let open = Open::new(65000, 90, Ipv4Addr::new(10, 0, 0, 2), theirs);
    negotiate(&offer, &open).expect("fixture sessions negotiate")
}
