use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeSpec, NodeStatus, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::operator::observe::pod_view;
use crate::operator::plan::Phase;

fn node(labels: &[(&str, &str)]) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some("n1".into()),
            labels: Some(labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
            ..Default::default()
        },
        spec: Some(NodeSpec::default()),
        status: Some(NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "Ready".into(),
                status: "True".into(),
                ..Default::default()
            }]),
            addresses: Some(vec![NodeAddress {
                type_: "InternalIP".into(),
                address: "10.99.0.11".into(),
            }]),
            ..Default::default()
        }),
    }
}

#[test]
fn only_what_the_operator_acts_on_is_a_node_change() {
    type Edit = fn(&mut Node);
    fn annotate(n: &mut Node, key: &str) {
        n.metadata.annotations.get_or_insert_default().insert(key.into(), "10.99.0.2".into());
    }
    let cases: [(&str, Edit, bool); 11] = [
        ("nothing", |_| {}, false),
        // Another controller's annotation: nothing a gateway reads.
        ("foreign annotation", |n| annotate(n, "example.com/owner"), false),
        ("annotation a peer names", |n| annotate(n, "topology.example/tor"), true),
        ("nonstop annotation", |n| annotate(n, "nonstop.dev/router-id"), true),
        (
            "heartbeat",
            |n| {
                let c = &mut n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0];
                c.last_heartbeat_time = Some(Time(Timestamp::now()));
            },
            false,
        ),
        ("resource version", |n| n.metadata.resource_version = Some("7".into()), false),
        (
            "label",
            |n| {
                n.metadata
                    .labels
                    .as_mut()
                    .unwrap()
                    .insert("rack".into(), "b".into())
                    .map_or((), |_| ())
            },
            true,
        ),
        ("cordon", |n| n.spec.as_mut().unwrap().unschedulable = Some(true), true),
        (
            "taint",
            |n| {
                n.spec.as_mut().unwrap().taints = Some(vec![Taint {
                    key: "k".into(),
                    effect: "NoSchedule".into(),
                    ..Default::default()
                }])
            },
            true,
        ),
        (
            "not ready",
            |n| {
                n.status.as_mut().unwrap().conditions.as_mut().unwrap()[0].status = "Unknown".into()
            },
            true,
        ),
        (
            "address",
            |n| {
                n.status.as_mut().unwrap().addresses.as_mut().unwrap()[0].address =
                    "10.99.0.12".into()
            },
            true,
        ),
    ];
    let named: BTreeSet<String> = ["topology.example/tor".to_string()].into();
    for (what, edit, changed) in cases {
        let mut changes = NodeChanges::default();
        let mut n = node(&[("gw", "edge")]);
        assert!(changes.applied(&n, &named), "{what}: a node seen first is a change");
        edit(&mut n);
        assert_eq!(changes.applied(&n, &named), changed, "{what}");
        assert!(changes.deleted(&n), "{what}: a deleted node is a change");
        assert!(changes.applied(&n, &named), "{what}: seen again after its deletion");
    }
}

#[test]
fn a_slim_node_keeps_what_the_operator_reads() {
    let mut n = node(&[("gw", "edge")]);
    n.status.as_mut().unwrap().images = Some(vec![Default::default()]);
    n.metadata.managed_fields = Some(vec![Default::default()]);
    let before = NodeFingerprint::of(&n, &BTreeSet::new());
    slim_node(&mut n);
    assert_eq!(n.status.as_ref().unwrap().images, None);
    assert_eq!(n.metadata.managed_fields, None);
    assert_eq!(NodeFingerprint::of(&n, &BTreeSet::new()), before);
}

