//! `lab`: bring the lab up and down, tell how it stands, and reach into it
//! (images, pod logs, Helm).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nonstop_lab::network::{self, RouterKind};
use nonstop_lab::node::Node;
use nonstop_lab::{LabError, Shape, controlplane, image, lab_dir, node, process, router};

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
    /// The images the nodes run: built by buildah, imported into each
    /// node's containerd.
    Image {
        #[command(subcommand)]
        command: ImageCmd,
    },
    /// Reach into a node: run a command there, stop or start its kubelet.
    Node {
        #[command(subcommand)]
        command: NodeCmd,
    },
    /// A pod's container output, read from its node's runtime log
    /// (/var/log/pods): every run of the container, oldest first (`kubectl
    /// logs` shows the current run, `-p` the one before).
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
}

#[derive(Debug, Subcommand)]
enum ImageCmd {
    /// The nonstop image from the repository's Dockerfile and the release
    /// binaries built on this machine, into every node.
    Build {
        /// Tags (default: ghcr.io/nonstop-dev/nonstop:dev).
        #[arg(short, long)]
        tag: Vec<String>,
        /// Where the release binaries are (default: $CARGO_TARGET_DIR/release).
        #[arg(long)]
        binaries: Option<PathBuf>,
    },
    /// A test image: FROM with busybox and SCRIPT in front of the agent.
    Wrap { from: String, tag: String, script: PathBuf },
    /// The images node-1's containerd holds.
    List,
}

