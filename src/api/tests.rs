//! The BgpGateway API as users and API servers see it: the example parses,
//! round-trips, and passes the generated schema; bad specs are refused by the
//! schema (as an API server would) and by the operator's own checks, with
//! messages that name the field.

use kube::CustomResourceExt;
use serde_json::{Value, json};

use super::*;
use crate::crd;

const EXAMPLE: &str = include_str!("../../examples/gateway.yaml");

fn example_value() -> Value {
    serde_yaml_ng::from_str(EXAMPLE).expect("examples/gateway.yaml is YAML")
}

fn example() -> BgpGateway {
    serde_yaml_ng::from_str(EXAMPLE).expect("examples/gateway.yaml parses into BgpGateway")
}

/// What an API server with this CRD says about an object: OpenAPI schema
/// errors, then CEL rule errors, each as "path: message".
fn server_verdict(object: &Value) -> Vec<String> {
    let crd = serde_json::to_value(BgpGateway::crd()).unwrap();
    let schema = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let validator = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft4)
        .should_validate_formats(false)
        .build(schema)
        .expect("the generated schema compiles");
    let mut errors: Vec<String> = validator
        .iter_errors(object)
        .map(|e| format!("{}: {e}", dotted(&e.instance_path().to_string())))
        .collect();
    if let Err(cel) = kube::core::cel::Validator::new().validate(schema, object, None) {
        errors.extend(cel.into_vec().iter().map(|e| e.to_string()));
    }
    errors
}

/// "/spec/peers/0/holdTime" → "spec.peers[0].holdTime"
fn dotted(pointer: &str) -> String {
    let mut out = String::new();
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if part.chars().all(|c| c.is_ascii_digit()) {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// The example with one field set (added when absent) at a JSON pointer.
fn example_with(pointer: &str, value: Value) -> Value {
    let mut v = example_value();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = v.pointer_mut(parent).unwrap_or_else(|| panic!("{parent} not in the example"));
    match parent {
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        Value::Object(fields) => {
            fields.insert(key.to_string(), value);
        }
        other => panic!("{pointer}: cannot set a field in {other}"),
    }
    v
}

#[test]
fn the_example_parses_and_is_valid_everywhere() {
    let gw = example();
    assert_eq!(gw.spec.asn, 65001);
    assert_eq!(gw.spec.peers.len(), 2);
    assert_eq!(gw.spec.peers[0].graceful_restart.long_lived_stale_time, 3600);
    assert_eq!(gw.spec.upgrade.strategy, Strategy::Handoff);
    assert_eq!(gw.spec.upgrade.pause_seconds, 30);
    gw.spec.validate().unwrap_or_else(|p| panic!("example breaks rules:\n{p}"));
    let verdict = server_verdict(&example_value());
    assert!(verdict.is_empty(), "schema refuses the example: {verdict:#?}");
}

#[test]
fn a_gateway_round_trips_through_yaml_with_its_status() {
    let mut gw = example();
    gw.status = Some(BgpGatewayStatus {
        observed_generation: Some(3),
        current_revision: Some("5d8f7c".into()),
        update_revision: Some("9a1b2c".into()),
        ready: Some("2/3".into()),
        sessions: Some("4/6".into()),
        rollout: Some("Progressing 1/3".into()),
        nodes: vec![NodeStatus {
            node: "node-1".into(),
            pod: Some("edge-9a1b2c-node-1".into()),
            revision: Some("9a1b2c".into()),
            active_agent: Some("0.1.0".into()),
            sessions: SessionCounts { established: 2, configured: 2 },
            routes_advertised: 2,
            last_upgrade: Some(UpgradeRecord {
                mode: Strategy::Handoff,
                pause_ms: Some(4),
                result: UpgradeResult::Succeeded,
                time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-11-21T18:00:00Z".parse().unwrap(),
                ),
                reason: None,
            }),
            maintenance: None,
            peers: vec![
                crate::api::PeerState {
                    peer: "10.99.0.1".into(),
                    state: "Active".into(),
                    last_error: Some("connection refused".into()),
                    ..Default::default()
                },
                crate::api::PeerState {
                    peer: "10.99.0.2".into(),
                    state: "Established".into(),
                    established_since: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                        "2026-11-21T18:00:01Z".parse().unwrap(),
                    )),
                    routes_received: 3,
                    routes_advertised: 2,
                    ..Default::default()
                },
            ],
            checks_failing: vec![crate::api::CheckState {
                prefix: "203.0.113.10/32".into(),
                verdict: "down".into(),
                since: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    "2026-11-21T18:00:02Z".parse().unwrap(),
                )),
                detail: "HTTP 503, not 200".into(),
            }],
        }],
        ..Default::default()
    });
    let yaml = serde_yaml_ng::to_string(&gw).unwrap();
    let back: BgpGateway = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(back.spec, gw.spec);
    assert_eq!(back.status, gw.status);
    assert!(yaml.contains("pauseMs: 4") && yaml.contains("routesAdvertised: 2"), "{yaml}");
    assert!(
        yaml.contains("peers:")
            && yaml.contains("lastError: connection refused")
            && yaml.contains("establishedSince: 2026-11-21T18:00:01Z")
            && yaml.contains("routesReceived: 3"),
        "{yaml}"
    );
}

