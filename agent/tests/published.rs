//! Published announcements (`PUT /announcements`, `nonstop-agent publish`),
//! watched at a real router (gobgpd):
//!
//! - a set published through the control socket is announced beside the
//!   config's prefixes, with its communities;
//! - on the admin port, a wrong token and a bad set are refused, named, and
//!   change nothing; a good one replaces the set, and the router gets only
//!   the difference;
//! - a handoff carries the set: the router receives no UPDATE;
//! - a decommission forgets it: the next agent starts without it.

mod support;

use std::time::Duration;

use support::routers::{AGENT_AS, Gobgp, ROUTER_AS, Router, RouterSetup};
use support::{AGENT, Agent, Link, eventually};

const CONFIGURED: &str = "198.51.100.0/24";
const TOKEN: &str = "a-token-of-32-characters-or-so-1";
const ADMIN: &str = "127.0.0.1:9179";

fn config(link: &Link) -> String {
    format!(
        "asn: {AGENT_AS}\nrouterId: {a}\npeers:\n- address: {b}\n  asn: {ROUTER_AS}\n  holdTime: 9\n  \
         keepaliveTime: 3\n  connectRetryTime: 1\n  families: [ipv4-unicast]\n\
         announce:\n- prefix: {CONFIGURED}\nshutdown: {{drainSeconds: 1}}\n",
        a = link.a_v4,
        b = link.b_v4,
    )
}

