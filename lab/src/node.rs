//! A lab node as a real cluster has one: the kubelet (built from the same
//! Debian source as the control plane), containerd with runc (Debian's
//! packages, CRI) and kube-proxy, all three inside the node's network
//! namespace and a mount namespace of the node's own.
//!
//! ```text
//!  nodes/node-<i>/
//!    mnt                 the node's mount namespace, kept by a bind mount
//!    containerd/         root, state, config.toml, containerd.sock
//!    kubelet/            --root-dir: pods, volumes, its serving certificate
//!    cni/                the bridge network (cni0, 10.244.<i>.0/24) for pods
//!    run-nonstop/        what the node's pods see as /run/nonstop (hostPath)
//!    log/pods, log/containers   /var/log/pods and /var/log/containers
//! ```
//!
//! Every node runs on this one host, so a hostPath is the same directory for
//! every node unless each node sees its own: in the node's mount namespace
//! (private propagation, started by `unshare`) the node's directories are
//! bind-mounted over the host paths, and containerd, the shims and runc
//! resolve hostPath volumes there. Each node's pods live in a cgroup of the
//! node's own (`/nonstop-lab/node-<i>`), which is how `lab down` finds and
//! ends them.
//!
//! This machine's root lacks CAP_SYS_RESOURCE (no negative oom_score_adj),
//! so containerd's CRI plugin runs with `restrict_oom_score_adj`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::controlplane::{self, API_HOST, API_PORT};
use crate::network::{node_ip, node_name};
use crate::process::{self, run, wait_for};
use crate::{LabError, Result, io};

/// The sandbox image every pod's network and IPC namespaces hang on; the
/// lab builds it (`image`).
pub const PAUSE_IMAGE: &str = "lab/pause:3.4.1";
/// Pods' addresses: node `i` gets 10.244.`i`.0/24.
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The cgroup under which every node's pods live.
pub const CGROUP_ROOT: &str = "nonstop-lab";

/// The host paths each node sees as its own (bind mounts in its mount
/// namespace), by the directory under the node's dir that backs them.
const PRIVATE: [(&str, &str); 5] = [
    ("run-nonstop", "/run/nonstop"),
    ("run-containerd", "/run/containerd"),
    ("log/pods", "/var/log/pods"),
    ("log/containers", "/var/log/containers"),
    ("cni/lib", "/var/lib/cni"),
];

pub fn pod_cidr(i: usize) -> String {
    format!("10.244.{i}.0/24")
}

/// Node `i` of the lab in `lab`.
#[derive(Debug, Clone)]
pub struct Node {
    pub i: usize,
    lab: PathBuf,
}

impl Node {
    pub fn new(lab: &Path, i: usize) -> Node {
        Node { i, lab: lab.to_path_buf() }
    }

    pub fn name(&self) -> String {
        node_name(self.i)
    }

    pub fn dir(&self) -> PathBuf {
        self.lab.join("nodes").join(self.name())
    }

    fn mount_ns(&self) -> PathBuf {
        self.dir().join("mnt")
    }

