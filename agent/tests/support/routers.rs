//! Real BGP routers from Debian's packages (gobgpd, bird2, frr) as test peers,
//! each with the same questions answered as data: what did you learn from the
//! agent, and what timers did you negotiate.
//!
//! Every router peers with the agent twice: over IPv4 transport (carrying
//! ipv4-unicast) and over IPv6 transport (carrying ipv6-unicast).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::{Daemon, Link, Netns, eventually};

pub const ROUTER_AS: u32 = 65000;
pub const AGENT_AS: u32 = 65001;

/// A route as a router shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteView {
    pub next_hop: String,
    pub as_path: Vec<u64>,
    pub med: Option<u64>,
    pub communities: Vec<String>,
}

/// Hold time and keepalive interval a router reports for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub hold: u64,
    pub keepalive: u64,
}

/// What every test router offers.
pub trait Router {
    fn kind(&self) -> &'static str;
    /// Routes learnt from the agent, of one family, keyed by prefix.
    fn learnt(&self, v6: bool) -> Result<BTreeMap<String, RouteView>, String>;
    /// Timers of the session with `neighbor`, once it is Established.
    fn timers(&self, neighbor: &str) -> Result<Timers, String>;
    /// Asks `neighbor` (the agent) to send its routes again with a
    /// ROUTE-REFRESH; false when this router has no way to send one.
    fn refresh(&self, neighbor: &str) -> bool;
    /// How many routes from the agent (IPv4) it holds only as Graceful
    /// Restart helper.
    fn stale(&self) -> Result<usize, String>;
    /// Starts counting withdrawals of the agent's routes from now on.
    fn watch(&mut self);
    /// Withdrawals of the agent's routes seen since `watch`.
    fn withdrawals(&self) -> usize;
    /// The IPv4 session with the agent as the router counts it: any reset
    /// changes `since`, any UPDATE from the agent changes `updates`.
    fn session(&self) -> Result<SessionView, String>;
    /// Announces (or withdraws) the `churn_v4` prefixes of the setup.
    fn churn(&self, announce: bool);
}

/// What a router says about its session with the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// When (or how many times) the session was established.
    pub since: String,
    /// UPDATE messages (gobgpd, FRR) or route updates (BIRD) received from the agent.
    pub updates: u64,
}

fn count_in(path: &std::path::Path, needle: &str) -> usize {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).matches(needle).count()
}

/// How a router is set up.
#[derive(Debug, Clone, Default)]
pub struct RouterSetup {
    pub hold_time: u32,
    pub keepalive: u32,
    /// Prefixes the router originates towards the agent.
    pub originate_v4: Vec<String>,
    pub originate_v6: Vec<String>,
    /// Graceful Restart (with the N-bit and LLGR) towards the agent.
    pub graceful_restart: Option<GrSetup>,
    /// Peer with the agent over IPv4 transport only.
    pub ipv4_only: bool,
    /// TCP MD5 password on the IPv4 session (BIRD and FRR).
    pub password: Option<String>,
    /// Prefixes announced at start and flapped by [`Router::churn`].
    pub churn_v4: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct GrSetup {
    pub restart_time: u32,
    pub long_lived_stale_time: u32,
}

fn run(ns: &Netns, args: &[&str]) -> Result<String, String> {
    let out = ns.exec(args).output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------- gobgpd

pub struct Gobgp<'a> {
    link: &'a Link,
    churn: Vec<String>,
    api: String,
    pub daemon: Daemon,
    monitor: Option<Daemon>,
}

impl<'a> Gobgp<'a> {
    pub fn start(link: &'a Link, setup: &RouterSetup) -> Self {
        Self::start_with(link, setup, false)
    }

