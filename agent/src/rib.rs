//! Routing state per peer, sans I/O: what a peer sent us (Adj-RIB-In) and
//! what we send it (Adj-RIB-Out).
//!
//! ```text
//!  UPDATE ─▶ AdjRibIn::apply ─▶ prefix → Arc<Route>   (identical attribute
//!                                                    sets shared, not copied)
//!  announce[] ─▶ export(rules of the session) ─▶ AdjRibOut
//!  AdjRibOut(old) ─ diff ─▶ AdjRibOut(new) = what to announce, what to withdraw
//! ```

use hashbrown::hash_table::Entry;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use crate::config::Announcement;
use crate::prefix_map::PrefixMap;
use crate::route::{NextHop, Prefix};
use crate::wire::{AsPath, Origin, PathAttrs, Update, UpdateBuilder, WireContext, prefix_wire_len};

/// The attributes of a route and where it points. `attrs.next_hop` is kept
/// empty: the next hop of every family lives in `next_hop`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Route {
    pub attrs: PathAttrs,
    pub next_hop: IpAddr,
}

/// Shares identical routes between prefixes (a table has far fewer attribute
/// sets than prefixes). Each set is kept with its hash: growing the table
/// or probing it then never reads a set's attributes, which are cold in
/// memory by the time the table has a quarter million of them.
#[derive(Debug, Default, Clone)]
struct Interner {
    sets: HashTable<(u64, Arc<Route>)>,
    hasher: DefaultHashBuilder,
}

impl Interner {
    fn intern(&mut self, route: Route) -> Arc<Route> {
        let hash = self.hasher.hash_one(&route);
        let same = |(h, r): &(u64, Arc<Route>)| *h == hash && **r == route;
        match self.sets.entry(hash, same, |(h, _)| *h) {
            Entry::Occupied(e) => e.get().1.clone(),
            Entry::Vacant(e) => e.insert((hash, Arc::new(route))).get().1.clone(),
        }
    }

    /// The shared set equal to `route`; a new set is a copy of it, not the
    /// decoder's own: moving those into the table left them among the
    /// message buffers and cost 20 MB of peak RSS on a full table
    /// (`cargo bench --bench ingest`). A set seen before costs no copy.
    fn intern_copy(&mut self, route: &Route) -> Arc<Route> {
        let hash = self.hasher.hash_one(route);
        let same = |(h, r): &(u64, Arc<Route>)| *h == hash && **r == *route;
        match self.sets.entry(hash, same, |(h, _)| *h) {
            Entry::Occupied(e) => e.get().1.clone(),
            Entry::Vacant(e) => e.insert((hash, Arc::new(route.clone()))).get().1.clone(),
        }
    }

    fn len(&self) -> usize {
        self.sets.len()
    }

    /// Drops sets no prefix uses any more.
    fn sweep(&mut self) {
        self.sets.retain(|(_, r)| Arc::strong_count(r) > 1);
    }
}

/// How much a received route is still to be trusted (RFC 4724, RFC 9494).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Staleness {
    Fresh,
    /// The peer restarts; kept until its End-of-RIB or its restart time.
    Stale,
    /// Kept past the restart time by Long-Lived GR, with LLGR_STALE.
    LongLived,
}

/// Routes received from one peer. A clone shares every route's attributes
/// with the original (a handoff snapshots a full table in a few tens of ms).
#[derive(Debug, Default, Clone)]
pub struct AdjRibIn {
    routes: PrefixMap<Staleness, Arc<Route>>,
    /// How many of `routes` are stale: kept up to date, since the status
    /// reads it after every read from the socket and a full table is a
    /// million routes.
    stale: usize,
    interner: Interner,
    updates_since_sweep: u32,
}

/// The difference between two states of one Adj-RIB-In.
#[derive(Debug)]
pub struct InChanges<'a> {
    pub changed: Vec<(Prefix, &'a Arc<Route>, Staleness)>,
    pub gone: Vec<Prefix>,
}

/// What an UPDATE changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub announced: usize,
    pub withdrawn: usize,
}

impl AdjRibIn {
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Routes of one family: IPv4 or not.
    pub fn count(&self, ipv4: bool) -> usize {
        self.routes.count(ipv4)
    }

