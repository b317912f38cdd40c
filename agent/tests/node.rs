//! What the agent learns of its node from the operator, watched at real
//! routers (gobgpd, BIRD).
//!
//! Peers chosen by the node's labels (`peers[].nodeSelector`): the
//! top-of-rack case, one peer per rack router.
//!
//! - given its node's labels, the agent runs only the peers whose selector
//!   the node matches (status lists no other);
//! - when the labels file changes (the operator rewrote the node's labels),
//!   the agent follows within seconds: the router it no longer peers with
//!   sees our routes with GRACEFUL_SHUTDOWN, then a Cease it may not keep
//!   them stale after (a Hard Reset under the N-bit: that router runs
//!   Graceful Restart with it, and LLGR), and the new rack's peer starts —
//!   even when the agent hands over to a successor during that drain (the
//!   retired agent finishes it before it exits);
//! - a selector without a labels file, and a labels file that is not JSON,
//!   are refused with the peer and the file named.
//!
//! Peers addressed by the node's annotations (`peers[].addressFrom`): one
//! peer in the config, dialled at the address the node's annotation gives
//! (each node's own router); a changed annotation moves the session, a
//! removed one lets it go for good; without the annotations file the
//! config is refused, naming the flag.
//!
//! Peers at the node's default gateway (`peers[].addressFrom.defaultGateway`):
//! dialled at the next hop of the node's default route, followed when the
//! route changes or goes.
//!
//! The node's own source address (`--local-address`, from its
//! `nonstop.dev/local-address` annotation): sessions of peers that set no
//! `localAddress` come from it, and a router that knows the node only by
//! that address takes them.

mod support;

use std::fs;
use std::process::Command;
use std::time::Duration;

use support::routers::{AGENT_AS, Gobgp, GrSetup, ROUTER_AS, Router, RouterSetup, spawn_bird};
use support::{AGENT, Agent, Link, eventually};

/// An address on the router's side where no router answers: rack b's
/// top-of-rack, absent in this test (its session never comes up).
const RACK_B_ROUTER: &str = "10.77.9.1";
const PREFIX: &str = "198.51.100.0/24";
const GRACEFUL_SHUTDOWN: &str = "65535:0";
/// Long enough for a handoff to happen inside a drain.
const DRAIN_SECONDS: u64 = 6;

fn config(link: &Link) -> String {
    format!(
        "asn: {AGENT_AS}\nrouterId: {a}\npeers:\n\
         - address: {b}\n  asn: {ROUTER_AS}\n  holdTime: 9\n  keepaliveTime: 3\n  connectRetryTime: 1\n  \
         families: [ipv4-unicast]\n  nodeSelector: {{rack: a}}\n\
         - address: {RACK_B_ROUTER}\n  asn: {ROUTER_AS}\n  connectRetryTime: 1\n  \
         families: [ipv4-unicast]\n  nodeSelector: {{rack: b, tier: edge}}\n\
         announce:\n- prefix: {PREFIX}\nshutdown: {{drainSeconds: {DRAIN_SECONDS}}}\n",
        a = link.a_v4,
        b = link.b_v4,
    )
}

fn peer_addresses(agent: &Agent) -> Result<Vec<String>, String> {
    let status = agent.status()?;
    let peers = status["peers"].as_array().ok_or_else(|| format!("no peers in {status}"))?;
    Ok(peers.iter().map(|p| p["address"].as_str().unwrap_or_default().to_string()).collect())
}

