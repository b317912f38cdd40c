//! Tables of pools and Services, and the addresses each Service gets.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use kube::core::Selector;

use super::*;
use crate::api::pool::AddressBlock;

/// The text, and its first and last address or a part of the error.
type BlockCase<'a> = (&'a str, Result<(&'a str, &'a str), &'a str>);

#[test]
fn address_blocks_parse_or_name_what_is_wrong() {
    let cases: &[BlockCase] = &[
        ("198.51.100.0/28", Ok(("198.51.100.1", "198.51.100.14"))),
        ("198.51.100.7/32", Ok(("198.51.100.7", "198.51.100.7"))),
        ("198.51.100.6/31", Ok(("198.51.100.6", "198.51.100.7"))),
        ("198.51.100.4/30", Ok(("198.51.100.5", "198.51.100.6"))),
        (" 198.51.100.10 - 198.51.100.20 ", Ok(("198.51.100.10", "198.51.100.20"))),
        ("198.51.100.9-198.51.100.9", Ok(("198.51.100.9", "198.51.100.9"))),
        ("2001:db8::/126", Ok(("2001:db8::1", "2001:db8::2"))),
        ("2001:db8::5/128", Ok(("2001:db8::5", "2001:db8::5"))),
        ("0.0.0.0/0", Ok(("0.0.0.1", "255.255.255.254"))),
        ("198.51.100.1/28", Err("has host bits set: the CIDR is 198.51.100.0/28")),
        ("198.51.100.0/33", Err("the prefix length must be 0 to 32")),
        ("2001:db8::/129", Err("the prefix length must be 0 to 128")),
        ("198.51.100.20-198.51.100.10", Err("ends before it starts")),
        ("198.51.100.1-2001:db8::1", Err("mixes IPv4 and IPv6")),
        ("198.51.100.300/32", Err("\"198.51.100.300\" is not an IP address")),
        ("lb-pool", Err("\"lb\" is not an IP address")),
        ("198.51.100.7", Err("is neither a CIDR (198.51.100.0/28) nor a range")),
    ];
    for (text, want) in cases {
        let got = text.parse::<AddressBlock>();
        match (want, got) {
            (Ok((first, last)), Ok(block)) => {
                assert_eq!(block.first.to_string(), *first, "{text}");
                assert_eq!(block.last.to_string(), *last, "{text}");
            }
            (Err(part), Err(e)) => assert!(e.contains(part), "{text}: {e:?} lacks {part:?}"),
            (want, got) => panic!("{text}: want {want:?}, got {got:?}"),
        }
    }
}

fn pool(name: &str, addresses: &[&str]) -> Pool {
    Pool {
        name: name.into(),
        blocks: addresses.iter().map(|a| a.parse().unwrap()).collect(),
        selector: None,
        auto_assign: true,
    }
}

fn manual(mut p: Pool) -> Pool {
    p.auto_assign = false;
    p
}

fn selecting(mut p: Pool, key: &str, value: &str) -> Pool {
    p.selector = Some(Selector::from_iter([(key.to_string(), value.to_string())]));
    p
}

fn claim(service: &str) -> Claim {
    Claim {
        service: service.into(),
        labels: BTreeMap::new(),
        families: vec![Family::V4],
        second_optional: false,
        requested: vec![],
        current: vec![],
    }
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|ip| ip.parse().unwrap()).collect()
}

fn asking(mut c: Claim, list: &[&str]) -> Claim {
    c.requested = ips(list);
    c
}

fn holding(mut c: Claim, list: &[&str]) -> Claim {
    c.current = ips(list);
    c
}

fn labelled(mut c: Claim, key: &str, value: &str) -> Claim {
    c.labels.insert(key.into(), value.into());
    c
}

fn families(mut c: Claim, families: &[Family], second_optional: bool) -> Claim {
    c.families = families.to_vec();
    c.second_optional = second_optional;
    c
}

