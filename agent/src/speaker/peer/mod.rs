//! One task per configured peer: it owns the peer's sessions, sockets, timers
//! and RIBs, and nothing else touches them.
//!
//! ```text
//!  speaker ──PeerCommand──▶ PeerTask ──PeerStatus (watch)──▶ status readers
//!                            │  main slot:    Session + socket (dials / accepts)
//!                            │  inbound slot: Session + socket (a colliding
//!                            │                connection, until §6.8 decides)
//!                            └─ AdjRibIn, AdjRibOut (what the peer has from us)
//! ```
//!
//! Each slot is one connection's life as the [`Session`] FSM sees it; the
//! task turns socket reads and timer deadlines into FSM inputs and carries out
//! the FSM's outputs. Connections and collisions are in `connections`, what
//! the task reports in `report`.

mod connections;
mod events;
mod handoff;
mod limits;
mod report;

pub use handoff::{Adopted, FrozenPeer, RibSnapshot, Thaw};

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::conn::{self, Conn};
use super::sockopt;
use super::status::{
    Direction, ErrorKind, MessageKind, Metrics, PeerLabel, PeerSeries, PeerStatus, RouteLabels,
};
use crate::config::{Announcement, Family, Peer};
use crate::graceful;
use crate::handoff::protocol::Feature;
use crate::rib::{AdjRibIn, AdjRibOut, Delta, ExportRules, export};
use crate::session::{
    Collision, Input, LocalOffer, Output, Session, SessionConfig, State, Timer, resolve_collision,
};
use crate::wire::{
    AfiSafi, Capability, DecodeError, GrFamily, GracefulRestartCap, HEADER_LEN, LlgrFamily,
    Message, Notification, Update, UpdateBuilder, code, frame, subcode,
};

/// What the speaker asks of a peer task.
#[derive(Debug)]
pub enum PeerCommand {
    /// The peer connected to our listener.
    Inbound(TcpStream),
    /// The routes to announce changed.
    Announce(Arc<Vec<Announcement>>),
    /// Close the session with this NOTIFICATION and end the task.
    Stop(Notification),
    /// Graceful restart stop: close without a NOTIFICATION, so the peer keeps
    /// our routes stale (RFC 4724), and end the task.
    Vanish,
    /// Going away for good (RFC 8326): announce everything again with
    /// GRACEFUL_SHUTDOWN, wait `drain`, then Cease (Hard Reset under the
    /// N-bit) with this message, and end the task.
    Decommission { drain: Duration, message: String },
    /// What the Established session negotiated that a successor must be
    /// able to carry (None: no Established session to hand off).
    Features(tokio::sync::oneshot::Sender<Option<std::collections::BTreeSet<Feature>>>),
    /// A copy of both RIBs for a handoff to send while the session runs
    /// (None: no Established session to hand off).
    Snapshot(tokio::sync::oneshot::Sender<Option<Arc<RibSnapshot>>>),
    /// Pause for a handoff: reply with the frozen session (None when not
    /// Established) and its routing state as changed since `base` (all of
    /// it without one), then wait for how the handoff ended.
    Freeze {
        reply: tokio::sync::oneshot::Sender<Option<FrozenPeer>>,
        thaw: tokio::sync::oneshot::Receiver<Thaw>,
        base: Option<Arc<RibSnapshot>>,
    },
}

/// How a peer task starts, beyond the peer's config.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// Within the restart time of the previous run: set the R-bit.
    pub restarting: bool,
    /// The TCP MD5 key (RFC 2385), read from the peer's Secret.
    pub password: Option<Arc<[u8]>>,
}

/// What the task waits for besides the sessions' own timers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Helper {
    /// The peer restarts: its routes are stale until this deadline.
    Restarting(Instant),
    /// Past the restart time, kept by Long-Lived GR until this deadline.
    LongLived(Instant),
}

/// The local side of every session of this agent.
#[derive(Debug, Clone)]
pub struct Local {
    pub asn: u32,
    pub router_id: Ipv4Addr,
}

struct Slot {
    session: Session,
    conn: Option<Conn>,
    dial: Option<JoinHandle<io::Result<TcpStream>>>,
    timers: HashMap<Timer, Instant>,
}

