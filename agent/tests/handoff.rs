//! The hitless handoff, as real routers see it: a second agent on the same
//! state dir takes the listener and the live session over, and the router
//! counts no reset, no UPDATE from us, no withdrawal and no stale mark.
//!
//! - under load: 10,000 prefixes each way, the router flapping 50 more all
//!   the while, 20 upgrades back to back, against gobgpd, bird2 and frr;
//! - the kill matrix: SIGKILL of either agent at each step (the agents stop
//!   themselves there via NONSTOP_TEST_HANDOFF_STOP_AT), and a SIGSTOPped
//!   successor that the predecessor rolls back after its pause budget;
//! - incompatible successors refused at HELLO;
//! - 300 sessions, more than one batch of descriptors.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use support::routers::{
    AGENT_AS, Bird, Frr, Gobgp, GrSetup, ROUTER_AS, RouteView, Router, RouterSetup, SessionView,
    gobgp_many, gobgp_many_sessions,
};
use support::{Agent, Link, eventually, v4_prefixes};

fn setup(routes: u32, churn: u32) -> RouterSetup {
    RouterSetup {
        hold_time: 9,
        keepalive: 3,
        originate_v4: v4_prefixes(1, routes),
        churn_v4: v4_prefixes(2, churn),
        graceful_restart: Some(GrSetup { restart_time: 30, long_lived_stale_time: 0 }),
        ipv4_only: true,
        ..Default::default()
    }
}

fn config(link: &Link, routes: u32) -> String {
    let mut yaml = format!(
        "asn: {AGENT_AS}\nrouterId: {}\npeers:\n- address: {}\n  asn: {ROUTER_AS}\n  holdTime: 9\n  \
         keepaliveTime: 3\n  connectRetryTime: 1\n  families: [ipv4-unicast]\n  \
         gracefulRestart: {{ restartTime: 30 }}\nannounce:\n",
        link.a_v4, link.b_v4
    );
    for p in v4_prefixes(200, routes) {
        yaml += &format!("- {{ prefix: {p}, med: 7, communities: [\"65001:100\"] }}\n");
    }
    yaml
}

/// GET on a unix socket of the state dir.
fn get(socket: &std::path::Path, path: &str) -> Result<Value, String> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).map_err(|e| e.to_string())?;
    write!(s, "GET {path} HTTP/1.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut response = String::new();
    s.read_to_string(&mut response).map_err(|e| e.to_string())?;
    let (_, body) = response.split_once("\r\n\r\n").ok_or("no HTTP response")?;
    serde_json::from_str(body).map_err(|e| e.to_string())
}

/// Starts a successor and waits until it reports the completed takeover;
/// checks the old agent reports itself retired and exits 0 at once on SIGTERM.
fn hand_over(link: &Link, old: &mut Agent, yaml: &str, n: usize) -> Agent {
    let old_pid = old.daemon.child.id();
    let new = Agent::successor(&link.a, &link.dir, yaml, &[], &format!("agent-{n}.log"));
    let new_pid = new.daemon.child.id();
    let report =
        eventually(Duration::from_secs(30), "the successor to report its takeover", || {
            let s = new.status()?;
            if s["pid"] != new_pid {
                return Err(format!("control.sock is still pid {}", s["pid"]));
            }
            match &s["last_handoff"] {
                h if h["result"] == "completed" => Ok(h.clone()),
                h => Err(format!("last handoff {h}")),
            }
        });
    assert_eq!(report["other"]["pid"], old_pid, "{report}");
    assert_eq!(report["listeners"], 2, "{report}");
    let retired = get(&old.state_dir.join(format!("retired-{old_pid}.sock")), "/status").unwrap();
    assert_eq!(retired["role"], "retired", "{retired}");
    assert_eq!(retired["successor"]["pid"], new_pid, "{retired}");
    assert_eq!(retired["peers"], Value::Array(vec![]), "a retired agent holds nothing");
    old.daemon.signal("TERM");
    let status = old.daemon.wait_exit(Duration::from_secs(2));
    assert!(status.success(), "retired agent exited with {status}");
    new
}

