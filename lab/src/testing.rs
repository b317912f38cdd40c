//! For end-to-end tests: attach to the lab (bringing it up if it is not),
//! a namespace per test, `eventually`, kubectl as the user would run it,
//! and the lab router's view as data (`router::Router`).
//!
//! ```no_run
//! // In an integration test of this crate: env!("CARGO_BIN_EXE_lab").
//! let lab = nonstop_lab::testing::Lab::attach("target/debug/lab");
//! let ns = lab.namespace("my-test");
//! ns.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n");
//! ```

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::router::Router;
use crate::{Shape, controlplane, lab_dir};

/// Where `install_nonstop` puts the operator.
pub const OPERATOR_NS: &str = "nonstop-system";
/// The policy `install_nonstop` gives the operator (chart values).
pub const LAB_POLICY_IMAGES: &str = "policy.images={nonstop-agent:,ghcr.io/nonstop-dev/}";
pub const LAB_POLICY_PREFIXES: &str =
    "policy.prefixes={198.51.100.0/24,203.0.113.0/24,2001:db8::/32}";

/// Waits for `check` to pass, at most `limit`; panics with what it waited
/// for and the last answer.
pub fn eventually<T>(limit: Duration, what: &str, check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    match wait_for(limit, check) {
        Ok(v) => {
            // Progress for the CI log: which waits are slow.
            if start.elapsed() >= Duration::from_secs(2) {
                eprintln!("  waited {:.1} s for {what}", start.elapsed().as_secs_f64());
            }
            v
        }
        Err(e) => panic!("{what}: not after {limit:?}: {e}"),
    }
}

