//! The codec, case by case: every message type round-trips; bytes from
//! another implementation (rustbgpd-wire) decode to what they say and ours
//! decode there; each malformation gets the action RFC 4271 / RFC 7606 give it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;
use crate::route::{Community, LargeCommunity, Prefix};

const CTX: WireContext = WireContext { four_octet_as: true, extended_messages: false, ebgp: true };
const IBGP: WireContext =
    WireContext { four_octet_as: true, extended_messages: false, ebgp: false };

fn p(s: &str) -> Prefix {
    s.parse().unwrap()
}

fn full_attrs() -> PathAttrs {
    PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath(vec![
            AsSegment::Sequence(vec![65001, 4_200_000_000]),
            AsSegment::Set(vec![1, 2]),
        ])),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        med: Some(10),
        local_pref: Some(200),
        atomic_aggregate: true,
        aggregator: Some((65001, Ipv4Addr::new(10, 0, 0, 1))),
        communities: vec![Community(0xFDE9_0064), Community::GRACEFUL_SHUTDOWN],
        large_communities: vec![LargeCommunity(65001, 1, 2)],
        other: vec![RawAttr { flags: 0xe0, code: 99, value: vec![1, 2, 3] }],
    }
}

fn round_trip(message: &Message, ctx: &WireContext) -> Message {
    let bytes = message.to_bytes(ctx);
    let (back, malformed) = Message::decode(&bytes, ctx).unwrap();
    assert!(malformed.is_empty(), "{malformed:?}");
    back
}

#[test]
fn every_message_type_round_trips() {
    let open = Open::new(
        4_200_000_001,
        90,
        Ipv4Addr::new(10, 0, 0, 1),
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::EnhancedRouteRefresh,
            Capability::ExtendedMessage,
            Capability::GracefulRestart(GracefulRestartCap {
                restarting: true,
                notification: true,
                restart_time: 120,
                families: vec![GrFamily { family: AfiSafi::IPV4_UNICAST, forwarding: true }],
            }),
            Capability::FourOctetAs(4_200_000_001),
            Capability::LongLivedGracefulRestart(vec![LlgrFamily {
                family: AfiSafi::IPV6_UNICAST,
                forwarding: false,
                stale_time: 0xab_cdef,
            }]),
            Capability::Unknown { code: 200, value: vec![9, 9] },
        ],
    );
    let v6_update = Update {
        attrs: PathAttrs { next_hop: None, ..full_attrs() },
        mp_reach: Some(MpReach {
            family: AfiSafi::IPV6_UNICAST,
            next_hop: "2001:db8::1".parse().unwrap(),
            link_local: Some("fe80::1".parse().unwrap()),
            nlri: vec![p("2001:db8:1::/48"), p("::/0"), p("2001:db8::1/128")],
        }),
        mp_unreach: Some(MpUnreach {
            family: AfiSafi::IPV6_UNICAST,
            withdrawn: vec![p("2001:db8:2::/64")],
        }),
        ..Default::default()
    };
    let messages = [
        Message::Open(open),
        Message::Keepalive,
        Message::Notification(Notification::cease_with_message(2, "maintenance")),
        Message::RouteRefresh(RouteRefresh::request(AfiSafi::IPV6_UNICAST)),
        Message::RouteRefresh(RouteRefresh {
            family: AfiSafi::IPV4_UNICAST,
            subtype: RefreshSubtype::End,
        }),
        Message::Update(Update {
            withdrawn: vec![p("10.9.0.0/16")],
            attrs: full_attrs(),
            nlri: vec![p("10.0.0.0/8"), p("192.0.2.128/25"), p("0.0.0.0/0"), p("203.0.113.7/32")],
            ..Default::default()
        }),
        Message::Update(v6_update),
        Message::Update(Update::end_of_rib(AfiSafi::IPV4_UNICAST)),
        Message::Update(Update::end_of_rib(AfiSafi::IPV6_UNICAST)),
    ];
    for m in &messages {
        assert_eq!(&round_trip(m, &IBGP), m, "{}", m.kind());
    }
}