/// An outcome as a line: `198.51.100.1@a` per address, or `!Reason: message`.
fn show(outcome: &Outcome) -> String {
    match outcome {
        Ok(addresses) => {
            addresses.iter().map(|a| format!("{}@{}", a.ip, a.pool)).collect::<Vec<_>>().join(" ")
        }
        Err(refusal) => format!("!{}: {refusal}", refusal.reason()),
    }
}

/// What is shown, the pools, the claims oldest first, and each outcome.
type AssignCase<'a> = (&'a str, Vec<Pool>, Vec<Claim>, Vec<&'a str>);

#[test]
fn each_service_gets_an_address_or_a_reason() {
    use Family::{V4, V6};
    let four = || pool("a", &["198.51.100.0/29"]); // .1 to .6
    let two = || pool("small", &["198.51.100.1-198.51.100.2"]);
    let cases: Vec<AssignCase> = vec![
        (
            "new Services get the lowest free addresses, oldest first",
            vec![four()],
            vec![claim("ns/one"), claim("ns/two")],
            vec!["198.51.100.1@a", "198.51.100.2@a"],
        ),
        (
            "a Service keeps its address; a newer one fills the gap below it",
            vec![four()],
            vec![holding(claim("ns/one"), &["198.51.100.3"]), claim("ns/two")],
            vec!["198.51.100.3@a", "198.51.100.1@a"],
        ),
        (
            "an older Service asking for a held address does not take it",
            vec![four()],
            vec![
                asking(claim("ns/old"), &["198.51.100.3"]),
                holding(claim("ns/new"), &["198.51.100.3"]),
            ],
            vec![
                "!AddressInUse: 198.51.100.3 is already assigned to Service ns/new",
                "198.51.100.3@a",
            ],
        ),
        (
            "a full pool is named",
            vec![two()],
            vec![claim("ns/one"), claim("ns/two"), claim("ns/three")],
            vec![
                "198.51.100.1@small",
                "198.51.100.2@small",
                "!AddressPoolExhausted: no free IPv4 address left in BgpAddressPool small",
            ],
        ),
        (
            "the next pool by name takes over from a full one",
            vec![pool("b", &["203.0.113.5/32"]), two()],
            vec![claim("ns/one"), claim("ns/two"), claim("ns/three")],
            vec!["203.0.113.5@b", "198.51.100.1@small", "198.51.100.2@small"],
        ),
        (
            "a requested address outside every pool",
            vec![four()],
            vec![asking(claim("ns/one"), &["203.0.113.9"])],
            vec!["!AddressNotInPool: 203.0.113.9 is in no BgpAddressPool"],
        ),
        (
            "a manual pool serves only Services that name its addresses",
            vec![manual(pool("m", &["203.0.113.0/30"]))],
            vec![claim("ns/auto"), asking(claim("ns/named"), &["203.0.113.2"])],
            vec![
                "!NoAddressPool: no BgpAddressPool that selects this Service assigns IPv4 addresses automatically",
                "203.0.113.2@m",
            ],
        ),
        (
            "a selector keeps a pool to its Services",
            vec![
                selecting(pool("team", &["203.0.113.0/30"]), "team", "red"),
                pool("z", &["198.51.100.9/32"]),
            ],
            vec![claim("ns/blue"), labelled(claim("ns/red"), "team", "red")],
            vec!["198.51.100.9@z", "203.0.113.1@team"],
        ),
        (
            "a requested address in a pool that does not select the Service",
            vec![selecting(pool("team", &["203.0.113.0/30"]), "team", "red")],
            vec![asking(claim("ns/blue"), &["203.0.113.1"])],
            vec![
                "!AddressNotInPool: 203.0.113.1 is in BgpAddressPool team, whose serviceSelector does not select this Service",
            ],
        ),
        (
            "an address whose pool is gone is given up for a new one",
            vec![four()],
            vec![holding(claim("ns/one"), &["203.0.113.1"])],
            vec!["198.51.100.1@a"],
        ),
        (
            "a Service that starts asking for another address moves to it",
            vec![four()],
            vec![asking(holding(claim("ns/one"), &["198.51.100.1"]), &["198.51.100.5"])],
            vec!["198.51.100.5@a"],
        ),
        (
            "a Service that stops asking keeps the address it has",
            vec![four()],
            vec![holding(claim("ns/one"), &["198.51.100.5"])],
            vec!["198.51.100.5@a"],
        ),
        (
            "a kept address may be in a manual pool only if the Service names it",
            vec![manual(pool("m", &["203.0.113.0/30"])), four()],
            vec![holding(claim("ns/one"), &["203.0.113.1"])],
            vec!["198.51.100.1@a"],
        ),
        (
            "dual stack gets one address per family",
            vec![pool("v4", &["198.51.100.0/30"]), pool("v6", &["2001:db8::/126"])],
            vec![families(claim("ns/dual"), &[V6, V4], false)],
            vec!["2001:db8::1@v6 198.51.100.1@v4"],
        ),
        (
            "one pool may hold both families",
            vec![pool("both", &["2001:db8::/126", "198.51.100.0/30"])],
            vec![families(claim("ns/dual"), &[V4, V6], false)],
            vec!["198.51.100.1@both 2001:db8::1@both"],
        ),
        (
            "PreferDualStack takes what there is; RequireDualStack gets nothing",
            vec![pool("v4", &["198.51.100.0/29"])],
            vec![
                families(claim("ns/prefer"), &[V4, V6], true),
                families(claim("ns/require"), &[V4, V6], false),
            ],
            vec![
                "198.51.100.1@v4",
                "!NoAddressPool: no BgpAddressPool that selects this Service assigns IPv6 addresses automatically",
            ],
        ),
        (
            "a refused dual-stack Service holds nothing",
            vec![pool("v4", &["198.51.100.1/32"]), pool("v6", &["2001:db8::1/128"])],
            vec![
                claim("ns/first"),
                families(claim("ns/dual"), &[V6, V4], false),
                families(claim("ns/six"), &[V6], false),
            ],
            vec![
                "198.51.100.1@v4",
                "!AddressPoolExhausted: no free IPv4 address left in BgpAddressPool v4",
                "2001:db8::1@v6",
            ],
        ),
        (
            "overlapping pools never give one address twice",
            vec![
                pool("a", &["198.51.100.1-198.51.100.2"]),
                pool("b", &["198.51.100.2-198.51.100.3"]),
            ],
            vec![claim("ns/one"), claim("ns/two"), claim("ns/three"), claim("ns/four")],
            vec![
                "198.51.100.1@a",
                "198.51.100.2@a",
                "198.51.100.3@b",
                "!AddressPoolExhausted: no free IPv4 address left in BgpAddressPool a, b",
            ],
        ),
        (
            "no pools at all",
            vec![],
            vec![claim("ns/one")],
            vec![
                "!NoAddressPool: no BgpAddressPool that selects this Service assigns IPv4 addresses automatically",
            ],
        ),
    ];
    for (name, pools, claims, want) in cases {
        let got: Vec<String> = assign(&pools, &claims).iter().map(show).collect();
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn a_pool_counts_what_it_handed_out() {
    let pools =
        vec![pool("a", &["198.51.100.0/29", "2001:db8::/120"]), pool("b", &["203.0.113.7/32"])];
    let claims =
        vec![claim("ns/one"), claim("ns/two"), asking(claim("ns/three"), &["203.0.113.7"])];
    let outcomes = assign(&pools, &claims);
    let usage = usage(&pools, &outcomes);
    assert_eq!(usage["a"], Usage { ipv4: (2, 6), ipv6: (0, 254) });
    assert_eq!(usage["b"], Usage { ipv4: (1, 1), ipv6: (0, 0) });
}

fn service(yaml: &str) -> Service {
    serde_yaml_ng::from_str(yaml).unwrap()
}

/// A Service, and what it asks for and holds (and whether its second family
/// is optional), or a part of the error.
type ClaimCase<'a> = (&'a str, Result<(&'a [&'a str], &'a [&'a str], bool), &'a str>);

