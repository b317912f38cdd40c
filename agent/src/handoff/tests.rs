//! The handoff protocol and the predecessor's decisions, case by case.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use super::protocol::*;
use super::*;
use crate::health::Verdict;
use crate::wire::Capability;

fn hello(can_carry: &[Feature]) -> Hello {
    Hello {
        protocol: PROTOCOL,
        state_schema: STATE_SCHEMA,
        agent_version: "0.2.0".into(),
        pid: 4242,
        token: "t0ken".into(),
        can_carry: can_carry.to_vec(),
        incarnation: Some("edge-node-1-abc@1700000000000".into()),
        events: true,
        monitors: true,
        verdicts: true,
    }
}

#[test]
fn every_message_round_trips() {
    let session = SessionState {
        peer: "192.0.2.1".parse().unwrap(),
        local: "192.0.2.2:40000".parse().unwrap(),
        remote: "192.0.2.1:179".parse().unwrap(),
        local_open: vec![1, 2, 3],
        peer_open: vec![4, 5],
        keepalive_time: 30,
        hold_remaining_ms: Some(81_234),
        keepalive_remaining_ms: Some(12_345),
        established_since_ms: 1_795_000_000_000,
        established_transitions: 3,
        features: vec![Feature::Ipv4Unicast, Feature::GracefulRestart],
        frozen_at_ns: 1_234_567,
    };
    let messages = [
        Message::Hello(hello(&Feature::ALL)),
        Message::Welcome(Welcome {
            agent_version: "0.1.0".into(),
            pid: 7,
            peers: vec!["192.0.2.1".parse().unwrap()],
        }),
        Message::Abort("the successor cannot carry TcpMd5".into()),
        Message::Listeners,
        Message::Sessions(vec![session.clone(), session]),
        Message::Rib { session: 299, part: RibPart::InStale, updates: vec![9; 100] },
        Message::Rib { session: 0, part: RibPart::Unwritten, updates: vec![0xff; 10] },
        Message::Done { sessions: 300 },
        Message::Commit,
        Message::Retire,
        Message::Copied,
        Message::Ready,
        Message::Events {
            session: 7,
            json: br#"[{"at_ms":1,"kind":"handoff","detail":"x"}]"#.to_vec(),
        },
        Message::Monitors(vec![
            "192.0.2.9:1790".parse().unwrap(),
            "[2001:db8::9]:1790".parse().unwrap(),
        ]),
        Message::Verdicts(vec![
            CarriedVerdict { prefix: "192.0.2.10/32".parse().unwrap(), verdict: Verdict::Up },
            CarriedVerdict {
                prefix: "2001:db8::10/128".parse().unwrap(),
                verdict: Verdict::Draining { until_ms: 4_500 },
            },
            CarriedVerdict { prefix: "192.0.2.11/32".parse().unwrap(), verdict: Verdict::Down },
        ]),
    ];
    for m in messages {
        assert_eq!(Message::decode(&m.encode()), Ok(m.clone()), "{}", m.name());
    }
}

/// A HELLO from an agent before `events` (or `monitors`) asks for none: its
/// predecessor then sends no EVENTS (MONITORS), which that agent could not read. (An older
/// predecessor ignores the field: HELLO does not deny unknown fields.)
#[test]
fn asking_for_events_is_understood_by_older_and_newer_agents() {
    for field in ["events", "monitors", "verdicts"] {
        let mut old = serde_json::to_value(hello(&Feature::ALL)).unwrap();
        old.as_object_mut().unwrap().remove(field);
        let packet = [&[1u8][..], old.to_string().as_bytes()].concat();
        let Ok(Message::Hello(h)) = Message::decode(&packet) else { panic!("not a HELLO") };
        let asked = match field {
            "events" => h.events,
            "monitors" => h.monitors,
            _ => h.verdicts,
        };
        assert!(!asked, "{field}");
        let new = serde_json::to_value(hello(&Feature::ALL)).unwrap();
        assert_eq!(new[field], true, "{field}");
    }
}

#[test]
fn bad_messages_say_what_is_wrong() {
    let cases: &[(&[u8], &str)] = &[
        (&[], "empty packet"),
        (&[42], "message kind 42 is not known"),
        (&[8, 0], "COMMIT carries 1 unexpected bytes"),
        (&[6, 0, 0], "RIB of 2 bytes is shorter than its header"),
        (&[6, 0, 0, 0, 1, 9], "RIB part 9 is not known"),
        (b"\x01{\"protocol\":1}", "HELLO: missing field"),
        (b"\x05[{]", "SESSIONS:"),
        (&[12, 0, 1], "EVENTS of 2 bytes is shorter than its header"),
        (b"\x0e[{\"prefix\":\"192.0.2.10/33\",\"verdict\":{\"verdict\":\"up\"}}]", "VERDICTS:"),
        (
            b"\x0e[{\"prefix\":\"192.0.2.10/32\",\"verdict\":{\"verdict\":\"sideways\"}}]",
            "VERDICTS: unknown variant `sideways`",
        ),
    ];
    for (bytes, needle) in cases {
        let err = Message::decode(bytes).unwrap_err().to_string();
        assert!(err.contains(needle), "{bytes:?}: `{err}` lacks `{needle}`");
    }
}