    fn insert(&mut self, prefix: Prefix, route: Arc<Route>, staleness: Staleness) {
        self.stale += usize::from(staleness != Staleness::Fresh);
        if let Some((old, _)) = self.routes.insert(prefix, staleness, route) {
            self.stale -= usize::from(old != Staleness::Fresh);
        }
    }

    /// Every prefix of an UPDATE with the one route they share. The last
    /// takes `route` itself: one atomic decrement less per UPDATE, which
    /// was a tenth of `apply` on a full table (the fence waits for the
    /// table's stores).
    fn insert_all(&mut self, prefixes: &[Prefix], route: Arc<Route>) {
        for (p, route) in prefixes.iter().zip(std::iter::repeat_n(route, prefixes.len())) {
            self.insert(*p, route, Staleness::Fresh);
        }
    }

    fn remove(&mut self, prefix: &Prefix) -> bool {
        let Some((old, _)) = self.routes.remove(prefix) else { return false };
        self.stale -= usize::from(old != Staleness::Fresh);
        true
    }

    fn recount(&mut self) {
        self.stale = self.routes.values().filter(|(s, _)| *s != Staleness::Fresh).count();
    }

    pub fn get(&self, prefix: &Prefix) -> Option<&Route> {
        self.routes.get(prefix).map(|(_, r)| &**r)
    }

    pub fn staleness(&self, prefix: &Prefix) -> Option<Staleness> {
        self.routes.get(prefix).map(|(s, _)| s)
    }

    pub fn iter(&self) -> impl Iterator<Item = (Prefix, &Route)> {
        self.routes.iter().map(|(p, _, r)| (p, &**r))
    }

    /// The routes of one staleness, with their shared attributes (routes
    /// with equal attributes share one `Arc`).
    pub fn iter_shared_with(
        &self,
        staleness: Staleness,
    ) -> impl Iterator<Item = (Prefix, &Arc<Route>)> {
        self.routes.iter().filter(move |(_, s, _)| *s == staleness).map(|(p, _, r)| (p, r))
    }

    /// Puts a route back as it was (a successor taking over a session).
    pub fn restore(&mut self, prefix: Prefix, route: Route, staleness: Staleness) {
        self.restore_all(route, &[prefix], staleness);
    }

    /// Puts routes that share one set of attributes back, interning it once.
    pub fn restore_all(&mut self, route: Route, prefixes: &[Prefix], staleness: Staleness) {
        let route = self.interner.intern(route);
        if let Some(first) = prefixes.first() {
            self.routes.reserve_like(first, prefixes.len());
        }
        for p in prefixes {
            self.insert(*p, route.clone(), staleness);
        }
    }

