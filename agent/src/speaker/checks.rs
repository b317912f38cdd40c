//! Runs the announcements' health checks: a task per checked announcement
//! probes its service every interval and reports each result; the speaker
//! keeps the verdicts ([`crate::health`]) and tells the peers what changes.
//!
//! ```text
//!   task per check ──every intervalSeconds──▶ probe (tcp connect | http GET | command)
//!        │                                     within timeoutSeconds
//!        └──Probed { index, healthy, detail }──▶ speaker: Check::observe ──▶ peers
//! ```

use std::process::Stdio;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::{Announcement, HealthCheck, Probe};
use crate::handoff::protocol::CarriedVerdict;
use crate::health::{Check, Verdict};
use crate::restart;
use crate::route::Prefix;
use crate::speaker::status::{CheckBoard, CheckStatus, Metrics, PrefixLabel};

/// One probe's result for announcement `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probed {
    pub index: usize,
    pub healthy: bool,
    /// What it saw: "connected", "HTTP 503", "exit status 1", a timeout.
    pub detail: String,
}

/// The running probes; dropping it stops them.
#[derive(Debug, Default)]
pub struct Probes {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Probes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts a task for each announcement with a check (validated: its probe
/// is well formed); each reports to `results`.
pub fn start(announce: &[Announcement], results: &mpsc::Sender<Probed>) -> Probes {
    let mut tasks = Vec::new();
    for (index, a) in announce.iter().enumerate() {
        let Some(check) = &a.check else { continue };
        let Ok(probe) = check.probe() else { continue };
        let every = Duration::from_secs(u64::from(check.interval_seconds.max(1)));
        let limit = Duration::from_secs(u64::from(check.timeout_seconds.max(1)));
        let results = results.clone();
        tasks.push(tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(Instant::now(), every);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let (healthy, detail) = match run(&probe, limit).await {
                    Ok(detail) => (true, detail),
                    Err(detail) => (false, detail),
                };
                if results.send(Probed { index, healthy, detail }).await.is_err() {
                    return;
                }
            }
        }));
    }
    Probes { tasks }
}

/// The checks of the announcements, their verdicts and their probes.
#[derive(Debug)]
pub struct Health {
    /// `checks[i]` is announcement i's; None for one without a check.
    checks: Vec<Option<Tracked>>,
    probes: Probes,
    results: mpsc::Receiver<Probed>,
    sender: mpsc::Sender<Probed>,
    clock: Instant,
    /// Where `/status` reads the checks from.
    board: CheckBoard,
    metrics: Metrics,
}

#[derive(Debug)]
struct Tracked {
    prefix: Prefix,
    config: HealthCheck,
    check: Check,
    /// The last probe's detail, and when the verdict last changed (Unix ms).
    detail: String,
    since_ms: u64,
}

/// A verdict that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub prefix: Prefix,
    pub verdict: Verdict,
    pub detail: String,
}

impl Health {
    /// The checks of `announce`, each starting from the verdict `carried`
    /// names for its prefix (a predecessor's, a drain's end counted from
    /// now), else Unknown; their probes running.
    pub fn start(
        announce: &[Announcement],
        carried: &[(Prefix, Verdict)],
        board: CheckBoard,
        metrics: Metrics,
    ) -> Health {
        let (sender, results) = mpsc::channel(64);
        let mut health = Health {
            checks: Vec::new(),
            probes: Probes::default(),
            results,
            sender,
            clock: Instant::now(),
            board,
            metrics,
        };
        health.configure(announce, carried);
        health
    }

    /// A new announce list (a reload): a check whose prefix and settings
    /// are unchanged keeps its verdict; the probes start again.
    pub fn reconfigure(&mut self, announce: &[Announcement]) {
        let kept: Vec<(Prefix, HealthCheck, Verdict)> = self
            .checks
            .iter()
            .flatten()
            .map(|t| (t.prefix, t.config.clone(), t.check.verdict()))
            .collect();
        let carried: Vec<(Prefix, Verdict)> = announce
            .iter()
            .filter_map(|a| {
                let c = a.check.as_ref()?;
                kept.iter().find(|(p, k, _)| *p == a.prefix && k == c).map(|(p, _, v)| (*p, *v))
            })
            .collect();
        self.configure(announce, &carried);
    }

    fn configure(&mut self, announce: &[Announcement], carried: &[(Prefix, Verdict)]) {
        // A prefix no longer checked has no series.
        for t in self.checks.iter().flatten() {
            let label = PrefixLabel { prefix: t.prefix.to_string() };
            self.metrics.check_up.remove(&label);
            self.metrics.check_failures.remove(&label);
        }
        // Fresh results only: a result of an old probe may name another index.
        let (sender, results) = mpsc::channel(64);
        (self.sender, self.results) = (sender, results);
        let now = restart::now_ms();
        self.checks = announce
            .iter()
            .map(|a| {
                let config = a.check.clone()?;
                let verdict = carried
                    .iter()
                    .find(|(p, _)| *p == a.prefix)
                    .map_or(Verdict::Unknown, |(_, v)| *v);
                Some(Tracked {
                    prefix: a.prefix,
                    check: Check::new(&config, verdict),
                    config,
                    detail: String::new(),
                    since_ms: now,
                })
            })
            .collect();
        self.probes = start(announce, &self.sender);
        self.publish();
    }

    /// Writes every check's state where `/status` and `/metrics` read it.
    fn publish(&self) {
        for t in self.checks.iter().flatten() {
            let label = PrefixLabel { prefix: t.prefix.to_string() };
            self.metrics
                .check_up
                .get_or_create(&label)
                .set(i64::from(t.check.verdict() == Verdict::Up));
        }
        *self.board.lock().expect("checks board") = self
            .checks
            .iter()
            .flatten()
            .map(|t| CheckStatus {
                prefix: t.prefix.to_string(),
                verdict: t.check.verdict().as_str().into(),
                since_ms: t.since_ms,
                detail: t.detail.clone(),
            })
            .collect();
    }

