//! The peer's protocol core, sans IO: both connection slots and their
//! session FSMs, both Adj-RIBs, the Graceful Restart helper, collisions
//! (RFC 4271 §6.8), the drain before a decommission and the prefix limit.
//!
//! ```text
//!   PeerEvent ──handle(event, now)──▶ PeerCore ──▶ Vec<PeerEffect>
//!   bytes     ──receive(conn, buf)──▶          ──▶ (consumed, effects)
//! ```
//!
//! It never touches a socket or a clock: the task hands it what happened
//! (a connection accepted or dialled, bytes read, a transport failure, a
//! deadline passed, a command) with the time, and carries out what it asks
//! (dial, send these bytes, close or release that connection). Timers are
//! deadlines the task reads from [`PeerCore::next_deadline`].

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

use super::event_log::EventLog;
use super::limits::ImportState;
use super::{Local, PeerOptions, session_config};
use crate::config::{Announcement, Family, Peer};
use crate::graceful;
use crate::rib::{AdjRibIn, AdjRibOut, Delta, ExportRules, export};
use crate::session::{Input, Negotiated, Output, Session, State, Timer};
use crate::speaker::status::{Direction, MessageKind, Metrics, PeerSeries, SessionEventKind};
use crate::wire::{AfiSafi, Message, Notification, Update, UpdateBuilder, subcode};

/// A connection, as the task names it to the core (unique for the agent's
/// life, so a slot's connection is told from the one that replaced it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// What the core knows of a connection: which it is and its two ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub id: ConnId,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

/// What happened, as the task tells the core.
#[derive(Debug)]
pub enum PeerEvent {
    /// Start the session: dial, or wait for the peer if passive.
    Start,
    /// The peer connected to our listener.
    Accepted(ConnInfo),
    /// Our dial ended.
    Dialled(io::Result<ConnInfo>),
    /// A connection was closed by the peer (`error: None`) or failed.
    Closed { conn: ConnId, error: Option<String> },
    /// A deadline from [`PeerCore::next_deadline`] may have passed.
    Tick,
    /// The routes to announce changed.
    Announce(Arc<Vec<Announcement>>),
    /// Close the session with this NOTIFICATION and stop.
    Stop(Notification),
    /// Close every connection without a NOTIFICATION (Graceful Restart stop).
    Vanish,
    /// RFC 8326: announce everything again with GRACEFUL_SHUTDOWN, wait
    /// `drain`, then Cease with this message, and stop.
    Decommission { drain: Duration, message: String },
    /// A successor owns the session now: let go without a word when it was
    /// `passed`, else close.
    Retire { passed: bool },
}

/// What the core asks of the task, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEffect {
    /// Dial the peer, giving up any attempt still under way.
    Dial,
    /// Give up the dial under way.
    CancelDial,
    /// Queue these bytes on the connection.
    Send { conn: ConnId, bytes: Vec<u8> },
    /// Send what is queued (for at most `linger`), then FIN; forget it.
    Close { conn: ConnId, linger: Duration },
    /// Reset the connection (RST) and forget it: the peer closed it or it
    /// failed, so there is nothing left to say on it. A FIN there would sit
    /// unanswered and be sent again for minutes where TCP MD5 makes each
    /// side drop the other's unsigned RST.
    Abort { conn: ConnId },
    /// Forget the connection without a FIN: a successor holds it now.
    Release { conn: ConnId },
    /// Tell the BMP collectors (only when the agent exports BMP).
    Monitor(crate::bmp::Monitored),
}

/// What the core waits for besides the sessions' own timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Helper {
    /// The peer restarts: its routes are stale until `until`, then
    /// long-lived stale for `long_lived` if both sides agreed on LLGR (the
    /// terms of the session that went down; it is gone by then).
    Restarting { until: Instant, long_lived: Option<Duration> },
    /// Past the restart time, kept by Long-Lived GR until this deadline.
    LongLived(Instant),
}