fn routes_received(agent: &Agent, peer: &str) -> Result<u64, String> {
    agent.peer(peer)?["routes_received"].as_u64().ok_or_else(|| "no routes_received".into())
}

fn wait_received(agent: &Agent, peer: &str, want: u64) {
    eventually(Duration::from_secs(60), &format!("the agent to hold {want} routes"), || {
        match routes_received(agent, peer)? {
            n if n == want => Ok(()),
            n => Err(format!("{n} routes")),
        }
    });
}

fn ours(router: &dyn Router) -> Result<BTreeMap<String, RouteView>, String> {
    router.learnt(false)
}

const UNDER_LOAD: u32 = 10_000;
const CHURN: u32 = 50;
const UPGRADES: usize = 20;

/// 20 handoffs back to back while the router keeps sending UPDATEs.
fn upgrade_under_load(
    test: &str,
    start: impl for<'a> FnOnce(&'a Link, &RouterSetup) -> Box<dyn Router + Sync + 'a>,
) {
    let link = &Link::new(test);
    let mut router = start(link, &setup(UNDER_LOAD, CHURN));
    let yaml = config(link, UNDER_LOAD);
    let mut agent = Agent::start(&link.a, &link.dir, &yaml);
    agent.wait_established(&link.b_v4);
    let from_router = u64::from(UNDER_LOAD + CHURN);
    wait_received(&agent, &link.b_v4, from_router);
    let before = eventually(Duration::from_secs(60), "our routes at the router", || {
        let got = ours(&*router)?;
        if got.len() == UNDER_LOAD as usize {
            Ok(got)
        } else {
            Err(format!("{} routes", got.len()))
        }
    });
    router.watch();
    let session =
        eventually(Duration::from_secs(10), "the router's session view", || router.session());
    let transitions = agent.peer(&link.b_v4).unwrap()["established_transitions"].clone();
    let churning = AtomicBool::new(true);
    // A failed assertion below must stop the churn too, or the scope would
    // wait for it forever.
    struct StopChurn<'a>(&'a AtomicBool);
    impl Drop for StopChurn<'_> {
        fn drop(&mut self) {
            self.0.store(false, Ordering::Relaxed);
        }
    }
    let mut pauses = Vec::new();
    std::thread::scope(|s| {
        let flaps = s.spawn(|| {
            let mut flaps = 0;
            while churning.load(Ordering::Relaxed) {
                router.churn(false);
                router.churn(true);
                flaps += 1;
            }
            flaps
        });
        let stop = StopChurn(&churning);
        for n in 0..UPGRADES {
            agent = hand_over(link, &mut agent, &yaml, n);
            let report = agent.status().unwrap()["last_handoff"].clone();
            let pause = report["pause_ms"].as_f64();
            assert!(pause.is_some_and(|p| p > 0.0), "upgrade {n}: no pause reported: {report}");
            pauses.extend(pause);
            assert_eq!(router.session().unwrap(), session, "{}: after upgrade {n}", router.kind());
            assert_eq!(router.withdrawals(), 0, "{}: withdrawals after upgrade {n}", router.kind());
            assert_eq!(router.stale().unwrap(), 0, "{}: stale after upgrade {n}", router.kind());
            let peer = agent.peer(&link.b_v4).unwrap();
            assert_eq!(peer["state"], "Established");
            assert_eq!(peer["established_transitions"], transitions, "{peer}");
        }
        drop(stop);
        let flaps = flaps.join().unwrap();
        assert!(flaps > 0, "the router never flapped its routes during the upgrades");
        eprintln!(
            "{}: {UPGRADES} upgrades during {flaps} flaps; pauses (ms): {pauses:.2?}",
            router.kind()
        );
    });
    // Everything the router sent arrived exactly once, and it still has
    // exactly what it had from us.
    wait_received(&agent, &link.b_v4, from_router);
    assert_eq!(ours(&*router).unwrap(), before, "{}: our routes changed", router.kind());
    assert_eq!(router.session().unwrap(), session);
    assert_eq!(router.withdrawals(), 0);
    // The last agent's log tells the session's whole story, carried from
    // agent to agent: Established once, then one handoff per upgrade, each
    // with every route, and nothing else (no down, no reconnection).
    let events = agent.show(&["events", &link.b_v4]).unwrap();
    let kinds: Vec<&str> =
        events.lines().skip(1).filter_map(|l| l.split_whitespace().nth(2)).collect();
    let story = kinds.iter().skip_while(|k| **k != "established").copied().collect::<Vec<_>>();
    let mut want = vec!["established"];
    want.extend(std::iter::repeat_n("handoff", UPGRADES));
    assert_eq!(story, want, "{events}");
    assert!(!kinds.contains(&"down"), "{events}");
    // (How many of the router's routes it holds depends on the churn.)
    let taken = "with all its routing state: ";
    let to_it = format!(", {UNDER_LOAD} to it");
    assert!(events.contains(taken) && events.contains(&to_it), "{events}");
}

