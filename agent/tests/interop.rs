//! The agent against real routers from Debian's packages, each in its own
//! network namespace: sessions over IPv4 and IPv6 transport, 1,000 prefixes
//! each way per family, a reload that withdraws exactly what it removed, and
//! timers both sides agree on.
//!
//! Needs root (network namespaces) and gobgpd, bird2 and frr installed;
//! `script/test` installs them.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use support::routers::{
    AGENT_AS, Bird, Frr, Gobgp, ROUTER_AS, RouteView, Router, RouterSetup, Timers,
};
use support::{Agent, Link, eventually, v4_prefixes, v6_prefixes};

const ROUTES: u32 = 1000;

fn agent_config(link: &Link, v4: &[String], v6: &[String]) -> String {
    let mut yaml =
        format!("asn: {AGENT_AS}\nrouterId: {}\nlisten: \"[::]:179\"\npeers:\n", link.a_v4);
    for (address, family) in [(&link.b_v4, "ipv4-unicast"), (&link.b_v6, "ipv6-unicast")] {
        yaml += &format!(
            "  - address: {address}\n    asn: {ROUTER_AS}\n    holdTime: 30\n    connectRetryTime: 1\n    families: [{family}]\n"
        );
    }
    yaml += "announce:\n";
    for p in v4.iter().chain(v6) {
        yaml += &format!("  - {{ prefix: {p}, med: 7, communities: [\"65001:100\"] }}\n");
    }
    yaml
}

fn expected(prefixes: &[String], next_hop: &str) -> BTreeMap<String, RouteView> {
    prefixes
        .iter()
        .map(|p| {
            let view = RouteView {
                next_hop: next_hop.to_string(),
                as_path: vec![u64::from(AGENT_AS)],
                med: Some(7),
                communities: vec!["65001:100".into()],
            };
            (p.clone(), view)
        })
        .collect()
}

fn wait_learnt(router: &dyn Router, v6: bool, want: &BTreeMap<String, RouteView>) {
    let what = format!(
        "{} to hold exactly the {} expected {} routes",
        router.kind(),
        want.len(),
        if v6 { "IPv6" } else { "IPv4" }
    );
    eventually(Duration::from_secs(30), &what, || {
        let got = router.learnt(v6)?;
        if &got == want {
            return Ok(());
        }
        let missing = want.keys().filter(|k| !got.contains_key(*k)).count();
        let extra = got.keys().filter(|k| !want.contains_key(*k)).count();
        let differ = want.iter().find(|(k, v)| got.get(*k).is_some_and(|g| g != *v));
        Err(format!(
            "{} routes, {missing} missing, {extra} extra, first differing: {differ:?} vs {:?}",
            got.len(),
            differ.and_then(|(k, _)| got.get(k))
        ))
    });
}

