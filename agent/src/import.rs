//! What a session lets through from its peer before routes reach the
//! Adj-RIB-In, sans I/O: the families it negotiated, the AS_PATH checks of
//! RFC 4271 and RFC 7606, and the peer's import policy (`peers[].import`).
//!
//! ```text
//!  UPDATE ─screen─▶ families not negotiated dropped (RFC 4760 §7)
//!                   our AS in the path ─────────▶ Looped     (treat as withdrawn)
//!                   eBGP path not from the peer ─▶ BadAsPath  (treat as withdrawn)
//!                   prefixes the policy refuses ─▶ dropped, counted
//!         ─▶ AdjRibIn::apply ─▶ counts per family ─▶ MaxPrefixes::verdict
//! ```

use crate::config::Import;
use crate::wire::{AfiSafi, AsSegment, Update};

/// What one session accepts from its peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRules<'a> {
    pub local_asn: u32,
    /// The peer's AS when it is an external peer (eBGP), None for iBGP.
    pub external_peer: Option<u32>,
    /// Families negotiated on the session; anything else is ignored.
    pub families: &'a [AfiSafi],
    pub policy: &'a Import,
}

/// Why an UPDATE's announcements are not to be used as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screened {
    Usable,
    /// Our own AS is in the AS_PATH (RFC 4271 §9.1.2): a loop, so what it
    /// announces counts as withdrawn.
    Looped,
    /// A malformed AS_PATH from an external peer (RFC 7606 §7.2): what it
    /// announces counts as withdrawn.
    BadAsPath(AsPathFault),
}

/// What is wrong with an AS_PATH an external peer sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsPathFault {
    /// RFC 4271 §6.3: the leftmost AS is not the peer's (None: the path does
    /// not start with an AS_SEQUENCE).
    NotFromPeer { first: Option<u32>, peer: u32 },
    /// RFC 5065 §5.2: confederation segments from outside the confederation.
    Confederation,
}

impl std::fmt::Display for AsPathFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AsPathFault::NotFromPeer { first: Some(first), peer } => {
                write!(f, "AS_PATH starts with AS {first}, not the peer's AS {peer}")
            }
            AsPathFault::NotFromPeer { first: None, peer } => {
                write!(f, "AS_PATH does not start with the peer's AS {peer}")
            }
            AsPathFault::Confederation => {
                write!(f, "AS_PATH has confederation segments from an external peer")
            }
        }
    }
}

/// What screening did to an UPDATE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Screening {
    pub verdict: Screened,
    /// Announced prefixes the import policy refused (dropped from the UPDATE).
    pub refused: usize,
}

/// Drops what the session does not carry and what the policy refuses, and
/// says whether the rest may be used.
pub fn screen(update: &mut Update, rules: &ImportRules) -> Screening {
    if !rules.families.contains(&AfiSafi::IPV4_UNICAST) {
        update.nlri.clear();
        update.withdrawn.clear();
    }
    if update.mp_reach.as_ref().is_some_and(|r| !rules.families.contains(&r.family)) {
        update.mp_reach = None;
    }
    if update.mp_unreach.as_ref().is_some_and(|u| !rules.families.contains(&u.family)) {
        update.mp_unreach = None;
    }
    let verdict = as_path_verdict(update, rules);
    let mut refused = 0;
    let mut keep = |list: &mut Vec<_>| {
        let before = list.len();
        list.retain(|p| rules.policy.admits(p));
        refused += before - list.len();
    };
    keep(&mut update.nlri);
    if let Some(reach) = &mut update.mp_reach {
        keep(&mut reach.nlri);
    }
    Screening { verdict, refused }
}

