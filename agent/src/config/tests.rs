//! Config files as a person writes them: what loads, and what is refused with
//! which message.

use std::path::Path;

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("gw.yaml"))
}

const MINIMAL: &str = "asn: 65001\npeers:\n  - address: 192.0.2.1\n    asn: 65000\n";

#[test]
fn a_minimal_file_gets_the_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.listen, Some("0.0.0.0:179".parse().unwrap()));
    assert_eq!(c.admin, "127.0.0.1:9179".parse().unwrap());
    assert_eq!(c.shutdown.drain_seconds, 10);
    let p = &c.peers[0];
    assert_eq!((p.port, p.hold_time, p.keepalive_time(), p.connect_retry_time), (179, 90, 30, 30));
    assert_eq!(p.families, vec![Family::Ipv4Unicast, Family::Ipv6Unicast]);
    assert_eq!(p.graceful_restart, GracefulRestart::default());
    assert!(p.graceful_restart.enabled && p.graceful_restart.notification);
    assert_eq!(p.graceful_restart.restart_time, 120);
}

#[test]
fn listen_null_means_no_listener_and_dialled_peers_are_fine_without_one() {
    let c = parse(&format!("listen: null\n{MINIMAL}")).unwrap();
    assert_eq!(c.listen, None);
    // Written back, it stays off (a missing field would mean port 179).
    assert_eq!(parse(&serde_yaml_ng::to_string(&c).unwrap()).unwrap().listen, None);
}

/// The derivation is part of the contract: a node keeps its identifier
/// across upgrades only if every version computes the same one.
#[test]
fn router_ids_come_from_the_node_address_and_never_change() {
    let cases: &[(&str, &str)] = &[
        ("10.99.1.2", "10.99.1.2"),
        ("::ffff:10.99.1.2", "10.99.1.2"),
        // FNV-1a (32 bit) of the 16 octets, as computed independently (Python).
        ("fd00:99:1::2", "40.89.132.110"),
        ("fd00:99:2::2", "216.108.83.35"),
        ("2001:db8::1", "110.91.4.244"),
    ];
    for (node, id) in cases {
        let got = router_id_for(node.parse().unwrap());
        assert_eq!(got.to_string(), *id, "router ID for {node}");
    }
}

#[test]
fn json_is_accepted_too() {
    let c =
        parse(r#"{"asn": 65001, "peers": [{"address": "2001:db8::1", "asn": 65001}]}"#).unwrap();
    assert!(c.peers[0].is_ibgp(65001));
}

#[test]
fn every_field_parses() {
    let text = r#"
asn: 4200000001
routerId: 10.0.0.1
listen: "[::]:1179"
admin: 127.0.0.1:9000
peers:
  - address: 192.0.2.1
    asn: 65000
    port: 1179
    holdTime: 30
    keepaliveTime: 5
    connectRetryTime: 2
    passive: true
    localAddress: 192.0.2.2
    passwordSecretRef: { name: bgp-auth, key: router-a }
    ttlSecurity: true
    ebgpMultihop: 2
    families: [ipv4-unicast]
    gracefulRestart: { enabled: true, restartTime: 5, notification: false, longLivedStaleTime: 60 }
announce:
  - prefix: 203.0.113.0/24
    nextHop: 192.0.2.2
    communities: ["65000:1", graceful-shutdown]
    largeCommunities: ["65000:1:2"]
    localPref: 200
    med: 10
  - prefix: 2001:db8:1::/48
shutdown: { drainSeconds: 3 }
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.asn, 4_200_000_001);
    let p = &c.peers[0];
    assert_eq!(p.keepalive_time(), 5);
    assert_eq!(p.password_secret_ref.as_ref().unwrap().key, "router-a");
    assert_eq!(p.graceful_restart.long_lived_stale_time, 60);
    assert_eq!(c.announce[0].communities[1], crate::route::Community::GRACEFUL_SHUTDOWN);
    assert_eq!(c.announce[1].next_hop, NextHop::SelfAddress);
    // What we write back reads the same.
    let again = parse(&serde_yaml_ng::to_string(&c).unwrap()).unwrap();
    assert_eq!(again, c);
}

