//! The lab: a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler v1.20.2 built from Debian's
//! source package), N nodes as network namespaces and a BGP router in front
//! of them, all on one machine, for the end-to-end tests and the demo.
//!
//! ```text
//!  root namespace: etcd 127.0.0.1:2379 · apiserver 10.98.0.1:6443 on bridge nslab0
//!  node-1..N:      veth into nslab0 (10.98.1.i) for the API; veth to the router
//!                  (10.99.i.2 ↔ 10.99.0.1); pods run here as processes
//!  lab-router:     gobgpd | bird | frr, AS 65000 at 10.99.0.1, peering with
//!                  every node (AS 65001), Graceful Restart helper
//! ```
//!
//! `controlplane` owns the API's processes and their PKI, `network` the
//! namespaces and links, `router` the BGP daemon in front and what it sees,
//! `kubelet` the nodes and their pods. The state lives in the lab dir
//! (`NONSTOP_LAB_DIR`, default `/tmp/nonstop-lab`), the built binaries in
//! `~/.cache/nonstop/k8s-1.20.2-nonstop2`.

pub mod capture;
pub mod controlplane;
pub mod image;
pub mod network;
pub mod node;
pub mod picture;
pub mod process;
pub mod rack;
pub mod router;
pub mod testing;

use std::path::PathBuf;

/// Where the lab keeps its state, logs and credentials.
pub fn lab_dir() -> PathBuf {
    std::env::var_os("NONSTOP_LAB_DIR")
        .map_or_else(|| PathBuf::from("/tmp/nonstop-lab"), PathBuf::from)
}

/// Where built control-plane binaries are cached, by version.
pub fn cache_dir() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    std::env::var_os("NONSTOP_CACHE").map_or_else(|| home.join(".cache/nonstop"), PathBuf::from)
}

/// The control plane version and the lab's patch level of its build
/// (`lab/build-control-plane`), which together key the cache.
pub const K8S_VERSION: &str = "1.20.2-nonstop2";

/// Errors a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Failed(String),
}

pub type Result<T> = std::result::Result<T, LabError>;

pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

/// What `lab up` was asked for, so later commands and a second `lab up`
/// know the shape of the lab.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    pub nodes: usize,
    pub router: network::RouterKind,
}

impl Shape {
    pub fn read(dir: &std::path::Path) -> Option<Shape> {
        serde_json::from_slice(&std::fs::read(dir.join("lab.json")).ok()?).ok()
    }

    pub fn write(&self, dir: &std::path::Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("serialises");
        std::fs::write(dir.join("lab.json"), text).map_err(io("writing lab.json"))
    }
}
