//! The peer core, situation by situation, driven with events and read by
//! its effects: the bytes it asks to send (decoded back into messages),
//! the connections it closes, and its status. No socket, no clock.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::config::Config;
use crate::route::{Community, Prefix};
use crate::session::State;
use crate::speaker::status::{Metrics, PeerStatus};
use crate::wire::{
    AfiSafi, AsPath, Capability, GrFamily, GracefulRestartCap, HEADER_LEN, LlgrFamily, Message,
    Notification, Open, Origin, PathAttrs, UpdateBuilder, WireContext, code, frame, subcode,
};

const LOCAL_ID: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const OURS: [&str; 2] = ["198.51.100.0/24", "203.0.113.0/24"];
const THEIRS: [&str; 2] = ["10.1.0.0/16", "10.2.0.0/16"];
/// How both sides encode once the OPENs are exchanged.
const WIRE: WireContext = WireContext { four_octet_as: true, extended_messages: true, ebgp: true };

/// A core for peer 192.0.2.1 (AS 65000) with `peer_extra` added to its
/// config, announcing `OURS`.
fn core(peer_extra: &str, now: Instant) -> PeerCore {
    let text = format!(
        "asn: 65001\nrouterId: {LOCAL_ID}\npeers:\n  - address: 192.0.2.1\n    asn: 65000\n    \
         holdTime: 9\n    connectRetryTime: 2\n{peer_extra}announce:\n  - prefix: {}\n    \
         nextHop: 192.0.2.2\n  - prefix: {}\n    nextHop: 192.0.2.2\n",
        OURS[0], OURS[1]
    );
    let config = Config::parse(&text, Path::new("core_tests.yaml")).unwrap();
    let local = Local { asn: 65001, router_id: LOCAL_ID };
    let announce = Arc::new(config.announce.clone());
    let options = PeerOptions::default();
    PeerCore::new(config.peers[0].clone(), local, announce, Metrics::default(), &options, now)
}

fn conn(id: u64) -> ConnInfo {
    ConnInfo {
        id: ConnId(id),
        local: SocketAddr::from(([192, 0, 2, 2], 40000 + id as u16)),
        remote: SocketAddr::from(([192, 0, 2, 1], 179)),
    }
}

fn peer_open(id: Ipv4Addr, extra: &[Capability]) -> Message {
    let mut caps = vec![
        Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
        Capability::ExtendedMessage,
        Capability::FourOctetAs(65000),
    ];
    caps.extend_from_slice(extra);
    Message::Open(Open::new(65000, 9, id, caps))
}

/// The peer's Graceful Restart (restart time 5 s, `notification`: the
/// N-bit) and, with `llgr`, Long-Lived GR for that many seconds.
fn peer_gr(notification: bool, llgr: Option<u32>) -> Vec<Capability> {
    let family = AfiSafi::IPV4_UNICAST;
    let mut caps = vec![Capability::GracefulRestart(GracefulRestartCap {
        restarting: false,
        notification,
        restart_time: 5,
        families: vec![GrFamily { family, forwarding: true }],
    })];
    if let Some(stale_time) = llgr {
        caps.push(Capability::LongLivedGracefulRestart(vec![LlgrFamily {
            family,
            forwarding: true,
            stale_time,
        }]));
    }
    caps
}

/// The peer's UPDATE announcing `prefixes`.
fn peer_routes(prefixes: &[&str]) -> Vec<u8> {
    let attrs = PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence([65000])),
        next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
        ..Default::default()
    };
    let prefixes: Vec<Prefix> = prefixes.iter().map(|p| p.parse().unwrap()).collect();
    let mut out = Vec::new();
    UpdateBuilder::new(WIRE).announce(&attrs, "192.0.2.1".parse().unwrap(), &prefixes, &mut out);
    out
}

fn bytes(messages: &[Message]) -> Vec<u8> {
    messages.iter().flat_map(|m| m.to_bytes(&WIRE)).collect()
}

/// Decodes a stream of whole messages.
fn decode(mut buf: &[u8]) -> Vec<Message> {
    let mut out = Vec::new();
    while let Some(h) = frame(buf, &WIRE).unwrap() {
        let (m, malformed) = Message::decode_framed(h, &buf[HEADER_LEN..h.len], &WIRE).unwrap();
        assert!(malformed.is_empty(), "{malformed:?}");
        out.push(m);
        buf = &buf[h.len..];
    }
    assert!(buf.is_empty(), "a partial message was sent");
    out
}