#[test]
fn upgrade_under_load_gobgpd() {
    upgrade_under_load("ho-load-gobgp", |link, setup| Box::new(Gobgp::start(link, setup)));
}

#[test]
fn upgrade_under_load_bird() {
    upgrade_under_load("ho-load-bird", |link, setup| Box::new(Bird::start(link, setup)));
}

#[test]
fn upgrade_under_load_frr() {
    upgrade_under_load("ho-load-frr", |link, setup| Box::new(Frr::start(link, setup)));
}

const SMALL: u32 = 500;

/// Waits until the router holds our `SMALL` routes.
fn wait_small_table(router: &dyn Router) {
    eventually(Duration::from_secs(30), "our routes at the router", || match ours(router)?.len() {
        n if n == SMALL as usize => Ok(()),
        n => Err(format!("{n} routes")),
    });
}

/// One handoff interrupted at `step` by SIGKILL of the agent stopped there:
/// the router keeps every route (live, or stale under Graceful Restart) and
/// then one agent serves them, fresh.
fn killed_at(step: &str) {
    let link = Link::new(&format!("ho-kill-{}", step.replace(':', "-")));
    let mut router = Gobgp::start(&link, &setup(0, 0));
    let yaml = config(&link, SMALL);
    let stop_at = [("NONSTOP_TEST_HANDOFF_STOP_AT", step)];
    let killing_old = step.starts_with("old:");
    let mut old = Agent::successor(
        &link.a,
        &link.dir,
        &yaml,
        if killing_old { &stop_at } else { &[] },
        "agent-old.log",
    );
    old.wait_established(&link.b_v4);
    wait_small_table(&router);
    router.watch();
    let mut new = Agent::successor(
        &link.a,
        &link.dir,
        &yaml,
        if killing_old { &[] } else { &stop_at },
        "agent-new.log",
    );
    let victim = if killing_old { &mut old } else { &mut new };
    eventually(Duration::from_secs(20), &format!("the agent to stop at {step}"), || {
        if victim.daemon.is_stopped() { Ok(()) } else { Err("running".to_string()) }
    });
    victim.daemon.signal("KILL");
    victim.daemon.wait_exit(Duration::from_secs(5));

    // Killed after it committed, the successor leaves nobody active (the
    // predecessor retired): a supervisor starts a fresh agent, as the
    // kubelet would.
    let _fresh = (step == "new:commit")
        .then(|| Agent::successor(&link.a, &link.dir, &yaml, &[], "agent-fresh.log"));
    eventually(Duration::from_secs(60), "one agent serving every route, fresh", || {
        let status = get(&link.dir.join("agent-state/control.sock"), "/status")?;
        if status["role"] != "active" {
            return Err(format!("role {}", status["role"]));
        }
        let peer = &status["peers"][0];
        if peer["state"] != "Established" {
            return Err(format!("agent {} is {}", status["pid"], peer["state"]));
        }
        let (held, stale) = (ours(&router)?.len(), Router::stale(&router)?);
        if (held, stale) != (SMALL as usize, 0) {
            return Err(format!("router holds {held}, {stale} stale"));
        }
        Ok(())
    });
    assert_eq!(router.withdrawals(), 0, "withdrawals after a kill at {step}");
}

macro_rules! kill_matrix {
    ($($name:ident: $step:literal,)*) => {$(
        #[test]
        fn $name() {
            killed_at($step);
        }
    )*};
}

