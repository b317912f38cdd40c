//! The agent needs one capability: NET_BIND_SERVICE, for port 179. Confined
//! the way the operator's pods confine it (every other capability gone, no
//! new privileges), TCP MD5 and GTSM sessions come up and a successor takes
//! them over; without NET_BIND_SERVICE it stops at once and says why.

mod support;

use std::time::Duration;

use support::routers::{Bird, Router, RouterSetup};
use support::{Agent, Link, eventually};

/// What `capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}` and
/// `allowPrivilegeEscalation: false` leave a root process.
const ONLY_BIND: &[&str] = &[
    "setpriv",
    "--no-new-privs",
    "--inh-caps=-all",
    "--bounding-set=-all,+net_bind_service",
    "--",
];
const NOTHING: &[&str] =
    &["setpriv", "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--"];

fn config(link: &Link) -> String {
    format!(
        "asn: 65001\nrouterId: {}\npeers:\n- address: {}\n  asn: 65000\n  connectRetryTime: 1\n  \
         families: [ipv4-unicast]\n  ttlSecurity: true\n  \
         passwordSecretRef: {{ name: bgp-auth, key: router }}\n\
         announce:\n- {{ prefix: 203.0.113.0/24 }}\n",
        link.a_v4, link.b_v4
    )
}

/// The agent's side of the link as a host's network: ports below 1024 need
/// the capability (the test links open them to the routers' daemons).
fn privileged_ports(link: &Link) {
    let out = link
        .a
        .exec(&["sysctl", "-qw", "net.ipv4.ip_unprivileged_port_start=1024"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn secrets(link: &Link) -> String {
    let dir = link.dir.join("secrets");
    std::fs::create_dir_all(dir.join("bgp-auth")).unwrap();
    std::fs::write(dir.join("bgp-auth/router"), "s3cret-key\n").unwrap();
    dir.display().to_string()
}

#[test]
fn md5_gtsm_and_handoff_need_only_net_bind_service() {
    let link = Link::new("caps-bind");
    privileged_ports(&link);
    let setup = RouterSetup {
        hold_time: 30,
        keepalive: 10,
        ipv4_only: true,
        password: Some("s3cret-key".into()),
        ttl_security: true,
        ..Default::default()
    };
    let router = Bird::start(&link, &setup);
    let (yaml, secrets) = (config(&link), secrets(&link));
    let flags = ["--secrets-dir", secrets.as_str()];
    let mut old = Agent::launch_under(ONLY_BIND, &link.a, &link.dir, &yaml, &flags, &[], "a.log");
    let before = old.wait_established(&link.b_v4);
    eventually(Duration::from_secs(10), "our route at bird", || {
        let n = router.learnt(false)?.len();
        if n == 1 { Ok(()) } else { Err(format!("{n} routes")) }
    });

    let new = Agent::launch_under(ONLY_BIND, &link.a, &link.dir, &yaml, &flags, &[], "b.log");
    let new_pid = new.daemon.child.id();
    let report = eventually(Duration::from_secs(30), "the confined successor's takeover", || {
        let s = new.status()?;
        match &s["last_handoff"] {
            h if s["pid"] == new_pid && h["result"] == "completed" => Ok(h.clone()),
            h => Err(format!("pid {}, last handoff {h}", s["pid"])),
        }
    });
    assert_eq!(report["sessions"], 1, "{report}");
    let after = new.wait_established(&link.b_v4);
    assert_eq!(
        after["established_transitions"], before["established_transitions"],
        "the session was reset: {before} / {after}"
    );
    old.daemon.signal("TERM");
    assert!(old.daemon.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(router.learnt(false).unwrap().len(), 1, "our route left bird");
}

/// Two pods are two PID namespaces: each agent sees the other's pid as 0
/// (SO_PEERCRED), which must not stop a handoff. Found on a real node.
#[test]
fn a_successor_in_another_pid_namespace_takes_over() {
    let link = Link::new("caps-pidns");
    privileged_ports(&link);
    let setup = RouterSetup { hold_time: 30, keepalive: 10, ipv4_only: true, ..Default::default() };
    let router = Bird::start(&link, &setup);
    let yaml = format!(
        "asn: 65001\nrouterId: {}\npeers:\n- address: {}\n  asn: 65000\n  connectRetryTime: 1\n  \
         families: [ipv4-unicast]\nannounce:\n- {{ prefix: 203.0.113.0/24 }}\n",
        link.a_v4, link.b_v4
    );
    let own_pid_ns: Vec<&str> =
        ["unshare", "--pid", "--fork", "--kill-child"].iter().chain(ONLY_BIND).copied().collect();
    let mut old = Agent::launch_under(&own_pid_ns, &link.a, &link.dir, &yaml, &[], &[], "a.log");
    let before = old.wait_established(&link.b_v4);
    let new = Agent::launch_under(&own_pid_ns, &link.a, &link.dir, &yaml, &[], &[], "b.log");
    let report = eventually(Duration::from_secs(30), "the successor's takeover", || {
        match &new.status()?["last_handoff"] {
            h if h["result"] == "completed" => Ok(h.clone()),
            h => Err(format!("last handoff {h}")),
        }
    });
    assert_eq!(report["sessions"], 1, "{report}");
    let after = new.wait_established(&link.b_v4);
    assert_eq!(
        after["established_transitions"], before["established_transitions"],
        "the session was reset: {before} / {after}"
    );
    // `unshare --fork` does not pass signals on: to the agent itself.
    let unshare = old.daemon.child.id();
    let agent =
        std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children")).unwrap();
    support::sh(&["kill", "-TERM", agent.trim()]);
    assert!(old.daemon.wait_exit(Duration::from_secs(5)).success());
    assert_eq!(router.learnt(false).unwrap().len(), 1, "our route left bird");
}

#[test]
fn without_net_bind_service_the_agent_says_why() {
    let link = Link::new("caps-none");
    privileged_ports(&link);
    let (yaml, secrets) = (config(&link), secrets(&link));
    let flags = ["--secrets-dir", secrets.as_str()];
    let mut agent = Agent::launch_under(NOTHING, &link.a, &link.dir, &yaml, &flags, &[], "a.log");
    let status = agent.daemon.wait_exit(Duration::from_secs(10));
    assert!(!status.success());
    let log = agent.daemon.log_text();
    assert!(log.contains("cannot listen for BGP on 0.0.0.0:179"), "{log}");
    assert!(log.contains("need CAP_NET_BIND_SERVICE"), "{log}");
}
