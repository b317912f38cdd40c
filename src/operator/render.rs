//! What a gateway turns into on the cluster: the revision, the agent config
//! (an immutable ConfigMap per revision) and the agent pod for one node.
//! Pure: the same spec always gives the same objects and the same names.
//!
//! ```text
//!   spec ──revision()──▶ "7f3a9c2d1b"        (hash of what reaches the pod)
//!        ──config_map()─▶ edge-7f3a9c2d1b    (agent.yaml, immutable)
//!        ──pod(node)────▶ edge-node-1-7f3a9c2d1b (pinned to node-1)
//! ```

use nonstop_agent::LogFormat;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, DownwardAPIVolumeFile,
    DownwardAPIVolumeSource, EnvVar, EnvVarSource, ExecAction, HostPathVolumeSource, NodeAffinity,
    NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, ObjectFieldSelector, Pod,
    PodSecurityContext, PodSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use nonstop_agent::config::Config;
use serde_json::json;

use super::per_node;
use crate::api::{AdminBind, BgpGateway, BgpGatewaySpec, Strategy};

/// Labels every object of a gateway carries.
pub const GATEWAY_LABEL: &str = "nonstop.dev/gateway";
pub const REVISION_LABEL: &str = "nonstop.dev/revision";
pub const NODE_LABEL: &str = "nonstop.dev/node";
/// Where the agent serves `/metrics`: its pod declares no ports (on the host
/// network they would be host ports, and the successor could never be
/// scheduled beside its predecessor), so scrapers read the port here.
pub const ADMIN_PORT_ANNOTATION: &str = "nonstop.dev/admin-port";
/// Where the agent finds things inside its pod.
pub const CONFIG_DIR: &str = "/etc/nonstop/config";
pub const STATE_DIR: &str = "/var/run/nonstop";
pub const SECRETS_DIR: &str = "/etc/nonstop/secrets";
/// Where the agent reads the token the operator publishes Service
/// addresses with (`spec.loadBalancer.announce`). Not part of the
/// revision: a pod made before it gets it at the next rollout.
pub const API_TOKEN_DIR: &str = "/etc/nonstop/api";
/// The key of that token in its Secret.
pub const API_TOKEN_KEY: &str = "token";
/// The agent container's name.
pub const AGENT: &str = "agent";
/// Seconds the pod's grace period adds on top of handoff timeout + drain.
const GRACE_MARGIN: u32 = 30;

/// The hash of everything that reaches an agent pod, as 10 hex digits.
/// A change of image, BGP config, tolerations, resources or admin port
/// makes a new revision (and so a rollout); upgrade settings, the node
/// selector and the status do not.
pub fn revision(spec: &BgpGatewaySpec) -> String {
    let mut inputs = json!({
        "image": spec.image,
        "config": agent_config(spec),
        "tolerations": spec.tolerations,
        "resources": spec.resources,
    });
    // Only when set, so that gateways without it keep their revision.
    if spec.admin_bind != AdminBind::All {
        inputs["adminBind"] = json!(spec.admin_bind);
    }
    format!("{:016x}", fnv1a(inputs.to_string().as_bytes()))[..10].to_string()
}

/// FNV-1a, 64 bit: stable across builds and platforms, which a revision
/// name must be (std's hasher is not), and enough for telling revisions apart.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

/// The agent's config file: the spec's BGP part, listening for the
/// operator on every address at `adminPort` — every IPv4 address, or, when
/// the BGP listener is IPv6's wildcard (`::`, for dual-stack and IPv6-only
/// nodes), every address of both families, so an IPv6-only node's agent is
/// reachable at its InternalIP. The router ID, unless the spec fixes one,
/// comes from each node (`--router-id $(NODE_IP)`).
pub fn agent_config(spec: &BgpGatewaySpec) -> Config {
    let any = match spec.listen.address {
        std::net::IpAddr::V6(_) if spec.listen.enabled => std::net::IpAddr::from([0u16; 8]),
        _ => std::net::IpAddr::from([0u8; 4]),
    };
    Config {
        asn: spec.asn,
        router_id: spec.router_id,
        listen: spec.listen.socket_addr(),
        admin: std::net::SocketAddr::new(any, spec.admin_port),
        peers: spec.peers.clone(),
        announce: spec.announce.clone(),
        shutdown: spec.shutdown.clone(),
        bmp: spec.bmp.clone(),
    }
}

