//! The operator under test: this build's `nonstop-operator`, run outside
//! the cluster with the lab's kubeconfig, read through its own metrics
//! (requests it sent, reconciles, reconcile durations) and /proc (memory).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const METRICS: &str = "127.0.0.1:19180";

pub struct Operator {
    child: Child,
}

/// The operator's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// API requests by verb.
    pub requests: BTreeMap<String, f64>,
    pub reconciles: f64,
    /// Reconcile duration histogram: (upper bound in seconds, cumulative count).
    pub buckets: Vec<(f64, f64)>,
}

impl Operator {
    pub fn start(kubeconfig: &Path) -> Result<Operator, String> {
        let log = std::env::temp_dir().join("nonstop-scale-operator.log");
        let file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        eprintln!("==> operator log: {}", log.display());
        let child = Command::new(env!("CARGO_BIN_EXE_nonstop-operator"))
            .args(["run", "--lease-namespace", "default", "--lease-name", "nonstop-scale-bench"])
            .args(["--identity", "scale-bench", "--metrics", METRICS])
            .env("KUBECONFIG", kubeconfig)
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("starting nonstop-operator: {e}"))?;
        Ok(Operator { child })
    }

    /// Until it leads (its `nonstop_operator_leader` is 1).
    pub async fn wait_ready(&self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = metrics().await
                && value(&text, "nonstop_operator_leader ") == Some(1.0)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("the operator did not lead within 60 s".into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn sample(&self) -> Result<Sample, String> {
        let text = metrics().await?;
        let mut sample = Sample::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((key, number)) = line.rsplit_once(' ') else { continue };
            let Ok(number) = number.parse::<f64>() else { continue };
            if key.starts_with("nonstop_operator_api_requests_total{") {
                let verb = label(key, "verb").unwrap_or_default();
                *sample.requests.entry(verb).or_default() += number;
            } else if key == "nonstop_operator_reconciles_total" {
                sample.reconciles = number;
            } else if key.starts_with("nonstop_operator_reconcile_duration_seconds_bucket{") {
                let le = label(key, "le").unwrap_or_default();
                let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(0.0) };
                sample.buckets.push((le, number));
            }
        }
        Ok(sample)
    }

    /// Peak resident memory so far (VmHWM), MB.
    pub fn peak_rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn metrics() -> Result<String, String> {
    nonstop_agent::http::get_tcp(METRICS.parse().unwrap(), "/metrics", Duration::from_secs(5))
        .await
        .map_err(|e| e.to_string())
}

fn value(text: &str, prefix: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok())
}

fn label(key: &str, name: &str) -> Option<String> {
    let start = key.find(&format!("{name}=\""))? + name.len() + 2;
    Some(key[start..].split('"').next()?.to_string())
}

/// The quantile `q` of the reconciles between two samples, interpolated
/// within the histogram's bucket (buckets grow by 1.5x).
fn quantile(from: &Sample, to: &Sample, q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> = to
        .buckets
        .iter()
        .map(|(le, n)| {
            let before = from.buckets.iter().find(|(l, _)| l == le).map_or(0.0, |(_, m)| *m);
            (*le, n - before)
        })
        .collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for (le, n) in counts {
        if n >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let share = if n > lower.1 { (rank - lower.1) / (n - lower.1) } else { 1.0 };
            return Some(lower.0 + (le - lower.0) * share);
        }
        lower = (le, n);
    }
    None
}

pub const HEADER: &str = "| phase | time | reconciles | API requests | per reconcile | per node | per minute | reconcile p50 / p99 |\n\
                          |---|---|---|---|---|---|---|---|";

/// One line of the report: what happened between two samples.
pub fn row(what: &str, took: Duration, from: &Sample, to: &Sample, nodes: usize) -> String {
    let requests: f64 = to.requests.values().sum::<f64>() - from.requests.values().sum::<f64>();
    let by_verb: Vec<String> = to
        .requests
        .iter()
        .map(|(verb, n)| (verb, n - from.requests.get(verb).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .map(|(verb, n)| format!("{verb} {n}"))
        .collect();
    let reconciles = to.reconciles - from.reconciles;
    let per = |n: f64, d: f64| if d > 0.0 { format!("{:.2}", n / d) } else { "–".into() };
    let ms =
        |q| quantile(from, to, q).map_or_else(|| "–".into(), |s| format!("{:.0} ms", s * 1000.0));
    format!(
        "| {what} | {:.1} s | {reconciles} | {requests} ({}) | {} | {} | {:.1} | {} / {} |",
        took.as_secs_f64(),
        by_verb.join(", "),
        per(requests, reconciles),
        if nodes > 0 { per(requests, nodes as f64) } else { "–".into() },
        requests / took.as_secs_f64() * 60.0,
        ms(0.5),
        ms(0.99),
    )
}
