//! A peer task's part in a handoff. In the predecessor: pause at a message
//! boundary and give a frozen copy of the session (socket, state, RIBs) to
//! the speaker, then either carry on (rollback) or let go of the socket
//! without a word (retire). In the successor: start from a session adopted
//! from the predecessor instead of dialling.
//!
//! A task pauses between two handled events, so its read buffer never holds
//! a whole unhandled message: what is left there is the start of the next
//! one, and travels as it is.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;

use tokio::sync::oneshot;

use super::*;
use crate::handoff::protocol::{Feature, RibPart, SessionState};
use crate::handoff::session_state::{self, monotonic_ns};
use crate::handoff::{features, rib_state};
use crate::session::Negotiated;

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

/// An adopted session the task has not yet taken up: its first outputs,
/// whether all of its state arrived, and where its pause is reported.
#[derive(Debug)]
pub struct Adoption {
    outputs: Vec<Output>,
    complete: bool,
    /// CLOCK_MONOTONIC of the predecessor's last read.
    frozen_at_ns: u64,
    resumed: oneshot::Sender<Duration>,
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

impl PeerTask {
    /// What the Established session negotiated that a successor must carry.
    pub(super) fn handoff_features(&self) -> Option<BTreeSet<Feature>> {
        if self.main.session.state() != State::Established || self.drain_until.is_some() {
            return None;
        }
        let n = self.main.session.negotiated()?;
        Some(features(n, self.password.is_some()))
    }

    /// Copies both RIBs (sharing every route's attributes) for the handoff's
    /// first pass.
    pub(super) fn snapshot(&self) -> Option<Arc<RibSnapshot>> {
        self.handoff_features()?;
        Some(Arc::new(RibSnapshot { rib_in: self.rib_in.clone(), sent: self.sent.clone() }))
    }

    /// Pauses the task until the speaker decides how the handoff ended.
    pub(super) async fn freeze(
        &mut self,
        reply: oneshot::Sender<Option<FrozenPeer>>,
        thaw: oneshot::Receiver<Thaw>,
        base: Option<Arc<RibSnapshot>>,
    ) {
        // The snapshot goes only after the pause: freeing a table takes time.
        let frozen = self.frozen(base.as_deref());
        let passed = frozen.is_some();
        if reply.send(frozen).is_err() {
            return;
        }
        match thaw.await {
            Ok(Thaw::Retire) => self.retire(passed),
            Ok(Thaw::Resume) | Err(_) => {
                if passed {
                    info!(peer = %self.peer.address, "handoff rolled back: carrying on");
                }
            }
        }
    }

