//! A health-checked announcement in the lab, watched at the lab router:
//! each node checks a small HTTP service of its own (on the node's
//! loopback, where a gateway's agent reaches node-local services); the
//! node whose service dies drains the prefix (GRACEFUL_SHUTDOWN) and then
//! withdraws it, the others keep it. An image bump in the middle sends
//! the router nothing at all: the node that withdrew keeps it withdrawn,
//! the others keep it announced. The service back: announced again.
//!
//! Shares the lab's nodes with the other end-to-end tests (nextest group
//! `lab-nodes`).

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nonstop_lab::testing::eventually;
use support::{NODES, PREFIXES, Setup, hitless_roll, uplink, uplinks};

const CHECKED: &str = "203.0.113.77/32";
const PORT: u16 = 18077;
const GRACEFUL_SHUTDOWN: &str = "65535:0";

/// A node's service: an HTTP server on the node's loopback.
struct Service(Child);

impl Service {
    fn start(node: &str) -> Service {
        let child = Command::new("ip")
            .args(["netns", "exec", node, "python3", "-m", "http.server", &PORT.to_string()])
            .args(["--bind", "127.0.0.1"])
            .current_dir(std::env::temp_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3's http.server");
        Service(child)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The nodes the router reaches the checked prefix through.
fn via(s: &Setup) -> Result<Vec<String>, String> {
    Ok(s.router.routes()?.get(CHECKED).cloned().unwrap_or_default())
}

fn wait_via(s: &Setup, nodes: &[&str], what: &str) {
    let want: Vec<String> = nodes.iter().map(|n| uplink(n)).collect();
    eventually(Duration::from_secs(30), what, || match via(s)? {
        got if got == want => Ok(()),
        got => Err(format!("via {got:?}")),
    });
}

#[test]
fn a_checked_prefix_leaves_only_the_node_whose_service_failed_and_an_upgrade_keeps_it_so() {
    let s = Setup::new("e2e-health");
    let mut services: Vec<Option<Service>> =
        NODES.iter().map(|n| Some(Service::start(n))).collect();
    let checked = format!(
        r#"{{prefix: "{CHECKED}", check: {{http: {{url: "http://127.0.0.1:{PORT}/"}}, intervalSeconds: 1, timeoutSeconds: 1, rise: 2, fall: 2, drainSeconds: 3}}}}"#
    );
    let plain =
        format!(r#"announce: [{{prefix: "{}"}}, {{prefix: "{}"}}]"#, PREFIXES[0], PREFIXES[1]);
    let with_check = format!(
        r#"announce: [{{prefix: "{}"}}, {{prefix: "{}"}}, {checked}]"#,
        PREFIXES[0], PREFIXES[1]
    );
    let gateway = s.gateway("nonstop-agent:v1", "Handoff");
    assert!(gateway.contains(&plain), "the shared gateway changed: {gateway}");
    s.ns.apply(&gateway.replace(&plain, &with_check)).unwrap();
    s.wait_complete("nonstop-agent:v1", Duration::from_secs(90));
    wait_via(&s, &NODES, "the checked prefix via every node");

    // node-1's service dies: drained there first, then withdrawn; the
    // other nodes keep it.
    services[0] = None;
    let node1 = uplink(NODES[0]);
    eventually(Duration::from_secs(30), "node-1's drain at the router", || {
        let drained = s.router.received()?.into_iter().any(|r| {
            r.prefix == CHECKED
                && r.neighbor == node1
                && !r.withdrawal
                && r.communities.iter().any(|c| c == GRACEFUL_SHUTDOWN)
        });
        if drained { Ok(()) } else { Err("no GRACEFUL_SHUTDOWN path from node-1".into()) }
    });
    wait_via(&s, &NODES[1..], "the checked prefix via node-2 and node-3 only");
    // The gateway's status says which node withdrew it and why.
    // (The operator asks the agents at its idle resync, every 30 s.)
    eventually(Duration::from_secs(60), "node-1's failing check in the gateway's status", || {
        let status = s.status();
        let failing = |node: &str| -> Vec<serde_json::Value> {
            let nodes = status["nodes"].as_array().cloned().unwrap_or_default();
            let n = nodes.into_iter().find(|n| n["node"] == node).unwrap_or_default();
            n["checksFailing"].as_array().cloned().unwrap_or_default()
        };
        let one = failing(NODES[0]);
        let others = [failing(NODES[1]), failing(NODES[2])];
        match one.as_slice() {
            [c] if c["prefix"] == CHECKED
                && c["verdict"] == "down"
                && c["detail"].as_str().is_some_and(|d| d.contains("127.0.0.1"))
                && others.iter().all(Vec::is_empty) =>
            {
                Ok(())
            }
            _ => Err(format!("node-1 {one:?}, the others {others:?}")),
        }
    });

    // An image bump: every node's agent hands over; the router sees no
    // UPDATE at all (hitless_roll checks every prefix, this one too).
    hitless_roll(&s, "nonstop-agent:v2");
    assert_eq!(via(&s).unwrap(), [uplink(NODES[1]), uplink(NODES[2])]);

    // The service is back: node-1 announces it again, without the community.
    let before = s.router.received().unwrap().len();
    services[0] = Some(Service::start(NODES[0]));
    wait_via(&s, &NODES, "the checked prefix via every node again");
    let since: Vec<_> = s.router.received().unwrap().into_iter().skip(before).collect();
    let back =
        since.iter().filter(|r| r.prefix == CHECKED && r.neighbor == node1).collect::<Vec<_>>();
    assert!(
        back.iter().all(|r| !r.withdrawal && !r.communities.iter().any(|c| c == GRACEFUL_SHUTDOWN)),
        "{back:?}"
    );
    // Only node-1 said anything.
    let others: Vec<_> =
        since.iter().filter(|r| r.neighbor != node1 && uplinks().contains(&r.neighbor)).collect();
    assert!(others.is_empty(), "the other nodes sent {others:?}");
    drop(services);
}