kill_matrix! {
    kill_predecessor_after_welcome: "old:welcome",
    kill_predecessor_after_listeners: "old:listeners",
    kill_predecessor_after_sessions: "old:sessions",
    kill_predecessor_after_done: "old:done",
    kill_predecessor_after_commit: "old:commit",
    kill_predecessor_after_retire: "old:retire",
    kill_successor_after_welcome: "new:welcome",
    kill_successor_after_listeners: "new:listeners",
    kill_successor_after_sessions: "new:sessions",
    kill_successor_after_commit: "new:commit",
}

/// An agent serving the small table to gobgpd, the router watched from
/// here on; and the router's view of the session.
fn serving_small(link: &Link) -> (Gobgp<'_>, String, Agent, SessionView) {
    serving_small_with(link, config(link, SMALL))
}

/// The same, the agent started with `yaml`.
fn serving_small_with(link: &Link, yaml: String) -> (Gobgp<'_>, String, Agent, SessionView) {
    let mut router = Gobgp::start(link, &setup(0, 0));
    let old = Agent::start(&link.a, &link.dir, &yaml);
    old.wait_established(&link.b_v4);
    wait_small_table(&router);
    router.watch();
    let session = router.session().unwrap();
    (router, yaml, old, session)
}

/// A pod whose agent failed a handoff is being rolled back; the kubelet may
/// restart its container before the deletion lands. That second run of the
/// same pod (same name, same creation time) is refused and the predecessor
/// keeps serving; a new pod (another creation time) takes over.
#[test]
fn a_successor_pod_that_failed_gets_no_second_try() {
    let link = Link::new("ho-second-try");
    let (router, yaml, old, session) = serving_small(&link);
    let pod = [("NONSTOP_POD", "edge-node-1-new"), ("NONSTOP_POD_CREATED_MS", "1000")];
    let stop = [pod[0], pod[1], ("NONSTOP_TEST_HANDOFF_STOP_AT", "new:welcome")];
    let mut first = Agent::successor(&link.a, &link.dir, &yaml, &stop, "agent-first.log");
    eventually(Duration::from_secs(20), "the first run to stop at new:welcome", || {
        if first.daemon.is_stopped() { Ok(()) } else { Err("running".to_string()) }
    });
    first.daemon.signal("KILL");
    first.daemon.wait_exit(Duration::from_secs(5));

    let mut again = Agent::successor(&link.a, &link.dir, &yaml, &pod, "agent-again.log");
    let status = again.daemon.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "the second run of the failed pod took over");
    let log = again.daemon.log_text();
    assert!(log.contains("already failed a handoff"), "{log}");
    let serving = old.status().unwrap();
    assert_eq!(serving["role"], "active", "{serving}");
    assert_eq!(serving["last_handoff"]["result"], "refused", "{serving}");

    let newer = [("NONSTOP_POD", "edge-node-1-new"), ("NONSTOP_POD_CREATED_MS", "2000")];
    let next = Agent::successor(&link.a, &link.dir, &yaml, &newer, "agent-next.log");
    eventually(Duration::from_secs(30), "a new pod's takeover", || {
        let s = next.status()?;
        if s["role"] == "active"
            && s["pod"] == "edge-node-1-new"
            && s["last_handoff"]["result"] == "completed"
        {
            Ok(())
        } else {
            Err(s.to_string())
        }
    });
    assert_eq!(router.session().unwrap(), session, "the router's session moved");
    assert_eq!(router.withdrawals(), 0);
}