#[test]
fn a_slim_pod_keeps_what_the_operator_reads() {
    let mut p: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "edge-n1-r1", "namespace": "ns", "uid": "u1",
            "labels": {"nonstop.dev/gateway": "edge", "nonstop.dev/revision": "r1"},
            "ownerReferences": [{"apiVersion": "nonstop.dev/v1alpha1", "kind": "BgpGateway",
                "name": "edge", "uid": "g1", "controller": true}],
            "managedFields": [{"manager": "nonstop-operator", "operation": "Apply"}],
            "creationTimestamp": "2026-12-01T00:00:00Z"
        },
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "agent", "image": "nonstop:1", "args": ["run"]}],
            "volumes": [{"name": "state", "hostPath": {"path": "/var/lib/nonstop"}}]
        },
        "status": {
            "phase": "Failed", "hostIP": "10.0.0.1", "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "False"}],
            "containerStatuses": [{"name": "agent", "image": "nonstop:1", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 2, "message": "error: bad config"}}}]
        }
    }))
    .unwrap();
    let before = pod_view(&p).expect("a gateway pod");
    slim_pod(&mut p);
    assert_eq!(pod_view(&p), Some(before.clone()));
    assert_eq!(before.failure.as_deref(), Some("agent exited with code 2: error: bad config"));
    assert_eq!(p.metadata.managed_fields, None);
    assert_eq!(p.metadata.owner_references.as_ref().map(Vec::len), Some(1), "its owner reconciles");
    let spec = p.spec.as_ref().unwrap();
    assert!(spec.containers.is_empty() && spec.volumes.is_none());
    assert_eq!(p.status.as_ref().unwrap().host_ip, None);
}

fn pod(name: &str, uid: &str, deleting: bool) -> PodView {
    PodView {
        name: name.into(),
        uid: Some(uid.into()),
        node: "n1".into(),
        revision: "r1".into(),
        created: Timestamp::UNIX_EPOCH,
        deleting,
        phase: Phase::Running,
        ready: true,
        failure: None,
        stopped: false,
        node_labels: None,
        node_addresses: None,
    }
}

#[test]
fn a_reconcile_waits_until_the_cache_shows_its_own_writes() {
    let t0 = Instant::now();
    let soon = t0 + Duration::from_secs(1);
    let late = t0 + EXPECTATION_TIMEOUT + Duration::from_secs(1);
    // (created, deleted uid, cached pods, when, met)
    type Case<'a> = (Option<&'a str>, Option<&'a str>, Vec<PodView>, Instant, bool);
    let cases: Vec<Case> = vec![
        (None, None, vec![], soon, true),
        (Some("new"), None, vec![], soon, false),
        (Some("new"), None, vec![pod("new", "u2", false)], soon, true),
        (None, Some("u1"), vec![pod("old", "u1", false)], soon, false),
        (None, Some("u1"), vec![pod("old", "u1", true)], soon, true),
        (None, Some("u1"), vec![], soon, true),
        // A namesake with another uid is not the deleted pod.
        (None, Some("u1"), vec![pod("old", "u9", false)], soon, true),
        (
            Some("new"),
            Some("u1"),
            vec![pod("new", "u2", false), pod("old", "u1", false)],
            soon,
            false,
        ),
        (Some("new"), None, vec![], late, true),
    ];
    for (i, (created, deleted, pods, when, met)) in cases.into_iter().enumerate() {
        let expect = Expectations::default();
        if let Some(name) = created {
            expect.created("ns/edge", name);
        }
        if let Some(uid) = deleted {
            expect.deleted("ns/edge", uid);
        }
        assert_eq!(expect.met("ns/edge", &pods, when), met, "case {i}");
        assert!(expect.met("ns/other", &[], when), "case {i}: another gateway waits for nothing");
        if met {
            assert!(expect.met("ns/edge", &[], when), "case {i}: once met, forgotten");
        }
    }
}

#[test]
fn the_cached_gateway_serves_only_at_the_version_last_seen() {
    let versions = Versions::default();
    assert!(!versions.current("ns/edge", Some("5")), "never seen: read it");
    versions.saw("ns/edge", Some("5"));
    assert!(versions.current("ns/edge", Some("5")));
    assert!(!versions.current("ns/edge", Some("4")), "the cache lags our last write");
    assert!(!versions.current("ns/edge", None));
    versions.saw("ns/edge", None);
    assert!(!versions.current("ns/edge", Some("5")), "gone: read it again");
}

fn gateway(name: &str, selector: &str) -> Arc<BgpGateway> {
    let yaml = format!(
        "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGateway\nmetadata: {{name: {name}, namespace: ns}}\n\
         spec:\n  image: i\n  asn: 65001\n  nodeSelector: {{{selector}}}\n  \
         peers: [{{address: 10.99.0.1, asn: 65000}}]\n"
    );
    Arc::new(serde_yaml_ng::from_str(&yaml).unwrap())
}