    /// What changed since `base` (an earlier clone of this table): routes
    /// new or different in attributes or staleness, then prefixes gone.
    /// Unchanged routes still share `base`'s `Arc`, so most comparisons are
    /// a pointer.
    pub fn changes_since(&self, base: &AdjRibIn) -> InChanges<'_> {
        let changed = self
            .routes
            .iter()
            .filter(|(p, s, r)| {
                base.routes.get(p).is_none_or(|(bs, b)| bs != *s || (!Arc::ptr_eq(b, r) && b != *r))
            })
            .map(|(p, s, r)| (p, r, s))
            .collect();
        let gone = base.routes.keys().filter(|p| !self.routes.contains_key(p)).collect();
        InChanges { changed, gone }
    }

    /// Removes prefixes (a successor applying what a predecessor withdrew).
    pub fn forget(&mut self, prefixes: &[Prefix]) -> usize {
        prefixes.iter().filter(|p| self.remove(p)).count()
    }

    /// Routes kept only because their peer is restarting.
    pub fn stale(&self) -> usize {
        self.stale
    }

    /// The peer went away gracefully: keep everything, marked stale (RFC 4724 §4.2).
    pub fn mark_stale(&mut self) -> usize {
        let mut n = 0;
        for (s, _) in self.routes.values_mut().filter(|(s, _)| **s == Staleness::Fresh) {
            *s = Staleness::Stale;
            n += 1;
        }
        self.stale += n;
        n
    }

    /// Drops what is still stale, of one family or all; returns how many.
    pub fn purge_stale(&mut self, ipv4: Option<bool>) -> usize {
        let before = self.routes.len();
        self.routes
            .retain(|p, s, _| s == Staleness::Fresh || ipv4.is_some_and(|v4| p.is_ipv4() != v4));
        self.recount();
        before - self.routes.len()
    }

    /// RFC 9494 §4.3: past the restart time, stale routes stay as long-lived
    /// stale with the LLGR_STALE community, except those marked NO_LLGR.
    pub fn to_long_lived(&mut self) -> (usize, usize) {
        use crate::route::Community;
        let before = self.routes.len();
        self.routes.retain(|_, s, r| {
            s == Staleness::Fresh || !r.attrs.communities.contains(&Community::NO_LLGR)
        });
        let dropped = before - self.routes.len();
        self.recount();
        let mut kept = 0;
        let interner = &mut self.interner;
        for (s, r) in self.routes.values_mut().filter(|(s, _)| **s == Staleness::Stale) {
            let mut route = (**r).clone();
            if !route.attrs.communities.contains(&Community::LLGR_STALE) {
                route.attrs.communities.push(Community::LLGR_STALE);
            }
            *r = interner.intern(route);
            *s = Staleness::LongLived;
            kept += 1;
        }
        (kept, dropped)
    }

    /// Applies an UPDATE, taking its attributes. With `treat_as_withdraw`
    /// (RFC 7606) everything it announces is removed instead.
    pub fn apply(&mut self, update: Update, treat_as_withdraw: bool) -> Change {
        let mut change = Change::default();
        for p in update.withdrawals() {
            change.withdrawn += usize::from(self.remove(p));
        }
        if treat_as_withdraw {
            for p in update.announced() {
                change.withdrawn += usize::from(self.remove(p));
            }
            return change;
        }
        let Update { mut attrs, nlri, mp_reach, .. } = update;
        let v4_next_hop = attrs.next_hop.take();
        if let Some(nh) = v4_next_hop
            && !nlri.is_empty()
        {
            let route = Route { attrs, next_hop: nh.into() };
            let shared = self.interner.intern_copy(&route);
            attrs = route.attrs;
            self.insert_all(&nlri, shared);
            change.announced += nlri.len();
        }
        if let Some(reach) = mp_reach {
            let shared = self.interner.intern_copy(&Route { attrs, next_hop: reach.next_hop });
            self.insert_all(&reach.nlri, shared);
            change.announced += reach.nlri.len();
        }
        // A sweep visits every set, so one per as many UPDATEs as there are
        // sets keeps its cost per UPDATE constant: sweeping every 4,096
        // UPDATEs made a quarter million sets cost more than the rest of
        // the ingest (`cargo bench --bench ingest`, attribute sets of 4).
        self.updates_since_sweep += 1;
        if self.updates_since_sweep as usize >= self.interner.len().max(4096) {
            self.interner.sweep();
            self.updates_since_sweep = 0;
        }
        change
    }

    pub fn clear(&mut self) {
        self.routes.clear();
        self.stale = 0;
        self.interner = Interner::default();
    }
}

/// How the routes we originate look to one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportRules {
    pub local_asn: u32,
    pub ibgp: bool,
    /// Our addresses on this session, for `nextHop: self`.
    pub local_v4: Option<Ipv4Addr>,
    pub local_v6: Option<Ipv6Addr>,
    /// The session's encoding: an announcement whose UPDATE would be larger
    /// than its message size is skipped, not sent.
    pub wire: WireContext,
}

/// Routes we send to one peer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct AdjRibOut {
    pub routes: HashMap<Prefix, Arc<Route>>,
    /// Announcements that could not be sent, with the reason.
    pub skipped: Vec<(Prefix, String)>,
}

/// LOCAL_PREF for iBGP when none is configured (the common default).
pub const DEFAULT_LOCAL_PREF: u32 = 100;

