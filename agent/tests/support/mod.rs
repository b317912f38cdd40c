//! Test hosts for interop tests: network namespaces linked by veth pairs,
//! daemons started inside them, and waiting for conditions with a deadline.
//!
//! ```text
//!   ns "<tag>-a" (agent)  10.77.0.1/24  fd77::1/64 ──veth── 10.77.0.2/24  fd77::2/64  ns "<tag>-b" (router)
//! ```
//!
//! Everything is torn down on drop, also when a test panics.
#![allow(dead_code)]

pub mod routers;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Runs a command, panicking with its output when it fails.
pub fn sh(args: &[&str]) -> String {
    let out =
        Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits until `check` returns Some, polling; panics with `what` and the last
/// observation at the deadline.
pub fn eventually<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        // Daemons that drop privileges may still bind port 179.
        sh(&[
            "ip",
            "netns",
            "exec",
            &name,
            "sysctl",
            "-qw",
            "net.ipv4.ip_unprivileged_port_start=0",
        ]);
        Netns { name }
    }

    pub fn exec(&self, args: &[&str]) -> Command {
        nonstop_testbed::netns::exec(&self.name, args)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}

/// Two namespaces joined by a veth pair, with IPv4 and IPv6 addresses.
pub struct Link {
    pub a: Netns,
    pub b: Netns,
    pub a_v4: String,
    pub b_v4: String,
    pub a_v6: String,
    pub b_v6: String,
    pub dir: PathBuf,
    pub a_dev: String,
    pub b_dev: String,
}

