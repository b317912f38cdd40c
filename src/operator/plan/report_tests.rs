//! The status a plan reports, situation by situation: the summary
//! `kubectl get` prints, the Ready condition's reason and message, and
//! each node's entry.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use super::tests::{NEW, OLD, actions, agent, condition, delete, gateway, pod, run, serving};
use super::{IDLE, Observed};

#[test]
fn status_tells_the_state_at_a_glance() {
    let gw = gateway("Handoff", "");
    let mut observed = serving(&["n1", "n2"]);
    let plan = run(&gw, OLD, &observed, 0);
    let s = &plan.status;
    assert_eq!(
        (s.ready.as_deref(), s.sessions.as_deref(), s.rollout.as_deref()),
        (Some("2/2"), Some("2/2"), Some("Complete"))
    );
    assert_eq!(s.current_revision.as_deref(), Some(OLD));
    assert_eq!(s.image.as_deref(), Some("nonstop-agent:v2"), "the image being rolled to");
    assert_eq!(condition(&plan, "Ready").0, "True");
    assert_eq!(plan.requeue, IDLE);

    observed.agents.get_mut("n2").unwrap().established = 0;
    let mut gw = gw;
    gw.status = Some(plan.status.clone());
    let plan = run(&gw, OLD, &observed, 5);
    let (status, reason, message) = condition(&plan, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NodesNotReady"));
    assert!(message.contains("n2: 0/1 sessions Established"), "{message}");
    let before: &Condition =
        gw.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == "Progressing").unwrap();
    let after = plan.status.conditions.iter().find(|c| c.type_ == "Progressing").unwrap();
    assert_eq!(
        before.last_transition_time, after.last_transition_time,
        "unchanged conditions keep their time"
    );
}

/// `kubectl describe` answers "which session is down and why" and shows
/// each session: the node's entry lists them with their state, routes and
/// the agent's last error, the Ready message names the one down, and the
/// list stays bounded over many nodes, sessions down first.
#[test]
fn every_session_is_listed_down_ones_first_and_the_list_is_bounded() {
    use crate::api::PeerState;
    use crate::operator::plan::report::MAX_PEERS;
    let gw = gateway("Handoff", "");
    let down = |peer: &str| PeerState {
        peer: peer.into(),
        state: "Active".into(),
        last_error: Some("NOTIFICATION received: Cease/Administrative Reset".into()),
        ..Default::default()
    };
    let up = |peer: &str| PeerState {
        peer: peer.into(),
        state: "Established".into(),
        routes_received: 10,
        routes_advertised: 2,
        ..Default::default()
    };
    let mut observed = serving(&["n1", "n2"]);
    observed.agents.get_mut("n1").unwrap().peers = vec![up("10.99.0.1")];
    let n2 = observed.agents.get_mut("n2").unwrap();
    n2.established = 0;
    n2.peers = vec![down("10.99.0.1")];
    let plan = run(&gw, OLD, &observed, 0);
    let nodes = &plan.status.nodes;
    assert_eq!(nodes[0].peers, vec![up("10.99.0.1")], "n1's session, up");
    assert_eq!(nodes[1].peers, vec![down("10.99.0.1")]);
    let message = condition(&plan, "Ready").2;
    assert!(
        message.contains(
            "n2: 0/1 sessions Established (10.99.0.1 Active: NOTIFICATION received: Cease/Administrative Reset)"
        ),
        "{message}"
    );

    // 100 nodes with 2 sessions down and 4 up each: every session down is
    // listed (200), the ones up fill the rest of the bound from the first
    // nodes, and every node still counts its sessions.
    let names: Vec<String> = (0..100).map(|i| format!("n{i:03}")).collect();
    let mut observed = serving(&names.iter().map(String::as_str).collect::<Vec<_>>());
    for agent in observed.agents.values_mut() {
        agent.established = 4;
        agent.peers = (1..=2).map(|i| down(&format!("10.99.0.{i}"))).collect();
        agent.peers.extend((3..=6).map(|i| up(&format!("10.99.0.{i}"))));
    }
    let plan = run(&gw, OLD, &observed, 0);
    let nodes = &plan.status.nodes;
    let listed: usize = nodes.iter().map(|n| n.peers.len()).sum();
    assert_eq!(listed, MAX_PEERS);
    let downs = nodes.iter().flat_map(|n| &n.peers).filter(|p| !p.is_established()).count();
    assert_eq!(downs, 200, "no session down is left out");
    let lengths: Vec<usize> = nodes.iter().map(|n| n.peers.len()).collect();
    assert_eq!((lengths[0], lengths[13], lengths[14], lengths[99]), (6, 6, 2, 2));
    assert!(nodes.iter().all(|n| n.sessions.established == 4));
}

