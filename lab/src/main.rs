//! `lab`: bring the lab up and down, tell how it stands, and reach into it
//! (images, pod logs, Helm).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nonstop_lab::network::{self, RouterKind};
use nonstop_lab::{LabError, Shape, controlplane, kubelet, lab_dir, process, router};

/// A real Kubernetes control plane, nodes and BGP routers on this machine.
#[derive(Debug, Parser)]
#[command(name = "lab", about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what is missing, build or reuse the control plane, start it,
    /// and make the nodes and the router. Idempotent.
    Up {
        /// Nodes (network namespaces node-1..N).
        #[arg(long, default_value_t = 4)]
        nodes: usize,
        /// The BGP daemon in front of the nodes.
        #[arg(long, value_enum, default_value_t = RouterKind::Gobgpd)]
        router: RouterKind,
    },
    /// Stop everything the lab started and remove its state (not the cache).
    Down,
    /// What runs, and whether the API answers.
    Status,
    /// Print `export KUBECONFIG=…` (use: eval "$(lab env)").
    Env,
    /// The lab's image table: which binary an image runs.
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// A pod's container output.
    Logs {
        pod: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// The container (the pod's only one when left out).
        #[arg(short, long)]
        container: Option<String>,
    },
    /// Helm's own engine (helm-python-sdk): install, upgrade, uninstall, template.
    #[command(disable_help_flag = true)]
    Helm {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The lab kubelet itself (started by `lab up`).
    #[command(hide = true)]
    Kubelet {
        #[arg(long)]
        nodes: usize,
    },
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// Make IMAGE run BINARY (e.g. `lab image add nonstop-agent:v2 target/release/nonstop-agent`).
    Add { image: String, binary: PathBuf },
    /// Every image and its binary.
    List,
}

