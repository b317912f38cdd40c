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
pub mod checks;
mod conn;
mod default_routes;
mod descriptors;
mod handoff;
pub mod monitor;
mod pages;
pub mod peer;
mod publishing;
pub mod routes;
mod run;
pub use run::run;
mod secrets;
mod sockopt;
pub mod status;
mod succession;
pub use secrets::read_passwords;
pub use succession::ORDER_FILE;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use admin::{StopMode, get, request};
use default_routes::Look;
use peer::{Local, PeerCommand, PeerOptions, PeerTask};
use routes::PeerView;
use status::{Metrics, PeerStatus};

use crate::config::{Announcement, Config, ConfigError, DefaultRoute, NodeFacts, Peer};
use crate::published::Published;
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
    /// What `PUT /announcements` on the admin port must carry as its bearer
    /// token; None: the admin port takes no published set.
    pub api_token: Option<Arc<str>>,
    /// Where the node's labels are (JSON), for the peers' `nodeSelector`;
    /// re-read while the agent runs. None: no peer may have a selector.
    pub node_labels_file: Option<PathBuf>,
    /// Where the node's annotations are (JSON), for the peers'
    /// `addressFrom`; re-read while the agent runs. None: no peer may take
    /// its address from its node.
    pub node_annotations_file: Option<PathBuf>,
    /// Source addresses (one per family at most) for peers whose config
    /// sets no `localAddress`: the node's own, from the operator.
    pub local_addresses: Vec<IpAddr>,
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
        for peer in config.peers.iter_mut().filter(|p| p.local_address.is_none()) {
            peer.local_address = self
                .local_addresses
                .iter()
                .find(|a| a.is_ipv4() == peer.address.is_ipv4())
                .copied();
        }
        config
    }

    /// The node's files as they are now; None for a file not passed. With
    /// `routes` (why they are needed), its default routes too.
    fn node_files(&self, routes: Option<&str>) -> Result<NodeFiles, ConfigError> {
        let read = |file: &Option<PathBuf>| -> Result<Option<String>, ConfigError> {
            let Some(path) = file else { return Ok(None) };
            std::fs::read_to_string(path)
                .map(Some)
                .map_err(|e| ConfigError::NodeFile { path: path.clone(), message: e.to_string() })
        };
        Ok(NodeFiles {
            labels: read(&self.node_labels_file)?,
            annotations: read(&self.node_annotations_file)?,
            routes: routes.map(read_routes).transpose()?,
        })
    }

    /// The config this agent runs: the file, its node's peers at its
    /// node's addresses, and this run's overrides; with the node's files'
    /// text it was made from, and why its routes are read if they are.
    /// Peers the node does not run are logged, and said in `/status`.
    /// With `routes`, the node's default routes are those (the ones the
    /// running peers were chosen by) rather than read anew.
    fn load(&self, routes: Option<&[DefaultRoute]>) -> Result<Loaded, ConfigError> {
        let config = Config::load(&self.config)?;
        let needed = routes_needed(&config);
        let mut files = self.node_files(None)?;
        files.routes = match (&needed, routes) {
            (None, _) => None,
            (Some(_), Some(routes)) => Some(routes.to_vec()),
            (Some(needs), None) => Some(read_routes(needs)?),
        };
        let parse = |text: &Option<String>, file: &Option<PathBuf>| match (text, file) {
            (Some(text), Some(path)) => crate::config::parse_node_map(text, path).map(Some),
            _ => Ok(None),
        };
        let node = NodeFacts {
            labels: parse(&files.labels, &self.node_labels_file)?,
            annotations: parse(&files.annotations, &self.node_annotations_file)?,
            default_routes: files.routes.clone(),
        };
        let (config, not_run) = config.on_node(&node)?;
        for note in &not_run {
            warn!("{note}");
        }
        Ok(Loaded { config: self.effective(config), files, routes_needed: needed, not_run })
    }
}

/// The node's default routes, read now; `needs` says which peer needs them.
fn read_routes(needs: &str) -> Result<Vec<DefaultRoute>, ConfigError> {
    default_routes::read()
        .map_err(|e| ConfigError::NodeRoutes { needs: needs.to_string(), message: e.to_string() })
}

/// The config an agent runs, and what it was made from.
struct Loaded {
    config: Config,
    files: NodeFiles,
    /// Why the node's routes are read, if they are.
    routes_needed: Option<String>,
    /// The config's peers this node does not run, each with why.
    not_run: Vec<String>,
}

/// The text of the files the operator keeps of the agent's node (see
/// [`RunOptions::node_labels_file`]), and its default routes when a peer
/// follows them, as last read.
#[derive(Debug, Clone, Default, PartialEq)]
struct NodeFiles {
    labels: Option<String>,
    annotations: Option<String>,
    routes: Option<Vec<DefaultRoute>>,
}