    /// containerd's CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.dir().join("containerd/containerd.sock")
    }

    fn daemon(&self, what: &str) -> String {
        format!("{}-{what}", self.name())
    }

    /// `program` run inside the node: its network and mount namespaces,
    /// with `CONTAINERD_ADDRESS` and `CONTAINERD_NAMESPACE` set so `ctr`
    /// speaks to this node's containerd about its Kubernetes containers.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.name()))
            .arg(format!("--mount={}", self.mount_ns().display()))
            .arg("--")
            .arg(program)
            .env("CONTAINERD_ADDRESS", self.socket())
            .env("CONTAINERD_NAMESPACE", "k8s.io");
        c
    }

    /// Starts what is not running: the mount namespace, containerd, the
    /// images the lab has built, kube-proxy and the kubelet.
    pub fn start(&self) -> Result<()> {
        self.mount_namespace()?;
        self.containerd()?;
        crate::image::load_all(&self.lab, self)?;
        self.kube_proxy()?;
        self.kubelet()
    }

    /// The node's mount namespace with its private paths; idempotent.
    fn mount_namespace(&self) -> Result<()> {
        let dir = self.dir();
        for (own, _) in PRIVATE {
            fs::create_dir_all(dir.join(own)).map_err(io(format!("creating {own}")))?;
        }
        if mounted(&self.mount_ns()) {
            return Ok(());
        }
        // The file that keeps the namespace must sit on a private mount.
        let holder = self.lab.join("nodes");
        if !mounted(&holder) {
            let h = holder.display().to_string();
            run("bind nodes/", Command::new("mount").args(["--bind", &h, &h]))?;
            run("private nodes/", Command::new("mount").args(["--make-private", &h]))?;
        }
        fs::write(self.mount_ns(), "").map_err(io("creating the mount namespace file"))?;
        run(
            "unshare --mount",
            Command::new("unshare").arg(format!("--mount={}", self.mount_ns().display())).args([
                "--propagation",
                "private",
                "true",
            ]),
        )?;
        let mut script = String::from("set -e\n");
        for (own, path) in PRIVATE {
            script +=
                &format!("mkdir -p {path}\nmount --bind {} {path}\n", dir.join(own).display());
        }
        // Inside the node, mounts propagate (the kubelet's volumes reach the
        // runtime); none leaves it.
        script += "mount --make-rshared /\n";
        let mut enter = Command::new("nsenter");
        enter.arg(format!("--mount={}", self.mount_ns().display())).args(["sh", "-c", &script]);
        run(&format!("the mount namespace of {}", self.name()), &mut enter)?;
        Ok(())
    }

    fn containerd(&self) -> Result<()> {
        let dir = self.dir();
        let d = |p: &str| dir.join(p).display().to_string();
        let cni = cni_config(self.i);
        fs::create_dir_all(dir.join("cni/net.d")).map_err(io("creating cni/net.d"))?;
        fs::write(dir.join("cni/net.d/10-lab.conflist"), cni)
            .map_err(io("writing the CNI config"))?;
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
"#,
            root = d("containerd/root"),
            state = d("containerd/state"),
            sock = self.socket().display(),
            cni = d("cni/net.d"),
            opt = d("containerd/opt"),
        );
        let path = dir.join("containerd/config.toml");
        fs::create_dir_all(dir.join("containerd")).map_err(io("creating containerd/"))?;
        fs::write(&path, config).map_err(io("writing containerd's config"))?;
        let mut cmd = self.command("containerd");
        cmd.arg("--config").arg(&path);
        process::start(&self.lab, &self.daemon("containerd"), cmd)?;
        wait_for(&format!("containerd on {}", self.name()), Duration::from_secs(30), || {
            let out = self.command("ctr").arg("version").output().map_err(|e| e.to_string())?;
            if out.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        })
    }

    fn kubeconfig(&self, user: &str, crt: &Path, key: &Path) -> Result<PathBuf> {
        let ca = self.lab.join("pki/ca.crt");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{API_HOST}:{API_PORT}\n    \
             certificate-authority: {}\nusers:\n- name: {user}\n  user:\n    client-certificate: {}\n    client-key: {}\n\
             contexts:\n- name: lab\n  context: {{cluster: lab, user: {user}}}\ncurrent-context: lab\n",
            ca.display(),
            crt.display(),
            key.display()
        );
        let path = self.dir().join(format!("{user}.kubeconfig"));
        fs::write(&path, text).map_err(io("writing a node kubeconfig"))?;
        Ok(path)
    }

    fn kube_proxy(&self) -> Result<()> {
        let (crt, key) = (self.lab.join("pki/kube-proxy.crt"), self.lab.join("pki/kube-proxy.key"));
        let config = self.kubeconfig("kube-proxy", &crt, &key)?;
        let mut cmd = self.command(controlplane::binary("kube-proxy"));
        cmd.arg(format!("--kubeconfig={}", config.display()))
            .arg(format!("--hostname-override={}", self.name()))
            .arg(format!("--bind-address={}", node_ip(self.i)))
            .arg(format!("--cluster-cidr={POD_CIDR}"))
            .args(["--proxy-mode=iptables", "--oom-score-adj=0"])
            // The conntrack table is the host's: leave its size and timeouts.
            .args([
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
            ])
            .args([
                "--metrics-bind-address=127.0.0.1:10249",
                "--healthz-bind-address=127.0.0.1:10256",
            ]);
        process::start(&self.lab, &self.daemon("kube-proxy"), cmd).map(|_| ())
    }

    fn kubelet(&self) -> Result<()> {
        let name = self.name();
        let (crt, key) = controlplane::client_cert(
            &self.lab,
            &format!("kubelet-{name}"),
            &format!("system:node:{name}"),
            "system:nodes",
        )?;
        let kubeconfig = self.kubeconfig("kubelet", &crt, &key)?;
        let dir = self.dir();
        let ca = self.lab.join("pki/ca.crt");
        // A real kubelet's settings, but for the lab's one host: no swap
        // check, no QoS cgroups, pods in the node's own cgroup; Secrets and
        // ConfigMaps resynced every 20 s (the default is a minute); the
        // node Lease renewed every 3 s (12 s / 4) so the controller
        // manager's shorter grace period (20 s) still sees it. No image
        // garbage collection: the lab's images are loaded into the nodes,
        // never pulled, so one collected (the host's disk filling up, the
        // nodes sharing it) could not come back and its next pod would wait
        // in Pending for good.
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
             address: {ip}\nport: 10250\nreadOnlyPort: 0\nhealthzBindAddress: 127.0.0.1\nhealthzPort: 10248\n\
             authentication:\n  anonymous: {{enabled: false}}\n  webhook: {{enabled: true}}\n  x509: {{clientCAFile: {ca}}}\n\
             authorization: {{mode: Webhook}}\n\
             cgroupDriver: cgroupfs\ncgroupsPerQOS: false\nenforceNodeAllocatable: []\ncgroupRoot: /{CGROUP_ROOT}/{name}\n\
             failSwapOn: false\nsyncFrequency: 20s\nserializeImagePulls: false\n\
             nodeLeaseDurationSeconds: 12\nnodeStatusUpdateFrequency: 4s\n\
             evictionHard: {{memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}}\n\
             imageGCHighThresholdPercent: 100\nimageGCLowThresholdPercent: 99\n",
            ip = node_ip(self.i),
            ca = ca.display(),
        );
        let path = dir.join("kubelet.yaml");
        fs::write(&path, config).map_err(io("writing the kubelet's config"))?;
        let mut cmd = self.command(controlplane::binary("kubelet"));
        cmd.arg(format!("--config={}", path.display()))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!("--root-dir={}", dir.join("kubelet").display()))
            .arg(format!("--cert-dir={}", dir.join("kubelet/pki").display()))
            .arg(format!("--hostname-override={name}"))
            .arg(format!("--node-ip={}", node_ip(self.i)))
            .arg(format!("--node-labels=nonstop.dev/lab-node={}", self.i))
            .args(["--container-runtime=remote", "--runtime-request-timeout=2m"])
            .arg(format!("--container-runtime-endpoint=unix://{}", self.socket().display()))
            .arg(format!("--pod-infra-container-image={PAUSE_IMAGE}"))
            // Pod lifecycle (SyncLoop ADD/UPDATE/DELETE, kills) in the log.
            .arg("--v=2");
        process::start(&self.lab, &self.daemon("kubelet"), cmd).map(|_| ())
    }

    /// Stops this node's kubelet only (its pods keep running, as when a
    /// real kubelet dies); `start` brings it back.
    pub fn stop_kubelet(&self) {
        process::stop(&self.lab, &self.daemon("kubelet"), Duration::from_secs(5));
    }

    /// The names of this node's lab daemons.
    pub fn daemons(&self) -> Vec<String> {
        ["containerd", "kube-proxy", "kubelet"].iter().map(|d| self.daemon(d)).collect()
    }

    pub fn kubelet_running(&self) -> bool {
        process::running(&self.lab, &self.daemon("kubelet")).is_some()
    }

    /// Ends the node: the kubelet and kube-proxy, every container (by the
    /// node's cgroup), containerd and its shims, then the mount namespace.
    pub fn stop(&self) {
        self.stop_kubelet();
        process::stop(&self.lab, &self.daemon("kube-proxy"), Duration::from_secs(5));
        kill_cgroup(&format!("{CGROUP_ROOT}/{}", self.name()));
        process::stop(&self.lab, &self.daemon("containerd"), Duration::from_secs(5));
        // The shims (and anything else) started with this node's socket.
        process::kill_all(&process::strays(&self.dir().display().to_string()));
        let ns = self.mount_ns();
        if mounted(&ns) {
            let _ = Command::new("umount").arg(&ns).status();
        }
    }
}