/// Each bad file is refused, and the message names the field and the reason.
#[test]
fn bad_files_are_refused_with_the_field_and_the_reason() {
    let peer = "peers:\n  - address: 192.0.2.1\n    asn: 65000\n";
    let cases: &[(&str, String, &[&str])] = &[
        (
            "typo in a field",
            format!("asn: 1\n{peer}    holdTme: 30\n"),
            &["unknown field `holdTme` at peers[0]"],
        ),
        ("missing asn", peer.to_string(), &["missing field `asn`"]),
        (
            "no listener with a passive peer",
            format!("asn: 1\nlisten: null\n{peer}    passive: true\n"),
            &["peers[0].passive: 192.0.2.1 could never connect: the gateway has no listener"],
        ),
        ("listener on port 0", format!("asn: 1\nlisten: 0.0.0.0:0\n{peer}"), &["listen: port 0"]),
        (
            "listener on a multicast address",
            format!("asn: 1\nlisten: \"[ff02::1]:179\"\n{peer}"),
            &["listen: ff02::1 is a multicast address"],
        ),
        ("asn 0", format!("asn: 0\n{peer}"), &["asn: AS 0 is reserved"]),
        (
            "a node selector with an empty label name",
            format!("asn: 1\n{peer}    nodeSelector: {{\"\": a}}\n"),
            &["peers[0].nodeSelector: a label name cannot be empty"],
        ),
        ("AS_TRANS", format!("asn: 23456\n{peer}"), &["asn: AS 23456 is AS_TRANS"]),
        ("no peers", "asn: 1\npeers: []\n".into(), &["peers: at least one peer"]),
        (
            "BMP collector on port 0",
            format!("asn: 1\n{peer}bmp:\n  - address: 192.0.2.9\n    port: 0\n"),
            &["bmp[0].port: port 0 cannot be dialled"],
        ),
        (
            "BMP collector listed twice",
            format!(
                "asn: 1\n{peer}bmp:\n  - address: 192.0.2.9\n  - address: 192.0.2.9\n    port: 1790\n"
            ),
            &["bmp[1].address: 192.0.2.9:1790 is already bmp[0]"],
        ),
        (
            "BMP collector at no address",
            format!("asn: 1\n{peer}bmp:\n  - address: 0.0.0.0\n"),
            &["bmp[0].address: 0.0.0.0 cannot be dialled"],
        ),
        (
            "BMP typo",
            format!("asn: 1\n{peer}bmp:\n  - address: 192.0.2.9\n    statsInterval: 5\n"),
            &["unknown field `statsInterval` at bmp[0]"],
        ),
        (
            "hold time 2",
            format!("asn: 1\n{peer}    holdTime: 2\n"),
            &["peers[0].holdTime: holdTime must be 0", "got 2"],
        ),
        (
            "keepalive ≥ hold",
            format!("asn: 1\n{peer}    holdTime: 9\n    keepaliveTime: 9\n"),
            &["peers[0].keepaliveTime", "less than holdTime 9"],
        ),
        (
            "keepalive with hold 0",
            format!("asn: 1\n{peer}    holdTime: 0\n    keepaliveTime: 3\n"),
            &["peers[0].keepaliveTime: keepaliveTime must be 0 when holdTime is 0"],
        ),
        (
            "hold time too big",
            format!("asn: 1\n{peer}    holdTime: 70000\n"),
            &["holdTime", "70000"],
        ),
        (
            "bad address",
            "asn: 1\npeers:\n  - address: 192.0.2.300\n    asn: 2\n".into(),
            &["invalid IP address"],
        ),
        (
            "a peer without an address",
            "asn: 1\npeers:\n  - asn: 2\n".into(),
            &["peers[0].address: needed", "or addressFrom"],
        ),
        (
            "a peer at no address",
            "asn: 1\npeers:\n  - address: \"::\"\n    asn: 2\n".into(),
            &["peers[0].address: needed (and not 0.0.0.0 or ::)"],
        ),
        (
            "a multicast peer",
            "asn: 1\npeers:\n  - address: 224.0.0.5\n    asn: 2\n".into(),
            &["peers[0].address: 224.0.0.5 cannot be dialled"],
        ),
        (
            "an address and addressFrom",
            format!("asn: 1\n{peer}    addressFrom: {{nodeAnnotation: tor}}\n"),
            &["peers[0].addressFrom: either address (192.0.2.1) or addressFrom, not both"],
        ),
        (
            "addressFrom names no annotation",
            "asn: 1\npeers:\n  - addressFrom: {nodeAnnotation: \"Example.com/tor\"}\n    asn: 2\n"
                .into(),
            &["peers[0].addressFrom.nodeAnnotation: \"Example.com/tor\" is not an annotation name"],
        ),
        (
            "addressFrom with a passive peer and no listener",
            "asn: 1\nlisten: null\npeers:\n  - addressFrom: {nodeAnnotation: tor}\n    asn: 2\n    passive: true\n"
                .into(),
            &["the address in node annotation tor could never connect"],
        ),
        (
            "duplicate peer",
            format!("asn: 1\n{peer}  - address: 192.0.2.1\n    asn: 3\n"),
            &["peers[1].address: 192.0.2.1 is already peers[0]"],
        ),
        (
            "mixed families",
            format!("asn: 1\n{peer}    localAddress: 2001:db8::1\n"),
            &["peers[0].localAddress", "different families"],
        ),
        (
            "multihop on iBGP",
            format!("asn: 65000\n{peer}    ebgpMultihop: 2\n"),
            &["peers[0].ebgpMultihop: applies to eBGP only"],
        ),
        (
            "unknown family",
            format!("asn: 1\n{peer}    families: [ipv4-multicast]\n"),
            &["unknown variant `ipv4-multicast`", "ipv4-unicast"],
        ),
        (
            "family twice",
            format!("asn: 1\n{peer}    families: [ipv4-unicast, ipv4-unicast]\n"),
            &["peers[0].families[1]: listed twice"],
        ),
        (
            "restart time over 12 bits",
            format!("asn: 1\n{peer}    gracefulRestart: {{ restartTime: 5000 }}\n"),
            &["peers[0].gracefulRestart.restartTime: must be at most 4095"],
        ),
        (
            "host bits",
            format!("asn: 1\n{peer}announce:\n  - prefix: 10.0.0.1/24\n"),
            &["did you mean 10.0.0.0/24?"],
        ),
        (
            "bad community",
            format!(
                "asn: 1\n{peer}announce:\n  - prefix: 10.0.0.0/24\n    communities: ['70000:1']\n"
            ),
            &["`70000:1` is not a community"],
        ),
        (
            "next hop of the wrong family",
            format!("asn: 1\n{peer}announce:\n  - prefix: 10.0.0.0/24\n    nextHop: 2001:db8::1\n"),
            &[
                "announce[0].nextHop: 2001:db8::1 is not of the same family as the prefix 10.0.0.0/24",
            ],
        ),
        (
            "duplicate prefix",
            format!("asn: 1\n{peer}announce:\n  - prefix: 10.0.0.0/24\n  - prefix: 10.0.0.0/24\n"),
            &["announce[1].prefix: 10.0.0.0/24 is already announce[0]"],
        ),
        (
            "the same peer written as an IPv4-mapped IPv6 address",
            format!("asn: 1\n{peer}  - address: '::ffff:192.0.2.1'\n    asn: 3\n"),
            &["peers[1].address: ::ffff:192.0.2.1 is already peers[0]"],
        ),
        (
            "accept: prefixes without a prefix",
            format!("asn: 1\n{peer}    import: {{ accept: prefixes }}\n"),
            &["peers[0].import.prefixes: accept: prefixes needs at least one prefix"],
        ),
        (
            "prefixes with accept: all",
            format!("asn: 1\n{peer}    import: {{ prefixes: [{{ prefix: 0.0.0.0/0 }}] }}\n"),
            &["peers[0].import.prefixes: only used with accept: prefixes, not accept: all"],
        ),
        (
            "maxLength shorter than the prefix",
            format!(
                "asn: 1\n{peer}    import: {{ accept: prefixes, prefixes: [{{ prefix: 10.0.0.0/8, maxLength: 7 }}] }}\n"
            ),
            &["peers[0].import.prefixes[0].maxLength: must be from 8 to 32 for 10.0.0.0/8, got 7"],
        ),
        (
            "unknown accept",
            format!("asn: 1\n{peer}    import: {{ accept: some }}\n"),
            &["unknown variant `some`", "prefixes"],
        ),
        (
            "limit 0",
            format!("asn: 1\n{peer}    import: {{ maxPrefixes: {{ limit: 0 }} }}\n"),
            &["peers[0].import.maxPrefixes.limit: must be at least 1"],
        ),
        (
            "warning over 100%",
            format!("asn: 1\n{peer}    import: {{ maxPrefixes: {{ warningPercent: 120 }} }}\n"),
            &["peers[0].import.maxPrefixes.warningPercent: must be 1-100, got 120"],
        ),
        (
            "restart at once",
            format!("asn: 1\n{peer}    import: {{ maxPrefixes: {{ restartAfter: 0 }} }}\n"),
            &["peers[0].import.maxPrefixes.restartAfter: must be at least 1 second"],
        ),
        (
            "more communities than an UPDATE holds",
            format!(
                "asn: 1\n{peer}announce:\n  - prefix: 10.0.0.0/24\n    communities: [{}]\n",
                vec!["65000:1"; 1100].join(", ")
            ),
            &["announce[0].communities: with 1100 communities", "over the 4096"],
        ),
        (
            "a check that probes nothing",
            format!(
                "asn: 1\n{peer}announce:\n  - prefix: 192.0.2.10/32\n    check: {{ rise: 1 }}\n"
            ),
            &["announce[0].check: names no probe: set one of tcp, http, command"],
        ),
        (
            "a check that probes two things",
            format!(
                "asn: 1\n{peer}announce:\n  - prefix: 192.0.2.10/32\n    check: {{ tcp: 127.0.0.1:80, command: [true] }}\n"
            ),
            &["announce[0].check: names more than one probe"],
        ),
        (
            "an HTTPS check",
            format!(
                "asn: 1\n{peer}announce:\n  - prefix: 192.0.2.10/32\n    check: {{ http: {{ url: https://127.0.0.1/ }} }}\n"
            ),
            &["announce[0].check.http.url: \"https://127.0.0.1/\": only http:// URLs"],
        ),
        (
            "a check slower than its interval",
            format!(
                "asn: 1\n{peer}announce:\n  - prefix: 192.0.2.10/32\n    check: {{ tcp: 127.0.0.1:80, intervalSeconds: 2, timeoutSeconds: 5 }}\n"
            ),
            &["announce[0].check.timeoutSeconds: 5 s is longer than the interval (2 s)"],
        ),
        (
            "a check to port 0",
            format!(
                "asn: 1\n{peer}announce:\n  - prefix: 192.0.2.10/32\n    check: {{ tcp: 127.0.0.1:0 }}\n"
            ),
            &["announce[0].check.tcp: 127.0.0.1:0: port 0 cannot be connected to"],
        ),
        ("not YAML at all", "asn: [1\n".into(), &["gw.yaml is not valid"]),
    ];
    for (name, text, needles) in cases {
        let err = match parse(text) {
            Ok(c) => panic!("{name}: accepted {c:?}"),
            Err(e) => e.to_string(),
        };
        for needle in *needles {
            assert!(err.contains(needle), "{name}: error `{err}` lacks `{needle}`");
        }
    }
}

