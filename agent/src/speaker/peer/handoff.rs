//! A peer's part in a handoff, the core's half. In the predecessor: the
//! features a successor must carry, a snapshot of both RIBs, the frozen
//! session state, and letting go of the socket without a word (retire). In
//! the successor: start from a session adopted from the predecessor instead
//! of dialling, sending only what changed. The task's half (the socket's
//! second descriptor, the buffers, the wait for the verdict) is in `task`.
//!
//! A task pauses between two handled events, so its read buffer never holds
//! a whole unhandled message: what is left there is the start of the next
//! one, and travels as it is.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tracing::{info, warn};

use super::core::{ConnId, ConnInfo, PeerCore, PeerEffect, Slot, Which};
use super::session_config;
use crate::handoff::protocol::{Feature, RibPart, SessionState};
use crate::handoff::session_state::{self, monotonic_ns};
use crate::handoff::{features, rib_state};
use crate::restart::unix_ms;
use crate::rib::{AdjRibIn, AdjRibOut};
use crate::session::{Negotiated, Output, Session, State, Timer};
use crate::speaker::status::SessionEventKind;
use crate::wire::{Message, RouteRefresh};

/// A paused session, as the successor needs it.
#[derive(Debug)]
pub struct FrozenPeer {
    pub state: SessionState,
    /// The RIBs as UPDATE streams (what changed since the snapshot, or
    /// all), and the unread and unwritten bytes.
    pub parts: Vec<(RibPart, Vec<u8>)>,
    /// A second descriptor for the session's socket, to pass along;
    /// dropping it closes nothing.
    pub socket: OwnedFd,
}

/// Both RIBs of a running session, as the handoff's first pass sends them.
#[derive(Debug)]
pub struct RibSnapshot {
    pub rib_in: AdjRibIn,
    pub sent: AdjRibOut,
}

/// How a paused peer task goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thaw {
    /// The handoff failed: carry on as if nothing happened.
    Resume,
    /// The successor owns the session: end without a NOTIFICATION or FIN.
    Retire,
}

/// A session taken over from the predecessor, checked and decoded.
#[derive(Debug)]
pub struct Adopted {
    pub negotiated: Negotiated,
    pub state: SessionState,
    pub stream: std::net::TcpStream,
    pub rib_in: AdjRibIn,
    pub sent: AdjRibOut,
    pub unread: Vec<u8>,
    pub unwritten: Vec<u8>,
    /// Every part arrived (false when the predecessor died mid-way: the
    /// whole Adj-RIB-Out goes out again, which the peer takes as implicit
    /// replacements, and the peer is asked to refresh ours).
    pub complete: bool,
}

/// A paused session as the core has it: the successor's state, the RIB
/// parts, and the connection whose socket and buffers go along.
#[derive(Debug)]
pub struct FrozenCore {
    pub state: SessionState,
    pub parts: Vec<(RibPart, Vec<u8>)>,
    pub conn: ConnId,
}

impl PeerCore {
    /// What the Established session negotiated that a successor must carry.
    pub fn handoff_features(&self) -> Option<BTreeSet<Feature>> {
        if self.main.session.state() != State::Established || self.drain_until.is_some() {
            return None;
        }
        let n = self.main.session.negotiated()?;
        Some(features(n, self.md5))
    }

    /// Copies both RIBs (sharing every route's attributes) for the handoff's
    /// first pass.
    pub fn snapshot(&self) -> Option<Arc<RibSnapshot>> {
        self.handoff_features()?;
        Some(self.tables())
    }

    /// Copies both RIBs as they are, whatever the session's state.
    pub fn tables(&self) -> Arc<RibSnapshot> {
        Arc::new(RibSnapshot { rib_in: self.rib_in.clone(), sent: self.sent.clone() })
    }

    /// The session paused at `now`, for a successor: its state and its RIBs
    /// as changed since `base` (all of them without one).
    pub fn freeze(
        &self,
        base: Option<&RibSnapshot>,
        now: Instant,
        wall: SystemTime,
    ) -> Option<FrozenCore> {
        let features = self.handoff_features()?;
        let n = self.main.session.negotiated()?;
        let conn = self.main.conn?;
        let since = self
            .main
            .session
            .established_at()
            .map_or(0, |at| unix_ms(wall - now.saturating_duration_since(at)));
        let state = session_state::freeze(
            n,
            session_state::Frozen {
                peer: self.peer.address,
                local: conn.local,
                remote: conn.remote,
                hold_remaining: self
                    .main
                    .timers
                    .get(&Timer::Hold)
                    .map(|at| at.saturating_duration_since(now)),
                keepalive_remaining: self
                    .main
                    .timers
                    .get(&Timer::Keepalive)
                    .map(|at| at.saturating_duration_since(now)),
                established_since_ms: since,
                established_transitions: self.established_transitions,
                features,
                frozen_at_ns: monotonic_ns(),
            },
        );
        let mut parts = rib_state::encode_in_since(&self.rib_in, base.map(|b| &b.rib_in));
        parts.extend(rib_state::encode_out_since(&self.sent, base.map(|b| &b.sent)));
        Some(FrozenCore { state, parts, conn: conn.id })
    }

