//! An agent's life from start to exit, phase by phase:
//!
//! ```text
//!   begin      config, router ID, state dir, secrets; step aside for a newer pod's agent;
//!              every peer's task built and spawned, waiting to be begun
//!   acquire    take over from the running agent (handoff), or wait for its lock
//!   open       the listeners (adopted or bound), control socket, handoff door, metrics
//!   start      each peer task begun, with its adopted session if any
//!   serve      accept, reload, heartbeats, secrets, until a stop or a handoff
//!   end        retired: wait out the successor; or restart / decommission the sessions
//! ```

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::admin::{self, StopMode, request};
use super::handoff::{self, Knock, Takeover as TakenOver};
use super::peer::{self, Local};
use super::status::{Metrics, PeerSeries};
use super::succession::{newer_active, orphan_bound, stopped_before_serving, write_order};
use super::{
    CONTROL_SOCKET, Exit, ListenerFd, PeerParts, PreparedPeer, RunError, RunOptions, Speaker,
    Standing, Takeover, adopt_listener, bind_tcp, blocking, descriptors, prepare_state_dir,
    read_passwords,
};
use crate::config::Config;
use crate::restart::{self, Ended};

/// The signals the agent answers, installed before anything else: a
/// SIGTERM that arrives while the agent is still starting (taking over,
/// binding) waits here and is answered by the stop its role calls for once
/// it runs, instead of killing it half way (or, as PID 1 of a container,
/// being ignored).
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> Signals {
        let on = |kind| signal(kind).expect("signal handler");
        Signals {
            hangup: on(SignalKind::hangup()),
            terminate: on(SignalKind::terminate()),
            interrupt: on(SignalKind::interrupt()),
        }
    }
}

/// What the running agent listens on and is told through.
struct Doors {
    /// Closed as soon as the agent stops serving (None from then on).
    listener: Option<TcpListener>,
    /// Taken by the admin task once the agent serves.
    admin: Option<TcpListener>,
    /// A duplicate of the admin listener, passed on in a handoff.
    admin_fd: Option<OwnedFd>,
    control: Option<UnixListener>,
    knocks: mpsc::Receiver<Knock>,
    stops: mpsc::Receiver<StopMode>,
    stop_tx: Option<mpsc::Sender<StopMode>>,
    render: Option<admin::Render>,
    /// `PUT /announcements`, from either door.
    publishes: mpsc::Receiver<admin::Publish>,
    publisher: Option<admin::Publisher>,
}

struct Opened {
    doors: Doors,
    views: watch::Sender<Vec<super::routes::PeerView>>,
    standing: Arc<std::sync::Mutex<Standing>>,
    board: super::monitor::Board,
    checks: super::status::CheckBoard,
}