#[test]
fn end_of_rib_is_recognised_only_when_bare() {
    assert_eq!(
        Update::end_of_rib(AfiSafi::IPV6_UNICAST).as_end_of_rib(),
        Some(AfiSafi::IPV6_UNICAST)
    );
    assert_eq!(Update::default().as_end_of_rib(), Some(AfiSafi::IPV4_UNICAST));
    let withdrawal = Update { withdrawn: vec![p("10.0.0.0/8")], ..Default::default() };
    assert_eq!(withdrawal.as_end_of_rib(), None);
    // The IPv4 End-of-RIB is 23 bytes on the wire.
    assert_eq!(Message::Update(Update::default()).to_bytes(&CTX).len(), 23);
}

#[test]
fn a_two_octet_peer_gets_as_trans_and_as4_path_and_we_rebuild_the_path() {
    let two = WireContext { four_octet_as: false, ..IBGP };
    let update = Update {
        attrs: PathAttrs {
            as_path: Some(AsPath::sequence([4_200_000_000, 65001])),
            aggregator: Some((4_200_000_000, Ipv4Addr::new(10, 0, 0, 1))),
            ..full_attrs()
        },
        nlri: vec![p("10.0.0.0/8")],
        ..Default::default()
    };
    let bytes = Message::Update(update.clone()).to_bytes(&two);
    // AS_TRANS (0x5ba0) stands in the 2-octet AS_PATH.
    assert!(bytes.windows(2).any(|w| w == [0x5b, 0xa0]));
    let (Message::Update(back), _) = Message::decode(&bytes, &two).unwrap() else { panic!() };
    assert_eq!(back.attrs.as_path, update.attrs.as_path);
    assert_eq!(back.attrs.aggregator, update.attrs.aggregator);
}

mod oracle {
    //! rustbgpd-wire, an independent codec, as the other side.
    use bytes::Bytes;
    use rustbgpd_wire as other;

    use super::*;

    fn their_decode(bytes: &[u8]) -> other::Message {
        other::decode_message(&mut Bytes::copy_from_slice(bytes), 4096)
            .expect("rustbgpd decodes it")
    }

    #[test]
    fn our_open_reads_the_same_there() {
        let ours = Open::new(
            4_200_000_001,
            30,
            Ipv4Addr::new(10, 0, 0, 1),
            vec![
                Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
                Capability::FourOctetAs(4_200_000_001),
                Capability::GracefulRestart(GracefulRestartCap {
                    restarting: true,
                    notification: true,
                    restart_time: 300,
                    families: vec![GrFamily { family: AfiSafi::IPV6_UNICAST, forwarding: true }],
                }),
            ],
        );
        let other::Message::Open(theirs) = their_decode(&Message::Open(ours).to_bytes(&CTX)) else {
            panic!("not an OPEN")
        };
        assert_eq!((theirs.my_as, theirs.hold_time), (23456, 30));
        assert_eq!(theirs.four_byte_as(), 4_200_000_001);
        assert_eq!(theirs.bgp_identifier, Ipv4Addr::new(10, 0, 0, 1));
        let gr = theirs.capabilities.iter().find_map(|c| match c {
            other::Capability::GracefulRestart {
                restart_state,
                notification,
                restart_time,
                families,
            } => Some((
                *restart_state,
                *notification,
                *restart_time,
                families[0].forwarding_preserved,
            )),
            _ => None,
        });
        assert_eq!(gr, Some((true, true, 300, true)));
    }

    #[test]
    fn their_open_reads_the_same_here() {
        let theirs = other::OpenMessage {
            version: 4,
            my_as: 65002,
            hold_time: 180,
            bgp_identifier: Ipv4Addr::new(192, 0, 2, 2),
            capabilities: vec![
                other::Capability::MultiProtocol {
                    afi: other::Afi::Ipv4,
                    safi: other::Safi::Unicast,
                },
                other::Capability::RouteRefresh,
                other::Capability::FourOctetAs { asn: 65002 },
            ],
        };
        let bytes = other::encode_message(&other::Message::Open(theirs)).unwrap();
        let (Message::Open(ours), _) = Message::decode(&bytes, &CTX).unwrap() else { panic!() };
        assert_eq!((ours.asn(), ours.hold_time), (65002, 180));
        assert_eq!(ours.families(), vec![AfiSafi::IPV4_UNICAST]);
        assert!(ours.has(open::capability_code::ROUTE_REFRESH));
    }