/// A gateway written under a newer CRD (fields this operator does not
/// know, some filled in by the API server's defaults) still decodes, the
/// new fields passed over: one such field must not stop the operator from
/// reading every gateway (a list fails whole on one bad object). The
/// agent's own config file stays strict (see `nonstop_agent::config`).
#[test]
fn a_gateway_from_a_newer_crd_decodes_without_its_new_fields() {
    for pointer in [
        "/spec/futureField",
        "/spec/peers/0/futureField",
        "/spec/peers/0/gracefulRestart/futureField",
        "/spec/peers/0/import/maxPrefixes/futureField",
        "/spec/announce/0/futureField",
        "/spec/shutdown/futureField",
    ] {
        let newer = example_with(pointer, json!({"enabled": true}));
        let gateway: BgpGateway = serde_json::from_value(newer)
            .unwrap_or_else(|e| panic!("{pointer}: a newer gateway does not decode: {e}"));
        assert_eq!(gateway.spec, example().spec, "{pointer}");
    }
}

#[test]
fn defaults_fill_in_what_a_short_spec_leaves_out() {
    let gw: BgpGateway = serde_yaml_ng::from_str(
        "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGateway\nmetadata: {name: gw}\n\
         spec:\n  image: nonstop-agent:v1\n  asn: 65001\n  peers: [{address: 192.0.2.1, asn: 65000}]\n",
    )
    .unwrap();
    assert_eq!(gw.spec.upgrade, Upgrade::default());
    assert_eq!(gw.spec.upgrade.handoff_timeout_seconds, 60);
    assert_eq!(gw.spec.shutdown.drain_seconds, 10);
    assert_eq!(gw.spec.peers[0].hold_time, 90);
    gw.spec.validate().unwrap();
}