/// A node that should dial a peer at the address its annotation holds,
/// and cannot (the annotation is missing or not an address), is not Ready,
/// and the Ready message says which node, which peer and what to do, for
/// as long as the annotation stays broken. Its upgrade is not held for it:
/// no agent could dial that peer.
#[test]
fn a_node_without_its_peers_address_is_not_ready_and_says_why_but_is_upgraded() {
    const TOR: &str = "example.com/tor";
    let mut gw = gateway("Handoff", "");
    gw.spec.peers = vec![
        serde_json::from_value(
            serde_json::json!({"addressFrom": {"nodeAnnotation": TOR}, "asn": 65000}),
        )
        .unwrap(),
    ];
    let mut observed = serving(&["n1", "n2", "n3"]);
    let annotate = |observed: &mut Observed, node: usize, value: Option<&str>| {
        let annotations = &mut observed.nodes[node].annotations;
        match value {
            Some(v) => annotations.insert(TOR.into(), v.into()),
            None => annotations.remove(TOR),
        };
    };
    annotate(&mut observed, 0, Some("10.99.0.1"));
    annotate(&mut observed, 1, Some("rack-b"));
    annotate(&mut observed, 2, None);
    for n in ["n2", "n3"] {
        observed.agents.get_mut(n).unwrap().established = 0;
    }
    let plan = run(&gw, OLD, &observed, 0);
    let s = &plan.status;
    assert_eq!((s.ready.as_deref(), s.sessions.as_deref()), (Some("1/3"), Some("1/1")));
    let (status, reason, message) = condition(&plan, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NodesNotReady"));
    for said in [
        r#"n2: peers[0] has no address there: annotation example.com/tor="rack-b": "rack-b" is not an IP address; annotate the node"#,
        "n3: peers[0] has no address there: the node has no annotation example.com/tor; annotate",
    ] {
        assert!(message.contains(said), "{said:?} not in {message:?}");
    }
    assert!(!message.contains("n1"), "{message}");

    // An image bump: n2's new agent, with nothing to dial, takes over and
    // the old pod goes, as on any node.
    let mut bumped = observed.clone();
    bumped.pods.retain(|p| p.node == "n2");
    bumped.nodes.retain(|n| n.name == "n2");
    bumped.agents.retain(|n, _| n == "n2");
    bumped.pods.push(pod("n2", NEW, 10));
    let mut new = agent(bumped.pods.last().unwrap());
    new.established = 0;
    bumped.agents.insert("n2".into(), new);
    let plan = run(&gw, NEW, &bumped, 20);
    assert_eq!(actions(&plan), [delete("n2", OLD)]);

    // Fixed: Ready again.
    annotate(&mut observed, 1, Some("10.99.0.2"));
    annotate(&mut observed, 2, Some("10.99.0.2, 10.99.0.3"));
    observed.agents.get_mut("n2").unwrap().established = 1;
    observed.agents.get_mut("n3").unwrap().established = 2;
    let plan = run(&gw, OLD, &observed, 30);
    assert_eq!(plan.status.sessions.as_deref(), Some("4/4"));
    assert_eq!(condition(&plan, "Ready").0, "True", "{:?}", condition(&plan, "Ready"));
}

/// A peer at each node's default gateway counts one session per node (the
/// operator cannot see the node's routes); a node that runs none says why,
/// in its agent's words.
#[test]
fn a_node_without_a_default_route_says_so_in_ready() {
    let mut gw = gateway("Handoff", "");
    gw.spec.peers = vec![
        serde_json::from_value(
            serde_json::json!({"addressFrom": {"defaultGateway": {"family": "ipv4"}}, "asn": 65000}),
        )
        .unwrap(),
    ];
    let mut observed = serving(&["n1", "n2"]);
    let n2 = observed.agents.get_mut("n2").unwrap();
    n2.established = 0;
    n2.not_run =
        Some("peers[0] is not run on this node: the node has no IPv4 default route".into());
    let plan = run(&gw, OLD, &observed, 0);
    assert_eq!(plan.status.sessions.as_deref(), Some("1/2"));
    let (status, reason, message) = condition(&plan, "Ready");
    assert_eq!((status.as_str(), reason.as_str()), ("False", "NodesNotReady"));
    let said = "n2: 0/1 sessions Established (peers[0] is not run on this node: the node has no IPv4 default route)";
    assert!(message.contains(said), "{message}");
}
