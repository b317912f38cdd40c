//! Bad input: a peer that sends garbage, a wrong marker, a bad length, a
//! truncated or oversized UPDATE, an IPv4 route with an IPv6 next hop or an
//! MP_REACH_NLRI that overruns gets the NOTIFICATION RFC 4271 / RFC 7606
//! prescribe; a malformed attribute is treat-as-withdraw (RFC 7606) and keeps
//! the session. Meanwhile a real gobgpd session on the same agent is never
//! reset, the agent never panics, and the next handoff carries the session
//! on. A bad config is refused before anything is announced.

mod support;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use support::routers::{Gobgp, RouterSetup};
use support::{AGENT, Agent, Link, eventually};

const EVIL: &str = "10.77.0.3";

fn config(link: &Link) -> String {
    format!(
        "asn: 65001\nrouterId: {}\nlisten: \"[::]:179\"\npeers:\n\
         - {{ address: {}, asn: 65000, holdTime: 30, connectRetryTime: 1, families: [ipv4-unicast] }}\n\
         - {{ address: {EVIL}, asn: 65000, passive: true, families: [ipv4-unicast] }}\n\
         announce:\n- {{ prefix: 203.0.113.0/24 }}\n",
        link.a_v4, link.b_v4
    )
}

/// Runs the evil peer in the router's namespace; returns its one-line verdict
/// and the running process (kept alive for the treat-as-withdraw case).
fn evil(link: &Link, mode: &str) -> (serde_json::Value, std::process::Child) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/evil_peer.py");
    let mut child = link
        .b
        .exec(&["python3", script, EVIL, &link.a_v4, mode])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let verdict = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{mode}: `{line}`: {e}"));
    (verdict, child)
}

#[test]
fn bad_bytes_get_the_prescribed_notification_and_nothing_else_breaks() {
    let link = Link::new("bad-input");
    link.add_b_address(&format!("{EVIL}/24"));
    let setup = RouterSetup { hold_time: 30, keepalive: 10, ..Default::default() };
    let _gobgp = Gobgp::start(&link, &setup);
    let agent = Agent::start(&link.a, &link.dir, &config(&link));
    agent.wait_established(&link.b_v4);

    // (mode, NOTIFICATION code/subcode)
    let cases = [
        ("garbage", [1, 1]),
        ("wrong-marker", [1, 1]),
        ("short-length", [1, 2]),
        ("truncated-update", [3, 1]),
        ("update-too-long", [1, 2]),
        ("ipv6-next-hop-for-ipv4", [3, 9]),
        ("mp-reach-overrun", [3, 1]),
    ];
    for (mode, expected) in cases {
        let (verdict, mut child) = evil(&link, mode);
        assert_eq!(verdict["notification"], serde_json::json!(expected), "{mode}: {verdict}");
        let _ = child.wait();
        let evil_peer = agent.peer(EVIL).unwrap();
        assert!(
            evil_peer["last_error"].as_str().is_some_and(|e| !e.is_empty()),
            "{mode}: {evil_peer}"
        );
    }

    // A malformed ORIGIN: RFC 7606 treat-as-withdraw, the session stays up.
    let (verdict, mut child) = evil(&link, "bad-origin-length");
    assert_eq!(verdict["notification"], serde_json::Value::Null, "{verdict}");
    eventually(Duration::from_secs(10), "10.66.0.0/16 withdrawn, 10.67.0.0/16 kept", || {
        let p = agent.peer(EVIL)?;
        if p["state"] == "Established" && p["routes_received"] == 1 {
            Ok(())
        } else {
            Err(p.to_string())
        }
    });
    let _ = child.kill();
    let _ = child.wait();

    // The real session never noticed.
    let real = agent.peer(&link.b_v4).unwrap();
    assert_eq!(
        (real["state"].as_str(), real["established_transitions"].as_u64()),
        (Some("Established"), Some(1)),
        "{real}"
    );
    assert!(!agent.daemon.log_text().contains("panicked"));

    // Whatever the evil peer sent, the next handoff goes through: nothing it
    // sent is in a table that the successor could not read.
    let successor = Agent::successor(&link.a, &link.dir, &config(&link), &[], "successor.log");
    let pid = successor.daemon.child.id();
    eventually(Duration::from_secs(30), "the successor to take over", || {
        let s = successor.status()?;
        match &s["last_handoff"] {
            h if s["pid"] == pid && h["result"] == "completed" => Ok(()),
            h => Err(format!("pid {} last handoff {h}", s["pid"])),
        }
    });
    let real = successor.peer(&link.b_v4).unwrap();
    assert_eq!(
        (real["state"].as_str(), real["established_transitions"].as_u64()),
        (Some("Established"), Some(1)),
        "{real}"
    );
}

#[test]
fn a_bad_config_is_refused_before_anything_starts() {
    let dir = std::env::temp_dir().join(format!("nonstop-badcfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("agent.yaml");
    std::fs::write(&config, "asn: 65001\nrouterId: 10.0.0.1\npeers:\n  - address: 192.0.2.1\n    asn: 65000\n    holdTime: 2\n").unwrap();
    let out = std::process::Command::new(AGENT)
        .args([
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "peers[0].holdTime: holdTime must be 0 (no keepalives) or at least 3 seconds, got 2"
        ),
        "{stderr}"
    );
    // It stopped before making its state dir, let alone a socket.
    assert!(!dir.join("state").exists());
    std::fs::remove_dir_all(dir).unwrap();
}
