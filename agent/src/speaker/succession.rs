//! Who may be a node's agent, beyond the handoff itself: the order of
//! pods (an older pod's agent never takes the node back from a newer one),
//! how long a retired agent waits for a successor that died, and a stop
//! asked for before the agent served anything.
//!
//! ```text
//!   start ──a newer pod's agent is active──▶ exit 0, untouched
//!   retired ──no active agent for orphan_bound──▶ exit non-zero: restarted, takes the node back (GR)
//!   SIGTERM while waiting for the lock ──▶ exit 0 (held nothing)
//! ```

use std::time::Duration;

use tracing::{info, warn};

use super::{RunError, RunOptions, handoff};
use crate::config::Config;

/// In the state dir: the pod creation time of the active agent, written as
/// it becomes active. An older pod's agent that is restarted (its container
/// crashed mid-handoff, say) finds a newer one serving and leaves it be,
/// rather than handing the node back and racing the operator, which is
/// about to delete that older pod.
pub const ORDER_FILE: &str = "active.pod-created-ms";

/// The creation time of the active agent's pod when it is newer than ours.
/// Nobody active (the lock is free), no order on either side: None.
pub(super) fn newer_active(options: &RunOptions) -> Option<u64> {
    let ours = options.pod_created_ms?;
    let theirs: u64 =
        std::fs::read_to_string(options.state_dir.join(ORDER_FILE)).ok()?.trim().parse().ok()?;
    if theirs <= ours {
        return None;
    }
    // Only a live holder of the lock is active; its file may be stale.
    match handoff::try_lock(&options.state_dir) {
        Ok(None) => Some(theirs),
        _ => None,
    }
}

/// Records this agent's pod creation time as the active agent's.
pub(super) fn write_order(options: &RunOptions) {
    let path = options.state_dir.join(ORDER_FILE);
    let written = match options.pod_created_ms {
        Some(ms) => std::fs::write(&path, ms.to_string()),
        None => std::fs::remove_file(&path)
            .or_else(|e| if e.kind() == std::io::ErrorKind::NotFound { Ok(()) } else { Err(e) }),
    };
    if let Err(e) = written {
        warn!("cannot record this agent's pod order in {}: {e}", path.display());
    }
}

/// How long a retired agent lets its node go without an active agent before
/// it gives up waiting for the successor: half the shortest Graceful Restart
/// time a router grants (so a restarted agent is back while the routers still
/// hold the routes), within 5–60 s.
pub(super) fn orphan_bound(config: &Config) -> Duration {
    let shortest = config
        .peers
        .iter()
        .map(|p| u64::from(p.graceful_restart.restart_time))
        .min()
        .unwrap_or(120);
    Duration::from_secs((shortest / 2).clamp(5, 60))
}

/// Logs a stop that came before this agent held anything.
pub(super) fn stopped_before_serving(signal: &str) -> Result<(), RunError> {
    info!(
        "{signal} while waiting for the node's active agent to let go: this agent held nothing; exiting"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_retired_agent_waits_half_the_shortest_restart_time_within_bounds() {
        let config = |times: &[u16]| {
            let peers: Vec<String> = times
                .iter()
                .enumerate()
                .map(|(i, t)| format!("- {{address: 10.0.0.{}, asn: 65000, gracefulRestart: {{restartTime: {t}}}}}", i + 1))
                .collect();
            let yaml = format!("asn: 65001\nrouterId: 10.0.0.9\npeers:\n{}\n", peers.join("\n"));
            serde_yaml_ng::from_str::<Config>(&yaml).unwrap()
        };
        let cases: [(&[u16], u64); 5] =
            [(&[120], 60), (&[30, 12], 6), (&[4], 5), (&[4095], 60), (&[], 60)];
        for (times, want) in cases {
            assert_eq!(orphan_bound(&config(times)), Duration::from_secs(want), "{times:?}");
        }
    }
}