/// A core and what it asked for so far.
struct Run {
    core: PeerCore,
    now: Instant,
    wire: HashMap<ConnId, Vec<u8>>,
    closed: Vec<ConnId>,
    released: Vec<ConnId>,
    dials: usize,
    /// What the core published for BMP collectors.
    monitored: Vec<crate::bmp::Monitored>,
}

impl Run {
    fn new(peer_extra: &str) -> Run {
        let now = Instant::now();
        let core = core(peer_extra, now);
        Run {
            core,
            now,
            wire: HashMap::new(),
            closed: vec![],
            released: vec![],
            dials: 0,
            monitored: vec![],
        }
    }

    fn handle(&mut self, event: PeerEvent) -> Vec<PeerEffect> {
        let effects = self.core.handle(event, self.now);
        self.note(&effects);
        effects
    }

    fn note(&mut self, effects: &[PeerEffect]) {
        for effect in effects {
            match effect {
                PeerEffect::Dial => self.dials += 1,
                PeerEffect::CancelDial => {}
                PeerEffect::Send { conn, bytes } => {
                    assert!(!self.closed.contains(conn), "sent on {conn:?} after closing it");
                    self.wire.entry(*conn).or_default().extend_from_slice(bytes);
                }
                PeerEffect::Close { conn, .. } | PeerEffect::Abort { conn } => {
                    self.closed.push(*conn)
                }
                PeerEffect::Release { conn } => self.released.push(*conn),
                PeerEffect::Monitor(m) => self.monitored.push(m.clone()),
            }
        }
    }

    /// The peer sends these bytes on `conn`; all of them are taken.
    fn peer_sends(&mut self, conn: ConnId, bytes: &[u8]) {
        let (taken, effects) = self.core.receive(conn, bytes, self.now);
        assert_eq!(taken, bytes.len(), "whole messages are taken whole");
        self.note(&effects);
    }

    /// What went out on `conn` since the last look.
    fn sent(&mut self, conn: ConnId) -> Vec<Message> {
        decode(&self.wire.remove(&conn).unwrap_or_default())
    }

    fn later(&mut self, by: Duration) {
        self.now += by;
        self.handle(PeerEvent::Tick);
    }

    fn status(&self) -> PeerStatus {
        self.core.status(self.now, SystemTime::now())
    }

    /// Dialled, OPENs and KEEPALIVEs exchanged on connection 1.
    fn established(peer_extra: &str, theirs: &[Capability]) -> Run {
        let mut run = Run::new(peer_extra);
        assert_eq!(run.handle(PeerEvent::Start), [PeerEffect::Dial]);
        run.handle(PeerEvent::Dialled(Ok(conn(1))));
        let open = peer_open(Ipv4Addr::new(10, 0, 0, 2), theirs);
        run.peer_sends(ConnId(1), &bytes(&[open, Message::Keepalive]));
        assert_eq!(run.core.state(), State::Established);
        run
    }
}

fn kinds(messages: &[Message]) -> Vec<&'static str> {
    messages
        .iter()
        .map(|m| match m {
            Message::Open(_) => "OPEN",
            Message::Keepalive => "KEEPALIVE",
            Message::Update(u) if u.as_end_of_rib().is_some() => "End-of-RIB",
            Message::Update(_) => "UPDATE",
            Message::Notification(_) => "NOTIFICATION",
            Message::RouteRefresh(_) => "ROUTE-REFRESH",
        })
        .collect()
}

fn announced(messages: &[Message]) -> Vec<String> {
    let mut all: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u.announced().map(|p| p.to_string()).collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    all.sort();
    all
}

fn notification(messages: &[Message]) -> Option<(u8, u8)> {
    messages.iter().find_map(|m| match m {
        Message::Notification(n) => Some((n.code, n.subcode)),
        _ => None,
    })
}

#[test]
fn a_session_comes_up_and_gets_every_route_then_end_of_rib() {
    let mut run = Run::established("", &[]);
    let sent = run.sent(ConnId(1));
    assert_eq!(kinds(&sent), ["OPEN", "KEEPALIVE", "UPDATE", "End-of-RIB"]);
    assert_eq!(announced(&sent), OURS);
    let status = run.status();
    assert_eq!((status.routes_advertised, status.messages_sent), (2, 4));
    assert_eq!(status.local_address.as_deref(), Some("192.0.2.2"));
    assert!(run.closed.is_empty() && run.dials == 1);
}

