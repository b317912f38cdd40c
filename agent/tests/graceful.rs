//! The ways an agent stops, as a real router (gobgpd, a Graceful Restart
//! helper) sees them, plus the agent as helper for a restarting gobgpd.
//!
//! - restart (`stop --mode restart`, or SIGKILL): the routes stay, marked
//!   stale, not one withdrawal in gobgpd's event stream, fresh after End-of-RIB;
//! - restart too slow: withdrawn at the restart time, or kept as LLGR_STALE
//!   for the long-lived stale time;
//! - decommission (SIGTERM): GRACEFUL_SHUTDOWN, then everything withdrawn
//!   within drainSeconds + 1 s, exit 0.

mod support;

use std::time::{Duration, Instant};

use support::routers::{Bird, Frr, Gobgp, GrSetup, Router, RouterSetup};
use support::{Agent, Link, eventually, v4_prefixes};

const ROUTES: u32 = 1000;

fn setup(originate: u32) -> RouterSetup {
    RouterSetup {
        hold_time: 30,
        keepalive: 10,
        originate_v4: v4_prefixes(1, originate),
        graceful_restart: Some(GrSetup { restart_time: 10, long_lived_stale_time: 60 }),
        ipv4_only: true,
        ..Default::default()
    }
}

/// The agent's config: one IPv4 session to the router, `ROUTES` prefixes.
fn config(link: &Link, restart_time: u32, long_lived: u32, drain: u32) -> String {
    let mut yaml = format!(
        "asn: 65001\nrouterId: {}\nshutdown: {{ drainSeconds: {drain} }}\npeers:\n\
         - address: {}\n  asn: 65000\n  connectRetryTime: 1\n  families: [ipv4-unicast]\n  \
         gracefulRestart: {{ restartTime: {restart_time}, longLivedStaleTime: {long_lived} }}\nannounce:\n",
        link.a_v4, link.b_v4
    );
    for p in v4_prefixes(200, ROUTES) {
        yaml += &format!("- {{ prefix: {p} }}\n");
    }
    yaml
}

/// How many of our routes the router holds, and how many of them only stale.
fn held(router: &dyn Router) -> Result<(usize, usize), String> {
    Ok((router.learnt(false)?.len(), router.stale()?))
}

fn wait_held(router: &dyn Router, what: &str, want: (usize, usize)) {
    eventually(Duration::from_secs(30), what, || match held(router)? {
        got if got == want => Ok(()),
        got => Err(format!("(routes, stale) = {got:?}")),
    });
}

/// restart, by `stop --mode restart` and by SIGKILL, as one router sees it.
fn restart(test: &str, start: impl for<'a> FnOnce(&'a Link, &RouterSetup) -> Box<dyn Router + 'a>) {
    let link = Link::new(test);
    let mut router = start(&link, &setup(0));
    let mut agent = Agent::start(&link.a, &link.dir, &config(&link, 60, 0, 2));
    agent.wait_established(&link.b_v4);
    let all = ROUTES as usize;
    wait_held(&*router, "our routes at the router", (all, 0));
    router.watch();

    // stop --mode restart: the router keeps everything, marked stale.
    agent.stop("restart");
    wait_held(&*router, "our routes kept stale", (all, all));
    // Back within the restart time: R-bit, same routes, End-of-RIB, none stale.
    let mut agent = Agent::start(&link.a, &link.dir, &config(&link, 60, 0, 2));
    agent.wait_established(&link.b_v4);
    wait_held(&*router, "our routes fresh again", (all, 0));

    // The same after SIGKILL.
    agent.daemon.signal("KILL");
    eventually(Duration::from_secs(5), "the agent to die", || {
        agent.daemon.exited().ok_or_else(|| "alive".to_string())
    });
    wait_held(&*router, "our routes kept stale after SIGKILL", (all, all));
    let agent = Agent::start(&link.a, &link.dir, &config(&link, 60, 0, 2));
    agent.wait_established(&link.b_v4);
    wait_held(&*router, "our routes fresh after SIGKILL", (all, 0));

    assert_eq!(
        router.withdrawals(),
        0,
        "{} saw withdrawals (logs in {})",
        router.kind(),
        link.dir.display()
    );
}

#[test]
fn a_restart_keeps_every_route_at_gobgpd() {
    restart("gr-restart-gobgpd", |link, setup| Box::new(Gobgp::start(link, setup)));
}

#[test]
fn a_restart_keeps_every_route_at_bird() {
    restart("gr-restart-bird", |link, setup| Box::new(Bird::start(link, setup)));
}

#[test]
fn a_restart_keeps_every_route_at_frr() {
    restart("gr-restart-frr", |link, setup| Box::new(Frr::start(link, setup)));
}

