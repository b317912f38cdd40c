//! Full-table ingest, side by side: a real sender (gobgpd, then bird2)
//! announces 1,000,000 IPv4 prefixes, first to nonstop-agent, then to bird2,
//! each in a fresh network namespace; for each receiver: seconds from
//! Established until every prefix is in its table, its CPU-seconds over
//! that span and its peak memory. Twice: with one attribute set for the
//! whole table, and with a set per 4 prefixes. A BIRD sender is prodded
//! while it sends (`birdc show status`): left alone it holds its last
//! UPDATE back for about 3 s. Then advertising: the same table from the
//! agent's `announce`, then from bird2's static routes, to a bird2
//! receiver whose session is enabled once the sender is up, its table
//! loaded and idle: seconds from the receiver's Established until it holds
//! every prefix, the sender's CPU-seconds from the enabling on.
//! Needs root, gobgpd and bird2.
//!
//! Run: `cargo bench -p nonstop-agent --bench ingest` (PREFIXES=… to change
//! size; ONLY=one-gobgpd,fours-bird2,advertise,… to run some cases).

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[path = "common/table.rs"]
mod table;

use support::routers::spawn_bird;
use support::{AGENT, Daemon, Link, eventually, sh};
use table::{Sets, nth_in, start_bird_with};

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

/// A sender, sending.
struct Sending {
    daemon: Daemon,
    /// How many prefixes it sends.
    n: u32,
    /// A BIRD sender's control socket, to prod it with.
    bird_ctl: Option<PathBuf>,
}

impl Sending {
    /// Wakes a BIRD sender's main loop so it sends its last UPDATE now.
    fn prod(&self, link: &Link) {
        if let Some(ctl) = &self.bird_ctl {
            let _ = link.b.exec(&["birdc", "-s", ctl.to_str().unwrap(), "show", "status"]).output();
        }
    }
}

fn start_sender(sender: Sender, link: &Link, n: u32, sets: Sets) -> Sending {
    match sender {
        Sender::Gobgpd => {
            let (daemon, n) = start_gobgpd(link, n, sets);
            Sending { daemon, n, bird_ctl: None }
        }
        Sender::Bird => {
            let (daemon, ctl) = start_bird_with(link, n, sets);
            Sending { daemon, n, bird_ctl: Some(ctl) }
        }
    }
}

/// An MRT TABLE_DUMP_V2 file (RFC 6396) of the table, for `gobgp mrt inject`:
/// gobgpd has no static routes, and adding a million over its CLI one by one
/// would take hours.
fn mrt(link: &Link, n: u32, sets: Sets) -> Vec<u8> {
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
        let (prefix, med) = nth_in(i, sets);
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

fn start_gobgpd(link: &Link, n: u32, sets: Sets) -> (Daemon, u32) {
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
    fs::write(&dump, mrt(link, n, sets)).unwrap();
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
            .ok_or_else(|| text.clone())?;
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
    /// CPU time (user + system) the measured side (the receiver; the sender
    /// when advertising) spent from Established to the last prefix: what the
    /// work costs, whatever else the machine does.
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
    prod: impl Fn(),
) -> Measurement {
    eventually(Duration::from_secs(60), "session Established", || {
        if established() { Ok(()) } else { Err("not yet".into()) }
    });
    let start = Instant::now();
    let cpu_start = cpu_seconds(pid);
    eventually(Duration::from_secs(300), "every prefix received", || {
        prod();
        match count() {
            Some(c) if c >= u64::from(n) => Ok(()),
            other => Err(format!("{other:?} of {n}")),
        }
    });
    Measurement {
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds(pid) - cpu_start,
        peak_mb: support::peak_rss_mb(pid),
    }
}

fn agent_run(sender: Sender, n: u32, sets: Sets) -> Measurement {
    let link = Link::new("bench-agent");
    let sending = start_sender(sender, &link, n, sets);
    let n = sending.n;
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
        || sending.prod(&link),
    )
}

/// A bird2 receiver in `link.a` (AS 65001) for the sender in `link.b`.
fn bird_receiver(link: &Link, enabled: bool) -> (Daemon, PathBuf) {
    let disabled = if enabled { "" } else { " disabled;" };
    let conf = format!(
        "router id {};\nprotocol device {{}}\nprotocol bgp sender {{ local {} as 65001; neighbor {} as 65000; connect retry time 1;{disabled}\n ipv4 {{ import all; export none; }}; }}\n",
        link.a_v4, link.a_v4, link.b_v4
    );
    spawn_bird(&link.a, &link.dir, "receiver", &conf)
}

