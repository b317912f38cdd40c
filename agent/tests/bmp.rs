//! BMP export (RFC 7854, RFC 8671) as a real collector reads it: pmacct's
//! `pmbmpd` runs beside the router, and its JSON message log is what the
//! test checks, as a network team's monitoring would.
//!
//! - the collector comes up after the session: the agent connects, and it
//!   is told the session (Peer Up) and every route each way (the replay);
//! - the router changes routes: Route Monitoring follows, live;
//! - an upgrade (a handoff to a successor agent): the collector sees no
//!   Peer Down, no new Initiation, no reconnection, and the successor's
//!   routes keep coming on the same connection;
//! - a reset by the router: Peer Down with its NOTIFICATION; a restarted
//!   collector: told everything again; the agent stopping: Peer Down,
//!   then Termination.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::routers::{AGENT_AS, Gobgp, GrSetup, ROUTER_AS, Router, RouterSetup};
use support::{Agent, Daemon, Link, eventually, v4_prefixes};

const PORT: u16 = 1790;

/// pmbmpd on the router's side, logging every message as JSON.
fn collector(link: &Link) -> (Daemon, std::path::PathBuf) {
    let messages = link.dir.join("bmp-messages.json");
    let conf = link.dir.join("pmbmpd.conf");
    std::fs::write(
        &conf,
        format!(
            "bmp_daemon_ip: {}\nbmp_daemon_port: {PORT}\nbmp_daemon_msglog_file: {}\n\
             bmp_daemon_msglog_output: json\n",
            link.b_v4,
            messages.display()
        ),
    )
    .unwrap();
    let daemon = Daemon::spawn(
        "pmbmpd",
        link.b.exec(&["pmbmpd", "-f", conf.to_str().unwrap()]),
        link.dir.join("pmbmpd.log"),
    );
    (daemon, messages)
}

/// The collector's log, one JSON object per message.
fn messages(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn of_type<'a>(log: &'a [Value], kind: &str) -> Vec<&'a Value> {
    log.iter().filter(|m| m["bmp_msg_type"] == kind).collect()
}

/// Prefixes announced in Route Monitoring, of what the agent received
/// (`out` false) or sent (`out` true).
fn monitored(log: &[Value], out: bool) -> BTreeSet<String> {
    of_type(log, "route_monitor")
        .into_iter()
        .filter(|m| (m["is_out"] == 1) == out && m["log_type"] == "update")
        .filter_map(|m| m["ip_prefix"].as_str().map(String::from))
        .collect()
}

fn summary(log: &[Value]) -> String {
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for m in log {
        *kinds.entry(format!("{}/{}", m["bmp_msg_type"], m["log_type"])).or_default() += 1;
    }
    format!("{kinds:?}")
}

fn config(link: &Link, announced: &[String]) -> String {
    let mut yaml = format!(
        "asn: {AGENT_AS}\nrouterId: {}\npeers:\n- address: {}\n  asn: {ROUTER_AS}\n  holdTime: 9\n  \
         keepaliveTime: 3\n  connectRetryTime: 1\n  families: [ipv4-unicast]\n  \
         gracefulRestart: {{ restartTime: 30 }}\nbmp:\n- address: {}\n  port: {PORT}\n  \
         statisticsInterval: 1\nannounce:\n",
        link.a_v4, link.b_v4, link.b_v4
    );
    for p in announced {
        yaml += &format!("- {{ prefix: {p}, communities: [\"65001:100\"] }}\n");
    }
    yaml
}