    /// `restarted`: start with `-r`, announcing a graceful restart of its own.
    pub fn start_with(link: &'a Link, setup: &RouterSetup, restarted: bool) -> Self {
        let mut conf = format!(
            "[global.config]\n  as = {ROUTER_AS}\n  router-id = \"{}\"\n  port = 179\n",
            link.b_v4
        );
        let sessions = [(&link.a_v4, "ipv4-unicast"), (&link.a_v6, "ipv6-unicast")];
        for (neighbor, family) in &sessions[..if setup.ipv4_only { 1 } else { 2 }] {
            conf += &format!(
                "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{neighbor}\"\n    peer-as = {AGENT_AS}\n  \
                 [neighbors.timers.config]\n    hold-time = {}\n    keepalive-interval = {}\n    connect-retry = 1\n",
                setup.hold_time, setup.keepalive
            );
            if let Some(gr) = setup.graceful_restart {
                conf += &format!(
                    "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = {}\n    \
                     notification-enabled = true\n    long-lived-enabled = true\n",
                    gr.restart_time
                );
            }
            conf += &format!(
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n"
            );
            if let Some(gr) = setup.graceful_restart {
                conf +=
                    "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n";
                conf += &format!(
                    "    [neighbors.afi-safis.long-lived-graceful-restart.config]\n      enabled = true\n      restart-time = {}\n",
                    gr.long_lived_stale_time
                );
            }
        }
        let path = link.dir.join("gobgpd.toml");
        fs::write(&path, conf).unwrap();
        let api = "127.0.0.1:50051".to_string();
        let mut args =
            vec!["gobgpd", "-f", path.to_str().unwrap(), "--api-hosts", &api, "--log-plain"];
        if restarted {
            args.push("-r");
        }
        let daemon = Daemon::spawn("gobgpd", link.b.exec(&args), link.dir.join("gobgpd.log"));
        let router = Gobgp { link, churn: setup.churn_v4.clone(), api, daemon, monitor: None };
        eventually(std::time::Duration::from_secs(10), "gobgpd API", || router.cli(&["global"]));
        router.originate(&setup.originate_v4, "ipv4");
        router.originate(&setup.churn_v4, "ipv4");
        router.originate(&setup.originate_v6, "ipv6");
        router
    }

    /// Routes from the agent that gobgpd holds marked stale (GR), and how
    /// many of them carry LLGR_STALE.
    pub fn stale(&self) -> Result<(usize, usize), String> {
        let text = self.cli(&["-j", "global", "rib", "-a", "ipv4"])?;
        let table: BTreeMap<String, Vec<Value>> =
            serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let paths: Vec<&Value> = table.values().flatten().collect();
        let stale = paths.iter().filter(|p| p["stale"] == true).count();
        let llgr_stale = Value::from(0xFFFF_0006u32);
        let llgr = paths
            .iter()
            .filter(|p| {
                p["attrs"].as_array().into_iter().flatten().any(|a| {
                    a["type"] == 8
                        && a["communities"].as_array().is_some_and(|c| c.contains(&llgr_stale))
                })
            })
            .count();
        Ok((stale, llgr))
    }

    /// Starts `gobgp monitor global rib` and waits until it is subscribed:
    /// a sentinel route added afterwards shows up in its log. (`--current`
    /// cannot be used: a large table exceeds gobgp's 4 MB gRPC message limit.)
    pub fn monitor(&self) -> Daemon {
        let port = self.api.rsplit(':').next().unwrap();
        let cmd = self.link.b.exec(&["gobgp", "-p", port, "-j", "monitor", "global", "rib"]);
        let monitor = Daemon::spawn("gobgp monitor", cmd, self.link.dir.join("monitor.log"));
        let mut n = 0;
        eventually(std::time::Duration::from_secs(10), "gobgp monitor to subscribe", || {
            n += 1;
            let sentinel = format!("192.0.2.{}/32", n % 250);
            self.cli(&["global", "rib", "-a", "ipv4", "add", &sentinel])?;
            let log = fs::read_to_string(&monitor.log).unwrap_or_default();
            if log.contains("192.0.2.") { Ok(()) } else { Err(log) }
        });
        // Take the sentinels away again: they are not the agent's business.
        for k in 1..=n {
            let _ = self.cli(&[
                "global",
                "rib",
                "-a",
                "ipv4",
                "del",
                &format!("192.0.2.{}/32", k % 250),
            ]);
        }
        monitor
    }

