//! The running agent: sockets, signals and tasks around the sans-IO core.
//!
//! ```text
//!   listener ──accept──▶ dispatch by peer address ──▶ PeerTask (one per peer)
//!   SIGHUP   ──reload──▶ diff config: start / stop / restart peers, new announce list
//!   SIGTERM / stop --mode decommission ─▶ GRACEFUL_SHUTDOWN, drain, Cease, exit 0
//!   stop --mode restart ─▶ close sessions without NOTIFICATION (routers keep
//!                          routes stale), exit 0; the next start sets the R-bit
//!   every second ───────▶ state-dir/last-run.json heartbeat (see `restart`)
//!   admin TCP + state-dir/control.sock ──▶ /status, /metrics (from watch snapshots)
//! ```
//!
//! The speaker task owns the set of peers; each peer task owns its own
//! sessions and RIBs. They talk over bounded channels only.

mod admin;
mod conn;
mod descriptors;
mod handoff;
pub mod peer;
mod secrets;
mod sockopt;
pub mod status;
mod succession;
pub use secrets::read_passwords;
pub use succession::ORDER_FILE;
use succession::{newer_active, orphan_bound, stopped_before_serving, write_order};

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

pub use admin::{StopMode, get, request};
use peer::{Local, PeerCommand, PeerOptions, PeerTask, canonical};
use status::{AgentStatus, Metrics, PeerStatus};

use crate::config::{Config, ConfigError, Peer};
use crate::restart::{self, Ended, Previous};
use crate::wire::{Notification, subcode};

/// Name of the control socket in the state dir.
pub const CONTROL_SOCKET: &str = "control.sock";

/// How the agent was started.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    /// Overrides `routerId` of the config (the operator passes the node's IP).
    pub router_id: Option<Ipv4Addr>,
    /// Where `passwordSecretRef {name, key}` is read: `<dir>/<name>/<key>`,
    /// the layout of a Kubernetes Secret mounted per name.
    pub secrets_dir: PathBuf,
    /// The pod this agent runs in, reported in status so the operator can
    /// tell which pod is the node's active speaker.
    pub pod: Option<String>,
    /// How to take over from an agent already running in the state dir.
    pub takeover: Takeover,
    /// Overrides the address of `admin` in the config (the operator passes
    /// the node's IP when the gateway keeps the admin port to the node).
    pub admin_ip: Option<IpAddr>,
    /// When the operator created this agent's pod (Unix ms): an agent never
    /// takes a node over from the agent of a newer pod (see [`ORDER_FILE`]).
    pub pod_created_ms: Option<u64>,
}

impl RunOptions {
    /// Which pod this is, as a successor names itself in HELLO
    /// (`name@created-ms`); none when not run by the operator.
    fn incarnation(&self) -> Option<String> {
        let pod = self.pod.as_ref()?;
        Some(format!("{pod}@{}", self.pod_created_ms.unwrap_or(0)))
    }

    /// The config file's settings with this run's overrides.
    fn effective(&self, mut config: Config) -> Config {
        if let Some(ip) = self.admin_ip {
            config.admin.set_ip(ip);
        }
        config
    }
}

/// How a starting agent takes over from one already running in its state dir.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Takeover {
    /// Take its listener and live sessions (the routers see nothing); start
    /// cold when there is none.
    #[default]
    Handoff,
    /// Ask it to stop in restart mode (sessions closed without a withdrawal,
    /// routers keep the routes stale), wait until it is gone, then start with
    /// the Graceful Restart R-bit.
    Restart,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("no router ID: set `routerId` in the config or pass --router-id")]
    NoRouterId,
    #[error("{0}")]
    Secret(String),
    #[error("state dir {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot listen for {what} on {addr}: {source}{}", bind_hint(source))]
    Bind { what: &'static str, addr: String, source: std::io::Error },
    #[error("handoff failed, the running agent keeps serving: {0}")]
    Handoff(String),
    #[error(
        "retired, and no agent has been active on this node for {0:?} (the successor died): \
         exiting so that this agent is restarted and takes the node back with Graceful Restart"
    )]
    Orphaned(Duration),
}

/// The one capability the agent needs, named where its absence shows.
fn bind_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (ports below 1024 need CAP_NET_BIND_SERVICE: run as root, or add that capability)"
    } else {
        ""
    }
}

