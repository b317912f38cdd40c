//! RFC 4271 §6.8 end to end: the agent dials a peer while the peer dials the
//! agent; the connection dialled by the side with the higher BGP identifier
//! survives, the other is closed with Cease/Connection Collision Resolution,
//! and the agent ends with one Established session.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use support::{Agent, Link, eventually};

const PEER: &str = "10.77.0.3";

fn collide(test: &str, peer_router_id: &str) -> (serde_json::Value, serde_json::Value) {
    let link = Link::new(test);
    link.add_b_address(&format!("{PEER}/24"));
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/evil_peer.py");
    let mut peer = link
        .b
        .exec(&["python3", script, PEER, &link.a_v4, "collide", peer_router_id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let config = format!(
        "asn: 65001\nrouterId: {}\npeers:\n  - {{ address: {PEER}, asn: 65000, connectRetryTime: 1, families: [ipv4-unicast] }}\n",
        link.a_v4
    );
    let agent = Agent::start(&link.a, &link.dir, &config);
    let mut line = String::new();
    BufReader::new(peer.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let verdict: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("`{line}`: {e}"));
    let status = eventually(Duration::from_secs(10), "one Established session", || {
        let p = agent.peer(PEER)?;
        if p["state"] == "Established" { Ok(p) } else { Err(p.to_string()) }
    });
    let _ = peer.kill();
    let _ = peer.wait();
    (verdict, status)
}

#[test]
fn the_peer_with_the_higher_identifier_keeps_its_connection() {
    // 10.77.0.9 > 10.77.0.1 (ours): the connection the peer dialled survives.
    let (verdict, status) = collide("collide-peer-wins", "10.77.0.9");
    assert_eq!(verdict, json!({"agent_dialled": [6, 7], "peer_dialled": "established"}));
    assert_eq!(status["established_transitions"], 1, "{status}");
}

#[test]
fn the_agent_with_the_higher_identifier_keeps_its_connection() {
    // 10.0.0.9 < 10.77.0.1 (ours): the connection the agent dialled survives.
    let (verdict, status) = collide("collide-agent-wins", "10.0.0.9");
    assert_eq!(verdict, json!({"agent_dialled": "established", "peer_dialled": [6, 7]}));
    assert_eq!(status["established_transitions"], 1, "{status}");
}
