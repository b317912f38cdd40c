//! Full-table ingest, side by side: a real sender (gobgpd, then bird2)
//! announces 1,000,000 IPv4 prefixes, first to nonstop-agent, then to bird2,
//! each in a fresh network namespace; for each receiver: seconds from
//! Established until every prefix is in its table, and its peak memory.
//! Needs root, gobgpd and bird2.
//!
//! Run: `cargo bench -p nonstop-agent --bench ingest` (PREFIXES=… to change size).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fs;
use std::time::{Duration, Instant};

#[path = "common/table.rs"]
mod table;

use support::routers::spawn_bird;
use support::{AGENT, Daemon, Link, eventually, sh};
use table::{nth, start_bird};

fn prefixes() -> u32 {
    std::env::var("PREFIXES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sender {
    Gobgpd,
    Bird,
}

impl Sender {
    fn name(self) -> &'static str {
        match self {
            Sender::Gobgpd => "gobgpd",
            Sender::Bird => "bird2",
        }
    }
}

/// Starts the sender; returns it and how many prefixes it will send.
fn start_sender(sender: Sender, link: &Link, n: u32) -> (Daemon, u32) {
    match sender {
        Sender::Gobgpd => start_gobgpd(link, n),
        Sender::Bird => (start_bird(link, n), n),
    }
}

/// An MRT TABLE_DUMP_V2 file (RFC 6396) of the table, for `gobgp mrt inject`:
/// gobgpd has no static routes, and adding a million over its CLI one by one
/// would take hours.
fn mrt(link: &Link, n: u32) -> Vec<u8> {
    let ip = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let mut out = Vec::with_capacity(n as usize * 60);
    let mut record = |subtype: u16, body: &[u8]| {
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&13u16.to_be_bytes());
        out.extend_from_slice(&subtype.to_be_bytes());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(body);
    };
    let mut peers = ip(&link.b_v4).to_vec();
    peers.extend_from_slice(&[0, 0, 0, 1, 0x02]);
    peers.extend_from_slice(&ip(&link.b_v4));
    peers.extend_from_slice(&ip(&link.b_v4));
    peers.extend_from_slice(&65000u32.to_be_bytes());
    record(1, &peers);
    for i in 0..n {
        let (prefix, med) = nth(i);
        let mut attrs = vec![0x40, 1, 1, 0, 0x40, 2, 6, 2, 1];
        attrs.extend_from_slice(&65000u32.to_be_bytes());
        attrs.extend_from_slice(&[0x40, 3, 4]);
        attrs.extend_from_slice(&ip(&link.b_v4));
        attrs.extend_from_slice(&[0x80, 4, 4]);
        attrs.extend_from_slice(&med.to_be_bytes());
        let mut body = i.to_be_bytes().to_vec();
        body.push(24);
        body.extend_from_slice(&prefix);
        body.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        body.extend_from_slice(&attrs);
        record(2, &body);
    }
    out
}