/// Runs the agent until SIGTERM or SIGINT, or until it hands over to a
/// successor and is told to go.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    let mut signals = Signals::install();
    let super::Loaded { config, files: node_files, routes_needed, not_run } = options.load(None)?;
    let router_id = options.router_id.or(config.router_id).ok_or(RunError::NoRouterId)?;
    prepare_state_dir(&options.state_dir)?;
    match descriptors::raise_limit() {
        Ok(limit) => debug!(?limit, "open files limit"),
        Err(e) => warn!("cannot raise the open files limit: {e}"),
    }
    let passwords = read_passwords(&config, &options.secrets_dir).map_err(RunError::Secret)?;
    if let Some(newer) = newer_active(&options) {
        info!(
            active_pod_created_ms = newer,
            this_pod_created_ms = options.pod_created_ms,
            "the agent of a newer pod is active on this node: not taking over from it; exiting"
        );
        return Ok(());
    }
    if options.takeover == Takeover::Restart {
        let control = options.state_dir.join(CONTROL_SOCKET);
        if let Ok(answer) = request(&control, "POST", "/stop?mode=restart").await {
            info!(answer = answer.trim(), "asked the running agent to stop in restart mode");
        }
    }
    // Each peer's metric series, looked up before a handoff's pause rather
    // than a thousand at a time inside it.
    let metrics = Metrics::default();
    let series: HashMap<IpAddr, PeerSeries> =
        config.peers.iter().map(|p| (p.address, PeerSeries::new(&metrics, p.address))).collect();
    // Every peer's task, built and waiting before a handoff starts: its
    // pause then holds only each session's adoption.
    let local = Local { asn: config.asn, router_id };
    let tap = (!config.bmp.is_empty()).then(super::monitor::Tap::default);
    let parts =
        PeerParts { local: &local, metrics: &metrics, passwords: &passwords, tap: tap.as_ref() };
    let prepared: Vec<PreparedPeer> = config
        .peers
        .iter()
        .map(|p| parts.prepare(p.clone(), series.get(&p.address).cloned()))
        .collect();
    let (mut takeover, lock) = match acquire(&options, &mut signals).await? {
        Acquired::Node(takeover, lock) => (takeover.map(|t| *t), lock),
        Acquired::Stopped(signal) => return stopped_before_serving(signal),
    };
    let Opened { mut doors, views, standing, board, checks } =
        open(&options, &config, router_id, takeover.as_mut(), &metrics)?;
    // The collectors' tasks listen before any session runs: an adopted
    // session's first words are for the connection handed over with it.
    let handed = takeover.as_mut().map(|t| std::mem::take(&mut t.monitors)).unwrap_or_default();
    let exporter = match &tap {
        Some(tap) => super::monitor::Exporter::start(
            &config.bmp,
            tap,
            views.subscribe(),
            handed,
            &metrics,
            &board,
        ),
        None => super::monitor::Exporter::default(),
    };
    // Checked announcements start from the predecessor's verdicts: the
    // adopted sessions' routers are sent nothing that did not change.
    let carried = match takeover.as_mut() {
        Some(t) => {
            let verdicts = std::mem::take(&mut t.verdicts);
            let sessions = &t.sessions;
            crate::health::starting_verdicts(&config.announce, verdicts, |prefix| {
                sessions.iter().any(|s| s.sent.routes.contains_key(prefix))
            })
        }
        None => Vec::new(),
    };
    let health = super::checks::Health::start(&config.announce, &carried, checks, metrics.clone());
    // The published set in force: the predecessor's (it keeps the file in
    // the shared state dir up to date, and is frozen now), or the one of
    // the last run here that did not decommission.
    let published = Arc::new(super::publishing::load(&options.state_dir));
    standing.lock().expect("standing").published = published.clone();
    let mut speaker = Speaker {
        local,
        previous: restart::read(&options.state_dir),
        listener: doors.listener.as_ref().map(|l| ListenerFd {
            fd: std::os::fd::AsRawFd::as_raw_fd(l),
            v6: config.listen.is_some_and(|a| a.is_ipv6()),
        }),
        options,
        config,
        peers: HashMap::new(),
        metrics,
        series,
        views,
        passwords,
        standing,
        lock: Some(lock),
        deferred_passwords: Default::default(),
        failed_successors: handoff::Failed::default(),
        tap,
        exporter,
        health,
        published,
        node_files,
        routes_needed,
        route_hold: Default::default(),
        node_unreadable: false,
        leaving: Vec::new(),
    };
    speaker.standing.lock().expect("standing").not_run = not_run;
    let took_over = takeover.is_some();
    speaker.start_peers(takeover, prepared).await;
    // Status is served once it is whole: a successor's last_handoff, pause
    // included, is there from the first answer (the operator reads it once),
    // and so is every peer (a status with the handoff but no peers yet, for
    // the few ms of the heartbeat's fsync, told tests the sessions were gone).
    speaker.publish_views();
    let render = doors.render.take().expect("render");
    let admin_listener = doors.admin.take().expect("admin listener");
    let publisher = doors.publisher.take().expect("publisher");
    let admin_task =
        tokio::spawn(admin::serve_tcp(admin_listener, render.clone(), publisher.clone()));
    let (control, stop_tx) = (doors.control.take(), doors.stop_tx.take());
    let stop_tx = stop_tx.expect("stop");
    tokio::spawn(admin::serve_unix(control.expect("control"), render, stop_tx, publisher));
    // Later peers (added by a reload) are new to their routers: no R-bit.
    speaker.previous = None;
    write_order(&speaker.options);
    speaker.heartbeat(Ended::Running);
    let listen =
        speaker.config.listen.map_or_else(|| "none (every peer dialled)".into(), |a| a.to_string());
    info!(listen, peers = speaker.peers.len(), "nonstop-agent running");

    let exit = speaker.serve(&mut signals, &mut doors, took_over).await;
    speaker.end(exit, signals, admin_task, doors).await
}

