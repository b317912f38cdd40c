//! What a peer core tells the world: its status snapshot and metric labels.

use std::time::{Instant, SystemTime};

use super::core::PeerCore;
use crate::config::Family;
use crate::restart::unix_ms;
use crate::session::State;
use crate::speaker::status::{PeerLabel, PeerStatus};

impl PeerCore {
    pub(super) fn label(&self) -> PeerLabel {
        PeerLabel { peer: self.peer.address.to_string() }
    }

    /// The peer as `GET /status` shows it, at `now` (`wall` is the same
    /// moment on the wall clock).
    pub fn status(&self, now: Instant, wall: SystemTime) -> PeerStatus {
        let session = &self.main.session;
        let n = session.negotiated();
        let established = session.state() == State::Established;
        let since = session.established_at().map(|at| wall - now.saturating_duration_since(at));
        let advertised = if established { self.sent.len() } else { 0 };
        self.series.routes_sent.set(advertised as i64);
        PeerStatus {
            address: self.peer.address.to_string(),
            asn: self.peer.asn,
            state: session.state(),
            uptime_seconds: 0,
            established_since_ms: since.map(unix_ms),
            established_transitions: self.established_transitions,
            local_address: self.main.conn.map(|c| c.local.ip().to_canonical().to_string()),
            hold_time: n.map(|n| n.hold_time),
            keepalive_time: n.map(|n| n.keepalive_time),
            capabilities: n.map(capability_names).unwrap_or_default(),
            families: n
                .map(|n| n.families.iter().filter_map(|f| f.family()).map(family_name).collect())
                .unwrap_or_default(),
            routes_received: self.rib_in.len(),
            routes_stale: self.rib_in.stale(),
            routes_advertised: advertised,
            routes_skipped: self
                .sent
                .skipped
                .iter()
                .map(|(p, why)| format!("{p}: {why}"))
                .collect(),
            routes_refused: self.import.refused,
            prefix_limit: self.prefix_limit_note(now),
            messages_received: self.messages_received,
            messages_sent: self.messages_sent,
            last_error: self.last_error.clone(),
            last_reset: self.last_reset.clone(),
            events: self.log.snapshot(now, wall),
        }
    }
}

pub(super) fn family_name(f: Family) -> String {
    match f {
        Family::Ipv4Unicast => "ipv4-unicast".into(),
        Family::Ipv6Unicast => "ipv6-unicast".into(),
    }
}

/// Capabilities both sides sent, by name.
fn capability_names(n: &crate::session::Negotiated) -> Vec<String> {
    let mut names = vec![];
    if n.wire.four_octet_as {
        names.push("4-octet-as".into());
    }
    if n.route_refresh {
        names.push("route-refresh".into());
    }
    if n.enhanced_route_refresh {
        names.push("enhanced-route-refresh".into());
    }
    if n.wire.extended_messages {
        names.push("extended-message".into());
    }
    if n.peer_graceful_restart.is_some() && n.local_open.graceful_restart().is_some() {
        names.push("graceful-restart".into());
    }
    if !n.peer_long_lived.is_empty() && n.local_open.long_lived_graceful_restart().is_some() {
        names.push("long-lived-graceful-restart".into());
    }
    names
}

/// An Established session in one line: what was agreed, then what each
/// side's OPEN offered.
pub(super) fn describe(n: &crate::session::Negotiated) -> String {
    let families: Vec<String> = n.families.iter().map(|f| afi_safi_name(*f)).collect();
    format!(
        "peer AS {} router ID {}: hold {} s, keepalive {} s, {}; we offered {}; the peer offered {}",
        n.peer_asn,
        n.peer_router_id,
        n.hold_time,
        n.keepalive_time,
        families.join(" "),
        offered(&n.local_open),
        offered(&n.peer_open),
    )
}

pub(super) fn afi_safi_name(f: crate::wire::AfiSafi) -> String {
    f.family().map_or_else(|| format!("afi {} safi {}", f.afi, f.safi), family_name)
}

/// The capabilities of an OPEN, by name, with what matters of each.
pub(super) fn offered(open: &crate::wire::Open) -> String {
    use crate::wire::Capability::*;
    let names: Vec<String> = open
        .capabilities
        .iter()
        .map(|c| match c {
            Multiprotocol(f) => afi_safi_name(*f),
            RouteRefresh => "route-refresh".into(),
            EnhancedRouteRefresh => "enhanced-route-refresh".into(),
            ExtendedMessage => "extended-message".into(),
            FourOctetAs(asn) => format!("4-octet-as {asn}"),
            GracefulRestart(g) => format!(
                "graceful-restart {} s{}{}",
                g.restart_time,
                if g.restarting { " R" } else { "" },
                if g.notification { " N" } else { "" }
            ),
            LongLivedGracefulRestart(fs) => format!(
                "long-lived-graceful-restart {} s",
                fs.iter().map(|f| f.stale_time).max().unwrap_or(0)
            ),
            Unknown { code: 5, .. } => "extended-next-hop".into(),
            Unknown { code: 69, .. } => "add-path".into(),
            Unknown { code: 73, .. } => "fqdn".into(),
            Unknown { code: 128, .. } => "route-refresh (pre-standard)".into(),
            Unknown { code, .. } => format!("capability {code}"),
        })
        .collect();
    if names.is_empty() { "no capabilities".into() } else { names.join(", ") }
}