    #[test]
    fn our_update_reads_the_same_there() {
        let update = Update {
            withdrawn: vec![p("10.9.0.0/16")],
            attrs: PathAttrs { other: vec![], ..full_attrs() },
            nlri: vec![p("10.0.0.0/8"), p("192.0.2.128/25")],
            ..Default::default()
        };
        let other::Message::Update(raw) = their_decode(&Message::Update(update).to_bytes(&IBGP))
        else {
            panic!()
        };
        let parsed = raw.parse(true, false, &[]).unwrap();
        let announced: Vec<String> = parsed
            .announced
            .iter()
            .map(|e| format!("{}/{}", e.prefix.addr, e.prefix.len))
            .collect();
        assert_eq!(announced, ["10.0.0.0/8", "192.0.2.128/25"]);
        assert_eq!(
            parsed.withdrawn[0].prefix,
            other::nlri::Ipv4Prefix::new(Ipv4Addr::new(10, 9, 0, 0), 16)
        );
        let mut seen = vec![];
        for a in &parsed.attributes {
            match a {
                other::PathAttribute::Origin(o) => seen.push(format!("origin {}", *o as u8)),
                other::PathAttribute::AsPath(path) => {
                    seen.push(format!("path {:?}", path.segments))
                }
                other::PathAttribute::NextHop(nh) => seen.push(format!("nh {nh}")),
                other::PathAttribute::Med(m) => seen.push(format!("med {m}")),
                other::PathAttribute::LocalPref(l) => seen.push(format!("lp {l}")),
                other::PathAttribute::Communities(c) => seen.push(format!("comm {c:x?}")),
                other::PathAttribute::LargeCommunities(c) => seen.push(format!(
                    "large {}:{}:{}",
                    c[0].global_admin, c[0].local_data1, c[0].local_data2
                )),
                other::PathAttribute::AtomicAggregate => seen.push("atomic".into()),
                other::PathAttribute::Aggregator(a) => {
                    seen.push(format!("agg {} {}", a.asn, a.router_id))
                }
                _ => {}
            }
        }
        assert_eq!(
            seen,
            [
                "origin 0",
                "path [AsSequence([65001, 4200000000]), AsSet([1, 2])]",
                "nh 192.0.2.1",
                "med 10",
                "lp 200",
                "atomic",
                "agg 65001 10.0.0.1",
                "comm [fde90064, ffff0000]",
                "large 65001:1:2",
            ]
        );
    }

    #[test]
    fn our_ipv6_update_reads_the_same_there() {
        let builder = UpdateBuilder::new(IBGP);
        let prefixes = [p("2001:db8:1::/48"), p("2001:db8:2::/64")];
        let attrs = PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            ..Default::default()
        };
        let mut out = vec![];
        builder.announce(&attrs, "2001:db8::1".parse().unwrap(), &prefixes, &mut out);
        let other::Message::Update(raw) = their_decode(&out) else { panic!() };
        let parsed = raw.parse(true, false, &[]).unwrap();
        let reach = parsed
            .attributes
            .iter()
            .find_map(|a| match a {
                other::PathAttribute::MpReachNlri(r) => Some(r),
                _ => None,
            })
            .expect("MP_REACH_NLRI");
        assert_eq!(reach.next_hop, "2001:db8::1".parse::<IpAddr>().unwrap());
        let got: Vec<String> = reach.announced.iter().map(|e| format!("{:?}", e.prefix)).collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("2001:db8:1::") && got[0].contains("48"), "{got:?}");
    }

    #[test]
    fn their_update_reads_the_same_here() {
        let announced: Vec<other::nlri::Ipv4NlriEntry> = ["10.1.0.0/16", "10.2.3.0/24"]
            .iter()
            .map(|s| {
                let p: Prefix = s.parse().unwrap();
                let IpAddr::V4(a) = p.addr() else { unreachable!() };
                other::nlri::Ipv4NlriEntry {
                    path_id: 0,
                    prefix: other::nlri::Ipv4Prefix::new(a, p.len()),
                }
            })
            .collect();
        let attrs = [
            other::PathAttribute::Origin(other::attribute::Origin::Incomplete),
            other::PathAttribute::AsPath(other::attribute::AsPath {
                segments: vec![other::attribute::AsPathSegment::AsSequence(vec![65002, 65003])],
            }),
            other::PathAttribute::NextHop(Ipv4Addr::new(192, 0, 2, 9)),
            other::PathAttribute::Med(5),
            other::PathAttribute::Communities(vec![0xFDEA_0001]),
        ];
        let update = other::UpdateMessage::build(
            &announced,
            &[],
            &attrs,
            true,
            false,
            other::Ipv4UnicastMode::Body,
        );
        let bytes = other::encode_message(&other::Message::Update(update)).unwrap();
        let (Message::Update(ours), malformed) = Message::decode(&bytes, &CTX).unwrap() else {
            panic!()
        };
        assert!(malformed.is_empty(), "{malformed:?}");
        assert_eq!(ours.nlri, [p("10.1.0.0/16"), p("10.2.3.0/24")]);
        assert_eq!(ours.attrs.origin, Some(Origin::Incomplete));
        assert_eq!(ours.attrs.as_path, Some(AsPath::sequence([65002, 65003])));
        assert_eq!(ours.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 9)));
        assert_eq!(ours.attrs.med, Some(5));
        assert_eq!(ours.attrs.communities, [Community(0xFDEA_0001)]);
    }
}