impl Slot {
    fn new(session: Session) -> Self {
        Self { session, conn: None, dial: None, timers: HashMap::new() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Main,
    Inbound,
}

impl std::fmt::Debug for PeerTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTask")
            .field("peer", &self.peer.address)
            .field("state", &self.main.session.state())
            .finish_non_exhaustive()
    }
}

pub struct PeerTask {
    peer: Peer,
    local: Local,
    main: Slot,
    inbound: Option<Slot>,
    rib_in: AdjRibIn,
    sent: AdjRibOut,
    announce: Arc<Vec<Announcement>>,
    commands: mpsc::Receiver<PeerCommand>,
    status: watch::Sender<PeerStatus>,
    metrics: Metrics,
    series: PeerSeries,
    established_transitions: u64,
    password: Option<Arc<[u8]>>,
    /// What the last Established session agreed on (it outlives the session,
    /// for the helper's decisions).
    last_negotiated: Option<crate::session::Negotiated>,
    helper: Option<Helper>,
    /// Decommission: when to send the farewell NOTIFICATION.
    drain_until: Option<(Instant, Notification)>,
    messages_received: u64,
    messages_sent: u64,
    last_error: Option<String>,
    stopping: bool,
    /// A session adopted from a predecessor, not yet taken up.
    adoption: Option<handoff::Adoption>,
    import: limits::ImportState,
}

/// The capabilities we offer a peer, from its config.
pub fn capabilities(peer: &Peer, local_asn: u32) -> Vec<Capability> {
    let families: Vec<AfiSafi> = peer.families.iter().map(|f| AfiSafi::from(*f)).collect();
    let mut caps: Vec<Capability> =
        families.iter().map(|f| Capability::Multiprotocol(*f)).collect();
    caps.extend([
        Capability::RouteRefresh,
        Capability::EnhancedRouteRefresh,
        Capability::ExtendedMessage,
        Capability::FourOctetAs(local_asn),
    ]);
    let gr = &peer.graceful_restart;
    if gr.enabled {
        caps.push(Capability::GracefulRestart(GracefulRestartCap {
            restarting: false,
            notification: gr.notification,
            restart_time: gr.restart_time,
            families: families.iter().map(|f| GrFamily { family: *f, forwarding: true }).collect(),
        }));
        if gr.long_lived_stale_time > 0 {
            caps.push(Capability::LongLivedGracefulRestart(
                families
                    .iter()
                    .map(|f| LlgrFamily {
                        family: *f,
                        forwarding: true,
                        stale_time: gr.long_lived_stale_time,
                    })
                    .collect(),
            ));
        }
    }
    caps
}

fn session_config(peer: &Peer, local: &Local, passive: bool) -> SessionConfig {
    SessionConfig {
        offer: LocalOffer {
            asn: local.asn,
            router_id: local.router_id,
            hold_time: peer.hold_time,
            keepalive_time: peer.keepalive_time,
            peer_asn: peer.asn,
            capabilities: capabilities(peer, local.asn),
        },
        connect_retry: Duration::from_secs(u64::from(peer.connect_retry_time)),
        passive,
    }
}

