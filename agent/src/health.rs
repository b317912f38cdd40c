//! Health verdicts of checked announcements (sans-IO). Each probe result
//! moves a rise/fall count; a verdict that falls keeps the prefix
//! announced with GRACEFUL_SHUTDOWN for the check's drain, then withdraws
//! it; one that rises announces it again. The speaker runs the probes,
//! feeds their results and the clock in, and sends its peers the list
//! [`effective`] gives; a successor agent starts from its predecessor's
//! verdicts, so a handoff changes nothing at the routers.
//!
//! ```text
//!   Unknown ──1 ok──▶ Up ──fall fails──▶ Draining ──drain over──▶ Down
//!      │               ▲                    │                      │
//!      └──1 fail──▶ Down◀───────────────────┼──────────────────────┘
//!                      └────rise oks────────┴───── rise oks ───▶ Up
//! ```

use serde::{Deserialize, Serialize};

use crate::config::{Announcement, HealthCheck};
use crate::route::{Community, Prefix};

/// Where a checked announcement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "verdict")]
pub enum Verdict {
    /// Not probed yet (a cold start): not announced; the first result
    /// decides, so a healthy service is announced after one probe.
    Unknown,
    /// Announced.
    Up,
    /// Failed: announced with GRACEFUL_SHUTDOWN until `until_ms`.
    Draining { until_ms: u64 },
    /// Withdrawn.
    Down,
}

impl Verdict {
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Unknown => "unknown",
            Verdict::Up => "up",
            Verdict::Draining { .. } => "draining",
            Verdict::Down => "down",
        }
    }
}

/// One announcement's check: its thresholds, its verdict and the run of
/// equal results behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    rise: u32,
    fall: u32,
    drain_ms: u64,
    verdict: Verdict,
    /// Results in a row that argue against the verdict.
    against: u32,
}

impl Check {
    /// A check from its config, starting at `verdict` (Unknown on a cold
    /// start, the predecessor's after a handoff).
    pub fn new(config: &HealthCheck, verdict: Verdict) -> Check {
        Check {
            rise: config.rise.max(1),
            fall: config.fall.max(1),
            drain_ms: u64::from(config.drain_seconds) * 1000,
            verdict,
            against: 0,
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// A probe's result at `now_ms`; the new verdict if it changed.
    pub fn observe(&mut self, healthy: bool, now_ms: u64) -> Option<Verdict> {
        let announced = self.verdict == Verdict::Up;
        let next = match self.verdict {
            Verdict::Unknown => Some(if healthy { Verdict::Up } else { Verdict::Down }),
            // A result that agrees with the verdict breaks the run against it.
            _ if healthy == announced => {
                self.against = 0;
                None
            }
            Verdict::Up => self.counted(self.fall).then(|| self.fallen(now_ms)),
            _ => self.counted(self.rise).then_some(Verdict::Up),
        };
        next.map(|v| self.become_(v))
    }

    /// Time passing: a drain that is over withdraws the prefix.
    pub fn tick(&mut self, now_ms: u64) -> Option<Verdict> {
        match self.verdict {
            Verdict::Draining { until_ms } if now_ms >= until_ms => {
                Some(self.become_(Verdict::Down))
            }
            _ => None,
        }
    }

    /// When `tick` has something to do next, if ever.
    pub fn next_tick_ms(&self) -> Option<u64> {
        match self.verdict {
            Verdict::Draining { until_ms } => Some(until_ms),
            _ => None,
        }
    }

    /// One more result against the verdict; true when there are `needed`.
    fn counted(&mut self, needed: u32) -> bool {
        self.against += 1;
        self.against >= needed
    }

    fn fallen(&self, now_ms: u64) -> Verdict {
        if self.drain_ms == 0 {
            Verdict::Down
        } else {
            Verdict::Draining { until_ms: now_ms + self.drain_ms }
        }
    }

    fn become_(&mut self, verdict: Verdict) -> Verdict {
        self.verdict = verdict;
        self.against = 0;
        verdict
    }
}

/// The verdicts a successor's checks start from: its predecessor's, and
/// for a checked prefix it sent none for (it had no check on it, or is an
/// older agent) Up if the predecessor's sessions announce it, so that the
/// takeover withdraws nothing; the probes decide from there.
pub fn starting_verdicts(
    announce: &[Announcement],
    mut carried: Vec<(Prefix, Verdict)>,
    announced: impl Fn(&Prefix) -> bool,
) -> Vec<(Prefix, Verdict)> {
    for a in announce.iter().filter(|a| a.check.is_some()) {
        if !carried.iter().any(|(p, _)| *p == a.prefix) && announced(&a.prefix) {
            carried.push((a.prefix, Verdict::Up));
        }
    }
    carried
}

/// What the peers are sent: every unchecked announcement; a checked one
/// while Up as it is, while Draining with GRACEFUL_SHUTDOWN (and, towards
/// iBGP, LOCAL_PREF 0: RFC 8326 §4); none while Unknown or Down.
/// `verdicts[i]` is announcement i's, None for one without a check.
pub fn effective(announce: &[Announcement], verdicts: &[Option<Verdict>]) -> Vec<Announcement> {
    announce
        .iter()
        .enumerate()
        .filter_map(|(i, a)| match verdicts.get(i).copied().flatten() {
            None | Some(Verdict::Up) => Some(a.clone()),
            Some(Verdict::Draining { .. }) => Some(draining(a)),
            Some(Verdict::Unknown | Verdict::Down) => None,
        })
        .collect()
}

/// An announcement as sent while its check's drain runs.
pub fn draining(a: &Announcement) -> Announcement {
    let mut a = a.clone();
    if !a.communities.contains(&Community::GRACEFUL_SHUTDOWN) {
        a.communities.push(Community::GRACEFUL_SHUTDOWN);
    }
    // Used towards iBGP only (the peer ignores LOCAL_PREF for eBGP).
    a.local_pref = Some(0);
    a
}

#[cfg(test)]
#[path = "health_tests.rs"]
mod tests;
