use super::*;
use crate::api::BgpGateway;

fn example() -> BgpGateway {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/gateway.yaml"))
            .unwrap();
    let mut gw: BgpGateway = serde_yaml_ng::from_str(&text).unwrap();
    gw.metadata.uid = Some("u1".into());
    gw
}

#[test]
fn the_revision_changes_with_what_reaches_the_pod_only() {
    let gw = example();
    let base = revision(&gw.spec);
    assert_eq!(base.len(), 10);
    assert_eq!(base, revision(&example().spec), "stable");
    let changed = |f: &dyn Fn(&mut BgpGateway)| {
        let mut g = example();
        f(&mut g);
        revision(&g.spec) != base
    };
    assert!(changed(&|g| g.spec.image = "nonstop-agent:v2".into()));
    assert!(changed(&|g| g.spec.peers[0].hold_time = 30));
    assert!(changed(&|g| g.spec.announce.pop().map(drop).unwrap_or(())));
    assert!(changed(&|g| g.spec.admin_port = 9180));
    assert!(changed(&|g| g.spec.admin_bind = crate::api::AdminBind::Node));
    assert!(changed(&|g| g.spec.listen.port = 1179));
    assert!(changed(&|g| g.spec.listen.enabled = false));
    assert!(!changed(&|g| g.spec.upgrade.pause_seconds = 5), "upgrade settings do not roll");
    assert!(!changed(&|g| g.spec.upgrade.paused = true));
    assert!(!changed(&|g| {
        g.spec.node_selector.clear();
    }));
}

/// Left out, `listen` renders the listener agents always had (so an
/// operator upgrade rolls no gateway); turned off, the agent gets none.
#[test]
fn the_listener_reaches_the_agent_config() {
    let mut gw = example();
    assert_eq!(agent_config(&gw.spec).listen, Some("0.0.0.0:179".parse().unwrap()));
    gw.spec.listen.address = "::".parse().unwrap();
    gw.spec.listen.port = 1179;
    assert_eq!(agent_config(&gw.spec).listen, Some("[::]:1179".parse().unwrap()));
    gw.spec.listen.enabled = false;
    let yaml = serde_yaml_ng::to_string(&agent_config(&gw.spec)).unwrap();
    assert!(yaml.contains("listen: null"), "{yaml}");
    let back = nonstop_agent::config::Config::parse(&yaml, std::path::Path::new("agent.yaml"));
    assert_eq!(back.unwrap().listen, None);
}

#[test]
fn the_pod_is_pinned_host_networked_and_keeps_state_on_the_node() {
    let gw = example();
    let rev = revision(&gw.spec);
    let pod = pod(&gw, "node-2", &rev, 1_800_000_000_000, LogFormat::Text, &Default::default());
    assert_eq!(pod.metadata.name.as_deref(), Some(format!("edge-node-2-{rev}-u1").as_str()));
    let spec = pod.spec.unwrap();
    assert_eq!(spec.host_network, Some(true));
    let terms = &spec.affinity.unwrap().node_affinity.unwrap();
    let term = &terms
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms[0];
    let field = &term.match_fields.as_ref().unwrap()[0];
    assert_eq!(
        (field.key.as_str(), field.values.as_deref()),
        ("metadata.name", Some(&["node-2".to_string()][..]))
    );
    assert!(spec.node_name.is_none(), "the scheduler places it");
    // grace > handoff timeout + drain
    assert!(spec.termination_grace_period_seconds.unwrap() > 60 + 10);
    let volumes = spec.volumes.unwrap();
    let state = volumes.iter().find(|v| v.name == "state").unwrap();
    assert_eq!(state.host_path.as_ref().unwrap().path, "/var/run/nonstop/default/edge");
    // The MD5 password is mounted from its Secret, never in the ConfigMap.
    assert!(
        volumes
            .iter()
            .any(|v| v.secret.as_ref().and_then(|s| s.secret_name.as_deref())
                == Some("bgp-passwords"))
    );
    let container = &spec.containers[0];
    assert!(container.ports.is_none(), "host ports would keep the new pod off the old one's node");
    let mounts = container.volume_mounts.as_ref().unwrap();
    assert!(mounts.iter().any(|m| m.mount_path == "/etc/nonstop/secrets/bgp-passwords"));
    let args = container.args.clone().unwrap();
    assert!(args.windows(2).any(|w| w == ["--router-id", "$(NODE_IP)"]), "{args:?}");
    let probe = container.readiness_probe.as_ref().unwrap().exec.as_ref().unwrap();
    assert!(probe.command.as_ref().unwrap().contains(&format!("edge-node-2-{rev}-u1")));
    // One capability, even with MD5 and GTSM peers (this example has both).
    assert!(gw.spec.peers.iter().any(|p| p.ttl_security && p.password_secret_ref.is_some()));
    let security = container.security_context.as_ref().unwrap();
    let caps = security.capabilities.as_ref().unwrap();
    assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
    assert_eq!(caps.add.as_deref(), Some(&["NET_BIND_SERVICE".to_string()][..]));
    assert_eq!(
        (security.read_only_root_filesystem, security.allow_privilege_escalation),
        (Some(true), Some(false))
    );
    assert_eq!(pod.metadata.owner_references.unwrap()[0].controller, Some(true));

    let cm = config_map(&gw, &rev);
    assert_eq!(cm.immutable, Some(true));
    let yaml = &cm.data.unwrap()["agent.yaml"];
    assert!(
        yaml.contains("passwordSecretRef") && yaml.contains("tor-a"),
        "names the Secret: {yaml}"
    );
    assert!(yaml.contains("0.0.0.0:9179"), "{yaml}");
    let back: nonstop_agent::config::Config = serde_yaml_ng::from_str(yaml).unwrap();
    assert_eq!(back, agent_config(&gw.spec), "the agent reads what was rendered");
}

