//! The session machine, one RFC rule per case.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::*;
use crate::wire::{Capability, Open, RouteRefresh, open::capability_code, subcode};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const PEER_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn offer(hold: u16, keepalive: Option<u16>) -> LocalOffer {
    LocalOffer {
        asn: 65001,
        router_id: LOCAL_ID,
        hold_time: hold,
        keepalive_time: keepalive,
        peer_asn: 65000,
        capabilities: vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65001),
        ],
    }
}

fn peer_open(hold: u16) -> Open {
    Open::new(
        65000,
        hold,
        PEER_ID,
        vec![
            Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAs(65000),
        ],
    )
}

fn session(passive: bool) -> Session {
    Session::new(SessionConfig {
        offer: offer(90, None),
        connect_retry: Duration::from_secs(5),
        passive,
    })
}

fn feed(s: &mut Session, input: Input) -> Vec<Output> {
    s.handle(input, Instant::now())
}

fn received(m: Message) -> Input {
    Input::Received(m, vec![])
}

/// A session brought to Established the usual way.
fn established() -> Session {
    let mut s = session(false);
    feed(&mut s, Input::Start);
    feed(&mut s, Input::TcpConnected);
    feed(&mut s, received(Message::Open(peer_open(90))));
    feed(&mut s, received(Message::Keepalive));
    assert_eq!(s.state(), State::Established);
    s
}

fn sent_notification(out: &[Output]) -> Option<(u8, u8)> {
    out.iter().find_map(|o| match o {
        Output::Send(Message::Notification(n)) => Some((n.code, n.subcode)),
        _ => None,
    })
}

/// RFC 4271 §4.2 and §10, as the issue states them: hold = min(ours, theirs);
/// keepalive = min(configured or our hold / 3, negotiated hold / 3); 0 = none.
#[test]
fn hold_and_keepalive_are_negotiated() {
    // (local hold, local keepalive, peer hold) → (hold, keepalive)
    let cases = [
        ((30, None, 90), (30, 10)),
        ((90, None, 30), (30, 10)),
        ((30, Some(5), 90), (30, 5)),
        ((90, Some(60), 90), (90, 30)),
        ((90, None, 0), (0, 0)),
        ((0, None, 90), (0, 0)),
        ((3, None, 3), (3, 1)),
        ((9, None, 4), (4, 1)),
        ((65535, None, 65535), (65535, 21845)),
    ];
    for ((local_hold, local_keepalive, peer_hold), expected) in cases {
        let n = negotiate(&offer(local_hold, local_keepalive), &peer_open(peer_hold)).unwrap();
        assert_eq!(
            (n.hold_time, n.keepalive_time),
            expected,
            "local {local_hold}/{local_keepalive:?}, peer {peer_hold}"
        );
    }
}

#[test]
fn unacceptable_opens_are_refused_with_the_right_notification() {
    let mut bad_as = peer_open(90);
    bad_as.capabilities.retain(|c| c.code() != capability_code::FOUR_OCTET_AS);
    bad_as.my_as = 65099;
    let mut zero_id = peer_open(90);
    zero_id.router_id = Ipv4Addr::UNSPECIFIED;
    let mut ibgp_same_id = Open::new(65001, 90, LOCAL_ID, vec![]);
    ibgp_same_id.capabilities.push(Capability::FourOctetAs(65001));
    let mut ibgp_offer = offer(90, None);
    ibgp_offer.peer_asn = 65001;
    let cases = [
        ("wrong AS", offer(90, None), bad_as, subcode::BAD_PEER_AS),
        ("hold time 1", offer(90, None), peer_open(1), subcode::UNACCEPTABLE_HOLD_TIME),
        ("hold time 2", offer(90, None), peer_open(2), subcode::UNACCEPTABLE_HOLD_TIME),
        ("identifier 0.0.0.0", offer(90, None), zero_id, subcode::BAD_BGP_IDENTIFIER),
        ("iBGP with our identifier", ibgp_offer, ibgp_same_id, subcode::BAD_BGP_IDENTIFIER),
    ];
    for (name, local, open, expected) in cases {
        let (n, why) = negotiate(&local, &open).expect_err(name);
        assert_eq!((n.code, n.subcode), (2, expected), "{name}: {why}");
    }
}