/// One connection's life as its session FSM sees it.
pub(super) struct Slot {
    pub session: Session,
    pub conn: Option<ConnInfo>,
    pub timers: HashMap<Timer, Instant>,
}

impl Slot {
    pub fn new(session: Session) -> Self {
        Self { session, conn: None, timers: HashMap::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Which {
    Main,
    Inbound,
}

pub struct PeerCore {
    pub(super) peer: Peer,
    pub(super) local: Local,
    pub(super) main: Slot,
    /// A colliding connection from the peer, until §6.8 decides.
    pub(super) inbound: Option<Slot>,
    pub(super) rib_in: AdjRibIn,
    /// What the peer has from us.
    pub(super) sent: AdjRibOut,
    pub(super) announce: Arc<Vec<Announcement>>,
    pub(super) metrics: Metrics,
    pub(super) series: PeerSeries,
    pub(super) established_transitions: u64,
    /// TCP MD5 is on (for the handoff's features and a dial failure's hint).
    pub(super) md5: bool,
    /// What the last Established session agreed on (it outlives the session,
    /// for the helper's decisions).
    pub(super) last_negotiated: Option<Negotiated>,
    pub(super) helper: Option<Helper>,
    /// Decommission: when to send the farewell NOTIFICATION.
    pub(super) drain_until: Option<(Instant, Notification)>,
    pub(super) messages_received: u64,
    pub(super) messages_sent: u64,
    pub(super) last_error: Option<String>,
    /// Why the session was last reset with a NOTIFICATION, either way.
    pub(super) last_reset: Option<String>,
    /// What happened to the session lately (`show events`).
    pub(super) log: EventLog,
    pub(super) stopping: bool,
    /// The agent exports BMP: publish [`PeerEffect::Monitor`] effects.
    pub(super) monitored: bool,
    /// A dial is under way.
    pub(super) dialling: bool,
    pub(super) import: ImportState,
    /// An adopted session's first outputs and whether all its state came.
    pub(super) adoption: Option<(Vec<Output>, bool)>,
    /// The time of the event being handled.
    pub(super) now: Instant,
    pub(super) effects: Vec<PeerEffect>,
}

impl std::fmt::Debug for PeerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCore")
            .field("peer", &self.peer.address)
            .field("state", &self.main.session.state())
            .finish_non_exhaustive()
    }
}

impl PeerCore {
    pub fn new(
        peer: Peer,
        local: Local,
        announce: Arc<Vec<Announcement>>,
        metrics: Metrics,
        options: &PeerOptions,
        now: Instant,
    ) -> Self {
        let series =
            options.series.clone().unwrap_or_else(|| PeerSeries::new(&metrics, peer.address));
        // The R-bit comes with the task's Begin ([`PeerCore::set_restarting`]).
        let session = Session::new(session_config(&peer, &local, peer.passive));
        Self {
            md5: options.password.is_some(),
            peer,
            local,
            main: Slot::new(session),
            inbound: None,
            rib_in: AdjRibIn::default(),
            sent: AdjRibOut::default(),
            announce,
            series,
            metrics,
            established_transitions: 0,
            last_negotiated: None,
            helper: None,
            drain_until: None,
            messages_received: 0,
            messages_sent: 0,
            last_error: None,
            last_reset: None,
            log: EventLog::default(),
            stopping: false,
            monitored: options.tap.is_some(),
            dialling: false,
            import: ImportState::default(),
            adoption: None,
            now,
            effects: Vec::new(),
        }
    }

    /// Whether the first OPEN says we are restarting (R-bit): decided as
    /// the task begins, once the previous run's end is known.
    pub(super) fn set_restarting(&mut self, restarting: bool) {
        self.main.session.offer_mut().set_restarting(restarting);
    }

    /// Records a session event and logs it, one line with stable fields
    /// (`peer`, `event`, the detail as the message).
    pub(super) fn note(&mut self, kind: SessionEventKind, detail: String) {
        info!(peer = %self.peer.address, event = kind.as_str(), "{detail}");
        self.log.record(self.now, kind, detail);
    }