/// What the agent is, as the status tells it.
#[derive(Debug, Default)]
struct Standing {
    role: status::Role,
    successor: Option<status::AgentRef>,
    last_handoff: Option<status::HandoffReport>,
}

/// How the main loop ended.
enum Exit {
    Stop(StopMode),
    Retired,
}

struct PeerHandle {
    config: Peer,
    commands: mpsc::Sender<PeerCommand>,
    status: watch::Receiver<PeerStatus>,
    task: JoinHandle<()>,
}

/// A peer task built and not yet spawned.
struct PreparedPeer {
    config: Peer,
    task: PeerTask,
    commands: mpsc::Sender<PeerCommand>,
    status: watch::Receiver<PeerStatus>,
}

struct Speaker {
    options: RunOptions,
    config: Config,
    local: Local,
    peers: HashMap<IpAddr, PeerHandle>,
    metrics: Metrics,
    /// The status receivers of the current peers, for the status endpoints.
    views: watch::Sender<Vec<watch::Receiver<PeerStatus>>>,
    /// How the previous run in this state dir ended (decides the R-bit).
    previous: Option<Previous>,
    /// TCP MD5 keys by peer address, read from the secrets dir.
    passwords: HashMap<IpAddr, Arc<[u8]>>,
    /// The BGP listener, where each peer's MD5 key is installed.
    listener: ListenerFd,
    standing: Arc<std::sync::Mutex<Standing>>,
    /// Held while this agent speaks for the node (see `handoff`).
    lock: Option<handoff::ActiveLock>,
    /// Peers whose Secret changed while their session was Established: told
    /// once, taken up when the session next goes down (see `secrets`).
    deferred_passwords: HashSet<IpAddr>,
    /// Successor incarnations whose handoff failed here (see `handoff`).
    failed_successors: handoff::Failed,
}

/// The listening socket's descriptor; the socket outlives the speaker.
#[derive(Debug, Clone, Copy)]
struct ListenerFd {
    fd: std::os::fd::RawFd,
    v6: bool,
}

impl std::os::fd::AsRawFd for ListenerFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd
    }
}