#[test]
fn capabilities_are_what_both_sides_offered() {
    let n = negotiate(&offer(90, None), &peer_open(90)).unwrap();
    assert_eq!(n.families, [AfiSafi::IPV4_UNICAST]);
    assert!(n.wire.four_octet_as && n.route_refresh && !n.enhanced_route_refresh);
    assert!(!n.wire.extended_messages && n.wire.ebgp);
    // No multiprotocol capability at all means IPv4 unicast (RFC 4760 §8).
    let n = negotiate(&offer(90, None), &Open::new(65000, 90, PEER_ID, vec![])).unwrap();
    assert_eq!(n.families, [AfiSafi::IPV4_UNICAST]);
    assert!(!n.wire.four_octet_as);
}

#[test]
fn an_active_session_dials_and_comes_up() {
    let mut s = session(false);
    let out = feed(&mut s, Input::Start);
    assert_eq!(
        out,
        [Output::Connect, Output::ArmTimer(Timer::ConnectRetry, Duration::from_secs(5))]
    );
    assert_eq!(s.state(), State::Connect);

    let out = feed(&mut s, Input::TcpConnected);
    assert_eq!(out[0], Output::CancelTimer(Timer::ConnectRetry));
    assert!(
        matches!(&out[1], Output::Send(Message::Open(o)) if o.hold_time == 90 && o.asn() == 65001)
    );
    assert_eq!(out[2], Output::ArmTimer(Timer::Hold, LARGE_HOLD_TIME));
    assert_eq!(s.state(), State::OpenSent);

    let out = feed(&mut s, received(Message::Open(peer_open(30))));
    assert_eq!(
        out,
        [
            Output::Send(Message::Keepalive),
            Output::ArmTimer(Timer::Hold, Duration::from_secs(30)),
            Output::ArmTimer(Timer::Keepalive, Duration::from_secs(10)),
        ]
    );
    assert_eq!(s.state(), State::OpenConfirm);
    assert!(s.wire_context().four_octet_as);

    let out = feed(&mut s, received(Message::Keepalive));
    assert!(matches!(&out[1], Output::Established(n) if n.hold_time == 30));
    assert_eq!(s.state(), State::Established);
    assert_eq!(s.established_transitions(), 1);
}

#[test]
fn a_passive_session_never_dials() {
    let mut s = session(true);
    let out = feed(&mut s, Input::Start);
    assert_eq!(out, [Output::ArmTimer(Timer::ConnectRetry, Duration::from_secs(5))]);
    assert_eq!(s.state(), State::Active);
    let out = feed(&mut s, Input::TimerFired(Timer::ConnectRetry));
    assert!(!out.contains(&Output::Connect));
    let out = feed(&mut s, Input::TcpConnected);
    assert!(matches!(out[1], Output::Send(Message::Open(_))));
}

#[test]
fn a_failed_dial_waits_in_active_then_dials_again() {
    let mut s = session(false);
    feed(&mut s, Input::Start);
    let out = feed(&mut s, Input::TcpFailed);
    assert_eq!(out, [Output::ArmTimer(Timer::ConnectRetry, Duration::from_secs(5))]);
    assert_eq!(s.state(), State::Active);
    let out = feed(&mut s, Input::TimerFired(Timer::ConnectRetry));
    assert_eq!(out[0], Output::Connect);
    assert_eq!(s.state(), State::Connect);
}

#[test]
fn hold_timer_expiry_sends_its_notification_and_restarts_later() {
    let mut s = established();
    let out = feed(&mut s, Input::TimerFired(Timer::Hold));
    assert_eq!(sent_notification(&out), Some((4, 0)));
    assert!(
        matches!(out.iter().find(|o| matches!(o, Output::Down { .. })), Some(Output::Down { reason, .. }) if *reason == DownReason::HoldTimerExpired)
    );
    assert_eq!(out.last(), Some(&Output::ArmTimer(Timer::ConnectRetry, Duration::from_secs(5))));
    assert_eq!(s.state(), State::Idle);
    let out = feed(&mut s, Input::TimerFired(Timer::ConnectRetry));
    assert_eq!(out[0], Output::Connect);
}

/// RFC 6608 subcodes: which state the unexpected message came in.
#[test]
fn unexpected_messages_are_fsm_errors() {
    let update = Message::Update(Update::default());
    let cases = [
        ("UPDATE in OpenSent", 1, update.clone(), (5, 1)),
        ("KEEPALIVE in OpenSent", 1, Message::Keepalive, (5, 1)),
        ("UPDATE in OpenConfirm", 2, update, (5, 2)),
        ("OPEN in OpenConfirm", 2, Message::Open(peer_open(90)), (5, 2)),
        ("OPEN in Established", 3, Message::Open(peer_open(90)), (5, 3)),
    ];
    for (name, steps, message, expected) in cases {
        let mut s = session(false);
        feed(&mut s, Input::Start);
        feed(&mut s, Input::TcpConnected);
        if steps >= 2 {
            feed(&mut s, received(Message::Open(peer_open(90))));
        }
        if steps >= 3 {
            feed(&mut s, received(Message::Keepalive));
        }
        let out = feed(&mut s, received(message));
        assert_eq!(sent_notification(&out), Some(expected), "{name}");
        assert_eq!(s.state(), State::Idle, "{name}");
    }
}