    /// Records what happened in the session's events without a log line:
    /// for the handoff, where a line per session (a thousand writes inside
    /// the pause) would say what the agent's one summary line says.
    pub(super) fn note_quietly(&mut self, kind: SessionEventKind, detail: String) {
        self.log.record(self.now, kind, detail);
    }

    /// Handles one event at `now`; what the task is to do, in order.
    pub fn handle(&mut self, event: PeerEvent, now: Instant) -> Vec<PeerEffect> {
        self.now = now;
        match event {
            PeerEvent::Start => match self.adoption.take() {
                Some((outputs, complete)) => self.resume_adopted(outputs, complete),
                None => self.feed(Which::Main, Input::Start),
            },
            PeerEvent::Accepted(conn) => self.accept(conn),
            PeerEvent::Dialled(result) => self.on_dialled(result),
            PeerEvent::Closed { conn, error } => self.on_closed(conn, error),
            PeerEvent::Tick => self.fire_timers(),
            PeerEvent::Announce(list) => self.on_announce(list),
            PeerEvent::Stop(notification) => self.stop(notification),
            PeerEvent::Vanish => self.vanish(),
            PeerEvent::Decommission { drain, message } => self.decommission(drain, &message),
            PeerEvent::Retire { passed } => self.retire(passed),
        }
        std::mem::take(&mut self.effects)
    }

    /// The session has ended for good: the task can end.
    pub fn stopped(&self) -> bool {
        self.stopping
    }

    /// The main session's state.
    pub fn state(&self) -> State {
        self.main.session.state()
    }

    pub(super) fn slot(&mut self, which: Which) -> Option<&mut Slot> {
        match which {
            Which::Main => Some(&mut self.main),
            Which::Inbound => self.inbound.as_mut(),
        }
    }

    /// The earliest deadline the core waits for (an hour away without one).
    pub fn next_deadline(&self) -> Instant {
        let far = self.now + Duration::from_secs(3600);
        self.main
            .timers
            .values()
            .chain(self.inbound.iter().flat_map(|s| s.timers.values()))
            .copied()
            .chain(self.helper.map(|h| match h {
                Helper::Restarting { until: at, .. } | Helper::LongLived(at) => at,
            }))
            .chain(self.drain_until.as_ref().map(|(at, _)| *at))
            .chain(self.held_until())
            .min()
            .unwrap_or(far)
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        if self.drain_until.as_ref().is_some_and(|(at, _)| *at <= now) {
            let (_, farewell) = self.drain_until.take().expect("just seen");
            self.note(SessionEventKind::Drain, format!("drained: closing with {farewell}"));
            self.stop(farewell);
            return;
        }
        if self.held_until().is_some_and(|at| at <= now) {
            self.end_hold_down();
        }
        match self.helper {
            Some(Helper::Restarting { until, long_lived }) if until <= now => match long_lived {
                Some(t) => {
                    let (kept, dropped) = self.rib_in.to_long_lived();
                    self.note(
                        SessionEventKind::GracefulRestart,
                        format!(
                            "restart time over: {kept} routes now long-lived stale for {} s, {dropped} dropped",
                            t.as_secs()
                        ),
                    );
                    self.helper = Some(Helper::LongLived(now + t));
                }
                None => self.end_helping("restart time over"),
            },
            Some(Helper::LongLived(at)) if at <= now => {
                self.end_helping("long-lived stale time over")
            }
            _ => {}
        }
        for which in [Which::Main, Which::Inbound] {
            let Some(slot) = self.slot(which) else { continue };
            let due: Vec<Timer> =
                slot.timers.iter().filter(|(_, at)| **at <= now).map(|(t, _)| *t).collect();
            for t in due {
                if let Some(slot) = self.slot(which) {
                    slot.timers.remove(&t);
                    self.feed(which, Input::TimerFired(t));
                }
            }
        }
    }