#[test]
fn a_service_says_what_it_asks_for() {
    let cases: &[ClaimCase] = &[
        (
            "metadata: {name: web, namespace: shop}\nspec: {type: LoadBalancer, ipFamilies: [IPv4]}",
            Ok((&[], &[], false)),
        ),
        (
            "metadata: {name: web, namespace: shop, annotations: {nonstop.dev/load-balancer-ips: '198.51.100.7, 2001:db8::7'}}\nspec: {type: LoadBalancer, ipFamilies: [IPv6, IPv4], ipFamilyPolicy: PreferDualStack}",
            Ok((&["198.51.100.7", "2001:db8::7"], &[], true)),
        ),
        (
            "metadata: {name: web, namespace: shop}\nspec: {type: LoadBalancer, loadBalancerIP: 198.51.100.8}\nstatus: {loadBalancer: {ingress: [{ip: 198.51.100.8}, {hostname: lb.example}]}}",
            Ok((&["198.51.100.8"], &["198.51.100.8"], false)),
        ),
        (
            "metadata: {name: web, namespace: shop, annotations: {nonstop.dev/load-balancer-ips: 'web-vip'}}\nspec: {type: LoadBalancer}",
            Err("nonstop.dev/load-balancer-ips: \"web-vip\" is not an IP address"),
        ),
        (
            "metadata: {name: web, namespace: shop}\nspec: {type: LoadBalancer, ipFamilies: [IPv4], loadBalancerIP: '2001:db8::1'}",
            Err("2001:db8::1 is IPv6 but the Service's ipFamilies are IPv4"),
        ),
        (
            "metadata: {name: web, namespace: shop, annotations: {nonstop.dev/load-balancer-ips: '198.51.100.1,198.51.100.2'}}\nspec: {type: LoadBalancer}",
            Err("more than one IPv4 address asked for"),
        ),
    ];
    for (yaml, want) in cases {
        let got = Claim::of(&service(yaml));
        match (want, got) {
            (Ok((requested, current, optional)), Ok(claim)) => {
                assert_eq!(claim.service, "shop/web");
                assert_eq!(claim.requested, ips(requested), "{yaml}");
                assert_eq!(claim.current, ips(current), "{yaml}");
                assert_eq!(claim.second_optional, *optional, "{yaml}");
            }
            (Err(part), Err(refusal)) => {
                assert_eq!(refusal.reason(), "InvalidRequest");
                assert!(refusal.to_string().contains(part), "{yaml}: {refusal}");
            }
            (want, got) => panic!("{yaml}: want {want:?}, got {got:?}"),
        }
    }
}

#[test]
fn only_load_balancers_of_our_class_are_ours() {
    let cases = [
        ("{type: LoadBalancer, loadBalancerClass: nonstop.dev/bgp}", false, true),
        ("{type: LoadBalancer, loadBalancerClass: nonstop.dev/bgp}", true, true),
        ("{type: LoadBalancer, loadBalancerClass: metallb.io/bgp}", true, false),
        ("{type: LoadBalancer}", false, false),
        ("{type: LoadBalancer}", true, true),
        ("{type: ClusterIP}", true, false),
        ("{type: NodePort, loadBalancerClass: nonstop.dev/bgp}", true, false),
    ];
    for (spec, unclassed, want) in cases {
        let svc = service(&format!("metadata: {{name: web}}\nspec: {spec}"));
        assert_eq!(is_ours(&svc, unclassed), want, "{spec} unclassed={unclassed}");
    }
}
