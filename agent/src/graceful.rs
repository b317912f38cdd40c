//! What Graceful Restart decides, as pure functions: whether a dropped
//! session's routes are kept (we as helper, RFC 4724 §4.2 and RFC 8538), for
//! how long (restart time, then RFC 9494 long-lived stale time), and how a
//! decommission looks on the wire (RFC 8326 graceful shutdown, then Cease or
//! Hard Reset).
//!
//! ```text
//!  session down ──helper_applies?──▶ keep routes stale ──restart time──▶
//!       LLGR negotiated? ──▶ long-lived stale (LLGR_STALE) ──stale time──▶ purge
//!       End-of-RIB from the restarted peer ──▶ purge what is still stale
//! ```

use std::time::Duration;

use crate::rib::Route;
use crate::route::Community;
use crate::session::Negotiated;
use crate::wire::{AfiSafi, Notification, code, subcode};

/// Whether routes of a session that just went down are kept (we are the
/// helper): both sides sent the GR capability, and either no NOTIFICATION was
/// exchanged, or both set the N-bit and it was not a Hard Reset (RFC 8538 §3).
pub fn helper_applies(
    n: &Negotiated,
    sent: Option<&Notification>,
    received: Option<&Notification>,
) -> bool {
    if !n.graceful_restart {
        return false;
    }
    let hard_reset = |x: &Notification| x.code == code::CEASE && x.subcode == subcode::HARD_RESET;
    match (sent, received) {
        (None, None) => true,
        (s, r) => n.notification_gr && !s.is_some_and(hard_reset) && !r.is_some_and(hard_reset),
    }
}

/// How long the peer asked us to keep its routes while it restarts.
pub fn restart_time(n: &Negotiated) -> Duration {
    let secs = n.peer_graceful_restart.as_ref().map_or(0, |g| g.restart_time);
    Duration::from_secs(u64::from(secs))
}

/// How long routes stay long-lived stale after the restart time, if both
/// sides negotiated LLGR (the longest of the peer's families).
pub fn long_lived_time(n: &Negotiated) -> Option<Duration> {
    if !n.long_lived {
        return None;
    }
    let secs = n.peer_long_lived.iter().map(|f| f.stale_time).max()?;
    (secs > 0).then(|| Duration::from_secs(u64::from(secs)))
}

/// A route as announced while draining before a decommission (RFC 8326 §4):
/// with GRACEFUL_SHUTDOWN, and towards iBGP with the lowest LOCAL_PREF.
pub fn draining(route: &Route, ibgp: bool) -> Route {
    let mut r = route.clone();
    if !r.attrs.communities.contains(&Community::GRACEFUL_SHUTDOWN) {
        r.attrs.communities.push(Community::GRACEFUL_SHUTDOWN);
    }
    if ibgp {
        r.attrs.local_pref = Some(0);
    }
    r
}

/// The last message of a decommissioned session: Administrative Shutdown with
/// a message, wrapped in a Hard Reset when the N-bit was negotiated so that
/// the peer really withdraws (RFC 8538 §4) instead of keeping routes stale.
pub fn farewell(n: Option<&Negotiated>, message: &str) -> Notification {
    let cease = Notification::cease_with_message(subcode::ADMINISTRATIVE_SHUTDOWN, message);
    hard_under_n_bit(n, cease)
}

/// The last message of a session whose peer is no longer configured (a
/// reload, a node's labels, a successor's config): Cease / Peer
/// De-configured, wrapped in a Hard Reset under the N-bit (RFC 8538 §5
/// lists it among those that reset hard), so the peer drops our routes
/// instead of keeping them stale for a session nobody will resume.
pub fn deconfigured(n: Option<&Negotiated>, message: &str) -> Notification {
    let cease = Notification::cease_with_message(subcode::PEER_DECONFIGURED, message);
    hard_under_n_bit(n, cease)
}

fn hard_under_n_bit(n: Option<&Negotiated>, cease: Notification) -> Notification {
    if n.is_some_and(|n| n.notification_gr) { Notification::hard_reset(&cease) } else { cease }
}