enum Acquired {
    /// The node is this agent's: with what it took over, if anything.
    Node(Option<Box<TakenOver>>, handoff::ActiveLock),
    /// Told to stop while another agent still held the node.
    Stopped(&'static str),
}

/// A running agent in this state dir hands over; otherwise start cold
/// (after the one told to restart lets go of the state dir).
async fn acquire(options: &RunOptions, signals: &mut Signals) -> Result<Acquired, RunError> {
    let dir = options.state_dir.clone();
    let incarnation = options.incarnation();
    let found = if options.takeover == Takeover::Handoff {
        blocking(move || handoff::take_over(&dir, incarnation)).await
    } else {
        Ok(None)
    };
    match found {
        Ok(Some((t, lock))) => Ok(Acquired::Node(Some(Box::new(t)), lock)),
        Ok(None) => {
            let dir = options.state_dir.clone();
            // Told to stop while another agent still holds the node: this
            // one holds nothing, so it just goes.
            let lock = tokio::select! {
                lock = blocking(move || handoff::lock_waiting(&dir, None)) => lock,
                _ = signals.terminate.recv() => return Ok(Acquired::Stopped("SIGTERM")),
                _ = signals.interrupt.recv() => return Ok(Acquired::Stopped("SIGINT")),
            };
            Ok(Acquired::Node(None, lock.map_err(RunError::Handoff)?))
        }
        Err(e) => Err(RunError::Handoff(e)),
    }
}

/// The listeners (the predecessor's, or bound anew), the control socket,
/// the handoff door, and the status renderer over fresh metrics.
fn open(
    options: &RunOptions,
    config: &Config,
    router_id: Ipv4Addr,
    takeover: Option<&mut TakenOver>,
    metrics: &Metrics,
) -> Result<Opened, RunError> {
    let (listener, admin) = match takeover.and_then(|t| t.listeners.take()) {
        Some(handed) => {
            (bgp_listener(config.listen, handed.bgp)?, adopt_listener(handed.admin, "admin")?)
        }
        None => (
            config.listen.map(|a| bind_tcp(a, "BGP")).transpose()?,
            bind_tcp(config.admin, "the admin endpoint")?,
        ),
    };
    let state_err = |source| RunError::StateDir { path: options.state_dir.clone(), source };
    let control_path = options.state_dir.join(CONTROL_SOCKET);
    let _ = std::fs::remove_file(&control_path);
    let control = UnixListener::bind(&control_path).map_err(|source| RunError::Bind {
        what: "the control socket",
        addr: control_path.display().to_string(),
        source,
    })?;
    let _ = std::fs::set_permissions(&control_path, std::fs::Permissions::from_mode(0o600));
    handoff::ensure_token(&options.state_dir).map_err(state_err)?;
    let (knock_tx, knocks) = mpsc::channel(1);
    handoff::serve(&options.state_dir, knock_tx).map_err(state_err)?;

    let mut registry = Registry::default();
    metrics.register(&mut registry);
    super::status::register_build_info(&mut registry, "agent");
    super::status::register_agent_start(&mut registry, options.pod.as_deref());
    let standing = Arc::new(std::sync::Mutex::new(Standing {
        configured: config.announce.iter().map(|a| a.prefix).collect(),
        ..Standing::default()
    }));
    let (views, views_rx) = watch::channel(Vec::new());
    let board = super::monitor::Board::default();
    let checks = super::status::CheckBoard::default();
    let render = super::pages::renderer(
        config,
        router_id,
        options.pod.clone(),
        Arc::new(registry),
        views_rx,
        (standing.clone(), board.clone(), checks.clone()),
    );
    let (stop_tx, stops) = mpsc::channel(4);
    let (publish_tx, publishes) = mpsc::channel(4);
    let publisher = admin::Publisher { requests: publish_tx, token: options.api_token.clone() };
    let admin_fd =
        rustix::io::dup(std::os::fd::AsFd::as_fd(&admin)).map_err(|e| RunError::Bind {
            what: "the admin endpoint",
            addr: config.admin.to_string(),
            source: e.into(),
        })?;
    Ok(Opened {
        doors: Doors {
            listener,
            admin: Some(admin),
            admin_fd: Some(admin_fd),
            control: Some(control),
            knocks,
            stops,
            stop_tx: Some(stop_tx),
            render: Some(render),
            publishes,
            publisher: Some(publisher),
        },
        views,
        standing,
        board,
        checks,
    })
}

/// The BGP listener the config asks for: the predecessor's when it is the
/// same, none when the config turns it off, else bound anew (a changed
/// `listen`; the predecessor closes its own as it retires, so the port may
/// take a moment to come free).
fn bgp_listener(
    wanted: Option<SocketAddr>,
    handed: Option<OwnedFd>,
) -> Result<Option<TcpListener>, RunError> {
    let handed = handed.map(std::net::TcpListener::from);
    let handed_at = handed.as_ref().and_then(|l| l.local_addr().ok());
    let Some(addr) = wanted else {
        if let Some(at) = handed_at {
            info!(%at, "the config turns the BGP listener off: closing the one handed over");
        }
        return Ok(None);
    };
    if let Some(l) = handed.filter(|_| handed_at == Some(addr)) {
        return adopt_listener(l.into(), "BGP").map(Some);
    }
    info!(from = ?handed_at, to = %addr, "listen changed: binding the new address");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match bind_tcp(addr, "BGP") {
            Err(RunError::Bind { ref source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50))
            }
            bound => return bound.map(Some),
        }
    }
}

