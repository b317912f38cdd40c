//! The image as users get it: the repository's Dockerfile built by buildah
//! (`lab image build`), read back from a node's containerd (its config:
//! user, entrypoint, labels) and run there by the real kubelet under runc:
//! both binaries answer `--version`, and the agent runs as the image's
//! non-root user with no capabilities left.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nonstop_lab::testing::{Lab, eventually, release_binaries};
use serde_json::{Value, json};

const TAG: &str = "ghcr.io/nonstop-dev/nonstop:image-test";
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn lab() -> Lab {
    let bin = Path::new(env!("CARGO_BIN_EXE_nonstop-operator")).parent().unwrap();
    Lab::attach(bin.join("lab").to_str().unwrap())
}

/// A blob of node-1's containerd content store, as JSON.
fn blob(lab: &Lab, digest: &str) -> Value {
    let text = lab.lab(&["node", "exec", "node-1", "ctr", "content", "get", digest]).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{digest}: {e}: {text}"))
}

/// The image's OCI config as containerd on node-1 holds it.
fn config_in_containerd(lab: &Lab, name: &str) -> Value {
    let list = lab.lab(&["node", "exec", "node-1", "ctr", "images", "ls"]).unwrap();
    let line = list
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in node-1's containerd: {list}"));
    let digest = line.split_whitespace().find(|w| w.starts_with("sha256:")).unwrap();
    let mut manifest = blob(lab, digest);
    if let Some(first) = manifest["manifests"].as_array().and_then(|m| m.first()) {
        manifest = blob(lab, first["digest"].as_str().unwrap());
    }
    blob(lab, manifest["config"]["digest"].as_str().unwrap())
}

fn git_head() -> String {
    let out = std::process::Command::new("git")
        .current_dir(root())
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn the_image_holds_both_binaries_as_nonroot_with_the_operator_as_entrypoint() {
    let lab = lab();
    let release = release_binaries(&root()).unwrap();
    lab.build_images(&release, &[TAG]).unwrap();

    let config = config_in_containerd(&lab, TAG);
    let c = &config["config"];
    assert_eq!(c["User"], "nonroot", "{config}");
    assert_eq!(c["Entrypoint"], json!(["/usr/local/bin/nonstop-operator"]), "{config}");
    let labels = &c["Labels"];
    assert_eq!(labels["org.opencontainers.image.source"], "https://github.com/nonstop-dev/nonstop");
    assert_eq!(labels["org.opencontainers.image.version"], VERSION, "{labels}");
    assert_eq!(labels["org.opencontainers.image.revision"], git_head().as_str(), "{labels}");
    assert_eq!(labels["org.opencontainers.image.licenses"], "Apache-2.0");
    let chart = std::fs::read_to_string(root().join("charts/nonstop/Chart.yaml")).unwrap();
    assert!(chart.contains(&format!("appVersion: \"{VERSION}\"")), "the chart's tag: {chart}");

    // Run by the kubelet, confined as the chart confines the operator.
    let ns = lab.namespace("image");
    let pod = |name: &str, command: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: node-4}}
  securityContext: {{runAsNonRoot: true, runAsUser: 65532, seccompProfile: {{type: RuntimeDefault}}}}
  containers:
  - name: main
    image: {TAG}
    imagePullPolicy: Never
    {command}
    securityContext: {{readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, capabilities: {{drop: [ALL]}}}}
"#
        )
    };
    ns.apply(&pod("operator-version", r#"args: ["--version"]"#)).unwrap();
    ns.apply(&pod("agent-version", r#"command: ["nonstop-agent", "--version"]"#)).unwrap();
    for (name, want) in [
        ("operator-version", format!("nonstop-operator {VERSION}")),
        ("agent-version", format!("nonstop-agent {VERSION}")),
    ] {
        eventually(Duration::from_secs(60), &format!("{name} to finish"), || {
            let phase = ns.get(&format!("pod/{name}"), "{.status.phase}")?;
            if phase == "Succeeded" { Ok(()) } else { Err(phase) }
        });
        assert_eq!(ns.kubectl(&["logs", name]).unwrap().trim(), want);
    }
}

/// Without a security context of its own the container runs as the image
/// says: user nonroot (65532), and a non-root user keeps no capabilities.
/// The agent (on an unprivileged port) serves `nonstop-agent status` to
/// `kubectl exec`.
#[test]
fn the_image_runs_as_its_user_under_containerd() {
    let lab = lab();
    let release = release_binaries(&root()).unwrap();
    lab.build_images(&release, &[TAG]).unwrap();
    let ns = lab.namespace("image-user");
    let marker = format!("{}-agent", ns.name);
    ns.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: agent}}
data:
  agent.yaml: |
    asn: 65001
    routerId: 192.0.2.1
    listen: "0.0.0.0:1179"
    peers: [{{address: 192.0.2.2, asn: 65000}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: agent}}
spec:
  nodeSelector: {{kubernetes.io/hostname: node-4}}
  terminationGracePeriodSeconds: 2
  volumes: [{{name: config, configMap: {{name: agent}}}}]
  containers:
  - name: agent
    image: {TAG}
    imagePullPolicy: Never
    command: ["nonstop-agent", "run", "--config", "/etc/agent/agent.yaml"]
    env:
    - {{name: NONSTOP_STATE_DIR, value: /tmp/state}}
    - {{name: NONSTOP_POD, value: {marker}}}
    volumeMounts: [{{name: config, mountPath: /etc/agent}}]
"#
    ))
    .unwrap();
    let status =
        eventually(Duration::from_secs(60), "nonstop-agent status by kubectl exec", || {
            let text = ns.kubectl(&["exec", "agent", "--", "nonstop-agent", "status"])?;
            serde_json::from_str::<Value>(&text).map_err(|e| format!("{e}: {text}"))
        });
    assert_eq!(status["pod"], marker.as_str(), "{status}");
    // The process on the host, found by its pod's name in its environment.
    let want = format!("NONSTOP_POD={marker}");
    let pid = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read(e.path().join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == want.as_bytes()))
        })
        .map(|e| e.path())
        .expect("the agent's process");
    let proc_status = std::fs::read_to_string(pid.join("status")).unwrap();
    let field = |name: &str| {
        proc_status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid"), "65532 65532 65532 65532", "{proc_status}");
    assert_eq!(field("Gid"), "65532 65532 65532 65532", "{proc_status}");
    assert_eq!(field("CapEff"), "0000000000000000", "{proc_status}");
}
