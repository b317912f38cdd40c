//! The peer's import policy and prefix limit, as the task applies them to
//! each UPDATE (the rules themselves are in `crate::import` and
//! `config::import`).
//!
//! ```text
//!  UPDATE ─screen─▶ AdjRibIn ─count per family─▶ Within | Warning (logged once)
//!                                               └▶ Exceeded ─ warn: logged once
//!                                                           └ restart: Cease/1 (Hard
//!                                                             Reset under the N-bit),
//!                                                             no session until
//!                                                             restartAfter has passed
//! ```

use std::time::{Duration, Instant};

use tracing::warn;

use super::core::{PeerCore, Which};
use crate::config::{LimitAction, LimitVerdict};
use crate::graceful;
use crate::import::{ImportRules, Screened, screen};
use crate::session::Input;
use crate::speaker::status::{ErrorKind, SessionEventKind};
use crate::wire::{AfiSafi, MalformedAction, Update};

/// What the task tracks of its import rules.
#[derive(Debug, Default)]
pub(super) struct ImportState {
    /// Announcements refused since the session came up.
    pub refused: u64,
    /// Where IPv4 and IPv6 stood against the limit after the last UPDATE.
    verdicts: [Option<LimitVerdict>; 2],
    /// Reset for the limit: no session until then.
    pub held_until: Option<Instant>,
}

const FAMILIES: [(AfiSafi, bool, &str); 2] =
    [(AfiSafi::IPV4_UNICAST, true, "ipv4-unicast"), (AfiSafi::IPV6_UNICAST, false, "ipv6-unicast")];

impl PeerCore {
    /// Screens an UPDATE, applies it to the Adj-RIB-In and holds the peer
    /// to its prefix limit: what to feed the session next, if anything.
    pub(super) fn take_in(
        &mut self,
        mut update: Update,
        malformed: &[crate::wire::Malformed],
    ) -> Option<Input> {
        let withdraw = malformed.iter().any(|m| m.action == MalformedAction::TreatAsWithdraw);
        let screening = screen(
            &mut update,
            &ImportRules {
                local_asn: self.local.asn,
                external_peer: (!self.peer.is_ibgp(self.local.asn)).then_some(self.peer.asn),
                families: self.main.session.negotiated().map_or(&[], |n| &n.families),
                policy: &self.peer.import,
            },
        );
        if let Screened::BadAsPath(fault) = screening.verdict {
            warn!(peer = %self.peer.address, "{fault}: its routes are treated as withdrawn (RFC 7606)");
            self.metrics.error(self.peer.address, ErrorKind::MalformedAsPath);
        }
        if screening.refused > 0 {
            self.import.refused += screening.refused as u64;
            self.metrics.refused.get_or_create(&self.label()).inc_by(screening.refused as u64);
        }
        self.rib_in.apply(update, withdraw || screening.verdict != Screened::Usable);
        self.series.routes_received.set(self.rib_in.len() as i64);
        self.check_prefix_limit()
    }

    fn check_prefix_limit(&mut self) -> Option<Input> {
        let limit = self.peer.import.max_prefixes;
        for (i, (family, v4, name)) in FAMILIES.into_iter().enumerate() {
            let count = self.rib_in.count(v4);
            let verdict = limit.verdict(count);
            let before = self.import.verdicts[i].replace(verdict);
            if before == Some(verdict) {
                continue;
            }
            match (verdict, limit.action) {
                (LimitVerdict::Within, _) => {}
                (LimitVerdict::Warning, _) => warn!(
                    peer = %self.peer.address, family = name, count, limit = limit.limit,
                    "routes reach {}% of maxPrefixes", limit.warning_percent
                ),
                (LimitVerdict::Exceeded, LimitAction::Warn) => {
                    warn!(peer = %self.peer.address, family = name, count, limit = limit.limit,
                        "routes past maxPrefixes: kept (action: warn)");
                    self.metrics.error(self.peer.address, ErrorKind::PrefixLimit);
                }
                (LimitVerdict::Exceeded, LimitAction::Restart) => {
                    return Some(self.reset_for_limit(family, name, count));
                }
            }
        }
        None
    }

    /// Closes the session with Cease/1 and keeps it down for `restartAfter`.
    fn reset_for_limit(&mut self, family: AfiSafi, name: &str, count: usize) -> Input {
        let limit = self.peer.import.max_prefixes;
        let after = Duration::from_secs(u64::from(limit.restart_after));
        let n = self.main.session.negotiated().cloned();
        let notification = graceful::prefix_limit_reached(n.as_ref(), family, limit.limit);
        warn!(peer = %self.peer.address, family = name, count, limit = limit.limit, ?after,
            "routes past maxPrefixes: session reset with {notification}");
        self.metrics.error(self.peer.address, ErrorKind::PrefixLimit);
        self.import.held_until = Some(self.now + after);
        let why = format!(
            "maxPrefixes: {count} {name} routes, limit {}; session reset, up again in {}s",
            limit.limit, limit.restart_after
        );
        self.log.record(self.now, SessionEventKind::Import, why.clone());
        self.last_error = Some(why);
        Input::Stop(notification)
    }

    /// When a reset for the limit ends (None: not held down).
    pub(super) fn held_until(&self) -> Option<Instant> {
        self.import.held_until
    }

    /// The hold-down after a reset for the limit is over: start again.
    pub(super) fn end_hold_down(&mut self) {
        self.import.held_until = None;
        self.import.verdicts = Default::default();
        self.note(
            SessionEventKind::Import,
            "maxPrefixes hold-down over: taking the session up again".into(),
        );
        self.feed(Which::Main, Input::Start);
    }

    /// A new session: counts start again.
    pub(super) fn import_session_up(&mut self) {
        self.import.refused = 0;
    }

    /// What the status says about the limit.
    pub(super) fn prefix_limit_note(&self, now: Instant) -> Option<String> {
        let limit = &self.peer.import.max_prefixes;
        if let Some(until) = self.import.held_until {
            let left = until.saturating_duration_since(now).as_secs();
            return Some(format!("reset for maxPrefixes {}: up again in {left}s", limit.limit));
        }
        let notes: Vec<String> = FAMILIES
            .iter()
            .zip(self.import.verdicts)
            .filter(|(_, v)| matches!(v, Some(LimitVerdict::Warning | LimitVerdict::Exceeded)))
            .map(|((_, v4, name), _)| {
                format!("{name}: {} of maxPrefixes {}", self.rib_in.count(*v4), limit.limit)
            })
            .collect();
        (!notes.is_empty()).then(|| notes.join(", "))
    }
}
