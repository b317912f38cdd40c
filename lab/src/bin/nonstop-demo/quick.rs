//! `script/demo --quick`: the agent-level upgrade alone, no Kubernetes, in
//! seconds. gobgpd in one network namespace, nonstop-agent (announcing 1,002
//! prefixes) in another; a second agent binary started on the same state dir
//! takes the listener and the live session over, as a plain Linux host would
//! upgrade (README: "Upgrading the agent on a plain Linux host"). The report
//! is gobgpd's own count of what it received from the gateway.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{say, wait};

const GATEWAY_NS: &str = "quick-gateway";
const ROUTER_NS: &str = "quick-router";
const GATEWAY_IP: &str = "10.97.0.2";
const ROUTER_IP: &str = "10.97.0.1";
/// Prefixes the agent announces: two service prefixes and 1,000 more.
const EXTRA: usize = 1000;

/// Namespaces and processes of the quick demo, gone when this drops.
struct Scene {
    dir: PathBuf,
    children: Vec<Child>,
}

impl Scene {
    fn new() -> Result<Scene, String> {
        let dir = std::env::temp_dir().join("nonstop-quick");
        teardown();
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let scene = Scene { dir, children: Vec::new() };
        for ns in [GATEWAY_NS, ROUTER_NS] {
            sh(&["ip", "netns", "add", ns])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
        }
        // One point-to-point link, gateway ── router.
        sh(&[
            "ip", "link", "add", "qgw", "netns", GATEWAY_NS, "type", "veth", "peer", "name", "qrt",
            "netns", ROUTER_NS,
        ])?;
        for (ns, dev, ip) in [(GATEWAY_NS, "qgw", GATEWAY_IP), (ROUTER_NS, "qrt", ROUTER_IP)] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("{ip}/30"), "dev", dev])?;
            sh(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        Ok(scene)
    }

    fn spawn(
        &mut self,
        ns: &str,
        args: &[&str],
        env: &[(&str, &str)],
        log: &str,
    ) -> Result<u32, String> {
        let log = fs::File::create(self.dir.join(log)).map_err(|e| e.to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(args)
            .envs(env.iter().copied())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", args[0]))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }
}

/// Stops what ran and removes the namespaces; the logs stay in the dir.
impl Drop for Scene {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        teardown();
    }
}

fn teardown() {
    for ns in [GATEWAY_NS, ROUTER_NS] {
        let _ = Command::new("ip").args(["netns", "pids", ns]).output().map(|o| {
            for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                let _ = Command::new("kill").args(["-9", pid]).output();
            }
        });
        let _ = Command::new("ip").args(["netns", "del", ns]).output();
    }
}

fn sh(args: &[&str]) -> Result<String, String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!("{}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn gobgp(args: &[&str]) -> Result<Value, String> {
    let mut full = vec!["ip", "netns", "exec", ROUTER_NS, "gobgp", "-j"];
    full.extend_from_slice(args);
    serde_json::from_str(&sh(&full)?).map_err(|e| format!("gobgp {}: {e}", args.join(" ")))
}

/// What gobgpd counts for the gateway's session.
#[derive(Debug)]
struct Seen {
    established: bool,
    uptime_since: i64,
    opens: u64,
    notifications: u64,
    updates: u64,
    withdrawn_prefixes: u64,
}

fn seen() -> Result<Seen, String> {
    let n = gobgp(&["neighbor", GATEWAY_IP])?;
    let rx = &n["state"]["messages"]["received"];
    let count = |v: &Value| v.as_u64().unwrap_or(0);
    Ok(Seen {
        established: n["state"]["session_state"] == 6,
        uptime_since: n["timers"]["state"]["uptime"]["seconds"].as_i64().unwrap_or(0),
        opens: count(&rx["open"]),
        notifications: count(&rx["notification"]),
        updates: count(&rx["update"]),
        withdrawn_prefixes: count(&rx["withdraw_prefix"]),
    })
}

/// Every prefix in gobgpd's table with its next hops, sorted.
fn routes() -> Result<Vec<(String, Vec<String>)>, String> {
    let rib = gobgp(&["global", "rib"])?;
    let mut out: Vec<(String, Vec<String>)> = rib
        .as_object()
        .into_iter()
        .flatten()
        .map(|(prefix, paths)| {
            let hops = paths
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    p["attrs"]
                        .as_array()?
                        .iter()
                        .find_map(|a| a["nexthop"].as_str().map(String::from))
                })
                .collect();
            (prefix.clone(), hops)
        })
        .collect();
    out.sort();
    Ok(out)
}

fn agent_config() -> String {
    let mut c = format!(
        "asn: 65001\nrouterId: {GATEWAY_IP}\npeers:\n- address: {ROUTER_IP}\n  asn: 65000\n  \
         holdTime: 9\n  connectRetryTime: 1\n  families: [ipv4-unicast]\n\
         shutdown: {{drainSeconds: 1}}\nannounce:\n\
         - {{prefix: 198.51.100.0/24}}\n- {{prefix: 203.0.113.0/24}}\n"
    );
    for i in 0..EXTRA {
        c += &format!("- {{prefix: 100.{}.{}.0/24}}\n", 64 + i / 256, i % 256);
    }
    c
}

fn status(agent: &Path, state: &Path) -> Result<Value, String> {
    let text = sh(&[
        agent.to_str().unwrap_or_default(),
        "status",
        "--state-dir",
        state.to_str().unwrap_or_default(),
    ])?;
    serde_json::from_str(&text).map_err(|e| e.to_string())
}

