//! The `nonstop-agent` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use nonstop_agent::config::Config;
use nonstop_agent::speaker::routes::RoutesDocument;
use nonstop_agent::speaker::status::{AgentStatus, EventsDocument, Role};
use nonstop_agent::speaker::{self, RunOptions, Takeover};
use nonstop_agent::{LogFormat, restart, show};

/// The nonstop BGP gateway agent: speaks BGP to the routers in front of a node
/// and hands its live sessions to its successor on upgrade.
#[derive(Debug, Parser)]
#[command(name = "nonstop-agent", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a config file: print every broken rule, or a summary of what it
    /// would speak and announce.
    Check {
        /// The config file (YAML or JSON, the BgpGateway spec's field names).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the BGP speaker until SIGTERM; SIGHUP reloads the config.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Where the agent keeps its control socket and state (created 0700).
        #[arg(long, env = "NONSTOP_STATE_DIR")]
        state_dir: PathBuf,
        /// BGP identifier, overriding `routerId` in the config. An IPv6
        /// address (an IPv6-only node's) stands for the 32-bit FNV-1a hash
        /// of its octets, the same on every start and every version.
        #[arg(long)]
        router_id: Option<std::net::IpAddr>,
        /// Where `passwordSecretRef {name, key}` is read from: DIR/<name>/<key>.
        #[arg(long, default_value = "/etc/nonstop/secrets")]
        secrets_dir: PathBuf,
        /// The pod this agent runs in, shown in status (the operator sets it).
        #[arg(long, env = "NONSTOP_POD")]
        pod: Option<String>,
        /// How to take over from an agent already running in the state dir:
        /// handoff (live sessions, routers see nothing) or restart (it stops
        /// without withdrawing; routers hold the routes stale meanwhile).
        #[arg(long, value_enum, env = "NONSTOP_TAKEOVER", default_value = "handoff")]
        takeover: TakeoverArg,
        /// Listen for /status and /metrics on this address only, overriding
        /// the address of `admin` in the config (its port stays).
        #[arg(long)]
        admin_ip: Option<std::net::IpAddr>,
        /// When this agent's pod was created (Unix ms; the operator sets it):
        /// the agent never takes a node over from the agent of a newer pod.
        #[arg(long, env = "NONSTOP_POD_CREATED_MS")]
        pod_created_ms: Option<u64>,
        /// A file holding the token `PUT /announcements` must carry on the
        /// admin port (`Authorization: Bearer <token>`). Without it the
        /// admin port takes no published set; the control socket in the
        /// state dir always does.
        #[arg(long, env = "NONSTOP_API_TOKEN_FILE")]
        api_token_file: Option<PathBuf>,
        /// A file with the node's labels as a JSON object (the operator
        /// mounts it), for the peers' `nodeSelector`: only the peers whose
        /// selector the node matches run, and a change is followed within
        /// seconds, as a reload.
        #[arg(long, env = "NONSTOP_NODE_LABELS_FILE")]
        node_labels_file: Option<PathBuf>,
        /// A file with node annotations as a JSON object (the operator
        /// mounts it), for the peers' `addressFrom`: each such peer is
        /// dialled at the address its annotation gives this node, and a
        /// change is followed within seconds, as a reload.
        #[arg(long, env = "NONSTOP_NODE_ANNOTATIONS_FILE")]
        node_annotations_file: Option<PathBuf>,
        /// Source address for the sessions of peers whose config sets no
        /// `localAddress`, at most one per family (the operator passes a
        /// node's `nonstop.dev/local-address` annotation).
        #[arg(long)]
        local_address: Vec<std::net::IpAddr>,
    },
    /// Exit 0 when the agent answering in the state dir is active (and, with
    /// --pod, runs in that pod): a readiness probe for "this pod's agent is
    /// the node's active speaker". Otherwise say why and exit 1.
    Ready {
        #[arg(long, env = "NONSTOP_STATE_DIR")]
        state_dir: PathBuf,
        #[arg(long, env = "NONSTOP_POD")]
        pod: Option<String>,
    },
    /// Replace the running agent's published set of announcements with the
    /// one in FILE (JSON: `{"version": "…", "announce": [{"prefix": …}, …]}`,
    /// `-` for stdin): through the control socket in the state dir, or with
    /// --admin through the admin port (with the API token).
    Publish {
        file: PathBuf,
        #[arg(long, env = "NONSTOP_STATE_DIR", required_unless_present = "admin")]
        state_dir: Option<PathBuf>,
        /// The agent's admin address (`host:port`) instead of the state dir.
        #[arg(long, requires = "token_file")]
        admin: Option<std::net::SocketAddr>,
        /// The API token's file, for --admin.
        #[arg(long)]
        token_file: Option<PathBuf>,
    },
    /// Print the running agent's status as JSON.
    Status {
        #[arg(long, env = "NONSTOP_STATE_DIR")]
        state_dir: PathBuf,
    },
    /// Show the running agent's peers, recent session events or last
    /// handoff as a table.
    Show {
        #[arg(value_enum)]
        what: ShowWhat,
        /// For `events` and `routes`: this peer's only (its address).
        peer: Option<String>,
        /// For `routes`: rows per table at most.
        #[arg(long, default_value_t = nonstop_agent::speaker::routes::DEFAULT_LIMIT)]
        limit: usize,
        #[arg(long, env = "NONSTOP_STATE_DIR")]
        state_dir: PathBuf,
    },
    /// Stop the running agent, and wait until it has.
    Stop {
        #[arg(long, env = "NONSTOP_STATE_DIR")]
        state_dir: PathBuf,
        /// restart: close sessions without withdrawing; routers keep the routes
        /// stale until the agent is back (Graceful Restart). decommission:
        /// announce GRACEFUL_SHUTDOWN, wait shutdown.drainSeconds, withdraw.
        #[arg(long, value_enum)]
        mode: StopArg,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TakeoverArg {
    Handoff,
    Restart,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ShowWhat {
    /// Each peer: AS, state, up/down, routes accepted, stale, refused and
    /// advertised, last error.
    Peers,
    /// The last handoff: which side, result, sessions, pause, reason.
    Handoff,
    /// Each session's recent events: state changes with their reason, both
    /// OPENs, NOTIFICATIONs decoded, Graceful Restart, handoffs.
    Events,
    /// Each peer's routes: received (after the import policy, stale ones
    /// marked) and advertised, with next hop, AS path and communities.
    Routes,
    /// Each BMP collector: up or down and since when, connections made,
    /// the last error.
    Bmp,
    /// Each checked announcement: its verdict (up, draining, down), since
    /// when, and what the last probe saw.
    Checks,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum StopArg {
    Restart,
    Decommission,
}

/// The API token in `path`: its first line, at least 16 characters.
fn read_api_token(path: &std::path::Path) -> Result<std::sync::Arc<str>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--api-token-file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.len() < 16 {
        return Err(format!(
            "--api-token-file {}: the token must be at least 16 characters on the first line",
            path.display()
        ));
    }
    Ok(token.into())
}

fn main() -> ExitCode {
    let log_format = match nonstop_agent::init_logging() {
        Ok(format) => format,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match Cli::parse().command {
        Command::Run {
            config,
            state_dir,
            router_id,
            secrets_dir,
            pod,
            takeover,
            admin_ip,
            pod_created_ms,
            api_token_file,
            node_labels_file,
            node_annotations_file,
            local_address,
        } => {
            if let Some(twice) = local_address
                .iter()
                .enumerate()
                .find(|(i, a)| local_address[..*i].iter().any(|b| b.is_ipv4() == a.is_ipv4()))
            {
                eprintln!(
                    "error: --local-address {} is the second of its family: give one IPv4 and one IPv6 address at most",
                    twice.1
                );
                return ExitCode::from(2);
            }
            let api_token = match api_token_file.as_deref().map(read_api_token).transpose() {
                Ok(token) => token,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            let result = runtime.block_on(speaker::run(RunOptions {
                config,
                state_dir,
                router_id: router_id.map(nonstop_agent::config::router_id_for),
                secrets_dir,
                pod,
                takeover: match takeover {
                    TakeoverArg::Handoff => Takeover::Handoff,
                    TakeoverArg::Restart => Takeover::Restart,
                },
                admin_ip,
                pod_created_ms,
                api_token,
                node_labels_file,
                node_annotations_file,
                local_addresses: local_address,
            }));
            // Exit now: a thread still waiting for the state dir's lock (the
            // agent was told to stop before it got it) must not hold us up.
            runtime.shutdown_background();
            match result {
                Ok(()) => ExitCode::SUCCESS,
                // A log collector reads the reason as one more JSON line.
                Err(e) if log_format == LogFormat::Json => {
                    tracing::error!(error = %e, "nonstop-agent stopped on an error");
                    ExitCode::from(2)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Stop { state_dir, mode, timeout } => stop(&state_dir, mode, timeout),
        Command::Status { state_dir } => match get(&state_dir, "/status") {
            Ok(body) => {
                print!("{body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        },
        Command::Show { what, peer, limit, state_dir } => {
            show(&state_dir, what, peer.as_deref(), limit)
        }
        Command::Ready { state_dir, pod } => ready(&state_dir, pod.as_deref()),
        Command::Publish { file, state_dir, admin, token_file } => {
            publish(&file, state_dir.as_deref(), admin.zip(token_file))
        }
        Command::Check { config } => match Config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: AS {}, {} peer(s), {} announced prefix(es): OK",
                    config.display(),
                    c.asn,
                    c.peers.len(),
                    c.announce.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        },
    }
}

fn stop(state_dir: &std::path::Path, mode: StopArg, timeout: u64) -> ExitCode {
    let socket = state_dir.join(speaker::CONTROL_SOCKET);
    let path = match mode {
        StopArg::Restart => "/stop?mode=restart",
        StopArg::Decommission => "/stop?mode=decommission",
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let answer = runtime.expect("tokio runtime").block_on(speaker::request(&socket, "POST", path));
    let body = match answer {
        Ok(body) => body,
        Err(e) => {
            eprintln!("error: no agent answers on {}: {e}", socket.display());
            return ExitCode::from(1);
        }
    };
    print!("{body}");
    let pid = body.rsplit("pid ").next().and_then(|p| p.trim().parse::<u32>().ok());
    let Some(pid) = pid else { return ExitCode::SUCCESS };
    let started = std::time::Instant::now();
    let mut said = 0;
    // Gone, or a zombie its parent has not reaped yet.
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
    };
    while alive(pid) {
        let waited = started.elapsed().as_secs();
        if waited >= timeout {
            eprintln!("error: agent {pid} still running after {timeout} s");
            return ExitCode::from(1);
        }
        if waited >= said + 5 {
            said = waited;
            println!("waiting for agent {pid} ({waited} s)");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("agent {pid} stopped");
    ExitCode::SUCCESS
}

/// GET `path` from the running agent: the body, or why there is none.
/// `nonstop-agent publish`: the agent's answer, or why there is none.
fn publish(
    file: &std::path::Path,
    state_dir: Option<&std::path::Path>,
    admin: Option<(std::net::SocketAddr, PathBuf)>,
) -> ExitCode {
    use nonstop_agent::http::{self, Outgoing, hyper::Method};
    let body = if file == std::path::Path::new("-") {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut text).map(|_| text)
    } else {
        std::fs::read(file)
    };
    let body = match body {
        Ok(body) => http::hyper::body::Bytes::from(body),
        Err(e) => {
            eprintln!("error: {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    let runtime = runtime.expect("tokio runtime");
    let path = "/announcements";
    let answer = match (admin, state_dir) {
        (Some((addr, token_file)), _) => {
            let token = match read_api_token(&token_file) {
                Ok(token) => token,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let outgoing = Outgoing { bearer: Some(&token), body };
            let limit = std::time::Duration::from_secs(30);
            runtime.block_on(http::request_tcp(addr, Method::PUT, path, outgoing, limit))
        }
        (None, Some(dir)) => {
            let socket = dir.join(speaker::CONTROL_SOCKET);
            let outgoing = Outgoing { bearer: None, body };
            runtime.block_on(http::request_unix_with(&socket, Method::PUT, path, outgoing))
        }
        (None, None) => unreachable!("clap requires --state-dir or --admin"),
    };
    match answer {
        Ok(body) => {
            print!("{body}");
            ExitCode::SUCCESS
        }
        Err(http::ClientError::Status { body, .. }) => {
            eprint!("error: {body}");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: no agent answers: {e}");
            ExitCode::from(1)
        }
    }
}

fn get(state_dir: &std::path::Path, path: &str) -> Result<String, String> {
    let socket = state_dir.join(speaker::CONTROL_SOCKET);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
    runtime
        .expect("tokio runtime")
        .block_on(speaker::get(&socket, path))
        .map_err(|e| format!("no agent answers on {}: {e}", socket.display()))
}

fn show(state_dir: &std::path::Path, what: ShowWhat, peer: Option<&str>, limit: usize) -> ExitCode {
    let text =
        match what {
            ShowWhat::Peers => fetch::<AgentStatus>(state_dir, "/status").map(|s| show::peers(&s)),
            ShowWhat::Handoff => fetch::<AgentStatus>(state_dir, "/status")
                .map(|s| show::handoff(&s, restart::now_ms())),
            ShowWhat::Bmp => {
                fetch::<AgentStatus>(state_dir, "/status").map(|s| show::bmp(&s, restart::now_ms()))
            }
            ShowWhat::Checks => fetch::<AgentStatus>(state_dir, "/status")
                .map(|s| show::checks(&s, restart::now_ms())),
            ShowWhat::Events => fetch::<EventsDocument>(state_dir, "/events")
                .and_then(|doc| show::events(&doc, peer, restart::now_ms())),
            ShowWhat::Routes => {
                let only = peer.map(|p| format!("&peer={p}")).unwrap_or_default();
                fetch::<RoutesDocument>(state_dir, &format!("/routes?limit={limit}{only}"))
                    .map(|doc| show::routes(&doc))
            }
        };
    match text {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// A JSON document from the running agent.
fn fetch<T: serde::de::DeserializeOwned>(
    state_dir: &std::path::Path,
    path: &str,
) -> Result<T, String> {
    let body = get(state_dir, path)?;
    serde_json::from_str(&body).map_err(|e| format!("the agent's {path} does not parse: {e}"))
}

fn ready(state_dir: &std::path::Path, pod: Option<&str>) -> ExitCode {
    let body = match get(state_dir, "/status") {
        Ok(body) => body,
        Err(e) => {
            println!("not ready: {e}");
            return ExitCode::from(1);
        }
    };
    let status: AgentStatus = match serde_json::from_str(&body) {
        Ok(s) => s,
        Err(e) => {
            println!("not ready: the agent's status does not parse: {e}");
            return ExitCode::from(1);
        }
    };
    if status.role != Role::Active {
        println!("not ready: the agent answering is {:?}", status.role);
        return ExitCode::from(1);
    }
    if let Some(pod) = pod
        && status.pod.as_deref() != Some(pod)
    {
        let other = status.pod.as_deref().unwrap_or("no pod");
        println!("not ready: the node's active agent runs in {other}, not {pod}");
        return ExitCode::from(1);
    }
    println!("ready: active agent pid {} version {}", status.pid, status.version);
    ExitCode::SUCCESS
}
