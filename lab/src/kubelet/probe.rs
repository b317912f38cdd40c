//! Readiness and liveness probes, run where the kubelet would: exec probes
//! inside the container's namespaces (`nsenter -t <pid> -m -n`), HTTP and
//! TCP probes from a thread moved into the node's network namespace (a
//! dedicated thread: a namespace change is for the thread's whole life).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::Probe;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The probe's timing, with Kubernetes' defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

pub fn timing(p: &Probe) -> Timing {
    let secs =
        |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
    Timing {
        initial_delay: secs(p.initial_delay_seconds, 0),
        period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
        timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
        success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
        failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
    }
}

fn port(p: &IntOrString, ports: &[(String, i32)]) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n} out of range")),
        IntOrString::String(name) => ports
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, p)| u16::try_from(*p).ok())
            .ok_or_else(|| format!("no container port named {name:?}")),
    }
}

/// Runs `f` on a fresh thread inside network namespace `netns`.
fn in_netns<T: Send + 'static>(
    netns: &str,
    f: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    let path = format!("/var/run/netns/{netns}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        rustix::thread::move_into_link_name_space(
            std::os::fd::AsFd::as_fd(&ns),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .map_err(|e| format!("entering {path}: {e}"))?;
        f()
    })
    .join()
    .map_err(|_| "the probe thread panicked".to_string())?
}

/// One probe run: Ok on success, Err with what failed.
pub fn run(
    p: &Probe,
    netns: &str,
    node_ip: &str,
    pid: u32,
    ports: &[(String, i32)],
) -> Result<(), String> {
    let t = timing(p);
    if let Some(exec) = &p.exec {
        let argv = exec.command.clone().unwrap_or_default();
        if argv.is_empty() {
            return Err("exec probe without a command".into());
        }
        // With the container's environment (its PATH finds the image's
        // binaries), as a runtime's exec does: read from its main process.
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        let env = environ.split(|b| *b == 0).filter_map(|kv| {
            let kv = String::from_utf8_lossy(kv);
            let (k, v) = kv.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        });
        let mut child = std::process::Command::new("nsenter")
            .env_clear()
            .envs(env)
            .current_dir("/")
            .args(["-t", &pid.to_string(), "-m", "-n", "--"])
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("exec probe: {e}"))?;
        let deadline = std::time::Instant::now() + t.timeout;
        loop {
            match child.try_wait() {
                Ok(Some(s)) if s.success() => return Ok(()),
                Ok(Some(s)) => return Err(format!("exec probe {argv:?} exited with {s}")),
                Ok(None) if std::time::Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("exec probe {argv:?} timed out after {:?}", t.timeout));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    if let Some(h) = &p.http_get {
        let port = port(&h.port, ports)?;
        let host = h.host.clone().unwrap_or_else(|| node_ip.to_string());
        let path = h.path.clone().unwrap_or_else(|| "/".into());
        let timeout = t.timeout;
        return in_netns(netns, move || {
            let addr: SocketAddr =
                format!("{host}:{port}").parse().map_err(|e| format!("{host}:{port}: {e}"))?;
            let mut s = TcpStream::connect_timeout(&addr, timeout)
                .map_err(|e| format!("GET {addr}{path}: {e}"))?;
            s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
            write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: lab-kubelet\r\n\r\n")
                .map_err(|e| e.to_string())?;
            let mut head = [0u8; 64];
            let n = s.read(&mut head).map_err(|e| format!("GET {addr}{path}: {e}"))?;
            let line = String::from_utf8_lossy(&head[..n]);
            let code: u16 = line
                .split_whitespace()
                .nth(1)
                .and_then(|c| c.parse().ok())
                .ok_or_else(|| format!("GET {addr}{path}: not HTTP: {line:?}"))?;
            if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("GET {addr}{path}: HTTP {code}"))
            }
        });
    }
    if let Some(tcp) = &p.tcp_socket {
        let port = port(&tcp.port, ports)?;
        let host = tcp.host.clone().unwrap_or_else(|| node_ip.to_string());
        let timeout = t.timeout;
        return in_netns(netns, move || {
            let addr: SocketAddr =
                format!("{host}:{port}").parse().map_err(|e| format!("{host}:{port}: {e}"))?;
            TcpStream::connect_timeout(&addr, timeout)
                .map(drop)
                .map_err(|e| format!("connect {addr}: {e}"))
        });
    }
    Err("a probe the lab kubelet cannot run (exec, httpGet, tcpSocket)".into())
}