/// The admin port listens on the BGP listener's family of wildcard: a
/// gateway for dual-stack or IPv6-only nodes (listen `::`) is read by the
/// operator at an IPv6 InternalIP too.
#[test]
fn the_admin_port_follows_the_listeners_family() {
    let cases: &[(&str, bool, &str)] = &[
        ("0.0.0.0", true, "0.0.0.0:9179"),
        ("::", true, "[::]:9179"),
        ("192.0.2.10", true, "0.0.0.0:9179"),
        ("2001:db8::10", true, "[::]:9179"),
        ("::", false, "0.0.0.0:9179"),
    ];
    for (listen, enabled, admin) in cases {
        let mut gw = example();
        gw.spec.listen.address = listen.parse().unwrap();
        gw.spec.listen.enabled = *enabled;
        gw.spec.peers.iter_mut().for_each(|p| p.passive = false);
        assert_eq!(agent_config(&gw.spec).admin.to_string(), *admin, "listen {listen} {enabled}");
    }
}

/// A gateway deleted and applied again under the same name gets pods and
/// ConfigMaps of its own: the old one's, of the same revision, may still be
/// there until the kubelet and the garbage collector remove them, and a
/// create under the same name would be refused until then.
#[test]
fn a_gateway_applied_again_does_not_share_the_old_ones_names() {
    let mut old = example();
    old.metadata.uid = Some("0b1e0d2c-aaaa-bbbb-cccc-000000000001".into());
    let mut again = old.clone();
    again.metadata.uid = Some("7f3a9c10-aaaa-bbbb-cccc-000000000002".into());
    let rev = revision(&old.spec);
    let (a, b) = (config_map(&old, &rev), config_map(&again, &rev));
    assert_eq!(a.metadata.name.as_deref(), Some(format!("edge-{rev}-0b1e0d2c").as_str()));
    assert_ne!(a.metadata.name, b.metadata.name);
    let made =
        |gw| pod(gw, "node-1", &rev, 1_800_000_000_000, LogFormat::Text, &Default::default());
    let (old_pod, pod) = (made(&old), made(&again));
    assert_eq!(
        old_pod.metadata.name.as_deref(),
        Some(format!("edge-node-1-{rev}-0b1e0d2c").as_str())
    );
    assert_eq!(pod.metadata.name.as_deref(), Some(format!("edge-node-1-{rev}-7f3a9c10").as_str()));
    let volumes = pod.spec.unwrap().volumes.unwrap();
    let mounted = volumes.iter().find_map(|v| v.config_map.as_ref()).map(|c| c.name.clone());
    assert_eq!(mounted, b.metadata.name, "the pod mounts its own gateway's config");
}

#[test]
fn long_node_names_still_make_valid_pod_names() {
    let mut gw = example();
    gw.metadata.uid = Some("0b1e0d2c-aaaa-bbbb-cccc-000000000001".into());
    let node = "n".repeat(250);
    let name = pod_name(&gw, &node, "0123456789");
    assert!(name.len() <= 253 && name.ends_with("-0123456789-0b1e0d2c"), "{name}");
    assert_ne!(name, pod_name(&gw, &"m".repeat(250), "0123456789"));
}