    /// Events about the agent's routes (source 10.77.0.1) the monitor has
    /// seen so far: (withdrawals, announcements carrying GRACEFUL_SHUTDOWN).
    pub fn events(monitor: &Daemon) -> (usize, usize) {
        let text =
            String::from_utf8_lossy(&fs::read(&monitor.log).unwrap_or_default()).into_owned();
        let mut counts = (0, 0);
        for line in text.lines() {
            let Ok(Value::Array(paths)) = serde_json::from_str::<Value>(line) else { continue };
            for path in paths.iter().filter(|p| p["source-id"] == "10.77.0.1") {
                if path["withdrawal"] == true {
                    counts.0 += 1;
                } else if path.to_string().contains("4294901760") {
                    counts.1 += 1;
                }
            }
        }
        counts
    }

    fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["gobgp", "-p", self.api.rsplit(':').next().unwrap()];
        full.extend_from_slice(args);
        run(&self.link.b, &full)
    }

    /// gobgpd has no static routes in its config: add them over its API,
    /// several CLI calls at a time.
    fn originate(&self, prefixes: &[String], family: &str) {
        std::thread::scope(|s| {
            for chunk in prefixes.chunks(prefixes.len().div_ceil(8).max(1)) {
                s.spawn(move || {
                    for p in chunk {
                        self.cli(&["global", "rib", "-a", family, "add", p]).unwrap();
                    }
                });
            }
        });
    }
}

impl Router for Gobgp<'_> {
    fn kind(&self) -> &'static str {
        "gobgpd"
    }

    fn session(&self) -> Result<SessionView, String> {
        let text = self.cli(&["-j", "neighbor", &self.link.a_v4])?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if v["state"]["session_state"] != 6 {
            return Err(format!("session state {}", v["state"]["session_state"]));
        }
        Ok(SessionView {
            since: v["timers"]["state"]["uptime"]["seconds"].to_string(),
            updates: v["state"]["messages"]["received"]["update"].as_u64().unwrap_or(0),
        })
    }

    fn churn(&self, announce: bool) {
        let verb = if announce { "add" } else { "del" };
        for p in &self.churn {
            self.cli(&["global", "rib", "-a", "ipv4", verb, p]).unwrap();
        }
    }

    /// gobgpd keeps every Adj-RIB-In, so its soft reset re-applies policy
    /// locally and never sends a ROUTE-REFRESH.
    fn refresh(&self, _neighbor: &str) -> bool {
        false
    }

    fn stale(&self) -> Result<usize, String> {
        Ok(Gobgp::stale(self)?.0)
    }

    fn watch(&mut self) {
        self.monitor = Some(self.monitor());
    }

    fn withdrawals(&self) -> usize {
        self.monitor.as_ref().map_or(0, |m| Gobgp::events(m).0)
    }

    fn learnt(&self, v6: bool) -> Result<BTreeMap<String, RouteView>, String> {
        let family = if v6 { "ipv6" } else { "ipv4" };
        let text = self.cli(&["-j", "global", "rib", "-a", family])?;
        let table: BTreeMap<String, Vec<Value>> =
            serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for (prefix, paths) in table {
            for path in &paths {
                let mut view = RouteView {
                    next_hop: String::new(),
                    as_path: vec![],
                    med: None,
                    communities: vec![],
                };
                for attr in path["attrs"].as_array().into_iter().flatten() {
                    match attr["type"].as_u64() {
                        Some(2) => {
                            for seg in attr["as_paths"].as_array().into_iter().flatten() {
                                view.as_path.extend(
                                    seg["asns"]
                                        .as_array()
                                        .into_iter()
                                        .flatten()
                                        .filter_map(Value::as_u64),
                                );
                            }
                        }
                        Some(3) | Some(14) => {
                            view.next_hop = attr["nexthop"].as_str().unwrap_or("").to_string()
                        }
                        Some(4) => view.med = attr["metric"].as_u64(),
                        Some(8) => {
                            view.communities = attr["communities"]
                                .as_array()
                                .into_iter()
                                .flatten()
                                .filter_map(Value::as_u64)
                                .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                                .collect()
                        }
                        _ => {}
                    }
                }
                if view.as_path.first() == Some(&u64::from(AGENT_AS)) {
                    out.insert(prefix.clone(), view);
                }
            }
        }
        Ok(out)
    }

    fn timers(&self, neighbor: &str) -> Result<Timers, String> {
        let text = self.cli(&["-j", "neighbor", neighbor])?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        if v["state"]["session_state"] != 6 {
            return Err(format!("session state {}", v["state"]["session_state"]));
        }
        let t = &v["timers"]["state"];
        Ok(Timers {
            hold: t["negotiated_hold_time"].as_u64().ok_or("no hold time")?,
            keepalive: t["keepalive_interval"].as_u64().ok_or("no keepalive")?,
        })
    }
}