pub(crate) fn owner(gw: &BgpGateway) -> OwnerReference {
    gw.controller_owner_ref(&()).expect("a gateway read from the API server has a uid")
}

/// A name as a label value. Label values are at most 63 characters, while
/// gateway and node names may have 253: a longer name becomes its first 46
/// characters, `-`, and 16 hex digits of its hash (stable, so selectors made
/// by any operator version match). The pods keep the full names in
/// annotations under the same keys.
pub fn label_value(name: &str) -> String {
    if name.len() <= 63 {
        return name.to_string();
    }
    let head: String = name.chars().take(46).collect();
    format!("{head}-{:016x}", fnv1a(name.as_bytes()))
}

fn labels(gw: &BgpGateway, revision: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "nonstop-agent".into()),
        ("app.kubernetes.io/managed-by".into(), "nonstop-operator".into()),
        (GATEWAY_LABEL.into(), label_value(&gw.metadata.name.clone().unwrap_or_default())),
        (REVISION_LABEL.into(), revision.into()),
    ])
}

/// `base`, then `-` and the first 8 characters of the gateway's uid (when
/// it has one): the objects a gateway makes are named apart from those of
/// a deleted gateway of the same name, which linger until the garbage
/// collector and the kubelets remove them.
fn with_uid(gw: &BgpGateway, base: String) -> String {
    let uid: String = gw.metadata.uid.as_deref().unwrap_or_default().chars().take(8).collect();
    if uid.is_empty() { base } else { format!("{base}-{uid}") }
}

/// `<gateway>-<revision>-<uid>`: the revision's agent config. The uid keeps
/// a gateway applied again under the same name off the ConfigMap of the
/// deleted one, which the garbage collector removes (the new pods would
/// wait in ContainerCreating for it).
pub fn config_map_name(gw: &BgpGateway, revision: &str) -> String {
    let name = gw.metadata.name.as_deref().unwrap_or_default();
    with_uid(gw, format!("{name}-{revision}"))
}

pub fn config_map(gw: &BgpGateway, revision: &str) -> ConfigMap {
    let yaml = serde_yaml_ng::to_string(&agent_config(&gw.spec)).expect("config serialises");
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(config_map_name(gw, revision)),
            namespace: gw.metadata.namespace.clone(),
            labels: Some(labels(gw, revision)),
            owner_references: Some(vec![owner(gw)]),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([("agent.yaml".into(), yaml)])),
        immutable: Some(true),
        ..ConfigMap::default()
    }
}

/// `<gateway>-<node>-<revision>-<uid>`, deterministic so that a restarted
/// operator finds the pod it created instead of creating a second one.
/// The uid, as in the ConfigMaps' names: a kubelet can take a minute to
/// remove the pods of a deleted gateway, and a gateway applied again
/// under the same name would otherwise have its creates refused
/// (AlreadyExists) until then, its nodes left without an agent. Node names
/// too long for all that are shortened with their hash.
pub fn pod_name(gw: &BgpGateway, node: &str, revision: &str) -> String {
    let gateway = gw.metadata.name.as_deref().unwrap_or_default();
    let name = with_uid(gw, format!("{gateway}-{node}-{revision}"));
    if name.len() <= 253 {
        return name;
    }
    let short = format!("{:016x}", fnv1a(node.as_bytes()));
    with_uid(gw, format!("{gateway}-{short}-{revision}"))
}

/// The state dir on the node, one per gateway: where a node's old and new
/// agents meet for the handoff.
pub fn state_dir_on_node(namespace: &str, gateway: &str) -> String {
    format!("/var/run/nonstop/{namespace}/{gateway}")
}