/// The nonstop checkout (for lab/build-control-plane and lab/helm.py):
/// `NONSTOP_REPO`, else the checkout the current directory is in, else the
/// one this binary was built from. Not only the last: one build directory
/// serves every clone, and a binary may outlive the clone that built it.
fn repo() -> PathBuf {
    let is_repo = |dir: &std::path::Path| dir.join("lab/helm.py").is_file();
    if let Some(dir) = std::env::var_os("NONSTOP_REPO") {
        return PathBuf::from(dir);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    cwd.ancestors()
        .find(|d| is_repo(d))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
}

fn packages() -> nonstop_lab::Result<()> {
    let wanted = [
        "etcd-server",
        "iproute2",
        "openssl",
        "gobgpd",
        "bird2",
        "frr",
        "python3-venv",
        "util-linux",
    ];
    let missing: Vec<&str> = wanted
        .into_iter()
        .filter(|p| {
            !std::process::Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    println!("==> installing {}", missing.join(" "));
    process::run("apt-get update", std::process::Command::new("apt-get").args(["update", "-qq"]))?;
    process::run(
        "apt-get install",
        std::process::Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(())
}

/// Nodes, router and kubelet for `shape`; what changed since the last
/// `lab up` is made again.
fn nodes_and_router(dir: &Path, shape: &Shape) -> nonstop_lab::Result<()> {
    let before = Shape::read(dir);
    if before.as_ref().is_some_and(|b| b != shape) {
        println!("==> the lab changes shape: restarting the router and the kubelet");
        router::stop(dir);
        process::stop(dir, "kubelet", Duration::from_secs(5));
    }
    network::router_ns()?;
    for i in 1..=shape.nodes {
        network::node(i, controlplane::BRIDGE)?;
    }
    shape.write(dir)?;
    println!(
        "==> {} nodes; router {} at {} (AS {})",
        shape.nodes,
        shape.router.name(),
        network::ROUTER_ADDRESS,
        network::ROUTER_AS
    );
    router::start(dir, shape.router, shape.nodes)?;
    let exe = std::env::current_exe().map_err(nonstop_lab_io("finding the lab binary"))?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["kubelet", "--nodes", &shape.nodes.to_string()]).env("NONSTOP_LAB_DIR", dir);
    process::start(dir, "kubelet", cmd)?;
    process::wait_for("every node Ready", Duration::from_secs(60), || {
        ready_nodes(dir, shape.nodes)
    })?;
    Ok(())
}

fn nonstop_lab_io(what: &str) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io { what: what.to_string(), source }
}

fn ready_nodes(dir: &Path, want: usize) -> Result<(), String> {
    let out = std::process::Command::new("kubectl")
        .env("KUBECONFIG", controlplane::kubeconfig(dir))
        .args(["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type==\"Ready\")].status} {end}"])
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let ready = text.split_whitespace().filter(|w| w.ends_with("=True")).count();
    if ready >= want { Ok(()) } else { Err(format!("{ready}/{want} Ready: {text}")) }
}

/// Ends every pod process, the kubelet, the router and the namespaces.
fn down(dir: &Path) {
    process::stop(dir, "kubelet", Duration::from_secs(5));
    for ns in network::namespaces() {
        process::kill_all(&process::in_netns(&ns));
    }
    router::stop(dir);
    controlplane::stop(dir);
    // Bind mounts live in the pods' own mount namespaces: gone with them.
    network::remove();
    let _ = std::fs::remove_dir_all(dir);
}

fn logs(
    dir: &Path,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> nonstop_lab::Result<()> {
    let prefix = format!("{namespace}_{pod}_");
    let found: Vec<PathBuf> = std::fs::read_dir(dir.join("logs/pods"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .collect();
    let chosen: Vec<&PathBuf> = match container {
        Some(c) => found.iter().filter(|p| p.ends_with(format!("{prefix}{c}.log"))).collect(),
        None => found.iter().collect(),
    };
    match chosen.as_slice() {
        [one] => {
            let text = std::fs::read(one).map_err(nonstop_lab_io("reading the log"))?;
            use std::io::Write;
            let _ = std::io::stdout().write_all(&text);
            Ok(())
        }
        [] => Err(LabError::Failed(format!(
            "no logs for pod {namespace}/{pod}{}",
            container.map(|c| format!(" container {c}")).unwrap_or_default()
        ))),
        many => Err(LabError::Failed(format!(
            "pod {namespace}/{pod} has {} containers; choose one with -c: {}",
            many.len(),
            many.iter()
                .filter_map(|p| p.file_stem()?.to_str()?.strip_prefix(&prefix))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The lab's private venv with helm-python-sdk, made once. Tests call `lab
/// helm` in parallel, and on a fresh machine the first calls used to build
/// the venv over each other (a half-installed module, a shared library
/// rewritten under a running process: SIGBUS). It is built under a lock and
/// counts as there only once marked complete.
fn helm_venv() -> nonstop_lab::Result<PathBuf> {
    let cache = nonstop_lab::cache_dir();
    let venv = cache.join("helm-venv");
    let python = venv.join("bin/python");
    let done = venv.join(".installed");
    if done.exists() {
        return Ok(python);
    }
    std::fs::create_dir_all(&cache).map_err(nonstop_lab_io("creating the cache dir"))?;
    let lock = std::fs::File::create(cache.join("helm-venv.lock"))
        .map_err(nonstop_lab_io("creating the venv lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| nonstop_lab_io("locking the venv")(e.into()))?;
    if done.exists() {
        return Ok(python); // built by another caller while we waited
    }
    println!("==> installing helm-python-sdk into {}", venv.display());
    process::run(
        "python3 -m venv",
        std::process::Command::new("python3").args(["-m", "venv"]).arg(&venv),
    )?;
    process::run(
        "pip install helm-python-sdk",
        std::process::Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            "helm-python-sdk==0.2.2",
        ]),
    )?;
    std::fs::write(&done, "helm-python-sdk==0.2.2\n")
        .map_err(nonstop_lab_io("marking the venv installed"))?;
    Ok(python)
}

fn main() -> ExitCode {
    let dir = lab_dir();
    let started = Instant::now();
    let result: nonstop_lab::Result<()> = match Cli::parse().command {
        Cmd::Up { nodes, router } => (|| {
            if !(1..=250).contains(&nodes) {
                return Err(LabError::Failed(format!("--nodes {nodes}: from 1 to 250")));
            }
            packages()?;
            controlplane::build(&repo())?;
            println!("==> starting the control plane in {}", dir.display());
            controlplane::start(&dir)?;
            nodes_and_router(&dir, &Shape { nodes, router })?;
            println!(
                "==> lab up in {:.1}s; eval \"$(lab env)\" then kubectl get nodes",
                started.elapsed().as_secs_f64()
            );
            Ok(())
        })(),
        Cmd::Down => {
            down(&dir);
            println!("lab down");
            Ok(())
        }
        Cmd::Status => {
            let mut names: Vec<&str> = controlplane::DAEMONS.to_vec();
            names.push("kubelet");
            if let Ok(kind) = router::kind(&dir) {
                names.extend(router::daemons(kind));
            }
            for name in names {
                match process::running(&dir, name) {
                    Some(pid) => println!("{name:<24} running (pid {pid})"),
                    None => println!("{name:<24} stopped"),
                }
            }
            if let Some(shape) = Shape::read(&dir) {
                println!(
                    "nodes                    {} (namespaces: {})",
                    shape.nodes,
                    network::namespaces().join(" ")
                );
                println!(
                    "router                   {} at {} AS {}",
                    shape.router.name(),
                    network::ROUTER_ADDRESS,
                    network::ROUTER_AS
                );
            }
            match controlplane::ready(&dir) {
                Ok(()) => println!(
                    "API https://{}:{} ready",
                    controlplane::API_HOST,
                    controlplane::API_PORT
                ),
                Err(e) => println!("API not ready: {e}"),
            }
            Ok(())
        }
        Cmd::Env => {
            println!("export KUBECONFIG={}", controlplane::kubeconfig(&dir).display());
            Ok(())
        }
        Cmd::Image { command: ImageCmd::Add { image, binary } } => {
            kubelet::images::add(&dir, &image, &binary).map_err(LabError::Failed).map(|()| {
                println!("{image} -> {}", binary.display());
            })
        }
        Cmd::Image { command: ImageCmd::List } => {
            for (image, path) in kubelet::images::table(&dir) {
                println!("{image:<32} {}", path.display());
            }
            Ok(())
        }
        Cmd::Logs { pod, namespace, container } => {
            logs(&dir, &namespace, &pod, container.as_deref())
        }
        Cmd::Helm { args } => helm(&dir, &args),
        Cmd::Kubelet { nodes } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_env("NONSTOP_LOG")
                        .unwrap_or_else(|_| "info".into()),
                )
                .init();
            let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
            rt.block_on(kubelet::run(dir.clone(), nodes)).map_err(LabError::Failed)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs lab/helm.py in the lab's private venv (made on first use).
fn helm(dir: &Path, args: &[String]) -> nonstop_lab::Result<()> {
    let python = helm_venv()?;
    let status = std::process::Command::new(python)
        .arg(repo().join("lab/helm.py"))
        .args(args)
        .env("KUBECONFIG", controlplane::kubeconfig(dir))
        .env("NONSTOP_LAB_DIR", dir)
        .status()
        .map_err(nonstop_lab_io("running lab/helm.py"))?;
    if status.success() {
        Ok(())
    } else {
        Err(LabError::Failed(format!("helm {}: {status}", args.join(" "))))
    }
}