/// Why the node's routes are read, if they are: the first peer whose
/// address is its node's default gateway.
fn routes_needed(config: &Config) -> Option<String> {
    let (i, peer) = config.peers.iter().enumerate().find(|(_, p)| p.follows_default_route())?;
    Some(format!("peers[{i}] ({}) takes its address from", peer.named()))
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
    #[error("cannot listen for {what} on {addr}: {source}{}", bind_hint(what, source))]
    Bind { what: &'static str, addr: String, source: std::io::Error },
    #[error("handoff failed, the running agent keeps serving: {0}")]
    Handoff(#[from] handoff::HandoffError),
    #[error(
        "retired, and no agent has been active on this node for {0:?} (the successor died): \
         exiting so that this agent is restarted and takes the node back with Graceful Restart"
    )]
    Orphaned(Duration),
}

/// What to do about a port that cannot be bound: the one capability the
/// agent needs, or the setting that moves it out of another speaker's way.
fn bind_hint(what: &str, e: &std::io::Error) -> &'static str {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need CAP_NET_BIND_SERVICE: run as root, or add that capability)"
        }
        std::io::ErrorKind::AddrInUse if what == "BGP" => {
            " (another process, perhaps another BGP speaker, holds it: give `listen` another \
             address or port, or `listen: null` when every peer is dialled; in a BgpGateway, \
             spec.listen)"
        }
        _ => "",
    }
}

/// What the agent is, as the status tells it.
#[derive(Debug, Default)]
struct Standing {
    role: status::Role,
    successor: Option<status::AgentRef>,
    last_handoff: Option<status::HandoffReport>,
    /// The published set in force (`GET /announcements`, and its summary in
    /// `/status`).
    published: Arc<Published>,
    /// The config's `announce[]` prefixes, as of the last reload.
    configured: std::collections::HashSet<crate::route::Prefix>,
    /// The config's peers this node does not run, and why, as of the last
    /// reload.
    not_run: Vec<String>,
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

/// A peer's task, spawned and waiting for its [`peer::Begin`]. A
/// successor prepares every peer before its handoff starts, so that the
/// pause holds only the adoption of each session: building a thousand
/// tasks there (2 KiB each, plus channels, all fresh memory) cost a page
/// fault every few hundred bytes.
struct PreparedPeer {
    config: Peer,
    begin: oneshot::Sender<peer::Begin>,
    task: JoinHandle<()>,
    commands: mpsc::Sender<PeerCommand>,
    status: watch::Receiver<PeerStatus>,
}

/// What every peer task is built from besides its own config.
struct PeerParts<'a> {
    local: &'a Local,
    metrics: &'a Metrics,
    passwords: &'a HashMap<IpAddr, Arc<[u8]>>,
    tap: Option<&'a monitor::Tap>,
}

impl PeerParts<'_> {
    /// Spawns the peer's task; it does nothing until it is begun.
    fn prepare(&self, config: Peer, series: Option<status::PeerSeries>) -> PreparedPeer {
        let (tx, rx) = mpsc::channel(64);
        let (status_tx, status_rx) = watch::channel(PeerStatus {
            address: config.address.to_string(),
            asn: config.asn,
            ..Default::default()
        });
        let options = PeerOptions {
            password: self.passwords.get(&config.address).cloned(),
            series,
            tap: self.tap.cloned(),
        };
        let task = PeerTask::new(
            config.clone(),
            self.local.clone(),
            Arc::default(),
            rx,
            status_tx,
            self.metrics.clone(),
            options,
        );
        let (begin, begun) = oneshot::channel();
        let task = tokio::spawn(task.run(begun));
        PreparedPeer { config, begin, task, commands: tx, status: status_rx }
    }
}