/// The whole scenario against one router.
fn interop(test: &str, start: impl for<'a> FnOnce(&'a Link, &RouterSetup) -> Box<dyn Router + 'a>) {
    let link = Link::new(test);
    let setup = RouterSetup {
        hold_time: 9,
        keepalive: 3,
        originate_v4: v4_prefixes(1, ROUTES),
        originate_v6: v6_prefixes(1, ROUTES),
        ..Default::default()
    };
    let mut router = start(&link, &setup);
    let ours_v4 = v4_prefixes(200, ROUTES);
    let ours_v6 = v6_prefixes(0x200, ROUTES);
    let agent = Agent::start(&link.a, &link.dir, &agent_config(&link, &ours_v4, &ours_v6));

    // Sessions over both transports.
    let v4_peer = agent.wait_established(&link.b_v4);
    let v6_peer = agent.wait_established(&link.b_v6);

    // Hold time: min(agent 30, router 9) = 9; keepalive: min(30/3, 9/3) = 3,
    // and both sides say so.
    for (peer, neighbor) in [(&v4_peer, &link.a_v4), (&v6_peer, &link.a_v6)] {
        assert_eq!(
            (peer["hold_time"].as_u64(), peer["keepalive_time"].as_u64()),
            (Some(9), Some(3)),
            "agent: {peer}"
        );
        let timers =
            eventually(Duration::from_secs(10), "router timers", || router.timers(neighbor));
        assert_eq!(timers, Timers { hold: 9, keepalive: 3 }, "{}", router.kind());
    }

    // Our 1,000 prefixes per family at the router, with the right attributes.
    wait_learnt(&*router, false, &expected(&ours_v4, &link.a_v4));
    wait_learnt(&*router, true, &expected(&ours_v6, &link.a_v6));

    // The router's 1,000 prefixes per family in the agent's status.
    for address in [&link.b_v4, &link.b_v6] {
        eventually(Duration::from_secs(30), "the router's routes in the agent's status", || {
            let p = agent.peer(address)?;
            if p["routes_received"] == ROUTES { Ok(()) } else { Err(p.to_string()) }
        });
    }

    // A reload that removes 10 IPv4 prefixes withdraws exactly those 10, and
    // resets nothing.
    router.watch();
    agent.reload(&agent_config(&link, &ours_v4[10..], &ours_v6));
    wait_learnt(&*router, false, &expected(&ours_v4[10..], &link.a_v4));
    // The router's own event stream saw exactly those 10 withdrawals (this is
    // also what proves the withdrawal counters the Graceful Restart tests use).
    eventually(Duration::from_secs(5), "10 withdrawals in the router's events", || {
        match router.withdrawals() {
            10 => Ok(()),
            n => Err(format!("{n} withdrawals")),
        }
    });
    wait_learnt(&*router, true, &expected(&ours_v6, &link.a_v6));
    for address in [&link.b_v4, &link.b_v6] {
        let p = agent.peer(address).unwrap();
        assert_eq!(p["established_transitions"], 1, "a session was reset by the reload: {p}");
        assert_eq!(
            p["routes_advertised"],
            if *address == link.b_v4 { ROUTES - 10 } else { ROUTES }
        );
    }
    // ROUTE-REFRESH: the router asks again, we send everything again, and the
    // router ends with exactly the same routes.
    let sent_before = agent.peer(&link.b_v4).unwrap()["messages_sent"].as_u64().unwrap();
    if router.refresh(&link.a_v4) {
        let refresh = format!(
            "nonstop_bgp_messages_total{{peer=\"{}\",direction=\"received\",kind=\"route_refresh\"}} 1",
            link.b_v4
        );
        eventually(Duration::from_secs(10), "the ROUTE-REFRESH at the agent", || {
            let m = agent.get("/metrics")?;
            if m.contains(&refresh) { Ok(()) } else { Err(format!("no `{refresh}`")) }
        });
        // The status is published a moment after the metric counts it.
        eventually(Duration::from_secs(10), "everything sent again", || {
            let sent = agent.peer(&link.b_v4)?["messages_sent"].as_u64().unwrap_or(0);
            if sent > sent_before {
                Ok(())
            } else {
                Err(format!("{sent} messages sent, as before"))
            }
        });
        wait_learnt(&*router, false, &expected(&ours_v4[10..], &link.a_v4));
    }

    // The admin address serves the same document over HTTP.
    let fetch = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9179/status', timeout=5).read().decode())";
    let out = link.a.exec(&["python3", "-c", fetch]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let over_http: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let over_socket = agent.status().unwrap();
    assert_eq!(over_http["pid"], over_socket["pid"]);
    assert_eq!(over_http["peers"].as_array().map(Vec::len), Some(2), "{over_http}");

    // Metrics say the same as the status.
    for address in [&link.b_v4, &link.b_v6] {
        let lines = [
            format!("nonstop_bgp_session_established{{peer=\"{address}\"}} 1"),
            format!("nonstop_bgp_routes{{peer=\"{address}\",direction=\"received\"}} {ROUTES}"),
            format!(
                "nonstop_bgp_messages_total{{peer=\"{address}\",direction=\"received\",kind=\"update\"}}"
            ),
        ];
        eventually(Duration::from_secs(5), "the metrics to match the status", || {
            let metrics = agent.get("/metrics")?;
            match lines.iter().find(|l| !metrics.contains(l.as_str())) {
                None => Ok(()),
                Some(missing) => Err(format!("no `{missing}` in\n{metrics}")),
            }
        });
    }
    // `show peers` says what the router's own table says: what it learnt
    // from us is our ADVERTISED, what it originates our ACCEPTED.
    let rows = agent.show_peers();
    for (address, v6, originated) in
        [(&link.b_v4, false, &setup.originate_v4), (&link.b_v6, true, &setup.originate_v6)]
    {
        let row = rows.iter().find(|r| r["PEER"] == **address);
        let row = row.unwrap_or_else(|| panic!("no row for {address} in {rows:?}"));
        let learnt = router.learnt(v6).unwrap().len();
        assert_eq!(row["STATE"], "Established", "{row:?}");
        assert_eq!(
            row["ADVERTISED"],
            learnt.to_string(),
            "{} learnt {learnt}: {row:?}",
            router.kind()
        );
        assert_eq!(row["ACCEPTED"], originated.len().to_string(), "{row:?}");
        assert_eq!((row["STALE"].as_str(), row["LAST ERROR"].as_str()), ("0", "-"), "{row:?}");
    }

    // `show routes`: the router's routes prefix by prefix, with the next
    // hop and AS path it sent, and ours as the router learnt them.
    for (address, v6, originated) in
        [(&link.b_v4, false, &setup.originate_v4), (&link.b_v6, true, &setup.originate_v6)]
    {
        let body = agent.get(&format!("/routes?peer={address}")).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
        let peers = doc["peers"].as_array().unwrap();
        assert_eq!(peers.len(), 1, "only the peer asked for: {body}");
        let rows = |table: &str| peers[0][table].as_array().cloned().unwrap_or_default();
        let received: BTreeSet<String> =
            rows("received").iter().map(|r| r["prefix"].as_str().unwrap().to_string()).collect();
        assert_eq!(
            received,
            originated.iter().cloned().collect::<BTreeSet<_>>(),
            "{}",
            router.kind()
        );
        for row in rows("received") {
            assert_eq!(row["as_path"], ROUTER_AS.to_string(), "{row}");
            assert!(row["stale"].is_null(), "{row}");
            if !v6 {
                assert_eq!(row["next_hop"], **address, "{row}");
            }
        }
        let learnt = router.learnt(v6).unwrap();
        let advertised = rows("advertised");
        let prefixes: BTreeSet<String> =
            advertised.iter().map(|r| r["prefix"].as_str().unwrap().to_string()).collect();
        assert_eq!(prefixes, learnt.keys().cloned().collect::<BTreeSet<_>>(), "{}", router.kind());
        for row in advertised {
            let view = &learnt[row["prefix"].as_str().unwrap()];
            assert_eq!(row["med"], 7, "{row}");
            assert_eq!(row["communities"], serde_json::json!(view.communities), "{row}");
        }
    }
    let text = agent.show(&["routes", &link.b_v4]).unwrap();
    let learnt = router.learnt(false).unwrap().len();
    let first = format!(
        "{} (AS {ROUTER_AS}, Established): {ROUTES} received, {learnt} advertised",
        link.b_v4
    );
    assert!(text.starts_with(&first), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  RECEIVED") && l.contains("NEXT HOP")), "{text}");

    let build = format!(
        "nonstop_build_info{{component=\"agent\",version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    let metrics = agent.get("/metrics").unwrap();
    assert!(metrics.contains(&build), "no `{build}` in\n{metrics}");

    // The router resets the session: `show events` tells it with the
    // router's NOTIFICATION decoded. (gobgpd then waits 30 s before it takes
    // the session up again.)
    router.reset();
    let events = eventually(Duration::from_secs(30), "the reset in show events", || {
        let text = agent.show(&["events", &link.b_v4])?;
        let kinds: Vec<&str> =
            text.lines().skip(1).filter_map(|l| l.split_whitespace().nth(2)).collect();
        let reset = kinds.iter().position(|k| *k == "notification-received");
        match reset {
            Some(i) if kinds[i + 1..].starts_with(&["down"]) => Ok(text),
            _ => Err(text),
        }
    });
    let line = events.lines().find(|l| l.contains("notification-received")).unwrap();
    // What each router sends for it: FRR's `clear bgp`, under RFC 8538, is a
    // Hard Reset for a configuration change.
    let sent = match router.kind() {
        "frr" => "Cease/Hard Reset (6/9) for Cease/Other Configuration Change (6/6)",
        _ => "Cease/Administrative Reset (6/4)",
    };
    assert!(line.ends_with(sent), "{} sends {sent}: {events}", router.kind());
    assert!(events.lines().nth(1).unwrap().contains("established"), "the first event: {events}");
    assert!(!events.contains(&link.b_v6), "only the peer asked for: {events}");
    assert!(!agent.daemon.log_text().contains("panicked"), "{}", agent.daemon.log_text());
}

#[test]
fn interop_gobgpd() {
    interop("gobgpd", |link, setup| Box::new(Gobgp::start(link, setup)));
}

#[test]
fn interop_bird() {
    interop("bird", |link, setup| Box::new(Bird::start(link, setup)));
}

#[test]
fn interop_frr() {
    interop("frr", |link, setup| Box::new(Frr::start(link, setup)));
}