#[test]
fn an_agent_peers_with_its_racks_router_and_follows_its_labels() {
    let link = Link::new("nodepeers");
    let router = gr_router(&link);
    let labels = link.dir.join("node-labels");
    fs::write(&labels, r#"{"rack":"a","kubernetes.io/hostname":"node-1"}"#).unwrap();
    let mut agent = Agent::start_with(
        &link.a,
        &link.dir,
        &config(&link),
        &["--node-labels-file", labels.to_str().unwrap()],
    );
    agent.wait_established(&link.b_v4);
    assert_eq!(peer_addresses(&agent).unwrap(), vec![link.b_v4.to_string()]);
    router.session().expect("rack a's router has its session");

    eventually(Duration::from_secs(10), "rack a's router to have our prefix", || {
        let learnt = router.learnt(false)?;
        if learnt.contains_key(PREFIX) { Ok(()) } else { Err(format!("{learnt:?}")) }
    });

    // The node moves to rack b (on the edge tier): rack a's router is
    // drained and let go, rack b's is dialled.
    fs::write(&labels, r#"{"rack":"b","tier":"edge"}"#).unwrap();
    eventually(Duration::from_secs(20), "the agent to choose rack b's peer", || {
        let peers = peer_addresses(&agent)?;
        if peers == [RACK_B_ROUTER] { Ok(()) } else { Err(format!("peers {peers:?}")) }
    });
    let drain_began = std::time::Instant::now();
    eventually(Duration::from_secs(5), "GRACEFUL_SHUTDOWN at rack a's router", || {
        let learnt = router.learnt(false)?;
        match learnt.get(PREFIX) {
            Some(r) if r.communities.iter().any(|c| c == GRACEFUL_SHUTDOWN) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    // An upgrade in the middle of the drain: the successor runs rack b's
    // peer; the retired agent ends rack a's session before it exits.
    let path = labels.to_str().unwrap();
    let successor = Agent::successor(
        &link.a,
        &link.dir,
        &config(&link),
        &[("NONSTOP_NODE_LABELS_FILE", path)],
        "successor.log",
    );
    eventually(Duration::from_secs(30), "the successor to take over", || {
        let status = successor.status()?;
        match &status["last_handoff"] {
            h if status["pid"] == successor.daemon.pid() && h["result"] == "completed" => Ok(()),
            h => Err(format!("pid {}, last handoff {h}", status["pid"])),
        }
    });
    assert!(
        drain_began.elapsed() < Duration::from_secs(DRAIN_SECONDS),
        "the handoff came after the drain: the test proves nothing"
    );
    agent.daemon.signal("TERM");
    agent.daemon.wait_exit(Duration::from_secs(DRAIN_SECONDS + 10));
    let agent = successor;
    assert_eq!(peer_addresses(&agent).unwrap(), vec![RACK_B_ROUTER.to_string()]);
    eventually(Duration::from_secs(10), "our routes gone from rack a's router", || {
        let (learnt, stale) = (router.learnt(false)?, Router::stale(&router)?);
        if learnt.is_empty() && stale == 0 {
            Ok(())
        } else {
            Err(format!("learnt {learnt:?}, {stale} stale"))
        }
    });
    let down = router.last_reset().unwrap();
    assert!(down.contains("Peer Down"), "{down}");

    // Back to rack a: the session comes up again.
    fs::write(&labels, r#"{"rack":"a"}"#).unwrap();
    agent.wait_established(&link.b_v4);
    assert_eq!(peer_addresses(&agent).unwrap(), vec![link.b_v4.to_string()]);

    // Labels that are not JSON: the running peers stay, the log says why.
    fs::write(&labels, "rack=b").unwrap();
    eventually(Duration::from_secs(20), "the agent to refuse the labels", || {
        let log = agent.daemon.log_text();
        if log.contains("not a JSON object of names and values") { Ok(()) } else { Err(log) }
    });
    agent.wait_established(&link.b_v4);
    assert_eq!(peer_addresses(&agent).unwrap(), vec![link.b_v4.to_string()]);
}

#[test]
fn a_selector_without_the_nodes_labels_is_refused_by_name() {
    let link = Link::new("nolabels");
    let path = link.dir.join("agent.yaml");
    fs::write(&path, config(&link)).unwrap();
    let out = Command::new(AGENT)
        .args(["run", "--config", path.to_str().unwrap(), "--state-dir"])
        .arg(link.dir.join("state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("peers[0] (") && stderr.contains("--node-labels-file"),
        "the error names the peer and the flag: {stderr}"
    );
}

#[test]
fn sessions_come_from_the_nodes_own_address() {
    let link = Link::new("localaddr");
    let own = "10.77.0.5";
    support::sh(&[
        "ip",
        "-n",
        &link.a.name,
        "addr",
        "add",
        &format!("{own}/24"),
        "dev",
        &link.a_dev,
    ]);
    // The router knows the node by that address alone.
    let conf = format!(
        "router id {b};\nprotocol device {{}}\nprotocol bgp node {{\n  local {b} as {ROUTER_AS};\n  \
         neighbor {own} as {AGENT_AS};\n  passive on;\n  ipv4 {{ import all; export none; }};\n}}\n",
        b = link.b_v4
    );
    let (_bird, _) = spawn_bird(&link.b, &link.dir, "router", &conf);
    let yaml = format!(
        "asn: {AGENT_AS}\nrouterId: {a}\npeers:\n- address: {b}\n  asn: {ROUTER_AS}\n  \
         connectRetryTime: 1\n  families: [ipv4-unicast]\n",
        a = link.a_v4,
        b = link.b_v4,
    );
    let agent = Agent::start_with(
        &link.a,
        &link.dir,
        &yaml,
        &["--local-address", own, "--local-address", "fd77::5"],
    );
    agent.wait_established(&link.b_v4);
    let sockets =
        support::sh(&["ip", "netns", "exec", &link.a.name, "ss", "-Htn", "state", "established"]);
    assert!(sockets.contains(&format!("{own}:")), "the session's source: {sockets}");

    // Two of one family: refused, naming the flag.
    let out = Command::new(AGENT)
        .args(["run", "--config", agent.config.to_str().unwrap(), "--state-dir"])
        .arg(link.dir.join("other-state"))
        .args(["--local-address", own, "--local-address", "10.77.0.6"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--local-address 10.77.0.6 is the second of its family"), "{stderr}");
}

/// gobgpd with Graceful Restart and LLGR: a session let go must leave
/// nothing stale there.
fn gr_router(link: &Link) -> Gobgp<'_> {
    let setup = RouterSetup {
        ipv4_only: true,
        graceful_restart: Some(GrSetup { restart_time: 120, long_lived_stale_time: 3600 }),
        ..Default::default()
    };
    Gobgp::start(link, &setup)
}

fn wait_learnt(router: &Gobgp) {
    eventually(Duration::from_secs(10), "the router to have our prefix", || {
        let learnt = router.learnt(false)?;
        if learnt.contains_key(PREFIX) { Ok(()) } else { Err(format!("{learnt:?}")) }
    });
}

/// The agent lets its only peer go for good: it runs no peer, the router
/// has nothing from it (not even stale), and saw the session end as a
/// Peer Down.
fn wait_let_go(agent: &Agent, router: &Gobgp) {
    eventually(Duration::from_secs(20), "our routes gone from the router", || {
        let (peers, learnt, stale) =
            (peer_addresses(agent)?, router.learnt(false)?, Router::stale(router)?);
        if peers.is_empty() && learnt.is_empty() && stale == 0 {
            Ok(())
        } else {
            Err(format!("peers {peers:?}, learnt {learnt:?}, {stale} stale"))
        }
    });
    let down = router.last_reset().unwrap();
    assert!(down.contains("Peer Down"), "{down}");
}

#[test]
fn an_agent_dials_the_router_its_nodes_annotation_names_and_follows_it() {
    let link = Link::new("nodetor");
    let router = gr_router(&link);
    let yaml = format!(
        "asn: {AGENT_AS}\nrouterId: {a}\npeers:\n- addressFrom: {{nodeAnnotation: example.com/tor}}\n  \
         asn: {ROUTER_AS}\n  holdTime: 9\n  keepaliveTime: 3\n  connectRetryTime: 1\n  \
         families: [ipv4-unicast]\nannounce:\n- prefix: {PREFIX}\nshutdown: {{drainSeconds: 1}}\n",
        a = link.a_v4,
    );
    let path = link.dir.join("refused.yaml");
    fs::write(&path, &yaml).unwrap();
    let out = Command::new(AGENT)
        .args(["run", "--config", path.to_str().unwrap(), "--state-dir"])
        .arg(link.dir.join("refused-state"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("peers[0] (the address in node annotation example.com/tor)")
            && stderr.contains("--node-annotations-file"),
        "the error names the peer and the flag: {stderr}"
    );

    // The node's annotation names another router first (none answers there).
    let annotations = link.dir.join("node-annotations");
    fs::write(&annotations, format!(r#"{{"example.com/tor":"{RACK_B_ROUTER}"}}"#)).unwrap();
    let agent = Agent::start_with(
        &link.a,
        &link.dir,
        &yaml,
        &["--node-annotations-file", annotations.to_str().unwrap()],
    );
    eventually(Duration::from_secs(10), "the peer at the annotated address", || {
        let peers = peer_addresses(&agent)?;
        if peers == [RACK_B_ROUTER] { Ok(()) } else { Err(format!("peers {peers:?}")) }
    });
    assert!(router.session().is_err(), "a session before the annotation named the router");

    // Re-annotated with this router: the agent dials it, in the same process.
    fs::write(&annotations, format!(r#"{{"example.com/tor":"{}"}}"#, link.b_v4)).unwrap();
    agent.wait_established(&link.b_v4);
    assert_eq!(peer_addresses(&agent).unwrap(), vec![link.b_v4.to_string()]);
    wait_learnt(&router);

    // The annotation removed: the session is let go for good, nothing stale.
    fs::write(&annotations, "{}").unwrap();
    wait_let_go(&agent, &router);
    let log = agent.daemon.log_text();
    assert!(
        log.contains(
            "peers[0] is not run on this node: the node has no annotation example.com/tor"
        ),
        "{log}"
    );
}

/// Peers at the node's default gateway (`addressFrom.defaultGateway`):
/// the agent dials the next hop of its node's default route, follows the
/// route when it changes (a new router, in the same process), holds a
/// change until the next look agrees (a route gone for a moment costs
/// nothing), lets the session go when the route goes for good, and says
/// why it dials no one where the next hop is link-local.
#[test]
fn an_agent_dials_its_nodes_default_gateway_and_follows_the_route() {
    let link = Link::new("nodegw");
    let router = gr_router(&link);
    let route = |args: &[&str]| {
        let mut all = vec!["ip", "-n", &link.a.name];
        all.extend_from_slice(args);
        support::sh(&all);
    };
    // The default route first leads where no router answers; the IPv6 one
    // through a link-local next hop.
    route(&["route", "add", "default", "via", RACK_B_ROUTER, "dev", &link.a_dev, "onlink"]);
    route(&["-6", "route", "add", "default", "via", "fe80::1", "dev", &link.a_dev]);
    let yaml = format!(
        "asn: {AGENT_AS}\nrouterId: {a}\npeers:\n\
         - addressFrom: {{defaultGateway: {{family: ipv4}}}}\n  asn: {ROUTER_AS}\n  holdTime: 9\n  \
         keepaliveTime: 3\n  connectRetryTime: 1\n  families: [ipv4-unicast]\n\
         - addressFrom: {{defaultGateway: {{family: ipv6}}}}\n  asn: {ROUTER_AS}\n  \
         families: [ipv6-unicast]\n\
         announce:\n- prefix: {PREFIX}\nshutdown: {{drainSeconds: 1}}\n",
        a = link.a_v4,
    );
    let agent = Agent::start_with(&link.a, &link.dir, &yaml, &[]);
    eventually(Duration::from_secs(10), "the peer at the default gateway", || {
        let peers = peer_addresses(&agent)?;
        if peers == [RACK_B_ROUTER] { Ok(()) } else { Err(format!("peers {peers:?}")) }
    });
    // Said in the log and in /status (where the operator reads it).
    let said =
        "peers[1] is not run on this node: its IPv6 default route's next hop fe80::1 is link-local";
    let log = agent.daemon.log_text();
    assert!(log.contains(said), "{log}");
    let status = agent.status().unwrap();
    let not_run = status["peers_not_run"].as_array().cloned().unwrap_or_default();
    assert!(
        not_run.len() == 1 && not_run[0].as_str().is_some_and(|n| n.starts_with(said)),
        "{status}"
    );
    assert!(router.session().is_err(), "a session before the route led to the router");

    // The route now leads to the router: the agent dials it, same process.
    route(&["route", "replace", "default", "via", &link.b_v4]);
    agent.wait_established(&link.b_v4);
    assert_eq!(peer_addresses(&agent).unwrap(), vec![link.b_v4.to_string()]);
    wait_learnt(&router);

    // The route gone for one look and back (a network daemon restarting):
    // the change is held, and the router sees nothing.
    let monitor = router.monitor();
    let session = router.session().unwrap();
    let said = |what: &str| agent.daemon.log_text().matches(what).count();
    let (held, back) = (
        "the node's default routes changed: acted on if the next look agrees",
        "the node's default routes are back as they were",
    );
    let held_before = said(held);
    route(&["route", "del", "default"]);
    eventually(Duration::from_secs(10), "the agent to hold the change", || {
        if said(held) > held_before { Ok(()) } else { Err("not yet".into()) }
    });
    route(&["route", "add", "default", "via", &link.b_v4]);
    eventually(Duration::from_secs(10), "the agent to see the route back", || {
        if said(back) == 1 { Ok(()) } else { Err("not yet".into()) }
    });
    assert_eq!(router.session().unwrap(), session, "the session was touched");
    assert_eq!(peer_addresses(&agent).unwrap(), vec![link.b_v4.to_string()]);
    assert_eq!(Gobgp::events(&monitor), (0, 0), "withdrawals or GRACEFUL_SHUTDOWN at the router");

    // No default route: the session is let go for good, nothing stale.
    route(&["route", "del", "default"]);
    wait_let_go(&agent, &router);
    let no_route = "peers[0] is not run on this node: the node has no IPv4 default route";
    assert!(agent.daemon.log_text().contains(no_route));
    let status = agent.status().unwrap();
    assert!(status["peers_not_run"][0] == no_route, "{status}");
}
