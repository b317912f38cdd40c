//! FRR (zebra + bgpd) as a test router, driven over vtysh.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use super::*;

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
    fn reset(&self) {
        self.vtysh(&format!("clear bgp ipv4 unicast {}", self.link.a_v4)).unwrap();
    }

    fn last_reset(&self) -> Result<String, String> {
        let text = self.vtysh(&format!("show bgp neighbors {}", self.link.a_v4))?;
        let line = text.lines().find(|l| l.trim_start().starts_with("Last reset"));
        line.map(|l| l.trim().to_string()).ok_or(text)
    }

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
        Ok(from_agent(tables::frr_routes(&text)?))
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
