//! A session's routing state in transit: routes written as BGP UPDATE
//! messages with our own codec (4-octet AS, extended length, LOCAL_PREF kept),
//! so a full table travels as compactly as BGP itself carries it, and is
//! read back through the same tested decoder.
//!
//! ```text
//!  AdjRibIn ─ by staleness ─▶ RIB{In | InStale | InLongLived}  ─▶ AdjRibIn
//!  AdjRibOut ───────────────▶ RIB{Out}                         ─▶ AdjRibOut
//! ```
//!
//! A table travels twice: whole, from a snapshot taken while the session
//! runs, then only what changed since, while it is frozen (routes as above,
//! prefixes gone as withdrawals in `InGone`/`OutGone`). The successor
//! applies the parts in order ([`apply`]), so the second pass overrides the
//! first.

use std::collections::HashMap;
use std::sync::Arc;

use super::protocol::{BadMessage, RibPart};
use crate::rib::{AdjRibIn, AdjRibOut, Route, Staleness};
use crate::route::Prefix;
use crate::wire::{Message, Update, UpdateBuilder, WireContext, frame};

/// How routing state is encoded in transit.
const CTX: WireContext = WireContext { four_octet_as: true, extended_messages: true, ebgp: false };

/// Routes as UPDATE messages, routes sharing attributes packed together.
/// Routes are grouped by their shared `Arc` (both RIBs intern attributes),
/// so a full table is grouped without hashing a single attribute.
pub fn encode<'a>(routes: impl Iterator<Item = (Prefix, &'a Arc<Route>)>) -> Vec<u8> {
    encode_as(routes, CTX)
}

/// Routes as UPDATE messages encoded for `ctx` (a session's own, for a
/// BMP collector that reads them as that session would).
pub fn encode_as<'a>(
    routes: impl Iterator<Item = (Prefix, &'a Arc<Route>)>,
    ctx: WireContext,
) -> Vec<u8> {
    let mut groups: HashMap<*const Route, (&Route, Vec<Prefix>)> = HashMap::new();
    for (p, r) in routes {
        groups.entry(Arc::as_ptr(r)).or_insert_with(|| (&**r, Vec::new())).1.push(p);
    }
    let builder = UpdateBuilder::new(ctx);
    let mut out = Vec::new();
    for (route, prefixes) in groups.into_values() {
        builder.announce(&route.attrs, route.next_hop, &prefixes, &mut out);
    }
    out
}

/// Prefixes as withdrawing UPDATE messages.
pub fn encode_gone(prefixes: &[Prefix]) -> Vec<u8> {
    let builder = UpdateBuilder::new(CTX);
    let mut out = Vec::new();
    let (v4, v6): (Vec<Prefix>, Vec<Prefix>) = prefixes.iter().partition(|p| p.is_ipv4());
    builder.withdraw(&v4, &mut out);
    builder.withdraw(&v6, &mut out);
    out
}

/// The UPDATE messages of a stream, checked to be whole and well formed.
fn updates(mut bytes: &[u8]) -> impl Iterator<Item = Result<Update, BadMessage>> + '_ {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let update = (|| {
            let header = frame(bytes, &CTX)
                .map_err(|e| BadMessage(format!("routing state: {e}")))?
                .filter(|h| h.len <= bytes.len())
                .ok_or_else(|| BadMessage("routing state ends inside a message".into()))?;
            let body = &bytes[crate::wire::HEADER_LEN..header.len];
            let (message, malformed) = Message::decode_framed(header, body, &CTX)
                .map_err(|e| BadMessage(format!("routing state: {e}")))?;
            if let Some(m) = malformed.first() {
                return Err(BadMessage(format!("routing state: {}", m.reason)));
            }
            let Message::Update(update) = message else {
                return Err(BadMessage(format!(
                    "routing state holds a {} message",
                    message.kind()
                )));
            };
            bytes = &bytes[header.len..];
            Ok(update)
        })();
        if update.is_err() {
            bytes = &[];
        }
        Some(update)
    })
}

/// Prefixes back from withdrawals written by [`encode_gone`].
pub fn decode_gone(bytes: &[u8]) -> Result<Vec<Prefix>, BadMessage> {
    let mut gone = Vec::new();
    for update in updates(bytes) {
        gone.extend(update?.withdrawals().copied());
    }
    Ok(gone)
}

