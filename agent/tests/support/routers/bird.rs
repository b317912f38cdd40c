//! BIRD 2 as a test router: static protocols for what it originates, its
//! route log for withdrawals.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use super::*;

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
            let password =
                if setup.ttl_security { password + "ttl security on;\n  " } else { password };
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

    fn last_reset(&self) -> Result<String, String> {
        let text = self.birdc("show protocols all agent4")?;
        let line = text.lines().find(|l| l.trim_start().starts_with("Last error:"));
        line.map(|l| l.trim().to_string()).ok_or(text)
    }

    fn reset(&self) {
        self.birdc("restart agent4").unwrap();
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
        Ok(tables::bird_routes(&text).into_iter().collect())
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
                .ok_or_else(|| format!("no {label}"))?;
            let total = line.rsplit('/').next().unwrap_or("").trim();
            total.parse().map_err(|_| format!("cannot read {line}"))
        };
        Ok(Timers { hold: value("Hold timer:")?, keepalive: value("Keepalive timer:")? })
    }
}