/// Specs an API server must refuse, with what its message must say.
#[test]
fn the_schema_refuses_bad_specs_naming_the_field() {
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "hold time out of range",
            example_with("/spec/peers/0/holdTime", json!(70000)),
            &["spec.peers[0].holdTime", "70000"],
        ),
        (
            "hold time 2",
            example_with("/spec/peers/0/holdTime", json!(2)),
            &["spec.peers", "holdTime must be 0", "at least 3"],
        ),
        (
            "keepalive not below hold",
            example_with("/spec/peers/0/keepaliveTime", json!(90)),
            &["spec.peers", "keepaliveTime must be"],
        ),
        (
            "unknown strategy",
            example_with("/spec/upgrade/strategy", json!("BlueGreen")),
            &["spec.upgrade.strategy", "BlueGreen"],
        ),
        ("asn 0", example_with("/spec/asn", json!(0)), &["spec.asn", "minimum"]),
        ("asn beyond 32 bits", example_with("/spec/asn", json!(4294967296u64)), &["spec.asn"]),
        (
            "restart time beyond 12 bits",
            example_with("/spec/peers/0/gracefulRestart/restartTime", json!(4096)),
            &["spec.peers[0].gracefulRestart.restartTime", "4096"],
        ),
        (
            "unknown family",
            example_with("/spec/peers/0/families", json!(["l2vpn-evpn"])),
            &["spec.peers[0].families[0]", "l2vpn-evpn"],
        ),
        ("no peers", example_with("/spec/peers", json!([])), &["spec.peers", "[]"]),
        (
            "peer without asn",
            example_with("/spec/peers/1", json!({"address": "2001:db8::1"})),
            &["spec.peers[1]", "\"asn\" is a required property"],
        ),
        (
            "community junk",
            example_with("/spec/announce/0/communities", json!(["not a community"])),
            &["spec.announce[0].communities[0]", "not a community"],
        ),
        (
            "prefix junk",
            example_with("/spec/announce/0/prefix", json!("somewhere")),
            &["spec.announce[0].prefix", "somewhere"],
        ),
        (
            "zero nodes in flight",
            example_with("/spec/upgrade/maxNodesInFlight", json!(0)),
            &["spec.upgrade.maxNodesInFlight"],
        ),
        ("admin port 0", example_with("/spec/adminPort", json!(0)), &["spec.adminPort"]),
        ("listen port 0", example_with("/spec/listen", json!({"port": 0})), &["spec.listen.port"]),
        (
            "hold time as a string",
            example_with("/spec/peers/0/holdTime", json!("90s")),
            &["spec.peers[0].holdTime", "\"90s\"", "integer"],
        ),
        (
            "multihop on iBGP",
            example_with(
                "/spec/peers/1",
                json!({"address": "2001:db8::1", "asn": 65001, "ebgpMultihop": 2}),
            ),
            &["ebgpMultihop"],
        ),
    ];
    for (name, object, needles) in cases {
        let verdict = server_verdict(&object).join("\n");
        assert!(!verdict.is_empty(), "{name}: accepted");
        for needle in needles {
            assert!(verdict.contains(needle), "{name}: `{verdict}` lacks `{needle}`");
        }
    }
}

/// The operator's own check refuses what the schema cannot see (and what CEL
/// would, on servers too old to run CEL), naming the field under `spec.`.
#[test]
fn the_operator_refuses_what_the_schema_cannot_see() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "host bits",
            example_with("/spec/announce/0/prefix", json!("203.0.113.1/24")),
            "spec.announce[0].prefix: 203.0.113.1/24 has host bits set; did you mean 203.0.113.0/24?",
        ),
        (
            "hold time 2",
            example_with("/spec/peers/0/holdTime", json!(2)),
            "spec.peers[0].holdTime: holdTime must be 0",
        ),
        (
            "next hop family",
            example_with("/spec/announce/1/nextHop", json!("192.0.2.9")),
            "spec.announce[1].nextHop: 192.0.2.9 is not of the same family",
        ),
        (
            "multihop on iBGP",
            example_with(
                "/spec/peers/1",
                json!({"address": "2001:db8::1", "asn": 65001, "ebgpMultihop": 2}),
            ),
            "spec.peers[1].ebgpMultihop: applies to eBGP only",
        ),
        ("AS_TRANS", example_with("/spec/asn", json!(23456)), "spec.asn: AS 23456 is AS_TRANS"),
        (
            "empty image",
            example_with("/spec/image", json!(" ")),
            "spec.image: must name the agent image, or be left out",
        ),
        (
            "admin port on the BGP port",
            example_with("/spec/adminPort", json!(179)),
            "spec.adminPort: 179 is the BGP port",
        ),
        (
            "admin port on a moved BGP port",
            {
                let mut v = example_with("/spec/listen", json!({"port": 1179, "address": "::"}));
                v["spec"]["adminPort"] = json!(1179);
                v
            },
            "spec.adminPort: 1179 is the BGP port (spec.listen.port)",
        ),
        (
            "listen address junk",
            example_with("/spec/listen", json!({"address": "every"})),
            "spec.listen.address: invalid IP address syntax",
        ),
        (
            "passive peer and no listener",
            {
                let mut v = example_with("/spec/listen", json!({"enabled": false}));
                v["spec"]["peers"][1]["passive"] = json!(true);
                v
            },
            "spec.peers[1].passive: 2001:db8::1 could never connect: the gateway has no listener",
        ),
    ];
    for (name, object, needle) in cases {
        let message = match BgpGateway::checked(object) {
            Err(p) => p.to_string(),
            Ok(_) => panic!("{name}: accepted"),
        };
        assert!(message.contains(needle), "{name}: `{message}` lacks `{needle}`");
    }
}