/// Builds what a session announces (RFC 4271 §5.1, §9.1.3): ORIGIN IGP; eBGP
/// prepends our AS and sends no LOCAL_PREF; iBGP sends LOCAL_PREF; `self`
/// next hops become the session's own address of the prefix's family.
pub fn export(announce: &[Announcement], rules: &ExportRules) -> AdjRibOut {
    let mut out = AdjRibOut { routes: HashMap::with_capacity(announce.len()), skipped: Vec::new() };
    let builder = UpdateBuilder::new(rules.wire);
    let max = rules.wire.max_message_len();
    let mut interner = Interner::default();
    // Announcements mostly come in runs with the same attributes (a list of
    // prefixes under one community): each run builds and sizes its route
    // once. `fixed` is the UPDATE's size without the prefix.
    let mut last: Option<(&Announcement, Arc<Route>, usize)> = None;
    for a in announce {
        let (route, fixed) = match &last {
            Some((prev, route, fixed)) if same_route(prev, a) => (route.clone(), *fixed),
            _ => {
                let Some(next_hop) = export_next_hop(a, rules) else {
                    let family = if a.prefix.is_ipv4() { "IPv4" } else { "IPv6" };
                    out.skipped.push((
                        a.prefix,
                        format!(
                            "no local {family} address on this session for nextHop: self; set nextHop"
                        ),
                    ));
                    continue;
                };
                let attrs = export_attrs(a, rules);
                let fixed = builder.head_len(&attrs, next_hop, a.prefix.is_ipv4());
                let route = interner.intern(Route { attrs, next_hop });
                last = Some((a, route.clone(), fixed));
                (route, fixed)
            }
        };
        let len = fixed + prefix_wire_len(&a.prefix);
        if len > max {
            out.skipped.push((
                a.prefix,
                format!(
                    "its UPDATE would take {len} bytes, more than the {max} this session allows; \
                     carry fewer communities"
                ),
            ));
            continue;
        }
        out.routes.insert(a.prefix, route);
    }
    out
}

/// Whether two announcements export as the same route: same family and the
/// same configured attributes.
fn same_route(a: &Announcement, b: &Announcement) -> bool {
    a.prefix.is_ipv4() == b.prefix.is_ipv4()
        && a.next_hop == b.next_hop
        && a.med == b.med
        && a.local_pref == b.local_pref
        && a.communities == b.communities
        && a.large_communities == b.large_communities
}

/// The next hop an announcement goes out with; None for `self` where the
/// session has no local address of the prefix's family.
fn export_next_hop(a: &Announcement, rules: &ExportRules) -> Option<IpAddr> {
    match (a.next_hop, a.prefix.is_ipv4()) {
        (NextHop::Address(ip), _) => Some(ip),
        (NextHop::SelfAddress, true) => rules.local_v4.map(IpAddr::V4),
        (NextHop::SelfAddress, false) => rules.local_v6.map(IpAddr::V6),
    }
}

fn export_attrs(a: &Announcement, rules: &ExportRules) -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(if rules.ibgp {
            AsPath::default()
        } else {
            AsPath::sequence([rules.local_asn])
        }),
        med: a.med,
        local_pref: rules.ibgp.then(|| a.local_pref.unwrap_or(DEFAULT_LOCAL_PREF)),
        communities: a.communities.clone(),
        large_communities: a.large_communities.clone(),
        ..Default::default()
    }
}

/// What to send to move a peer from `old` to `new`: routes grouped by their
/// attributes (so they pack into few UPDATEs), and the prefixes to withdraw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Delta {
    pub announce: Vec<(Arc<Route>, Vec<Prefix>)>,
    pub withdraw: Vec<Prefix>,
}

impl Delta {
    /// Prefixes announced or withdrawn.
    pub fn len(&self) -> usize {
        self.announce.iter().map(|(_, ps)| ps.len()).sum::<usize>() + self.withdraw.len()
    }

    pub fn is_empty(&self) -> bool {
        self.announce.is_empty() && self.withdraw.is_empty()
    }
}

impl AdjRibOut {
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Everything, as a delta from nothing.
    pub fn full(&self) -> Delta {
        AdjRibOut::default().delta_to(self)
    }