fn peer(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, n))
}

#[test]
fn the_predecessor_admits_only_a_successor_that_can_carry_every_session() {
    let plain: BTreeSet<Feature> = [Feature::Ipv4Unicast, Feature::FourOctetAs].into();
    let llgr: BTreeSet<Feature> = [Feature::Ipv4Unicast, Feature::LongLivedGracefulRestart].into();
    let sessions = vec![(peer(1), plain.clone()), (peer(2), llgr)];
    let old_schema = Hello { state_schema: STATE_SCHEMA + 1, ..hello(&Feature::ALL) };
    let new_protocol = Hello { protocol: PROTOCOL + 1, ..hello(&Feature::ALL) };
    let wrong_token = Hello { token: "guess".into(), ..hello(&Feature::ALL) };
    let no_llgr: Vec<Feature> =
        Feature::ALL.into_iter().filter(|f| *f != Feature::LongLivedGracefulRestart).collect();
    let cases = [
        ("everything", hello(&Feature::ALL), Ok(())),
        ("a newer state schema", old_schema, Err(Refusal::StateSchema { ours: 1, theirs: 2 })),
        (
            "another protocol",
            new_protocol,
            Err(Refusal::Protocol { ours: PROTOCOL, theirs: PROTOCOL + 1 }),
        ),
        ("a wrong token", wrong_token, Err(Refusal::Token)),
        (
            "no LLGR while a session uses it",
            hello(&no_llgr),
            Err(Refusal::Feature { feature: Feature::LongLivedGracefulRestart, peer: peer(2) }),
        ),
    ];
    for (name, h, expected) in cases {
        assert_eq!(admit(&h, "t0ken", &sessions), expected, "{name}");
    }
    // Without the LLGR session, the same successor is fine.
    assert_eq!(admit(&hello(&no_llgr), "t0ken", &[(peer(1), plain)]), Ok(()));
    let why = Refusal::Feature { feature: Feature::LongLivedGracefulRestart, peer: peer(2) };
    assert_eq!(
        why.to_string(),
        "the successor cannot carry LongLivedGracefulRestart, negotiated with 192.0.2.2"
    );
}

#[test]
fn a_sessions_features_come_from_what_both_sides_negotiated() {
    use crate::session::fixtures::{gr, llgr, negotiated};
    let v4 = Capability::Multiprotocol(AfiSafi::IPV4_UNICAST);
    let v6 = Capability::Multiprotocol(AfiSafi::IPV6_UNICAST);
    // We offer both families, GR with the N-bit, LLGR and route refresh; the
    // peer offers IPv4 only, GR without the N-bit, and LLGR.
    let n = negotiated(
        vec![v4.clone(), v6, Capability::RouteRefresh, gr(true), llgr(60)],
        vec![v4, gr(false), llgr(60)],
    );
    let expected: BTreeSet<Feature> = [
        Feature::Ipv4Unicast,
        Feature::FourOctetAs,
        Feature::GracefulRestart,
        Feature::LongLivedGracefulRestart,
        Feature::TcpMd5,
    ]
    .into();
    assert_eq!(features(&n, true), expected);
}

/// Agents a version apart hand over both ways (an upgrade, then a
/// rollback): a session state without `keepalive_remaining_ms` (an older
/// predecessor) reads as "not said", and one with a field this agent does
/// not know (a newer predecessor) still reads.
#[test]
fn session_states_from_older_and_newer_agents_read() {
    let state = serde_json::json!({
        "peer": "192.0.2.1", "local": "192.0.2.2:40000", "remote": "192.0.2.1:179",
        "local_open": [1], "peer_open": [2], "keepalive_time": 30,
        "hold_remaining_ms": 81234, "established_since_ms": 1, "established_transitions": 1,
        "features": [], "frozen_at_ns": 5,
    });
    let older: SessionState = serde_json::from_value(state.clone()).unwrap();
    assert_eq!(older.keepalive_remaining_ms, None);
    let mut newer = state;
    newer["keepalive_remaining_ms"] = 900.into();
    newer["a_field_from_the_future"] = true.into();
    let newer: SessionState = serde_json::from_value(newer).unwrap();
    assert_eq!(newer.keepalive_remaining_ms, Some(900));
}