/// Runs the agent until SIGTERM or SIGINT, or until it hands over to a
/// successor and is told to go.
pub async fn run(options: RunOptions) -> Result<(), RunError> {
    // Signal handlers before anything else: a SIGTERM that arrives while
    // the agent is still starting (taking over, binding) waits here and is
    // answered by the stop its role calls for once it runs, instead of
    // killing it half way (or, as PID 1 of a container, being ignored).
    let mut hangup = signal(SignalKind::hangup()).expect("signal handler");
    let mut terminate = signal(SignalKind::terminate()).expect("signal handler");
    let mut interrupt = signal(SignalKind::interrupt()).expect("signal handler");
    let config = options.effective(Config::load(&options.config)?);
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
    // A running agent in this state dir hands over; otherwise start cold
    // (after the one told to restart lets go of the state dir).
    let dir = options.state_dir.clone();
    let handoff = options.takeover == Takeover::Handoff;
    let incarnation = options.incarnation();
    let found = if handoff {
        blocking(move || handoff::take_over(&dir, incarnation)).await
    } else {
        Ok(None)
    };
    let (mut takeover, lock) = match found {
        Ok(Some((t, lock))) => (Some(t), lock),
        Ok(None) => {
            let dir = options.state_dir.clone();
            // Told to stop while another agent still holds the node: this
            // one holds nothing, so it just goes.
            let lock = tokio::select! {
                lock = blocking(move || handoff::lock_waiting(&dir, None)) => lock,
                _ = terminate.recv() => return stopped_before_serving("SIGTERM"),
                _ = interrupt.recv() => return stopped_before_serving("SIGINT"),
            };
            (None, lock.map_err(RunError::Handoff)?)
        }
        Err(e) => return Err(RunError::Handoff(e)),
    };
    let (listener, admin) = match takeover.as_mut().and_then(|t| t.listeners.take()) {
        Some((bgp, admin)) => (adopt_listener(bgp, "BGP")?, adopt_listener(admin, "admin")?),
        None => (bind_tcp(config.listen, "BGP")?, bind_tcp(config.admin, "the admin endpoint")?),
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
    let (knock_tx, mut knocks) = mpsc::channel(1);
    handoff::serve(&options.state_dir, knock_tx).map_err(state_err)?;

    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    let standing = Arc::new(std::sync::Mutex::new(Standing::default()));
    let (views, views_rx) = watch::channel(Vec::new());
    let render = renderer(
        &config,
        router_id,
        options.pod.clone(),
        Arc::new(registry),
        views_rx,
        standing.clone(),
    );
    let (stop_tx, mut stop_rx) = mpsc::channel(4);
    let admin_fd =
        rustix::io::dup(std::os::fd::AsFd::as_fd(&admin)).map_err(|e| RunError::Bind {
            what: "the admin endpoint",
            addr: config.admin.to_string(),
            source: e.into(),
        })?;
    let previous = restart::read(&options.state_dir);

    let local = Local { asn: config.asn, router_id };
    let listener_fd =
        ListenerFd { fd: std::os::fd::AsRawFd::as_raw_fd(&listener), v6: config.listen.is_ipv6() };
    let mut speaker = Speaker {
        options,
        config,
        local,
        peers: HashMap::new(),
        metrics,
        views,
        previous,
        passwords,
        listener: listener_fd,
        standing,
        lock: Some(lock),
        deferred_passwords: HashSet::new(),
        failed_successors: handoff::Failed::default(),
    };
    let mut adopted: HashMap<IpAddr, peer::Adopted> = takeover
        .as_mut()
        .map(|t| t.sessions.drain(..).map(|a| (a.state.peer, a)).collect())
        .unwrap_or_default();
    // Every task is built, its adopted socket registered, before any runs:
    // the last adopted session waits for no other session's first moves.
    let starting = std::time::Instant::now();
    let mut resumed = Vec::new();
    let mut prepared = Vec::new();
    for p in speaker.config.peers.clone() {
        let a = adopted.remove(&p.address).map(|a| {
            let (tx, rx) = oneshot::channel();
            resumed.push(rx);
            (a, tx)
        });
        prepared.push(speaker.prepare_peer(p, a));
    }
    let built = starting.elapsed();
    for p in prepared {
        speaker.spawn_peer(p);
    }
    info!(?built, elapsed = ?starting.elapsed(), "peer tasks started");
    for (address, a) in adopted {
        handoff::let_go(a, "nonstop: peer removed");
        info!(peer = %address, "adopted a session with a peer no longer configured: closed");
    }
    let took_over = takeover.is_some();
    if let Some(t) = takeover {
        speaker.took_over(t, resumed).await;
    }
    // Status is served once it is whole: a successor's last_handoff, pause
    // included, is there from the first answer (the operator reads it once).
    let mut admin_task = tokio::spawn(admin::serve_tcp(admin, render.clone()));
    tokio::spawn(admin::serve_unix(control, render, stop_tx));
    // Later peers (added by a reload) are new to their routers: no R-bit.
    speaker.previous = None;
    write_order(&speaker.options);
    speaker.heartbeat(Ended::Running);
    speaker.publish_views();
    info!(listen = %speaker.config.listen, peers = speaker.peers.len(), "nonstop-agent running");

    let mut heartbeat = tokio::time::interval(Duration::from_secs(1));
    let mut secrets = tokio::time::interval(secrets::LOOK_EVERY);
    // A stop asked for while this agent was still starting: after a
    // handoff its pod is being deleted mid-upgrade (the operator rolling it
    // back as it took over), so it stops without a withdrawal — the routers
    // keep the routes and the retired agent takes the node back (it watches
    // for that). Started cold, it is a decommission like any other.
    let early = tokio::select! {
        biased;
        _ = terminate.recv() => true,
        _ = interrupt.recv() => true,
        () = std::future::ready(()) => false,
    };
    let exit = if early {
        let mode = if took_over { StopMode::Restart } else { StopMode::Decommission };
        info!(?mode, "told to stop while starting");
        Exit::Stop(mode)
    } else {
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, remote)) => speaker.dispatch(stream, remote).await,
                    Err(e) => warn!("accept: {e}"),
                },
                _ = heartbeat.tick() => speaker.heartbeat(Ended::Running),
                _ = secrets.tick() => speaker.follow_passwords().await,
                _ = hangup.recv() => speaker.reload().await,
                _ = terminate.recv() => break Exit::Stop(StopMode::Decommission),
                _ = interrupt.recv() => break Exit::Stop(StopMode::Decommission),
                Some(mode) = stop_rx.recv() => break Exit::Stop(mode),
                Some(knock) = knocks.recv() => {
                    if speaker.hand_over(knock, &listener, &admin_fd).await {
                        break Exit::Retired;
                    }
                }
            }
        }
    };
    drop(listener);
    match exit {
        Exit::Retired => {
            // Nothing left to serve but our own status on the moved control
            // socket; SIGTERM ends it at once.
            admin_task.abort();
            let _ = (&mut admin_task).await;
            drop(admin_fd);
            let successor = speaker.standing.lock().expect("standing").successor.clone();
            let bound = orphan_bound(&speaker.config);
            let mut orphaned: Option<std::time::Instant> = None;
            let mut look = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = terminate.recv() => break,
                    _ = interrupt.recv() => break,
                    Some(_) = stop_rx.recv() => break,
                    _ = look.tick() => {
                        // The successor holds the state dir's lock while it
                        // lives. Free for `bound`: it died before it could
                        // serve (and is not coming back in time).
                        match handoff::try_lock(&speaker.options.state_dir) {
                            Ok(Some(lock)) => {
                                drop(lock);
                                let since = *orphaned.get_or_insert_with(|| {
                                    warn!(
                                        bound_s = bound.as_secs(),
                                        "retired, and no agent is active on this node: \
                                         waiting that long for the successor to come back"
                                    );
                                    std::time::Instant::now()
                                });
                                if since.elapsed() >= bound {
                                    let _ = std::fs::remove_file(speaker.retired_control());
                                    return Err(RunError::Orphaned(since.elapsed()));
                                }
                            }
                            Ok(None) => {
                                if orphaned.take().is_some() {
                                    info!("an agent is active on this node again");
                                }
                            }
                            Err(e) => debug!("looking at the state dir's lock: {e}"),
                        }
                    }
                    Some((channel, _)) = knocks.recv() => {
                        let who = successor.as_ref().map_or(0, |s| s.pid);
                        let _ = channel.send(&crate::handoff::protocol::Message::Abort(
                            format!("this agent retired; agent {who} is active")), &[]);
                    }
                }
            }
            let _ = std::fs::remove_file(speaker.retired_control());
            info!("retired agent exiting");
            return Ok(());
        }
        Exit::Stop(StopMode::Restart) => {
            drop(knocks);
            info!("stopping for a restart: sessions close without a withdrawal");
            speaker.vanish_all().await;
            speaker.heartbeat(Ended::Restart);
        }
        Exit::Stop(StopMode::Decommission) => {
            drop(knocks);
            let drain = speaker.config.shutdown.drain_seconds;
            info!(drain_seconds = drain, "decommissioning: draining, then withdrawing");
            speaker.decommission_all().await;
            speaker.heartbeat(Ended::Decommissioned);
        }
    }
    let _ = std::fs::remove_file(speaker.options.state_dir.join(CONTROL_SOCKET));
    // The admin port closes before the state dir's lock goes: the next
    // agent binds the port the moment it holds the lock. (A dropped
    // JoinHandle would leave the listener open until the runtime ends.)
    admin_task.abort();
    let _ = admin_task.await;
    drop(speaker.lock.take());
    Ok(())
}