async fn dialled(dial: &mut Option<JoinHandle<io::Result<TcpStream>>>) -> io::Result<TcpStream> {
    match dial {
        Some(handle) => {
            let result = handle.await.unwrap_or_else(|e| Err(io::Error::other(e)));
            *dial = None;
            result
        }
        None => std::future::pending().await,
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// IPv4 peers reaching a dual-stack listener appear as ::ffff:a.b.c.d.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl PeerTask {
    pub fn new(
        peer: Peer,
        local: Local,
        announce: Arc<Vec<Announcement>>,
        commands: mpsc::Receiver<PeerCommand>,
        status: watch::Sender<PeerStatus>,
        metrics: Metrics,
        options: PeerOptions,
    ) -> Self {
        let series = PeerSeries::new(&metrics, peer.address);
        let mut session = Session::new(session_config(&peer, &local, peer.passive));
        session.offer_mut().set_restarting(options.restarting);
        let main = Slot::new(session);
        Self {
            peer,
            local,
            main,
            inbound: None,
            rib_in: AdjRibIn::default(),
            sent: AdjRibOut::default(),
            announce,
            commands,
            status,
            series,
            metrics,
            established_transitions: 0,
            password: options.password,
            last_negotiated: None,
            helper: None,
            drain_until: None,
            messages_received: 0,
            messages_sent: 0,
            last_error: None,
            stopping: false,
            adoption: None,
            import: limits::ImportState::default(),
        }
    }

    pub async fn run(mut self) {
        match self.adoption.take() {
            Some(adoption) => self.resume_adopted(adoption).await,
            None => self.feed(Which::Main, Input::Start).await,
        }
        self.publish();
        loop {
            let deadline = self.next_deadline();
            let (main_r, main_w) = conn::halves(self.main.conn.as_mut());
            let (inbound_r, inbound_w) =
                conn::halves(self.inbound.as_mut().and_then(|s| s.conn.as_mut()));
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(c) => self.command(c).await,
                    None => self.stop(Notification::cease_with_message(
                        subcode::ADMINISTRATIVE_SHUTDOWN, "nonstop: agent stopping")).await,
                },
                r = conn::read(main_r) => self.on_read(Which::Main, r).await,
                r = conn::read(inbound_r) => self.on_read(Which::Inbound, r).await,
                r = conn::write(main_w) => self.on_written(Which::Main, r).await,
                r = conn::write(inbound_w) => self.on_written(Which::Inbound, r).await,
                d = dialled(&mut self.main.dial) => self.on_dialled(d).await,
                _ = tokio::time::sleep_until(deadline.into()) => self.fire_timers().await,
            }
            self.publish();
            if self.stopping {
                return;
            }
        }
    }

    fn slot(&mut self, which: Which) -> Option<&mut Slot> {
        match which {
            Which::Main => Some(&mut self.main),
            Which::Inbound => self.inbound.as_mut(),
        }
    }

    fn next_deadline(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(3600);
        self.main
            .timers
            .values()
            .chain(self.inbound.iter().flat_map(|s| s.timers.values()))
            .copied()
            .chain(self.helper.map(|h| match h {
                Helper::Restarting(at) | Helper::LongLived(at) => at,
            }))
            .chain(self.drain_until.as_ref().map(|(at, _)| *at))
            .chain(self.held_until())
            .min()
            .unwrap_or(far)
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        if let Some((at, _)) = &self.drain_until
            && *at <= now
        {
            let (_, farewell) = self.drain_until.take().expect("just seen");
            info!(peer = %self.peer.address, "drained: closing with {farewell}");
            self.stop(farewell).await;
            return;
        }
        if self.held_until().is_some_and(|at| at <= now) {
            self.end_hold_down().await;
        }
        match self.helper {
            Some(Helper::Restarting(at)) if at <= now => {
                let long_lived = self.last_negotiated.as_ref().and_then(graceful::long_lived_time);
                match long_lived {
                    Some(t) => {
                        let (kept, dropped) = self.rib_in.to_long_lived();
                        info!(peer = %self.peer.address, kept, dropped, "restart time over: routes now long-lived stale");
                        self.helper = Some(Helper::LongLived(now + t));
                    }
                    None => self.end_helping("restart time over"),
                }
            }
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
                    self.feed(which, Input::TimerFired(t)).await;
                }
            }
        }
    }

    async fn command(&mut self, command: PeerCommand) {
        match command {
            PeerCommand::Inbound(stream) => self.accept(stream).await,
            PeerCommand::Announce(list) => {
                self.announce = list;
                if self.main.session.state() == State::Established {
                    let new = self.export();
                    let delta = self.sent.delta_to(&new);
                    info!(peer = %self.peer.address, announce = delta.announce.iter().map(|g| g.1.len()).sum::<usize>(), withdraw = delta.withdraw.len(), "announcements changed");
                    self.advertise(&delta, false).await;
                    self.sent = new;
                }
            }
            PeerCommand::Stop(notification) => self.stop(notification).await,
            PeerCommand::Features(reply) => {
                let _ = reply.send(self.handoff_features());
            }
            PeerCommand::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            PeerCommand::Freeze { reply, thaw, base } => self.freeze(reply, thaw, base).await,
            PeerCommand::Vanish => self.vanish(),
            PeerCommand::Decommission { drain, message } => {
                let n = self.main.session.negotiated().cloned();
                let farewell = graceful::farewell(n.as_ref(), &message);
                if self.main.session.state() != State::Established || drain.is_zero() {
                    self.stop(farewell).await;
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
                info!(peer = %self.peer.address, routes = draining.len(), ?drain, "draining: GRACEFUL_SHUTDOWN sent");
                self.advertise(&delta, false).await;
                self.sent = draining;
                self.drain_until = Some((Instant::now() + drain, farewell));
            }
        }
    }

    /// Closes every connection without a NOTIFICATION, as a crash would.
    fn vanish(&mut self) {
        self.stopping = true;
        if let Some(dial) = self.main.dial.take() {
            dial.abort();
        }
        for slot in [Some(&mut self.main), self.inbound.as_mut()].into_iter().flatten() {
            if let Some(conn) = slot.conn.take() {
                tokio::spawn(conn.close(Duration::from_millis(200)));
            }
        }
    }

    /// Stops keeping a peer's stale routes.
    fn end_helping(&mut self, why: &str) {
        let purged = self.rib_in.purge_stale(None);
        info!(peer = %self.peer.address, purged, "{why}: stale routes purged");
        self.helper = None;
    }

    async fn stop(&mut self, notification: Notification) {
        self.stopping = true;
        if self.inbound.is_some() {
            self.feed(Which::Inbound, Input::Stop(notification.clone())).await;
        }
        self.feed(Which::Main, Input::Stop(notification)).await;
        if let Some(dial) = self.main.dial.take() {
            dial.abort();
        }
    }

    /// Feeds the slot's FSM and carries out what it asks, until it is quiet.
    async fn feed(&mut self, which: Which, input: Input) {
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            let Some(slot) = self.slot(which) else { return };
            let outputs = slot.session.handle(input, Instant::now());
            for output in outputs {
                if let Some(next) = self.execute(which, output).await {
                    queue.push(next);
                }
            }
        }
        self.check_collision().await;
    }

    async fn execute(&mut self, which: Which, output: Output) -> Option<Input> {
        let now = Instant::now();
        match output {
            Output::Connect => {
                if let Some(old) = self.main.dial.take() {
                    // Still trying when connect-retry fires: that attempt timed out.
                    if !old.is_finished() {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "no answer");
                        self.note_dial_failure(&e);
                    }
                    old.abort();
                }
                self.main.dial = Some(self.spawn_dial());
            }
            Output::Send(message) => {
                if !self.send(which, &message) {
                    return Some(Input::TcpFailed);
                }
            }
            Output::ArmTimer(t, after) => {
                self.slot(which)?.timers.insert(t, now + after);
            }
            Output::CancelTimer(t) => {
                self.slot(which)?.timers.remove(&t);
            }
            Output::Established(n) => self.on_established(which, *n).await,
            Output::Update(update, malformed) => return self.on_update(update, &malformed),
            Output::RefreshRequested(family) => {
                let mut delta = self.sent.full();
                let wanted = family.family();
                delta.announce.retain(|(_, ps)| Some(Family::of(&ps[0])) == wanted);
                self.advertise(&delta, false).await;
            }
            Output::Down { reason, sent, received } => {
                self.on_down(which, reason, sent, received)?;
            }
        }
        None
    }

    /// Queues a message; false when the slot has no connection to send on.
    fn send(&mut self, which: Which, message: &Message) -> bool {
        let Some(slot) = self.slot(which) else { return false };
        let ctx = slot.session.wire_context();
        let Some(conn) = slot.conn.as_mut() else { return false };
        conn.queue(&message.to_bytes(&ctx));
        self.messages_sent += 1;
        self.series.message(Direction::Sent, MessageKind::of(message)).inc();
        true
    }

    async fn on_written(&mut self, which: Which, result: io::Result<usize>) {
        if let Err(e) = result {
            self.last_error = Some(format!("writing: {e}"));
            self.metrics.error(self.peer.address, ErrorKind::Transport);
            self.feed(which, Input::TcpFailed).await;
        }
    }

    /// Sends a delta of the Adj-RIB-Out, packed, then End-of-RIB if asked.
    async fn advertise(&mut self, delta: &Delta, end_of_rib: bool) {
        let Some(n) = self.main.session.negotiated().cloned() else { return };
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
        let Some(conn) = self.main.conn.as_mut() else { return };
        conn.queue(&out);
        self.messages_sent += updates as u64;
        self.series.message(Direction::Sent, MessageKind::Update).inc_by(updates as u64);
    }

    fn export(&self) -> AdjRibOut {
        let local = self.main.conn.as_ref().map(|c| canonical(c.local.ip()));
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
