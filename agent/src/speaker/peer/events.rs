//! What the session core's events do to the peer around it: a session
//! that comes up (Graceful Restart helper checks, the full export), an
//! UPDATE or End-of-RIB, and a session that goes down (helper or clear).

use std::time::Duration;

use super::core::{Helper, PeerCore, PeerEffect, Which};
use crate::graceful;
use crate::rib::AdjRibOut;
use crate::session::{DownReason, Input, Negotiated, Timer};
use crate::speaker::status::{ErrorKind, SessionEventKind};
use crate::wire::{AfiSafi, Malformed, Message, Notification, Update, code};

impl PeerCore {
    pub(super) fn on_established(&mut self, which: Which, n: Negotiated) {
        if which == Which::Inbound {
            self.promote_inbound();
        }
        self.established_transitions += 1;
        // The R-bit belongs only to the first OPEN after our restart.
        self.main.session.offer_mut().set_restarting(false);
        if self.helper.is_some() {
            // RFC 4724 §4.2: families the peer no longer keeps forwarding
            // state for are not to be trusted any more.
            let kept = |f: AfiSafi| {
                n.peer_graceful_restart
                    .as_ref()
                    .is_some_and(|g| g.families.iter().any(|x| x.family == f && x.forwarding))
            };
            for (family, v4) in [(AfiSafi::IPV4_UNICAST, true), (AfiSafi::IPV6_UNICAST, false)] {
                if !kept(family) {
                    self.rib_in.purge_stale(Some(v4));
                }
            }
        }
        self.note(SessionEventKind::Established, super::report::describe(&n));
        self.last_negotiated = Some(n);
        self.monitor(|c| c.up(false));
        self.import_session_up();
        self.series.established.set(1);
        self.last_error = None;
        self.last_reset = None;
        self.sent = self.export();
        let full = self.sent.full();
        self.advertise(&full, true);
    }

    /// An UPDATE, or an End-of-RIB that ends a Graceful Restart.
    pub(super) fn on_update(&mut self, update: Update, malformed: &[Malformed]) -> Option<Input> {
        self.monitor(|c| {
            let ctx = c.main.session.wire_context();
            Some(crate::bmp::Monitored::Received(Message::Update(update.clone()).to_bytes(&ctx)))
        });
        let Some(family) = update.as_end_of_rib() else {
            return self.take_in(update, malformed);
        };
        // RFC 4724 §4.2: what the restarted peer did not send again is gone.
        if self.helper.is_some() {
            let purged = self.rib_in.purge_stale(Some(family == AfiSafi::IPV4_UNICAST));
            let family = super::report::afi_safi_name(family);
            self.note(
                SessionEventKind::GracefulRestart,
                format!("End-of-RIB for {family}: {purged} stale routes purged"),
            );
            if self.rib_in.stale() == 0 {
                self.helper = None;
            }
        }
        None
    }

    /// A session went down: keep the peer's routes stale when it is
    /// restarting (we help, RFC 4724/8538), else drop them.
    pub(super) fn on_down(
        &mut self,
        which: Which,
        reason: DownReason,
        sent: Option<Notification>,
        received: Option<Notification>,
    ) -> Option<()> {
        let slot = self.slot(which)?;
        slot.timers.remove(&Timer::Hold);
        if let Some(conn) = slot.conn.take() {
            self.effects.push(if reason == DownReason::ConnectionClosed {
                PeerEffect::Abort { conn: conn.id }
            } else {
                // The NOTIFICATION queued just before goes out first.
                PeerEffect::Close { conn: conn.id, linger: Duration::from_secs(2) }
            });
        }
        if which == Which::Inbound {
            self.inbound = None;
            return Some(());
        }
        self.monitor(|c| c.down(&reason, sent.as_ref(), received.as_ref()));
        if let Some(n) = &received {
            self.metrics.error(self.peer.address, ErrorKind::NotificationReceived);
            self.note(SessionEventKind::NotificationReceived, n.to_string());
        }
        if let Some(n) = &sent {
            self.note(SessionEventKind::NotificationSent, n.to_string());
        }
        if sent.as_ref().is_some_and(|n| n.code == code::HOLD_TIMER_EXPIRED) {
            self.metrics.error(self.peer.address, ErrorKind::HoldTimerExpired);
        }
        // A reset for maxPrefixes has said why already.
        if self.held_until().is_none() && (!self.stopping || self.last_error.is_none()) {
            self.last_error = Some(reason.to_string());
        }
        if sent.is_some() || received.is_some() {
            self.last_reset = Some(reason.to_string());
        }
        self.note(SessionEventKind::Down, reason.to_string());
        let helping = !self.stopping
            && self
                .last_negotiated
                .as_ref()
                .is_some_and(|n| graceful::helper_applies(n, sent.as_ref(), received.as_ref()));
        if helping {
            let n = self.last_negotiated.as_ref().expect("checked");
            let (restart, long_lived) = (graceful::restart_time(n), graceful::long_lived_time(n));
            let stale = self.rib_in.mark_stale();
            if self.helper.is_none() || stale > 0 {
                self.helper = Some(Helper::Restarting { until: self.now + restart, long_lived });
            }
            self.note(
                SessionEventKind::GracefulRestart,
                format!(
                    "peer restarting: helping, {stale} routes kept stale for {} s",
                    restart.as_secs()
                ),
            );
        } else {
            self.rib_in.clear();
            self.helper = None;
        }
        self.last_negotiated = None;
        self.sent = AdjRibOut::default();
        self.series.established.set(0);
        Some(())
    }
}
