//! The handoff pause: from the predecessor's last read of a session to the
//! successor's first, as the successor reports it (`last_handoff.pause_ms`),
//! for 1, 100 and 1,000 live sessions, with no routes and with a full table
//! of 1,000,000 received routes in the Adj-RIB-In. One bird2 holds every
//! session (gobgpd cannot keep 1,000 sessions up on two cores); with the
//! table, one of them sends it.
//! Targets: ≤ 10 ms for one session, ≤ 100 ms for 1,000, ≤ 1 s with a full
//! table. Needs root, gobgpd and bird2.
//!
//! Run: `cargo bench -p nonstop-agent --bench handoff` (PREFIXES=… for a
//! smaller table, HANDOFFS=… repetitions per case, default 5, CASES=1x0,100x0
//! to run only those cases).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "common/table.rs"]
mod table;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Duration;

use support::routers::{AGENT_AS, ROUTER_AS, address_pairs, spawn_bird};
use support::{Agent, Daemon, Link, eventually};

fn env(name: &str, default: u32) -> u32 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

struct Case {
    sessions: usize,
    routes: u32,
}

/// Every peer Established and every route received.
fn ready(agent: &Agent, sessions: usize, routes: u32) -> Result<(), String> {
    let status = agent.status()?;
    let peers = status["peers"].as_array().ok_or("no peers")?;
    let up = peers.iter().filter(|p| p["state"] == "Established").count();
    let received: u64 = peers.iter().filter_map(|p| p["routes_received"].as_u64()).sum();
    if up == sessions && received == u64::from(routes) {
        Ok(())
    } else {
        Err(format!("{up}/{sessions} Established, {received}/{routes} routes"))
    }
}

