//! A peer's recent session events: a bounded ring, newest last, that
//! collapses a failure repeated back to back into one with a count. Times
//! are kept on the monotonic clock and turned into wall-clock milliseconds
//! when shown. The log stays with its agent: a successor starts its own with
//! the takeover (carried in the pause, 1,000 sessions' events cost the
//! handoff about 10 ms).

use std::collections::VecDeque;
use std::time::{Instant, SystemTime};

use crate::restart::unix_ms;
use crate::speaker::status::{SessionEvent, SessionEventKind};

/// Events kept per peer: a few hours of a flapping session's story, a
/// peer's whole life for a stable one.
pub const CAPACITY: usize = 64;

#[derive(Debug, Default, Clone)]
pub struct EventLog {
    events: VecDeque<Logged>,
}

#[derive(Debug, Clone)]
struct Logged {
    at: Instant,
    kind: SessionEventKind,
    detail: String,
    times: u32,
}

impl EventLog {
    /// Records an event at `at`; the oldest goes when the log is full. The
    /// same failure again, right after itself, is counted on the last one.
    pub fn record(&mut self, at: Instant, kind: SessionEventKind, detail: String) {
        // Failures repeat (a dial every retry); a handoff or an Established
        // session is news each time.
        let repeats = !matches!(kind, SessionEventKind::Handoff | SessionEventKind::Established);
        if let Some(last) = self.events.back_mut()
            && repeats
            && last.kind == kind
            && last.detail == detail
        {
            last.at = at;
            last.times = last.times.saturating_add(1);
            return;
        }
        if self.events.len() == CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(Logged { at, kind, detail, times: 1 });
    }

    /// The events with wall-clock times, `now` and `wall` being one moment.
    pub fn snapshot(&self, now: Instant, wall: SystemTime) -> Vec<SessionEvent> {
        self.events
            .iter()
            .map(|e| SessionEvent {
                at_ms: unix_ms(wall - now.saturating_duration_since(e.at)),
                kind: e.kind,
                detail: e.detail.clone(),
                times: e.times,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use SessionEventKind::*;
    use std::time::Duration;

    #[test]
    fn repeats_collapse_and_the_oldest_goes_when_full() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let mut log = EventLog::default();
        let s = |n: u64| t0 + Duration::from_secs(n);
        log.record(s(0), Connection, "connection refused".into());
        log.record(s(1), Connection, "connection refused".into());
        log.record(s(2), Connection, "connection refused".into());
        log.record(s(3), Established, "hold 9 s".into());
        log.record(s(3), Handoff, "taken over".into());
        log.record(s(3), Handoff, "taken over".into());
        log.record(s(4), Connection, "connection refused".into());
        let got: Vec<_> =
            log.snapshot(s(4), wall).into_iter().map(|e| (e.kind, e.times, e.at_ms)).collect();
        let ms = |back: u64| 1_800_000_000_000 - back * 1000;
        assert_eq!(
            got,
            [
                (Connection, 3, ms(2)),
                (Established, 1, ms(1)),
                (Handoff, 1, ms(1)),
                (Handoff, 1, ms(1)),
                (Connection, 1, ms(0))
            ]
        );

        for i in 0..(CAPACITY as u64 + 10) {
            log.record(s(10 + i), Down, format!("reset {i}"));
        }
        let all = log.snapshot(s(100), wall);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].detail, "reset 10", "the oldest went first");
        assert_eq!(all[CAPACITY - 1].detail, format!("reset {}", CAPACITY + 9));
    }
}