#[test]
fn a_collision_keeps_the_connection_of_the_higher_identifier() {
    // (the peer's identifier, which connection survives)
    let cases = [(Ipv4Addr::new(10, 0, 0, 2), "theirs"), (Ipv4Addr::new(9, 9, 9, 9), "ours")];
    for (peer_id, survivor) in cases {
        let mut run = Run::new("");
        run.handle(PeerEvent::Start);
        run.handle(PeerEvent::Dialled(Ok(conn(1))));
        run.handle(PeerEvent::Accepted(conn(2)));
        assert_eq!(kinds(&run.sent(ConnId(2))), ["OPEN"], "{peer_id}: the inbound one opens too");
        // Its OPEN on the peer's connection tells its identifier: §6.8 decides.
        run.peer_sends(ConnId(2), &bytes(&[peer_open(peer_id, &[])]));
        let (winner, loser) = match survivor {
            "theirs" => (ConnId(2), ConnId(1)),
            _ => (ConnId(1), ConnId(2)),
        };
        assert_eq!(run.closed, [loser], "{peer_id}");
        let cease = (code::CEASE, subcode::CONNECTION_COLLISION_RESOLUTION);
        assert_eq!(notification(&run.sent(loser)), Some(cease), "{peer_id}");
        // The survivor comes up and carries the routes.
        let rest = match survivor {
            "theirs" => vec![Message::Keepalive],
            _ => vec![peer_open(peer_id, &[]), Message::Keepalive],
        };
        run.peer_sends(winner, &bytes(&rest));
        assert_eq!(run.core.state(), State::Established, "{peer_id}");
        assert_eq!(announced(&run.sent(winner)), OURS, "{peer_id}");
    }
}

#[test]
fn a_connection_while_established_is_refused_and_the_session_stays() {
    let mut run = Run::established("", &[]);
    run.handle(PeerEvent::Accepted(conn(2)));
    let cease = (code::CEASE, subcode::CONNECTION_COLLISION_RESOLUTION);
    assert_eq!(notification(&run.sent(ConnId(2))), Some(cease));
    assert_eq!(run.closed, [ConnId(2)]);
    assert_eq!(run.core.state(), State::Established);
}

#[test]
fn a_dial_that_lost_to_the_peers_connection_is_closed() {
    let mut run = Run::new("");
    run.handle(PeerEvent::Start);
    let effects = run.handle(PeerEvent::Accepted(conn(2)));
    assert_eq!(effects.first(), Some(&PeerEffect::CancelDial), "{effects:?}");
    run.handle(PeerEvent::Dialled(Ok(conn(3))));
    assert_eq!(run.closed, [ConnId(3)]);
    assert_eq!(kinds(&run.sent(ConnId(2))), ["OPEN"]);
}

/// A connection the peer closed (a router refusing it while Idle) or
/// that failed is reset, not closed with a FIN that nobody answers; one we
/// end with a NOTIFICATION gets its FIN after it.
#[test]
fn a_connection_the_peer_closed_is_reset_and_ours_closed_after_our_word() {
    let mut run = Run::new("");
    run.handle(PeerEvent::Start);
    run.handle(PeerEvent::Dialled(Ok(conn(1))));
    assert_eq!(kinds(&run.sent(ConnId(1))), ["OPEN"]);
    let effects = run.handle(PeerEvent::Closed { conn: ConnId(1), error: None });
    assert!(effects.contains(&PeerEffect::Abort { conn: ConnId(1) }), "{effects:?}");

    let mut run = Run::established("", &[]);
    let cease = Notification::new(code::CEASE, subcode::ADMINISTRATIVE_SHUTDOWN, []);
    let effects = run.handle(PeerEvent::Stop(cease));
    let closed = effects.iter().find_map(|e| match e {
        PeerEffect::Close { conn, linger } => Some((*conn, *linger)),
        _ => None,
    });
    assert_eq!(closed, Some((ConnId(1), Duration::from_secs(2))), "{effects:?}");
    assert!(!effects.iter().any(|e| matches!(e, PeerEffect::Abort { .. })), "{effects:?}");
}

#[test]
fn a_dial_with_no_answer_is_reported_and_tried_again() {
    let mut run = Run::new("");
    run.handle(PeerEvent::Start);
    run.later(Duration::from_secs(2));
    assert_eq!(run.dials, 2, "connect-retry dials again");
    let error = run.status().last_error.unwrap_or_default();
    assert!(error.contains("connecting to 192.0.2.1: no answer"), "{error}");
}

/// How a session ends, for the helper's table.
#[derive(Debug, Clone, Copy)]
enum Down {
    /// The TCP connection drops without a NOTIFICATION (a crash).
    Dropped,
    /// The peer sends Cease / Administrative Shutdown.
    Ceased,
}

