//! What the operator's end-to-end tests share: the lab with the operator
//! installed by its Helm chart, a namespace whose gateway runs on nodes
//! 1–3, and the router in front, read the way a network engineer would.
#![allow(dead_code)] // each test binary uses its own part of it

use std::path::{Path, PathBuf};
use std::time::Duration;

use nonstop_lab::router::{Router, Tally};
use nonstop_lab::testing::{Lab, Namespace, Watch, eventually, release_binaries};
use serde_json::Value;

pub const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
pub const PREFIXES: [&str; 2] = ["198.51.100.0/24", "203.0.113.0/24"];

pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_nonstop-operator")).parent().unwrap().to_path_buf()
}

pub fn uplink(node: &str) -> String {
    format!("10.99.{}.2", node.trim_start_matches("node-"))
}

pub fn uplinks() -> Vec<String> {
    NODES.iter().map(|n| uplink(n)).collect()
}

/// The lab with the CRDs, the images and the operator deployed, and a
/// namespace whose name labels nodes 1–3 for this test's gateway.
pub struct Setup {
    pub lab: Lab,
    pub ns: Namespace,
    pub router: Router,
}

impl Setup {
    pub fn new(prefix: &str) -> Setup {
        let lab = Lab::attach(bin_dir().join("lab").to_str().unwrap());
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let release = release_binaries(root).unwrap();
        lab.build_images(&release, &["nonstop-agent:v1", "nonstop-agent:v2"]).unwrap();
        // v3: an agent whose state schema this one cannot read, so the
        // running agent refuses to hand over to it.
        wrap_agent(
            &lab,
            "nonstop-agent:v3",
            &format!("#!/bin/sh\nNONSTOP_TEST_STATE_SCHEMA=99 exec {REAL_AGENT} \"$@\"\n"),
        );
        lab.install_nonstop(root, &release).unwrap();
        // Nodes 1–3 hold one speaker each: no gateway left from elsewhere
        // (a `script/demo` run leaves its own up to look at).
        let router = lab.router();
        lab.kubectl(&["delete", "bgpgw", "--all", "-A", "--wait=false"]).unwrap();
        wait_speakers_gone(&router);

        let ns = lab.namespace(prefix);
        for node in NODES {
            lab.kubectl(&[
                "label",
                "node",
                node,
                &format!("nonstop.dev/e2e={}", ns.name),
                "--overwrite",
            ])
            .unwrap();
        }
        Setup { router, lab, ns }
    }

    pub fn gateway(&self, image: &str, strategy: &str) -> String {
        format!(
            r#"apiVersion: nonstop.dev/v1alpha1
kind: BgpGateway
metadata: {{name: edge}}
spec:
  image: {image}
  nodeSelector: {{nonstop.dev/e2e: {ns}}}
  asn: 65001
  peers:
  - address: 10.99.0.1
    asn: 65000
    holdTime: 9
    connectRetryTime: 1
    families: [ipv4-unicast]
    gracefulRestart: {{restartTime: 30}}
  announce: [{{prefix: "{p0}"}}, {{prefix: "{p1}"}}]
  upgrade: {{strategy: {strategy}, handoffTimeoutSeconds: 30}}
  shutdown: {{drainSeconds: 2}}
"#,
            ns = self.ns.name,
            p0 = PREFIXES[0],
            p1 = PREFIXES[1],
        )
    }

    /// Applies the gateway at v1 with `strategy` and waits until all 3
    /// nodes serve it and the router has every prefix via each; the status.
    pub fn serving_v1(&self, strategy: &str) -> Value {
        self.ns.apply(&self.gateway("nonstop-agent:v1", strategy)).unwrap();
        let status = self.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
        self.wait_routes_from(&NODES, Duration::from_secs(30));
        status
    }

    pub fn status(&self) -> Value {
        let text = self.ns.kubectl(&["get", "bgpgw", "edge", "-o", "json"]).unwrap_or_default();
        serde_json::from_str::<Value>(&text).map(|v| v["status"].clone()).unwrap_or(Value::Null)
    }

