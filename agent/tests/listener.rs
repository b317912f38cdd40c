//! Sharing a host with another BGP speaker: the agent without a listener,
//! beside a BIRD that holds port 179 (as Calico's does on its nodes),
//! watched at a real router (gobgpd).
//!
//! - with `listen: null` the agent dials its router and announces, and
//!   BIRD keeps port 179;
//! - a handoff without a listener carries the session (the router sees
//!   nothing), and so does one to a successor that listens on another port:
//!   it binds the port of its own config;
//! - an agent that does want port 179 there is refused with the address
//!   and the reason, and nothing that was running is touched;
//! - given an IPv6 address as its router ID (an IPv6-only node's, as the
//!   operator passes it), the agent peers with the 32-bit ID derived from it.

mod support;

use std::time::Duration;

use support::routers::{AGENT_AS, Gobgp, ROUTER_AS, Router, RouterSetup, spawn_bird};
use support::{Agent, Link, eventually};

const PREFIX: &str = "198.51.100.0/24";

fn config(link: &Link, listen: &str) -> String {
    format!(
        "asn: {AGENT_AS}\nrouterId: {a}\nlisten: {listen}\npeers:\n- address: {b}\n  asn: {ROUTER_AS}\n  \
         holdTime: 9\n  keepaliveTime: 3\n  connectRetryTime: 1\n  families: [ipv4-unicast]\n\
         announce:\n- prefix: {PREFIX}\n",
        a = link.a_v4,
        b = link.b_v4,
    )
}

/// BIRD on the agent's host with a passive session to nobody (an unused
/// address of the link): it listens on port 179 of every address, as a
/// node's resident speaker does.
fn resident_bird(link: &Link) -> support::Daemon {
    let conf = format!(
        "router id {a};\nprotocol device {{}}\nprotocol bgp elsewhere {{\n  local as 64999;\n  \
         neighbor 10.77.0.99 as 64998;\n  passive on;\n  ipv4 {{ import none; export none; }};\n}}\n",
        a = link.a_v4
    );
    let (daemon, _) = spawn_bird(&link.a, &link.dir, "resident", &conf);
    eventually(Duration::from_secs(10), "BIRD listening on port 179", || {
        let out =
            support::sh(&["ip", "netns", "exec", &link.a.name, "ss", "-Hltnp", "sport", "= :179"]);
        if out.contains("bird") { Ok(()) } else { Err(out) }
    });
    daemon
}

/// Who listens on the agent's host on `port`.
fn listening(link: &Link, port: u16) -> String {
    support::sh(&[
        "ip",
        "netns",
        "exec",
        &link.a.name,
        "ss",
        "-Hltnp",
        "sport",
        &format!("= :{port}"),
    ])
}

/// A successor on `yaml` takes over from `old`; the router's session is
/// what it was.
fn hand_over(link: &Link, router: &Gobgp, old: Agent, yaml: &str, log: &str) -> Agent {
    let before = router.session().unwrap();
    let new = old.hand_over(&link.a, &link.dir, yaml, log);
    new.wait_established(&link.b_v4);
    assert_eq!(router.session().unwrap(), before, "the router saw the handoff");
    new
}

#[test]
fn an_agent_without_a_listener_shares_its_host_and_hands_over() {
    let link = Link::new("nolisten");
    let router = Gobgp::start(&link, &RouterSetup { ipv4_only: true, ..Default::default() });
    let mut bird = resident_bird(&link);

    let quiet = config(&link, "null");
    let agent = Agent::start(&link.a, &link.dir, &quiet);
    agent.wait_established(&link.b_v4);
    eventually(Duration::from_secs(20), "the prefix at the router", || {
        if router.learnt(false)?.contains_key(PREFIX) { Ok(()) } else { Err("not yet".into()) }
    });
    assert_eq!(agent.status().unwrap()["listen"], "none");
    let held = listening(&link, 179);
    assert!(held.contains("bird") && !held.contains("nonstop"), "port 179: {held}");

    // Upgrades without a listener: nothing to pass but the session.
    let agent = hand_over(&link, &router, agent, &quiet, "agent-2.log");
    assert_eq!(agent.status().unwrap()["last_handoff"]["listeners"], 1, "the admin listener only");
    // And to a successor whose config listens on a port of its own.
    let agent = hand_over(&link, &router, agent, &config(&link, "0.0.0.0:1179"), "agent-3.log");
    assert_eq!(agent.status().unwrap()["listen"], "0.0.0.0:1179");
    assert!(listening(&link, 1179).contains("nonstop"), "port 1179: {}", listening(&link, 1179));
    assert!(router.learnt(false).unwrap().contains_key(PREFIX));

    // An agent that wants port 179 on this host is told why it cannot have it.
    let other = link.dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    let mut greedy = Agent::start(&link.a, &other, &config(&link, "0.0.0.0:179"));
    let status = greedy.daemon.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let log = greedy.daemon.log_text();
    assert!(log.contains("cannot listen for BGP on 0.0.0.0:179"), "{log}");
    assert!(log.to_lowercase().contains("address already in use"), "{log}");
    assert!(bird.exited().is_none(), "BIRD went away");
    agent.wait_established(&link.b_v4);
    assert!(router.learnt(false).unwrap().contains_key(PREFIX));
}

#[test]
fn an_ipv6_node_address_becomes_a_stable_router_id() {
    let link = Link::new("v6id");
    let router = Gobgp::start(&link, &RouterSetup { ipv4_only: true, ..Default::default() });
    let yaml = config(&link, "\"[::]:179\"").replace(&format!("routerId: {}\n", link.a_v4), "");
    assert!(!yaml.contains("routerId"), "{yaml}");
    let agent = Agent::start_with(&link.a, &link.dir, &yaml, &["--router-id", &link.a_v6]);
    agent.wait_established(&link.b_v4);
    let want = nonstop_agent::config::router_id_for(link.a_v6.parse().unwrap()).to_string();
    assert_eq!(agent.status().unwrap()["router_id"], want.as_str());
    // What the router was told in our OPEN.
    let neighbor: serde_json::Value =
        serde_json::from_str(&router.cli(&["-j", "neighbor", &link.a_v4]).unwrap()).unwrap();
    assert_eq!(neighbor["state"]["router_id"], want.as_str(), "{neighbor}");
}
