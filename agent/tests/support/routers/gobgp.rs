//! gobgpd as a test router: config from a `RouterSetup`, routes originated
//! over its CLI, its RIB and event stream as data.

use std::collections::BTreeMap;
use std::fs;

use serde_json::Value;

use super::*;

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

    pub fn cli(&self, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["gobgp", "-p", self.api.rsplit(':').next().unwrap()];
        full.extend_from_slice(args);
        run(&self.link.b, &full)
    }

    /// [`Gobgp::cli`], again (for up to 20 s) when the call failed in gRPC's
    /// transport, as it does when a loaded machine keeps gobgpd from
    /// answering in the CLI's time: that says nothing of what is tested.
    /// Any other error, and one that outlasts the wait, is returned.
    fn cli_patiently(&self, args: &[&str]) -> Result<String, String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match self.cli(args) {
                Err(e)
                    if (e.contains("code = Unavailable") || e.contains("deadline exceeded"))
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                answer => return answer,
            }
        }
    }

    /// gobgpd has no static routes in its config: add them over its API,
    /// several CLI calls at a time.
    fn originate(&self, prefixes: &[String], family: &str) {
        std::thread::scope(|s| {
            for chunk in prefixes.chunks(prefixes.len().div_ceil(8).max(1)) {
                s.spawn(move || {
                    for p in chunk {
                        self.cli_patiently(&["global", "rib", "-a", family, "add", p]).unwrap();
                    }
                });
            }
        });
    }
}

impl Router for Gobgp<'_> {
    fn reset(&self) {
        self.cli(&["neighbor", &self.link.a_v4, "reset"]).unwrap();
    }

    fn last_reset(&self) -> Result<String, String> {
        let log = self.daemon.log_text();
        let line =
            log.lines().rev().find(|l| l.contains("Peer Down") && l.contains(&*self.link.a_v4));
        line.map(str::to_string).ok_or_else(|| "no Peer Down in gobgpd's log".into())
    }

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
        Ok(from_agent(tables::gobgp_routes(&text)?))
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