/// The CEL rules in the CRD and the Rust rules say the same, case by case, so
/// an old API server (no CEL) plus the operator refuses exactly what a new one would.
#[test]
fn cel_rules_and_rust_rules_agree() {
    let mut cases = vec![];
    for hold in [None, Some(0), Some(1), Some(2), Some(3), Some(9), Some(90)] {
        for keepalive in
            [None, Some(0), Some(1), Some(3), Some(8), Some(9), Some(30), Some(89), Some(90)]
        {
            cases.push((hold, keepalive));
        }
    }
    for (hold, keepalive) in cases {
        let mut peer = json!({"address": "192.0.2.1", "asn": 65000});
        if let Some(h) = hold {
            peer["holdTime"] = json!(h);
        }
        if let Some(k) = keepalive {
            peer["keepaliveTime"] = json!(k);
        }
        let object = example_with("/spec/peers/0", peer);
        let cel_ok = server_verdict(&object).is_empty();
        let rust_ok = BgpGateway::checked(object).is_ok();
        assert_eq!(cel_ok, rust_ok, "hold {hold:?} keepalive {keepalive:?}");
    }
}

/// The same for the listener: without one, no peer may be passive.
#[test]
fn cel_and_rust_agree_on_passive_peers_without_a_listener() {
    for enabled in [None, Some(true), Some(false)] {
        for passive in [None, Some(false), Some(true)] {
            let mut object = example_value();
            if let Some(e) = enabled {
                object["spec"]["listen"] = json!({"enabled": e});
            }
            if let Some(p) = passive {
                object["spec"]["peers"][0]["passive"] = json!(p);
            }
            let cel_ok = server_verdict(&object).is_empty();
            let rust_ok = BgpGateway::checked(object).is_ok();
            assert_eq!(cel_ok, rust_ok, "listen enabled {enabled:?}, passive {passive:?}");
            assert_eq!(rust_ok, !(enabled == Some(false) && passive == Some(true)));
        }
    }
}

/// The same for a peer's address: given, or taken from each node
/// (`addressFrom`), never both and never neither.
#[test]
fn cel_and_rust_agree_on_a_peers_address_or_address_from() {
    let from = json!({"nodeAnnotation": "topology.example/tor"});
    for address in [None, Some(json!("192.0.2.1"))] {
        for address_from in [None, Some(from.clone())] {
            let mut object = example_value();
            let peer = object["spec"]["peers"][0].as_object_mut().unwrap();
            peer.remove("address");
            if let Some(a) = &address {
                peer.insert("address".into(), a.clone());
            }
            if let Some(f) = &address_from {
                peer.insert("addressFrom".into(), f.clone());
            }
            let said = server_verdict(&object);
            let checked = BgpGateway::checked(object);
            let case = format!("address {address:?}, addressFrom {address_from:?}");
            assert_eq!(said.is_empty(), checked.is_ok(), "{case}: {said:?} {:?}", checked.err());
            assert_eq!(checked.is_ok(), address.is_some() != address_from.is_some(), "{case}");
            if let Err(e) = checked {
                assert!(e.to_string().contains("spec.peers[0].address"), "{case}: {e}");
            }
        }
    }
}