// ---------------------------------------------------------------- BIRD

/// Writes `<dir>/<name>.conf` and runs BIRD on it in `ns`, with its control
/// socket at `<dir>/<name>.ctl` (returned) and its output in `<name>.log`.
pub fn spawn_bird(ns: &Netns, dir: &std::path::Path, name: &str, conf: &str) -> (Daemon, PathBuf) {
    let path = dir.join(format!("{name}.conf"));
    fs::write(&path, conf).unwrap();
    let ctl = dir.join(format!("{name}.ctl"));
    let pid = dir.join(format!("{name}.pid"));
    let args = [
        "bird",
        "-f",
        "-c",
        path.to_str().unwrap(),
        "-s",
        ctl.to_str().unwrap(),
        "-P",
        pid.to_str().unwrap(),
    ];
    (Daemon::spawn(name, ns.exec(&args), dir.join(format!("{name}.log"))), ctl)
}

pub struct Bird<'a> {
    link: &'a Link,
    ctl: PathBuf,
    log: PathBuf,
    removed_before: usize,
    _daemon: Daemon,
}

impl<'a> Bird<'a> {
    pub fn start(link: &'a Link, setup: &RouterSetup) -> Self {
        let log = link.dir.join("bird-routes.log");
        let mut conf = format!(
            "router id {};\nlog \"{}\" all;\nprotocol device {{}}\nipv4 table t4;\nipv6 table t6;\n",
            link.b_v4,
            log.display()
        );
        conf += "protocol static s4 { ipv4 { table t4; };\n";
        for p in &setup.originate_v4 {
            conf += &format!("  route {p} blackhole;\n");
        }
        conf += "}\nprotocol static churn4 { ipv4 { table t4; };\n";
        for p in &setup.churn_v4 {
            conf += &format!("  route {p} blackhole;\n");
        }
        conf += "}\nprotocol static s6 { ipv6 { table t6; };\n";
        for p in &setup.originate_v6 {
            conf += &format!("  route {p} blackhole;\n");
        }
        conf += "}\n";
        let sessions = [
            ("agent4", &link.b_v4, &link.a_v4, "ipv4", "t4"),
            ("agent6", &link.b_v6, &link.a_v6, "ipv6", "t6"),
        ];
        let gr = setup.graceful_restart.map_or(String::new(), |gr| {
            format!(
                "graceful restart on; graceful restart time {}; long lived graceful restart on; \
                 long lived stale time {};\n  ",
                gr.restart_time, gr.long_lived_stale_time
            )
        });
        for (name, local, neighbor, channel, table) in
            &sessions[..if setup.ipv4_only { 1 } else { 2 }]
        {
            let password = match (&setup.password, *name) {
                (Some(p), "agent4") => format!("password \"{p}\";\n  "),
                _ => String::new(),
            };
            conf += &format!(
                "protocol bgp {name} {{\n  local {local} as {ROUTER_AS};\n  neighbor {neighbor} as {AGENT_AS};\n  \
                 hold time {}; keepalive time {}; connect retry time 1;\n  {gr}{password}debug {{ states, routes, events }};\n  \
                 {channel} {{ table {table}; import all; export all; next hop self; }};\n}}\n",
                setup.hold_time, setup.keepalive
            );
        }
        let (daemon, ctl) = spawn_bird(&link.b, &link.dir, "bird", &conf);
        let router = Bird { link, ctl, log, removed_before: 0, _daemon: daemon };
        eventually(std::time::Duration::from_secs(10), "bird control socket", || {
            router.birdc("show status")
        });
        router
    }

