use super::*;
use crate::session::State;
use crate::speaker::status::{AgentRef, PeerEvents, SessionEvent, SessionEventKind};

fn agent(peers: Vec<PeerStatus>) -> AgentStatus {
    AgentStatus {
        version: "0.1.0".into(),
        pid: 42,
        pod: Some("edge-abc12".into()),
        asn: 65001,
        router_id: "10.0.0.1".into(),
        listen: "0.0.0.0:179".into(),
        uptime_seconds: 3_723,
        routes_announced: 3,
        role: Role::Active,
        successor: None,
        last_handoff: None,
        peers,
        bmp: vec![],
        checks: vec![],
        published: None,
        peers_not_run: vec![],
    }
}

fn peer(address: &str, state: State, transitions: u64) -> PeerStatus {
    PeerStatus {
        address: address.into(),
        asn: 65000,
        state,
        uptime_seconds: if state == State::Established { 90_061 } else { 0 },
        established_transitions: transitions,
        routes_received: 1000,
        routes_stale: 10,
        routes_refused: 2,
        routes_advertised: 3,
        ..Default::default()
    }
}

#[test]
fn durations_read_like_gobgp() {
    for (seconds, shown) in [
        (0, "00:00:00"),
        (59, "00:00:59"),
        (3_723, "01:02:03"),
        (86_399, "23:59:59"),
        (90_061, "1d 01:01:01"),
        (864_000, "10d 00:00:00"),
    ] {
        assert_eq!(duration(seconds), shown, "{seconds} s");
    }
}

#[test]
fn peers_are_one_aligned_row_each_with_counts_and_last_error() {
    let mut down = peer("2001:db8::1", State::Active, 1);
    down.last_error = Some("hold timer expired".into());
    let text = peers(&agent(vec![
        peer("10.0.0.2", State::Established, 1),
        down,
        peer("10.0.0.3", State::Connect, 0),
    ]));
    let expected = "\
nonstop-agent 0.1.0 pid 42, pod edge-abc12: AS 65001, router ID 10.0.0.1, active, up 01:02:03, 3 prefix(es) announced
PEER         AS     STATE        UP/DOWN      ACCEPTED  STALE  REFUSED  ADVERTISED  LAST ERROR
10.0.0.2     65000  Established  1d 01:01:01  1000      10     2        3           -
2001:db8::1  65000  Active       down         1000      10     2        3           hold timer expired
10.0.0.3     65000  Connect      never        1000      10     2        3           -
";
    assert_eq!(text, expected);
}

#[test]
fn no_peers_is_the_header_alone() {
    let text = peers(&agent(vec![]));
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().nth(1).unwrap().starts_with("PEER"));
}

/// A peer the node does not run (no address here) is said under the table.
#[test]
fn peers_not_run_here_are_said_with_why() {
    let mut status = agent(vec![]);
    status.peers_not_run =
        vec!["peers[0] is not run on this node: the node has no IPv4 default route".into()];
    let text = peers(&status);
    assert_eq!(
        text.lines().last(),
        Some("not run here: peers[0] is not run on this node: the node has no IPv4 default route")
    );
}

#[test]
fn handoff_says_which_side_what_crossed_and_why() {
    let report = |role, result, reason: Option<&str>, pause| HandoffReport {
        role,
        result,
        reason: reason.map(str::to_string),
        other: AgentRef { pid: 7, version: "0.0.9".into() },
        sessions: 3,
        listeners: 1,
        state_bytes: 1_650_000,
        pause_ms: pause,
        at_ms: 1_000_000,
    };
    let now = 1_000_000 + 65_000;
    let cases = [
        (None, None, "no handoff yet: this agent started the node's sessions itself\n"),
        (
            Some(report(HandoffRole::Successor, HandoffResult::Completed, None, Some(4.94))),
            None,
            "last handoff: completed, 00:01:05 ago: took over from agent 0.0.9 pid 7\n  \
             3 session(s), 1 listener(s), 1.6 MB of state, longest pause 4.9 ms\n",
        ),
        (
            Some(report(
                HandoffRole::Predecessor,
                HandoffResult::RolledBack,
                Some("successor gave no answer in 10 s"),
                None,
            )),
            None,
            "last handoff: rolled back, 00:01:05 ago: handed over to agent 0.0.9 pid 7\n  \
             3 session(s), 1 listener(s), 1.6 MB of state\n  reason: successor gave no answer in 10 s\n",
        ),
        (
            Some(report(HandoffRole::Predecessor, HandoffResult::Completed, None, None)),
            Some(AgentRef { pid: 7, version: "0.0.9".into() }),
            "last handoff: completed, 00:01:05 ago: handed over to agent 0.0.9 pid 7\n  \
             3 session(s), 1 listener(s), 1.6 MB of state\nretired: agent 0.0.9 pid 7 took over\n",
        ),
    ];
    for (last, successor, expected) in cases {
        let mut status = agent(vec![]);
        status.last_handoff = last;
        status.successor = successor;
        let text = handoff(&status, now);
        let (first, rest) = text.split_once('\n').unwrap();
        assert!(first.starts_with("nonstop-agent 0.1.0 pid 42"), "{first}");
        assert_eq!(rest, expected);
    }
}

