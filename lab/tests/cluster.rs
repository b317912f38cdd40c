//! The lab as its users check it: real nodes Ready (kubelet, containerd),
//! pods scheduled onto a node and running inside its namespaces, probes,
//! logs and exec through the kubelet, graceful deletion, hostPath private to
//! each node, garbage collection, the CRDs and the API server's validation,
//! the router peering with a speaker in a node, and Helm's engine. Needs
//! root; brings the lab up (4 nodes, gobgpd) when it is not.

use std::time::{Duration, Instant};

use nonstop_lab::router::RouteEvent;
use nonstop_lab::testing::{Lab, eventually};

/// How long a deleted pod may take to be removed by its kubelet.
const REMOVED_WITHIN: Duration = Duration::from_secs(90);

fn lab() -> Lab {
    Lab::attach(env!("CARGO_BIN_EXE_lab"))
}

fn repo() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn three_nodes_are_ready_with_their_addresses() {
    let lab = lab();
    let out = eventually(Duration::from_secs(60), "3 Ready nodes", || {
        let out = lab.kubectl(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={range .items[*]}{.metadata.name} {.status.addresses[0].address} {.status.nodeInfo.containerRuntimeVersion} {.status.nodeInfo.kubeletVersion} {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}",
        ])?;
        let ready = out.lines().filter(|l| l.ends_with(" True")).count();
        if ready >= 3 { Ok(out) } else { Err(out) }
    });
    for i in 1..=3 {
        let want = format!("node-{i} 10.98.1.{i} containerd://1.6.20 v1.20.2 True");
        assert!(out.lines().any(|l| l.starts_with(&want)), "{want}: {out}");
    }
    // The kubelet keeps a Lease per node.
    let leases = lab.kubectl(&["-n", "kube-node-lease", "get", "leases", "-o", "name"]).unwrap();
    assert!(leases.contains("lease.coordination.k8s.io/node-1"), "{leases}");
}