    fn birdc(&self, command: &str) -> Result<String, String> {
        let mut args = vec!["birdc", "-s", self.ctl.to_str().unwrap()];
        args.extend(command.split(' '));
        run(&self.link.b, &args)
    }
}

impl Router for Bird<'_> {
    fn kind(&self) -> &'static str {
        "bird"
    }

    /// BIRD counts route updates, not messages, and shows when the
    /// protocol last changed state.
    fn session(&self) -> Result<SessionView, String> {
        let text = self.birdc("show protocols all agent4")?;
        if !text.contains("BGP state:          Established") {
            return Err("not Established".into());
        }
        let head = text.lines().find(|l| l.starts_with("agent4")).ok_or("no agent4 line")?;
        let since: Vec<&str> = head.split_whitespace().skip(4).take(2).collect();
        let updates = text
            .lines()
            .find(|l| l.trim_start().starts_with("Import updates:"))
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|n| n.parse().ok())
            .ok_or("no import update counts")?;
        Ok(SessionView { since: since.join(" "), updates })
    }

    fn churn(&self, announce: bool) {
        self.birdc(if announce { "enable churn4" } else { "disable churn4" }).unwrap();
    }

    fn refresh(&self, neighbor: &str) -> bool {
        let proto = if neighbor.contains(':') { "agent6" } else { "agent4" };
        self.birdc(&format!("reload in {proto}")).unwrap();
        true
    }

    /// BIRD does not mark routes; it says the helper is active per protocol.
    fn stale(&self) -> Result<usize, String> {
        let text = self.birdc("show protocols all agent4")?;
        if text.contains("Neighbor graceful restart active") {
            Ok(self.learnt(false)?.len())
        } else {
            Ok(0)
        }
    }

    fn watch(&mut self) {
        self.removed_before = count_in(&self.log, "> removed");
    }

    fn withdrawals(&self) -> usize {
        count_in(&self.log, "> removed") - self.removed_before
    }

    fn learnt(&self, v6: bool) -> Result<BTreeMap<String, RouteView>, String> {
        let (table, proto) = if v6 { ("t6", "agent6") } else { ("t4", "agent4") };
        let text = self.birdc(&format!("show route all table {table} protocol {proto}"))?;
        let mut out = BTreeMap::new();
        let mut current: Option<(String, RouteView)> = None;
        for line in text.lines() {
            if !line.starts_with(char::is_whitespace) && line.contains('/') {
                if let Some((p, v)) = current.take() {
                    out.insert(p, v);
                }
                let prefix = line.split_whitespace().next().unwrap().to_string();
                current = Some((
                    prefix,
                    RouteView {
                        next_hop: String::new(),
                        as_path: vec![],
                        med: None,
                        communities: vec![],
                    },
                ));
                continue;
            }
            let Some((_, view)) = current.as_mut() else { continue };
            let line = line.trim();
            if let Some(v) = line.strip_prefix("BGP.next_hop: ") {
                view.next_hop = v.split_whitespace().next().unwrap_or("").to_string();
            } else if let Some(v) = line.strip_prefix("BGP.as_path: ") {
                view.as_path = v.split_whitespace().filter_map(|a| a.parse().ok()).collect();
            } else if let Some(v) = line.strip_prefix("BGP.med: ") {
                view.med = v.parse().ok();
            } else if let Some(v) = line.strip_prefix("BGP.community: ") {
                view.communities = v
                    .split(") (")
                    .map(|c| c.trim_matches(|ch| ch == '(' || ch == ')').replace(',', ":"))
                    .collect();
            }
        }
        if let Some((p, v)) = current {
            out.insert(p, v);
        }
        Ok(out)
    }

    fn timers(&self, neighbor: &str) -> Result<Timers, String> {
        let proto = if neighbor.contains(':') { "agent6" } else { "agent4" };
        let text = self.birdc(&format!("show protocols all {proto}"))?;
        if !text.contains("BGP state:          Established") {
            return Err("not Established".into());
        }
        let value = |label: &str| -> Result<u64, String> {
            let line = text
                .lines()
                .find(|l| l.trim_start().starts_with(label))
                .ok_or(format!("no {label}"))?;
            let total = line.rsplit('/').next().unwrap_or("").trim();
            total.parse().map_err(|_| format!("cannot read {line}"))
        };
        Ok(Timers { hold: value("Hold timer:")?, keepalive: value("Keepalive timer:")? })
    }
}