#[derive(Debug, Subcommand)]
enum NodeCmd {
    /// Runs a command inside the node (its network and mount namespaces;
    /// `ctr` there speaks to the node's containerd).
    Exec {
        node: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Stops the node's kubelet; its pods keep running.
    StopKubelet { node: String },
    /// Starts whatever of the node is not running.
    Start { node: String },
}

fn node_arg(dir: &Path, name: &str) -> nonstop_lab::Result<Node> {
    let i: usize = name.strip_prefix("node-").and_then(|i| i.parse().ok()).ok_or_else(|| {
        LabError::Failed(format!("{name:?} is not a lab node (node-1, node-2, …)"))
    })?;
    let n = Node::new(dir, i);
    if !n.dir().is_dir() {
        return Err(LabError::Failed(format!("{name} is not in the lab (lab status)")));
    }
    Ok(n)
}

/// Release binaries: `$CARGO_TARGET_DIR/release`, else the checkout's.
fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(|d| PathBuf::from(d).join("release"))
        .unwrap_or_else(|| repo().join("target/release"))
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
        // Real nodes: the runtime, its network plugins, kube-proxy's
        // iptables; buildah for the images, busybox and a C compiler for
        // the lab's own (shell, pause).
        "containerd",
        "runc",
        "containernetworking-plugins",
        "iptables",
        "buildah",
        "busybox-static",
        "gcc",
        "libc6-dev",
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

/// Nodes and router for `shape`; what changed since the last `lab up` is
/// made again.
fn nodes_and_router(dir: &Path, shape: &Shape) -> nonstop_lab::Result<()> {
    let before = Shape::read(dir);
    if before.as_ref().is_some_and(|b| b != shape) {
        println!("==> the lab changes shape: restarting the router");
        router::stop(dir);
        for gone in node::existing(dir).into_iter().filter(|n| n.i > shape.nodes) {
            gone.stop();
        }
    }
    network::router_ns()?;
    for i in 1..=shape.nodes {
        network::node(i, controlplane::BRIDGE)?;
    }
    network::pod_routes(shape.nodes)?;
    shape.write(dir)?;
    println!(
        "==> {} nodes; router {} at {} (AS {})",
        shape.nodes,
        shape.router.name(),
        network::ROUTER_ADDRESS,
        network::ROUTER_AS
    );
    router::start(dir, shape.router, shape.nodes)?;
    image::base(dir, &controlplane::source_tree())?;
    println!("==> kubelet, containerd and kube-proxy on each node");
    for i in 1..=shape.nodes {
        Node::new(dir, i).start()?;
    }
    process::wait_for("every node Ready", Duration::from_secs(90), || {
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

/// Ends every node (its pods, kubelet, containerd), the router, the control
/// plane and the namespaces.
fn down(dir: &Path) -> nonstop_lab::Result<()> {
    for n in node::existing(dir) {
        n.stop();
    }
    for ns in network::namespaces() {
        process::kill_all(&process::in_netns(&ns));
    }
    router::stop(dir);
    controlplane::stop(dir);
    node::release(dir)?;
    network::remove();
    let _ = std::fs::remove_dir_all(dir);
    node::remove_mount_points();
    Ok(())
}

fn logs(
    dir: &Path,
    namespace: &str,
    pod: &str,
    container: Option<&str>,
) -> nonstop_lab::Result<()> {
    let prefix = format!("{namespace}_{pod}_");
    let pods: Vec<PathBuf> = node::existing(dir)
        .iter()
        .flat_map(|n| std::fs::read_dir(n.dir().join("log/pods")).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&prefix)))
        .collect();
    let containers: Vec<PathBuf> = pods
        .iter()
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten())
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| container.is_none_or(|c| p.file_name().is_some_and(|n| n == c)))
        .collect();
    match containers.as_slice() {
        [one] => {
            // N.log per run of the container (the kubelet keeps the last few).
            let mut runs: Vec<(u32, PathBuf)> = std::fs::read_dir(one)
                .into_iter()
                .flatten()
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter_map(|p| Some((p.file_stem()?.to_str()?.parse::<u32>().ok()?, p)))
                .collect();
            runs.sort();
            if runs.is_empty() {
                return Err(LabError::Failed(format!("no log yet in {}", one.display())));
            }
            for (_, file) in runs {
                let text =
                    std::fs::read_to_string(&file).map_err(nonstop_lab_io("reading the log"))?;
                print!("{}", nonstop_lab::node::cri_log_text(&text));
            }
            Ok(())
        }
        [] => Err(LabError::Failed(format!(
            "no logs for pod {namespace}/{pod}{} on any node",
            container.map(|c| format!(" container {c}")).unwrap_or_default()
        ))),
        many => Err(LabError::Failed(format!(
            "pod {namespace}/{pod} has {} containers; choose one with -c: {}",
            many.len(),
            many.iter().filter_map(|p| p.file_name()?.to_str()).collect::<Vec<_>>().join(", ")
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
        Cmd::Down => down(&dir).map(|()| println!("lab down")),
        Cmd::Status => {
            let mut names: Vec<String> =
                controlplane::DAEMONS.iter().map(|d| d.to_string()).collect();
            for n in node::existing(&dir) {
                names.extend(n.daemons());
            }
            if let Ok(kind) = router::kind(&dir) {
                names.extend(router::daemons(kind).iter().map(|d| d.to_string()));
            }
            for name in &names {
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
        Cmd::Image { command: ImageCmd::Build { tag, binaries } } => {
            let tags = if tag.is_empty() { vec![image::NONSTOP_IMAGE.to_string()] } else { tag };
            let binaries = binaries.unwrap_or_else(release_dir);
            image::nonstop(&dir, &repo(), &binaries, &tags).map(|()| {
                println!("built and loaded into every node: {}", tags.join(" "));
            })
        }
        Cmd::Image { command: ImageCmd::Wrap { from, tag, script } } => {
            image::wrap(&dir, &from, &tag, &script).map(|()| println!("{tag}"))
        }
        Cmd::Image { command: ImageCmd::List } => image::list(&dir).map(|l| print!("{l}")),
        Cmd::Node { command: NodeCmd::Exec { node, command } } => (|| {
            let n = node_arg(&dir, &node)?;
            let status = n
                .command(&command[0])
                .args(&command[1..])
                .status()
                .map_err(nonstop_lab_io("running the command in the node"))?;
            std::process::exit(status.code().unwrap_or(1));
        })(),
        Cmd::Node { command: NodeCmd::StopKubelet { node } } => node_arg(&dir, &node).map(|n| {
            n.stop_kubelet();
            println!("{node}: kubelet stopped (its pods keep running)");
        }),
        Cmd::Node { command: NodeCmd::Start { node } } => {
            node_arg(&dir, &node).and_then(|n| n.start())
        }
        Cmd::Logs { pod, namespace, container } => {
            logs(&dir, &namespace, &pod, container.as_deref())
        }
        Cmd::Helm { args } => helm(&dir, &args),
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