/// The next BGP connection; never, without a listener.
async fn accept(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

impl Speaker {
    /// Begins every prepared peer's task, each with the session adopted
    /// for it, if any; the tasks take their sessions up as they run.
    async fn start_peers(&mut self, mut takeover: Option<TakenOver>, prepared: Vec<PreparedPeer>) {
        let mut adopted: HashMap<IpAddr, peer::Adopted> = takeover
            .as_mut()
            .map(|t| t.sessions.drain(..).map(|a| (a.state.peer, a)).collect())
            .unwrap_or_default();
        let starting = std::time::Instant::now();
        let announce = self.announced();
        let mut resumed = Vec::new();
        for p in prepared {
            let a = adopted.remove(&p.config.address).map(|a| {
                let (tx, rx) = oneshot::channel();
                resumed.push(rx);
                (a, tx)
            });
            self.begin_peer(p, announce.clone(), a);
        }
        info!(elapsed = ?starting.elapsed(), "peer tasks begun");
        for (address, a) in adopted {
            handoff::let_go(a, "nonstop: peer removed");
            info!(peer = %address, "adopted a session with a peer no longer configured: closed");
        }
        if let Some(t) = takeover {
            self.took_over(t, resumed).await;
        }
    }

    /// Serves until told to stop or until a successor took everything.
    async fn serve(&mut self, signals: &mut Signals, doors: &mut Doors, took_over: bool) -> Exit {
        let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
        let mut secrets = tokio::time::interval(super::secrets::LOOK_EVERY);
        // A stop asked for while this agent was still starting: after a
        // handoff its pod is being deleted mid-upgrade (the operator rolling
        // it back as it took over), so it stops without a withdrawal — the
        // routers keep the routes and the retired agent takes the node back
        // (it watches for that). Started cold, it is a decommission like
        // any other.
        let early = tokio::select! {
            biased;
            _ = signals.terminate.recv() => true,
            _ = signals.interrupt.recv() => true,
            () = std::future::ready(()) => false,
        };
        if early {
            let mode = if took_over { StopMode::Restart } else { StopMode::Decommission };
            info!(?mode, "told to stop while starting");
            return Exit::Stop(mode);
        }
        let listener = doors.listener.as_ref();
        let admin_fd = doors.admin_fd.as_ref().expect("admin fd");
        loop {
            tokio::select! {
                accepted = accept(listener) => match accepted {
                    Ok((stream, remote)) => self.dispatch(stream, remote).await,
                    Err(e) => warn!("accept: {e}"),
                },
                _ = heartbeat.tick() => self.heartbeat(Ended::Running),
                change = self.health.changed() => self.verdict_changed(change).await,
                _ = secrets.tick() => {
                    self.follow_passwords().await;
                    self.follow_node().await;
                }
                _ = signals.hangup.recv() => self.reload().await,
                _ = signals.terminate.recv() => return Exit::Stop(StopMode::Decommission),
                _ = signals.interrupt.recv() => return Exit::Stop(StopMode::Decommission),
                Some(mode) = doors.stops.recv() => return Exit::Stop(mode),
                Some(publish) = doors.publishes.recv() => self.on_publish(publish).await,
                Some(knock) = doors.knocks.recv() => {
                    if self.hand_over(knock, listener, admin_fd).await {
                        return Exit::Retired;
                    }
                }
            }
        }
    }

    /// The way out that `exit` calls for.
    async fn end(
        mut self,
        exit: Exit,
        signals: Signals,
        mut admin_task: JoinHandle<()>,
        mut doors: Doors,
    ) -> Result<(), RunError> {
        drop(doors.listener.take());
        // A set published from now on, or waiting since the handoff began,
        // is answered 503: this agent stops.
        doors.publishes.close();
        while let Ok(waiting) = doors.publishes.try_recv() {
            let _ = waiting.reply.send(crate::http::Answer::text(
                hyper::StatusCode::SERVICE_UNAVAILABLE,
                "the agent is stopping\n",
            ));
        }
        match exit {
            Exit::Retired => {
                // Nothing left to serve but our own status on the moved
                // control socket; SIGTERM ends it at once.
                admin_task.abort();
                let _ = (&mut admin_task).await;
                drop(doors.admin_fd.take());
                return self.retired(signals, doors).await;
            }
            Exit::Stop(StopMode::Restart) => {
                drop(doors.knocks);
                info!("stopping for a restart: sessions close without a withdrawal");
                self.vanish_all().await;
                self.heartbeat(Ended::Restart);
            }
            Exit::Stop(StopMode::Decommission) => {
                drop(doors.knocks);
                let drain = self.config.shutdown.drain_seconds;
                info!(drain_seconds = drain, "decommissioning: draining, then withdrawing");
                self.decommission_all().await;
                self.heartbeat(Ended::Decommissioned);
                // Withdrawn on purpose: the next agent here starts without it.
                super::publishing::forget(&self.options.state_dir);
            }
        }
        self.let_leaving_finish().await;
        // The sessions' Peer Down, then Termination, to every collector.
        std::mem::take(&mut self.exporter).stop(Duration::from_secs(2)).await;
        let _ = std::fs::remove_file(self.options.state_dir.join(CONTROL_SOCKET));
        // The admin port closes before the state dir's lock goes: the next
        // agent binds the port the moment it holds the lock. (A dropped
        // JoinHandle would leave the listener open until the runtime ends.)
        admin_task.abort();
        let _ = admin_task.await;
        drop(self.lock.take());
        Ok(())
    }

    /// Retired: waits to be told to go, answering late knocks, and gives
    /// up when no agent has been active on the node for the orphan bound.
    async fn retired(mut self, mut signals: Signals, mut doors: Doors) -> Result<(), RunError> {
        let successor = self.standing.lock().expect("standing").successor.clone();
        let bound = orphan_bound(&self.config);
        let mut orphaned: Option<std::time::Instant> = None;
        let mut look = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = signals.terminate.recv() => break,
                _ = signals.interrupt.recv() => break,
                Some(_) = doors.stops.recv() => break,
                _ = look.tick() => {
                    if let Some(since) = self.orphaned_since(&mut orphaned, bound)
                        && since.elapsed() >= bound
                    {
                        let _ = std::fs::remove_file(self.retired_control());
                        return Err(RunError::Orphaned(since.elapsed()));
                    }
                }
                Some((channel, _)) = doors.knocks.recv() => {
                    let who = successor.as_ref().map_or(0, |s| s.pid);
                    let _ = channel.send(&crate::handoff::protocol::Message::Abort(
                        format!("this agent retired; agent {who} is active")), &[]);
                }
            }
        }
        let _ = std::fs::remove_file(self.retired_control());
        self.let_leaving_finish().await;
        info!("retired agent exiting");
        Ok(())
    }

    /// Since when no agent has been active on the node (None: one is).
    /// The successor holds the state dir's lock while it lives; free, it
    /// died before it could serve.
    fn orphaned_since(
        &self,
        orphaned: &mut Option<std::time::Instant>,
        bound: Duration,
    ) -> Option<std::time::Instant> {
        match handoff::try_lock(&self.options.state_dir) {
            Ok(Some(lock)) => {
                drop(lock);
                Some(*orphaned.get_or_insert_with(|| {
                    warn!(
                        bound_s = bound.as_secs(),
                        "retired, and no agent is active on this node: \
                         waiting that long for the successor to come back"
                    );
                    std::time::Instant::now()
                }))
            }
            Ok(None) => {
                if orphaned.take().is_some() {
                    info!("an agent is active on this node again");
                }
                None
            }
            Err(e) => {
                debug!("looking at the state dir's lock: {e}");
                None
            }
        }
    }
}
