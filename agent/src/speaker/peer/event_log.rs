//! A peer's recent session events: a bounded ring, newest last, that
//! collapses a failure repeated back to back into one with a count. Times
//! are kept on the monotonic clock and turned into wall-clock milliseconds
//! when shown. A successor inherits its predecessor's log: sent before the
//! freeze and taken in once the sessions run again, so it costs the pause
//! nothing.

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

    /// Takes in a predecessor's events (wall-clock times, oldest first)
    /// before ours; the oldest go when the log is full.
    pub fn inherit(&mut self, events: Vec<SessionEvent>, now: Instant, wall: SystemTime) {
        let wall_ms = unix_ms(wall);
        let mut merged: Vec<Logged> = events
            .into_iter()
            .map(|e| {
                let age = std::time::Duration::from_millis(wall_ms.saturating_sub(e.at_ms));
                let at = now.checked_sub(age).unwrap_or(now);
                Logged { at, kind: e.kind, detail: e.detail, times: e.times.max(1) }
            })
            .collect();
        merged.extend(self.events.drain(..));
        // Stable: what happened in the same instant keeps its order.
        merged.sort_by_key(|e| e.at);
        let extra = merged.len().saturating_sub(CAPACITY);
        self.events = merged.into_iter().skip(extra).collect();
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

    #[test]
    fn a_successor_keeps_its_predecessors_events_before_its_own() {
        let t0 = Instant::now() + Duration::from_secs(1000);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let ms = |back: u64| 1_800_000_000_000 - back * 1000;
        let event = |back: u64, kind, detail: &str| SessionEvent {
            at_ms: ms(back),
            kind,
            detail: detail.into(),
            times: 1,
        };
        let mut log = EventLog::default();
        log.record(t0, Handoff, "taken over".into());
        log.inherit(
            vec![event(300, Established, "hold 9 s"), event(60, Handoff, "handed over")],
            t0,
            wall,
        );
        let got: Vec<_> =
            log.snapshot(t0, wall).into_iter().map(|e| (e.kind, e.detail, e.at_ms)).collect();
        assert_eq!(
            got,
            [
                (Established, "hold 9 s".to_string(), ms(300)),
                (Handoff, "handed over".to_string(), ms(60)),
                (Handoff, "taken over".to_string(), ms(0)),
            ]
        );
        // A full predecessor's log: ours stays, its oldest go.
        let many =
            (0..CAPACITY as u64).map(|i| event(500 - i, Down, &format!("reset {i}"))).collect();
        log.inherit(many, t0, wall);
        let all = log.snapshot(t0, wall);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[CAPACITY - 1].detail, "taken over");
    }
}