/// A successor that stops answering: the predecessor rolls back as if
/// nothing happened, the successor, woken up, exits non-zero saying so.
/// Stopped while the tables are copied (nothing paused yet), the
/// predecessor gives up after 10 s without a READY; stopped once every
/// session is frozen, when its pause budget (a third of the hold time) runs
/// out without a COMMIT.
#[test]
fn a_frozen_successor_is_rolled_back() {
    let link = Link::new("ho-sigstop");
    let (router, yaml, old, session) = serving_small(&link);
    for (i, (stop_at, reason)) in
        [("new:welcome", "READY"), ("new:listeners", "COMMIT")].into_iter().enumerate()
    {
        let mut new = Agent::successor(
            &link.a,
            &link.dir,
            &yaml,
            &[("NONSTOP_TEST_HANDOFF_STOP_AT", stop_at)],
            &format!("agent-new-{i}.log"),
        );
        let pid = new.daemon.child.id();
        let report = eventually(Duration::from_secs(20), "the predecessor to roll back", || {
            let h = old.status()?["last_handoff"].clone();
            if h["result"] == "rolled-back" && h["other"]["pid"] == pid {
                Ok(h)
            } else {
                Err(h.to_string())
            }
        });
        assert!(report["reason"].as_str().unwrap().contains(reason), "{stop_at}: {report}");
        assert!(new.daemon.is_stopped());
        new.daemon.signal("CONT");
        let status = new.daemon.wait_exit(Duration::from_secs(10));
        assert!(!status.success());
        let log = new.daemon.log_text();
        assert!(log.contains("handoff failed, the running agent keeps serving"), "{log}");
        let peer = old.wait_established(&link.b_v4);
        assert_eq!(peer["established_transitions"], 1);
        assert_eq!(router.session().unwrap(), session);
        assert_eq!(router.withdrawals(), 0);
        assert_eq!(ours(&router).unwrap().len(), SMALL as usize);
    }
}

/// Successors that cannot carry on are refused at HELLO: nothing moves.
#[test]
fn incompatible_successors_are_refused() {
    let link = Link::new("ho-refused");
    let (router, yaml, old, session) = serving_small(&link);
    let cases = [
        ("NONSTOP_TEST_STATE_SCHEMA", "2", "reads session state schema 2; this agent writes 1"),
        (
            "NONSTOP_TEST_CANNOT_CARRY",
            "graceful-restart",
            "cannot carry GracefulRestart, negotiated with",
        ),
    ];
    for (i, (var, value, why)) in cases.into_iter().enumerate() {
        let mut new = Agent::successor(
            &link.a,
            &link.dir,
            &yaml,
            &[(var, value)],
            &format!("agent-bad-{i}.log"),
        );
        let status = new.daemon.wait_exit(Duration::from_secs(10));
        assert_eq!(status.code(), Some(2), "{var}={value}");
        let log = new.daemon.log_text();
        assert!(log.contains("refused the handoff") && log.contains(why), "{log}");
        let report = old.status().unwrap()["last_handoff"].clone();
        assert_eq!(report["result"], "refused", "{report}");
        assert!(report["reason"].as_str().unwrap().contains(why), "{report}");
    }
    assert_eq!(old.peer(&link.b_v4).unwrap()["state"], "Established");
    assert_eq!(router.session().unwrap(), session);
    assert_eq!(router.withdrawals(), 0);
}

const MANY: usize = 300;