/// Waits for `check` to pass, at most `limit`; the last answer if it
/// never did, for a caller that gathers more evidence before failing.
pub fn wait_for<T>(
    limit: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return Ok(v),
            Err(e) if start.elapsed() >= limit => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The release binaries the images are built from, built first (a no-op
/// when current) so an image never holds older code than the tests.
pub fn release_binaries(repo: &Path) -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(repo)
        .args(["build", "--release", "--locked", "--workspace"])
        .args(["--bin", "nonstop-operator", "--bin", "nonstop-agent"])
        .output()
        .map_err(|e| format!("cargo build --release: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo build --release: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from);
    Ok(target.join("release"))
}

/// The running lab.
#[derive(Debug, Clone)]
pub struct Lab {
    pub dir: PathBuf,
    pub binary: PathBuf,
}

impl Lab {
    /// The lab in `NONSTOP_LAB_DIR`, brought up with 4 nodes if it is not up.
    pub fn attach(binary: &str) -> Lab {
        let lab = Lab { dir: lab_dir(), binary: PathBuf::from(binary) };
        let up = controlplane::ready(&lab.dir).is_ok() && Shape::read(&lab.dir).is_some();
        if !up {
            let status = Command::new(&lab.binary)
                .args(["up", "--nodes", "4"])
                .status()
                .expect("running lab up");
            assert!(status.success(), "lab up failed");
        }
        lab
    }

    pub fn kubeconfig(&self) -> PathBuf {
        controlplane::kubeconfig(&self.dir)
    }

    /// kubectl with the lab's kubeconfig: stdout, or stderr as the error.
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        self.kubectl_in(args, None)
    }

    /// kubectl with `input` on stdin.
    pub fn kubectl_in(&self, args: &[&str], input: Option<&str>) -> Result<String, String> {
        let mut child = Command::new("kubectl")
            .env("KUBECONFIG", self.kubeconfig())
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("kubectl: {e}"))?;
        if let Some(text) = input {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(text.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// The `lab` command itself.
    pub fn lab(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.binary)
            .args(args)
            .env("NONSTOP_LAB_DIR", &self.dir)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A fresh namespace, deleted when the value is dropped.
    pub fn namespace(&self, prefix: &str) -> Namespace {
        let name = format!("{prefix}-{}", std::process::id());
        let _ = self.kubectl(&["delete", "namespace", &name, "--wait=true"]);
        self.kubectl(&["create", "namespace", &name]).expect("creating the test namespace");
        Namespace { lab: self.clone(), name }
    }

    /// The nonstop image from the repository's Dockerfile and `binaries`,
    /// tagged `tags`, in every node (`lab image build`; built again only
    /// when the binaries changed).
    pub fn build_images(&self, binaries: &Path, tags: &[&str]) -> Result<(), String> {
        let mut args = vec!["image", "build", "--binaries"];
        let dir = binaries.display().to_string();
        args.push(&dir);
        for tag in tags {
            args.extend(["--tag", tag]);
        }
        self.lab(&args).map(|_| ())
    }

    /// nonstop installed the way a user would: the CRDs, then `helm install`
    /// of the chart into `nonstop-system`, its image (`…/nonstop:dev`, built
    /// from `binaries`) holding both binaries. Idempotent. Waits until a
    /// replica leads; returns it.
    pub fn install_nonstop(&self, repo: &Path, binaries: &Path) -> Result<String, String> {
        self.build_images(binaries, &[crate::image::NONSTOP_IMAGE])?;
        self.kubectl(&[
            "apply",
            "--validate=false",
            "-f",
            &repo.join("crds").display().to_string(),
        ])?;
        let _ = self.kubectl(&["create", "namespace", OPERATOR_NS]);
        let chart = repo.join("charts/nonstop").display().to_string();
        // A policy as a cluster admin would set one: the lab's images and
        // the documentation prefixes the demo and the tests announce.
        let values = [
            "--set",
            "image.tag=dev",
            "--set",
            "image.pullPolicy=Never",
            "--set",
            LAB_POLICY_IMAGES,
            "--set",
            LAB_POLICY_PREFIXES,
        ];
        if !self.lab(&["helm", "list", "-n", OPERATOR_NS])?.contains("\"nonstop\"") {
            // --skip-crds: applied above; this API server (1.20) cannot take
            // CEL fields through Helm's server-side apply.
            let args = ["helm", "install", "nonstop", &chart, "-n", OPERATOR_NS, "--skip-crds"];
            self.lab(&[&args[..], &values[..]].concat())?;
        } else if !self
            .kubectl(&["-n", OPERATOR_NS, "get", "deployment", "-o", "jsonpath={..args}"])?
            .contains("--allowed-images")
        {
            // Installed otherwise (the README journey's own release): the same
            // values, so every test runs under the same policy.
            let args = ["helm", "upgrade", "nonstop", &chart, "-n", OPERATOR_NS];
            self.lab(&[&args[..], &values[..]].concat())?;
        }
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            match self.operator_leader() {
                Ok(leader) => return Ok(leader),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!("no operator replica leads after 90 s: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The operator replica holding the leader Lease.
    pub fn operator_leader(&self) -> Result<String, String> {
        let path = "jsonpath={.spec.holderIdentity}";
        let holder =
            self.kubectl(&["-n", OPERATOR_NS, "get", "lease", "nonstop-operator", "-o", path])?;
        if holder.is_empty() { Err("the lease has no holder".into()) } else { Ok(holder) }
    }

    pub fn router(&self) -> Router {
        Router::of(&self.dir).expect("the lab's router")
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// A test's own namespace.
#[derive(Debug)]
pub struct Namespace {
    pub lab: Lab,
    pub name: String,
}

impl Namespace {
    /// `kubectl -n NS ARGS…`
    pub fn kubectl(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        self.lab.kubectl(&full)
    }

    /// `kubectl apply` of a YAML document into this namespace.
    pub fn apply(&self, yaml: &str) -> Result<String, String> {
        self.lab.kubectl_in(&["-n", &self.name, "apply", "-f", "-"], Some(yaml))
    }

    /// A JSONPath of one object, e.g. `get("pod/x", "{.status.phase}")`.
    pub fn get(&self, object: &str, jsonpath: &str) -> Result<String, String> {
        self.kubectl(&["get", object, "-o", &format!("jsonpath={jsonpath}")])
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.lab.kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// Watches the router while something runs: every 200 ms each prefix must
/// have a path via at least `at_least` of `next_hops`. [`Watch::finish`]
/// returns the polls where one did not.
#[derive(Debug)]
pub struct Watch {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<String>>>,
}

impl Watch {
    pub fn start(
        router: Router,
        prefixes: &[&str],
        next_hops: &[String],
        at_least: usize,
    ) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let want: BTreeSet<String> = next_hops.iter().cloned().collect();
        let prefixes: Vec<String> = prefixes.iter().map(|p| p.to_string()).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut misses = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(routes) = router.routes() {
                    for p in &prefixes {
                        let have: BTreeSet<String> =
                            routes.get(p).cloned().unwrap_or_default().into_iter().collect();
                        if want.intersection(&have).count() < at_least {
                            misses.push(format!("{p} via {have:?}"));
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            misses
        });
        Watch { stop, thread: Some(thread) }
    }

    pub fn finish(mut self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("finished once").join().expect("the watch thread")
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