// ---------------------------------------------------------------- FRR

pub struct Frr<'a> {
    link: &'a Link,
    churn: Vec<String>,
    run_dir: PathBuf,
    withdrawn_before: usize,
    _zebra: Daemon,
    _bgpd: Daemon,
}

impl<'a> Frr<'a> {
    pub fn start(link: &'a Link, setup: &RouterSetup) -> Self {
        let run_dir = link.dir.join("frr");
        fs::create_dir_all(&run_dir).unwrap();
        fs::set_permissions(&link.dir, fs::Permissions::from_mode(0o755)).unwrap();
        let mut conf = format!(
            "frr defaults traditional\nhostname router\nlog file {}/frr.log\nlog timestamp precision 3\n\
             debug bgp updates in\n\
             router bgp {ROUTER_AS}\n bgp router-id {}\n no bgp ebgp-requires-policy\n no bgp network import-check\n",
            run_dir.display(),
            link.b_v4
        );
        if let Some(gr) = setup.graceful_restart {
            conf += &format!(
                " bgp graceful-restart\n bgp graceful-restart restart-time {}\n bgp long-lived-graceful-restart stale-time {}\n",
                gr.restart_time, gr.long_lived_stale_time
            );
        }
        let neighbors = [&link.a_v4, &link.a_v6];
        for n in &neighbors[..if setup.ipv4_only { 1 } else { 2 }] {
            conf += &format!(
                " neighbor {n} remote-as {AGENT_AS}\n neighbor {n} timers {} {}\n neighbor {n} timers connect 1\n",
                setup.keepalive, setup.hold_time
            );
        }
        if let Some(p) = &setup.password {
            conf += &format!(" neighbor {} password {p}\n", link.a_v4);
        }
        conf += &format!(" address-family ipv4 unicast\n  neighbor {} activate\n", link.a_v4);
        if !setup.ipv4_only {
            conf += &format!("  no neighbor {} activate\n", link.a_v6);
        }
        for p in setup.originate_v4.iter().chain(&setup.churn_v4) {
            conf += &format!("  network {p}\n");
        }
        conf += " exit-address-family\n";
        conf += " address-family ipv6 unicast\n";
        if !setup.ipv4_only {
            conf += &format!("  neighbor {} activate\n", link.a_v6);
        }
        for p in &setup.originate_v6 {
            conf += &format!("  network {p}\n");
        }
        conf += " exit-address-family\n";
        let path = run_dir.join("frr.conf");
        fs::write(&path, conf).unwrap();
        Command::new("chown").args(["-R", "frr:frr", run_dir.to_str().unwrap()]).status().unwrap();
        let common = |pid: &str| {
            vec![
                "-z".to_string(),
                run_dir.join("zserv.api").display().to_string(),
                "--vty_socket".to_string(),
                run_dir.display().to_string(),
                "-i".to_string(),
                run_dir.join(pid).display().to_string(),
                "-f".to_string(),
                path.display().to_string(),
                "-u".to_string(),
                "frr".to_string(),
                "-g".to_string(),
                "frr".to_string(),
            ]
        };
        let mut zebra_args = vec!["/usr/lib/frr/zebra".to_string()];
        zebra_args.extend(common("zebra.pid"));
        let zebra_args: Vec<&str> = zebra_args.iter().map(String::as_str).collect();
        let zebra = Daemon::spawn("zebra", link.b.exec(&zebra_args), link.dir.join("zebra.log"));
        eventually(std::time::Duration::from_secs(10), "zebra socket", || {
            if run_dir.join("zserv.api").exists() { Ok(()) } else { Err("no zserv.api".into()) }
        });
        let mut bgpd_args = vec!["/usr/lib/frr/bgpd".to_string()];
        bgpd_args.extend(common("bgpd.pid"));
        bgpd_args.extend(["-p".to_string(), "179".to_string()]);
        let bgpd_args: Vec<&str> = bgpd_args.iter().map(String::as_str).collect();
        let bgpd = Daemon::spawn("bgpd", link.b.exec(&bgpd_args), link.dir.join("bgpd.log"));
        let router = Frr {
            link,
            churn: setup.churn_v4.clone(),
            run_dir,
            withdrawn_before: 0,
            _zebra: zebra,
            _bgpd: bgpd,
        };
        eventually(std::time::Duration::from_secs(10), "bgpd vty", || {
            router.vtysh("show bgp summary")
        });
        router
    }