    fn on_announce(&mut self, list: Arc<Vec<Announcement>>) {
        self.announce = list;
        if self.main.session.state() == State::Established {
            let new = self.export();
            let delta = self.sent.delta_to(&new);
            info!(peer = %self.peer.address, announce = delta.announce.iter().map(|g| g.1.len()).sum::<usize>(), withdraw = delta.withdraw.len(), "announcements changed");
            self.advertise(&delta, false);
            self.sent = new;
        }
    }

    fn decommission(&mut self, drain: Duration, message: &str) {
        let n = self.main.session.negotiated().cloned();
        let farewell = graceful::farewell(n.as_ref(), message);
        if self.main.session.state() != State::Established || drain.is_zero() {
            self.stop(farewell);
            return;
        }
        // Announce everything again with GRACEFUL_SHUTDOWN; the peer
        // moves traffic away while we keep forwarding.
        let ibgp = self.peer.is_ibgp(self.local.asn);
        let mut draining = self.sent.clone();
        for route in draining.routes.values_mut() {
            *route = Arc::new(graceful::draining(route, ibgp));
        }
        let delta = self.sent.delta_to(&draining);
        self.note(
            SessionEventKind::Drain,
            format!(
                "draining: {} routes sent again with GRACEFUL_SHUTDOWN, closing in {} s",
                draining.len(),
                drain.as_secs()
            ),
        );
        self.advertise(&delta, false);
        self.sent = draining;
        self.drain_until = Some((self.now + drain, farewell));
    }

    /// Closes every connection without a NOTIFICATION, as a crash would.
    fn vanish(&mut self) {
        self.stopping = true;
        if self.main.session.state() == State::Established {
            self.monitor(|c| c.down(&crate::session::DownReason::Stopped, None, None));
        }
        self.cancel_dial();
        for which in [Which::Main, Which::Inbound] {
            if let Some(conn) = self.slot(which).and_then(|s| s.conn.take()) {
                self.effects
                    .push(PeerEffect::Close { conn: conn.id, linger: Duration::from_millis(200) });
            }
        }
    }

    pub(super) fn cancel_dial(&mut self) {
        if std::mem::take(&mut self.dialling) {
            self.effects.push(PeerEffect::CancelDial);
        }
    }

    /// Stops keeping a peer's stale routes.
    fn end_helping(&mut self, why: &str) {
        let purged = self.rib_in.purge_stale(None);
        self.note(
            SessionEventKind::GracefulRestart,
            format!("{why}: {purged} stale routes purged"),
        );
        self.helper = None;
    }

    pub(super) fn stop(&mut self, notification: Notification) {
        self.stopping = true;
        if self.inbound.is_some() {
            self.feed(Which::Inbound, Input::Stop(notification.clone()));
        }
        self.feed(Which::Main, Input::Stop(notification));
        self.cancel_dial();
    }

    /// The task's channel of commands closed: the agent is going away.
    pub fn agent_stopping(&mut self, now: Instant) -> Vec<PeerEffect> {
        let cease = Notification::cease_with_message(
            subcode::ADMINISTRATIVE_SHUTDOWN,
            "nonstop: agent stopping",
        );
        self.handle(PeerEvent::Stop(cease), now)
    }

    /// Feeds the slot's FSM and carries out what it asks, until it is quiet.
    pub(super) fn feed(&mut self, which: Which, input: Input) {
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            let now = self.now;
            let Some(slot) = self.slot(which) else { return };
            let outputs = slot.session.handle(input, now);
            for output in outputs {
                if let Some(next) = self.execute(which, output) {
                    queue.push(next);
                }
            }
        }
        self.check_collision();
    }