/// The agent pod for `node` at `revision`, created at `created_ms` (Unix
/// ms): the agent learns it, so that an older pod's agent never takes the
/// node back from a newer one. `facts`: what the agent is told of its node
/// ([`per_node::facts`]).
pub fn pod(
    gw: &BgpGateway,
    node: &str,
    revision: &str,
    created_ms: u64,
    log_format: LogFormat,
    facts: &per_node::Facts,
) -> Pod {
    let name = gw.metadata.name.clone().unwrap_or_default();
    let namespace = gw.metadata.namespace.clone().unwrap_or_default();
    let pod_name = pod_name(gw, node, revision);
    let spec = &gw.spec;
    let mut labels = labels(gw, revision);
    labels.insert(NODE_LABEL.into(), label_value(node));
    let mut annotations = BTreeMap::from([
        (GATEWAY_LABEL.into(), name.clone()),
        (NODE_LABEL.into(), node.into()),
        (ADMIN_PORT_ANNOTATION.into(), spec.admin_port.to_string()),
    ]);

    let env = agent_env(spec, created_ms, log_format);
    let mut args = agent_args(spec, facts);
    let (mut volumes, mut mounts) =
        volumes(spec, (&namespace, &name), config_map_name(gw, revision), api_secret_name(gw));
    let told = [
        (&facts.labels, per_node::ANNOTATION, per_node::FILE, "--node-labels-file"),
        (
            &facts.addresses,
            per_node::ADDRESSES,
            per_node::ADDRESSES_FILE,
            "--node-annotations-file",
        ),
    ];
    let mut files = Vec::new();
    for (value, annotation, file, flag) in told {
        if let Some(value) = value {
            annotations.insert(annotation.into(), value.clone());
            args.extend([flag.into(), format!("{}/{file}", per_node::DIR)]);
            files.push((annotation, file));
        }
    }
    if !files.is_empty() {
        let (volume, mount) = node_volume(&files);
        volumes.push(volume);
        mounts.push(mount);
    }
    let grace = spec.upgrade.handoff_timeout_seconds + spec.shutdown.drain_seconds + GRACE_MARGIN;
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name.clone()),
            namespace: Some(namespace),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner(gw)]),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            affinity: Some(pinned_to(node)),
            // The gateway's tolerations and, as a DaemonSet pod has, the
            // taints Kubernetes adds itself: a cordoned, not-ready or
            // unreachable node keeps its agent (and its routes).
            tolerations: Some(super::nodes::pod_tolerations(gw)),
            host_network: Some(true),
            dns_policy: Some("ClusterFirstWithHostNet".into()),
            // A retired or decommissioned agent exits 0 and stays gone; a
            // crashed one comes back (and starts with the Graceful Restart R-bit).
            restart_policy: Some("OnFailure".into()),
            termination_grace_period_seconds: Some(i64::from(grace)),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            containers: vec![Container {
                name: AGENT.into(),
                image: Some(spec.image.clone()),
                command: Some(vec!["nonstop-agent".into()]),
                args: Some(args),
                env: Some(env),
                // No `ports`: on the host network they count as host ports,
                // and the scheduler would never put the new pod beside the
                // old one (both "use" 179). The agent binds them itself.
                volume_mounts: Some(mounts),
                resources: spec.resources.clone(),
                readiness_probe: Some(Probe {
                    exec: Some(ExecAction {
                        command: Some(
                            [
                                "nonstop-agent",
                                "ready",
                                "--state-dir",
                                STATE_DIR,
                                "--pod",
                                &pod_name,
                            ]
                            .map(String::from)
                            .to_vec(),
                        ),
                    }),
                    period_seconds: Some(2),
                    timeout_seconds: Some(2),
                    failure_threshold: Some(1),
                    ..Default::default()
                }),
                termination_message_policy: Some("FallbackToLogsOnError".into()),
                security_context: Some(agent_security()),
                ..Default::default()
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        ..Pod::default()
    }
}

