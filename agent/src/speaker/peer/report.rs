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
        }
    }
}

fn family_name(f: Family) -> String {
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