/// The NOTIFICATION for a peer past its prefix limit: Cease / Maximum
/// Number of Prefixes Reached with the family and the limit (RFC 4486 §4),
/// sent as a Hard Reset where the N-bit is negotiated (RFC 8538 §5 lists it
/// among those that reset hard), so the peer does not keep our routes stale
/// while the session is down on purpose.
pub fn prefix_limit_reached(n: Option<&Negotiated>, family: AfiSafi, limit: u32) -> Notification {
    let mut data = family.afi.to_be_bytes().to_vec();
    data.push(family.safi);
    data.extend_from_slice(&limit.to_be_bytes());
    hard_under_n_bit(n, Notification::new(code::CEASE, subcode::MAX_PREFIXES, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::fixtures::{gr, llgr};

    fn negotiated(ours: (bool, bool), theirs: (bool, bool), long_lived: bool) -> Negotiated {
        let caps = |(on, n): (bool, bool)| {
            let mut c = vec![];
            if on {
                c.push(gr(n));
            }
            if long_lived {
                c.push(llgr(600));
            }
            c
        };
        crate::session::fixtures::negotiated(caps(ours), caps(theirs))
    }

    /// (our GR/N bits, their GR/N bits, NOTIFICATION sent, received, routes kept)
    type Case<'a> =
        ((bool, bool), (bool, bool), Option<&'a Notification>, Option<&'a Notification>, bool);

    #[test]
    fn the_helper_keeps_routes_exactly_when_the_rfcs_say() {
        let cease = Notification::cease_with_message(subcode::ADMINISTRATIVE_SHUTDOWN, "x");
        let hard = Notification::hard_reset(&cease);
        let hold = Notification::new(code::HOLD_TIMER_EXPIRED, 0, []);
        let cases: Vec<Case> = vec![
            ((true, false), (true, false), None, None, true),
            ((true, false), (false, false), None, None, false),
            ((false, false), (true, true), None, None, false),
            ((true, false), (true, false), None, Some(&cease), false),
            ((true, true), (true, false), None, Some(&cease), false),
            ((true, true), (true, true), None, Some(&cease), true),
            ((true, true), (true, true), Some(&hold), None, true),
            ((true, true), (true, true), None, Some(&hard), false),
            ((true, true), (true, true), Some(&hard), None, false),
        ];
        for (ours, theirs, sent, received, keep) in cases {
            let n = negotiated(ours, theirs, false);
            assert_eq!(
                helper_applies(&n, sent, received),
                keep,
                "{ours:?} {theirs:?} {sent:?} {received:?}"
            );
        }
    }

    #[test]
    fn timers_come_from_the_peer_s_capabilities() {
        let n = negotiated((true, true), (true, true), true);
        assert_eq!(restart_time(&n), Duration::from_secs(30));
        assert_eq!(long_lived_time(&n), Some(Duration::from_secs(600)));
        assert_eq!(long_lived_time(&negotiated((true, true), (true, true), false)), None);
    }

    #[test]
    fn draining_adds_graceful_shutdown_and_lowest_local_pref_for_ibgp() {
        use crate::wire::{AsPath, PathAttrs};
        let route = Route {
            attrs: PathAttrs {
                as_path: Some(AsPath::default()),
                local_pref: Some(200),
                communities: vec![Community(0xFDE9_0001)],
                ..Default::default()
            },
            next_hop: "192.0.2.1".parse().unwrap(),
        };
        let ibgp = draining(&route, true);
        assert_eq!(ibgp.attrs.local_pref, Some(0));
        assert_eq!(ibgp.attrs.communities, [Community(0xFDE9_0001), Community::GRACEFUL_SHUTDOWN]);
        let ebgp = draining(&route, false);
        assert_eq!(ebgp.attrs.local_pref, Some(200), "eBGP never sends LOCAL_PREF anyway");
        // Draining twice does not add the community twice.
        assert_eq!(draining(&ibgp, true).attrs.communities.len(), 2);
    }

    #[test]
    fn a_decommission_says_hard_reset_only_under_the_n_bit() {
        let with_n = negotiated((true, true), (true, true), false);
        let without = negotiated((true, true), (true, false), false);
        let f = farewell(Some(&with_n), "node drained");
        assert_eq!((f.code, f.subcode), (6, 9));
        let f = farewell(Some(&without), "node drained");
        assert_eq!((f.code, f.subcode, f.shutdown_message()), (6, 2, Some("node drained")));
    }

    /// A peer no longer configured is let go for good: under the N-bit a
    /// plain Cease would leave our routes stale at it (RFC 8538 §5).
    #[test]
    fn a_peer_removed_from_the_config_gets_a_hard_reset_under_the_n_bit() {
        let with_n = negotiated((true, true), (true, true), true);
        let without = negotiated((true, true), (true, false), true);
        let d = deconfigured(Some(&with_n), "peer removed");
        assert_eq!((d.code, d.subcode), (6, 9));
        assert_eq!(d.data[..2], [6, 3], "Hard Reset carries Cease / Peer De-configured");
        let d = deconfigured(Some(&without), "peer removed");
        assert_eq!((d.code, d.subcode), (6, 3));
    }
}