#[test]
fn graceful_restart_helper_keeps_the_peers_routes_as_the_rfcs_say() {
    let ours_gr = "    gracefulRestart: { enabled: true, restartTime: 5, notification: true, \
                   longLivedStaleTime: 60 }\n";
    // (case, the peer's capabilities, how it goes down, routes kept stale
    // right after, still kept after the 5 s restart time, after 60 s more)
    let cases = [
        ("no GR: dropped at once", vec![], Down::Dropped, 0, 0, 0),
        ("GR: kept for the restart time", peer_gr(false, None), Down::Dropped, 2, 0, 0),
        ("GR + LLGR: kept long-lived", peer_gr(false, Some(60)), Down::Dropped, 2, 2, 0),
        ("GR, a Cease without the N-bit", peer_gr(false, None), Down::Ceased, 0, 0, 0),
        ("GR with the N-bit: a Cease too (RFC 8538)", peer_gr(true, None), Down::Ceased, 2, 0, 0),
    ];
    for (case, theirs, down, right_after, after_restart, after_llgr) in cases {
        let mut run = Run::established(ours_gr, &theirs);
        run.peer_sends(ConnId(1), &peer_routes(&THEIRS));
        assert_eq!(run.status().routes_received, 2, "{case}");
        match down {
            Down::Dropped => {
                run.handle(PeerEvent::Closed { conn: ConnId(1), error: None });
            }
            Down::Ceased => {
                let cease = Notification::new(code::CEASE, subcode::ADMINISTRATIVE_SHUTDOWN, []);
                run.peer_sends(ConnId(1), &bytes(&[Message::Notification(cease)]));
            }
        }
        assert_eq!(run.closed, [ConnId(1)], "{case}");
        let kept = |run: &Run| {
            let s = run.status();
            assert_eq!(s.routes_received, s.routes_stale, "{case}: kept routes are stale");
            s.routes_received
        };
        assert_eq!(kept(&run), right_after, "{case}: right after");
        run.later(Duration::from_secs(5));
        assert_eq!(kept(&run), after_restart, "{case}: after the restart time");
        run.later(Duration::from_secs(60));
        assert_eq!(kept(&run), after_llgr, "{case}: after the long-lived stale time");
    }
}

#[test]
fn end_of_rib_after_a_restart_drops_what_the_peer_did_not_send_again() {
    let mut run = Run::established("", &peer_gr(false, None));
    run.peer_sends(ConnId(1), &peer_routes(&THEIRS));
    run.handle(PeerEvent::Closed { conn: ConnId(1), error: None });
    assert_eq!(run.status().routes_stale, 2);
    // The peer is back within its restart time and sends one route again.
    run.later(Duration::from_secs(2));
    assert!(run.dials >= 2, "we dial it again");
    run.handle(PeerEvent::Dialled(Ok(conn(2))));
    let open = peer_open(Ipv4Addr::new(10, 0, 0, 2), &peer_gr(false, None));
    run.peer_sends(ConnId(2), &bytes(&[open, Message::Keepalive]));
    run.peer_sends(ConnId(2), &peer_routes(&THEIRS[..1]));
    assert_eq!((run.status().routes_received, run.status().routes_stale), (2, 1));
    let eor = Message::Update(crate::wire::Update::end_of_rib(AfiSafi::IPV4_UNICAST));
    run.peer_sends(ConnId(2), &bytes(&[eor]));
    assert_eq!((run.status().routes_received, run.status().routes_stale), (1, 0));
}

#[test]
fn a_decommission_drains_with_graceful_shutdown_then_says_goodbye() {
    let mut run = Run::established("", &[]);
    run.sent(ConnId(1));
    let drain = Duration::from_secs(2);
    run.handle(PeerEvent::Decommission { drain, message: "node drained".into() });
    let sent = run.sent(ConnId(1));
    assert_eq!(announced(&sent), OURS, "everything again");
    for m in &sent {
        if let Message::Update(u) = m {
            assert!(u.attrs.communities.contains(&Community::GRACEFUL_SHUTDOWN), "{u:?}");
        }
    }
    run.later(Duration::from_secs(1));
    assert!(run.sent(ConnId(1)).is_empty() && run.closed.is_empty(), "still draining");
    run.later(Duration::from_secs(1));
    let sent = run.sent(ConnId(1));
    assert_eq!(notification(&sent), Some((code::CEASE, subcode::ADMINISTRATIVE_SHUTDOWN)));
    assert_eq!(run.closed, [ConnId(1)]);
    assert!(run.core.stopped());

    // Not Established: nothing to drain, it stops at once.
    let mut run = Run::new("");
    run.handle(PeerEvent::Start);
    run.handle(PeerEvent::Decommission { drain, message: "bye".into() });
    assert!(run.core.stopped());
}

