//! What two OPENs agree on (RFC 4271 §4.2, RFC 5492): the hold and keepalive
//! times, the families, and the capabilities that change the encoding. An
//! OPEN that cannot be accepted yields the NOTIFICATION that says why.

use std::net::Ipv4Addr;

use crate::wire::{
    AfiSafi, Capability, GracefulRestartCap, LlgrFamily, Notification, Open, WireContext,
    capability_code, code, subcode,
};

/// What the local side offers on a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalOffer {
    pub asn: u32,
    pub router_id: Ipv4Addr,
    pub hold_time: u16,
    /// Configured keepalive; None means a third of the hold time.
    pub keepalive_time: Option<u16>,
    pub peer_asn: u32,
    pub capabilities: Vec<Capability>,
}

impl LocalOffer {
    /// Sets or clears the R-bit of our Graceful Restart capability (RFC 4724
    /// §3: set only in the OPEN right after a restart).
    pub fn set_restarting(&mut self, restarting: bool) {
        for c in &mut self.capabilities {
            if let Capability::GracefulRestart(gr) = c {
                gr.restarting = restarting;
            }
        }
    }

    pub fn open(&self) -> Open {
        Open::new(self.asn, self.hold_time, self.router_id, self.capabilities.clone())
    }
}

/// What both sides agreed on when the session came up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    /// Seconds; 0 means no hold timer and no keepalives.
    pub hold_time: u16,
    pub keepalive_time: u16,
    /// Families both sides offered.
    pub families: Vec<AfiSafi>,
    pub wire: WireContext,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// The peer's Graceful Restart capability, if it sent one.
    pub peer_graceful_restart: Option<GracefulRestartCap>,
    pub peer_long_lived: Vec<LlgrFamily>,
    /// Both sides sent the Graceful Restart capability.
    pub graceful_restart: bool,
    /// Both sides set the N-bit (RFC 8538): a NOTIFICATION other than Hard
    /// Reset keeps routes too.
    pub notification_gr: bool,
    /// Both sides sent the Long-Lived GR capability.
    pub long_lived: bool,
    /// Both OPENs, as sent; a successor agent needs them to carry on.
    pub local_open: Open,
    pub peer_open: Open,
}

/// Agrees on the session parameters, or says which NOTIFICATION refuses the OPEN.
pub fn negotiate(local: &LocalOffer, peer: &Open) -> Result<Negotiated, (Notification, String)> {
    let refuse =
        |sub: u8, data: Vec<u8>, why: String| Err((Notification::new(code::OPEN, sub, data), why));
    let peer_asn = peer.asn();
    if peer_asn != local.peer_asn {
        return refuse(
            subcode::BAD_PEER_AS,
            peer.my_as.to_be_bytes().to_vec(),
            format!("peer says AS {peer_asn}, configured AS {}", local.peer_asn),
        );
    }
    if peer.hold_time == 1 || peer.hold_time == 2 {
        return refuse(
            subcode::UNACCEPTABLE_HOLD_TIME,
            vec![],
            format!("peer hold time {} is neither 0 nor at least 3", peer.hold_time),
        );
    }
    let ibgp = peer_asn == local.asn;
    if peer.router_id.is_unspecified() || (ibgp && peer.router_id == local.router_id) {
        return refuse(
            subcode::BAD_BGP_IDENTIFIER,
            peer.router_id.octets().to_vec(),
            format!("peer BGP identifier {} is not usable", peer.router_id),
        );
    }
    let hold_time = local.hold_time.min(peer.hold_time);
    let keepalive_time = if hold_time == 0 {
        0
    } else {
        let configured = local.keepalive_time.unwrap_or(local.hold_time / 3);
        configured.min(hold_time / 3).max(1)
    };
    let local_open = local.open();
    let ours = local_open.families();
    let families = peer.families().into_iter().filter(|f| ours.contains(f)).collect();
    let both = |c: u8| local_open.has(c) && peer.has(c);
    let gr = (local_open.graceful_restart(), peer.graceful_restart());
    Ok(Negotiated {
        graceful_restart: gr.0.is_some() && gr.1.is_some(),
        notification_gr: gr.0.is_some_and(|g| g.notification)
            && gr.1.is_some_and(|g| g.notification),
        long_lived: both(capability_code::LONG_LIVED_GRACEFUL_RESTART),
        peer_asn,
        peer_router_id: peer.router_id,
        hold_time,
        keepalive_time,
        families,
        wire: WireContext {
            four_octet_as: both(capability_code::FOUR_OCTET_AS),
            extended_messages: both(capability_code::EXTENDED_MESSAGE),
            ebgp: !ibgp,
        },
        route_refresh: both(capability_code::ROUTE_REFRESH),
        enhanced_route_refresh: both(capability_code::ENHANCED_ROUTE_REFRESH),
        peer_graceful_restart: peer.graceful_restart().cloned(),
        peer_long_lived: peer.long_lived_graceful_restart().map(<[_]>::to_vec).unwrap_or_default(),
        local_open,
        peer_open: peer.clone(),
    })
}

/// Which of two connections to the same peer survives (RFC 4271 §6.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collision {
    /// Close the connection this side dialled; keep the peer's.
    KeepInbound,
    /// Close the connection the peer dialled; keep ours.
    KeepOutbound,
}

/// RFC 4271 §6.8: the connection dialled by the speaker with the higher BGP
/// identifier survives (compared as unsigned 32-bit integers).
pub fn resolve_collision(local_id: Ipv4Addr, remote_id: Ipv4Addr) -> Collision {
    if u32::from(local_id) < u32::from(remote_id) {
        Collision::KeepInbound
    } else {
        Collision::KeepOutbound
    }
}