fn start_gobgpd(link: &Link, n: u32) -> (Daemon, u32) {
    let conf = format!(
        "[global.config]\n  as = 65000\n  router-id = \"{}\"\n[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{}\"\n    peer-as = 65001\n  [neighbors.timers.config]\n    connect-retry = 1\n",
        link.b_v4, link.a_v4
    );
    let path = link.dir.join("sender.toml");
    fs::write(&path, conf).unwrap();
    let cmd =
        link.b.exec(&["gobgpd", "-f", path.to_str().unwrap(), "--api-hosts", "127.0.0.1:50051"]);
    let d = Daemon::spawn("gobgpd sender", cmd, link.dir.join("sender.log"));
    let dump = link.dir.join("table.mrt");
    fs::write(&dump, mrt(link, n)).unwrap();
    let gobgp = |args: &[&str]| {
        let mut full = vec!["gobgp", "-p", "50051"];
        full.extend_from_slice(args);
        let out = link.b.exec(&full).output().map_err(|e| e.to_string())?;
        Ok::<String, String>(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    eventually(Duration::from_secs(10), "gobgpd API", || gobgp(&["global"]));
    gobgp(&["mrt", "inject", "global", dump.to_str().unwrap()]).unwrap();
    // `gobgp mrt inject` drops about 1% of entries; wait until the table
    // stops growing and say how many it holds.
    let mut last = (0, Instant::now());
    let held = eventually(Duration::from_secs(600), "gobgpd's table to settle", || {
        let text = gobgp(&["global", "rib", "summary", "-a", "ipv4"])?;
        let count: u32 = text
            .split("Destination: ")
            .nth(1)
            .and_then(|t| t.split(',').next())
            .and_then(|c| c.parse().ok())
            .ok_or(text.clone())?;
        if count > 0 && count == last.0 && last.1.elapsed() > Duration::from_secs(3) {
            return Ok(count);
        }
        if count != last.0 {
            last = (count, Instant::now());
        }
        Err(format!("{count} so far"))
    });
    println!("  gobgpd holds {held} of the {n} injected prefixes");
    (d, held)
}

struct Measurement {
    seconds: f64,
    /// CPU time (user + system) the receiver spent from Established to the
    /// last prefix: what the work costs, whatever else the machine does.
    cpu_seconds: f64,
    peak_mb: f64,
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or(vec![], |(_, r)| r.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ')'.
    // /proc counts in USER_HZ, 100 per second on every Linux architecture.
    (ticks(11) + ticks(12)) / 100.0
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
    let cpu_start = cpu_seconds(pid);
    eventually(Duration::from_secs(300), "every prefix received", || match count() {
        Some(c) if c >= u64::from(n) => Ok(()),
        other => Err(format!("{other:?} of {n}")),
    });
    Measurement {
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds(pid) - cpu_start,
        peak_mb: support::peak_rss_mb(pid),
    }
}

fn agent_run(sender: Sender, n: u32) -> Measurement {
    let link = Link::new("bench-agent");
    let (_sender, n) = start_sender(sender, &link, n);
    let config = format!(
        "asn: 65001\nrouterId: {}\npeers:\n  - {{ address: {}, asn: 65000, connectRetryTime: 1, families: [ipv4-unicast], import: {{ maxPrefixes: {{ limit: 100000000 }} }} }}\n",
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

fn bird_run(sender: Sender, n: u32) -> Measurement {
    let link = Link::new("bench-bird");
    let (_sender, n) = start_sender(sender, &link, n);
    let conf = format!(
        "router id {};\nprotocol device {{}}\nprotocol bgp sender {{ local {} as 65001; neighbor {} as 65000; connect retry time 1;\n ipv4 {{ import all; export none; }}; }}\n",
        link.a_v4, link.a_v4, link.b_v4
    );
    let (bird, ctl) = spawn_bird(&link.a, &link.dir, "receiver", &conf);
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
    for sender in [Sender::Gobgpd, Sender::Bird] {
        println!(
            "\nfull-table ingest: {n} IPv4 prefixes (attribute sets of 4) from a {} sender",
            sender.name()
        );
        let ours = agent_run(sender, n);
        let theirs = bird_run(sender, n);
        println!(
            "{:<16} {:>10} {:>12} {:>14}",
            "receiver", "seconds", "CPU seconds", "peak RSS MB"
        );
        for (name, m) in [("nonstop-agent", &ours), ("bird2", &theirs)] {
            println!("{name:<16} {:>10.2} {:>12.2} {:>14.1}", m.seconds, m.cpu_seconds, m.peak_mb);
        }
        println!(
            "ratio agent/bird2: time {:.2}x, CPU {:.2}x, memory {:.2}x",
            ours.seconds / theirs.seconds,
            ours.cpu_seconds / theirs.cpu_seconds,
            ours.peak_mb / theirs.peak_mb
        );
    }
    let _ = AGENT;
}
