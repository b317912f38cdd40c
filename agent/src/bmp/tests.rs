use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::*;

const AT: (u32, u32) = (1_700_000_000, 250_000);

fn peer(address: &str) -> PeerId {
    PeerId { address: address.parse().unwrap(), asn: 65001, router_id: Ipv4Addr::new(1, 2, 3, 4) }
}

/// A framed BGP message of this type with `body`.
fn bgp(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 16];
    m.extend_from_slice(&((19 + body.len()) as u16).to_be_bytes());
    m.push(kind);
    m.extend_from_slice(body);
    m
}

/// One message as read back: type, flags, peer address, and the body
/// after the per-peer header (flags and address are None without one).
type Read = (u8, Option<u8>, Option<IpAddr>, Vec<u8>);

/// Each message in `bytes`.
fn read(mut bytes: &[u8]) -> Vec<Read> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = message_len(bytes).expect("a whole message");
        let (m, rest) = bytes.split_at(len);
        assert_eq!(m[0], VERSION);
        let kind = m[5];
        if kind == kind::INITIATION || kind == kind::TERMINATION {
            out.push((kind, None, None, m[6..].to_vec()));
        } else {
            let h = &m[6..48];
            assert_eq!(h[0], 0, "global instance peer");
            let a: [u8; 16] = h[10..26].try_into().unwrap();
            let ip = if h[1] & flag::V6 != 0 {
                IpAddr::from(a)
            } else {
                IpAddr::from([a[12], a[13], a[14], a[15]])
            };
            assert_eq!(u32::from_be_bytes(h[26..30].try_into().unwrap()), 65001);
            assert_eq!(&h[30..34], &[1, 2, 3, 4]);
            assert_eq!(u32::from_be_bytes(h[34..38].try_into().unwrap()), AT.0);
            assert_eq!(u32::from_be_bytes(h[38..42].try_into().unwrap()), AT.1);
            out.push((kind, Some(h[1]), Some(ip), m[48..].to_vec()));
        }
        bytes = rest;
    }
    out
}

#[test]
fn initiation_names_the_system() {
    let mut out = Vec::new();
    initiation(&mut out, "node-1", "nonstop-agent 0.1.0");
    let mut want = vec![3, 0, 0, 0, 0, 4];
    want.extend_from_slice(&[0, 1, 0, 19]);
    want.extend_from_slice(b"nonstop-agent 0.1.0");
    want.extend_from_slice(&[0, 2, 0, 6]);
    want.extend_from_slice(b"node-1");
    let len = want.len() as u32;
    want[1..5].copy_from_slice(&len.to_be_bytes());
    assert_eq!(out, want);
}

#[test]
fn route_monitoring_wraps_each_update_and_skips_the_rest() {
    let update = bgp(2, &[0, 0, 0, 0]);
    let keepalive = bgp(4, &[]);
    let mut stream = update.clone();
    stream.extend_from_slice(&keepalive);
    stream.extend_from_slice(&update);
    stream.extend_from_slice(&update[..10]); // a torn tail
    let cases: &[(&str, bool, u8)] = &[
        ("192.0.2.1", false, 0),
        ("192.0.2.1", true, flag::ADJ_RIB_OUT | flag::POST_POLICY),
        ("2001:db8::1", false, flag::V6),
        ("2001:db8::1", true, flag::V6 | flag::ADJ_RIB_OUT | flag::POST_POLICY),
        ("::ffff:192.0.2.1", false, 0),
    ];
    for (address, sent, flags) in cases {
        let p = peer(address);
        let mut out = Vec::new();
        route_monitoring(&mut out, &p, *sent, &stream, AT);
        let got = read(&out);
        assert_eq!(got.len(), 2, "{address} sent={sent}");
        for (kind, f, ip, body) in got {
            assert_eq!(kind, kind::ROUTE_MONITORING);
            assert_eq!(f, Some(*flags), "{address} sent={sent}");
            assert_eq!(ip, Some(p.address.to_canonical()));
            assert_eq!(body, update);
        }
    }
}

#[test]
fn peer_down_carries_its_reason() {
    let notification = bgp(3, &[6, 2]);
    let cases = [
        (PeerDown::LocalNotification(notification.clone()), 1, notification.clone()),
        (PeerDown::LocalNoNotification(2), 2, vec![0, 2]),
        (PeerDown::RemoteNotification(notification.clone()), 3, notification.clone()),
        (PeerDown::RemoteNoNotification, 4, vec![]),
    ];
    for (down, code, data) in cases {
        let mut out = Vec::new();
        peer_down(&mut out, &peer("192.0.2.1"), &down, AT);
        let got = read(&out);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, kind::PEER_DOWN);
        assert_eq!(got[0].3[0], code, "{down:?}");
        assert_eq!(&got[0].3[1..], &data[..], "{down:?}");
    }
}

fn up(adopted: bool) -> Up {
    Up {
        local: SocketAddr::new(Ipv4Addr::new(192, 0, 2, 10).into(), 179),
        remote: SocketAddr::new(Ipv4Addr::new(192, 0, 2, 1).into(), 40000),
        sent_open: bgp(1, &[4, 0xfd, 0xe8, 0, 90, 10, 0, 0, 1, 0]),
        received_open: bgp(1, &[4, 0xfd, 0xe9, 0, 90, 1, 2, 3, 4, 0]),
        peer_asn: 65001,
        peer_id: Ipv4Addr::new(1, 2, 3, 4),
        adopted,
    }
}

