//! Each reader against what its daemon prints: the same two paths (one
//! prefix held from two next hops, the second with a MED and communities)
//! must come out the same whichever daemon printed them.

use super::*;

const BIRD: &str = "BIRD 2.0.12 ready.
Table master4:
10.1.0.0/24          unicast [node1 10:00:00.123] * (100) [AS65001i]
\tvia 10.99.1.2 on up1
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65001
\tBGP.next_hop: 10.99.1.2
\tBGP.local_pref: 100
                     unicast [node2 10:00:01.456] (100) [AS65001i]
\tvia 10.99.2.2 on up2
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 65001 65002
\tBGP.next_hop: 10.99.2.2 fe80::2
\tBGP.med: 10
\tBGP.local_pref: 100
\tBGP.community: (65000,1) (65000,2)
";

const GOBGP: &str = r#"{"10.1.0.0/24":[
 {"nlri":{"prefix":"10.1.0.0/24"},"attrs":[{"type":1,"value":0},
  {"type":2,"as_paths":[{"segment_type":2,"num":1,"asns":[65001]}]},
  {"type":3,"nexthop":"10.99.1.2"}]},
 {"nlri":{"prefix":"10.1.0.0/24"},"attrs":[{"type":1,"value":0},
  {"type":2,"as_paths":[{"segment_type":2,"num":2,"asns":[65001,65002]}]},
  {"type":3,"nexthop":"10.99.2.2"},{"type":4,"metric":10},
  {"type":8,"communities":[4259840001,4259840002]}]}]}"#;

const FRR_DETAIL: &str = r#"{"routes":{"10.1.0.0/24":[
 {"aspath":{"string":"65001","segments":[{"type":"as-sequence","list":[65001]}]},
  "nexthops":[{"ip":"10.99.1.2","afi":"ipv4"}]},
 {"aspath":{"string":"65001 65002","segments":[{"type":"as-sequence","list":[65001,65002]}]},
  "metric":10,"community":{"string":"65000:1 65000:2","list":["65000:1","65000:2"]},
  "nexthops":[{"ip":"10.99.2.2","afi":"ipv4"}]}]}}"#;

const FRR_SUMMARY: &str = r#"{"routes":{"10.1.0.0/24":[
 {"valid":true,"path":"65001","nexthops":[{"ip":"10.99.1.2"}]},
 {"valid":true,"path":"65001 65002","metric":10,
  "community":{"list":["65000:1","65000:2"]},"nexthops":[{"ip":"10.99.2.2"}]}]}}"#;

fn two_paths() -> Paths {
    let prefix = "10.1.0.0/24".to_string();
    vec![
        (
            prefix.clone(),
            Route { next_hop: "10.99.1.2".into(), as_path: vec![65001], ..Default::default() },
        ),
        (
            prefix,
            Route {
                next_hop: "10.99.2.2".into(),
                as_path: vec![65001, 65002],
                med: Some(10),
                communities: vec!["65000:1".into(), "65000:2".into()],
            },
        ),
    ]
}

#[test]
fn every_daemon_s_table_reads_the_same() {
    let cases: [(&str, Result<Paths, String>); 4] = [
        ("bird", Ok(bird_routes(BIRD))),
        ("gobgp", gobgp_routes(GOBGP)),
        ("frr detail", frr_routes(FRR_DETAIL)),
        ("frr summary", frr_routes(FRR_SUMMARY)),
    ];
    for (daemon, read) in cases {
        assert_eq!(read.as_deref(), Ok(&two_paths()[..]), "{daemon}");
    }
}

#[test]
fn empty_tables_and_bad_json() {
    assert_eq!(bird_routes("BIRD 2.0.12 ready.\n"), vec![]);
    assert_eq!(gobgp_routes("{}"), Ok(vec![]));
    assert_eq!(frr_routes("{\"routes\":{}}"), Ok(vec![]));
    let bad = gobgp_routes("gobgp: connection refused").unwrap_err();
    assert!(bad.contains("not JSON") && bad.contains("connection refused"), "{bad}");
}

#[test]
fn every_daemon_s_neighbours_read_the_same() {
    let bird = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
node1      BGP        ---        up     10:00:00.123  Established
  BGP state:          Established
    Neighbor address: 10.99.1.2
node2      BGP        ---        start  10:00:00.123  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 10.99.2.2
";
    let gobgp = r#"[{"conf":{"neighbor_address":"10.99.1.2"},"state":{"session_state":6}},
                    {"conf":{"neighbor_address":"10.99.2.2"},"state":{"session_state":3}}]"#;
    let frr = r#"{"10.99.1.2":{"bgpState":"Established"},"10.99.2.2":{"bgpState":"Active"}}"#;
    let want = vec![
        Neighbor { address: "10.99.1.2".into(), established: true },
        Neighbor { address: "10.99.2.2".into(), established: false },
    ];
    assert_eq!(bird_neighbors(bird), want, "bird");
    assert_eq!(gobgp_neighbors(gobgp), Ok(want.clone()), "gobgp");
    assert_eq!(frr_neighbors(frr), Ok(want), "frr");
}