/// The `key=value` fields of the last line of `log` that says `marker`.
fn fields(log: &str, marker: &str) -> Vec<(String, String)> {
    let Some(line) = log.lines().rev().find(|l| l.contains(marker)) else { return vec![] };
    line.split_whitespace()
        .filter_map(|w| w.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A duration as tracing prints it (`12.3ms`, `850µs`, `1.2s`, or a bare
/// number of ms), in ms.
fn ms(text: &str) -> Option<f64> {
    let units = [("ms", 1.0), ("µs", 1e-3), ("us", 1e-3), ("ns", 1e-6), ("s", 1e3)];
    for (unit, scale) in units {
        if let Some(n) = text.strip_suffix(unit) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    text.parse().ok()
}

/// Where a handoff's pause went, from both agents' logs: the predecessor
/// freezing every session, then passing them; the successor collecting
/// from the first freeze, decoding, retiring the predecessor, and telling
/// its peer tasks (built before the handoff) to begin; the rest of the
/// pause is the tasks adopting their sessions and taking their first turns.
fn phases(old_log: &Path, new_log: &Path) -> Vec<(&'static str, f64)> {
    let old = fs::read_to_string(old_log).unwrap_or_default();
    let new = fs::read_to_string(new_log).unwrap_or_default();
    let pick = |log: &str, marker: &str, key: &str| {
        fields(log, marker).into_iter().find(|(k, _)| k == key).and_then(|(_, v)| ms(&v))
    };
    [
        ("freeze", pick(&old, "handoff: frozen, then passed", "froze")),
        ("collect", pick(&new, "handoff: from the first freeze", "collected_ms")),
        ("decode", pick(&new, "handoff: from the first freeze", "decoded_ms")),
        ("retire", pick(&new, "handoff: from the first freeze", "retired_ms")),
        ("begin tasks", pick(&new, "peer tasks begun", "elapsed")),
    ]
    .into_iter()
    .filter_map(|(name, v)| v.map(|v| (name, v)))
    .collect()
}

/// One handoff as measured.
struct Measured {
    pause_ms: f64,
    state_bytes: u64,
    phases: Vec<(&'static str, f64)>,
}

/// `handoffs` upgrades in a row.
fn run(case: &Case, handoffs: u32) -> Vec<Measured> {
    let link = Link::new("bench-handoff");
    let (_bird, peers) = bird_many(&link, case.sessions, case.routes);
    let yaml = format!("asn: {AGENT_AS}\nrouterId: {}\npeers:\n{peers}", link.a_v4);
    let mut agent = Agent::start(&link.a, &link.dir, &yaml);
    eventually(Duration::from_secs(300), "every session and route", || {
        ready(&agent, case.sessions, case.routes)
    });
    let mut out = Vec::new();
    for n in 0..handoffs {
        let new = Agent::successor(&link.a, &link.dir, &yaml, &[], &format!("agent-{n}.log"));
        let pid = new.daemon.child.id();
        let report = eventually(Duration::from_secs(120), "the takeover", || {
            let s = new.status()?;
            match &s["last_handoff"] {
                h if s["pid"] == pid && h["result"] == "completed" => Ok(h.clone()),
                h => Err(h.to_string()),
            }
        });
        assert_eq!(report["sessions"], case.sessions, "{report}");
        let old_log = if n == 0 { "agent.log".to_string() } else { format!("agent-{}.log", n - 1) };
        let phases = phases(&link.dir.join(old_log), &link.dir.join(format!("agent-{n}.log")));
        let pause_ms = report["pause_ms"].as_f64().unwrap();
        let state_bytes = report["state_bytes"].as_u64().unwrap();
        out.push(Measured { pause_ms, state_bytes, phases });
        agent.daemon.signal("TERM");
        agent.daemon.wait_exit(Duration::from_secs(5));
        agent = new;
        ready(&agent, case.sessions, case.routes).unwrap();
    }
    out
}

/// One bird2 with `n` sessions, each between its own pair of addresses;
/// the first sends `routes` prefixes (attribute sets of 4). Returns it and
/// the agent's `peers:` entries. bird dials and the agent listens: bird
/// listens with a backlog of 8, so 1,000 agents' dials would mostly lose
/// their SYNs and take minutes of SYN back-off to come up.
fn bird_many(link: &Link, n: usize, routes: u32) -> (Daemon, String) {
    let mut conf = format!(
        "router id {};\nprotocol device {{}}\nprotocol static originated {{ ipv4;\n",
        link.b_v4
    );
    for i in 0..routes {
        let ([a, b, c], med) = table::nth(i);
        writeln!(conf, "route {a}.{b}.{c}.0/24 blackhole {{ bgp_med = {med}; }};").unwrap();
    }
    conf += "}\n";
    let mut peers = String::new();
    for (k, (ours, theirs)) in address_pairs(link, n).into_iter().enumerate() {
        let export = if k == 0 { "all" } else { "none" };
        writeln!(
            conf,
            "protocol bgp r{k} {{ local {theirs} as {ROUTER_AS}; neighbor {ours} as {AGENT_AS}; multihop; \
             connect delay time 1; connect retry time 2; error wait time 1, 5; \
             hold time 90; ipv4 {{ import none; export {export}; next hop self; }}; }}"
        )
        .unwrap();
        peers += &format!(
            "- {{ address: {theirs}, localAddress: {ours}, asn: {ROUTER_AS}, holdTime: 90, passive: true, families: [ipv4-unicast], import: {{ maxPrefixes: {{ limit: 100000000 }} }} }}\n"
        );
    }
    let (bird, _ctl) = spawn_bird(&link.b, &link.dir, "routers", &conf);
    (bird, peers)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let table = env("PREFIXES", 1_000_000);
    let handoffs = env("HANDOFFS", 5);
    let cases = [
        Case { sessions: 1, routes: 0 },
        Case { sessions: 100, routes: 0 },
        Case { sessions: 1000, routes: 0 },
        Case { sessions: 1, routes: table },
        Case { sessions: 100, routes: table },
    ];
    // CASES=1x0,1x1000000 runs only those (sessions x routes).
    let only: Option<Vec<String>> =
        std::env::var("CASES").ok().map(|v| v.split(',').map(str::to_string).collect());
    let cases: Vec<&Case> = cases
        .iter()
        .filter(|c| {
            only.as_ref().is_none_or(|o| o.contains(&format!("{}x{}", c.sessions, c.routes)))
        })
        .collect();
    println!("| sessions | routes in Adj-RIB-In | pause median (min–max), ms | state passed |");
    println!("|---|---|---|---|");
    for case in cases {
        let mut runs = run(case, handoffs);
        runs.sort_by(|a, b| a.pause_ms.total_cmp(&b.pause_ms));
        let median = &runs[runs.len() / 2];
        println!(
            "| {} | {} | {:.1} ({:.1}–{:.1}) | {:.1} MB |",
            case.sessions,
            case.routes,
            median.pause_ms,
            runs[0].pause_ms,
            runs[runs.len() - 1].pause_ms,
            median.state_bytes as f64 / 1e6
        );
        let phases: Vec<String> =
            median.phases.iter().map(|(name, ms)| format!("{name} {ms:.1}")).collect();
        eprintln!("    the median handoff's phases, ms: {}", phases.join(", "));
    }
}