/// The agent's environment: its pod, its node's address, how it takes
/// over, when its pod was made, and its state dir.
fn agent_env(spec: &BgpGatewaySpec, created_ms: u64, log_format: LogFormat) -> Vec<EnvVar> {
    let field = |path: &str| EnvVarSource {
        field_ref: Some(ObjectFieldSelector { field_path: path.into(), ..Default::default() }),
        ..Default::default()
    };
    let takeover = match spec.upgrade.strategy {
        Strategy::GracefulRestart => "restart",
        Strategy::Handoff | Strategy::Recreate => "handoff",
    };
    let mut env = vec![
        EnvVar {
            name: "NONSTOP_POD".into(),
            value_from: Some(field("metadata.name")),
            ..Default::default()
        },
        EnvVar {
            name: "NODE_IP".into(),
            value_from: Some(field("status.hostIP")),
            ..Default::default()
        },
        EnvVar {
            name: "NONSTOP_TAKEOVER".into(),
            value: Some(takeover.into()),
            ..Default::default()
        },
        EnvVar {
            name: "NONSTOP_POD_CREATED_MS".into(),
            value: Some(created_ms.to_string()),
            ..Default::default()
        },
        // So `kubectl exec POD -- nonstop-agent status` needs no flags.
        EnvVar {
            name: "NONSTOP_STATE_DIR".into(),
            value: Some(STATE_DIR.into()),
            ..Default::default()
        },
    ];
    // Only when not the default, so that pods of an operator that logs text
    // look as they did before the setting existed.
    if log_format != LogFormat::Text {
        env.push(EnvVar {
            name: "NONSTOP_LOG_FORMAT".into(),
            value: Some(log_format.as_str().into()),
            ..Default::default()
        });
    }
    env
}

/// The agent's command line. The router ID: the node's own (annotation),
/// else the spec's (in the config), else the node's address.
fn agent_args(spec: &BgpGatewaySpec, facts: &per_node::Facts) -> Vec<String> {
    let mut args: Vec<String> =
        ["run", "--config", "/etc/nonstop/config/agent.yaml", "--state-dir", STATE_DIR]
            .map(String::from)
            .to_vec();
    args.extend(["--secrets-dir".into(), SECRETS_DIR.into()]);
    match facts.router_id {
        Some(id) => args.extend(["--router-id".into(), id.to_string()]),
        None if spec.router_id.is_none() => {
            args.extend(["--router-id".into(), "$(NODE_IP)".into()]);
        }
        None => {}
    }
    for address in &facts.local_addresses {
        args.extend(["--local-address".into(), address.to_string()]);
    }
    if spec.admin_bind == AdminBind::Node {
        args.extend(["--admin-ip".into(), "$(NODE_IP)".into()]);
    }
    // The operator publishes Service addresses (or, for a gateway that
    // announces none, an empty set) with this token.
    args.extend(["--api-token-file".into(), format!("{API_TOKEN_DIR}/{API_TOKEN_KEY}")]);
    args
}

/// The Secret with the token the operator publishes a gateway's Service
/// addresses to its agents with (made by the operator, owned by the
/// gateway). Its name carries the gateway's uid, as the ConfigMaps' do: a
/// gateway deleted and made again under its name never mounts the old
/// one's Secret while the garbage collector has yet to remove it.
pub fn api_secret_name(gw: &BgpGateway) -> String {
    let name = gw.metadata.name.as_deref().unwrap_or_default();
    with_uid(gw, format!("{name}-nonstop-api"))
}

