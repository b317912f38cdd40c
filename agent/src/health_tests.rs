use super::*;
use crate::config::HealthCheck;

fn config(rise: u32, fall: u32, drain_seconds: u32) -> HealthCheck {
    HealthCheck {
        tcp: Some("127.0.0.1:8080".parse().unwrap()),
        http: None,
        command: Vec::new(),
        interval_seconds: 1,
        timeout_seconds: 1,
        rise,
        fall,
        drain_seconds,
    }
}

/// What happens to a check: a probe's result, or only time passing.
#[derive(Clone, Copy)]
enum Event {
    Ok(u64),
    Fail(u64),
    Tick(u64),
}
use Event::*;

const U: Verdict = Verdict::Unknown;
const UP: Verdict = Verdict::Up;
const DOWN: Verdict = Verdict::Down;
const fn draining(until_ms: u64) -> Verdict {
    Verdict::Draining { until_ms }
}

#[test]
fn verdicts_follow_rise_fall_and_the_drain() {
    // (case, rise/fall/drain s, starting verdict, events and the verdict after each)
    type Case = (&'static str, (u32, u32, u32), Verdict, Vec<(Event, Verdict)>);
    let cases: Vec<Case> = vec![
        ("a cold start: one success announces", (2, 3, 10), U, vec![(Ok(0), UP)]),
        ("a cold start: one failure keeps it out", (2, 3, 10), U, vec![(Fail(0), DOWN)]),
        (
            "falls after `fall` failures in a row, drains, then goes",
            (2, 3, 10),
            UP,
            vec![
                (Fail(1000), UP),
                (Fail(2000), UP),
                (Fail(3000), draining(13_000)),
                (Tick(12_999), draining(13_000)),
                (Tick(13_000), DOWN),
            ],
        ),
        (
            "a success breaks the run of failures",
            (2, 3, 10),
            UP,
            vec![
                (Fail(1000), UP),
                (Fail(2000), UP),
                (Ok(3000), UP),
                (Fail(4000), UP),
                (Fail(5000), UP),
            ],
        ),
        ("drain 0 withdraws at once", (2, 1, 0), UP, vec![(Fail(1000), DOWN)]),
        (
            "rises after `rise` successes in a row",
            (2, 3, 10),
            DOWN,
            vec![(Ok(1000), DOWN), (Fail(2000), DOWN), (Ok(3000), DOWN), (Ok(4000), UP)],
        ),
        (
            "recovers while draining: announced again without the community",
            (2, 3, 10),
            draining(13_000),
            vec![(Ok(4000), draining(13_000)), (Ok(5000), UP), (Tick(13_000), UP)],
        ),
        (
            "failures while draining change nothing, the drain still ends",
            (2, 3, 10),
            draining(13_000),
            vec![
                (Fail(4000), draining(13_000)),
                (Fail(5000), draining(13_000)),
                (Tick(14_000), DOWN),
            ],
        ),
        (
            "a verdict carried over from a predecessor is kept, not re-decided",
            (2, 3, 10),
            UP,
            vec![(Fail(1000), UP), (Ok(2000), UP)],
        ),
    ];
    for (case, (rise, fall, drain), start, events) in cases {
        let mut check = Check::new(&config(rise, fall, drain), start);
        for (i, (event, want)) in events.into_iter().enumerate() {
            let before = check.verdict();
            let changed = match event {
                Ok(at) => check.observe(true, at),
                Fail(at) => check.observe(false, at),
                Tick(at) => check.tick(at),
            };
            assert_eq!(check.verdict(), want, "{case}: event {i}");
            let want_change = (want != before).then_some(want);
            assert_eq!(changed, want_change, "{case}: event {i} reports its change");
        }
    }
}

#[test]
fn peers_are_sent_what_the_verdicts_allow() {
    let announcement = |prefix: &str| Announcement {
        prefix: prefix.parse().unwrap(),
        next_hop: Default::default(),
        communities: vec![Community(65001 << 16 | 7)],
        large_communities: Vec::new(),
        local_pref: None,
        med: None,
        check: None,
    };
    let announce: Vec<Announcement> =
        ["192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32", "192.0.2.4/32", "192.0.2.5/32"]
            .iter()
            .map(|p| announcement(p))
            .collect();
    let verdicts = [None, Some(UP), Some(draining(5)), Some(DOWN), Some(U)];
    let sent = effective(&announce, &verdicts);
    let prefixes: Vec<String> = sent.iter().map(|a| a.prefix.to_string()).collect();
    assert_eq!(prefixes, ["192.0.2.1/32", "192.0.2.2/32", "192.0.2.3/32"]);
    assert_eq!(sent[0], announce[0], "unchecked: as configured");
    assert_eq!(sent[1], announce[1], "up: as configured");
    assert_eq!(
        sent[2].communities,
        [Community(65001 << 16 | 7), Community::GRACEFUL_SHUTDOWN],
        "draining: its own communities and GRACEFUL_SHUTDOWN"
    );
    assert_eq!(sent[2].local_pref, Some(0), "draining: the lowest LOCAL_PREF towards iBGP");
}

#[test]
fn a_successor_starts_from_what_its_predecessor_announced() {
    let checked = |prefix: &str| Announcement {
        prefix: prefix.parse().unwrap(),
        next_hop: Default::default(),
        communities: Vec::new(),
        large_communities: Vec::new(),
        local_pref: None,
        med: None,
        check: Some(config(2, 3, 10)),
    };
    let p = |s: &str| -> Prefix { s.parse().unwrap() };
    let announce = [checked("192.0.2.1/32"), checked("192.0.2.2/32"), checked("192.0.2.3/32")];
    // The predecessor: a verdict on .1 (down), none on .2 and .3; its
    // sessions announce .1 (draining, say, by an older count) and .2.
    let sent = [p("192.0.2.1/32"), p("192.0.2.2/32")];
    let got = starting_verdicts(&announce, vec![(p("192.0.2.1/32"), DOWN)], |prefix| {
        sent.contains(prefix)
    });
    assert_eq!(
        got,
        [(p("192.0.2.1/32"), DOWN), (p("192.0.2.2/32"), UP)],
        "a carried verdict wins; an announced prefix stays up; the rest is probed afresh"
    );
}