    fn frozen(&self, base: Option<&RibSnapshot>) -> Option<FrozenPeer> {
        let features = self.handoff_features()?;
        let n = self.main.session.negotiated()?;
        let conn = self.main.conn.as_ref()?;
        let socket = match conn.dup() {
            Ok(fd) => fd,
            Err(e) => {
                warn!(peer = %self.peer.address, "cannot pass the session's socket: {e}");
                return None;
            }
        };
        let now = Instant::now();
        let since = self
            .main
            .session
            .established_at()
            .map_or(0, |at| unix_ms(SystemTime::now() - now.saturating_duration_since(at)));
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
                established_since_ms: since,
                established_transitions: self.established_transitions,
                features,
                frozen_at_ns: monotonic_ns(),
            },
        );
        let mut parts = rib_state::encode_in_since(&self.rib_in, base.map(|b| &b.rib_in));
        parts.extend(rib_state::encode_out_since(&self.sent, base.map(|b| &b.sent)));
        parts.push((RibPart::Unread, conn.rbuf.clone()));
        parts.push((RibPart::Unwritten, conn.unwritten().to_vec()));
        parts.retain(|(_, bytes)| !bytes.is_empty());
        Some(FrozenPeer { state, parts, socket })
    }

    /// The successor holds the session now: let go of it silently. A session
    /// that was not passed (not Established) just closes; the successor
    /// dials it again.
    fn retire(&mut self, passed: bool) {
        self.stopping = true;
        if let Some(dial) = self.main.dial.take() {
            dial.abort();
        }
        if let Some(conn) = self.main.conn.take() {
            if passed {
                conn.forget();
            } else {
                tokio::spawn(conn.close(Duration::from_millis(200)));
            }
        }
        if let Some(conn) = self.inbound.take().and_then(|s| s.conn) {
            tokio::spawn(conn.close(Duration::from_millis(200)));
        }
        self.metrics.established.get_or_create(&self.label()).set(0);
        debug!(peer = %self.peer.address, passed, "retired");
    }

    /// Builds the task around a session adopted from the predecessor;
    /// `resumed` hears how long the session went untended, once the task
    /// takes it up.
    pub fn adopt(
        &mut self,
        adopted: Adopted,
        resumed: oneshot::Sender<Duration>,
    ) -> io::Result<()> {
        let Adopted { negotiated, state, stream, rib_in, sent, unread, unwritten, complete } =
            adopted;
        stream.set_nonblocking(true)?;
        let mut conn = Conn::new(TcpStream::from_std(stream)?)?;
        conn.rbuf.extend_from_slice(&unread);
        conn.queue(&unwritten);
        let age = Duration::from_millis(
            unix_ms(SystemTime::now()).saturating_sub(state.established_since_ms),
        );
        let now = Instant::now();
        let (session, outputs) = Session::adopt(
            session_config(&self.peer, &self.local, self.peer.passive),
            negotiated.clone(),
            state.hold_remaining_ms.map(Duration::from_millis),
            now.checked_sub(age).unwrap_or(now),
            state.established_transitions,
        );
        self.main = Slot::new(session);
        self.main.conn = Some(conn);
        self.established_transitions = state.established_transitions;
        self.last_negotiated = Some(negotiated);
        self.rib_in = rib_in;
        self.sent = sent;
        let frozen_at_ns = state.frozen_at_ns;
        self.adoption = Some(Adoption { outputs, complete, frozen_at_ns, resumed });
        // The status says Established from the successor's first answer,
        // not Idle until the task has run once: the session never left.
        self.publish();
        Ok(())
    }

    /// The first moves of an adopted session: whatever was unwritten, then
    /// KEEPALIVE, the timers, and only what changed in our announcements.
    pub(super) async fn resume_adopted(&mut self, adoption: Adoption) {
        let Adoption { outputs, complete, frozen_at_ns, resumed } = adoption;
        // The pause this session saw: from the predecessor's last read of it
        // to now, as its KEEPALIVE goes out and reading starts again.
        let _ = resumed.send(Duration::from_nanos(monotonic_ns().saturating_sub(frozen_at_ns)));
        for output in outputs {
            if let Some(input) = self.execute(Which::Main, output).await {
                self.feed(Which::Main, input).await;
            }
        }
        self.metrics.established.get_or_create(&self.label()).set(1);
        let new = self.export();
        if complete {
            let delta = self.sent.delta_to(&new);
            if !delta.is_empty() {
                info!(peer = %self.peer.address, changes = delta.len(), "announcements differ from the predecessor's");
                self.advertise(&delta, false).await;
            }
        } else {
            warn!(peer = %self.peer.address, "adopted without all of its state: sending our routes again");
            self.sent = new.clone();
            self.advertise(&new.full(), true).await;
            let refresh = self.main.session.negotiated().is_some_and(|n| n.route_refresh);
            if refresh {
                for family in
                    self.main.session.negotiated().map(|n| n.families.clone()).unwrap_or_default()
                {
                    self.send(
                        Which::Main,
                        &Message::RouteRefresh(crate::wire::RouteRefresh::request(family)),
                    );
                }
            }
        }
        self.sent = new;
        self.metrics
            .routes
            .get_or_create(&self.route_label(Direction::Received))
            .set(self.rib_in.len() as i64);
        self.drain(Which::Main).await;
    }
}
