//! What one collector connection has been told, and so what it is told
//! next: a Route Monitoring or Peer Down only for a peer it has had a Peer
//! Up for, a Peer Up once per session.
//!
//! A connection starts fresh (Initiation, then every peer task replays
//! its Peer Up and both Adj-RIBs to it alone, as [`Record::target`]), or
//! adopted from a predecessor agent in a handoff: that collector knows
//! every carried-on session already, and hears nothing of the handoff.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::SystemTime;

use super::{Counts, Monitored, PeerId, peer_down, peer_up, route_monitoring, stamp, statistics};

/// One peer's monitored event, as peer tasks publish it to every collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub peer: IpAddr,
    /// A replay for one collector connection (by [`Feed::id`]); None: live,
    /// for every collector.
    pub target: Option<u64>,
    pub what: Monitored,
    pub at: SystemTime,
}

#[derive(Debug)]
pub struct Feed {
    id: u64,
    /// Carried on from a predecessor: adopted sessions are known already.
    adopted: bool,
    known: HashMap<IpAddr, PeerId>,
}

impl Feed {
    /// A new connection; the caller has written Initiation.
    pub fn fresh(id: u64) -> Self {
        Self { id, adopted: false, known: HashMap::new() }
    }

    /// A connection a predecessor handed over.
    pub fn adopted(id: u64) -> Self {
        Self { id, adopted: true, known: HashMap::new() }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// The peers this collector has a Peer Up for.
    pub fn known(&self) -> impl Iterator<Item = &PeerId> {
        self.known.values()
    }

    /// Appends what this collector is to be told of `record`.
    pub fn record(&mut self, record: &Record, out: &mut Vec<u8>) {
        if record.target.is_some_and(|t| t != self.id) {
            return;
        }
        let at = stamp(record.at);
        match &record.what {
            Monitored::Up(up) => {
                let peer = PeerId { address: record.peer, asn: up.peer_asn, router_id: up.peer_id };
                let told = self.known.insert(record.peer, peer).is_some();
                // Carried on across a handoff: this collector heard its Peer
                // Up from the predecessor (adopted), or from us already. A
                // replay of a session this connection saw come up (it came
                // up while the connection was being made) is told once.
                if (up.adopted && (self.adopted || told)) || (told && record.target.is_some()) {
                    return;
                }
                peer_up(out, &peer, up, at);
            }
            Monitored::Down(down) => {
                if let Some(peer) = self.known.remove(&record.peer) {
                    peer_down(out, &peer, down, at);
                }
            }
            Monitored::Received(bytes) | Monitored::Sent(bytes) => {
                if let Some(peer) = self.known.get(&record.peer) {
                    let sent = matches!(record.what, Monitored::Sent(_));
                    route_monitoring(out, peer, sent, bytes, at);
                }
            }
        }
    }

    /// A Statistics Report for every known peer that `counts` has.
    pub fn statistics(
        &self,
        counts: impl Fn(IpAddr) -> Option<Counts>,
        at: SystemTime,
        out: &mut Vec<u8>,
    ) {
        let mut peers: Vec<&PeerId> = self.known.values().collect();
        peers.sort_by_key(|p| p.address);
        for peer in peers {
            if let Some(c) = counts(peer.address) {
                statistics(out, peer, &c, stamp(at));
            }
        }
    }
}