/// Gateway and node names may have 253 characters, label values 63: every
/// label of the pod is a valid label value, distinct names stay distinct, and
/// the full names are in the pod's annotations, where the operator reads them.
#[test]
fn long_gateway_and_node_names_still_make_valid_labels() {
    let valid = |v: &str| {
        v.len() <= 63
            && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
            && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
    };
    for (gateway, node) in
        [("edge", "node-1"), (&*"g".repeat(253), &*format!("{}.example.com", "n".repeat(200)))]
    {
        let mut gw = example();
        gw.metadata.name = Some(gateway.into());
        let p = pod(
            &gw,
            node,
            &revision(&gw.spec),
            1_800_000_000_000,
            LogFormat::Text,
            &Default::default(),
        );
        let labels = p.metadata.labels.clone().unwrap();
        for (k, v) in &labels {
            assert!(valid(v), "label {k}={v} ({} characters)", v.len());
        }
        assert_eq!(labels[GATEWAY_LABEL], label_value(gateway));
        let annotations = p.metadata.annotations.clone().unwrap();
        assert_eq!((&*annotations[GATEWAY_LABEL], &*annotations[NODE_LABEL]), (gateway, node));
        assert_eq!(crate::operator::observe::pod_view(&p).map(|v| v.node), Some(node.to_string()));
    }
    assert_eq!(label_value("edge"), "edge", "short names are their own label");
    let (a, b) = ("a".repeat(100), format!("{}b", "a".repeat(99)));
    assert_ne!(label_value(&a), label_value(&b), "same first 46 characters, distinct labels");
}

#[test]
fn the_admin_port_can_be_kept_to_the_node_address() {
    let args = |gw: &BgpGateway| {
        let pod = pod(
            gw,
            "node-1",
            &revision(&gw.spec),
            1_800_000_000_000,
            LogFormat::Text,
            &Default::default(),
        );
        pod.spec.unwrap().containers[0].args.clone().unwrap().join(" ")
    };
    let mut gw = example();
    assert!(!args(&gw).contains("--admin-ip"), "every address by default");
    gw.spec.admin_bind = crate::api::AdminBind::Node;
    assert!(args(&gw).contains("--admin-ip $(NODE_IP)"), "{}", args(&gw));
}

/// The pod declares no ports (host network): a scraper finds `/metrics` at
/// the pod's address and the port in this annotation, as the chart's
/// PodMonitor does.
#[test]
fn agent_pods_name_their_metrics_port_in_an_annotation() {
    let mut gw = example();
    gw.spec.admin_port = 9443;
    let pod = pod(
        &gw,
        "node-1",
        &revision(&gw.spec),
        1_800_000_000_000,
        LogFormat::Text,
        &Default::default(),
    );
    assert_eq!(pod.metadata.annotations.unwrap()[ADMIN_PORT_ANNOTATION], "9443");
    assert_eq!(pod.spec.unwrap().containers[0].ports, None, "no host ports");
}

#[test]
fn agent_pods_tolerate_what_kubernetes_taints_nodes_with() {
    let gw = example();
    let pod = pod(
        &gw,
        "node-1",
        &revision(&gw.spec),
        1_800_000_000_000,
        LogFormat::Text,
        &Default::default(),
    );
    let tolerations = pod.spec.unwrap().tolerations.unwrap();
    for key in [
        "node.kubernetes.io/unschedulable",
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let t = tolerations.iter().find(|t| t.key.as_deref() == Some(key)).expect(key);
        assert_eq!(t.toleration_seconds, None, "{key}: never evicted for it");
    }
}

#[test]
fn the_log_format_reaches_the_agent_only_when_json() {
    let gw = example();
    let rev = revision(&gw.spec);
    for (format, want) in [(LogFormat::Text, None), (LogFormat::Json, Some("json"))] {
        let pod = pod(&gw, "node-1", &rev, 1_800_000_000_000, format, &Default::default());
        let spec = pod.spec.unwrap();
        let env = spec.containers[0].env.clone().unwrap_or_default();
        let got = env.iter().find(|e| e.name == "NONSTOP_LOG_FORMAT");
        assert_eq!(got.and_then(|e| e.value.as_deref()), want, "{format:?}");
        assert_eq!(pod.metadata.name.as_deref(), Some(format!("edge-node-1-{rev}-u1").as_str()));
    }
}

#[test]
fn each_incarnation_of_a_gateway_mounts_its_own_api_token() {
    let mut again = example();
    again.metadata.uid = Some("u2-made-again".into());
    let (first, second) = (api_secret_name(&example()), api_secret_name(&again));
    assert_ne!(first, second, "a gateway made again must not mount the old one's Secret");
    let pod =
        pod(&again, "node-1", &revision(&again.spec), 1, LogFormat::Text, &Default::default());
    let spec = pod.spec.unwrap();
    let mounted: Vec<_> =
        spec.volumes.unwrap().into_iter().filter_map(|v| v.secret?.secret_name).collect();
    assert!(mounted.contains(&second), "{mounted:?}");
    let args = spec.containers[0].args.clone().unwrap();
    assert!(
        args.windows(2).any(|w| w == ["--api-token-file", "/etc/nonstop/api/token"]),
        "{args:?}"
    );
    let secret = api_secret(&again, "t0ken");
    assert_eq!(secret.metadata.name.as_deref(), Some(second.as_str()));
    assert_eq!(secret.metadata.owner_references.unwrap()[0].uid, "u2-made-again");
}