/// 300 sessions (two batches of descriptors) hand off, every one unbroken.
#[test]
fn three_hundred_sessions_hand_off() {
    let link = Link::new("ho-300");
    let (_gobgpd, peers) = gobgp_many(&link, MANY, 30);
    let mut yaml = format!("asn: {AGENT_AS}\nrouterId: {}\npeers:\n{peers}announce:\n", link.a_v4);
    for p in v4_prefixes(200, 10) {
        yaml += &format!("- {{ prefix: {p} }}\n");
    }
    let mut agent = Agent::start(&link.a, &link.dir, &yaml);
    let before =
        eventually(
            Duration::from_secs(120),
            "300 sessions at gobgpd",
            || match gobgp_many_sessions(&link)? {
                up if up.len() == MANY => Ok(up),
                up => Err(format!("{} of {MANY} Established", up.len())),
            },
        );
    assert!(before.iter().all(|s| s.2 >= 2), "routes and End-of-RIB on every session");
    agent = hand_over(&link, &mut agent, &yaml, 0);
    let report = agent.status().unwrap()["last_handoff"].clone();
    assert_eq!(report["sessions"], MANY, "{report}");
    // The longest pause any of the 300 saw, reported as the successor served.
    assert!(report["pause_ms"].as_f64().is_some_and(|p| p > 0.0), "{report}");
    eprintln!(
        "300 sessions: pause {} ms, {} bytes of state",
        report["pause_ms"], report["state_bytes"]
    );
    assert!(gobgp_many_sessions(&link).unwrap() == before, "a session at gobgpd changed");
    let established = agent.status().unwrap()["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["state"] == "Established" && p["established_transitions"] == 1)
        .count();
    assert_eq!(established, MANY);
}

/// The tests' own yardstick: the same session, within BIRD's display jitter.
#[test]
fn a_session_is_the_same_within_a_few_milliseconds_only() {
    let v = |since: &str, updates| SessionView { since: since.into(), updates };
    let cases = [
        (v("23:27:53.751 Established", 10), v("23:27:53.752 Established", 10), true),
        (v("23:27:53.999 Established", 10), v("23:27:54.001 Established", 10), true),
        (v("23:27:53.751 Established", 10), v("23:27:55.751 Established", 10), false),
        (v("23:27:53.751 Established", 10), v("23:27:53.751 Established", 11), false),
        (v("1", 10), v("2", 10), false),
        (v("1", 10), v("1", 10), true),
    ];
    for (a, b, same) in cases {
        assert_eq!(a == b, same, "{a:?} vs {b:?}");
    }
}

/// The successor took the node over, then died for good (a supervisor that
/// gives up, an image that crashes on start): the retired predecessor,
/// finding no active agent for half the Graceful Restart time, exits
/// non-zero saying why, so that its supervisor (the kubelet) restarts it —
/// and the restarted agent takes the node back while the router still holds
/// the routes.
#[test]
fn a_retired_agent_gives_the_node_back_when_its_successor_dies() {
    let link = Link::new("ho-orphan");
    // restartTime 12: the router keeps the routes 12 s; a retired agent
    // waits half of that for a successor.
    let gr12 = config(&link, SMALL).replace("restartTime: 30", "restartTime: 12");
    let (router, yaml, mut old, _) = serving_small_with(&link, gr12);
    let mut new = Agent::successor(&link.a, &link.dir, &yaml, &[], "agent-new.log");
    let new_pid = new.daemon.child.id();
    eventually(Duration::from_secs(30), "the successor's takeover", || {
        let s = new.status()?;
        let done = s["pid"] == new_pid && s["last_handoff"]["result"] == "completed";
        if done { Ok(()) } else { Err(s["last_handoff"].to_string()) }
    });
    new.daemon.signal("KILL");
    new.daemon.wait_exit(Duration::from_secs(5));

    let status = old.daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "the orphaned agent exits non-zero: {status}");
    let log = old.daemon.log_text();
    assert!(log.contains("no agent is active on this node"), "{log}");
    assert!(log.contains("the successor died"), "{log}");

    // Restarted (as the kubelet would): it takes the node back.
    takes_the_node_back(&link, &yaml, &router);
}

/// A restarted agent serves the node again: every route fresh at the
/// router, which never withdrew one meanwhile.
fn takes_the_node_back(link: &Link, yaml: &str, router: &Gobgp<'_>) {
    let back = Agent::successor(&link.a, &link.dir, yaml, &[], "agent-back.log");
    back.wait_established(&link.b_v4);
    eventually(Duration::from_secs(30), "every route fresh at the router", || {
        let (held, stale) = (ours(router)?.len(), Router::stale(router)?);
        if (held, stale) == (SMALL as usize, 0) {
            Ok(())
        } else {
            Err(format!("{held}, {stale} stale"))
        }
    });
    assert_eq!(router.withdrawals(), 0, "no withdrawal while the node had no agent");
}