    /// Waits until every node runs `image`, the rollout is Complete and all
    /// 3 nodes are ready; returns the status.
    pub fn wait_complete(&self, image: &str, limit: Duration) -> Value {
        eventually(limit, &format!("every node on {image}, rollout Complete"), || {
            let status = self.status();
            let images = self.pod_images()?;
            // Strict: the status names the revision every pod carries.
            let revisions = self.pod_revisions()?;
            let done = status["rollout"] == "Complete"
                && status["ready"] == "3/3"
                && status["currentRevision"] == status["updateRevision"]
                && images.len() == 3
                && images.iter().all(|(_, i)| i == image)
                && revisions.iter().all(|r| status["currentRevision"] == r.as_str());
            if done { Ok(status) } else { Err(format!("{status}; pods {images:?}")) }
        })
    }

    /// (pod, image) of every pod of the gateway not being deleted.
    pub fn pod_images(&self) -> Result<Vec<(String, String)>, String> {
        self.pod_images_of("edge")
    }

    /// The same for the gateway named `gateway`.
    pub fn pod_images_of(&self, gateway: &str) -> Result<Vec<(String, String)>, String> {
        let selector = format!("nonstop.dev/gateway={gateway}");
        let text = self.ns.kubectl(&["get", "pods", "-l", &selector, "-o", "json"])?;
        let pods: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        Ok(pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                let name = p["metadata"]["name"].as_str().unwrap_or("").to_string();
                (name, p["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string())
            })
            .collect())
    }

    pub fn pod_revisions(&self) -> Result<Vec<String>, String> {
        let jsonpath = r#"{range .items[*]}{.metadata.labels.nonstop\.dev/revision}{"\n"}{end}"#;
        let text = self.ns.kubectl(&[
            "get",
            "pods",
            "-l",
            "nonstop.dev/gateway=edge",
            "-o",
            &format!("jsonpath={jsonpath}"),
        ])?;
        Ok(text.lines().map(String::from).collect())
    }