/// Runs blocking work (the handoff channel, the lock) off the async threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking task")
}

fn adopt_listener(fd: std::os::fd::OwnedFd, what: &'static str) -> Result<TcpListener, RunError> {
    let std = std::net::TcpListener::from(fd);
    let addr = std.local_addr().map_or_else(|_| "?".into(), |a| a.to_string());
    let fail = |source| RunError::Bind { what, addr: addr.clone(), source };
    std.set_nonblocking(true).map_err(fail)?;
    TcpListener::from_std(std).map_err(fail)
}

fn prepare_state_dir(dir: &Path) -> Result<(), RunError> {
    let err = |source| RunError::StateDir { path: dir.to_owned(), source };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

fn bind_tcp(addr: SocketAddr, what: &'static str) -> Result<TcpListener, RunError> {
    let fail = |source| RunError::Bind { what, addr: addr.to_string(), source };
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .map_err(fail)?;
    socket.set_reuse_address(true).map_err(fail)?;
    if addr.is_ipv6() {
        // `[::]` serves IPv4 peers too.
        socket.set_only_v6(false).map_err(fail)?;
    }
    socket.set_nonblocking(true).map_err(fail)?;
    socket.bind(&addr.into()).map_err(fail)?;
    socket.listen(1024).map_err(fail)?;
    TcpListener::from_std(socket.into()).map_err(fail)
}

fn renderer(
    config: &Config,
    router_id: Ipv4Addr,
    pod: Option<String>,
    registry: Arc<Registry>,
    views: watch::Receiver<Vec<watch::Receiver<PeerStatus>>>,
    standing: Arc<std::sync::Mutex<Standing>>,
) -> admin::Render {
    let started = Instant::now();
    let (asn, listen, announced) = (config.asn, config.listen, config.announce.len());
    Arc::new(move |path: &str| match path {
        "/status" => {
            let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let mut peers: Vec<PeerStatus> = views
                .borrow()
                .iter()
                .map(|rx| {
                    let mut p = rx.borrow().clone();
                    p.uptime_seconds = p.established_since_ms.map_or(0, |since| {
                        (now_ms.saturating_sub(u128::from(since)) / 1000) as u64
                    });
                    p
                })
                .collect();
            peers.sort_by(|a, b| a.address.cmp(&b.address));
            let standing = standing.lock().expect("standing");
            let status = AgentStatus {
                version: env!("CARGO_PKG_VERSION").to_string(),
                pid: std::process::id(),
                pod: pod.clone(),
                asn,
                router_id: router_id.to_string(),
                listen: listen.to_string(),
                uptime_seconds: started.elapsed().as_secs(),
                routes_announced: announced,
                role: standing.role,
                successor: standing.successor.clone(),
                last_handoff: standing.last_handoff.clone(),
                peers,
            };
            Some(("application/json", serde_json::to_string_pretty(&status).expect("JSON") + "\n"))
        }
        "/metrics" => Some((
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            status::render_metrics(&registry),
        )),
        _ => None,
    })
}

impl Speaker {
    fn start_peer(&mut self, config: Peer) {
        let prepared = self.prepare_peer(config, None);
        self.spawn_peer(prepared);
    }

    /// A peer's task, built but not yet running; an adopted session comes
    /// with where to report the moment the task takes it up.
    fn prepare_peer(
        &self,
        config: Peer,
        adopted: Option<(peer::Adopted, oneshot::Sender<Duration>)>,
    ) -> PreparedPeer {
        let restart_time = Duration::from_secs(u64::from(config.graceful_restart.restart_time));
        let restarting = adopted.is_none()
            && config.graceful_restart.enabled
            && restart::restarting(self.previous, restart::now_ms(), restart_time);
        if restarting {
            info!(peer = %config.address, "restarting within the restart time: R-bit set");
        }
        let password = self.passwords.get(&config.address).cloned();
        if let Some(key) = &password
            && let Err(e) = sockopt::md5(&self.listener, self.listener.v6, config.address, key)
        {
            warn!(peer = %config.address, "cannot install the TCP MD5 key on the listener: {e}");
        }
        let (tx, rx) = mpsc::channel(64);
        let (status_tx, status_rx) = watch::channel(PeerStatus {
            address: config.address.to_string(),
            asn: config.asn,
            ..Default::default()
        });
        let mut task = PeerTask::new(
            config.clone(),
            self.local.clone(),
            Arc::new(self.config.announce.clone()),
            rx,
            status_tx,
            self.metrics.clone(),
            PeerOptions { restarting, password },
        );
        if let Some((a, resumed)) = adopted
            && let Err(e) = task.adopt(a, resumed)
        {
            warn!(peer = %config.address, "cannot resume the adopted session, starting anew: {e}");
        }
        PreparedPeer { config, task, commands: tx, status: status_rx }
    }

    fn spawn_peer(&mut self, p: PreparedPeer) {
        let task = tokio::spawn(p.task.run());
        let handle = PeerHandle { config: p.config, commands: p.commands, status: p.status, task };
        self.peers.insert(handle.config.address, handle);
    }

    fn publish_views(&self) {
        self.views.send_replace(self.peers.values().map(|p| p.status.clone()).collect());
    }

    async fn dispatch(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let ip = canonical(remote.ip());
        match self.peers.get(&ip) {
            Some(p) => {
                let _ = p.commands.send(PeerCommand::Inbound(stream)).await;
            }
            None => {
                warn!(%remote, "connection from an address that is not a configured peer; closed")
            }
        }
    }

    async fn stop_peer(&mut self, address: IpAddr, notification: Notification) {
        if let Some(p) = self.peers.remove(&address) {
            let _ = p.commands.send(PeerCommand::Stop(notification)).await;
            let _ = tokio::time::timeout(Duration::from_secs(5), p.task).await;
            if p.config.password_secret_ref.is_some() {
                let _ = sockopt::md5(&self.listener, self.listener.v6, address, &[]);
            }
        }
    }

    /// Closes a peer's session (Cease, Other Configuration Change, saying
    /// `why`) and starts it anew with `config` and the current password.
    async fn restart_peer(&mut self, config: Peer, why: &str) {
        let n = Notification::cease_with_message(subcode::OTHER_CONFIGURATION_CHANGE, why);
        self.stop_peer(config.address, n).await;
        self.start_peer(config);
    }

    /// SIGHUP: apply a new config without touching unchanged sessions.
    async fn reload(&mut self) {
        let new = match Config::load(&self.options.config) {
            Ok(c) => self.options.effective(c),
            Err(e) => {
                error!("reload refused, keeping the running config: {e}");
                return;
            }
        };
        if new.asn != self.config.asn
            || new.listen != self.config.listen
            || new.admin != self.config.admin
        {
            warn!("asn, listen and admin changes take effect on restart; the rest is applied");
        }
        let wanted: HashMap<IpAddr, Peer> =
            new.peers.iter().map(|p| (p.address, p.clone())).collect();
        let gone: Vec<IpAddr> =
            self.peers.keys().filter(|a| !wanted.contains_key(a)).copied().collect();
        for address in gone {
            info!(peer = %address, "peer removed from the config");
            let n = Notification::cease_with_message(
                subcode::PEER_DECONFIGURED,
                "nonstop: peer removed",
            );
            self.stop_peer(address, n).await;
        }
        let passwords = match read_passwords(&new, &self.options.secrets_dir) {
            Ok(p) => p,
            Err(e) => {
                error!("reload refused, keeping the running config: {e}");
                return;
            }
        };
        let old_passwords = std::mem::replace(&mut self.passwords, passwords);
        self.deferred_passwords.clear();
        let announce_changed = new.announce != self.config.announce;
        self.config.announce = new.announce.clone();
        self.config.peers = new.peers.clone();
        for (address, p) in wanted {
            match self.peers.get(&address) {
                Some(running)
                    if running.config == p
                        && old_passwords.get(&address) == self.passwords.get(&address) =>
                {
                    if announce_changed {
                        let list = Arc::new(self.config.announce.clone());
                        let _ = running.commands.send(PeerCommand::Announce(list)).await;
                    }
                }
                Some(_) => {
                    info!(peer = %address, "peer settings changed: restarting its session");
                    self.restart_peer(p, "nonstop: peer settings changed").await;
                }
                None => {
                    info!(peer = %address, "peer added");
                    self.start_peer(p);
                }
            }
        }
        self.publish_views();
        info!(peers = self.peers.len(), announced = self.config.announce.len(), "config reloaded");
    }

    fn heartbeat(&self, ended: Ended) {
        let record = Previous { alive_ms: restart::now_ms(), ended };
        if let Err(e) = restart::write(&self.options.state_dir, record) {
            warn!("cannot record liveness in the state dir: {e}");
        }
    }

    /// Every peer closes at once, without a NOTIFICATION.
    async fn vanish_all(&mut self) {
        for p in self.peers.values() {
            let _ = p.commands.send(PeerCommand::Vanish).await;
        }
        self.join_all(Duration::from_secs(5)).await;
    }

    /// Every peer drains in parallel, then says goodbye.
    async fn decommission_all(&mut self) {
        let drain = Duration::from_secs(u64::from(self.config.shutdown.drain_seconds));
        for p in self.peers.values() {
            let message = "nonstop: gateway decommissioned".to_string();
            let _ = p.commands.send(PeerCommand::Decommission { drain, message }).await;
        }
        self.join_all(drain + Duration::from_secs(5)).await;
    }

    /// Waits for every peer task to finish. Their command channels stay open
    /// meanwhile: a task whose channel closes stops at once, which would cut
    /// a drain short.
    async fn join_all(&mut self, limit: Duration) {
        let peers: Vec<PeerHandle> = self.peers.drain().map(|(_, p)| p).collect();
        let all = async {
            for p in &peers {
                while !p.task.is_finished() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        let _ = tokio::time::timeout(limit, all).await;
    }
}