struct Speaker {
    options: RunOptions,
    config: Config,
    local: Local,
    peers: HashMap<IpAddr, PeerHandle>,
    metrics: Metrics,
    /// The configured peers' metric series, looked up at start (taken as
    /// their tasks are built).
    series: HashMap<IpAddr, status::PeerSeries>,
    /// The current peers' status and tasks, for the admin door's pages.
    views: watch::Sender<Vec<PeerView>>,
    /// How the previous run in this state dir ended (decides the R-bit).
    previous: Option<Previous>,
    /// TCP MD5 keys by peer address, read from the secrets dir.
    passwords: HashMap<IpAddr, Arc<[u8]>>,
    /// The BGP listener, where each peer's MD5 key is installed (None: the
    /// gateway only dials).
    listener: Option<ListenerFd>,
    standing: Arc<std::sync::Mutex<Standing>>,
    /// Held while this agent speaks for the node (see `handoff`).
    lock: Option<handoff::ActiveLock>,
    /// Peers whose Secret changed while their session was Established: told
    /// once, taken up when the session next goes down (see `secrets`).
    deferred_passwords: HashSet<IpAddr>,
    /// Successor incarnations whose handoff failed here (see `handoff`).
    failed_successors: handoff::Failed,
    /// Where peer tasks publish for BMP collectors (None: no collector).
    tap: Option<monitor::Tap>,
    /// The BMP collector connections.
    exporter: monitor::Exporter,
    /// The checked announcements' verdicts and probes.
    health: checks::Health,
    /// The set last published (`PUT /announcements`), announced beside
    /// `config.announce`.
    published: Arc<Published>,
    /// The node's files the running peers were chosen and addressed by.
    node_files: NodeFiles,
    /// Why the node's routes are read (a peer is at its default gateway),
    /// as of the config last loaded.
    routes_needed: Option<String>,
    /// A change of the node's default routes waiting for the next look.
    route_hold: default_routes::Hold,
    /// The node's files or routes could not be read at the last look.
    node_unreadable: bool,
    /// The tasks of peers no longer configured, draining (see `let_go`).
    leaving: Vec<JoinHandle<()>>,
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

impl Speaker {
    /// What the peers are sent: the configured announcements as their
    /// checks allow.
    fn announced(&self) -> Arc<Vec<Announcement>> {
        let mut list = crate::health::effective(&self.config.announce, &self.health.verdicts());
        // A prefix the config took up since it was published stays the config's.
        let configured: HashSet<_> = self.config.announce.iter().map(|a| a.prefix).collect();
        list.extend(
            self.published.announce.iter().filter(|a| !configured.contains(&a.prefix)).cloned(),
        );
        Arc::new(list)
    }

    /// A check's verdict changed: every session is told what that changes.
    async fn verdict_changed(&mut self, change: checks::Change) {
        let checks::Change { prefix, verdict, detail } = change;
        match verdict {
            crate::health::Verdict::Up => info!(%prefix, detail, "check passes: announcing"),
            crate::health::Verdict::Draining { .. } => {
                warn!(%prefix, detail, "check fails: draining with GRACEFUL_SHUTDOWN, then withdrawing")
            }
            _ => warn!(%prefix, detail, "check fails: withdrawn"),
        }
        let list = self.announced();
        for p in self.peers.values() {
            let _ = p.commands.send(PeerCommand::Announce(list.clone())).await;
        }
        self.publish_views();
    }

    fn start_peer(&mut self, config: Peer) {
        let series = self.series.get(&config.address).cloned();
        let prepared = self.parts().prepare(config, series);
        self.begin_peer(prepared, self.announced(), None);
    }

    fn parts(&self) -> PeerParts<'_> {
        PeerParts {
            local: &self.local,
            metrics: &self.metrics,
            passwords: &self.passwords,
            tap: self.tap.as_ref(),
        }
    }

    /// Tells a prepared peer's task to run, with the session adopted for
    /// it, if any, and where to report the moment it takes that up.
    fn begin_peer(
        &mut self,
        p: PreparedPeer,
        announce: Arc<Vec<Announcement>>,
        adopted: Option<(peer::Adopted, oneshot::Sender<Duration>)>,
    ) {
        let config = &p.config;
        if let Some(key) = self.passwords.get(&config.address)
            && let Some(l) = &self.listener
            && let Err(e) = sockopt::md5(l, l.v6, config.address, key)
        {
            warn!(peer = %config.address, "cannot install the TCP MD5 key on the listener: {e}");
        }
        let restart_time = Duration::from_secs(u64::from(config.graceful_restart.restart_time));
        let restarting = adopted.is_none()
            && config.graceful_restart.enabled
            && restart::restarting(self.previous, restart::now_ms(), restart_time);
        if restarting {
            info!(peer = %config.address, "restarting within the restart time: R-bit set");
        }
        if p.begin.send(peer::Begin { announce, restarting, adopted }).is_err() {
            error!(peer = %config.address, "the peer's task ended before it began");
        }
        let handle =
            PeerHandle { config: p.config, commands: p.commands, status: p.status, task: p.task };
        self.peers.insert(handle.config.address, handle);
    }

    fn publish_views(&self) {
        let views = self
            .peers
            .values()
            .map(|p| PeerView { status: p.status.clone(), commands: p.commands.clone() });
        self.views.send_replace(views.collect());
    }

