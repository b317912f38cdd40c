//! `--svg FILE`: the demo's rollout drawn as the router saw it (see
//! [`nonstop_lab::picture`]): the router's routes sampled every 100 ms
//! while the image rolls, and each node's handoff from the rollout's
//! record (`BgpGatewayRollout`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nonstop_lab::picture::{Handoff, Sample, Timeline, svg};
use nonstop_lab::router::Router;
use nonstop_lab::testing::Lab;
use serde_json::Value;

use super::{NODES, NS, PREFIXES, uplink};

/// Polls the router until finished.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Vec<Sample>>,
}

impl Sampler {
    pub fn start(router: Router) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                let routes = router.routes().unwrap_or_default();
                let via = NODES
                    .iter()
                    .map(|n| {
                        let hop = uplink(n);
                        PREFIXES.iter().all(|p| routes.get(*p).is_some_and(|h| h.contains(&hop)))
                    })
                    .collect();
                samples.push(Sample { at: started.elapsed().as_secs_f64(), via });
                std::thread::sleep(Duration::from_millis(100));
            }
            samples
        });
        Sampler { stop, thread }
    }

    pub fn finish(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Each node's handoff in the gateway's last rollout record, in seconds
/// since `bumped_ms` (Unix ms of the image bump).
fn handoffs(lab: &Lab, bumped_ms: i64) -> Result<Vec<Handoff>, String> {
    let text = lab.kubectl(&[
        "-n",
        NS,
        "get",
        "bgprollout",
        "-l",
        "nonstop.dev/gateway=demo",
        "-o",
        "json",
    ])?;
    let list: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let last = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .max_by_key(|r| r["spec"]["rollout"]["number"].as_u64())
        .ok_or("no rollout record")?;
    let mut found = Vec::new();
    for upgrade in last["spec"]["nodes"].as_array().into_iter().flatten() {
        let Some(node) = NODES.iter().position(|n| upgrade["node"] == *n) else { continue };
        let at: k8s_openapi::jiff::Timestamp = upgrade["time"]
            .as_str()
            .ok_or("an upgrade without a time")?
            .parse()
            .map_err(|e| format!("{e}"))?;
        let seconds = (at.as_millisecond() - bumped_ms) as f64 / 1000.0;
        found.push(Handoff { node, at: seconds.max(0.0), pause_ms: upgrade["pauseMs"].as_u64() });
    }
    Ok(found)
}

/// Writes the picture of the rollout to `path`.
pub fn write(
    lab: &Lab,
    path: &std::path::Path,
    samples: Vec<Sample>,
    bumped_ms: i64,
    footer: String,
) -> Result<(), String> {
    let timeline = Timeline {
        title: "nonstop: image v1 → v2 on 3 nodes, as the router saw it".into(),
        nodes: NODES.iter().map(|n| n.to_string()).collect(),
        samples,
        handoffs: handoffs(lab, bumped_ms)?,
        footer,
    };
    std::fs::write(path, svg(&timeline)).map_err(|e| format!("{}: {e}", path.display()))
}
