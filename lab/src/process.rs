//! Lab daemons: started detached in their own process group with a pid
//! file and a log under the lab dir, found again by later `lab` commands.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{LabError, Result, io};

/// Starts `command` as daemon `name` unless it already runs.
pub fn start(dir: &Path, name: &str, mut command: Command) -> Result<u32> {
    if let Some(pid) = running(dir, name) {
        return Ok(pid);
    }
    let logs = dir.join("logs");
    fs::create_dir_all(&logs).map_err(io(format!("creating {}", logs.display())))?;
    let log_path = log_path(dir, name);
    let log =
        fs::File::create(&log_path).map_err(io(format!("creating {}", log_path.display())))?;
    let err = log.try_clone().map_err(io("log file"))?;
    use std::os::unix::process::CommandExt;
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .process_group(0)
        .spawn()
        .map_err(io(format!("starting {name}")))?;
    let pid = child.id();
    let pids = dir.join("pids");
    fs::create_dir_all(&pids).map_err(io(format!("creating {}", pids.display())))?;
    fs::write(pid_file(dir, name), pid.to_string()).map_err(io("pid file"))?;
    // The lab command exits; the daemon is adopted by init.
    std::mem::forget(child);
    Ok(pid)
}

/// Where daemon `name` writes its output.
pub fn log_path(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join("logs").join(format!("{name}.log"))
}

fn pid_file(dir: &Path, name: &str) -> std::path::PathBuf {
    dir.join("pids").join(format!("{name}.pid"))
}

/// The daemon's pid if it is alive (not a zombie).
pub fn running(dir: &Path, name: &str) -> Option<u32> {
    let pid: u32 = fs::read_to_string(pid_file(dir, name)).ok()?.trim().parse().ok()?;
    alive(pid).then_some(pid)
}

pub fn alive(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(") ").next().is_some_and(|rest| !rest.starts_with('Z')))
}

/// SIGTERM, up to `grace` to exit, then SIGKILL.
pub fn stop(dir: &Path, name: &str, grace: Duration) {
    let Some(pid) = running(dir, name) else { return };
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let start = Instant::now();
    while alive(pid) && start.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    let _ = fs::remove_file(pid_file(dir, name));
}

/// Runs a command to completion; its stderr in the error.
pub fn run(what: &str, command: &mut Command) -> Result<String> {
    let out = command.output().map_err(io(what.to_string()))?;
    if !out.status.success() {
        return Err(LabError::Failed(format!(
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits for `check` with a deadline, saying every 10 s what it waits for.
pub fn wait_for(
    what: &str,
    limit: Duration,
    mut check: impl FnMut() -> std::result::Result<(), String>,
) -> Result<()> {
    let start = Instant::now();
    let mut said = Duration::ZERO;
    loop {
        let last = match check() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let waited = start.elapsed();
        if waited >= limit {
            return Err(LabError::Failed(format!("{what}: not after {limit:?}: {last}")));
        }
        if waited >= said + Duration::from_secs(10) {
            said = waited;
            println!("    waiting for {what} ({}s): {last}", waited.as_secs());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every process whose command line mentions `needle` (a lab path): what
/// pid files may have lost track of (a `lab up` cut short).
pub fn strays(needle: &str) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else { return vec![] };
    let me = std::process::id();
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

/// Every process in network namespace `ns`.
pub fn in_netns(ns: &str) -> Vec<u32> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// SIGKILL to each of `pids`.
pub fn kill_all(pids: &[u32]) {
    for pid in pids {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}