    fn vtysh(&self, command: &str) -> Result<String, String> {
        self.vtysh_all(&[command])
    }

    fn vtysh_all(&self, commands: &[&str]) -> Result<String, String> {
        let mut args = vec!["vtysh", "--vty_socket", self.run_dir.to_str().unwrap()];
        for c in commands {
            args.extend(["-c", c]);
        }
        run(&self.link.b, &args)
    }
}

impl Router for Frr<'_> {
    fn kind(&self) -> &'static str {
        "frr"
    }

    fn session(&self) -> Result<SessionView, String> {
        let neighbor = &self.link.a_v4;
        let text = self.vtysh(&format!("show bgp neighbors {neighbor} json"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let n = &v[neighbor.as_str()];
        if n["bgpState"] != "Established" {
            return Err(format!("state {}", n["bgpState"]));
        }
        Ok(SessionView {
            since: format!(
                "established {} dropped {}",
                n["connectionsEstablished"], n["connectionsDropped"]
            ),
            updates: n["messageStats"]["updatesRecv"].as_u64().unwrap_or(0),
        })
    }

    fn churn(&self, announce: bool) {
        let no = if announce { "" } else { "no " };
        let lines: Vec<String> = self.churn.iter().map(|p| format!("{no}network {p}")).collect();
        let mut commands =
            vec!["configure terminal", "router bgp 65000", "address-family ipv4 unicast"];
        commands.extend(lines.iter().map(String::as_str));
        self.vtysh_all(&commands).unwrap();
    }

    fn refresh(&self, neighbor: &str) -> bool {
        let family = if neighbor.contains(':') { "ipv6" } else { "ipv4" };
        self.vtysh(&format!("clear bgp {family} unicast {neighbor} soft in")).unwrap();
        true
    }

    fn stale(&self) -> Result<usize, String> {
        let text = self.vtysh("show bgp ipv4 unicast json")?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let paths = v["routes"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(_, p)| p.as_array().cloned().unwrap_or_default());
        Ok(paths.filter(|p| p["stale"] == true).count())
    }

    fn watch(&mut self) {
        self.withdrawn_before = count_in(&self.run_dir.join("frr.log"), "-- withdrawn");
    }

    fn withdrawals(&self) -> usize {
        count_in(&self.run_dir.join("frr.log"), "-- withdrawn") - self.withdrawn_before
    }

    fn learnt(&self, v6: bool) -> Result<BTreeMap<String, RouteView>, String> {
        let family = if v6 { "ipv6" } else { "ipv4" };
        let text = self.vtysh(&format!("show bgp {family} unicast json detail"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let mut out = BTreeMap::new();
        for (prefix, paths) in v["routes"].as_object().into_iter().flatten() {
            for path in paths.as_array().into_iter().flatten() {
                let as_path: Vec<u64> = path["aspath"]["segments"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s["list"].as_array().cloned().unwrap_or_default())
                    .filter_map(|a| a.as_u64())
                    .collect();
                if as_path.first() != Some(&u64::from(AGENT_AS)) {
                    continue;
                }
                out.insert(
                    prefix.clone(),
                    RouteView {
                        next_hop: path["nexthops"][0]["ip"].as_str().unwrap_or("").to_string(),
                        as_path,
                        med: path["metric"].as_u64(),
                        communities: path["community"]["list"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c.as_str().map(String::from))
                            .collect(),
                    },
                );
            }
        }
        Ok(out)
    }

    fn timers(&self, neighbor: &str) -> Result<Timers, String> {
        let text = self.vtysh(&format!("show bgp neighbors {neighbor} json"))?;
        let v: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let n = &v[neighbor];
        if n["bgpState"] != "Established" {
            return Err(format!("state {}", n["bgpState"]));
        }
        Ok(Timers {
            hold: n["bgpTimerHoldTimeMsecs"].as_u64().ok_or("no hold")? / 1000,
            keepalive: n["bgpTimerKeepAliveIntervalMsecs"].as_u64().ok_or("no keepalive")? / 1000,
        })
    }
}

// ------------------------------------------------------- many sessions

/// `n` sessions from one gobgpd to the agent, each between its own pair of
/// addresses in 10.78.0.0/16 (gobgpd passive, the agent dials). Returns
/// gobgpd and the agent's `peers:` entries as YAML.
pub fn gobgp_many(link: &Link, n: usize, hold_time: u32) -> (Daemon, String) {
    let pair = |k: usize| {
        (
            format!("10.78.{}.{}", 1 + k / 200, 1 + k % 200),
            format!("10.78.{}.{}", 21 + k / 200, 1 + k % 200),
        )
    };
    let (mut a_cmds, mut b_cmds) = (String::new(), String::new());
    let mut conf = format!(
        "[global.config]\n  as = {ROUTER_AS}\n  router-id = \"{}\"\n  port = 179\n",
        link.b_v4
    );
    let mut peers = String::new();
    for k in 0..n {
        let (ours, theirs) = pair(k);
        a_cmds += &format!("addr add {ours}/16 dev {}\n", link.a_dev);
        b_cmds += &format!("addr add {theirs}/16 dev {}\n", link.b_dev);
        conf += &format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{ours}\"\n    peer-as = {AGENT_AS}\n  \
             [neighbors.transport.config]\n    local-address = \"{theirs}\"\n    passive-mode = true\n  \
             [neighbors.timers.config]\n    hold-time = {hold_time}\n    keepalive-interval = {}\n  \
             [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n",
            hold_time / 3
        );
        peers += &format!(
            "- address: {theirs}\n  localAddress: {ours}\n  asn: {ROUTER_AS}\n  holdTime: {hold_time}\n  \
             connectRetryTime: 1\n  families: [ipv4-unicast]\n"
        );
    }
    for (ns, cmds) in [(&link.a, &a_cmds), (&link.b, &b_cmds)] {
        let path = link.dir.join(format!("{}.ip", ns.name));
        fs::write(&path, cmds).unwrap();
        super::sh(&["ip", "-n", &ns.name, "-batch", path.to_str().unwrap()]);
    }
    let path = link.dir.join("gobgpd-many.toml");
    fs::write(&path, conf).unwrap();
    let args =
        ["gobgpd", "-f", path.to_str().unwrap(), "--api-hosts", "127.0.0.1:50061", "--log-plain"];
    (Daemon::spawn("gobgpd", link.b.exec(&args), link.dir.join("gobgpd-many.log")), peers)
}

/// The Established sessions of [`gobgp_many`]'s gobgpd as it counts them:
/// (agent address, uptime, UPDATEs received), sorted.
pub fn gobgp_many_sessions(link: &Link) -> Result<Vec<(String, String, u64)>, String> {
    let text = run(&link.b, &["gobgp", "-p", "50061", "-j", "neighbor"])?;
    let all: Vec<Value> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut up: Vec<_> = all
        .iter()
        .filter(|n| n["state"]["session_state"] == 6)
        .map(|n| {
            (
                n["state"]["neighbor_address"].to_string(),
                n["timers"]["state"]["uptime"]["seconds"].to_string(),
                n["state"]["messages"]["received"]["update"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    up.sort();
    Ok(up)
}