pub fn demo(agent: &Path) -> Result<(), String> {
    let started = Instant::now();
    say(started, "quick demo: gobgpd and nonstop-agent in two network namespaces, no Kubernetes");
    let mut scene = Scene::new()?;
    let dir = scene.dir.clone();
    let router_conf = dir.join("gobgpd.toml");
    fs::write(
        &router_conf,
        format!(
            "[global.config]\n  as = 65000\n  router-id = \"{ROUTER_IP}\"\n  port = 179\n  \
             local-address-list = [\"{ROUTER_IP}\"]\n\
             [[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{GATEWAY_IP}\"\n    peer-as = 65001\n  \
             [neighbors.transport.config]\n    passive-mode = true\n  \
             [neighbors.timers.config]\n    hold-time = 9\n    keepalive-interval = 3\n  \
             [neighbors.graceful-restart.config]\n    enabled = true\n    helper-only = true\n  \
             [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n    \
             [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    scene.spawn(
        ROUTER_NS,
        &["gobgpd", "-f", router_conf.to_str().unwrap(), "--log-plain"],
        &[],
        "gobgpd.log",
    )?;

    // v1 and v2: two copies of the agent binary, as an upgrade would have.
    let (v1, v2) = (dir.join("v1/nonstop-agent"), dir.join("v2/nonstop-agent"));
    for copy in [&v1, &v2] {
        fs::create_dir_all(copy.parent().unwrap()).map_err(|e| e.to_string())?;
        fs::copy(agent, copy).map_err(|e| format!("copying {}: {e}", agent.display()))?;
    }
    let (config, state) = (dir.join("agent.yaml"), dir.join("state"));
    fs::write(&config, agent_config()).map_err(|e| e.to_string())?;
    let run = |bin: &Path| -> Vec<String> {
        [
            bin.to_str().unwrap(),
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
        ]
        .map(String::from)
        .to_vec()
    };
    let args = run(&v1);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let quiet = [("NONSTOP_LOG", "warn")];
    let v1_pid = scene.spawn(GATEWAY_NS, &args, &quiet, "agent-v1.log")?;
    say(
        started,
        &format!(
            "agent v1 (pid {v1_pid}) up; waiting for gobgpd to hold its {} prefixes",
            EXTRA + 2
        ),
    );
    wait(Duration::from_secs(60), "the session and every prefix at gobgpd", || {
        let n = routes()?.len();
        if n == EXTRA + 2 && seen()?.established { Ok(()) } else { Err(format!("{n} prefixes")) }
    })?;

    let (before, routes_before) = (seen()?, routes()?);
    say(started, "the upgrade: agent v2 starts on the same state dir and takes the session over");
    let upgrade = Instant::now();
    let args = run(&v2);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let v2_pid = scene.spawn(GATEWAY_NS, &args, &quiet, "agent-v2.log")?;
    let report = wait(Duration::from_secs(30), "v2's takeover", || {
        let s = status(agent, &state)?;
        match &s["last_handoff"] {
            h if s["pid"] == v2_pid && h["result"] == "completed" => Ok(h.clone()),
            h if h["result"] == "refused" || h["result"] == "rolled-back" => {
                Err(format!("the handoff failed: {h}"))
            }
            h => Err(format!("pid {} answers; last handoff {h}", s["pid"])),
        }
    })?;
    let took = upgrade.elapsed();
    // v1 is retired: it holds nothing and exits 0 on SIGTERM.
    let _ = Command::new("kill").args(["-TERM", &v1_pid.to_string()]).output();
    let (after, routes_after) = (seen()?, routes()?);

    let resets = (after.opens - before.opens)
        + (after.notifications - before.notifications)
        + u64::from(after.uptime_since != before.uptime_since || !after.established);
    let updates = after.updates - before.updates;
    let withdrawals = after.withdrawn_prefixes - before.withdrawn_prefixes;
    let same = if routes_after == routes_before { "identical" } else { "DIFFERENT" };
    let via = |routes: &[(String, Vec<String>)]| {
        let mut hops: Vec<&str> =
            routes.iter().flat_map(|(_, h)| h.iter().map(String::as_str)).collect();
        hops.sort();
        hops.dedup();
        hops.join(", ")
    };
    println!(
        "\nnonstop quick demo: agent v1 → v2 by handoff on one host in {:.2} s",
        took.as_secs_f64()
    );
    println!(
        "  agent v1 (pid {v1_pid}) → v2 (pid {v2_pid}): handoff pause {} ms, {} session, {} listeners, {} KB of state",
        report["pause_ms"].as_f64().map_or_else(|| "?".into(), |p| format!("{p:.1}")),
        report["sessions"],
        report["listeners"],
        report["state_bytes"].as_u64().unwrap_or(0).div_ceil(1000)
    );
    println!("  at the router (gobgpd):");
    println!("    session resets:  {resets}");
    println!("    withdrawals:     {withdrawals}");
    println!("    UPDATEs from the gateway during the upgrade: {updates}");
    println!("    routes before:   {} prefixes via {}", routes_before.len(), via(&routes_before));
    println!(
        "    routes after:    {} prefixes via {} ({same})",
        routes_after.len(),
        via(&routes_after)
    );
    println!("  (the Kubernetes version of this: script/demo without --quick)");
    if resets + updates + withdrawals > 0 || same != "identical" {
        return Err(format!("the router saw the upgrade; logs in {}", dir.display()));
    }
    Ok(())
}
