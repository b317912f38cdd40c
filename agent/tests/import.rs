//! What a peer may put into the agent, against real routers (gobgpd, BIRD,
//! FRR): past `maxPrefixes` the session is reset with Cease / Maximum Number
//! of Prefixes Reached, as the router itself reports, and comes back after
//! `restartAfter`; with `accept: none` a BIRD flooding 5 million prefixes
//! costs the agent no memory.

mod support;

#[path = "../benches/common/table.rs"]
mod table;

use std::time::{Duration, Instant};

use support::routers::{AGENT_AS, Bird, Frr, Gobgp, ROUTER_AS, Router, RouterSetup};
use support::{Agent, Link, eventually, peak_rss_mb, v4_prefixes};

const LIMIT: usize = 20;
const RESTART_AFTER: u64 = 4;

/// 15 prefixes for good, 10 more the router can withdraw: 25 > LIMIT.
fn setup() -> RouterSetup {
    RouterSetup {
        hold_time: 30,
        keepalive: 10,
        originate_v4: v4_prefixes(1, 15),
        churn_v4: v4_prefixes(2, 10),
        ipv4_only: true,
        ..Default::default()
    }
}

fn config(link: &Link, import: &str) -> String {
    format!(
        "asn: {AGENT_AS}\nrouterId: {}\npeers:\n\
         - {{ address: {}, asn: {ROUTER_AS}, holdTime: 30, connectRetryTime: 1, \
              families: [ipv4-unicast], import: {import} }}\n\
         announce:\n- {{ prefix: 203.0.113.0/24 }}\n",
        link.a_v4, link.b_v4
    )
}

fn past_the_limit(
    test: &str,
    start: impl for<'a> FnOnce(&'a Link, &RouterSetup) -> Box<dyn Router + 'a>,
) {
    let link = Link::new(test);
    let router = start(&link, &setup());
    let import = format!("{{ maxPrefixes: {{ limit: {LIMIT}, restartAfter: {RESTART_AFTER} }} }}");
    let agent = Agent::start(&link.a, &link.dir, &config(&link, &import));
    let kind = router.kind();

    // 25 routes come in: the agent resets the session and says why.
    let reset = eventually(Duration::from_secs(30), "the agent to reset for maxPrefixes", || {
        let p = agent.peer(&link.b_v4)?;
        let error = p["last_error"].as_str().unwrap_or_default();
        if error.contains("maxPrefixes") { Ok(Instant::now()) } else { Err(p.to_string()) }
    });
    let held = agent.peer(&link.b_v4).unwrap();
    assert!(held["prefix_limit"].as_str().is_some_and(|s| s.contains("up again in")), "{held}");
    assert_eq!(held["routes_received"], 0, "{kind}: nothing kept of a reset session: {held}");
    // The router itself says why: Cease, Maximum Number of Prefixes Reached.
    let said = eventually(Duration::from_secs(10), &format!("{kind} to report the reset"), || {
        let said = router.last_reset()?;
        if said.to_lowercase().contains("maximum number of prefixes") {
            Ok(said)
        } else {
            Err(said)
        }
    });
    println!("{kind} says: {said}");

    // The router withdraws 10 of its routes; after restartAfter the session
    // comes back, and stays, with the 15 that fit.
    router.churn(false);
    let back = eventually(Duration::from_secs(90), "the session back with 15 routes", || {
        let p = agent.peer(&link.b_v4)?;
        if p["state"] == "Established" && p["routes_received"] == 15 {
            Ok((Instant::now(), p))
        } else {
            Err(p.to_string())
        }
    });
    let down_for = back.0 - reset;
    println!(
        "{kind}: reset for maxPrefixes, back after {down_for:?} (restartAfter {RESTART_AFTER} s)"
    );
    assert!(
        down_for >= Duration::from_secs(RESTART_AFTER) - Duration::from_millis(500),
        "{kind}: back after {down_for:?}, before restartAfter"
    );
    assert_eq!(back.1["established_transitions"], 2, "{kind}: one reset only: {}", back.1);
    assert_eq!(back.1["prefix_limit"], serde_json::Value::Null, "{}", back.1);
    eventually(Duration::from_secs(10), &format!("{kind} to hold the agent's route again"), || {
        let learnt = router.learnt(false)?;
        if learnt.contains_key("203.0.113.0/24") { Ok(()) } else { Err(format!("{learnt:?}")) }
    });
}

#[test]
fn gobgpd_past_max_prefixes_is_reset_and_comes_back() {
    past_the_limit("limit-gobgp", |l, s| Box::new(Gobgp::start(l, s)));
}

#[test]
fn bird_past_max_prefixes_is_reset_and_comes_back() {
    past_the_limit("limit-bird", |l, s| Box::new(Bird::start(l, s)));
}

#[test]
fn frr_past_max_prefixes_is_reset_and_comes_back() {
    past_the_limit("limit-frr", |l, s| Box::new(Frr::start(l, s)));
}

#[test]
fn a_flood_of_5_million_prefixes_costs_nothing_with_accept_none() {
    const FLOOD: u32 = 5_000_000;
    let link = Link::new("flood");
    let agent = Agent::start(&link.a, &link.dir, &config(&link, "{ accept: none }"));
    let pid = agent.daemon.child.id();
    eventually(Duration::from_secs(10), "the agent to serve its status", || agent.status());
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "nonstop-agent", "measuring the agent itself");
    let before = peak_rss_mb(pid);
    let started = Instant::now();
    let _bird = table::start_bird(&link, FLOOD);
    println!("bird holds {FLOOD} prefixes after {:?}", started.elapsed());
    let p = eventually(Duration::from_secs(600), "every prefix to be refused", || {
        let p = agent.peer(&link.b_v4)?;
        if p["routes_refused"] == FLOOD { Ok(p) } else { Err(p["routes_refused"].to_string()) }
    });
    let after = peak_rss_mb(pid);
    println!(
        "accept: none: {FLOOD} prefixes refused in {:?}; agent peak RSS {before:.1} MB before, \
         {after:.1} MB after",
        started.elapsed()
    );
    // One session all along: a flood that starved the session's timers
    // once cost it its KEEPALIVEs, and the sender reset it on hold timer
    // expiry again and again before the count was reached.
    assert_eq!(
        (p["state"].as_str(), &p["routes_received"], &p["established_transitions"]),
        (Some("Established"), &0.into(), &1.into()),
        "the session stays up through the flood: {p}"
    );
    // A table of 5M routes would take over 600 MB; the agent keeps counts only.
    assert!(after < before + 16.0, "peak RSS grew from {before:.1} MB to {after:.1} MB");
}
