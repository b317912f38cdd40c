//! BGP Monitoring Protocol (RFC 7854) export, sans IO: the messages a
//! monitoring station (OpenBMP, pmacct's `pmbmpd`) reads, and what each
//! collector connection has been told ([`Feed`]).
//!
//! ```text
//!  PeerCore ──Monitored (Up, Down, Received, Sent)──▶ Record ──▶ Feed (one per collector)
//!                                                              ──▶ BMP bytes: Initiation,
//!                                                                  Peer Up/Down, Route Monitoring
//!                                                                  (Adj-RIB-In pre-policy and,
//!                                                                  RFC 8671, Adj-RIB-Out), Stats
//! ```
//!
//! Route Monitoring carries the BGP UPDATEs as they crossed the session,
//! encoded as that session negotiated (4-octet AS, extended length), which
//! the collector reads from the two OPENs in Peer Up.

mod feed;
#[cfg(test)]
mod tests;

pub use feed::{Feed, Record};

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

/// BMP version 3 (RFC 7854 §4.1).
pub const VERSION: u8 = 3;
/// The port IANA did not assign but every collector uses by default.
pub const DEFAULT_PORT: u16 = 1790;

/// Message types (RFC 7854 §4.1).
pub mod kind {
    pub const ROUTE_MONITORING: u8 = 0;
    pub const STATISTICS: u8 = 1;
    pub const PEER_DOWN: u8 = 2;
    pub const PEER_UP: u8 = 3;
    pub const INITIATION: u8 = 4;
    pub const TERMINATION: u8 = 5;
}

/// Per-peer header flags (RFC 7854 §4.2, RFC 8671 §4).
pub mod flag {
    /// The peer address is IPv6.
    pub const V6: u8 = 0x80;
    /// Post-policy (for Adj-RIB-Out: what was actually sent).
    pub const POST_POLICY: u8 = 0x40;
    /// Adj-RIB-Out: the UPDATE was sent to the peer, not received from it.
    pub const ADJ_RIB_OUT: u8 = 0x10;
}

/// Statistics types (IANA "BMP Statistics Types").
pub mod stat {
    pub const REJECTED_BY_POLICY: u16 = 0;
    pub const ADJ_RIB_IN_ROUTES: u16 = 7;
    pub const ADJ_RIB_OUT_POST_POLICY_ROUTES: u16 = 15;
}

/// What a peer's session did that a collector is told, produced by the
/// peer's core when monitoring is on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Monitored {
    /// The session is Established (or, `adopted`, carried on from a
    /// predecessor whose collectors were told already).
    Up(Box<Up>),
    /// The session went down.
    Down(PeerDown),
    /// BGP messages (framed, concatenated) the peer sent us.
    Received(Vec<u8>),
    /// BGP messages (framed, concatenated) we sent the peer.
    Sent(Vec<u8>),
}

/// An Established session, as Peer Up tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Up {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Both OPENs, framed, as they crossed the wire.
    pub sent_open: Vec<u8>,
    pub received_open: Vec<u8>,
    pub peer_asn: u32,
    pub peer_id: Ipv4Addr,
    /// Taken over in a handoff: a collector connection that came with it
    /// knows this session already.
    pub adopted: bool,
}

/// Why a session went down (RFC 7854 §4.9).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerDown {
    /// We closed it with this NOTIFICATION (framed).
    LocalNotification(Vec<u8>),
    /// We closed it without one, for this FSM event (RFC 4271 §8.1).
    LocalNoNotification(u16),
    /// The peer closed it with this NOTIFICATION (framed).
    RemoteNotification(Vec<u8>),
    /// The connection closed or failed without a NOTIFICATION.
    RemoteNoNotification,
}

impl PeerDown {
    fn code(&self) -> u8 {
        match self {
            PeerDown::LocalNotification(_) => 1,
            PeerDown::LocalNoNotification(_) => 2,
            PeerDown::RemoteNotification(_) => 3,
            PeerDown::RemoteNoNotification => 4,
        }
    }
}

/// Who a per-peer header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerId {
    pub address: IpAddr,
    pub asn: u32,
    pub router_id: Ipv4Addr,
}

/// Seconds and microseconds since the Unix epoch, as BMP stamps messages.
pub fn stamp(at: SystemTime) -> (u32, u32) {
    let d = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    (d.as_secs() as u32, d.subsec_micros())
}

/// Appends one message: the common header, then what `body` writes.
fn message(out: &mut Vec<u8>, kind: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.push(VERSION);
    out.extend_from_slice(&[0; 4]);
    out.push(kind);
    body(out);
    let len = (out.len() - start) as u32;
    out[start + 1..start + 5].copy_from_slice(&len.to_be_bytes());
}

fn address16(out: &mut Vec<u8>, ip: IpAddr) {
    match ip.to_canonical() {
        IpAddr::V4(a) => {
            out.extend_from_slice(&[0; 12]);
            out.extend_from_slice(&a.octets());
        }
        IpAddr::V6(a) => out.extend_from_slice(&a.octets()),
    }
}