#[test]
fn every_broken_rule_is_reported_at_once() {
    let text = "asn: 0\npeers:\n  - address: 192.0.2.1\n    asn: 2\n    holdTime: 1\n    connectRetryTime: 0\n";
    let Err(ConfigError::Invalid { problems, .. }) = parse(text) else { panic!("accepted") };
    let paths: Vec<_> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["asn", "peers[0].holdTime", "peers[0].connectRetryTime"]);
}

#[test]
fn hold_and_keepalive_rules_follow_rfc_4271() {
    // (hold, keepalive, accepted)
    let cases = [
        (0, None, true),
        (0, Some(0), true),
        (0, Some(1), false),
        (1, None, false),
        (2, None, false),
        (3, None, true),
        (3, Some(1), true),
        (3, Some(3), false),
        (90, Some(0), false),
        (90, Some(30), true),
        (90, Some(89), true),
        (90, Some(90), false),
        (65535, Some(65534), true),
    ];
    for (hold, keepalive, accepted) in cases {
        let got = validate::hold_and_keepalive(hold, keepalive);
        assert_eq!(got.is_none(), accepted, "hold {hold} keepalive {keepalive:?}: {got:?}");
    }
}

#[test]
fn a_missing_file_names_the_path() {
    let err = Config::load(Path::new("/nonexistent/gw.yaml")).unwrap_err().to_string();
    assert!(err.contains("cannot read config /nonexistent/gw.yaml"), "{err}");
}

#[test]
fn annotation_names_are_checked_as_kubernetes_checks_them() {
    let good = ["tor", "example.com/tor", "nonstop.dev/e2e-tor", "a.b-c/x_y.z", "T0r"];
    for key in good {
        assert_eq!(validate::annotation_key(key), None, "{key}");
    }
    let too_long = "a".repeat(64);
    let bad =
        ["", "/tor", "example.com/", "-tor", "tor-", "a b", "Example.com/tor", "a..b/c", &too_long];
    for key in bad {
        assert!(validate::annotation_key(key).is_some(), "{key:?} passed");
    }
}