#[test]
fn a_retired_session_is_released_without_a_word() {
    for passed in [true, false] {
        let mut run = Run::established("", &[]);
        run.sent(ConnId(1));
        run.handle(PeerEvent::Retire { passed });
        assert!(run.sent(ConnId(1)).is_empty(), "passed {passed}: no NOTIFICATION");
        let (released, closed) =
            if passed { (vec![ConnId(1)], vec![]) } else { (vec![], vec![ConnId(1)]) };
        assert_eq!((run.released.clone(), run.closed.clone()), (released, closed));
        assert!(run.core.stopped());
    }
}

#[test]
fn a_message_split_across_reads_waits_for_its_end() {
    let mut run = Run::established("", &[]);
    let update = peer_routes(&THEIRS);
    let (taken, _) = run.core.receive(ConnId(1), &update[..10], run.now);
    assert_eq!(taken, 0);
    let (taken, _) = run.core.receive(ConnId(1), &update, run.now);
    assert_eq!((taken, run.status().routes_received), (update.len(), 2));
}

/// What BMP collectors are told, as the core publishes it: nothing unless
/// the agent exports BMP; then Peer Up with both OPENs, every UPDATE each
/// way, a replay of both tables on demand, and Peer Down with the
/// NOTIFICATION that ended the session.
#[test]
fn a_monitored_session_tells_the_collectors_everything() {
    use crate::bmp::{Monitored, PeerDown};
    let mut quiet = Run::established("", &[]);
    quiet.peer_sends(ConnId(1), &peer_routes(&THEIRS));
    assert!(quiet.monitored.is_empty(), "published without BMP: {:?}", quiet.monitored);

    let mut run = Run::new("");
    run.core.monitored = true;
    run.handle(PeerEvent::Start);
    run.handle(PeerEvent::Dialled(Ok(conn(1))));
    let open = peer_open(Ipv4Addr::new(10, 0, 0, 2), &[]);
    run.peer_sends(ConnId(1), &bytes(std::slice::from_ref(&open)));
    assert_eq!(run.core.state(), State::OpenConfirm);
    assert!(run.core.replay().is_empty(), "OpenConfirm is not up: no replay");
    assert!(run.monitored.is_empty(), "{:?}", run.monitored);
    run.peer_sends(ConnId(1), &bytes(&[Message::Keepalive]));
    let [Monitored::Up(up), Monitored::Sent(table)] = &run.monitored[..] else {
        panic!("not Peer Up then our table: {:?}", run.monitored);
    };
    assert_eq!((up.peer_asn, up.peer_id, up.adopted), (65000, Ipv4Addr::new(10, 0, 0, 2), false));
    assert_eq!((up.local, up.remote), (conn(1).local, conn(1).remote));
    assert_eq!(decode(&up.received_open), [open]);
    assert_eq!(kinds(&decode(&up.sent_open)), ["OPEN"]);
    assert_eq!(kinds(&decode(table)), ["UPDATE", "End-of-RIB"]);
    assert_eq!(announced(&decode(table)), OURS);

    run.monitored.clear();
    run.peer_sends(ConnId(1), &peer_routes(&THEIRS));
    let [Monitored::Received(update)] = &run.monitored[..] else {
        panic!("not the peer's UPDATE: {:?}", run.monitored);
    };
    assert_eq!(announced(&decode(update)), THEIRS);

    let replay = run.core.replay();
    let [Monitored::Up(_), Monitored::Received(rib_in), Monitored::Sent(rib_out)] = &replay[..]
    else {
        panic!("not a replay of both tables: {replay:?}");
    };
    assert_eq!(
        (announced(&decode(rib_in)), announced(&decode(rib_out))),
        (THEIRS.map(String::from).to_vec(), OURS.map(String::from).to_vec())
    );

    run.monitored.clear();
    let cease = Notification::new(code::CEASE, subcode::ADMINISTRATIVE_RESET, vec![]);
    run.peer_sends(ConnId(1), &bytes(&[Message::Notification(cease)]));
    let [Monitored::Down(PeerDown::RemoteNotification(pdu))] = &run.monitored[..] else {
        panic!("not Peer Down with the peer's NOTIFICATION: {:?}", run.monitored);
    };
    assert_eq!(notification(&decode(pdu)), Some((code::CEASE, subcode::ADMINISTRATIVE_RESET)));
    assert!(run.core.replay().is_empty(), "a session that is down replays nothing");
}