/// The per-peer header (RFC 7854 §4.2): a global instance peer.
fn peer_header(out: &mut Vec<u8>, peer: &PeerId, flags: u8, at: (u32, u32)) {
    let v6 = if peer.address.to_canonical().is_ipv6() { flag::V6 } else { 0 };
    out.push(0);
    out.push(flags | v6);
    out.extend_from_slice(&[0; 8]);
    address16(out, peer.address);
    out.extend_from_slice(&peer.asn.to_be_bytes());
    out.extend_from_slice(&peer.router_id.octets());
    out.extend_from_slice(&at.0.to_be_bytes());
    out.extend_from_slice(&at.1.to_be_bytes());
}

fn tlv(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(value.len().min(u16::MAX as usize) as u16).to_be_bytes());
    out.extend_from_slice(&value[..value.len().min(u16::MAX as usize)]);
}

/// Initiation (§4.3): sysDescr and sysName, which the RFC requires.
pub fn initiation(out: &mut Vec<u8>, sys_name: &str, sys_descr: &str) {
    message(out, kind::INITIATION, |b| {
        tlv(b, 1, sys_descr.as_bytes());
        tlv(b, 2, sys_name.as_bytes());
    });
}

/// Termination (§4.5), reason 0: administratively closed.
pub fn termination(out: &mut Vec<u8>, why: &str) {
    message(out, kind::TERMINATION, |b| {
        tlv(b, 0, why.as_bytes());
        tlv(b, 1, &0u16.to_be_bytes());
    });
}

/// Peer Up (§4.10).
pub fn peer_up(out: &mut Vec<u8>, peer: &PeerId, up: &Up, at: (u32, u32)) {
    message(out, kind::PEER_UP, |b| {
        peer_header(b, peer, 0, at);
        address16(b, up.local.ip());
        b.extend_from_slice(&up.local.port().to_be_bytes());
        b.extend_from_slice(&up.remote.port().to_be_bytes());
        b.extend_from_slice(&up.sent_open);
        b.extend_from_slice(&up.received_open);
    });
}

/// Peer Down (§4.9).
pub fn peer_down(out: &mut Vec<u8>, peer: &PeerId, down: &PeerDown, at: (u32, u32)) {
    message(out, kind::PEER_DOWN, |b| {
        peer_header(b, peer, 0, at);
        b.push(down.code());
        match down {
            PeerDown::LocalNotification(pdu) | PeerDown::RemoteNotification(pdu) => {
                b.extend_from_slice(pdu)
            }
            PeerDown::LocalNoNotification(event) => b.extend_from_slice(&event.to_be_bytes()),
            PeerDown::RemoteNoNotification => {}
        }
    });
}

/// Route Monitoring (§4.6, RFC 8671): one message per BGP UPDATE in
/// `updates` (framed BGP messages, concatenated); other message types
/// (a KEEPALIVE, a ROUTE-REFRESH) are not monitored and skipped.
pub fn route_monitoring(
    out: &mut Vec<u8>,
    peer: &PeerId,
    sent: bool,
    updates: &[u8],
    at: (u32, u32),
) {
    let flags = if sent { flag::ADJ_RIB_OUT | flag::POST_POLICY } else { 0 };
    for pdu in bgp_messages(updates) {
        if pdu.get(18) == Some(&2) {
            message(out, kind::ROUTE_MONITORING, |b| {
                peer_header(b, peer, flags, at);
                b.extend_from_slice(pdu);
            });
        }
    }
}

/// A session's counters for a Statistics Report (§4.8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Routes in the Adj-RIB-In (as received, stale ones included).
    pub adj_rib_in: u64,
    /// Routes the peer sent that the import policy refused.
    pub rejected: u32,
    /// Routes we advertise to the peer.
    pub adj_rib_out: u64,
}

pub fn statistics(out: &mut Vec<u8>, peer: &PeerId, counts: &Counts, at: (u32, u32)) {
    message(out, kind::STATISTICS, |b| {
        peer_header(b, peer, 0, at);
        b.extend_from_slice(&3u32.to_be_bytes());
        tlv(b, stat::REJECTED_BY_POLICY, &counts.rejected.to_be_bytes());
        tlv(b, stat::ADJ_RIB_IN_ROUTES, &counts.adj_rib_in.to_be_bytes());
        tlv(b, stat::ADJ_RIB_OUT_POST_POLICY_ROUTES, &counts.adj_rib_out.to_be_bytes());
    });
}

/// The framed BGP messages in `bytes`, each by its own length; a torn tail
/// is left out.
pub fn bgp_messages(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_be_bytes([*bytes.get(16)?, *bytes.get(17)?]));
        if len < 19 || len > bytes.len() {
            return None;
        }
        let (pdu, rest) = bytes.split_at(len);
        bytes = rest;
        Some(pdu)
    })
}

/// Where the collector's whole messages end in `bytes` (for a reader that
/// splits a stream, as the tests do).
pub fn message_len(bytes: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(bytes.get(1..5)?.try_into().ok()?) as usize;
    (len >= 6 && len <= bytes.len()).then_some(len)
}