/// A hand-built UPDATE body around one attribute, announcing 10.0.0.0/8.
fn update_with_attr(attr: &[u8]) -> Vec<u8> {
    let mut attrs = vec![0x40, 1, 1, 0]; // ORIGIN IGP
    attrs.extend_from_slice(&[0x40, 2, 0]); // empty AS_PATH
    attrs.extend_from_slice(&[0x40, 3, 4, 192, 0, 2, 1]); // NEXT_HOP
    attrs.extend_from_slice(attr);
    framed_update(&[], &attrs, &[8, 10])
}

pub(super) fn framed_update(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    let start = begin(&mut out);
    out.extend_from_slice(&(withdrawn.len() as u16).to_be_bytes());
    out.extend_from_slice(withdrawn);
    out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    out.extend_from_slice(attrs);
    out.extend_from_slice(nlri);
    finish(&mut out, start, message_type::UPDATE);
    out
}

/// RFC 7606 §7: what each malformed attribute does.
#[test]
fn malformed_attributes_get_their_rfc_7606_action() {
    use MalformedAction::*;
    let cases: &[(&str, Vec<u8>, Option<MalformedAction>)] = &[
        ("MED of 3 bytes", vec![0x80, 4, 3, 0, 0, 1], Some(TreatAsWithdraw)),
        ("communities of 5 bytes", vec![0xc0, 8, 5, 0, 0, 0, 1, 2], Some(TreatAsWithdraw)),
        ("empty communities", vec![0xc0, 8, 0], Some(TreatAsWithdraw)),
        (
            "large community of 11 bytes",
            [&[0xc0u8, 32, 11][..], &[0; 11]].concat(),
            Some(TreatAsWithdraw),
        ),
        ("ATOMIC_AGGREGATE with a value", vec![0x40, 6, 1, 0], Some(AttributeDiscard)),
        ("AGGREGATOR of 5 bytes", vec![0xc0, 7, 5, 0, 0, 0, 0, 0], Some(AttributeDiscard)),
        ("MED flagged transitive", vec![0xc0, 4, 4, 0, 0, 0, 1], Some(TreatAsWithdraw)),
        ("attribute overrunning the list", vec![0xc0, 8, 200, 0, 0], Some(TreatAsWithdraw)),
        ("two bytes left over", vec![0xc0, 8], Some(TreatAsWithdraw)),
        (
            "duplicate MED: second ignored",
            vec![0x80, 4, 4, 0, 0, 0, 1, 0x80, 4, 4, 0, 0, 0, 2],
            None,
        ),
        ("unknown optional non-transitive: dropped", vec![0x80, 250, 1, 7], None),
    ];
    for (name, attr, expected) in cases {
        let bytes = update_with_attr(attr);
        let (message, malformed) =
            Message::decode(&bytes, &CTX).unwrap_or_else(|e| panic!("{name}: session reset: {e}"));
        assert_eq!(malformed.first().map(|m| m.action), *expected, "{name}: {malformed:?}");
        let Message::Update(u) = message else { panic!() };
        assert_eq!(u.nlri, [p("10.0.0.0/8")], "{name}: NLRI still found");
    }
}