fn birdc(link: &Link, ctl: &std::path::Path, args: &[&str]) -> Option<String> {
    let mut full = vec!["birdc", "-s", ctl.to_str().unwrap()];
    full.extend_from_slice(args);
    link.a.exec(&full).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

fn bird_established(link: &Link, ctl: &std::path::Path) -> bool {
    birdc(link, ctl, &["show", "protocols", "sender"]).is_some_and(|t| t.contains("Established"))
}

fn bird_count(link: &Link, ctl: &std::path::Path) -> Option<u64> {
    let text = birdc(link, ctl, &["show", "route", "count"])?;
    let line = text.lines().find(|l| l.contains(" of "))?;
    line.split_whitespace().next()?.parse().ok()
}

fn bird_run(sender: Sender, n: u32, sets: Sets) -> Measurement {
    let link = Link::new("bench-bird");
    let sending = start_sender(sender, &link, n, sets);
    let n = sending.n;
    let (bird, ctl) = bird_receiver(&link, true);
    measure(
        n,
        || bird_established(&link, &ctl),
        || bird_count(&link, &ctl),
        bird.child.id(),
        || sending.prod(&link),
    )
}

/// Advertising the table (one attribute set) to a bird2 receiver: from
/// the agent's `announce`, or from bird2's static protocol. The CPU-seconds
/// and memory are the sender's.
fn advertise_run(from_agent: bool, n: u32) -> Measurement {
    let link = Link::new("bench-advertise");
    // The receiver starts with its session disabled, so that each sender is
    // up, its table loaded and idle, before the span starts; enabling the
    // session starts it. (Measured from the receiver's Established, the
    // agent's building of its UPDATEs fell before or after the start from
    // one run to the next.)
    let (sender, _agent, sending) = if from_agent {
        let mut config = format!(
            "asn: 65000\nrouterId: {}\npeers:\n  - {{ address: {}, asn: 65001, connectRetryTime: 1, families: [ipv4-unicast] }}\nannounce:\n",
            link.b_v4, link.a_v4
        );
        for i in 0..n {
            let ([a, b, c], _) = nth_in(i, Sets::One);
            writeln!(config, "  - {{prefix: {a}.{b}.{c}.0/24}}").unwrap();
        }
        let agent = support::Agent::start(&link.b, &link.dir, &config);
        eventually(Duration::from_secs(120), "the agent to read its announcements", || {
            let status = agent.status()?;
            match status["routes_announced"].as_u64() {
                Some(k) if k == u64::from(n) => Ok(()),
                other => Err(format!("{other:?} of {n}")),
            }
        });
        (agent.daemon.child.id(), Some(agent), None)
    } else {
        let sending = start_sender(Sender::Bird, &link, n, Sets::One);
        (sending.daemon.child.id(), None, Some(sending))
    };
    let (_bird, ctl) = bird_receiver(&link, false);
    eventually(Duration::from_secs(30), "the receiver's control socket", || {
        birdc(&link, &ctl, &["show", "protocols", "sender"])
            .filter(|t| t.contains("sender"))
            .ok_or_else(|| "no answer".to_string())
    });
    let cpu_start = cpu_seconds(sender);
    let enabled = birdc(&link, &ctl, &["enable", "sender"]).unwrap_or_default();
    assert!(enabled.contains("enabled"), "birdc enable sender: {enabled}");
    eventually(Duration::from_secs(60), "the receiver's session Established", || {
        if bird_established(&link, &ctl) { Ok(()) } else { Err("not yet".into()) }
    });
    let start = Instant::now();
    eventually(Duration::from_secs(300), "every prefix received", || {
        if let Some(sending) = &sending {
            sending.prod(&link);
        }
        match bird_count(&link, &ctl) {
            Some(c) if c >= u64::from(n) => Ok(()),
            other => Err(format!("{other:?} of {n}")),
        }
    });
    Measurement {
        seconds: start.elapsed().as_secs_f64(),
        cpu_seconds: cpu_seconds(sender) - cpu_start,
        peak_mb: support::peak_rss_mb(sender),
    }
}

fn report(role: &str, rows: [(&str, &Measurement); 2]) {
    println!("{role:<16} {:>10} {:>12} {:>14}", "seconds", "CPU seconds", "peak RSS MB");
    for (name, m) in rows {
        println!("{name:<16} {:>10.2} {:>12.2} {:>14.1}", m.seconds, m.cpu_seconds, m.peak_mb);
    }
    let (ours, theirs) = (rows[0].1, rows[1].1);
    println!(
        "ratio agent/bird2: time {:.2}x, CPU {:.2}x, memory {:.2}x",
        ours.seconds / theirs.seconds,
        ours.cpu_seconds / theirs.cpu_seconds,
        ours.peak_mb / theirs.peak_mb
    );
}

/// Whether the case named `case` runs: all of them unless ONLY names some.
fn selected(case: &str) -> bool {
    std::env::var("ONLY").map_or(true, |only| only.split(',').any(|c| c.trim() == case))
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` lists benches; nothing to list here.
    }
    sh(&["which", "bird"]);
    let n = prefixes();
    for (sets, sender) in [Sets::One, Sets::Fours]
        .into_iter()
        .flat_map(|sets| [(sets, Sender::Gobgpd), (sets, Sender::Bird)])
        .filter(|(sets, sender)| selected(&format!("{}-{}", sets.short(), sender.name())))
    {
        println!(
            "\nfull-table ingest: {n} IPv4 prefixes ({}) from a {} sender",
            sets.describe(),
            sender.name()
        );
        let ours = agent_run(sender, n, sets);
        let theirs = bird_run(sender, n, sets);
        report("receiver", [("nonstop-agent", &ours), ("bird2", &theirs)]);
    }
    if !selected("advertise") {
        return;
    }
    println!("\nadvertising: {n} IPv4 prefixes (one attribute set) to a bird2 receiver");
    let ours = advertise_run(true, n);
    let theirs = advertise_run(false, n);
    report("sender", [("nonstop-agent", &ours), ("bird2", &theirs)]);
    let _ = AGENT;
}
