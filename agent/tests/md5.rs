//! TCP MD5 (RFC 2385) against bird2 and FRR: with matching passwords the
//! session comes up; with a wrong one it never reaches Established, and the
//! agent's status says what to check. The password comes from a file laid out
//! like a mounted Kubernetes Secret: <secrets dir>/<name>/<key>.

mod support;

use std::time::{Duration, Instant};

use support::routers::{Bird, Frr, Router, RouterSetup};
use support::{Agent, Link, eventually};

fn md5(test: &str, start: impl for<'a> Fn(&'a Link, &RouterSetup) -> Box<dyn Router + 'a>) {
    for (router_password, comes_up) in [("s3cret-key", true), ("not-the-key", false)] {
        let link = Link::new(&format!("{test}-{comes_up}"));
        let secrets = link.dir.join("secrets");
        std::fs::create_dir_all(secrets.join("bgp-auth")).unwrap();
        std::fs::write(secrets.join("bgp-auth").join("router"), "s3cret-key\n").unwrap();
        let setup = RouterSetup {
            hold_time: 30,
            keepalive: 10,
            ipv4_only: true,
            password: Some(router_password.to_string()),
            ..Default::default()
        };
        let router = start(&link, &setup);
        let config = format!(
            "asn: 65001\nrouterId: {}\npeers:\n- address: {}\n  asn: 65000\n  connectRetryTime: 1\n  \
             families: [ipv4-unicast]\n  passwordSecretRef: {{ name: bgp-auth, key: router }}\n\
             announce:\n- {{ prefix: 203.0.113.0/24 }}\n",
            link.a_v4, link.b_v4
        );
        let agent = Agent::start_with(
            &link.a,
            &link.dir,
            &config,
            &["--secrets-dir", secrets.to_str().unwrap()],
        );
        if comes_up {
            agent.wait_established(&link.b_v4);
            eventually(Duration::from_secs(10), "our route at the router", || {
                let n = router.learnt(false)?.len();
                if n == 1 { Ok(()) } else { Err(format!("{n} routes")) }
            });
        } else {
            // Several connect attempts each way, none may get through.
            let until = Instant::now() + Duration::from_secs(6);
            while Instant::now() < until {
                if let Ok(p) = agent.peer(&link.b_v4) {
                    assert_ne!(
                        p["state"],
                        "Established",
                        "{}: up with a wrong password: {p}",
                        router.kind()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let p = agent.peer(&link.b_v4).unwrap();
            let why = p["last_error"].as_str().unwrap_or_default();
            assert!(
                why.contains("TCP MD5 is on"),
                "{}: status does not say why: {p}",
                router.kind()
            );
        }
    }
}

#[test]
fn md5_with_bird() {
    md5("md5-bird", |link, setup| Box::new(Bird::start(link, setup)));
}

#[test]
fn md5_with_frr() {
    md5("md5-frr", |link, setup| Box::new(Frr::start(link, setup)));
}

#[test]
fn a_missing_secret_is_refused_before_anything_starts() {
    let link = Link::new("md5-missing");
    let config = format!(
        "asn: 65001\nrouterId: {}\npeers:\n- address: {}\n  asn: 65000\n  passwordSecretRef: {{ name: nope, key: router }}\n",
        link.a_v4, link.b_v4
    );
    let mut agent =
        Agent::start_with(&link.a, &link.dir, &config, &["--secrets-dir", "/nonexistent"]);
    let status = eventually(Duration::from_secs(5), "the agent to refuse", || {
        agent.daemon.exited().ok_or_else(|| "running".to_string())
    });
    assert_eq!(status.code(), Some(2));
    let log = agent.daemon.log_text();
    assert!(
        log.contains("peers[0].passwordSecretRef: cannot read /nonexistent/nope/router"),
        "{log}"
    );
}

/// The kubelet rewrites a mounted Secret in place. A fixed password reaches
/// a session that could not come up, without a restart or SIGHUP; a later
/// edit never breaks the session that works.
#[test]
fn a_changed_secret_is_followed_and_never_breaks_a_working_session() {
    let link = Link::new("md5-follow");
    let dir = link.dir.join("secrets").join("bgp-auth");
    std::fs::create_dir_all(&dir).unwrap();
    // As the kubelet does: a new file, renamed over the old one.
    let write_secret = |value: &str| {
        let tmp = dir.join(".router.tmp");
        std::fs::write(&tmp, value).unwrap();
        std::fs::rename(&tmp, dir.join("router")).unwrap();
    };
    write_secret("not-the-key");
    let setup = RouterSetup {
        hold_time: 30,
        keepalive: 10,
        ipv4_only: true,
        password: Some("s3cret-key".into()),
        ..Default::default()
    };
    let _router = Bird::start(&link, &setup);
    let config = format!(
        "asn: 65001\nrouterId: {}\npeers:\n- address: {}\n  asn: 65000\n  connectRetryTime: 1\n  \
         families: [ipv4-unicast]\n  passwordSecretRef: {{ name: bgp-auth, key: router }}\n\
         announce:\n- {{ prefix: 203.0.113.0/24 }}\n",
        link.a_v4, link.b_v4
    );
    let secrets = link.dir.join("secrets");
    let agent = Agent::start_with(
        &link.a,
        &link.dir,
        &config,
        &["--secrets-dir", secrets.to_str().unwrap()],
    );
    eventually(Duration::from_secs(20), "the mismatch named in status", || {
        let p = agent.peer(&link.b_v4)?;
        let why = p["last_error"].as_str().unwrap_or_default().to_string();
        if why.contains("TCP MD5 is on") { Ok(()) } else { Err(p.to_string()) }
    });

    write_secret("s3cret-key");
    let peer = agent.wait_established(&link.b_v4);
    assert_eq!(peer["established_transitions"], 1);

    // Rotated on our side only: the working session keeps its key.
    write_secret("next-key");
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        let p = agent.peer(&link.b_v4).unwrap();
        assert_eq!(p["state"], "Established", "a Secret edit broke the session: {p}");
        assert_eq!(p["established_transitions"], 1, "{p}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = agent.daemon.log_text();
    assert!(log.contains("connecting with the new one"), "{log}");
    assert!(log.contains("keeps the key it runs on"), "{log}");
}