impl Drop for Link {
    /// The scratch directory goes with a passing test; a failing one keeps
    /// it (daemons' logs and configs) to look at.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} for the failure's logs", self.dir.display());
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Link {
    /// A fresh pair of hosts and a scratch directory, named after the test.
    pub fn new(test: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let tag = format!("ns{}x{n}", std::process::id() % 100_000);
        let a = Netns::new(format!("{tag}a"));
        let b = Netns::new(format!("{tag}b"));
        let (va, vb) = (format!("{tag}A"), format!("{tag}B"));
        sh(&[
            "ip", "link", "add", &va, "netns", &a.name, "type", "veth", "peer", "name", &vb,
            "netns", &b.name,
        ]);
        let (a_v4, b_v4) = ("10.77.0.1".to_string(), "10.77.0.2".to_string());
        let (a_v6, b_v6) = ("fd77::1".to_string(), "fd77::2".to_string());
        for (ns, dev, v4, v6) in [(&a, &va, &a_v4, &a_v6), (&b, &vb, &b_v4, &b_v6)] {
            sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{v4}/24"), "dev", dev]);
            sh(&["ip", "-n", &ns.name, "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"]);
            sh(&["ip", "-n", &ns.name, "link", "set", dev, "up"]);
        }
        let dir = std::env::temp_dir().join(format!("nonstop-{test}-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Link { a, b, a_v4, b_v4, a_v6, b_v6, dir, a_dev: va, b_dev: vb }
    }

    /// Another address on the router side, e.g. for a second peer there.
    pub fn add_b_address(&self, cidr: &str) {
        let mut args = vec!["ip", "-n", &self.b.name, "addr", "add", cidr, "dev", &self.b_dev];
        if cidr.contains(':') {
            args.push("nodad");
        }
        sh(&args);
    }
}

/// A child process, killed on drop; its output goes to a log file.
pub struct Daemon {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    pub fn spawn(name: &str, mut command: Command, log: PathBuf) -> Self {
        let file = fs::File::create(&log).unwrap();
        let child = command
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file))
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Daemon { name: name.to_string(), child, log }
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends a signal by name (HUP, TERM, KILL).
    pub fn signal(&self, sig: &str) {
        sh(&["kill", &format!("-{sig}"), &self.child.id().to_string()]);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// Waits for the process to end, at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let name = self.name.clone();
        eventually(limit, &format!("{name} to exit"), || {
            self.exited().ok_or_else(|| "running".to_string())
        })
    }

    /// Stopped by a signal (state T in /proc), e.g. at a handoff step.
    pub fn is_stopped(&self) -> bool {
        fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|rest| rest.starts_with('T')))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent under test, running in a namespace.
pub struct Agent {
    pub daemon: Daemon,
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

pub const AGENT: &str = env!("CARGO_BIN_EXE_nonstop-agent");

impl Agent {
    pub fn start(ns: &Netns, dir: &Path, config_yaml: &str) -> Self {
        Self::start_with(ns, dir, config_yaml, &[])
    }

    /// Starts the agent with more command-line flags.
    pub fn start_with(ns: &Netns, dir: &Path, config_yaml: &str, flags: &[&str]) -> Self {
        Self::launch(ns, dir, config_yaml, flags, &[], "agent.log")
    }

    /// A successor on `config_yaml` takes over from this agent (which is
    /// then told to go and has exited): the successor, active.
    pub fn hand_over(mut self, ns: &Netns, dir: &Path, config_yaml: &str, log: &str) -> Agent {
        let new = Agent::successor(ns, dir, config_yaml, &[], log);
        eventually(Duration::from_secs(30), "the successor to take over", || {
            let status = new.status()?;
            match &status["last_handoff"] {
                h if status["pid"] == new.daemon.pid() && h["result"] == "completed" => Ok(()),
                h => Err(format!("pid {}, last handoff {h}", status["pid"])),
            }
        });
        self.daemon.signal("TERM");
        self.daemon.wait_exit(Duration::from_secs(5));
        new
    }

    /// Starts one more agent on the same state dir (a successor), with its
    /// own log and environment.
    pub fn successor(
        ns: &Netns,
        dir: &Path,
        config_yaml: &str,
        env: &[(&str, &str)],
        log: &str,
    ) -> Self {
        Self::launch(ns, dir, config_yaml, &[], env, log)
    }

    fn launch(
        ns: &Netns,
        dir: &Path,
        config_yaml: &str,
        flags: &[&str],
        env: &[(&str, &str)],
        log: &str,
    ) -> Self {
        Self::launch_under(&[], ns, dir, config_yaml, flags, env, log)
    }

    /// Starts an agent under `wrapper` (e.g. `setpriv …`), as a Kubernetes
    /// security context would confine it.
    pub fn launch_under(
        wrapper: &[&str],
        ns: &Netns,
        dir: &Path,
        config_yaml: &str,
        flags: &[&str],
        env: &[(&str, &str)],
        log: &str,
    ) -> Self {
        let config = dir.join("agent.yaml");
        fs::write(&config, config_yaml).unwrap();
        let state_dir = dir.join("agent-state");
        let mut cmd = ns.exec(wrapper);
        cmd.args([
            AGENT,
            "run",
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state_dir.to_str().unwrap(),
        ]);
        cmd.args(flags);
        cmd.env("NONSTOP_LOG", "info");
        cmd.envs(env.iter().copied());
        let daemon = Daemon::spawn("nonstop-agent", cmd, dir.join(log));
        Agent { daemon, config, state_dir }
    }

    /// The status document, or why it is not there (yet).
    pub fn status(&self) -> Result<serde_json::Value, String> {
        let out = Command::new(AGENT)
            .args(["status", "--state-dir", self.state_dir.to_str().unwrap()])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    }

    /// GET a path on the agent's control socket (the admin endpoint's twin).
    pub fn get(&self, path: &str) -> Result<String, String> {
        use std::io::{Read, Write};
        let mut s = std::os::unix::net::UnixStream::connect(self.state_dir.join("control.sock"))
            .map_err(|e| e.to_string())?;
        write!(s, "GET {path} HTTP/1.1\r\n\r\n").map_err(|e| e.to_string())?;
        let mut response = String::new();
        s.read_to_string(&mut response).map_err(|e| e.to_string())?;
        let (head, body) = response.split_once("\r\n\r\n").ok_or("no HTTP response")?;
        if head.starts_with("HTTP/1.1 200") { Ok(body.to_string()) } else { Err(head.to_string()) }
    }

    /// `nonstop-agent show ARGS…`: its output, or its error.
    pub fn show(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(AGENT)
            .arg("show")
            .args(args)
            .args(["--state-dir", self.state_dir.to_str().unwrap()])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        String::from_utf8(out.stdout).map_err(|e| e.to_string())
    }

    /// `nonstop-agent show peers`, each row read by the header's columns.
    pub fn show_peers(&self) -> Vec<BTreeMap<String, String>> {
        let out = Command::new(AGENT)
            .args(["show", "peers", "--state-dir", self.state_dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "show peers: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines().skip(1);
        let header = lines.next().expect("a header row");
        let mut starts: Vec<(usize, &str)> = Vec::new();
        let mut at = 0;
        for name in header.split("  ").filter(|n| !n.is_empty()) {
            let start = at + header[at..].find(name).unwrap();
            starts.push((start, name.trim()));
            at = start + name.len();
        }
        lines
            .map(|row| {
                let cell = |i: usize| {
                    let end = starts.get(i + 1).map_or(row.len(), |(e, _)| *e).min(row.len());
                    row.get(starts[i].0..end).unwrap_or("").trim().to_string()
                };
                starts
                    .iter()
                    .enumerate()
                    .map(|(i, (_, name))| (name.to_string(), cell(i)))
                    .collect()
            })
            .collect()
    }

    pub fn peer(&self, address: &str) -> Result<serde_json::Value, String> {
        let status = self.status()?;
        status["peers"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["address"] == address).cloned())
            .ok_or_else(|| format!("no peer {address} in {status}"))
    }

    /// Waits for the session with `address` to be Established.
    pub fn wait_established(&self, address: &str) -> serde_json::Value {
        eventually(Duration::from_secs(30), &format!("agent session with {address}"), || {
            let p = self.peer(address)?;
            if p["state"] == "Established" { Ok(p) } else { Err(p.to_string()) }
        })
    }

    /// `nonstop-agent stop --mode MODE`; panics unless it reports success.
    pub fn stop(&mut self, mode: &str) {
        let out = Command::new(AGENT)
            .args(["stop", "--state-dir", self.state_dir.to_str().unwrap(), "--mode", mode])
            .args(["--timeout", "60"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "stop --mode {mode}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let status = eventually(Duration::from_secs(5), "the agent to exit", || {
            self.daemon.exited().ok_or_else(|| "running".to_string())
        });
        assert!(status.success(), "agent exited with {status}");
    }

    pub fn reload(&self, config_yaml: &str) {
        fs::write(&self.config, config_yaml).unwrap();
        self.daemon.signal("HUP");
    }
}

/// A process's peak resident memory (VmHWM), in MB; 0 when it is gone.
pub fn peak_rss_mb(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kb / 1024.0
}

/// `count` IPv4 /24s and IPv6 /48s from a base, as text.
pub fn v4_prefixes(second_octet: u8, count: u32) -> Vec<String> {
    (0..count).map(|i| format!("10.{second_octet}.{}.{}/32", i / 256, i % 256)).collect()
}

pub fn v6_prefixes(tag: u16, count: u32) -> Vec<String> {
    (0..count)
        .map(|i| {
            let addr: std::net::Ipv6Addr = format!("2001:db8:{tag:x}:{i:x}::").parse().unwrap();
            format!("{addr}/64")
        })
        .collect()
}