#[test]
fn a_restart_that_takes_too_long_ends_at_the_restart_time_or_the_llgr_time() {
    let link = Link::new("gr-slow");
    let router = Gobgp::start(&link, &setup(0));

    // Without LLGR: gobgpd withdraws when our 3 s restart time runs out.
    let mut agent = Agent::start(&link.a, &link.dir, &config(&link, 3, 0, 2));
    agent.wait_established(&link.b_v4);
    wait_held(&router, "our routes", (ROUTES as usize, 0));
    agent.stop("restart");
    let stopped = Instant::now();
    wait_held(&router, "our routes kept stale", (ROUTES as usize, ROUTES as usize));
    wait_held(&router, "our routes gone at the restart time", (0, 0));
    let gone_after = stopped.elapsed();
    assert!(gone_after >= Duration::from_secs(2), "withdrawn too early: {gone_after:?}");

    // With LLGR: past 2 s they stay as LLGR_STALE, and go at 2 + 5 s.
    let mut agent = Agent::start(&link.a, &link.dir, &config(&link, 2, 5, 2));
    agent.wait_established(&link.b_v4);
    wait_held(&router, "our routes", (ROUTES as usize, 0));
    agent.stop("restart");
    let stopped = Instant::now();
    eventually(Duration::from_secs(15), "our routes long-lived stale", || {
        match router.stale()? {
            (_, llgr) if llgr == ROUTES as usize => Ok(()),
            other => Err(format!("(stale, llgr_stale) = {other:?}")),
        }
    });
    let llgr_after = stopped.elapsed();
    wait_held(&router, "our routes gone at the long-lived stale time", (0, 0));
    let gone_after = stopped.elapsed();
    assert!(llgr_after >= Duration::from_secs(1), "LLGR_STALE too early: {llgr_after:?}");
    assert!(gone_after >= Duration::from_secs(6), "withdrawn before the LLGR time: {gone_after:?}");
}

#[test]
fn a_decommission_drains_then_withdraws_everything() {
    let link = Link::new("gr-decommission");
    let router = Gobgp::start(&link, &setup(0));
    let mut agent = Agent::start(&link.a, &link.dir, &config(&link, 60, 0, 2));
    agent.wait_established(&link.b_v4);
    wait_held(&router, "our routes", (ROUTES as usize, 0));
    let monitor = router.monitor();

    agent.daemon.signal("TERM");
    let sent = Instant::now();
    eventually(Duration::from_secs(5), "GRACEFUL_SHUTDOWN on our routes", || {
        match Gobgp::events(&monitor) {
            (_, shutdown) if shutdown >= ROUTES as usize => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    wait_held(&router, "every route withdrawn", (0, 0));
    let took = sent.elapsed();
    assert!(took <= Duration::from_secs(3), "withdrawn after {took:?}, drain is 2 s");
    assert!(took >= Duration::from_millis(1800), "withdrawn before the drain: {took:?}");
    let status = eventually(Duration::from_secs(5), "the agent to exit", || {
        agent.daemon.exited().ok_or_else(|| "running".to_string())
    });
    assert!(status.success(), "{status}");
}

#[test]
fn the_agent_keeps_a_restarting_routers_routes() {
    let link = Link::new("gr-helper");
    let setup = setup(ROUTES);
    let router = Gobgp::start(&link, &setup);
    let agent = Agent::start(&link.a, &link.dir, &config(&link, 60, 0, 2));
    agent.wait_established(&link.b_v4);
    let counts =
        |p: &serde_json::Value| (p["routes_received"].as_u64(), p["routes_stale"].as_u64());
    let wait_counts = |what: &str, want: (Option<u64>, Option<u64>)| {
        eventually(Duration::from_secs(30), what, || {
            let p = agent.peer(&link.b_v4)?;
            if counts(&p) == want { Ok(()) } else { Err(p.to_string()) }
        })
    };
    let all = u64::from(ROUTES);
    wait_counts("the router's routes", (Some(all), Some(0)));

    // gobgpd dies: its routes stay, stale; it comes back with -r: fresh.
    router.daemon.signal("KILL");
    drop(router);
    wait_counts("the router's routes kept stale", (Some(all), Some(all)));
    let router = Gobgp::start_with(&link, &setup, true);
    wait_counts("the router's routes fresh again", (Some(all), Some(0)));

    // It dies and never comes back: purged at its restart time (10 s).
    router.daemon.signal("KILL");
    drop(router);
    wait_counts("stale routes", (Some(all), Some(all)));
    let died = Instant::now();
    wait_counts("routes purged at the restart time", (Some(0), Some(0)));
    assert!(died.elapsed() >= Duration::from_secs(8), "purged after {:?}", died.elapsed());
}