fn gateway_pod(gateway: &str, namespace: &str, node: &str) -> Arc<Pod> {
    let labels = BTreeMap::from([
        (GATEWAY_LABEL.to_string(), gateway.to_string()),
        (crate::operator::render::REVISION_LABEL.to_string(), "r1".to_string()),
    ]);
    Arc::new(Pod {
        metadata: ObjectMeta {
            name: Some(format!("{gateway}-{node}")),
            namespace: Some(namespace.into()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(k8s_openapi::api::core::v1::PodSpec {
            node_name: Some(node.into()),
            ..Default::default()
        }),
        status: None,
    })
}

#[test]
fn a_node_change_wakes_only_the_gateways_it_concerns() {
    let gateways = vec![
        gateway("edge", "rack: a"),
        gateway("core", "rack: b"),
        gateway("all", ""),
        gateway("left", "rack: c"),
    ];
    // "left" still has a pod on n1 though n1 no longer matches it.
    let pods = vec![gateway_pod("left", "ns", "n1"), gateway_pod("core", "other-ns", "n1")];
    let woken: Vec<String> =
        concerned(&node(&[("rack", "a")]), &gateways, &pods).into_iter().map(|r| r.name).collect();
    assert_eq!(woken, ["edge", "all", "left"]);
}

#[test]
fn a_settled_nodes_agent_is_asked_again_only_when_its_pods_change_or_in_a_while() {
    let settled = AgentView {
        pod: Some("p1".into()),
        active: true,
        established: 1,
        all_advertised: true,
        ..Default::default()
    };
    let t0 = Instant::now();
    let one = pod("p1", "u1", false);
    let two = pod("p2", "u2", false);
    let mut unready = one.clone();
    unready.ready = false;
    let short = AgentView { established: 0, ..settled.clone() };
    let other_pod = AgentView { pod: Some("p0".into()), ..settled.clone() };
    // (answer recorded, pods now, when, reused)
    type Case = (Option<AgentView>, Vec<PodView>, Instant, bool);
    let cases: Vec<Case> = vec![
        (Some(settled.clone()), vec![one.clone()], t0, true),
        (Some(settled.clone()), vec![one.clone()], t0 + AGENT_REFRESH, false),
        (Some(settled.clone()), vec![unready], t0, false),
        (Some(settled.clone()), vec![one.clone(), two], t0, false),
        (Some(short), vec![one.clone()], t0, false),
        (Some(other_pod), vec![one.clone()], t0, false),
        (None, vec![one.clone()], t0, false),
    ];
    for (i, (view, now_pods, when, reused)) in cases.into_iter().enumerate() {
        let answers = AgentAnswers::default();
        answers.record("ns/edge", "n1", &[&one], view.clone(), t0);
        let pods: Vec<&PodView> = now_pods.iter().collect();
        assert_eq!(answers.reuse("ns/edge", "n1", &pods, 1, when).is_some(), reused, "case {i}");
        assert!(answers.reuse("ns/edge", "n2", &pods, 1, when).is_none(), "case {i}: never asked");
    }
}

#[tokio::test]
async fn a_reconcile_plans_only_from_caches_that_have_listed_everything() {
    use kube::runtime::{reflector, watcher};
    let (nodes, mut node_writer) = reflector::store::<Node>();
    let (pods, mut pod_writer) = reflector::store::<Pod>();
    let (gateways, mut gateway_writer) = reflector::store::<crate::api::BgpGateway>();
    let caches = crate::operator::observe::Caches { nodes, pods, gateways };
    let wait = Duration::from_millis(50);
    assert!(!caches.synced(wait).await, "nothing listed yet");
    // Pods listed, nodes not: planning now would decommission every node.
    pod_writer.apply_watcher_event(&watcher::Event::Init);
    pod_writer.apply_watcher_event(&watcher::Event::InitDone);
    assert!(!caches.synced(wait).await, "the nodes are not listed yet");
    node_writer.apply_watcher_event(&watcher::Event::Init);
    node_writer.apply_watcher_event(&watcher::Event::InitApply(node(&[("gw", "edge")])));
    node_writer.apply_watcher_event(&watcher::Event::InitDone);
    assert!(!caches.synced(wait).await, "the gateways are not listed yet");
    gateway_writer.apply_watcher_event(&watcher::Event::Init);
    gateway_writer.apply_watcher_event(&watcher::Event::InitDone);
    assert!(caches.synced(wait).await);
}