/// Routes back from UPDATE messages written by [`encode`], one group per
/// set of attributes as it was packed.
pub fn decode_groups(bytes: &[u8]) -> Result<Vec<(Route, Vec<Prefix>)>, BadMessage> {
    let mut groups = Vec::new();
    for update in updates(bytes) {
        let update = update?;
        let mut attrs = update.attrs;
        let v4_next_hop = attrs.next_hop.take();
        if let Some(reach) = update.mp_reach {
            let route = Route { attrs: attrs.clone(), next_hop: reach.next_hop };
            groups.push((route, reach.nlri));
        }
        if let Some(nh) = v4_next_hop {
            groups.push((Route { attrs, next_hop: nh.into() }, update.nlri));
        }
    }
    Ok(groups)
}

/// Routes back, one by one.
pub fn decode(bytes: &[u8]) -> Result<Vec<(Prefix, Route)>, BadMessage> {
    Ok(decode_groups(bytes)?
        .into_iter()
        .flat_map(|(r, ps)| ps.into_iter().map(move |p| (p, r.clone())))
        .collect())
}

/// The Adj-RIB-In as one UPDATE stream per staleness.
pub fn encode_in(rib: &AdjRibIn) -> Vec<(RibPart, Vec<u8>)> {
    BY_STALENESS
        .into_iter()
        .map(|(part, s)| (part, encode(rib.iter_shared_with(s))))
        .filter(|(_, bytes)| !bytes.is_empty())
        .collect()
}

const BY_STALENESS: [(RibPart, Staleness); 3] = [
    (RibPart::In, Staleness::Fresh),
    (RibPart::InStale, Staleness::Stale),
    (RibPart::InLongLived, Staleness::LongLived),
];

/// What changed in an Adj-RIB-In since `base` (whole without one).
pub fn encode_in_since(rib: &AdjRibIn, base: Option<&AdjRibIn>) -> Vec<(RibPart, Vec<u8>)> {
    let Some(base) = base else { return encode_in(rib) };
    let changes = rib.changes_since(base);
    let mut parts: Vec<(RibPart, Vec<u8>)> = BY_STALENESS
        .into_iter()
        .map(|(part, s)| {
            let routes = changes.changed.iter().filter(|c| c.2 == s).map(|(p, r, _)| (*p, *r));
            (part, encode(routes))
        })
        .collect();
    parts.push((RibPart::InGone, encode_gone(&changes.gone)));
    parts.retain(|(_, bytes)| !bytes.is_empty());
    parts
}

/// What changed in an Adj-RIB-Out since `base` (whole without one).
pub fn encode_out_since(rib: &AdjRibOut, base: Option<&AdjRibOut>) -> Vec<(RibPart, Vec<u8>)> {
    let empty = AdjRibOut::default();
    let base = base.unwrap_or(&empty);
    let changed = rib
        .routes
        .iter()
        .filter(|(p, r)| base.routes.get(*p).is_none_or(|b| !Arc::ptr_eq(b, r) && b != *r))
        .map(|(p, r)| (*p, r));
    let gone: Vec<Prefix> =
        base.routes.keys().filter(|p| !rib.routes.contains_key(*p)).copied().collect();
    let mut parts = vec![(RibPart::Out, encode(changed)), (RibPart::OutGone, encode_gone(&gone))];
    parts.retain(|(_, bytes)| !bytes.is_empty());
    parts
}

/// Applies one part of routing state, in the order the parts came.
pub fn apply(
    rib_in: &mut AdjRibIn,
    sent: &mut AdjRibOut,
    part: RibPart,
    bytes: &[u8],
) -> Result<usize, BadMessage> {
    match part {
        RibPart::Out => restore_out(sent, bytes),
        RibPart::InGone => Ok(rib_in.forget(&decode_gone(bytes)?)),
        RibPart::OutGone => {
            let gone = decode_gone(bytes)?;
            Ok(gone.iter().filter(|p| sent.routes.remove(*p).is_some()).count())
        }
        RibPart::Unread | RibPart::Unwritten => {
            Err(BadMessage(format!("a {part:?} part is not routing state")))
        }
        part => restore_in(rib_in, part, bytes),
    }
}

/// Adds one part of an Adj-RIB-In back.
pub fn restore_in(rib: &mut AdjRibIn, part: RibPart, bytes: &[u8]) -> Result<usize, BadMessage> {
    let Some((_, staleness)) = BY_STALENESS.into_iter().find(|(p, _)| *p == part) else {
        return Err(BadMessage(format!("a {part:?} part is not an Adj-RIB-In")));
    };
    let mut n = 0;
    for (route, prefixes) in decode_groups(bytes)? {
        n += prefixes.len();
        rib.restore_all(route, &prefixes, staleness);
    }
    Ok(n)
}