    async fn dispatch(&mut self, stream: tokio::net::TcpStream, remote: SocketAddr) {
        let ip = remote.ip().to_canonical();
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
            if p.config.password_secret_ref.is_some()
                && let Some(l) = &self.listener
            {
                let _ = sockopt::md5(l, l.v6, address, &[]);
            }
        }
    }

    /// Ends the session of a peer no longer configured (a reload, or its
    /// node's labels no longer select it) as a decommission does: our
    /// routes re-announced with GRACEFUL_SHUTDOWN, `drainSeconds` later a
    /// Cease (a Hard Reset under the N-bit, so the router does not keep
    /// them stale). The drain runs in the peer's task; nothing waits for it.
    async fn let_go(&mut self, address: IpAddr, new: &Config) {
        if let Some(p) = self.peers.remove(&address) {
            let drain = Duration::from_secs(new.shutdown.drain_seconds.into());
            let message = "nonstop: peer removed from the config".to_string();
            let _ = p.commands.send(PeerCommand::Decommission { drain, message }).await;
            if p.config.password_secret_ref.is_some()
                && let Some(l) = &self.listener
            {
                let _ = sockopt::md5(l, l.v6, address, &[]);
            }
            // The task reads a closed command channel as the agent going
            // away (a plain Cease at once): keep it open until the drain ends.
            let PeerHandle { commands, task, .. } = p;
            self.leaving.retain(|t| !t.is_finished());
            self.leaving.push(tokio::spawn(async move {
                let _ = task.await;
                drop(commands);
            }));
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
        let new = match self.options.load(self.node_files.routes.as_deref()) {
            Ok(loaded) => {
                self.node_files = loaded.files;
                self.routes_needed = loaded.routes_needed;
                self.standing.lock().expect("standing").not_run = loaded.not_run;
                loaded.config
            }
            Err(e) => {
                error!("reload refused, keeping the running config: {e}");
                return;
            }
        };
        if new.asn != self.config.asn
            || new.listen != self.config.listen
            || new.admin != self.config.admin
            || new.bmp != self.config.bmp
        {
            warn!("asn, listen, admin and bmp changes take effect on restart; the rest is applied");
        }
        let wanted: HashMap<IpAddr, Peer> =
            new.peers.iter().map(|p| (p.address, p.clone())).collect();
        let gone: Vec<IpAddr> =
            self.peers.keys().filter(|a| !wanted.contains_key(a)).copied().collect();
        for address in gone {
            info!(peer = %address, "peer removed from the config: draining its session");
            self.let_go(address, &new).await;
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
        if announce_changed {
            self.health.reconfigure(&new.announce);
        }
        self.config.announce = new.announce.clone();
        self.standing.lock().expect("standing").configured =
            new.announce.iter().map(|a| a.prefix).collect();
        self.config.peers = new.peers.clone();
        for (address, p) in wanted {
            match self.peers.get(&address) {
                Some(running)
                    if running.config == p
                        && old_passwords.get(&address) == self.passwords.get(&address) =>
                {
                    if announce_changed {
                        let list = self.announced();
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

    /// The node's labels or annotations changed (the operator rewrote
    /// them), or its default routes did for two looks in a row (see
    /// [`default_routes::Hold`]): the peers are chosen and addressed again,
    /// as on SIGHUP. A file or table that cannot be read keeps the running
    /// peers (said once, until it can be read again).
    async fn follow_node(&mut self) {
        let mut files = match self.options.node_files(self.routes_needed.as_deref()) {
            Ok(files) => files,
            Err(e) => {
                if !std::mem::replace(&mut self.node_unreadable, true) {
                    warn!("keeping the node's peers as they are: {e}");
                }
                return;
            }
        };
        if std::mem::take(&mut self.node_unreadable) {
            info!("the node's files and routes can be read again");
        }
        if let (Some(acted), Some(read)) = (&self.node_files.routes, &files.routes) {
            match self.route_hold.look(acted, read) {
                Look::Held => {
                    info!(
                        routes = ?read,
                        "the node's default routes changed: acted on if the next look agrees"
                    );
                    files.routes = Some(acted.clone());
                }
                Look::Back => info!("the node's default routes are back as they were"),
                Look::Same | Look::Settled => {}
            }
        }
        if files != self.node_files {
            info!("the node's labels, annotations or routes changed: choosing its peers again");
            self.node_files = files;
            self.reload().await;
        }
    }

    /// Before the agent exits: the sessions of peers it let go finish
    /// their drain and say goodbye (a process that ended first would close
    /// them without a word, and the routers would keep our routes stale).
    async fn let_leaving_finish(&mut self) {
        let bound = Duration::from_secs(u64::from(self.config.shutdown.drain_seconds) + 5);
        let deadline = tokio::time::Instant::now() + bound;
        for task in std::mem::take(&mut self.leaving) {
            let _ = tokio::time::timeout_at(deadline, task).await;
        }
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