#[test]
fn bad_origin_and_missing_mandatory_attributes_withdraw() {
    let bytes = framed_update(&[], &[0x40, 1, 1, 7, 0x40, 2, 0, 0x40, 3, 4, 1, 2, 3, 4], &[8, 10]);
    let (_, malformed) = Message::decode(&bytes, &CTX).unwrap();
    assert_eq!(malformed[0].action, MalformedAction::TreatAsWithdraw);
    let bytes = framed_update(&[], &[0x40, 1, 1, 0], &[8, 10]);
    let (_, malformed) = Message::decode(&bytes, &CTX).unwrap();
    let reasons: Vec<_> = malformed.iter().map(|m| m.reason.as_str()).collect();
    assert_eq!(
        reasons,
        ["missing well-known attribute AS_PATH", "missing well-known attribute NEXT_HOP"]
    );
}

#[test]
fn local_pref_from_an_external_peer_is_ignored() {
    let bytes = update_with_attr(&[0x40, 5, 4, 0, 0, 0, 100]);
    let (Message::Update(u), m) = Message::decode(&bytes, &CTX).unwrap() else { panic!() };
    assert!(m.is_empty());
    assert_eq!(u.attrs.local_pref, None);
    let (Message::Update(u), _) = Message::decode(&bytes, &IBGP).unwrap() else { panic!() };
    assert_eq!(u.attrs.local_pref, Some(100));
}

#[test]
fn unknown_optional_transitive_attributes_pass_on_marked_partial() {
    let bytes = update_with_attr(&[0xc0, 250, 2, 7, 8]);
    let (Message::Update(u), _) = Message::decode(&bytes, &CTX).unwrap() else { panic!() };
    assert_eq!(u.attrs.other, [RawAttr { flags: 0xe0, code: 250, value: vec![7, 8] }]);
}

/// Errors that end the session, with the NOTIFICATION they send.
#[test]
fn unusable_messages_get_the_notification_the_rfcs_prescribe() {
    let mut wrong_marker = Message::Keepalive.to_bytes(&CTX);
    wrong_marker[3] = 0;
    let mut bad_type = Message::Keepalive.to_bytes(&CTX);
    bad_type[18] = 9;
    let mut long_keepalive = Message::Keepalive.to_bytes(&CTX);
    long_keepalive.push(0);
    long_keepalive[17] = 20;
    let mut too_long = framed_update(&[], &[], &[]);
    too_long.resize(5000, 0);
    too_long[16..18].copy_from_slice(&5000u16.to_be_bytes());
    let mut open_v3 = Message::Open(Open::new(1, 90, Ipv4Addr::LOCALHOST, vec![])).to_bytes(&CTX);
    open_v3[19] = 3;
    let mut open_param =
        Message::Open(Open::new(1, 90, Ipv4Addr::LOCALHOST, vec![])).to_bytes(&CTX);
    open_param[29] = 1; // optional parameter type 1 (authentication, deprecated)
    let cases: Vec<(&str, Vec<u8>, (u8, u8))> = vec![
        ("wrong marker", wrong_marker, (1, 1)),
        ("unknown type", bad_type, (1, 3)),
        ("KEEPALIVE of 20 bytes", long_keepalive, (1, 2)),
        ("UPDATE of 5000 bytes without extended messages", too_long, (1, 2)),
        ("BGP version 3", open_v3, (2, 1)),
        ("unknown optional parameter", open_param, (2, 4)),
        (
            "withdrawn runs past the message",
            {
                let mut b = framed_update(&[], &[], &[]);
                b[19] = 0;
                b[20] = 9;
                b
            },
            (3, 1),
        ),
        (
            "prefix length 33",
            framed_update(
                &[],
                &[0x40, 1, 1, 0, 0x40, 2, 0, 0x40, 3, 4, 1, 2, 3, 4],
                &[33, 1, 2, 3, 4, 5],
            ),
            (3, 10),
        ),
        ("truncated prefix", framed_update(&[24, 10], &[], &[]), (3, 10)),
        ("unknown well-known attribute", update_with_attr(&[0x40, 99, 0]), (3, 2)),
        (
            "MP_UNREACH twice",
            update_with_attr(&[0x80, 15, 3, 0, 2, 1, 0x80, 15, 3, 0, 2, 1]),
            (3, 1),
        ),
        (
            "MP_REACH with a 5-byte next hop",
            update_with_attr(&[0x80, 14, 10, 0, 2, 1, 5, 1, 2, 3, 4, 5, 0]),
            (3, 9),
        ),
        (
            "ROUTE-REFRESH of 5 bytes",
            {
                let mut b = Message::RouteRefresh(RouteRefresh::request(AfiSafi::IPV4_UNICAST))
                    .to_bytes(&CTX);
                b.push(0);
                b[17] = 24;
                b
            },
            (7, 1),
        ),
    ];
    for (name, bytes, (code, subcode)) in cases {
        let err = match Message::decode(&bytes, &CTX) {
            Ok(m) => panic!("{name}: decoded {m:?}"),
            Err(e) => e,
        };
        assert_eq!(
            (err.notification.code, err.notification.subcode),
            (code, subcode),
            "{name}: {err}"
        );
    }
}