/// A hostNetwork pod placed by kube-scheduler on node-2 runs in node-2's
/// network namespace (its addresses, not the host's), becomes Ready only
/// when its probe passes, logs through `lab logs` and `kubectl logs`, takes
/// `kubectl exec`, and on deletion gets SIGTERM and its grace period; one
/// that ignores SIGTERM is killed when the grace ends. What it did on the
/// way out is in a hostPath, which on node-2 is node-2's own.
#[test]
fn a_pod_runs_inside_its_node_and_stops_gracefully() {
    let lab = lab();
    let ns = lab.namespace("lab-pod");
    let out = format!("/run/nonstop/lab-pod-{}", ns.name);
    let pod = |name: &str, on_term: &str, grace: u32| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  hostNetwork: true
  nodeSelector: {{kubernetes.io/hostname: node-2}}
  terminationGracePeriodSeconds: {grace}
  volumes: [{{name: out, hostPath: {{path: {out}, type: DirectoryOrCreate}}}}]
  containers:
  - name: main
    image: lab/tools:1
    command: ["sh", "-c", "ip -4 -o addr show; echo node=$NODE ip=$IP; trap '{on_term}' TERM; (sleep 2; touch /tmp/ready) & while true; do sleep 0.1; done"]
    env:
    - {{name: NODE, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: IP, valueFrom: {{fieldRef: {{fieldPath: status.hostIP}}}}}}
    volumeMounts: [{{name: out, mountPath: /out}}]
    readinessProbe:
      exec: {{command: ["test", "-f", "/tmp/ready"]}}
      periodSeconds: 1
"#
        )
    };
    ns.apply(&pod(
        "polite",
        "echo got TERM >> /out/polite; sleep 1; echo bye >> /out/polite; exit 0",
        10,
    ))
    .unwrap();
    ns.apply(&pod("stubborn", "echo ignoring TERM >> /out/stubborn", 2)).unwrap();
    for name in ["polite", "stubborn"] {
        let running = eventually(Duration::from_secs(60), "the pod running", || {
            let phase = ns
                .get(&format!("pod/{name}"), "{.status.phase} {.spec.nodeName} {.status.hostIP}")?;
            if phase.starts_with("Running") { Ok(phase) } else { Err(phase) }
        });
        assert_eq!(running, "Running node-2 10.98.1.2");
        // Not Ready until the probe passes (the file appears after 2 s).
        eventually(Duration::from_secs(20), "Ready", || {
            let ready = ns
                .get(&format!("pod/{name}"), "{.status.conditions[?(@.type==\"Ready\")].status}")?;
            if ready == "True" { Ok(()) } else { Err(ready) }
        });
        let logs = lab.lab(&["logs", name, "-n", &ns.name]).unwrap();
        assert!(logs.contains("node=node-2 ip=10.98.1.2"), "{logs}");
        assert!(logs.contains("inet 10.98.1.2/16") && logs.contains("inet 10.99.2.2"), "{logs}");
        assert!(!logs.contains("10.98.0.1"), "the host's address is not the node's: {logs}");
        let kubectl_logs = ns.kubectl(&["logs", name]).unwrap();
        assert_eq!(kubectl_logs, logs, "kubectl logs, through the kubelet");
        let exec = ns.kubectl(&["exec", name, "--", "cat", "/proc/1/cmdline"]).unwrap();
        assert!(exec.starts_with("sh\0-c\0"), "kubectl exec: {exec:?}");
    }

    // A real kubelet removes the pod object some seconds after its
    // container ended (volumes cleaned up first): bounds, not exact times.
    // The upper bound only tells a kubelet that never finishes from a slow
    // one: at the end of a CI run on 2 busy cores it has taken 50 s.
    let t = Instant::now();
    ns.kubectl(&["delete", "pod", "polite", "--wait=true"]).unwrap();
    let polite = t.elapsed();
    assert!(polite >= Duration::from_secs(1) && polite < REMOVED_WITHIN, "{polite:?}");

    let t = Instant::now();
    ns.kubectl(&["delete", "pod", "stubborn", "--wait=true"]).unwrap();
    let stubborn = t.elapsed();
    assert!(
        stubborn >= Duration::from_secs(2),
        "SIGKILL only after the grace period: {stubborn:?}"
    );
    assert!(stubborn < REMOVED_WITHIN, "{stubborn:?}");

    // The hostPath is node-2's: there, and nowhere else.
    let read = |node: &str, file: &str| {
        lab.lab(&["node", "exec", node, "cat", &format!("{out}/{file}")]).unwrap_or_default()
    };
    assert_eq!(read("node-2", "polite"), "got TERM\nbye\n");
    assert_eq!(read("node-2", "stubborn"), "ignoring TERM\n");
    assert_eq!(read("node-1", "polite"), "", "node-1 sees node-2's hostPath");
    assert!(!std::path::Path::new(&out).exists(), "the host sees node-2's hostPath");
    let _ = lab.lab(&["node", "exec", "node-2", "rm", "-r", &out]);
}

