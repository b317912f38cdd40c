//! Health-checked announcements, watched at a real router (gobgpd): the
//! keepalived habit, with the upgrade story kept.
//!
//! - the checked service answers: its prefix is announced, beside an
//!   unchecked one;
//! - it stops answering: the prefix is sent again with GRACEFUL_SHUTDOWN,
//!   then withdrawn once the drain is over; it answers again: announced;
//! - a handoff to a successor while the prefix drains, while it is
//!   withdrawn, and while it is announced: the router receives no UPDATE
//!   from any of them (the successor starts from its predecessor's
//!   verdicts; mid-drain, it drains on to the same end).
//!
//! The probe is a command (`test -e FILE`), so the test decides when the
//! service is healthy; `speaker::checks`' own tests cover TCP and HTTP.

mod support;

use std::time::Duration;

use support::routers::{AGENT_AS, Gobgp, ROUTER_AS, Router, RouterSetup};
use support::{Agent, Link, eventually};

const PLAIN: &str = "198.51.100.0/24";
const CHECKED: &str = "203.0.113.10/32";
const GRACEFUL_SHUTDOWN: &str = "65535:0";

fn config(link: &Link, healthy_file: &std::path::Path) -> String {
    format!(
        "asn: {AGENT_AS}\nrouterId: {a}\npeers:\n- address: {b}\n  asn: {ROUTER_AS}\n  holdTime: 9\n  \
         keepaliveTime: 3\n  connectRetryTime: 1\n  families: [ipv4-unicast]\n\
         announce:\n- prefix: {PLAIN}\n- prefix: {CHECKED}\n  communities: [\"65001:7\"]\n  check:\n    \
         command: [test, -e, {file}]\n    intervalSeconds: 1\n    timeoutSeconds: 1\n    rise: 2\n    \
         fall: 2\n    drainSeconds: 10\n",
        a = link.a_v4,
        b = link.b_v4,
        file = healthy_file.display()
    )
}

/// The checked prefix's communities at the router; None: it has no route.
fn at_router(router: &Gobgp) -> Result<Option<Vec<String>>, String> {
    Ok(router.learnt(false)?.get(CHECKED).map(|r| r.communities.clone()))
}

/// The agent's verdict on the checked prefix, from `show checks`.
fn verdict(agent: &Agent) -> String {
    let shown = agent.show(&["checks"]).unwrap_or_default();
    let row = shown.lines().find(|l| l.starts_with(CHECKED)).unwrap_or_default();
    row.split_whitespace().nth(1).unwrap_or("?").to_string()
}

/// A successor takes over from `old`; the router's session and its count
/// of UPDATEs from us are what they were.
fn hand_over(link: &Link, router: &Gobgp, old: Agent, yaml: &str, log: &str) -> Agent {
    let before = router.session().unwrap();
    let new = old.hand_over(&link.a, &link.dir, yaml, log);
    // Three probe intervals on the successor: a verdict it re-decided
    // would have reached the router by now.
    let probes = |a: &Agent| a.status().ok().map(|s| s["uptime_seconds"].as_u64().unwrap_or(0));
    eventually(Duration::from_secs(10), "three probe intervals on the successor", || match probes(
        &new,
    ) {
        Some(up) if up >= 3 => Ok(()),
        up => Err(format!("up {up:?} s")),
    });
    let after = router.session().unwrap();
    assert_eq!(after, before, "the router saw the handoff");
    new
}

#[test]
fn a_checked_prefix_follows_its_service_and_a_handoff_changes_nothing() {
    let link = Link::new("health");
    let router = Gobgp::start(&link, &RouterSetup { ipv4_only: true, ..Default::default() });
    let healthy = link.dir.join("healthy");
    std::fs::write(&healthy, "").unwrap();
    let yaml = config(&link, &healthy);
    let agent = Agent::start(&link.a, &link.dir, &yaml);
    agent.wait_established(&link.b_v4);

    eventually(Duration::from_secs(20), "both prefixes at the router", || {
        let routes = router.learnt(false)?;
        match (routes.contains_key(PLAIN), at_router(&router)?) {
            (true, Some(c)) if !c.iter().any(|c| c == GRACEFUL_SHUTDOWN) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(verdict(&agent), "up");

    // The service stops answering: drained first, then withdrawn.
    std::fs::remove_file(&healthy).unwrap();
    eventually(Duration::from_secs(20), "the prefix drained", || match at_router(&router)? {
        Some(c) if c.iter().any(|c| c == GRACEFUL_SHUTDOWN) && c.iter().any(|c| c == "65001:7") => {
            Ok(())
        }
        other => Err(format!("{other:?}")),
    });
    assert_eq!(verdict(&agent), "draining");
    // An upgrade mid-drain: the successor drains on, to the same end.
    let agent = hand_over(&link, &router, agent, &yaml, "agent-2.log");
    assert_eq!(verdict(&agent), "draining");
    eventually(Duration::from_secs(20), "the prefix withdrawn", || match at_router(&router)? {
        None => Ok(()),
        Some(c) => Err(format!("still there with {c:?}")),
    });
    assert_eq!(verdict(&agent), "down");
    assert!(router.learnt(false).unwrap().contains_key(PLAIN), "the unchecked prefix went too");
    // What the agent means to announce now, as the operator's health check
    // of a new agent reads it: the withdrawn prefix is not missing.
    assert_eq!(agent.status().unwrap()["routes_announced"], 1);
    let metrics = agent.get("/metrics").unwrap();
    let down = format!("nonstop_check_up{{prefix=\"{CHECKED}\"}} 0");
    assert!(metrics.contains(&down), "no `{down}` in\n{metrics}");
    let failures = format!("nonstop_check_failures_total{{prefix=\"{CHECKED}\"}} ");
    let failed = metrics.lines().find_map(|l| l.strip_prefix(failures.as_str()));
    assert!(failed.and_then(|n| n.parse::<u64>().ok()).is_some_and(|n| n >= 2), "{metrics}");

    // An upgrade while it is down keeps it down, and says nothing.
    let agent = hand_over(&link, &router, agent, &yaml, "agent-3.log");
    assert_eq!(verdict(&agent), "down");
    assert_eq!(at_router(&router).unwrap(), None);

    // The service is back: announced again, without the community.
    std::fs::write(&healthy, "").unwrap();
    eventually(Duration::from_secs(20), "the prefix announced again", || {
        match at_router(&router)? {
            Some(c) if !c.iter().any(|c| c == GRACEFUL_SHUTDOWN) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(verdict(&agent), "up");
    let up = format!("nonstop_check_up{{prefix=\"{CHECKED}\"}} 1");
    assert!(agent.get("/metrics").unwrap().contains(&up), "no `{up}`");

    // An upgrade while it is up keeps it up, and says nothing.
    let agent = hand_over(&link, &router, agent, &yaml, "agent-4.log");
    assert_eq!(verdict(&agent), "up");
    assert!(at_router(&router).unwrap().is_some());
}