    pub fn delta_to(&self, new: &AdjRibOut) -> Delta {
        // Grouped by the shared route's address: equal routes are one
        // `Arc` (interned), and hashing a pointer is cheaper than a route.
        let mut index: HashMap<*const Route, usize> = HashMap::new();
        let mut groups: Vec<(Arc<Route>, Vec<Prefix>)> = Vec::new();
        for (p, r) in &new.routes {
            if self.routes.get(p) != Some(r) {
                let i = *index.entry(Arc::as_ptr(r)).or_insert_with(|| {
                    groups.push((r.clone(), Vec::new()));
                    groups.len() - 1
                });
                groups[i].1.push(*p);
            }
        }
        let mut withdraw: Vec<Prefix> =
            self.routes.keys().filter(|p| !new.routes.contains_key(*p)).copied().collect();
        withdraw.sort();
        let mut announce = groups;
        for (_, ps) in &mut announce {
            ps.sort_unstable();
        }
        announce.sort_by(|a, b| a.1[0].cmp(&b.1[0]));
        Delta { announce, withdraw }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Community;
    use crate::wire::{AfiSafi, MpReach};

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    fn announcement(prefix: &str) -> Announcement {
        Announcement {
            prefix: p(prefix),
            next_hop: NextHop::SelfAddress,
            communities: vec![Community(0xFDE9_0001)],
            large_communities: vec![],
            local_pref: Some(200),
            med: Some(5),
            check: None,
        }
    }

    const EBGP: ExportRules = ExportRules {
        local_asn: 65001,
        ibgp: false,
        local_v4: Some(Ipv4Addr::new(192, 0, 2, 2)),
        local_v6: None,
        wire: WireContext { four_octet_as: true, extended_messages: false, ebgp: true },
    };

    #[test]
    fn an_announcement_too_big_for_the_session_is_skipped_with_the_reason() {
        let mut big = announcement("203.0.113.0/24");
        big.communities = (0..1100).map(crate::route::Community).collect();
        let out = export(&[big.clone(), announcement("198.51.100.0/24")], &EBGP);
        assert_eq!(out.routes.len(), 1);
        assert_eq!(out.skipped.len(), 1);
        assert!(
            out.skipped[0].1.contains("more than the 4096 this session allows"),
            "{:?}",
            out.skipped
        );
        // With extended messages (RFC 8654) it fits.
        let extended =
            ExportRules { wire: WireContext { extended_messages: true, ..EBGP.wire }, ..EBGP };
        assert_eq!(export(&[big], &extended).routes.len(), 1);
    }

    #[test]
    fn ebgp_prepends_our_as_and_drops_local_pref() {
        let out = export(&[announcement("203.0.113.0/24")], &EBGP);
        let r = &out.routes[&p("203.0.113.0/24")];
        assert_eq!(r.attrs.as_path, Some(AsPath::sequence([65001])));
        assert_eq!((r.attrs.local_pref, r.attrs.med), (None, Some(5)));
        assert_eq!(r.next_hop, IpAddr::from([192, 0, 2, 2]));
        assert_eq!(r.attrs.communities, [Community(0xFDE9_0001)]);
    }

    #[test]
    fn ibgp_sends_local_pref_and_an_empty_path() {
        let rules = ExportRules { ibgp: true, ..EBGP };
        let mut plain = announcement("203.0.113.0/24");
        plain.local_pref = None;
        let out = export(&[announcement("198.51.100.0/24"), plain], &rules);
        assert_eq!(out.routes[&p("198.51.100.0/24")].attrs.local_pref, Some(200));
        assert_eq!(out.routes[&p("203.0.113.0/24")].attrs.local_pref, Some(DEFAULT_LOCAL_PREF));
        assert_eq!(out.routes[&p("203.0.113.0/24")].attrs.as_path, Some(AsPath::default()));
    }

    #[test]
    fn next_hop_self_without_an_address_of_the_family_is_skipped_with_a_reason() {
        let out = export(&[announcement("2001:db8::/48")], &EBGP);
        assert!(out.routes.is_empty());
        assert!(out.skipped[0].1.contains("no local IPv6 address"), "{:?}", out.skipped);
        let mut explicit = announcement("2001:db8::/48");
        explicit.next_hop = NextHop::Address("2001:db8::9".parse().unwrap());
        assert_eq!(export(&[explicit], &EBGP).len(), 1);
    }

    #[test]
    fn a_delta_withdraws_exactly_what_went_and_announces_what_changed() {
        let list: Vec<Announcement> =
            (0..20).map(|i| announcement(&format!("10.0.{i}.0/24"))).collect();
        let old = export(&list, &EBGP);
        let mut changed = list[10..].to_vec();
        changed[0].med = Some(99);
        let new = export(&changed, &EBGP);
        let delta = old.delta_to(&new);
        let expected: Vec<Prefix> = (0..10).map(|i| p(&format!("10.0.{i}.0/24"))).collect();
        let mut withdrawn = delta.withdraw.clone();
        withdrawn.sort();
        let mut expected_sorted = expected.clone();
        expected_sorted.sort();
        assert_eq!(withdrawn, expected_sorted);
        assert_eq!(delta.announce.len(), 1);
        assert_eq!(delta.announce[0].1, [p("10.0.10.0/24")]);
        assert_eq!(old.full().announce.iter().map(|g| g.1.len()).sum::<usize>(), 20);
    }

    #[test]
    fn adj_rib_in_follows_announcements_withdrawals_and_treat_as_withdraw() {
        let mut rib = AdjRibIn::default();
        let attrs = PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([65000])),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..Default::default()
        };
        let v4 = Update {
            attrs: attrs.clone(),
            nlri: vec![p("10.0.0.0/8"), p("10.1.0.0/16")],
            ..Default::default()
        };
        assert_eq!(rib.apply(v4.clone(), false), Change { announced: 2, withdrawn: 0 });
        let v6 = Update {
            attrs: PathAttrs { next_hop: None, ..attrs.clone() },
            mp_reach: Some(MpReach {
                family: AfiSafi::IPV6_UNICAST,
                next_hop: "2001:db8::1".parse().unwrap(),
                link_local: None,
                nlri: vec![p("2001:db8::/32")],
            }),
            ..Default::default()
        };
        rib.apply(v6, false);
        assert_eq!(rib.len(), 3);
        assert_eq!((rib.count(true), rib.count(false)), (2, 1), "counted per family");
        assert_eq!(rib.get(&p("10.0.0.0/8")).unwrap().next_hop, IpAddr::from([192, 0, 2, 1]));
        assert_eq!(
            rib.get(&p("2001:db8::/32")).unwrap().next_hop,
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
        // Two prefixes with the same attributes share one route.
        assert!(std::ptr::eq(
            rib.get(&p("10.0.0.0/8")).unwrap(),
            rib.get(&p("10.1.0.0/16")).unwrap()
        ));
        let w =
            Update { withdrawn: vec![p("10.1.0.0/16"), p("10.9.0.0/16")], ..Default::default() };
        assert_eq!(rib.apply(w, false), Change { announced: 0, withdrawn: 1 });
        assert_eq!(rib.apply(v4, true), Change { announced: 0, withdrawn: 1 });
        assert_eq!(rib.len(), 1);
        assert_eq!((rib.count(true), rib.count(false)), (0, 1));
        rib.mark_stale();
        rib.purge_stale(Some(false));
        assert_eq!((rib.count(true), rib.count(false)), (0, 0), "purging recounts");
    }