/// That Secret, with a fresh token.
pub fn api_secret(gw: &BgpGateway, token: &str) -> k8s_openapi::api::core::v1::Secret {
    let name = gw.metadata.name.clone().unwrap_or_default();
    k8s_openapi::api::core::v1::Secret {
        metadata: ObjectMeta {
            name: Some(api_secret_name(gw)),
            namespace: gw.metadata.namespace.clone(),
            labels: Some(BTreeMap::from([(GATEWAY_LABEL.into(), name)])),
            owner_references: Some(vec![owner(gw)]),
            ..ObjectMeta::default()
        },
        string_data: Some(BTreeMap::from([(API_TOKEN_KEY.into(), token.into())])),
        ..Default::default()
    }
}

/// The agent's volumes and where they are mounted: its config, its state
/// dir on the node, and each Secret a peer names.
fn volumes(
    spec: &BgpGatewaySpec,
    (namespace, name): (&str, &str),
    config: String,
    api_secret: String,
) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource { name: config, ..Default::default() }),
            ..Default::default()
        },
        Volume {
            name: "state".into(),
            host_path: Some(HostPathVolumeSource {
                path: state_dir_on_node(namespace, name),
                type_: Some("DirectoryOrCreate".into()),
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        VolumeMount {
            name: "config".into(),
            mount_path: CONFIG_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount { name: "state".into(), mount_path: STATE_DIR.into(), ..Default::default() },
    ];
    // Each Secret a peer names, mounted where the agent reads
    // `<secrets dir>/<name>/<key>`: the password never enters the ConfigMap.
    for (i, secret) in secret_names(spec).into_iter().enumerate() {
        let volume = format!("secret-{i}");
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.clone()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{SECRETS_DIR}/{secret}"),
            read_only: Some(true),
            ..Default::default()
        });
    }
    volumes.push(Volume {
        name: "api-token".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(api_secret),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    });
    mounts.push(VolumeMount {
        name: "api-token".into(),
        mount_path: API_TOKEN_DIR.into(),
        read_only: Some(true),
        ..Default::default()
    });
    (volumes, mounts)
}

/// What the agent is told of its node (the labels its peers are chosen
/// by, the annotations they take their addresses from): the pod's own
/// annotations as files, which the kubelet rewrites when the operator
/// changes them. `files` pairs each annotation with its file's name.
fn node_volume(files: &[(&str, &str)]) -> (Volume, VolumeMount) {
    let items = files
        .iter()
        .map(|(annotation, file)| DownwardAPIVolumeFile {
            path: (*file).into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: format!("metadata.annotations['{annotation}']"),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let volume = Volume {
        name: "node-labels".into(),
        downward_api: Some(DownwardAPIVolumeSource { items: Some(items), ..Default::default() }),
        ..Default::default()
    };
    let mount = VolumeMount {
        name: "node-labels".into(),
        mount_path: per_node::DIR.into(),
        read_only: Some(true),
        ..Default::default()
    };
    (volume, mount)
}

/// The agent runs as root with one capability left: NET_BIND_SERVICE, for
/// port 179 (Kubernetes gives a non-root user no capabilities, and the
/// hostPath state dir is root's). TCP MD5 and GTSM are plain socket options
/// and need nothing more — agent/tests/capabilities.rs runs MD5, GTSM and a
/// handoff confined like this.
fn agent_security() -> SecurityContext {
    SecurityContext {
        run_as_user: Some(0),
        run_as_non_root: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(vec!["NET_BIND_SERVICE".into()]),
        }),
        ..Default::default()
    }
}

/// Every Secret the peers' `passwordSecretRef` names, once, sorted.
pub fn secret_names(spec: &BgpGatewaySpec) -> Vec<String> {
    let mut names: Vec<String> = spec
        .peers
        .iter()
        .filter_map(|p| p.password_secret_ref.as_ref().map(|r| r.name.clone()))
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Required node affinity for one node by name: the scheduler still places
/// the pod (and checks resources and taints), it just has one choice.
fn pinned_to(node: &str) -> Affinity {
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_fields: Some(vec![NodeSelectorRequirement {
                        key: "metadata.name".into(),
                        operator: "In".into(),
                        values: Some(vec![node.into()]),
                    }]),
                    ..Default::default()
                }],
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