#[test]
fn framing_waits_for_a_whole_header() {
    let bytes = Message::Keepalive.to_bytes(&CTX);
    assert_eq!(frame(&bytes[..18], &CTX), Ok(None));
    assert_eq!(frame(&bytes, &CTX), Ok(Some(Header { kind: 4, len: 19 })));
}

#[test]
fn updates_are_packed_as_full_as_the_message_size_allows() {
    let attrs = PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence([65001])),
        ..Default::default()
    };
    let v4: Vec<Prefix> = (0..10_000u32)
        .map(|i| Prefix::new(IpAddr::V4(Ipv4Addr::from((10u32 << 24) | (i << 8))), 24).unwrap())
        .collect();
    for ctx in [CTX, WireContext { extended_messages: true, ..CTX }] {
        let mut out = vec![];
        let n = UpdateBuilder::new(ctx).announce(
            &attrs,
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            &v4,
            &mut out,
        );
        let mut seen = vec![];
        let mut rest = &out[..];
        let mut sizes = vec![];
        while let Some(h) = frame(rest, &ctx).unwrap() {
            let (Message::Update(u), m) = Message::decode(&rest[..h.len], &ctx).unwrap() else {
                panic!()
            };
            assert!(m.is_empty());
            assert_eq!(u.attrs.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
            seen.extend(u.nlri);
            sizes.push(h.len);
            rest = &rest[h.len..];
        }
        assert!(seen == v4, "{} prefixes came back out of {}", seen.len(), v4.len());
        assert_eq!(sizes.len(), n);
        // Every message but the last is within 4 bytes (one /24) of the limit.
        for s in &sizes[..n - 1] {
            assert!(*s > ctx.max_message_len() - 4 && *s <= ctx.max_message_len(), "{s}");
        }
    }
    let v6: Vec<Prefix> = (0..3000u128)
        .map(|i| {
            Prefix::new(IpAddr::V6(Ipv6Addr::from((0x2001_0db8u128 << 96) | (i << 64))), 64)
                .unwrap()
        })
        .collect();
    let mut out = vec![];
    let n = UpdateBuilder::new(CTX).withdraw(&v6, &mut out);
    let mut seen = vec![];
    let mut rest = &out[..];
    while let Some(h) = frame(rest, &CTX).unwrap() {
        let (Message::Update(u), _) = Message::decode(&rest[..h.len], &CTX).unwrap() else {
            panic!()
        };
        seen.extend(u.mp_unreach.unwrap().withdrawn);
        rest = &rest[h.len..];
    }
    assert!(seen == v6, "{} prefixes came back out of {}", seen.len(), v6.len());
    assert_eq!(n, 3000 * 9 / (4096 - 30) + 1);
}

/// No UPDATE over the session's size, whatever the attributes: the ones
/// that leave room for a prefix are split, the ones that do not are not sent.
#[test]
fn no_update_is_ever_larger_than_the_session_allows() {
    let nh = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let prefixes: Vec<Prefix> = (0..200).map(|i| p(&format!("10.{i}.0.0/16"))).collect();
    for communities in [0, 500, 1000, 1005, 1100, 20_000] {
        let attrs =
            PathAttrs { communities: (0..communities).map(Community).collect(), ..full_attrs() };
        let builder = UpdateBuilder::new(CTX);
        let mut out = vec![];
        let n = builder.announce(&attrs, nh, &prefixes, &mut out);
        let single = builder.single_len(&attrs, nh, &prefixes[0]);
        let (mut rest, mut sent) = (&out[..], 0);
        while let Some(h) = frame(rest, &CTX).unwrap() {
            assert!(h.len <= 4096, "{communities} communities: a message of {} bytes", h.len);
            let (Message::Update(u), m) = Message::decode(&rest[..h.len], &CTX).unwrap() else {
                panic!()
            };
            assert!(m.is_empty(), "{m:?}");
            sent += u.nlri.len();
            rest = &rest[h.len..];
        }
        let fits = single <= 4096;
        assert_eq!(
            (sent, n > 0),
            (if fits { 200 } else { 0 }, fits),
            "{communities}: {single} bytes alone"
        );
    }
}