#[test]
fn peer_up_carries_both_ends_and_both_opens() {
    let u = up(false);
    let mut out = Vec::new();
    peer_up(&mut out, &peer("192.0.2.1"), &u, AT);
    let got = read(&out);
    assert_eq!(got[0].0, kind::PEER_UP);
    let body = &got[0].3;
    assert_eq!(&body[..16], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 192, 0, 2, 10]);
    assert_eq!(&body[16..18], &179u16.to_be_bytes());
    assert_eq!(&body[18..20], &40000u16.to_be_bytes());
    let opens: Vec<&[u8]> = bgp_messages(&body[20..]).collect();
    assert_eq!(opens, vec![&u.sent_open[..], &u.received_open[..]]);
}

#[test]
fn statistics_report_the_tables() {
    let mut out = Vec::new();
    let counts = Counts { adj_rib_in: 1_000_000, rejected: 3, adj_rib_out: 12 };
    statistics(&mut out, &peer("192.0.2.1"), &counts, AT);
    let got = read(&out);
    assert_eq!(got[0].0, kind::STATISTICS);
    let mut want = 3u32.to_be_bytes().to_vec();
    want.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 3]);
    want.extend_from_slice(&[0, 7, 0, 8]);
    want.extend_from_slice(&1_000_000u64.to_be_bytes());
    want.extend_from_slice(&[0, 15, 0, 8]);
    want.extend_from_slice(&12u64.to_be_bytes());
    assert_eq!(got[0].3, want);
}

/// What a feed writes for a sequence of records: (message type, peer).
fn feed(mut f: Feed, records: &[(&str, Option<u64>, Monitored)]) -> Vec<(u8, IpAddr)> {
    let at = UNIX_EPOCH + Duration::new(u64::from(AT.0), AT.1 * 1000);
    let mut out = Vec::new();
    for (address, target, what) in records {
        let r = Record { peer: address.parse().unwrap(), target: *target, what: what.clone(), at };
        f.record(&r, &mut out);
    }
    read(&out).into_iter().map(|(k, _, ip, _)| (k, ip.unwrap())).collect()
}

#[test]
fn a_feed_tells_each_collector_what_it_can_place() {
    use Monitored::*;
    let a: IpAddr = "192.0.2.1".parse().unwrap();
    let update = bgp(2, &[0, 0, 0, 0]);
    let rm = kind::ROUTE_MONITORING;
    let down = || Down(PeerDown::RemoteNoNotification);
    let upd = || Received(update.clone());
    type Records<'a> = Vec<(&'a str, Option<u64>, Monitored)>;
    type Told = Vec<(u8, IpAddr)>;
    let cases: Vec<(&str, Feed, Records, Told)> = vec![
        (
            "routes before the Peer Up are not sent",
            Feed::fresh(1),
            vec![("192.0.2.1", None, upd()), ("192.0.2.1", None, Up(Box::new(up(false))))],
            vec![(kind::PEER_UP, a)],
        ),
        (
            "a live session: up, routes both ways, down, then nothing",
            Feed::fresh(1),
            vec![
                ("192.0.2.1", None, Up(Box::new(up(false)))),
                ("192.0.2.1", None, upd()),
                ("192.0.2.1", None, Sent(update.clone())),
                ("192.0.2.1", None, down()),
                ("192.0.2.1", None, upd()),
                ("192.0.2.1", None, down()),
            ],
            vec![(kind::PEER_UP, a), (rm, a), (rm, a), (kind::PEER_DOWN, a)],
        ),
        (
            "a replay for another connection is not ours",
            Feed::fresh(1),
            vec![
                ("192.0.2.1", Some(2), Up(Box::new(up(false)))),
                ("192.0.2.1", Some(2), upd()),
                ("192.0.2.1", Some(1), Up(Box::new(up(false)))),
                ("192.0.2.1", Some(1), upd()),
            ],
            vec![(kind::PEER_UP, a), (rm, a)],
        ),
        (
            "a handed-over connection hears nothing of the handoff",
            Feed::adopted(7),
            vec![("192.0.2.1", None, Up(Box::new(up(true)))), ("192.0.2.1", None, upd())],
            vec![(rm, a)],
        ),
        (
            "a new connection is told of an adopted session",
            Feed::fresh(7),
            vec![("192.0.2.1", None, Up(Box::new(up(true)))), ("192.0.2.1", None, upd())],
            vec![(kind::PEER_UP, a), (rm, a)],
        ),
        (
            "an adopted session replayed to a new connection is told once",
            Feed::fresh(7),
            vec![
                ("192.0.2.1", Some(7), Up(Box::new(up(false)))),
                ("192.0.2.1", None, Up(Box::new(up(true)))),
            ],
            vec![(kind::PEER_UP, a)],
        ),
        (
            "a session that came up as the connection was made is told once",
            Feed::fresh(7),
            vec![
                ("192.0.2.1", None, Up(Box::new(up(false)))),
                ("192.0.2.1", Some(7), Up(Box::new(up(false)))),
                ("192.0.2.1", Some(7), upd()),
            ],
            vec![(kind::PEER_UP, a), (rm, a)],
        ),
        (
            "a session that comes up again after a handoff is told",
            Feed::adopted(7),
            vec![
                ("192.0.2.1", None, Up(Box::new(up(true)))),
                ("192.0.2.1", None, down()),
                ("192.0.2.1", None, Up(Box::new(up(false)))),
            ],
            vec![(kind::PEER_DOWN, a), (kind::PEER_UP, a)],
        ),
    ];
    for (name, f, records, want) in cases {
        assert_eq!(feed(f, &records), want, "{name}");
    }
}

#[test]
fn stamps_are_seconds_and_microseconds() {
    let at = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
    assert_eq!(stamp(at), (1_700_000_000, 123_456));
    assert_eq!(stamp(SystemTime::UNIX_EPOCH), (0, 0));
}