/// `addressFrom` names one source: a node annotation or the node's
/// default gateway, not both and not neither.
#[test]
fn cel_and_rust_agree_on_one_source_of_address_from() {
    let annotation = ("nodeAnnotation", json!("topology.example/tor"));
    let gateway = ("defaultGateway", json!({"family": "ipv6"}));
    let sources =
        [vec![], vec![annotation.clone()], vec![gateway.clone()], vec![annotation, gateway]];
    for from in sources {
        let mut object = example_value();
        let peer = object["spec"]["peers"][0].as_object_mut().unwrap();
        peer.remove("address");
        let named: serde_json::Map<String, serde_json::Value> =
            from.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        peer.insert("addressFrom".into(), json!(named));
        let said = server_verdict(&object);
        let checked = BgpGateway::checked(object);
        let case = format!("addressFrom {named:?}");
        assert_eq!(said.is_empty(), checked.is_ok(), "{case}: {said:?} {:?}", checked.err());
        assert_eq!(checked.is_ok(), from.len() == 1, "{case}");
        if let Err(e) = checked {
            assert!(
                e.to_string().contains("spec.peers[0].addressFrom: names one source"),
                "{case}: {e}"
            );
        }
    }
}

#[test]
fn generated_crds_match_the_types() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in crd::DIRS {
        for (file, yaml) in crd::all() {
            let relative = format!("{dir}/{file}");
            let on_disk = std::fs::read_to_string(root.join(&relative)).unwrap_or_default();
            assert!(
                on_disk == yaml,
                "{relative} is stale: run `cargo run --bin crdgen` and commit the result"
            );
        }
        let mut files: Vec<_> = std::fs::read_dir(root.join(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let mut want: Vec<_> = crd::all().into_iter().map(|(file, _)| file).collect();
        want.sort();
        assert_eq!(files, want, "{dir} holds exactly the generated CRDs");
    }
}

#[test]
fn kubectl_get_shows_the_state_at_a_glance() {
    let crd = BgpGateway::crd();
    let columns: Vec<_> = crd.spec.versions[0]
        .additional_printer_columns
        .as_ref()
        .unwrap()
        .iter()
        .map(|c| (c.name.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("ASN", ".spec.asn"),
            ("Ready", ".status.ready"),
            ("Sessions", ".status.sessions"),
            ("Image", ".status.image"),
            ("Rollout", ".status.rollout"),
            ("Revision", ".status.currentRevision"), // -o wide
            ("Age", ".metadata.creationTimestamp"),
        ]
    );
    assert_eq!(crd.spec.names.short_names.as_deref(), Some(&["bgpgw".to_string()][..]));
    assert!(crd.spec.versions[0].subresources.as_ref().unwrap().status.is_some());
}

/// Each list, string and map of the spec with the bound it has (None: unbounded).
fn bounds_of(node: &Value, path: &str, out: &mut Vec<(String, Option<u64>)>) {
    let bound = |key: &str| node.get(key).and_then(Value::as_u64);
    match node.get("type").and_then(Value::as_str) {
        Some("array") => out.push((path.to_string(), bound("maxItems"))),
        Some("string") if node.get("enum").is_none() => {
            out.push((path.to_string(), bound("maxLength")))
        }
        Some("object") if node.get("additionalProperties").is_some_and(Value::is_object) => {
            out.push((path.to_string(), bound("maxProperties")))
        }
        _ => {}
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            bounds_of(child, &format!("{path}.{name}"), out);
        }
    }
    for (key, suffix) in [("items", "[]"), ("additionalProperties", "{}")] {
        if let Some(child) = node.get(key).filter(|c| c.is_object()) {
            bounds_of(child, &format!("{path}{suffix}"), out);
        }
    }
}