fn as_path_verdict(update: &Update, rules: &ImportRules) -> Screened {
    let Some(path) = &update.attrs.as_path else { return Screened::Usable };
    if path.0.iter().any(|s| s.asns().contains(&rules.local_asn)) {
        return Screened::Looped;
    }
    let Some(peer) = rules.external_peer else { return Screened::Usable };
    if update.announced().next().is_none() {
        return Screened::Usable;
    }
    if path.0.iter().any(|s| matches!(s, AsSegment::ConfedSequence(_) | AsSegment::ConfedSet(_))) {
        return Screened::BadAsPath(AsPathFault::Confederation);
    }
    match path.first() {
        Some(first) if first == peer => Screened::Usable,
        first => Screened::BadAsPath(AsPathFault::NotFromPeer { first, peer }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Accept, PrefixMatch};
    use crate::route::Prefix;
    use crate::wire::{AsPath, MpReach, MpUnreach, PathAttrs};

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    const V4: &[AfiSafi] = &[AfiSafi::IPV4_UNICAST];

    fn announcing(path: Vec<AsSegment>) -> Update {
        Update {
            attrs: PathAttrs { as_path: Some(AsPath(path)), ..Default::default() },
            nlri: vec![p("10.0.0.0/8")],
            ..Default::default()
        }
    }

    #[test]
    fn as_paths_are_checked_as_rfc_4271_and_rfc_7606_say() {
        use AsSegment::*;
        let policy = Import::default();
        let ibgp =
            ImportRules { local_asn: 65001, external_peer: None, families: V4, policy: &policy };
        let ebgp = ImportRules { external_peer: Some(65000), ..ibgp.clone() };
        let bad = |first, peer| Screened::BadAsPath(AsPathFault::NotFromPeer { first, peer });
        // (rules, AS_PATH, verdict)
        let cases = [
            (&ebgp, vec![Sequence(vec![65000])], Screened::Usable),
            (&ebgp, vec![Sequence(vec![65000, 65001])], Screened::Looped),
            (&ebgp, vec![Sequence(vec![65001])], Screened::Looped),
            (&ebgp, vec![Sequence(vec![65000]), Set(vec![1, 65001])], Screened::Looped),
            (&ebgp, vec![Sequence(vec![65000, 3]), Set(vec![1, 2])], Screened::Usable),
            (&ebgp, vec![Sequence(vec![64999, 65000])], bad(Some(64999), 65000)),
            (&ebgp, vec![], bad(None, 65000)),
            (&ebgp, vec![Set(vec![65000])], bad(None, 65000)),
            (
                &ebgp,
                vec![ConfedSequence(vec![1]), Sequence(vec![65000])],
                Screened::BadAsPath(AsPathFault::Confederation),
            ),
            (&ibgp, vec![], Screened::Usable),
            (&ibgp, vec![ConfedSequence(vec![1]), Sequence(vec![3])], Screened::Usable),
            (&ibgp, vec![Sequence(vec![3])], Screened::Usable),
        ];
        for (rules, path, verdict) in cases {
            let mut u = announcing(path.clone());
            assert_eq!(
                screen(&mut u, rules).verdict,
                verdict,
                "{path:?} ebgp={:?}",
                rules.external_peer
            );
        }
        // A pure withdrawal has nothing to check.
        let mut u = Update { withdrawn: vec![p("10.0.0.0/8")], ..announcing(vec![]) };
        u.nlri.clear();
        assert_eq!(screen(&mut u, &ebgp).verdict, Screened::Usable);
    }

    #[test]
    fn families_not_negotiated_are_ignored() {
        let policy = Import::default();
        let rules =
            ImportRules { local_asn: 65001, external_peer: None, families: V4, policy: &policy };
        let mut u = Update {
            nlri: vec![p("10.0.0.0/8")],
            mp_reach: Some(MpReach {
                family: AfiSafi::IPV6_UNICAST,
                next_hop: "2001:db8::1".parse().unwrap(),
                link_local: None,
                nlri: vec![p("2001:db8::/32")],
            }),
            mp_unreach: Some(MpUnreach { family: AfiSafi::IPV6_UNICAST, withdrawn: vec![] }),
            ..Default::default()
        };
        screen(&mut u, &rules);
        assert_eq!((u.nlri.len(), &u.mp_reach, &u.mp_unreach), (1, &None, &None));
        let v6_only = ImportRules { families: &[AfiSafi::IPV6_UNICAST], ..rules };
        screen(&mut u, &v6_only);
        assert!(u.nlri.is_empty());
    }

    #[test]
    fn the_policy_drops_and_counts_what_it_refuses_and_keeps_withdrawals() {
        let families = [AfiSafi::IPV4_UNICAST, AfiSafi::IPV6_UNICAST];
        let default_only = Import {
            accept: Accept::Prefixes,
            prefixes: vec![
                PrefixMatch { prefix: p("0.0.0.0/0"), max_length: None },
                PrefixMatch { prefix: p("2001:db8::/32"), max_length: Some(48) },
            ],
            ..Default::default()
        };
        let none = Import { accept: Accept::None, ..Default::default() };
        let all = Import::default();
        let update = || Update {
            withdrawn: vec![p("192.0.2.0/24")],
            nlri: vec![p("0.0.0.0/0"), p("10.0.0.0/8")],
            mp_reach: Some(MpReach {
                family: AfiSafi::IPV6_UNICAST,
                next_hop: "2001:db8::1".parse().unwrap(),
                link_local: None,
                nlri: vec![p("2001:db8:1::/48"), p("2001:db8:1::/64")],
            }),
            ..Default::default()
        };
        // (policy, kept, refused)
        let cases: [(&Import, &[&str], usize); 3] = [
            (&all, &["0.0.0.0/0", "10.0.0.0/8", "2001:db8:1::/48", "2001:db8:1::/64"], 0),
            (&default_only, &["0.0.0.0/0", "2001:db8:1::/48"], 2),
            (&none, &[], 4),
        ];
        for (policy, kept, refused) in cases {
            let rules =
                ImportRules { local_asn: 65001, external_peer: None, families: &families, policy };
            let mut u = update();
            let screening = screen(&mut u, &rules);
            let left: Vec<String> = u.announced().map(|p| p.to_string()).collect();
            assert_eq!(
                (left.as_slice(), screening.refused),
                (kept.iter().map(|s| s.to_string()).collect::<Vec<_>>().as_slice(), refused),
                "{:?}",
                policy.accept
            );
            assert_eq!(u.withdrawn, [p("192.0.2.0/24")], "withdrawals always pass");
        }
    }
}