fn arb_prefix() -> impl Strategy<Value = Prefix> {
    prop_oneof![
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, l)| Prefix::masked(IpAddr::V4(a.into()), l).unwrap()),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, l)| Prefix::masked(IpAddr::V6(a.into()), l).unwrap()),
    ]
}

fn arb_attrs() -> impl Strategy<Value = PathAttrs> {
    (
        prop::option::of(prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ]),
        prop::option::of(prop::collection::vec(prop::collection::vec(any::<u32>(), 1..20), 0..3)),
        prop::option::of(any::<u32>().prop_map(Ipv4Addr::from)),
        (prop::option::of(any::<u32>()), prop::option::of(any::<u32>()), any::<bool>()),
        prop::collection::vec(any::<u32>().prop_map(Community), 0..10),
        prop::collection::vec(
            (any::<u32>(), any::<u32>(), any::<u32>())
                .prop_map(|(a, b, c)| LargeCommunity(a, b, c)),
            0..5,
        ),
    )
        .prop_map(
            |(
                origin,
                path,
                next_hop,
                (med, local_pref, atomic_aggregate),
                communities,
                large_communities,
            )| PathAttrs {
                origin,
                as_path: path
                    .map(|segs| AsPath(segs.into_iter().map(AsSegment::Sequence).collect())),
                next_hop,
                med,
                local_pref,
                atomic_aggregate,
                aggregator: None,
                communities,
                large_communities,
                other: vec![],
            },
        )
}

proptest! {
    #[test]
    fn any_update_round_trips(attrs in arb_attrs(), prefixes in prop::collection::vec(arb_prefix(), 0..200), withdrawn in prop::collection::vec(arb_prefix(), 0..50)) {
        let (v4, v6): (Vec<Prefix>, Vec<Prefix>) = prefixes.into_iter().partition(Prefix::is_ipv4);
        let (w4, w6): (Vec<Prefix>, Vec<Prefix>) = withdrawn.into_iter().partition(Prefix::is_ipv4);
        let update = Update {
            withdrawn: w4,
            attrs,
            mp_reach: (!v6.is_empty()).then(|| MpReach { family: AfiSafi::IPV6_UNICAST, next_hop: "2001:db8::1".parse().unwrap(), link_local: None, nlri: v6 }),
            mp_unreach: (!w6.is_empty()).then_some(MpUnreach { family: AfiSafi::IPV6_UNICAST, withdrawn: w6 }),
            nlri: v4,
        };
        let ctx = WireContext { extended_messages: true, ..IBGP };
        let bytes = Message::Update(update.clone()).to_bytes(&ctx);
        let (back, _) = Message::decode(&bytes, &ctx).unwrap();
        prop_assert_eq!(back, Message::Update(update));
    }

    #[test]
    fn any_bytes_decode_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..600), kind in 1u8..=5) {
        let mut framed = vec![0xff; 16];
        framed.extend_from_slice(&((bytes.len() + 19) as u16).to_be_bytes());
        framed.push(kind);
        framed.extend_from_slice(&bytes);
        let _ = Message::decode(&framed, &CTX);
        let _ = Message::decode(&framed, &WireContext::BEFORE_OPEN);
    }
}

#[test]
fn ipv6_link_local_next_hops_round_trip() {
    let ll: Ipv6Addr = "fe80::2".parse().unwrap();
    let update = Update {
        attrs: PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::default()),
            ..Default::default()
        },
        mp_reach: Some(MpReach {
            family: AfiSafi::IPV6_UNICAST,
            next_hop: "2001:db8::2".parse().unwrap(),
            link_local: Some(ll),
            nlri: vec![p("2001:db8::/32")],
        }),
        ..Default::default()
    };
    assert_eq!(round_trip(&Message::Update(update.clone()), &CTX), Message::Update(update));
}
