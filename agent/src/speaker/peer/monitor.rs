//! The peer core's half of BMP export (RFC 7854): what a collector is told
//! of this session, as [`PeerEffect::Monitor`] effects the task publishes.
//! Nothing is built unless the agent exports BMP.

use crate::bmp::{Monitored, PeerDown, Up};
use crate::handoff::rib_state::encode_as;
use crate::rib::Staleness;
use crate::session::DownReason;
use crate::wire::{Message, Notification};

use super::core::{PeerCore, PeerEffect};

/// RFC 4271 §8.1.2, Event 2: ManualStop.
const MANUAL_STOP: u16 = 2;

impl PeerCore {
    /// Publishes what `what` builds, when this agent exports BMP.
    pub(super) fn monitor(&mut self, what: impl FnOnce(&Self) -> Option<Monitored>) {
        if self.monitored
            && let Some(m) = what(self)
        {
            self.effects.push(PeerEffect::Monitor(m));
        }
    }

    /// The Established session as Peer Up tells it.
    pub(super) fn up(&self, adopted: bool) -> Option<Monitored> {
        let n = self.main.session.negotiated()?;
        let conn = self.main.conn?;
        Some(Monitored::Up(Box::new(Up {
            local: conn.local,
            remote: conn.remote,
            sent_open: Message::Open(n.local_open.clone()).to_bytes(&n.wire),
            received_open: Message::Open(n.peer_open.clone()).to_bytes(&n.wire),
            peer_asn: n.peer_asn,
            peer_id: n.peer_router_id,
            adopted,
        })))
    }

    /// Why an Established session went down, as Peer Down tells it.
    pub(super) fn down(
        &self,
        reason: &DownReason,
        sent: Option<&Notification>,
        received: Option<&Notification>,
    ) -> Option<Monitored> {
        let n = self.last_negotiated.as_ref()?;
        let pdu = |x: &Notification| Message::Notification(x.clone()).to_bytes(&n.wire);
        Some(Monitored::Down(match (sent, received, reason) {
            (Some(x), _, _) => PeerDown::LocalNotification(pdu(x)),
            (None, Some(x), _) => PeerDown::RemoteNotification(pdu(x)),
            (None, None, DownReason::Stopped) => PeerDown::LocalNoNotification(MANUAL_STOP),
            (None, None, _) => PeerDown::RemoteNoNotification,
        }))
    }

    /// For a collector that just connected: Peer Up, then both Adj-RIBs as
    /// UPDATEs (nothing when the session is not Established).
    pub fn replay(&self) -> Vec<Monitored> {
        // OPENs are agreed in OpenConfirm already; a session is told only
        // once Established, as it is live (else the collector would get
        // this Peer Up and then the live one).
        if self.main.session.state() != crate::session::State::Established {
            return Vec::new();
        }
        let Some(up) = self.up(false) else { return Vec::new() };
        let ctx = self.main.session.wire_context();
        let mut received = Vec::new();
        for s in [Staleness::Fresh, Staleness::Stale, Staleness::LongLived] {
            received.extend(encode_as(self.rib_in.iter_shared_with(s), ctx));
        }
        let sent = encode_as(self.sent.routes.iter().map(|(p, r)| (*p, r)), ctx);
        let mut out = vec![up];
        out.extend(
            [received, sent].into_iter().zip([true, false]).filter(|(b, _)| !b.is_empty()).map(
                |(bytes, received)| {
                    if received { Monitored::Received(bytes) } else { Monitored::Sent(bytes) }
                },
            ),
        );
        out
    }
}