#[test]
fn a_notification_from_the_peer_ends_the_session_without_answering() {
    let mut s = established();
    let cease = Notification::cease_with_message(2, "maintenance");
    let out = feed(&mut s, received(Message::Notification(cease.clone())));
    assert_eq!(sent_notification(&out), None);
    assert!(out.iter().any(|o| matches!(o, Output::Down { received: Some(n), .. } if *n == cease)));
}

#[test]
fn stop_sends_the_given_cease_and_does_not_restart() {
    let mut s = established();
    let cease = Notification::cease_with_message(2, "bye");
    let out = feed(&mut s, Input::Stop(cease));
    assert_eq!(sent_notification(&out), Some((6, 2)));
    assert!(!out.iter().any(|o| matches!(o, Output::ArmTimer(Timer::ConnectRetry, _))));
    assert!(feed(&mut s, Input::TimerFired(Timer::ConnectRetry)).is_empty());
}

#[test]
fn updates_and_keepalives_keep_the_session_alive() {
    let mut s = established();
    let out = feed(&mut s, received(Message::Update(Update::default())));
    assert_eq!(out[0], Output::ArmTimer(Timer::Hold, Duration::from_secs(90)));
    assert!(matches!(out[1], Output::Update(..)));
    let out = feed(&mut s, received(Message::Keepalive));
    assert_eq!(out, [Output::ArmTimer(Timer::Hold, Duration::from_secs(90))]);
    let out = feed(&mut s, Input::TimerFired(Timer::Keepalive));
    assert_eq!(
        out,
        [
            Output::Send(Message::Keepalive),
            Output::ArmTimer(Timer::Keepalive, Duration::from_secs(30))
        ]
    );
}

#[test]
fn hold_time_zero_means_no_timers() {
    let mut s = Session::new(SessionConfig {
        offer: offer(0, None),
        connect_retry: Duration::from_secs(5),
        passive: false,
    });
    feed(&mut s, Input::Start);
    feed(&mut s, Input::TcpConnected);
    let out = feed(&mut s, received(Message::Open(peer_open(90))));
    assert_eq!(out, [Output::Send(Message::Keepalive), Output::CancelTimer(Timer::Hold)]);
    let out = feed(&mut s, received(Message::Keepalive));
    assert!(!out.iter().any(|o| matches!(o, Output::ArmTimer(..))), "{out:?}");
}

#[test]
fn route_refresh_requests_reach_the_rib_and_markers_do_not() {
    let mut s = established();
    let out =
        feed(&mut s, received(Message::RouteRefresh(RouteRefresh::request(AfiSafi::IPV4_UNICAST))));
    assert!(out.contains(&Output::RefreshRequested(AfiSafi::IPV4_UNICAST)));
    let begin = RouteRefresh { family: AfiSafi::IPV4_UNICAST, subtype: RefreshSubtype::Begin };
    let out = feed(&mut s, received(Message::RouteRefresh(begin)));
    assert!(!out.iter().any(|o| matches!(o, Output::RefreshRequested(_))));
}

#[test]
fn undecodable_input_gets_the_decoders_notification() {
    let mut s = established();
    let err = crate::wire::Message::decode(&[0u8; 19], &WireContext::BEFORE_OPEN).unwrap_err();
    let out = feed(&mut s, Input::Undecodable(err));
    assert_eq!(sent_notification(&out), Some((1, 1)));
}

/// RFC 4271 §6.8: the connection dialled by the higher BGP identifier wins,
/// comparing identifiers as unsigned integers.
#[test]
fn collisions_keep_the_connection_of_the_higher_identifier() {
    let id = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let cases = [
        ("10.0.0.1", "10.0.0.2", Collision::KeepInbound),
        ("10.0.0.2", "10.0.0.1", Collision::KeepOutbound),
        ("10.0.0.1", "9.255.255.255", Collision::KeepOutbound),
        ("128.0.0.1", "127.255.255.255", Collision::KeepOutbound),
        ("1.1.1.1", "255.0.0.0", Collision::KeepInbound),
    ];
    for (local, remote, expected) in cases {
        assert_eq!(resolve_collision(id(local), id(remote)), expected, "{local} vs {remote}");
    }
}