/// Peers chosen per rack, or addressed per node: the pod carries its
/// node's labels, or annotations, as its own annotations, which the agent
/// reads as files the kubelet keeps current. Told neither, the pod is as it
/// always was.
#[test]
fn a_pod_whose_peers_are_chosen_or_addressed_per_node_reads_its_node() {
    let gw = example();
    let rev = revision(&gw.spec);
    let labels = r#"{"rack":"a"}"#;
    let addresses = r#"{"example.com/tor":"10.1.0.1"}"#;
    let told = |labels: Option<&str>, addresses: Option<&str>| per_node::Facts {
        labels: labels.map(String::from),
        addresses: addresses.map(String::from),
        ..Default::default()
    };
    // (what the pod is told, each file with its flag and pod annotation)
    type Files<'a> = &'a [(&'a str, &'a str, &'a str, &'a str)];
    let labels_file = ("labels", "--node-labels-file", per_node::ANNOTATION, labels);
    let addresses_file = ("annotations", "--node-annotations-file", per_node::ADDRESSES, addresses);
    let cases: &[(per_node::Facts, Files)] = &[
        (told(Some(labels), None), &[labels_file]),
        (told(None, Some(addresses)), &[addresses_file]),
        (told(Some(labels), Some(addresses)), &[labels_file, addresses_file]),
    ];
    for (facts, files) in cases {
        let pod = pod(&gw, "node-1", &rev, 1, LogFormat::Text, facts);
        let annotations = pod.metadata.annotations.clone().unwrap();
        let spec = pod.spec.unwrap();
        let args = spec.containers[0].args.clone().unwrap();
        let volume = spec.volumes.unwrap().into_iter().find(|v| v.name == "node-labels").unwrap();
        let items = volume.downward_api.unwrap().items.unwrap();
        assert_eq!(items.len(), files.len(), "{facts:?}");
        for ((file, flag, annotation, value), item) in files.iter().zip(&items) {
            assert_eq!(annotations[*annotation], *value);
            let given = args.iter().position(|a| a == flag).map(|i| &args[i + 1]);
            assert_eq!(given.cloned(), Some(format!("/etc/nonstop/node/{file}")), "{flag}");
            assert_eq!(item.path, *file);
            let field = &item.field_ref.as_ref().unwrap().field_path;
            assert_eq!(*field, format!("metadata.annotations['{annotation}']"));
        }
        let mounts = spec.containers[0].volume_mounts.clone().unwrap();
        let mounted =
            mounts.iter().any(|m| m.name == "node-labels" && m.mount_path == "/etc/nonstop/node");
        assert!(mounted, "{facts:?}");
    }

    let plain = super::pod(&gw, "node-1", &rev, 1, LogFormat::Text, &Default::default());
    let annotations = plain.metadata.annotations.unwrap();
    assert!(!annotations.contains_key(per_node::ANNOTATION));
    assert!(!annotations.contains_key(per_node::ADDRESSES));
    let plain = plain.spec.unwrap();
    let args = plain.containers[0].args.clone().unwrap();
    assert!(!args.iter().any(|a| a.starts_with("--node-")), "{args:?}");
    assert!(!plain.volumes.unwrap().iter().any(|v| v.name == "node-labels"));
}

/// A node's own router ID beats the spec's and the node's address; its
/// source addresses are passed one flag each.
#[test]
fn a_nodes_own_router_id_and_source_addresses_reach_its_agent() {
    let args = |gw: &BgpGateway, facts: &per_node::Facts| {
        let p = pod(gw, "node-1", &revision(&gw.spec), 1, LogFormat::Text, facts);
        p.spec.unwrap().containers[0].args.clone().unwrap().join(" ")
    };
    let own = per_node::Facts {
        router_id: Some("192.0.2.7".parse().unwrap()),
        local_addresses: vec!["192.0.2.7".parse().unwrap(), "2001:db8::7".parse().unwrap()],
        ..Default::default()
    };
    let mut gw = example();
    gw.spec.router_id = None;
    assert!(args(&gw, &Default::default()).contains("--router-id $(NODE_IP)"));
    let told = args(&gw, &own);
    assert!(told.contains("--router-id 192.0.2.7") && !told.contains("$(NODE_IP)"), "{told}");
    assert!(told.contains("--local-address 192.0.2.7 --local-address 2001:db8::7"), "{told}");
    gw.spec.router_id = Some("198.51.100.1".parse().unwrap());
    assert!(!args(&gw, &Default::default()).contains("--router-id"), "the spec's, in the config");
    assert!(args(&gw, &own).contains("--router-id 192.0.2.7"), "the node's own wins");
}
