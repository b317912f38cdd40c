//! BMP export in the lab, as a network team's collector sees it: pmacct's
//! `pmbmpd` runs beside the lab router, the gateway names it in
//! `spec.bmp`, and every node's agent reports its session and what it
//! announces. Then an image bump: the router sees nothing (as every
//! rollout test checks), and neither does the collector: no Peer Down,
//! no connection closed, no new Initiation.
//!
//! Shares the lab's nodes with the other end-to-end tests (nextest group
//! `lab-nodes`).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nonstop_lab::testing::eventually;
use serde_json::Value;
use support::{NODES, PREFIXES, Setup, hitless_roll, uplink};

/// The lab router's address on every node's link.
const ROUTER: &str = "10.99.0.1";
const PORT: u16 = 1790;

/// pmbmpd in the router's namespace, logging every message as JSON.
struct Collector {
    child: Child,
    messages: PathBuf,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Collector {
    fn start(dir: &Path) -> Collector {
        std::fs::create_dir_all(dir).unwrap();
        let messages = dir.join("bmp-messages.json");
        let _ = std::fs::remove_file(&messages);
        let conf = dir.join("pmbmpd.conf");
        std::fs::write(
            &conf,
            format!(
                "bmp_daemon_ip: {ROUTER}\nbmp_daemon_port: {PORT}\nbmp_daemon_msglog_file: {}\n\
                 bmp_daemon_msglog_output: json\n",
                messages.display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("pmbmpd.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", "lab-router", "pmbmpd", "-f", conf.to_str().unwrap()])
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("pmbmpd (Debian's pmacct)");
        Collector { child, messages }
    }

    fn log(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.messages)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

/// Messages of one BMP type from one node's agent.
fn of<'a>(log: &'a [Value], kind: &str, node: &str) -> Vec<&'a Value> {
    let from = uplink(node);
    log.iter().filter(|m| m["bmp_msg_type"] == kind && m["bmp_router"] == from).collect()
}

/// Counts by event and message type, for failure messages.
fn summary(log: &[Value]) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for m in log {
        let kind = m["bmp_msg_type"].as_str().or_else(|| m["event_type"].as_str()).unwrap_or("?");
        *kinds.entry(format!("{} {kind}", m["bmp_router"])).or_default() += 1;
    }
    format!("{kinds:?}")
}

#[test]
fn the_collector_sees_every_node_and_nothing_of_an_image_bump() {
    let s = Setup::new("e2e-bmp");
    let collector = Collector::start(&s.lab.dir().join("bmp-e2e"));
    let gateway = s.gateway("nonstop-agent:v1", "Handoff")
        + &format!("  bmp: [{{address: {ROUTER}, port: {PORT}, statisticsInterval: 5}}]\n");
    s.ns.apply(&gateway).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    s.wait_routes_from(&NODES, Duration::from_secs(30));

    let announced: BTreeSet<String> = PREFIXES.iter().map(|p| p.to_string()).collect();
    eventually(Duration::from_secs(60), "every node's session and routes at the collector", || {
        let log = collector.log();
        for node in NODES {
            let up = of(&log, "peer_up", node);
            let sent: BTreeSet<String> = of(&log, "route_monitor", node)
                .into_iter()
                .filter(|m| m["is_out"] == 1 && m["log_type"] == "update")
                .filter_map(|m| m["ip_prefix"].as_str().map(String::from))
                .collect();
            if up.len() != 1 || up[0]["peer_ip"] != ROUTER || sent != announced {
                return Err(format!(
                    "{node}: {} Peer Up, sent {sent:?}; {}",
                    up.len(),
                    summary(&log)
                ));
            }
            if of(&log, "stats", node).is_empty() {
                return Err(format!("{node}: no Statistics Report yet"));
            }
        }
        Ok(())
    });

    hitless_roll(&s, "nonstop-agent:v2");
    // The successors write on the same connections: their statistics
    // arrive there after the upgrade.
    let rolled = collector.log().len();
    eventually(Duration::from_secs(30), "statistics from every successor", || {
        let log = collector.log();
        let after = &log[rolled.min(log.len())..];
        let quiet: Vec<&str> =
            NODES.iter().copied().filter(|n| of(after, "stats", n).is_empty()).collect();
        if quiet.is_empty() { Ok(()) } else { Err(format!("nothing since from {quiet:?}")) }
    });
    let log = collector.log();
    eprintln!("the collector's log after the image bump: {}", summary(&log));
    for node in NODES {
        let from = uplink(node);
        let events = |kind: &str| {
            log.iter().filter(|m| m["event_type"] == kind && m["bmp_router"] == from).count()
        };
        assert!(of(&log, "peer_down", node).is_empty(), "{node}: Peer Down: {}", summary(&log));
        assert_eq!(of(&log, "peer_up", node).len(), 1, "{node}: {}", summary(&log));
        assert_eq!(events("log_init"), 1, "{node} connected again: {}", summary(&log));
        assert_eq!(events("log_close"), 0, "{node}'s connection closed: {}", summary(&log));
    }
    s.ns.kubectl(&["delete", "bgpgw", "edge"]).unwrap();
}