    #[test]
    fn a_restarting_peer_s_routes_go_stale_then_fresh_or_away() {
        let mut rib = AdjRibIn::default();
        let attrs = |communities: Vec<Community>| PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([65000])),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            communities,
            ..Default::default()
        };
        let announce = |prefixes: &[&str], c: Vec<Community>| Update {
            attrs: attrs(c),
            nlri: prefixes.iter().map(|s| p(s)).collect(),
            ..Default::default()
        };
        rib.apply(announce(&["10.0.0.0/8", "10.1.0.0/16"], vec![]), false);
        rib.apply(announce(&["10.2.0.0/16"], vec![Community::NO_LLGR]), false);
        assert_eq!((rib.mark_stale(), rib.stale()), (3, 3));
        // The peer comes back and announces one again: that one is fresh.
        rib.apply(announce(&["10.0.0.0/8"], vec![]), false);
        assert_eq!(rib.staleness(&p("10.0.0.0/8")), Some(Staleness::Fresh));
        assert_eq!(rib.stale(), 2);
        // Restart time over, LLGR on: NO_LLGR goes, the rest is long-lived stale.
        assert_eq!(rib.to_long_lived(), (1, 1));
        assert_eq!(rib.staleness(&p("10.1.0.0/16")), Some(Staleness::LongLived));
        assert!(
            rib.get(&p("10.1.0.0/16")).unwrap().attrs.communities.contains(&Community::LLGR_STALE)
        );
        assert!(
            !rib.get(&p("10.0.0.0/8")).unwrap().attrs.communities.contains(&Community::LLGR_STALE)
        );
        // End-of-RIB for IPv6 leaves IPv4 alone; for IPv4 it purges.
        assert_eq!(rib.purge_stale(Some(false)), 0);
        assert_eq!(rib.purge_stale(Some(true)), 1);
        assert_eq!((rib.len(), rib.stale()), (1, 0));
    }
}