#[test]
fn a_bmp_collector_sees_every_session_and_route_and_nothing_of_an_upgrade() {
    let link = Link::new("bmp");
    let received = v4_prefixes(1, 200);
    let churn = v4_prefixes(2, 20);
    let sent = v4_prefixes(200, 50);
    let router = Gobgp::start(
        &link,
        &RouterSetup {
            hold_time: 9,
            keepalive: 3,
            originate_v4: received.clone(),
            churn_v4: churn.clone(),
            graceful_restart: Some(GrSetup { restart_time: 30, long_lived_stale_time: 0 }),
            ipv4_only: true,
            ..Default::default()
        },
    );
    router.churn(false);
    let yaml = config(&link, &sent);
    let mut old = Agent::start(&link.a, &link.dir, &yaml);
    old.wait_established(&link.b_v4);
    eventually(Duration::from_secs(30), "the agent to hold the router's table", || {
        match old.peer(&link.b_v4)?["routes_received"].as_u64() {
            Some(n) if n == received.len() as u64 => Ok(()),
            n => Err(format!("{n:?} routes")),
        }
    });

    // The collector comes up after the session: the agent's connection
    // (retried) replays the session and both tables to it.
    let (pmbmpd, path) = collector(&link);
    let want_in: BTreeSet<String> = received.iter().cloned().collect();
    let want_out: BTreeSet<String> = sent.iter().cloned().collect();
    eventually(Duration::from_secs(60), "the collector to learn both tables", || {
        let log = messages(&path);
        let (got_in, got_out) = (monitored(&log, false), monitored(&log, true));
        if of_type(&log, "peer_up").len() == 1
            && got_in == want_in
            && got_out == want_out
            && !of_type(&log, "stats").is_empty()
        {
            Ok(())
        } else {
            Err(format!("{} received, {} sent; {}", got_in.len(), got_out.len(), summary(&log)))
        }
    });
    let log = messages(&path);
    let up = of_type(&log, "peer_up")[0];
    assert_eq!(up["peer_ip"], link.b_v4, "{up}");
    assert_eq!(up["peer_asn"], ROUTER_AS, "{up}");
    assert_eq!(up["local_ip"], link.a_v4, "{up}");

    // An upgrade: the successor takes the session and the collector's
    // connection over; then the router's changes reach the collector
    // through the successor.
    let new = Agent::successor(&link.a, &link.dir, &yaml, &[], "agent-2.log");
    eventually(Duration::from_secs(30), "the successor to take over", || {
        match &new.status()?["last_handoff"] {
            h if h["result"] == "completed" => Ok(()),
            h => Err(format!("last handoff {h}")),
        }
    });
    old.daemon.signal("TERM");
    old.daemon.wait_exit(Duration::from_secs(5));
    // The successor says it writes on the predecessor's connection.
    let collector_at = format!("{}:{PORT}", link.b_v4);
    let shown = new.show(&["bmp"]).unwrap();
    let row = shown.lines().find(|l| l.starts_with(&collector_at)).unwrap_or_default();
    assert!(row.contains("up (carried on)"), "{shown}");
    let metrics = new.get("/metrics").unwrap();
    let up = format!("nonstop_bmp_up{{collector=\"{collector_at}\"}} 1");
    assert!(metrics.contains(&up), "no `{up}` in\n{metrics}");
    router.churn(true);
    let want_churn: BTreeSet<String> = churn.iter().cloned().collect();
    eventually(Duration::from_secs(30), "the successor's routes at the collector", || {
        let got = monitored(&messages(&path), false);
        match want_churn.difference(&got).count() {
            0 => Ok(()),
            n => Err(format!("{n} of the router's new routes not monitored")),
        }
    });
    let log = messages(&path);
    assert!(
        of_type(&log, "peer_down").is_empty(),
        "a Peer Down across the upgrade: {}",
        summary(&log)
    );
    assert_eq!(of_type(&log, "peer_up").len(), 1, "{}", summary(&log));
    assert_eq!(of_type(&log, "init").len(), 1, "the collector was reconnected: {}", summary(&log));
    assert!(of_type(&log, "term").is_empty(), "{}", summary(&log));
    let closed = log.iter().filter(|m| m["event_type"] == "log_close").count();
    assert_eq!(closed, 0, "the collector saw its connection close: {}", summary(&log));

    // The router resets the session: Peer Down with its NOTIFICATION
    // (reason 3: the remote system closed it with one).
    router.reset();
    let down = eventually(Duration::from_secs(30), "the reset at the collector", || {
        let log = messages(&path);
        of_type(&log, "peer_down").first().map(|m| (*m).clone()).ok_or_else(|| summary(&log))
    });
    assert_eq!(down["reason_type"], 3, "the router's NOTIFICATION: {down}");

    // The collector restarts: the agent connects again and tells the new
    // one everything, the session as it comes up again (gobgpd holds a
    // reset neighbour down for 30 s) included.
    drop(pmbmpd);
    let again = link.dir.join("bmp-messages.json");
    let _ = std::fs::remove_file(&again);
    let (_pmbmpd, path) = collector(&link);
    eventually(Duration::from_secs(90), "a restarted collector to learn both tables", || {
        let log = messages(&path);
        let (got_in, got_out) = (monitored(&log, false), monitored(&log, true));
        let all_in: BTreeSet<String> = want_in.union(&want_churn).cloned().collect();
        if of_type(&log, "peer_up").len() == 1 && got_in == all_in && got_out == want_out {
            Ok(())
        } else {
            Err(format!("{} received, {} sent; {}", got_in.len(), got_out.len(), summary(&log)))
        }
    });

    // The agent stops (a restart: sessions closed without a NOTIFICATION):
    // Peer Down (reason 2, closed locally without one), then Termination.
    let mut new = new;
    new.stop("restart");
    let down = eventually(Duration::from_secs(10), "Peer Down and Termination", || {
        let log = messages(&path);
        match (of_type(&log, "peer_down").as_slice(), of_type(&log, "term").len()) {
            ([down], 1) => Ok((*down).clone()),
            _ => Err(summary(&log)),
        }
    });
    assert_eq!(down["reason_type"], 2, "{down}");
}