    pub(super) fn execute(&mut self, which: Which, output: Output) -> Option<Input> {
        match output {
            Output::Connect => {
                if self.dialling {
                    // Still trying when connect-retry fires: that attempt timed out.
                    let e = io::Error::new(io::ErrorKind::TimedOut, "no answer");
                    self.note_dial_failure(&e);
                }
                self.dialling = true;
                self.effects.push(PeerEffect::Dial);
            }
            Output::Send(message) => {
                if !self.send(which, &message) {
                    return Some(Input::TcpFailed);
                }
            }
            Output::ArmTimer(t, after) => {
                let at = self.now + after;
                self.slot(which)?.timers.insert(t, at);
            }
            Output::CancelTimer(t) => {
                self.slot(which)?.timers.remove(&t);
            }
            Output::Established(n) => self.on_established(which, *n),
            Output::Update(update, malformed) => return self.on_update(update, &malformed),
            Output::RefreshRequested(family) => {
                let mut delta = self.sent.full();
                let wanted = family.family();
                delta.announce.retain(|(_, ps)| Some(Family::of(&ps[0])) == wanted);
                self.advertise(&delta, false);
            }
            Output::Down { reason, sent, received } => {
                self.on_down(which, reason, sent, received)?;
            }
        }
        None
    }

    /// Queues a message; false when the slot has no connection to send on.
    pub(super) fn send(&mut self, which: Which, message: &Message) -> bool {
        let Some(slot) = self.slot(which) else { return false };
        let ctx = slot.session.wire_context();
        let Some(conn) = slot.conn else { return false };
        self.effects.push(PeerEffect::Send { conn: conn.id, bytes: message.to_bytes(&ctx) });
        self.messages_sent += 1;
        self.series.message(Direction::Sent, MessageKind::of(message)).inc();
        true
    }

    /// Sends a delta of the Adj-RIB-Out, packed, then End-of-RIB if asked.
    pub(super) fn advertise(&mut self, delta: &Delta, end_of_rib: bool) {
        let Some(n) = self.main.session.negotiated() else { return };
        let Some(conn) = self.main.conn else { return };
        let builder = UpdateBuilder::new(n.wire);
        let carried = |p: &crate::route::Prefix| n.families.contains(&AfiSafi::from(Family::of(p)));
        let mut out = Vec::new();
        let mut updates = 0;
        for (route, prefixes) in &delta.announce {
            let ps: Vec<_> = prefixes.iter().copied().filter(|p| carried(p)).collect();
            updates += builder.announce(&route.attrs, route.next_hop, &ps, &mut out);
        }
        let (v4, v6): (Vec<_>, Vec<_>) =
            delta.withdraw.iter().copied().filter(|p| carried(p)).partition(|p| p.is_ipv4());
        updates += builder.withdraw(&v4, &mut out) + builder.withdraw(&v6, &mut out);
        if end_of_rib {
            for f in &n.families {
                Message::Update(Update::end_of_rib(*f)).encode(&n.wire, &mut out);
                updates += 1;
            }
        }
        if out.is_empty() {
            return;
        }
        if self.monitored {
            self.effects.push(PeerEffect::Monitor(crate::bmp::Monitored::Sent(out.clone())));
        }
        self.effects.push(PeerEffect::Send { conn: conn.id, bytes: out });
        self.messages_sent += updates as u64;
        self.series.message(Direction::Sent, MessageKind::Update).inc_by(updates as u64);
    }

    /// What we announce to this peer over the main connection.
    pub(super) fn export(&self) -> AdjRibOut {
        let local = self.main.conn.map(|c| c.local.ip().to_canonical());
        let configured = self.peer.local_address;
        let pick = |want_v4: bool| {
            [configured, local].into_iter().flatten().find(|ip| ip.is_ipv4() == want_v4)
        };
        let rules = ExportRules {
            local_asn: self.local.asn,
            ibgp: self.peer.is_ibgp(self.local.asn),
            local_v4: pick(true).and_then(|ip| match ip {
                IpAddr::V4(a) => Some(a),
                IpAddr::V6(_) => None,
            }),
            local_v6: pick(false).and_then(|ip| match ip {
                IpAddr::V6(a) => Some(a),
                IpAddr::V4(_) => None,
            }),
            wire: self.main.session.wire_context(),
        };
        export(&self.announce, &rules)
    }
}