/// Adds routes of an Adj-RIB-Out back.
pub fn restore_out(rib: &mut AdjRibOut, bytes: &[u8]) -> Result<usize, BadMessage> {
    let mut n = 0;
    let mut shared: HashMap<Route, Arc<Route>> = HashMap::new();
    for (route, prefixes) in decode_groups(bytes)? {
        n += prefixes.len();
        let r = shared.entry(route.clone()).or_insert_with(|| Arc::new(route)).clone();
        for p in prefixes {
            rib.routes.insert(p, r.clone());
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::route::{Community, LargeCommunity};
    use crate::wire::{AfiSafi, AsPath, MpReach, Origin, PathAttrs, RawAttr, Update};

    fn attrs(i: u32) -> PathAttrs {
        PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence([65000, 4_200_000_000 + i % 7])),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            med: Some(i % 3),
            local_pref: Some(100 + i % 2),
            communities: vec![Community(0xFDE8_0000 | (i % 5))],
            large_communities: vec![LargeCommunity(65000, i % 4, 1)],
            other: vec![RawAttr { flags: 0xe0, code: 99, value: vec![1, 2] }],
            ..Default::default()
        }
    }

    /// A table of 10,000 IPv4 and 2,000 IPv6 routes, some of them stale.
    fn table() -> AdjRibIn {
        let mut rib = AdjRibIn::default();
        for i in 0..10_000u32 {
            let p = Prefix::new(IpAddr::V4(Ipv4Addr::from((10 << 24) | (i << 8))), 24).unwrap();
            rib.apply(Update { attrs: attrs(i), nlri: vec![p], ..Default::default() }, false);
        }
        for i in 0..2_000u128 {
            let p = Prefix::new(IpAddr::V6(Ipv6Addr::from((0x2001_0db8 << 96) | (i << 64))), 64)
                .unwrap();
            let update = Update {
                attrs: PathAttrs { next_hop: None, ..attrs(i as u32) },
                mp_reach: Some(MpReach {
                    family: AfiSafi::IPV6_UNICAST,
                    next_hop: "2001:db8::1".parse().unwrap(),
                    link_local: None,
                    nlri: vec![p],
                }),
                ..Default::default()
            };
            rib.apply(update, false);
        }
        rib
    }

    #[test]
    fn an_adj_rib_in_crosses_with_every_route_attribute_and_stale_mark() {
        let mut before = table();
        before.mark_stale();
        // The peer came back and re-sent a third of its routes: those are fresh.
        for i in (0..10_000u32).step_by(3) {
            let p = Prefix::new(IpAddr::V4(Ipv4Addr::from((10 << 24) | (i << 8))), 24).unwrap();
            before.apply(Update { attrs: attrs(i), nlri: vec![p], ..Default::default() }, false);
        }
        let parts = encode_in(&before);
        assert_eq!(
            parts.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            [RibPart::In, RibPart::InStale]
        );
        let mut after = AdjRibIn::default();
        for (part, bytes) in &parts {
            restore_in(&mut after, *part, bytes).unwrap();
        }
        assert_eq!((after.len(), after.stale()), (before.len(), before.stale()));
        for (p, r) in before.iter() {
            assert_eq!(after.get(&p), Some(r), "{p}");
            assert_eq!(after.staleness(&p), before.staleness(&p), "{p}");
        }
    }

    fn v4(i: u32) -> Prefix {
        Prefix::new(IpAddr::V4(Ipv4Addr::from((10 << 24) | (i << 8))), 24).unwrap()
    }

    fn v6(i: u128) -> Prefix {
        Prefix::new(IpAddr::V6(Ipv6Addr::from((0x2001_0db8 << 96) | (i << 64))), 64).unwrap()
    }

    /// Both passes: the snapshot whole, then what changed while the session
    /// ran on (new routes, new attributes, stale marks, withdrawals of both
    /// families); the successor ends with exactly the table as frozen.
    #[test]
    fn a_snapshot_and_the_changes_since_make_the_frozen_table() {
        let mut live = table();
        let snapshot = live.clone();
        live.mark_stale();
        let fresh_again = [0u32, 7, 9_999];
        for i in fresh_again {
            live.apply(Update { attrs: attrs(i), nlri: vec![v4(i)], ..Default::default() }, false);
        }
        // New attributes for one, a prefix never seen, and withdrawals.
        live.apply(
            Update { attrs: attrs(1), nlri: vec![v4(2), v4(20_000)], ..Default::default() },
            false,
        );
        let withdraw = Update {
            withdrawn: vec![v4(5), v4(6)],
            mp_unreach: Some(crate::wire::MpUnreach {
                family: AfiSafi::IPV6_UNICAST,
                withdrawn: vec![v6(3)],
            }),
            ..Default::default()
        };
        live.apply(withdraw, false);

        let mut successor = AdjRibIn::default();
        let mut sent = AdjRibOut::default();
        for (part, bytes) in encode_in_since(&snapshot, None) {
            apply(&mut successor, &mut sent, part, &bytes).unwrap();
        }
        let changes = encode_in_since(&live, Some(&snapshot));
        let kinds: Vec<RibPart> = changes.iter().map(|(p, _)| *p).collect();
        assert_eq!(kinds, [RibPart::In, RibPart::InStale, RibPart::InGone]);
        let changed_bytes: usize = changes.iter().map(|(_, b)| b.len()).sum();
        for (part, bytes) in changes {
            apply(&mut successor, &mut sent, part, &bytes).unwrap();
        }
        assert_eq!((successor.len(), successor.stale()), (live.len(), live.stale()));
        for (p, r) in live.iter() {
            assert_eq!(successor.get(&p), Some(r), "{p}");
            assert_eq!(successor.staleness(&p), live.staleness(&p), "{p}");
        }
        for gone in [v4(5), v4(6), v6(3)] {
            assert_eq!(successor.get(&gone), None, "{gone}");
        }
        // Unchanged since the snapshot: nothing to say at all.
        assert!(encode_in_since(&live, Some(&live.clone())).is_empty());
        let whole: usize = encode_in(&live).iter().map(|(_, b)| b.len()).sum();
        assert!(changed_bytes < whole, "{changed_bytes} of {whole}");
    }

    #[test]
    fn an_adj_rib_out_crosses_in_two_passes() {
        let rib_in = table();
        let mut live = AdjRibOut::default();
        for (p, r) in rib_in.iter() {
            live.routes.insert(p, Arc::new(r.clone()));
        }
        let snapshot = live.clone();
        live.routes.remove(&v4(1));
        live.routes.remove(&v6(1));
        let changed = Arc::new(Route {
            attrs: PathAttrs { next_hop: None, ..attrs(3) },
            next_hop: "192.0.2.9".parse().unwrap(),
        });
        live.routes.insert(v4(2), changed.clone());
        live.routes.insert(v4(30_000), changed);
        let (mut rib_in, mut successor) = (AdjRibIn::default(), AdjRibOut::default());
        let first = encode_out_since(&snapshot, None);
        let second = encode_out_since(&live, Some(&snapshot));
        assert_eq!(
            second.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            [RibPart::Out, RibPart::OutGone]
        );
        for (part, bytes) in first.into_iter().chain(second) {
            apply(&mut rib_in, &mut successor, part, &bytes).unwrap();
        }
        assert_eq!(successor.len(), live.len());
        let differ = live.routes.iter().filter(|(p, r)| successor.routes.get(*p) != Some(*r));
        assert_eq!(differ.map(|(p, _)| *p).collect::<Vec<_>>(), []);
        assert!(rib_in.is_empty());
        assert!(encode_out_since(&live, Some(&live.clone())).is_empty());
    }

    #[test]
    fn an_adj_rib_out_crosses_whole() {
        let rib_in = table();
        let mut before = AdjRibOut::default();
        for (p, r) in rib_in.iter() {
            before.routes.insert(p, Arc::new(r.clone()));
        }
        let bytes = encode(before.routes.iter().map(|(p, r)| (*p, r)));
        let mut after = AdjRibOut::default();
        assert_eq!(restore_out(&mut after, &bytes).unwrap(), before.len());
        assert_eq!(after.routes, before.routes);
    }

    #[test]
    fn damaged_state_is_refused_with_a_reason() {
        let bytes = encode(table().iter_shared_with(Staleness::Fresh));
        let err = decode(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(err.0.contains("ends inside a message"), "{err}");
        let keepalive = Message::Keepalive.to_bytes(&CTX);
        let err = decode(&keepalive).unwrap_err();
        assert!(err.0.contains("holds a keepalive message"), "{err}");
        let err = restore_in(&mut AdjRibIn::default(), RibPart::Out, &[]).unwrap_err();
        assert!(err.0.contains("not an Adj-RIB-In"), "{err}");
        let (mut rib_in, mut sent) = (AdjRibIn::default(), AdjRibOut::default());
        let err = apply(&mut rib_in, &mut sent, RibPart::Unread, &[1]).unwrap_err();
        assert!(err.0.contains("not routing state"), "{err}");
        let err = apply(&mut rib_in, &mut sent, RibPart::InGone, &keepalive).unwrap_err();
        assert!(err.0.contains("holds a keepalive message"), "{err}");
    }
}