/// Pods owned by another object go when it goes (kube-controller-manager's
/// garbage collector, then this kubelet's graceful stop).
#[test]
fn an_owned_pod_is_garbage_collected_with_its_owner() {
    let lab = lab();
    let ns = lab.namespace("lab-gc");
    ns.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owner}\ndata: {a: b}\n").unwrap();
    let uid = ns.get("configmap/owner", "{.metadata.uid}").unwrap();
    ns.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: owned
  ownerReferences: [{{apiVersion: v1, kind: ConfigMap, name: owner, uid: {uid}}}]
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: main, image: lab/tools:1, command: ["sh", "-c", "exec sleep 1000"]}}
"#
    ))
    .unwrap();
    eventually(Duration::from_secs(30), "the owned pod running", || {
        let phase = ns.get("pod/owned", "{.status.phase}")?;
        if phase == "Running" { Ok(()) } else { Err(phase) }
    });
    ns.kubectl(&["delete", "configmap", "owner"]).unwrap();
    eventually(Duration::from_secs(90), "the owned pod gone", || {
        match ns.kubectl(&["get", "pod", "owned"]) {
            Err(e) if e.contains("NotFound") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// The CRDs and the example apply; the API server refuses specs out of range
/// and names the field.
#[test]
fn the_crds_apply_and_bad_specs_are_refused_by_name() {
    let lab = lab();
    let crds = repo().join("crds");
    lab.kubectl(&["apply", "--validate=false", "-f", crds.to_str().unwrap()]).unwrap();
    eventually(Duration::from_secs(30), "the CRD established", || {
        lab.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/bgpgateways.nonstop.dev",
            "--timeout=5s",
        ])
    });
    let ns = lab.namespace("lab-crd");
    let example = std::fs::read_to_string(repo().join("examples/gateway.yaml")).unwrap();
    let example = example.replace("namespace: default", &format!("namespace: {}", ns.name));
    ns.apply(&example).unwrap();
    let bad_hold =
        example.replace("holdTime: 90", "holdTime: 70000").replace("name: edge", "name: bad-hold");
    let err = ns.apply(&bad_hold).unwrap_err();
    assert!(err.contains("spec.peers[0].holdTime") || err.contains("spec.peers.holdTime"), "{err}");
    let bad_strategy = example
        .replace("strategy: Handoff", "strategy: Bogus")
        .replace("name: edge", "name: bad-strategy");
    let err = ns.apply(&bad_strategy).unwrap_err();
    assert!(err.contains("spec.upgrade.strategy") && err.contains("Bogus"), "{err}");
}

/// A BGP speaker in a pod on node-4 (gobgpd from the tools image, standing
/// in for the agent;
/// the operator's end-to-end tests use nodes 1–3)
/// peers with the lab router; the test library sees the session, the route
/// with node-4 as next hop, and the events as data.
#[test]
fn the_router_peers_with_a_speaker_in_a_node() {
    let lab = lab();
    let ns = lab.namespace("lab-bgp");
    // Not a prefix the operator's end-to-end tests announce from nodes 1–3
    // (they may run at the same time).
    let prefix = "192.0.2.0/24";
    ns.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: speaker}}
data:
  gobgpd.toml: |
    [global.config]
      as = 65001
      router-id = "10.99.4.2"
      port = -1
    [[neighbors]]
      [neighbors.config]
        neighbor-address = "10.99.0.1"
        peer-as = 65000
      [neighbors.timers.config]
        connect-retry = 1
        hold-time = 9
        keepalive-interval = 3
---
apiVersion: v1
kind: Pod
metadata: {{name: speaker}}
spec:
  hostNetwork: true
  nodeSelector: {{kubernetes.io/hostname: node-4}}
  terminationGracePeriodSeconds: 5
  volumes: [{{name: config, configMap: {{name: speaker}}}}]
  containers:
  - name: gobgpd
    image: lab/tools:1
    command: ["sh", "-c", "gobgpd -f /etc/speaker/gobgpd.toml --api-hosts 127.0.0.1:50061 & until gobgp -p 50061 global rib -a ipv4 add {prefix}; do sleep 0.2; done; wait"]
    volumeMounts: [{{name: config, mountPath: /etc/speaker, readOnly: true}}]
"#
    ))
    .unwrap();
    let router = lab.router();
    let routes = eventually(Duration::from_secs(60), "the route at the router", || {
        let routes = router.routes()?;
        if routes.get(prefix).is_some_and(|hops| hops.contains(&"10.99.4.2".to_string())) {
            Ok(routes)
        } else {
            Err(format!("{routes:?}; sessions {:?}", router.sessions()))
        }
    });
    assert_eq!(routes[prefix], ["10.99.4.2"]);
    let sessions = router.sessions().unwrap();
    assert!(sessions.iter().any(|s| s.neighbor == "10.99.4.2" && s.established), "{sessions:?}");
    let announced = RouteEvent::Announced { prefix: prefix.into(), neighbor: "10.99.4.2".into() };
    eventually(Duration::from_secs(10), "the announcement among the events", || {
        let events = router.events();
        if events.contains(&announced) { Ok(()) } else { Err(format!("{events:?}")) }
    });
    ns.kubectl(&["delete", "pod", "speaker", "--wait=true"]).unwrap();
    eventually(Duration::from_secs(30), "the session down and the route gone", || {
        let events = router.events();
        let down =
            events.iter().any(|e| *e == RouteEvent::SessionDown { neighbor: "10.99.4.2".into() });
        let gone = !router.routes()?.contains_key(prefix);
        if down && gone { Ok(()) } else { Err(format!("{events:?}")) }
    });
}

