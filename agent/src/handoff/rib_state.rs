//! A session's routing state in transit: routes written as BGP UPDATE
//! messages with our own codec (4-octet AS, extended length, LOCAL_PREF kept),
//! so a full table travels as compactly as BGP itself carries it, and is
//! read back through the same tested decoder.
//!
//! ```text
//!  AdjRibIn ─ by staleness ─▶ RIB{In | InStale | InLongLived}  ─▶ AdjRibIn
//!  AdjRibOut ───────────────▶ RIB{Out}                         ─▶ AdjRibOut
//! ```

use std::collections::HashMap;
use std::sync::Arc;

use super::protocol::{BadMessage, RibPart};
use crate::rib::{AdjRibIn, AdjRibOut, Route, Staleness};
use crate::route::Prefix;
use crate::wire::{Message, UpdateBuilder, WireContext, frame};

/// How routing state is encoded in transit.
const CTX: WireContext = WireContext { four_octet_as: true, extended_messages: true, ebgp: false };

/// Routes as UPDATE messages, routes sharing attributes packed together.
/// Routes are grouped by their shared `Arc` (both RIBs intern attributes),
/// so a full table is grouped without hashing a single attribute.
pub fn encode<'a>(routes: impl Iterator<Item = (&'a Prefix, &'a Arc<Route>)>) -> Vec<u8> {
    let mut groups: HashMap<*const Route, (&Route, Vec<Prefix>)> = HashMap::new();
    for (p, r) in routes {
        groups.entry(Arc::as_ptr(r)).or_insert_with(|| (&**r, Vec::new())).1.push(*p);
    }
    let builder = UpdateBuilder::new(CTX);
    let mut out = Vec::new();
    for (route, prefixes) in groups.into_values() {
        builder.announce(&route.attrs, route.next_hop, &prefixes, &mut out);
    }
    out
}

/// Routes back from UPDATE messages written by [`encode`], one group per
/// set of attributes as it was packed.
pub fn decode_groups(mut bytes: &[u8]) -> Result<Vec<(Route, Vec<Prefix>)>, BadMessage> {
    let mut groups = Vec::new();
    while !bytes.is_empty() {
        let header = frame(bytes, &CTX)
            .map_err(|e| BadMessage(format!("routing state: {e}")))?
            .filter(|h| h.len <= bytes.len())
            .ok_or_else(|| BadMessage("routing state ends inside a message".into()))?;
        let (message, malformed) = Message::decode(&bytes[..header.len], &CTX)
            .map_err(|e| BadMessage(format!("routing state: {e}")))?;
        if let Some(m) = malformed.first() {
            return Err(BadMessage(format!("routing state: {}", m.reason)));
        }
        let Message::Update(update) = message else {
            return Err(BadMessage(format!("routing state holds a {} message", message.kind())));
        };
        let mut attrs = update.attrs;
        let v4_next_hop = attrs.next_hop.take();
        if let Some(reach) = update.mp_reach {
            let route = Route { attrs: attrs.clone(), next_hop: reach.next_hop };
            groups.push((route, reach.nlri));
        }
        if let Some(nh) = v4_next_hop {
            groups.push((Route { attrs, next_hop: nh.into() }, update.nlri));
        }
        bytes = &bytes[header.len..];
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
    [
        (RibPart::In, Staleness::Fresh),
        (RibPart::InStale, Staleness::Stale),
        (RibPart::InLongLived, Staleness::LongLived),
    ]
    .into_iter()
    .map(|(part, s)| (part, encode(rib.iter_shared_with(s))))
    .filter(|(_, bytes)| !bytes.is_empty())
    .collect()
}

/// Adds one part of an Adj-RIB-In back.
pub fn restore_in(rib: &mut AdjRibIn, part: RibPart, bytes: &[u8]) -> Result<usize, BadMessage> {
    let staleness = match part {
        RibPart::In => Staleness::Fresh,
        RibPart::InStale => Staleness::Stale,
        RibPart::InLongLived => Staleness::LongLived,
        other => return Err(BadMessage(format!("a {other:?} part is not an Adj-RIB-In"))),
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
            rib.apply(&Update { attrs: attrs(i), nlri: vec![p], ..Default::default() }, false);
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
            rib.apply(&update, false);
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
            before.apply(&Update { attrs: attrs(i), nlri: vec![p], ..Default::default() }, false);
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
            assert_eq!(after.get(p), Some(r), "{p}");
            assert_eq!(after.staleness(p), before.staleness(p), "{p}");
        }
    }

    #[test]
    fn an_adj_rib_out_crosses_whole() {
        let rib_in = table();
        let mut before = AdjRibOut::default();
        for (p, r) in rib_in.iter() {
            before.routes.insert(*p, Arc::new(r.clone()));
        }
        let bytes = encode(before.routes.iter());
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
    }
}