/// The node's CNI network: a bridge `cni0` in the node's namespace, the
/// node's /24 of the pod range, the node as the pods' gateway.
fn cni_config(i: usize) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "lab",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "hairpinMode": true,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": pod_cidr(i)}]],
                "routes": [{"dst": "0.0.0.0/0"}],
            },
        }],
    })
    .to_string()
}

/// Whether `path` is a mount point.
fn mounted(path: &Path) -> bool {
    let p = path.display().to_string();
    fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(p.as_str())))
}

/// SIGKILL to every process in cgroup `path` (below every v1 hierarchy,
/// or the v2 one), deepest first, then the cgroups removed.
pub fn kill_cgroup(path: &str) {
    let roots: Vec<PathBuf> = fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .chain(std::iter::once(PathBuf::from("/sys/fs/cgroup")))
        .map(|r| r.join(path))
        .filter(|p| p.is_dir())
        .collect();
    for _ in 0..50 {
        let mut any = false;
        for root in &roots {
            for dir in walk(root) {
                let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                let pids: Vec<u32> = procs.lines().filter_map(|l| l.parse().ok()).collect();
                any |= !pids.is_empty();
                process::kill_all(&pids);
            }
        }
        if !any {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for root in &roots {
        let mut dirs = walk(root);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            let _ = fs::remove_dir(d);
        }
    }
    // The parent (`nonstop-lab`) when no node is left in it.
    for root in roots {
        if let Some(parent) = root.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut i = 0;
    while i < out.len() {
        if let Ok(entries) = fs::read_dir(&out[i]) {
            out.extend(entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()));
        }
        i += 1;
    }
    out
}

/// Every node directory under the lab dir, by number.
pub fn existing(lab: &Path) -> Vec<Node> {
    let mut found: Vec<usize> = fs::read_dir(lab.join("nodes"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("node-")?.parse().ok())
        .collect();
    found.sort();
    found.into_iter().map(|i| Node::new(lab, i)).collect()
}

/// The messages of a CRI log file (`TIME STREAM P|F MESSAGE` per line),
/// partial lines joined.
pub fn cri_log_text(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (Some(_time), Some(_stream), Some(tag), Some(message)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        out.push_str(message);
        if tag != "P" {
            out.push('\n');
        }
    }
    out
}

/// The host directories made as mount points for the nodes' own paths,
/// removed when empty (after `release`).
pub fn remove_mount_points() {
    for (_, path) in PRIVATE {
        let _ = fs::remove_dir(path);
    }
}

/// Unmounts what holds the nodes' mount namespaces (after every node stopped).
pub fn release(lab: &Path) -> Result<()> {
    let holder = lab.join("nodes");
    if mounted(&holder) {
        let status = Command::new("umount").arg(&holder).status().map_err(io("umount"))?;
        if !status.success() {
            return Err(LabError::Failed(format!("umount {}: {status}", holder.display())));
        }
    }
    Ok(())
}