    /// The successor holds the session now: let go of it silently. A session
    /// that was not passed (not Established) just closes; the successor
    /// dials it again.
    pub(super) fn retire(&mut self, passed: bool) {
        self.stopping = true;
        self.cancel_dial();
        let linger = Duration::from_millis(200);
        if let Some(conn) = self.main.conn.take() {
            self.effects.push(if passed {
                PeerEffect::Release { conn: conn.id }
            } else {
                PeerEffect::Close { conn: conn.id, linger }
            });
        }
        if let Some(conn) = self.inbound.take().and_then(|s| s.conn) {
            self.effects.push(PeerEffect::Close { conn: conn.id, linger });
        }
        self.series.established.set(0);
        let what = if passed {
            "handed to the successor agent, Established"
        } else {
            "left to the successor agent, which dials it again"
        };
        self.note_quietly(SessionEventKind::Handoff, what.to_string());
    }

    /// Takes up a session adopted from the predecessor over `conn`; it
    /// starts running at the next [`PeerEvent::Start`](super::PeerEvent).
    pub fn adopt(&mut self, adopted: AdoptedCore, conn: ConnInfo, now: Instant, wall: SystemTime) {
        let AdoptedCore { negotiated, state, rib_in, sent, complete } = adopted;
        let age = Duration::from_millis(unix_ms(wall).saturating_sub(state.established_since_ms));
        let (session, outputs) = Session::adopt(
            session_config(&self.peer, &self.local, self.peer.passive),
            negotiated.clone(),
            state.hold_remaining_ms.map(Duration::from_millis),
            state.keepalive_remaining_ms.map(Duration::from_millis),
            now.checked_sub(age).unwrap_or(now),
            state.established_transitions,
        );
        self.main = Slot::new(session);
        self.main.conn = Some(conn);
        self.established_transitions = state.established_transitions;
        self.last_negotiated = Some(negotiated);
        let state_note = if complete {
            "with all its routing state"
        } else {
            "without all of its routing state"
        };
        self.note_quietly(
            SessionEventKind::Handoff,
            format!(
                "taken over from the predecessor agent, {state_note}: {} routes from the peer, {} to it",
                rib_in.len(),
                sent.routes.len()
            ),
        );
        self.rib_in = rib_in;
        self.sent = sent;
        self.adoption = Some((outputs, complete));
    }

    /// The first moves of an adopted session: whatever was unwritten, then
    /// KEEPALIVE, the timers, and only what changed in our announcements.
    pub(super) fn resume_adopted(&mut self, outputs: Vec<Output>, complete: bool) {
        for output in outputs {
            if let Some(input) = self.execute(Which::Main, output) {
                self.feed(Which::Main, input);
            }
        }
        self.series.established.set(1);
        self.monitor(|c| c.up(true));
        let new = self.export();
        if complete {
            let delta = self.sent.delta_to(&new);
            if !delta.is_empty() {
                info!(peer = %self.peer.address, changes = delta.len(), "announcements differ from the predecessor's");
                self.advertise(&delta, false);
            }
        } else {
            warn!(peer = %self.peer.address, "adopted without all of its state: sending our routes again");
            self.sent = new.clone();
            self.advertise(&new.full(), true);
            let families = self
                .main
                .session
                .negotiated()
                .filter(|n| n.route_refresh)
                .map(|n| n.families.clone())
                .unwrap_or_default();
            for family in families {
                self.send(Which::Main, &Message::RouteRefresh(RouteRefresh::request(family)));
            }
        }
        self.sent = new;
        self.series.routes_received.set(self.rib_in.len() as i64);
    }
}

/// The core's part of an adopted session (the socket and its buffers are
/// the task's).
#[derive(Debug)]
pub struct AdoptedCore {
    pub negotiated: Negotiated,
    pub state: SessionState,
    pub rib_in: AdjRibIn,
    pub sent: AdjRibOut,
    pub complete: bool,
}

impl Adopted {
    /// Apart: what the core takes, and the socket with its unread and
    /// unwritten bytes.
    pub fn split(self) -> (AdoptedCore, std::net::TcpStream, Vec<u8>, Vec<u8>) {
        let Adopted { negotiated, state, stream, rib_in, sent, unread, unwritten, complete } = self;
        (AdoptedCore { negotiated, state, rib_in, sent, complete }, stream, unread, unwritten)
    }
}