    /// The verdicts to hand a successor: a drain's end as the time it has
    /// left.
    pub fn carried(&self) -> Vec<CarriedVerdict> {
        let now = self.now_ms();
        self.checks
            .iter()
            .flatten()
            .map(|t| CarriedVerdict {
                prefix: t.prefix,
                verdict: match t.check.verdict() {
                    Verdict::Draining { until_ms } => {
                        Verdict::Draining { until_ms: until_ms.saturating_sub(now) }
                    }
                    v => v,
                },
            })
            .collect()
    }

    /// Each announcement's verdict, None for one without a check.
    pub fn verdicts(&self) -> Vec<Option<Verdict>> {
        self.checks.iter().map(|t| t.as_ref().map(|t| t.check.verdict())).collect()
    }

    /// Waits for the next verdict that changes: a probe's result, or a
    /// drain that ends. Cancel-safe (a `select!` arm).
    pub async fn changed(&mut self) -> Change {
        loop {
            let drain_ends =
                self.checks.iter().flatten().filter_map(|t| t.check.next_tick_ms()).min();
            let wake = drain_ends.map(|ms| self.clock + Duration::from_millis(ms));
            let probed = tokio::select! {
                Some(p) = self.results.recv() => Some(p),
                () = sleep_until_some(wake) => None,
            };
            let (now, unix_ms) = (self.now_ms(), restart::now_ms());
            let change = match probed {
                Some(p) => self.checks.get_mut(p.index).and_then(Option::as_mut).and_then(|t| {
                    if !p.healthy {
                        let label = PrefixLabel { prefix: t.prefix.to_string() };
                        self.metrics.check_failures.get_or_create(&label).inc();
                    }
                    t.detail = p.detail;
                    let v = t.check.observe(p.healthy, now)?;
                    t.since_ms = unix_ms;
                    Some(Change { prefix: t.prefix, verdict: v, detail: t.detail.clone() })
                }),
                None => self.checks.iter_mut().flatten().find_map(|t| {
                    let v = t.check.tick(now)?;
                    t.since_ms = unix_ms;
                    Some(Change { prefix: t.prefix, verdict: v, detail: "drain over".into() })
                }),
            };
            self.publish();
            if let Some(change) = change {
                return change;
            }
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One probe, within `limit`: what it saw, Ok when healthy.
pub async fn run(probe: &Probe, limit: Duration) -> Result<String, String> {
    let late = || format!("no answer within {} s", limit.as_secs());
    match probe {
        Probe::Tcp(address) => {
            match tokio::time::timeout(limit, tokio::net::TcpStream::connect(address)).await {
                Ok(Ok(_)) => Ok("connected".into()),
                Ok(Err(e)) => Err(format!("connect {address}: {e}")),
                Err(_) => Err(late()),
            }
        }
        Probe::Http { authority, path, status } => {
            match crate::http::get_status(authority, path, limit).await {
                Ok(got) if got.as_u16() == *status => Ok(format!("HTTP {}", got.as_u16())),
                Ok(got) => Err(format!("HTTP {}, not {status}", got.as_u16())),
                Err(e) => Err(format!("GET http://{authority}{path}: {e}")),
            }
        }
        Probe::Command(argv) => {
            let mut command = tokio::process::Command::new(&argv[0]);
            command
                .args(&argv[1..])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            let child = command.spawn().map_err(|e| format!("{}: {e}", argv[0]))?;
            match tokio::time::timeout(limit, child.wait_with_output()).await {
                Ok(Ok(out)) if out.status.success() => Ok("exit status 0".into()),
                Ok(Ok(out)) => Err(out.status.to_string()),
                Ok(Err(e)) => Err(format!("{}: {e}", argv[0])),
                Err(_) => Err(late()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_probe_kind_tells_healthy_from_not() {
        // A real local service for the TCP and HTTP probes.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = listener.local_addr().unwrap();
        let handler: crate::http::Handler = std::sync::Arc::new(|call: crate::http::Call| {
            let status = if call.path == "/healthz" { 200 } else { 503 };
            crate::http::Answer::text(crate::http::hyper::StatusCode::from_u16(status).unwrap(), "")
                .now()
        });
        tokio::spawn(crate::http::serve(listener, crate::http::Limits::default(), handler));
        // A port nobody listens on: bound, then closed.
        let closed =
            tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let http = |path: &str, status: u16| Probe::Http {
            authority: up.to_string(),
            path: path.into(),
            status,
        };
        let command = |argv: &[&str]| Probe::Command(argv.iter().map(|s| s.to_string()).collect());
        let limit = Duration::from_secs(1);
        // (probe, healthy, what the detail says)
        let cases = [
            (Probe::Tcp(up), true, "connected"),
            (Probe::Tcp(closed), false, "connect"),
            (http("/healthz", 200), true, "HTTP 200"),
            (http("/other", 200), false, "HTTP 503, not 200"),
            (http("/other", 503), true, "HTTP 503"),
            (command(&["true"]), true, "exit status 0"),
            (command(&["false"]), false, "exit status: 1"),
            (command(&["sleep", "5"]), false, "no answer within 1 s"),
            (command(&["/nonexistent/probe"]), false, "/nonexistent/probe"),
        ];
        for (probe, healthy, needle) in cases {
            let got = run(&probe, limit).await;
            assert_eq!(got.is_ok(), healthy, "{probe:?}: {got:?}");
            let detail = got.unwrap_or_else(|e| e);
            assert!(detail.contains(needle), "{probe:?}: {detail:?} lacks {needle:?}");
        }
    }
}