/// Helm's engine through `lab helm`: install, upgrade with --set, template,
/// uninstall.
#[test]
fn helm_installs_upgrades_and_uninstalls_a_chart() {
    let lab = lab();
    let ns = lab.namespace("lab-helm");
    let chart = repo().join("lab/tests/chart");
    let chart = chart.to_str().unwrap();
    let rendered =
        lab.lab(&["helm", "template", "t", chart, "-n", &ns.name, "--set", "greeting=hi"]).unwrap();
    assert!(rendered.contains("greeting: hi"), "{rendered}");
    lab.lab(&["helm", "install", "t", chart, "-n", &ns.name]).unwrap();
    assert_eq!(ns.get("configmap/t-hello", "{.data.greeting}").unwrap(), "hello");
    lab.lab(&["helm", "upgrade", "t", chart, "-n", &ns.name, "--set", "greeting=bonjour"]).unwrap();
    assert_eq!(ns.get("configmap/t-hello", "{.data.greeting}").unwrap(), "bonjour");
    lab.lab(&["helm", "uninstall", "t", "-n", &ns.name]).unwrap();
    let err = ns.kubectl(&["get", "configmap", "t-hello"]).unwrap_err();
    assert!(err.contains("NotFound"), "{err}");
}

/// In-cluster access as in a real cluster: from a pod on the pod network,
/// kubectl finds the API through the `kubernetes` Service (kube-proxy) and the
/// ServiceAccount token, CA and namespace mounted where client libraries
/// look; RBAC decides what the pod's ServiceAccount may do.
#[test]
fn pods_reach_the_api_as_their_service_account_under_rbac() {
    let lab = lab();
    let ns = lab.namespace("lab-rbac");
    eventually(Duration::from_secs(30), "the default ServiceAccount's token", || {
        let secrets = ns.get("serviceaccount/default", "{.secrets[0].name}")?;
        if secrets.is_empty() { Err("no token yet".into()) } else { Ok(()) }
    });
    let pod = |name: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  nodeSelector: {{kubernetes.io/hostname: node-3}}
  containers:
  - name: main
    image: lab/tools:1
    command: ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/namespace; echo; kubectl get configmaps -o name 2>&1; echo exit=$?"]
"#
        )
    };
    let output = |name: &str| {
        eventually(Duration::from_secs(60), "the pod to finish", || {
            let phase = ns.get(&format!("pod/{name}"), "{.status.phase}")?;
            if phase == "Succeeded" || phase == "Failed" { Ok(()) } else { Err(phase) }
        });
        lab.lab(&["logs", name, "-n", &ns.name]).unwrap()
    };
    ns.apply(&pod("denied")).unwrap();
    let denied = output("denied");
    assert!(denied.starts_with(&ns.name), "the namespace file: {denied}");
    assert!(
        denied.contains(&format!("system:serviceaccount:{}:default", ns.name))
            && denied.contains("forbidden"),
        "{denied}"
    );
    ns.apply(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: read}\nrules:\n- {apiGroups: [\"\"], resources: [configmaps], verbs: [list]}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {name: read}\nroleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read}\n\
         subjects: [{kind: ServiceAccount, name: default}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: visible}\n",
    )
    .unwrap();
    ns.apply(&pod("allowed")).unwrap();
    let allowed = output("allowed");
    assert!(allowed.contains("configmap/visible") && allowed.contains("exit=0"), "{allowed}");
}
