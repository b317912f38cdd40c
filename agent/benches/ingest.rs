//! Full-table ingest, side by side: one real sender announces 1,000,000 IPv4
//! prefixes, first to nonstop-agent, then to bird2, each in a fresh network
//! namespace; for each receiver: seconds from Established until every prefix
//! is in its table, and its peak memory. Needs root and bird2.
//!
//! Run: `cargo bench -p nonstop-agent --bench ingest` (PREFIXES=… to change size).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::fs;
use std::time::{Duration, Instant};

use support::{AGENT, Daemon, Link, eventually, sh};

fn prefixes() -> u32 {
    std::env::var("PREFIXES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

/// BIRD in the router namespace with `n` static /24s, exported over eBGP to
/// the receiver at the agent-side address, in groups of 4 per attribute set.
fn start_sender(link: &Link, n: u32) -> (Daemon, std::path::PathBuf) {
    let mut conf = format!(
        "router id {};\nprotocol device {{}}\nprotocol static originated {{ ipv4; \n",
        link.b_v4
    );
    for i in 0..n {
        let (a, b, c) = (1 + i / 65536, (i / 256) % 256, i % 256);
        // MED varies every 4 prefixes, so attribute sets hold 4 prefixes each.
        writeln!(conf, "route {a}.{b}.{c}.0/24 blackhole {{ bgp_med = {}; }};", i / 4).unwrap();
    }
    conf += &format!(
        "}}\nprotocol bgp receiver {{ local {} as 65000; neighbor {} as 65001; connect retry time 1;\n ipv4 {{ import none; export all; next hop self; }}; }}\n",
        link.b_v4, link.a_v4
    );
    let path = link.dir.join("sender.conf");
    fs::write(&path, conf).unwrap();
    let ctl = link.dir.join("sender.ctl");
    let cmd = link.b.exec(&[
        "bird",
        "-f",
        "-c",
        path.to_str().unwrap(),
        "-s",
        ctl.to_str().unwrap(),
        "-P",
        link.dir.join("sender.pid").to_str().unwrap(),
    ]);
    let d = Daemon::spawn("bird sender", cmd, link.dir.join("sender.log"));
    eventually(Duration::from_secs(120), "sender ready", || {
        let out = link
            .b
            .exec(&["birdc", "-s", ctl.to_str().unwrap(), "show", "route", "count"])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(&format!("{n} of {n} routes")) { Ok(()) } else { Err(text) }
    });
    (d, ctl)
}

fn peak_rss_mb(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

struct Measurement {
    seconds: f64,
    peak_mb: f64,
}

/// Polls `count` until it reaches `n`; the clock starts when `established` first holds.
fn measure(
    n: u32,
    established: impl Fn() -> bool,
    count: impl Fn() -> Option<u64>,
    pid: u32,
) -> Measurement {
    eventually(Duration::from_secs(60), "session Established", || {
        if established() { Ok(()) } else { Err("not yet".into()) }
    });
    let start = Instant::now();
    eventually(Duration::from_secs(300), "every prefix received", || match count() {
        Some(c) if c >= u64::from(n) => Ok(()),
        other => Err(format!("{other:?} of {n}")),
    });
    Measurement { seconds: start.elapsed().as_secs_f64(), peak_mb: peak_rss_mb(pid) }
}

fn agent_run(n: u32) -> Measurement {
    let link = Link::new("bench-agent");
    let (_sender, _) = start_sender(&link, n);
    let config = format!(
        "asn: 65001\nrouterId: {}\npeers:\n  - {{ address: {}, asn: 65000, connectRetryTime: 1, families: [ipv4-unicast] }}\n",
        link.a_v4, link.b_v4
    );
    let agent = support::Agent::start(&link.a, &link.dir, &config);
    let pid = agent.daemon.child.id();
    let peer = || agent.peer(&link.b_v4).ok();
    measure(
        n,
        || peer().is_some_and(|p| p["state"] == "Established"),
        || peer().and_then(|p| p["routes_received"].as_u64()),
        pid,
    )
}

fn bird_run(n: u32) -> Measurement {
    let link = Link::new("bench-bird");
    let (_sender, _) = start_sender(&link, n);
    let conf = format!(
        "router id {};\nprotocol device {{}}\nprotocol bgp sender {{ local {} as 65001; neighbor {} as 65000; connect retry time 1;\n ipv4 {{ import all; export none; }}; }}\n",
        link.a_v4, link.a_v4, link.b_v4
    );
    let path = link.dir.join("receiver.conf");
    fs::write(&path, conf).unwrap();
    let ctl = link.dir.join("receiver.ctl");
    let cmd = link.a.exec(&[
        "bird",
        "-f",
        "-c",
        path.to_str().unwrap(),
        "-s",
        ctl.to_str().unwrap(),
        "-P",
        link.dir.join("receiver.pid").to_str().unwrap(),
    ]);
    let bird = Daemon::spawn("bird receiver", cmd, link.dir.join("receiver.log"));
    let birdc = |args: &[&str]| {
        let mut full = vec!["birdc", "-s", ctl.to_str().unwrap()];
        full.extend_from_slice(args);
        link.a.exec(&full).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    measure(
        n,
        || birdc(&["show", "protocols", "sender"]).is_some_and(|t| t.contains("Established")),
        || {
            let text = birdc(&["show", "route", "count"])?;
            let line = text.lines().find(|l| l.contains(" of "))?;
            line.split_whitespace().next()?.parse().ok()
        },
        bird.child.id(),
    )
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here.
    }
    sh(&["which", "bird"]);
    let n = prefixes();
    println!("full-table ingest: {n} IPv4 prefixes (attribute sets of 4) from a bird2 sender");
    let ours = agent_run(n);
    let theirs = bird_run(n);
    println!("{:<16} {:>10} {:>14}", "receiver", "seconds", "peak RSS MB");
    println!("{:<16} {:>10.2} {:>14.1}", "nonstop-agent", ours.seconds, ours.peak_mb);
    println!("{:<16} {:>10.2} {:>14.1}", "bird2", theirs.seconds, theirs.peak_mb);
    println!(
        "ratio agent/bird2: time {:.2}x, memory {:.2}x",
        ours.seconds / theirs.seconds,
        ours.peak_mb / theirs.peak_mb
    );
    let _ = AGENT;
}