#[test]
fn events_merge_peers_oldest_first_and_a_wrong_peer_is_named() {
    let event = |at_s: u64, kind, detail: &str, times| SessionEvent {
        at_ms: at_s * 1000,
        kind,
        detail: detail.into(),
        times,
    };
    let doc = EventsDocument {
        peers: vec![
            PeerEvents {
                address: "10.0.0.2".into(),
                events: vec![
                    event(100, SessionEventKind::Established, "peer AS 65000", 1),
                    event(
                        400,
                        SessionEventKind::NotificationReceived,
                        "Cease/Administrative Reset (6/4)",
                        1,
                    ),
                    event(400, SessionEventKind::Down, "the peer sent Cease", 1),
                ],
            },
            PeerEvents {
                address: "10.0.0.3".into(),
                events: vec![event(250, SessionEventKind::Connection, "connection refused", 12)],
            },
        ],
    };
    let now = 1000 * 1000;
    let all = events(&doc, None, now).unwrap();
    let expected = "\
AGO       PEER      EVENT                  DETAIL
00:15:00  10.0.0.2  established            peer AS 65000
00:12:30  10.0.0.3  connection             connection refused (12 times)
00:10:00  10.0.0.2  notification-received  Cease/Administrative Reset (6/4)
00:10:00  10.0.0.2  down                   the peer sent Cease
";
    assert_eq!(all, expected);
    let one = events(&doc, Some("10.0.0.3"), now).unwrap();
    assert_eq!(one.lines().count(), 2, "{one}");
    assert_eq!(
        events(&doc, Some("10.0.0.9"), now),
        Err("no peer 10.0.0.9; the agent's peers: 10.0.0.2, 10.0.0.3".to_string())
    );
    let quiet =
        EventsDocument { peers: vec![PeerEvents { address: "10.0.0.2".into(), events: vec![] }] };
    assert_eq!(events(&quiet, None, now).unwrap(), "no events yet\n");
}

#[test]
fn show_routes_prints_both_tables_and_says_what_it_left_out() {
    let row = |prefix: &str, stale: Option<&str>| RouteRow {
        prefix: prefix.into(),
        next_hop: "10.99.0.1".into(),
        as_path: "65000".into(),
        origin: "igp".into(),
        med: None,
        local_pref: None,
        communities: vec!["65000:100".into(), "llgr-stale".into()],
        stale: stale.map(String::from),
    };
    let doc = RoutesDocument {
        peers: vec![
            PeerRoutes {
                address: "10.99.0.1".into(),
                asn: 65000,
                state: "Established".into(),
                received_total: 3,
                received: vec![row("10.1.0.0/24", None), row("10.1.1.0/24", Some("llgr-stale"))],
                advertised_total: 0,
                advertised: vec![],
            },
            PeerRoutes {
                address: "10.99.0.2".into(),
                asn: 65002,
                state: "Active".into(),
                ..PeerRoutes::default()
            },
        ],
    };
    let text = routes(&doc);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "10.99.0.1 (AS 65000, Established): 3 received, 0 advertised");
    assert_eq!(
        lines[1],
        "  RECEIVED     NEXT HOP   AS PATH  ORIGIN  MED  LOCAL PREF  STALE       COMMUNITIES"
    );
    assert_eq!(
        lines[3],
        "  10.1.1.0/24  10.99.0.1  65000    igp     -    -           llgr-stale  65000:100 llgr-stale"
    );
    assert_eq!(lines[4], "  … 1 more (show routes 10.99.0.1 --limit 3)");
    assert_eq!(lines[5], "  advertised none");
    assert!(
        text.contains("10.99.0.2 (AS 65002, Active): 0 received, 0 advertised\n  received none\n")
    );
    assert_eq!(routes(&RoutesDocument::default()), "no peers configured\n");
}

#[test]
fn bmp_shows_each_collector() {
    use crate::speaker::status::CollectorStatus;
    let now = 10_000_000;
    let mut status = agent(vec![]);
    assert!(bmp(&status, now).ends_with("no BMP collector configured\n"));
    status.bmp = vec![
        CollectorStatus {
            collector: "192.0.2.50:1790".into(),
            up: true,
            since_ms: now - 3_723_000,
            connects: 0,
            carried_on: true,
            last_error: None,
        },
        CollectorStatus {
            collector: "[2001:db8::50]:1790".into(),
            up: false,
            since_ms: now - 65_000,
            connects: 2,
            carried_on: false,
            last_error: Some("connecting: Connection refused (os error 111)".into()),
        },
    ];
    let text = bmp(&status, now);
    let lines: Vec<&str> = text.lines().skip(1).map(str::trim_end).collect();
    assert_eq!(
        lines,
        [
            "COLLECTOR            STATE            SINCE     CONNECTS  LAST ERROR",
            "192.0.2.50:1790      up (carried on)  01:02:03  0",
            "[2001:db8::50]:1790  down             00:01:05  2         connecting: Connection refused (os error 111)",
        ]
    );
}

#[test]
fn checks_show_each_verdict_and_what_the_probe_saw() {
    use crate::speaker::status::CheckStatus;
    let now = 10_000_000;
    let mut status = agent(vec![]);
    assert!(checks(&status, now).ends_with("no announcement has a check\n"));
    let check = |prefix: &str, verdict: &str, ago_ms: u64, detail: &str| CheckStatus {
        prefix: prefix.into(),
        verdict: verdict.into(),
        since_ms: now - ago_ms,
        detail: detail.into(),
    };
    status.checks = vec![
        check("192.0.2.10/32", "up", 3_723_000, "HTTP 200"),
        check(
            "192.0.2.11/32",
            "draining",
            4_000,
            "connect 127.0.0.1:8081: Connection refused (os error 111)",
        ),
    ];
    let text = checks(&status, now);
    let lines: Vec<&str> = text.lines().skip(1).map(str::trim_end).collect();
    assert_eq!(
        lines,
        [
            "PREFIX         VERDICT   SINCE     LAST PROBE",
            "192.0.2.10/32  up        01:02:03  HTTP 200",
            "192.0.2.11/32  draining  00:00:04  connect 127.0.0.1:8081: Connection refused (os error 111)",
        ]
    );
}
