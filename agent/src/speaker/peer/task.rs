//! A peer's I/O shell: one task per configured peer that owns its sockets,
//! its dial, its deadline and its command channel, turns each of them into
//! a [`PeerEvent`] for the [`PeerCore`], carries out the core's effects,
//! and publishes the core's status after each.
//!
//! ```text
//!   commands, socket reads/writes, dial, deadline
//!        │                              ▲
//!        ▼                              │ PeerEffect (dial, send, close, release)
//!   PeerEvent ──▶ PeerCore ─────────────┘
//!                    └─ status ──▶ watch (GET /status)
//! ```
//!
//! It also holds a handoff's I/O: a second descriptor for the session's
//! socket and its unread and unwritten bytes for the successor, and the
//! wait for the handoff's verdict.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::core::{ConnId, ConnInfo, PeerCore, PeerEffect, PeerEvent};
use super::handoff::{Adopted, FrozenPeer, RibSnapshot, Thaw};
use super::{Local, PeerCommand, PeerOptions};
use crate::config::{Announcement, Peer};
use crate::handoff::protocol::RibPart;
use crate::handoff::session_state::monotonic_ns;
use crate::speaker::conn::{self, Conn};
use crate::speaker::sockopt;
use crate::speaker::status::{Metrics, PeerStatus};

pub struct PeerTask {
    core: PeerCore,
    /// The core's connections (at most the main one and a colliding one).
    conns: Vec<Conn>,
    dial: Option<JoinHandle<io::Result<TcpStream>>>,
    commands: mpsc::Receiver<PeerCommand>,
    status: watch::Sender<PeerStatus>,
    password: Option<Arc<[u8]>>,
    /// Where BMP records go (None: the agent exports no BMP).
    tap: Option<crate::speaker::monitor::Tap>,
    /// An adopted session not yet taken up: CLOCK_MONOTONIC of the
    /// predecessor's last read of it, and where to report the pause.
    resumed: Option<(u64, oneshot::Sender<Duration>)>,
    /// When the status was last published, and whether it has changed
    /// since (published at most every [`PUBLISH_EVERY`] while routes stream
    /// in, at once when the session changes state).
    published_at: Instant,
    unpublished: bool,
    /// Connections being closed (their NOTIFICATION flushed, then FIN),
    /// awaited before the task ends.
    closing: Vec<JoinHandle<()>>,
}

/// How stale the published status may be while a table streams in: a
/// status per read cost 5% of a full-table ingest (a read brings about 20
/// UPDATEs when the sender is the slower side).
const PUBLISH_EVERY: Duration = Duration::from_millis(50);

impl std::fmt::Debug for PeerTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerTask").field("core", &self.core).finish_non_exhaustive()
    }
}