    pub fn set_image(&self, image: &str) {
        let patch = format!(r#"{{"spec":{{"image":"{image}"}}}}"#);
        self.ns.kubectl(&["patch", "bgpgw", "edge", "--type=merge", "-p", &patch]).unwrap();
    }

    /// The router has every prefix from exactly `nodes`.
    pub fn wait_routes_from(&self, nodes: &[&str], limit: Duration) {
        let want: Vec<String> = nodes.iter().map(|n| uplink(n)).collect();
        eventually(limit, &format!("the router's routes via {want:?}"), || {
            let routes = self.router.routes()?;
            let ok = PREFIXES.iter().all(|p| routes.get(*p).is_some_and(|hops| *hops == want));
            if ok { Ok(()) } else { Err(format!("{routes:?}")) }
        });
    }

    /// The gateway's condition of type `kind`, if it has one.
    pub fn condition(&self, kind: &str) -> Option<Value> {
        let status = self.status();
        status["conditions"].as_array()?.iter().find(|c| c["type"] == kind).cloned()
    }

    /// Waits until the Ready condition's reason is `want`; its message.
    pub fn wait_ready_reason(&self, want: &str) -> String {
        eventually(Duration::from_secs(30), want, || match self.condition("Ready") {
            Some(c) if c["reason"] == want => Ok(c["message"].as_str().unwrap_or("").to_string()),
            other => Err(format!("{other:?}")),
        })
    }

    /// Waits until at least one node runs `image` (a rollout under way).
    pub fn wait_first_node_on(&self, image: &str) {
        eventually(Duration::from_secs(60), &format!("the first node on {image}"), || {
            let images = self.pod_images()?;
            let on = images.iter().filter(|(_, i)| i == image).count();
            if on >= 1 { Ok(()) } else { Err(format!("{images:?}")) }
        });
    }

    pub fn events(&self) -> Value {
        let text = self.ns.kubectl(&["get", "events", "-o", "json"]).unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Done once its agents have ended their sessions: the pod objects
        // may outlive them by up to a minute (the kubelet's cleanup), and
        // nothing of them is left on the nodes the next test uses.
        let _ = self.ns.kubectl(&["delete", "bgpgw", "--all", "--wait=false"]);
        wait_speakers_gone(&self.router);
        for node in NODES {
            let _ = self.lab.kubectl(&["label", "node", node, "nonstop.dev/e2e-"]);
        }
    }
}

/// Waits until the router has no session up with nodes 1–3, from any of
/// their addresses (a test may peer from a second one, as the MD5 test
/// does): every agent there has decommissioned and let its port go, so
/// the next test's agents bind it at once.
fn wait_speakers_gone(router: &Router) {
    let subnets: Vec<String> = uplinks()
        .iter()
        .map(|u| u.rsplit_once('.').map_or_else(|| u.clone(), |(net, _)| format!("{net}.")))
        .collect();
    eventually(Duration::from_secs(90), "no session with nodes 1-3 at the router", || {
        let up: Vec<String> = router
            .sessions()?
            .into_iter()
            .filter(|s| s.established && subnets.iter().any(|net| s.neighbor.starts_with(net)))
            .map(|s| s.neighbor)
            .collect();
        if up.is_empty() { Ok(()) } else { Err(format!("still up: {up:?}")) }
    });
}

/// The replica holding the leader Lease.
pub fn leader(lab: &Lab) -> Result<String, String> {
    lab.operator_leader()
}

/// Rolls the image and checks the router saw nothing: no session down, no
/// UPDATE (announcement or withdrawal) from our nodes, every prefix via
/// every node at every poll.
pub fn hitless_roll(s: &Setup, image: &str) -> Value {
    let started = std::time::Instant::now();
    let before = Tally::of(&s.router, &uplinks());
    let watch = Watch::start(s.router.clone(), &PREFIXES, &uplinks(), NODES.len());
    s.set_image(image);
    let status = s.wait_complete(image, Duration::from_secs(120));
    let misses = watch.finish();
    assert!(
        misses.is_empty(),
        "routes missing at the router during the rollout to {image}: {misses:?}"
    );
    let seen = Tally::of(&s.router, &uplinks()).since(&before);
    assert!(seen.is_empty(), "the router saw during the rollout to {image}: {seen:?}");
    let pauses: Vec<String> = status["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| format!("{} {} ms", n["node"].as_str().unwrap_or(""), n["lastUpgrade"]["pauseMs"]))
        .collect();
    eprintln!(
        "rolled to {image} in {:.1} s; handoff pauses: {}",
        started.elapsed().as_secs_f64(),
        pauses.join(", ")
    );
    status
}

/// Where a test image made by `wrap_agent` keeps the real agent.
pub const REAL_AGENT: &str = "/usr/local/bin/nonstop-agent.real";

/// A test image `tag`: the v1 image with busybox and `script` in front of
/// the agent (which stays at `REAL_AGENT`).
pub fn wrap_agent(lab: &Lab, tag: &str, script: &str) -> String {
    let file = lab.dir().join("images").join(format!("{}.sh", tag.replace([':', '/'], "_")));
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, script).unwrap();
    lab.lab(&["image", "wrap", "nonstop-agent:v1", tag, file.to_str().unwrap()]).unwrap();
    tag.to_string()
}

/// The pid of the operator process whose POD_NAME is `pod`.
pub fn operator_pid(pod: &str) -> Option<i32> {
    let want = format!("POD_NAME={pod}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        if !String::from_utf8_lossy(&cmdline).starts_with("nonstop-operator") {
            let exe = std::fs::read_link(entry.path().join("exe")).ok()?;
            if !exe.ends_with("nonstop-operator") {
                return None;
            }
        }
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        environ.split(|b| *b == 0).any(|v| v == want.as_bytes()).then_some(pid)
    })
}
