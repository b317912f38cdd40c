//! Whether this start is a graceful restart (RFC 4724 §4.1): the previous run
//! of the agent in the same state dir was alive recently enough that the
//! routers still hold its routes stale, so the OPEN must carry the R-bit.
//!
//! ```text
//!  running agent ──every second──▶ state-dir/last-run.json {alive_ms, ended}
//!  next start ──read──▶ Previous ──restarting(now, restart time)──▶ R-bit?
//! ```
//!
//! A crash or SIGKILL leaves the last heartbeat; `stop --mode restart` writes
//! one on the way out; a decommission writes `ended: decommissioned`, after
//! which routers have withdrawn everything and no R-bit is due.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "last-run.json";

/// How the previous run ended, as far as it could say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ended {
    /// Still running at the last heartbeat: it crashed or was killed.
    Running,
    /// `stop --mode restart`: sessions closed without a withdrawal.
    Restart,
    /// Withdrew everything on purpose.
    Decommissioned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Previous {
    /// Unix time (ms) the previous run was last known alive.
    pub alive_ms: u64,
    pub ended: Ended,
}

/// True when routers should still hold our routes stale: the previous run
/// did not decommission, and ended less than `restart_time` ago.
pub fn restarting(previous: Option<Previous>, now_ms: u64, restart_time: Duration) -> bool {
    match previous {
        Some(p) if p.ended != Ended::Decommissioned => {
            now_ms.saturating_sub(p.alive_ms) < restart_time.as_millis() as u64
        }
        _ => false,
    }
}

/// Milliseconds since the Unix epoch: the one wall-clock unit the agent
/// records and reports (restart record, handoff time, session uptimes).
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// The previous run's record, if there is a readable one.
pub fn read(state_dir: &Path) -> Option<Previous> {
    let text = std::fs::read_to_string(state_dir.join(FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes the record so that a crash at any point leaves either the old
/// record or the new one, whole (see [`write_atomically`]).
pub fn write(state_dir: &Path, record: Previous) -> std::io::Result<()> {
    write_atomically(state_dir, FILE, &serde_json::to_vec(&record).expect("JSON"))
}

/// Writes `file` in the state dir so that a crash at any point leaves
/// either the old content or the new, whole: a temp file of this writer's
/// own (the predecessor and the successor write side by side during a
/// handoff, and in separate PID namespaces may share a pid), synced,
/// renamed over the file, then the directory synced so the rename itself
/// survives power loss.
pub fn write_atomically(state_dir: &Path, file: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let tmp = state_dir.join(format!(
        ".{file}.{}.{nanos}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut out = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        out.write_all(bytes)?;
        out.sync_all()?;
        std::fs::rename(&tmp, state_dir.join(file))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    std::fs::File::open(state_dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_r_bit_is_due_only_within_the_restart_time_of_a_run_that_did_not_decommission() {
        let t = Duration::from_secs(120);
        let at = |ended| Some(Previous { alive_ms: 1_000_000, ended });
        // (previous, now, restarting)
        let cases = [
            (None, 1_000_000, false),
            (at(Ended::Running), 1_000_500, true),
            (at(Ended::Restart), 1_000_000 + 119_999, true),
            (at(Ended::Restart), 1_000_000 + 120_000, false),
            (at(Ended::Running), 1_000_000 + 500_000, false),
            (at(Ended::Decommissioned), 1_000_001, false),
            // A clock that went backwards is not a long absence.
            (at(Ended::Running), 999_000, true),
        ];
        for (previous, now, expected) in cases {
            assert_eq!(restarting(previous, now, t), expected, "{previous:?} at {now}");
        }
    }

    #[test]
    fn the_record_round_trips_through_the_state_dir() {
        let dir = std::env::temp_dir().join(format!("nonstop-restart-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(read(&dir), None);
        let record = Previous { alive_ms: 42, ended: Ended::Restart };
        write(&dir, record).unwrap();
        assert_eq!(read(&dir), Some(record));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn two_agents_writing_at_once_never_leave_a_torn_record_or_temp_files() {
        let dir = std::env::temp_dir().join(format!("nonstop-restart-race-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let writers: Vec<_> = [Ended::Running, Ended::Restart]
            .into_iter()
            .map(|ended| {
                let dir = dir.clone();
                std::thread::spawn(move || {
                    for alive_ms in 0..300 {
                        write(&dir, Previous { alive_ms, ended }).unwrap();
                    }
                })
            })
            .collect();
        let mut reads = 0;
        while writers.iter().any(|w| !w.is_finished()) {
            if let Ok(text) = std::fs::read_to_string(dir.join(FILE)) {
                serde_json::from_str::<Previous>(&text)
                    .unwrap_or_else(|e| panic!("torn record {text:?}: {e}"));
                reads += 1;
            }
        }
        for w in writers {
            w.join().unwrap();
        }
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(left, [FILE], "after {reads} reads");
        assert_eq!(read(&dir).map(|p| p.alive_ms), Some(299));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