fn info_of(conn: &Conn) -> ConnInfo {
    ConnInfo { id: conn.id, local: conn.local, remote: conn.remote }
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

/// What a built task is told when it is to run: what to announce (known
/// only once a successor has the predecessor's check verdicts) and the
/// session adopted for it, with where to report the moment it is taken up.
pub struct Begin {
    pub announce: Arc<Vec<Announcement>>,
    /// Within the restart time of the previous run: set the R-bit (a
    /// session adopted instead is no restart).
    pub restarting: bool,
    pub adopted: Option<(Adopted, oneshot::Sender<Duration>)>,
}

impl std::fmt::Debug for Begin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Begin")
            .field("announce", &self.announce.len())
            .field("restarting", &self.restarting)
            .field("adopted", &self.adopted.is_some())
            .finish()
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
        let core = PeerCore::new(peer, local, announce, metrics, &options, Instant::now());
        Self {
            core,
            conns: Vec::with_capacity(2),
            dial: None,
            commands,
            status,
            tap: options.tap,
            password: options.password,
            resumed: None,
            published_at: Instant::now(),
            unpublished: false,
            closing: Vec::new(),
        }
    }

    /// Runs the peer from the moment it is told to [`Begin`]; ends without
    /// a word if the agent goes before that (a successor that stopped
    /// while still taking over).
    pub async fn run(mut self, begin: oneshot::Receiver<Begin>) {
        let Ok(Begin { announce, restarting, adopted }) = begin.await else { return };
        self.core.announce = announce;
        self.core.set_restarting(restarting);
        if let Some((a, resumed)) = adopted
            && let Err(e) = self.adopt(a, resumed)
        {
            warn!(peer = %self.core.peer.address, "cannot resume the adopted session, starting anew: {e}");
        }
        let adopted = self.resumed.take().map(|(frozen_at_ns, resumed)| {
            // The pause this session saw: from the predecessor's last read of
            // it to now, as the task takes it up and reading starts again.
            let pause = Duration::from_nanos(monotonic_ns().saturating_sub(frozen_at_ns));
            (pause, resumed)
        });
        self.step(PeerEvent::Start);
        if adopted.is_some()
            && let Some(conn) = self.conns.first().map(|c| c.id)
        {
            // What the predecessor had read but not handled.
            self.received(conn);
        }
        self.publish();
        // Reported once the status says Established: the agent serves its
        // status when every adopted session has reported, and a session
        // that never left must not show as Idle there.
        if let Some((pause, resumed)) = adopted {
            let _ = resumed.send(pause);
        }
        loop {
            let deadline = self.core.next_deadline();
            let mut conns = self.conns.iter_mut();
            let (a, b) = (conns.next(), conns.next());
            let ids = (a.as_ref().map(|c| c.id), b.as_ref().map(|c| c.id));
            let (a_read, a_write) = conn::halves(a);
            let (b_read, b_write) = conn::halves(b);
            let publish_at = self.published_at + PUBLISH_EVERY;
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(c) => self.command(c).await,
                    None => {
                        let effects = self.core.agent_stopping(Instant::now());
                        self.apply(effects);
                    }
                },
                r = conn::read(a_read) => self.on_read(ids.0, r),
                r = conn::read(b_read) => self.on_read(ids.1, r),
                r = conn::write(a_write) => self.on_written(ids.0, r),
                r = conn::write(b_write) => self.on_written(ids.1, r),
                d = dialled(&mut self.dial) => self.on_dialled(d),
                _ = tokio::time::sleep_until(deadline.into()) => self.step(PeerEvent::Tick),
                _ = tokio::time::sleep_until(publish_at.into()), if self.unpublished => {}
            }
            if self.core.stopped() {
                self.publish();
                // The task's end is what an exiting agent waits for: its
                // last NOTIFICATION must be on the wire by then.
                for close in std::mem::take(&mut self.closing) {
                    let _ = close.await;
                }
                return;
            }
            self.publish_soon();
        }
    }

    fn step(&mut self, event: PeerEvent) {
        let effects = self.core.handle(event, Instant::now());
        self.apply(effects);
    }

    fn apply(&mut self, effects: Vec<PeerEffect>) {
        for effect in effects {
            match effect {
                PeerEffect::Dial => {
                    if let Some(old) = self.dial.take() {
                        old.abort();
                    }
                    self.dial = Some(self.spawn_dial());
                }
                PeerEffect::CancelDial => {
                    if let Some(old) = self.dial.take() {
                        old.abort();
                    }
                }
                PeerEffect::Send { conn, bytes } => {
                    if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) {
                        c.queue_owned(bytes);
                    }
                }
                PeerEffect::Close { conn, linger } => {
                    if let Some(c) = self.take(conn) {
                        self.closing.retain(|h| !h.is_finished());
                        self.closing.push(tokio::spawn(c.close(linger)));
                    }
                }
                PeerEffect::Abort { conn } => {
                    if let Some(c) = self.take(conn) {
                        c.abort();
                    }
                }
                PeerEffect::Release { conn } => {
                    if let Some(c) = self.take(conn) {
                        c.forget();
                    }
                }
                PeerEffect::Monitor(what) => {
                    if let Some(tap) = &self.tap {
                        tap.publish(self.core.peer.address, None, what);
                    }
                }
            }
        }
    }

    fn take(&mut self, conn: ConnId) -> Option<Conn> {
        let at = self.conns.iter().position(|c| c.id == conn)?;
        Some(self.conns.remove(at))
    }

    fn publish(&mut self) {
        let now = Instant::now();
        self.status.send_replace(self.core.status(now, SystemTime::now()));
        (self.published_at, self.unpublished) = (now, false);
    }

    /// Publishes now if the session changed state or the last status is
    /// [`PUBLISH_EVERY`] old; else marks it due, for the loop's timer.
    fn publish_soon(&mut self) {
        let moved = self.status.borrow().state != self.core.state();
        if moved || self.published_at.elapsed() >= PUBLISH_EVERY {
            self.publish();
        } else {
            self.unpublished = true;
        }
    }

    fn on_read(&mut self, conn: Option<ConnId>, result: io::Result<usize>) {
        let Some(conn) = conn else { return };
        match result {
            Ok(0) => self.step(PeerEvent::Closed { conn, error: None }),
            Err(e) => self.step(PeerEvent::Closed { conn, error: Some(format!("reading: {e}")) }),
            Ok(_) => self.received(conn),
        }
    }

    /// Hands the connection's read buffer to the core; keeps what it did
    /// not take (the start of the next message).
    fn received(&mut self, conn: ConnId) {
        let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) else { return };
        let mut buf = std::mem::take(&mut c.rbuf);
        let (consumed, effects) = self.core.receive(conn, &buf, Instant::now());
        self.apply(effects);
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == conn) {
            buf.drain(..consumed);
            c.rbuf = buf;
        }
    }

    fn on_written(&mut self, conn: Option<ConnId>, result: io::Result<usize>) {
        if let (Some(conn), Err(e)) = (conn, result) {
            self.step(PeerEvent::Closed { conn, error: Some(format!("writing: {e}")) });
        }
    }

    fn on_dialled(&mut self, result: io::Result<TcpStream>) {
        let result = result.and_then(Conn::new).map(|c| {
            let info = info_of(&c);
            self.conns.push(c);
            info
        });
        self.step(PeerEvent::Dialled(result));
    }

    async fn command(&mut self, command: PeerCommand) {
        let event = match command {
            PeerCommand::Inbound(stream) => return self.accept(stream),
            PeerCommand::Announce(list) => PeerEvent::Announce(list),
            PeerCommand::Stop(notification) => PeerEvent::Stop(notification),
            PeerCommand::Vanish => PeerEvent::Vanish,
            PeerCommand::Decommission { drain, message } => {
                PeerEvent::Decommission { drain, message }
            }
            PeerCommand::Features(reply) => {
                let _ = reply.send(self.core.handoff_features());
                return;
            }
            PeerCommand::Snapshot(reply) => {
                let _ = reply.send(self.core.snapshot());
                return;
            }
            PeerCommand::Tables(reply) => {
                let _ = reply.send(self.core.tables());
                return;
            }
            PeerCommand::Events(reply) => {
                let _ = reply.send(self.core.log.snapshot(Instant::now(), SystemTime::now()));
                return;
            }
            PeerCommand::Inherit(events) => {
                self.core.log.inherit(events, Instant::now(), SystemTime::now());
                self.publish();
                return;
            }
            PeerCommand::Replay(target) => {
                if let Some(tap) = &self.tap {
                    for what in self.core.replay() {
                        tap.publish(self.core.peer.address, Some(target), what);
                    }
                }
                return;
            }
            PeerCommand::Freeze { reply, thaw, base } => {
                return self.freeze(reply, thaw, base).await;
            }
        };
        self.step(event);
    }

    /// A connection from the peer, with GTSM applied when configured.
    fn accept(&mut self, stream: TcpStream) {
        let peer = &self.core.peer;
        if peer.ttl_security {
            let v6 = stream.local_addr().is_ok_and(|a| a.is_ipv6());
            let min = 255 - peer.ebgp_multihop.unwrap_or(1) + 1;
            let gtsm =
                sockopt::ttl(&stream, v6, 255).and_then(|()| sockopt::min_ttl(&stream, v6, min));
            if let Err(e) = gtsm {
                warn!(peer = %peer.address, "cannot apply GTSM to the accepted connection: {e}");
            }
        }
        let Ok(conn) = Conn::new(stream) else { return };
        let info = info_of(&conn);
        self.conns.push(conn);
        self.step(PeerEvent::Accepted(info));
    }

    fn spawn_dial(&self) -> JoinHandle<io::Result<TcpStream>> {
        let peer = &self.core.peer;
        let remote = SocketAddr::new(peer.address, peer.port);
        let local = peer.local_address;
        let timeout = Duration::from_secs(u64::from(peer.connect_retry_time));
        let password = self.password.clone();
        let (gtsm, multihop) = (peer.ttl_security, peer.ebgp_multihop);
        tokio::spawn(async move {
            let v6 = remote.is_ipv6();
            let socket = if v6 { TcpSocket::new_v6()? } else { TcpSocket::new_v4()? };
            if let Some(key) = &password {
                sockopt::md5(&socket, v6, remote.ip(), key)?;
            }
            if gtsm {
                // RFC 5082: send with 255, accept only what a direct neighbour sends.
                sockopt::ttl(&socket, v6, 255)?;
                sockopt::min_ttl(&socket, v6, 255 - multihop.unwrap_or(1) + 1)?;
            } else if let Some(hops) = multihop {
                sockopt::ttl(&socket, v6, hops)?;
            }
            if let Some(ip) = local {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            tokio::time::timeout(timeout, socket.connect(remote))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
        })
    }

    /// Pauses the task until the speaker decides how the handoff ended.
    async fn freeze(
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
            Ok(Thaw::Retire) => self.step(PeerEvent::Retire { passed }),
            Ok(Thaw::Resume) | Err(_) => {
                if passed {
                    info!(peer = %self.core.peer.address, "handoff rolled back: carrying on");
                }
            }
        }
    }

    /// The core's frozen session with its socket and buffers.
    fn frozen(&self, base: Option<&RibSnapshot>) -> Option<FrozenPeer> {
        let frozen = self.core.freeze(base, Instant::now(), SystemTime::now())?;
        let conn = self.conns.iter().find(|c| c.id == frozen.conn)?;
        let socket = match conn.dup() {
            Ok(fd) => fd,
            Err(e) => {
                warn!(peer = %self.core.peer.address, "cannot pass the session's socket: {e}");
                return None;
            }
        };
        let mut parts = frozen.parts;
        parts.push((RibPart::Unread, conn.rbuf.clone()));
        parts.push((RibPart::Unwritten, conn.unwritten().to_vec()));
        parts.retain(|(_, bytes)| !bytes.is_empty());
        Some(FrozenPeer { state: frozen.state, parts, socket })
    }

    /// Takes up a session adopted from the predecessor; `resumed` hears
    /// how long the session went untended, once the task runs it.
    fn adopt(&mut self, adopted: Adopted, resumed: oneshot::Sender<Duration>) -> io::Result<()> {
        let (core, stream, unread, unwritten) = adopted.split();
        stream.set_nonblocking(true)?;
        let (local, remote) = (core.state.local, core.state.remote);
        let mut conn = Conn::adopted(TcpStream::from_std(stream)?, local, remote);
        conn.rbuf.extend_from_slice(&unread);
        conn.queue(&unwritten);
        let frozen_at_ns = core.state.frozen_at_ns;
        self.core.adopt(core, info_of(&conn), Instant::now(), SystemTime::now());
        self.conns.push(conn);
        self.resumed = Some((frozen_at_ns, resumed));
        Ok(())
    }
}