/// `nonstop-agent publish` of `set` in the agent's namespace, through the
/// control socket or (with a token) the admin port: (success, stdout + stderr).
fn publish(link: &Link, agent: &Agent, set: &str, token: Option<&str>) -> (bool, String) {
    let file = link.dir.join("set.json");
    std::fs::write(&file, set).unwrap();
    let mut args = vec![AGENT, "publish", file.to_str().unwrap()];
    let token_file = link.dir.join("token-given");
    match token {
        Some(token) => {
            std::fs::write(&token_file, token).unwrap();
            args.extend(["--admin", ADMIN, "--token-file", token_file.to_str().unwrap()]);
        }
        None => args.extend(["--state-dir", agent.state_dir.to_str().unwrap()]),
    }
    let out: std::process::Output = link.a.exec(&args).output().unwrap();
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The router's routes from the agent: prefix → communities.
fn at_router(router: &Gobgp) -> Result<Vec<(String, Vec<String>)>, String> {
    Ok(router.learnt(false)?.into_iter().map(|(p, r)| (p, r.communities)).collect())
}

fn wait_routes(router: &Gobgp, want: &[(&str, &[&str])], what: &str) {
    let want: Vec<(String, Vec<String>)> = want
        .iter()
        .map(|(p, c)| (p.to_string(), c.iter().map(|c| c.to_string()).collect()))
        .collect();
    eventually(Duration::from_secs(20), what, || match at_router(router)? {
        got if got == want => Ok(()),
        got => Err(format!("{got:?}")),
    });
}

fn start(link: &Link, log: &str) -> Agent {
    let token_file = link.dir.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let flags = ["--api-token-file", token_file.to_str().unwrap()];
    let agent = Agent::launch_under(&[], &link.a, &link.dir, &config(link), &flags, &[], log);
    agent.wait_established(&link.b_v4);
    agent
}

#[test]
fn a_published_set_is_announced_replaced_by_difference_and_handed_over() {
    let link = Link::new("publish");
    let router = Gobgp::start(&link, &RouterSetup { ipv4_only: true, ..Default::default() });
    let agent = start(&link, "agent.log");
    wait_routes(&router, &[(CONFIGURED, &[])], "the configured prefix");

    // Through the control socket: announced with its communities.
    let (ok, said) = publish(
        &link,
        &agent,
        r#"{"version": "1", "announce": [
            {"prefix": "203.0.113.10/32", "communities": ["65001:10"]},
            {"prefix": "203.0.113.11/32"}]}"#,
        None,
    );
    assert!(ok, "{said}");
    assert_eq!(said.trim(), r#"{"version":"1","prefixes":2,"added":2,"removed":0}"#);
    wait_routes(
        &router,
        &[(CONFIGURED, &[]), ("203.0.113.10/32", &["65001:10"]), ("203.0.113.11/32", &[])],
        "the published set at the router",
    );
    let updates = router.session().unwrap().updates;

    // On the admin port: refused without the right token, or with a bad
    // set, and nothing changes.
    let next = r#"{"version": "2", "announce": [
        {"prefix": "203.0.113.11/32"}, {"prefix": "203.0.113.12/32", "localPref": 200}]}"#;
    let (ok, said) = publish(&link, &agent, next, Some("not-the-token-at-all-000000000001"));
    assert!(!ok && said.contains("needs `Authorization: Bearer <token>`"), "{said}");
    let (ok, said) = publish(
        &link,
        &agent,
        r#"{"version": "bad", "announce": [{"prefix": "198.51.100.0/24"}, {"prefix": "203.0.113.9/32", "med": -1}]}"#,
        Some(TOKEN),
    );
    assert!(!ok && said.contains("not a published set"), "{said}");
    let (ok, said) = publish(
        &link,
        &agent,
        r#"{"version": "bad", "announce": [{"prefix": "198.51.100.0/24"}]}"#,
        Some(TOKEN),
    );
    assert!(
        !ok && said
            .contains("announce[0].prefix: 198.51.100.0/24 is in the config's announce[] already"),
        "{said}"
    );
    assert_eq!(router.session().unwrap().updates, updates, "a refused set reached the router");
    assert_eq!(agent.status().unwrap()["published"]["version"], "1");

    // A good set: only the difference is sent.
    let (ok, said) = publish(&link, &agent, next, Some(TOKEN));
    assert!(ok, "{said}");
    assert_eq!(said.trim(), r#"{"version":"2","prefixes":2,"added":1,"removed":1}"#);
    wait_routes(
        &router,
        &[(CONFIGURED, &[]), ("203.0.113.11/32", &[]), ("203.0.113.12/32", &[])],
        "the second set at the router",
    );
    let status = agent.status().unwrap();
    assert_eq!(status["published"], serde_json::json!({"version": "2", "prefixes": 2}));
    assert_eq!(status["routes_announced"], 3);
    // A reload that puts one of them in the config, and a prefix of its
    // own: each prefix is counted once, the config's as of the reload.
    let reloaded = config(&link).replace(
        &format!("- prefix: {CONFIGURED}\n"),
        &format!("- prefix: {CONFIGURED}\n- prefix: 203.0.113.11/32\n- prefix: 203.0.113.20/32\n"),
    );
    assert_ne!(reloaded, config(&link), "the announce list replaced");
    let announced = |agent: &Agent| agent.status().map(|s| s["routes_announced"].clone());
    agent.reload(&reloaded);
    eventually(Duration::from_secs(10), "4 routes announced after the reload", || match announced(
        &agent,
    )? {
        n if n == 4 => Ok(()),
        n => Err(format!("{n}")),
    });
    agent.reload(&config(&link));
    eventually(Duration::from_secs(10), "3 routes announced again", || match announced(&agent)? {
        n if n == 3 => Ok(()),
        n => Err(format!("{n}")),
    });
    let shown: serde_json::Value =
        serde_json::from_str(&agent.get("/announcements").unwrap()).unwrap();
    assert_eq!(shown["announce"][1]["localPref"], 200, "{shown}");

    // A handoff: the successor announces the same set; the router hears nothing.
    let before = router.session().unwrap();
    let agent = agent.hand_over(&link.a, &link.dir, &config(&link), "agent-2.log");
    assert_eq!(agent.status().unwrap()["published"]["version"], "2");
    // A KEEPALIVE interval on the successor: a set it lacked would have been
    // withdrawn by now.
    eventually(Duration::from_secs(10), "three seconds on the successor", || {
        match agent.status()?["uptime_seconds"].as_u64() {
            Some(up) if up >= 3 => Ok(()),
            up => Err(format!("up {up:?} s")),
        }
    });
    assert_eq!(router.session().unwrap(), before, "the router saw the handoff");
    wait_routes(
        &router,
        &[(CONFIGURED, &[]), ("203.0.113.11/32", &[]), ("203.0.113.12/32", &[])],
        "the set after the handoff",
    );

    // A decommission withdraws it and forgets it.
    let mut agent = agent;
    agent.stop("decommission");
    assert!(!agent.state_dir.join("published.json").exists(), "the set outlived a decommission");
    let next_agent = start(&link, "agent-3.log");
    wait_routes(&router, &[(CONFIGURED, &[])], "only the configured prefix after a decommission");
    assert_eq!(next_agent.status().unwrap().get("published"), None);
}