/// An older pod's agent, restarted after a newer one took the node (its
/// container crashed mid-handoff, say), does not take the node back: it
/// exits 0 and the newer agent keeps serving, untouched.
#[test]
fn an_older_pods_agent_never_takes_the_node_back() {
    let link = Link::new("ho-older");
    let mut router = Gobgp::start(&link, &setup(0, 0));
    let yaml = config(&link, SMALL);
    let newer = [("NONSTOP_POD_CREATED_MS", "1800000002000")];
    let active = Agent::successor(&link.a, &link.dir, &yaml, &newer, "agent-newer.log");
    active.wait_established(&link.b_v4);
    wait_small_table(&router);
    router.watch();
    let session = router.session().unwrap();

    let older = [("NONSTOP_POD_CREATED_MS", "1800000001000")];
    let mut old = Agent::successor(&link.a, &link.dir, &yaml, &older, "agent-older.log");
    let status = old.daemon.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "the older pod's agent exits 0: {status}");
    let log = old.daemon.log_text();
    assert!(log.contains("the agent of a newer pod is active on this node"), "{log}");
    let peer = active.wait_established(&link.b_v4);
    assert_eq!(peer["established_transitions"], 1, "the newer agent's session never moved");
    assert!(active.status().unwrap()["last_handoff"].is_null(), "no handoff was asked of it");
    assert_eq!(router.session().unwrap(), session);
    assert_eq!(router.withdrawals(), 0);

    // A newer pod's agent still takes over, as in every upgrade.
    let newest = [("NONSTOP_POD_CREATED_MS", "1800000003000")];
    let next = Agent::successor(&link.a, &link.dir, &yaml, &newest, "agent-newest.log");
    let next_pid = next.daemon.child.id();
    eventually(Duration::from_secs(30), "the newest agent's takeover", || {
        let s = next.status()?;
        let done = s["pid"] == next_pid && s["last_handoff"]["result"] == "completed";
        if done { Ok(()) } else { Err(s["last_handoff"].to_string()) }
    });
    assert_eq!(router.session().unwrap(), session);
}

/// A successor whose pod is deleted while it takes over (SIGTERM before it
/// serves) stops without a withdrawal: the routers keep the routes, and the
/// retired predecessor, finding no agent, gives the node back.
#[test]
fn a_successor_told_to_stop_while_taking_over_withdraws_nothing() {
    let link = Link::new("ho-early");
    // restartTime 12: the router keeps the routes 12 s; a retired agent
    // waits half of that for a successor.
    let gr12 = config(&link, SMALL).replace("restartTime: 30", "restartTime: 12");
    let (router, yaml, mut old, _) = serving_small_with(&link, gr12);
    let stop_at = [("NONSTOP_TEST_HANDOFF_STOP_AT", "new:commit")];
    let mut new = Agent::successor(&link.a, &link.dir, &yaml, &stop_at, "agent-new.log");
    eventually(Duration::from_secs(20), "the successor to stop at new:commit", || {
        if new.daemon.is_stopped() { Ok(()) } else { Err("running".to_string()) }
    });
    new.daemon.signal("TERM");
    new.daemon.signal("CONT");
    let status = new.daemon.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let log = new.daemon.log_text();
    assert!(log.contains("told to stop while starting") && log.contains("Restart"), "{log}");

    let status = old.daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(2), "the retired agent gives the node back: {status}");
    takes_the_node_back(&link, &yaml, &router);
}

/// A successor whose config no longer has a peer (a spec change rolled
/// out) ends that session for good: a Hard Reset under the N-bit, so the
/// router keeps none of our routes stale for a session nobody resumes.
#[test]
fn a_peer_the_successors_config_drops_is_let_go_for_good() {
    let link = Link::new("dropped");
    let router = Gobgp::start(&link, &setup(0, 0));
    let yaml = config(&link, 2);
    let agent = Agent::start(&link.a, &link.dir, &yaml);
    agent.wait_established(&link.b_v4);
    eventually(Duration::from_secs(10), "our 2 prefixes at the router", || {
        let n = ours(&router)?.len();
        if n == 2 { Ok(()) } else { Err(format!("{n} prefixes")) }
    });
    // The new config peers with another router instead (absent here).
    let other = yaml.replace(&format!("address: {}", link.b_v4), "address: 10.77.9.1");
    let _new = agent.hand_over(&link.a, &link.dir, &other, "successor.log");
    eventually(Duration::from_secs(10), "our routes gone from the router, none stale", || {
        let (left, stale) = (ours(&router)?.len(), Router::stale(&router)?);
        if left == 0 && stale == 0 { Ok(()) } else { Err(format!("{left} left, {stale} stale")) }
    });
    // Not a graceful restart that happened to end: the router was told.
    let down = router.last_reset().unwrap();
    assert!(!down.contains("graceful-restart"), "the router kept our routes stale: {down}");
}