fn spec_schema() -> Value {
    let crd = serde_json::to_value(BgpGateway::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
}

/// An API server with CEL prices rules by the largest lists and strings the
/// schema allows: every one of them has a bound.
#[test]
fn every_list_string_and_map_of_the_spec_is_bounded() {
    let mut found = vec![];
    bounds_of(&spec_schema(), "spec", &mut found);
    let unbounded: Vec<&String> =
        found.iter().filter(|(_, b)| b.is_none()).map(|(p, _)| p).collect();
    assert!(unbounded.is_empty(), "unbounded in the CRD: {unbounded:#?}");
    // Spot checks of the bounds chosen for the domain.
    let bound = |path: &str| found.iter().find(|(p, _)| p == path).and_then(|(_, b)| *b);
    assert_eq!(bound("spec.peers"), Some(1000));
    assert_eq!(bound("spec.announce"), Some(4096));
    assert_eq!(bound("spec.announce[].communities"), Some(1000));
    assert_eq!(bound("spec.peers[].address"), Some(45));
    assert!(found.len() > 20, "walked only {} fields", found.len());
}

/// Kubernetes' budget for CEL in a CRD (k8s.io/apiserver's cel config): one
/// call of a rule may cost at most 1,000,000 at run time; the estimate of
/// each rule is held to 10,000,000 and all rules together to 100,000,000 when
/// the CRD is created. We hold every rule's worst case to the strictest.
const PER_CALL_LIMIT: u64 = 1_000_000;

/// The rules of the CRD, each with where it applies.
fn cel_rules(node: &Value, at: &mut Vec<String>, out: &mut Vec<(Vec<String>, String)>) {
    for rule in node["x-kubernetes-validations"].as_array().into_iter().flatten() {
        out.push((at.clone(), rule["rule"].as_str().unwrap().to_string()));
    }
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            at.push(name.clone());
            cel_rules(child, at, out);
            at.pop();
        }
    }
}

/// A worst-case cost for one rule: every token (field, literal, operator)
/// costs at most 1 per evaluation, and a macro over a list (`all`, `exists`,
/// `map`, `filter`) evaluates its body once per item, up to `maxItems`.
/// Rules that work on strings would cost by their length: there are none,
/// and the estimate refuses to price one.
fn worst_cost(root: &Value, at: &[String], rule: &str) -> u64 {
    for string_op in ["matches(", "contains(", "startsWith(", "endsWith(", "split("] {
        assert!(!rule.contains(string_op), "{rule}: string functions are not priced here");
    }
    let tokens =
        rule.split(|c: char| !(c.is_alphanumeric() || c == '_')).filter(|t| !t.is_empty()).count()
            as u64;
    let mut iterations = 1;
    for (i, _) in rule.match_indices(".all(") {
        // The list the macro iterates: `self` or `self.a.b` where the rule applies.
        let receiver = rule[..i].rsplit([' ', '(', '!']).next().unwrap();
        let mut node = at.iter().fold(root, |n, step| &n["properties"][step]);
        let mut steps = receiver.split('.');
        assert_eq!(steps.next(), Some("self"), "{rule}: a macro over {receiver}");
        for step in steps {
            node = &node["properties"][step];
        }
        let max =
            node["maxItems"].as_u64().unwrap_or_else(|| panic!("{rule}: {receiver} unbounded"));
        iterations += max;
    }
    for other in [".exists(", ".exists_one(", ".map(", ".filter("] {
        assert!(!rule.contains(other), "{rule}: only all() is priced here");
    }
    tokens * iterations
}

#[test]
fn every_cel_rule_costs_less_than_the_api_server_allows() {
    let crd = serde_json::to_value(BgpGateway::crd()).unwrap();
    let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
    let mut rules = vec![];
    cel_rules(root, &mut vec![], &mut rules);
    assert!(rules.len() >= 3, "{rules:?}");
    for (at, rule) in &rules {
        let cost = worst_cost(root, at, rule);
        println!("{:<20} worst case {cost:>9} of {PER_CALL_LIMIT}: {rule}", at.join("."));
        assert!(cost < PER_CALL_LIMIT, "{rule} at {at:?} may cost {cost}");
    }
}
