//! The `BgpGateway` API (`nonstop.dev/v1alpha1`): what a user declares and
//! what the operator reports back.
//!
//! ```text
//!   spec ─┬─ where:  image, nodeSelector, tolerations, resources
//!         ├─ speak:  asn, routerId, peers[], announce[]   (the agent's own types)
//!         └─ change: upgrade{strategy, …}, shutdown{drainSeconds}
//!   status ── conditions, revisions, nodes[] (one entry per node slot)
//! ```
//!
//! The BGP part of the spec *is* the agent's config ([`nonstop_agent::config`]):
//! the same Rust types, so the same field names, defaults and rules. Rules
//! that one object's schema cannot express live twice: as CEL rules in the CRD
//! for API servers that evaluate them (1.25+), and in [`BgpGatewaySpec::validate`],
//! which the operator applies to every spec whatever the server's version.

pub mod bounds;
pub mod history;
pub mod pool;
mod status;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::CustomResource;
use nonstop_agent::config::{Announcement, BmpCollector, Peer, Problems, Shutdown, validate};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use status::{
    BgpGatewayStatus, CheckState, ConditionType, LoadBalancerStatus, Maintenance, NodeStatus,
    PeerState, SessionCounts, UpgradeRecord, UpgradeResult,
};

/// A BGP gateway: one active agent on each selected node, announcing the same
/// prefixes to the same routers, upgraded without withdrawing a route.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nonstop.dev",
    version = "v1alpha1",
    kind = "BgpGateway",
    plural = "bgpgateways",
    shortname = "bgpgw",
    namespaced,
    status = "BgpGatewayStatus",
    printcolumn = r#"{"name":"ASN","type":"integer","jsonPath":".spec.asn"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.ready","description":"nodes whose agent is active with every session Established / selected nodes"}"#,
    printcolumn = r#"{"name":"Sessions","type":"string","jsonPath":".status.sessions","description":"Established / configured BGP sessions over all nodes"}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.image","description":"the agent image being rolled to"}"#,
    printcolumn = r#"{"name":"Rollout","type":"string","jsonPath":".status.rollout","description":"Complete, Progressing n/m, Paused or Degraded"}"#,
    printcolumn = r#"{"name":"Revision","type":"string","jsonPath":".status.currentRevision","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "A BGP gateway: one active agent per selected node, upgraded without withdrawing a route.",
    validation = "!has(self.spec.peers) || self.spec.peers.all(p, !has(p.ebgpMultihop) || p.asn != self.spec.asn)",
    validation = Rule::new("!has(self.spec.listen) || !has(self.spec.listen.enabled) || self.spec.listen.enabled || !has(self.spec.peers) || self.spec.peers.all(p, !has(p.passive) || !p.passive)").message("with spec.listen.enabled false no peer can connect to the gateway, so no peer may be passive"),
)]
#[serde(rename_all = "camelCase")]
pub struct BgpGatewaySpec {
    /// The agent image. Left out: the operator's agent image (the Helm
    /// chart's `agent.image`, by default the operator's own image, which
    /// holds both binaries). Changing either rolls every node to the new image.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(length(max = 512))]
    pub image: String,
    /// Nodes that run an agent of this gateway (all nodes when empty).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounds::kubernetes)]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(transform = bounds::kubernetes)]
    pub tolerations: Vec<Toleration>,
    /// Resources of the agent container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::kubernetes)]
    pub resources: Option<ResourceRequirements>,
    /// The gateway's own AS.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub asn: u32,
    /// BGP identifier; defaults to each node's address (an IPv6-only node's
    /// is hashed to a stable 32-bit ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 15))]
    pub router_id: Option<Ipv4Addr>,
    /// The routers every agent of this gateway peers with.
    // A list whole, not a map keyed by address: a peer with `addressFrom`
    // has none, and a map's keys must be required.
    #[schemars(
        length(min = 1, max = 1000),
        extend("x-kubernetes-list-type" = "atomic"),
        extend("x-kubernetes-validations" = [
            {"rule": "self.all(p, has(p.address) != has(p.addressFrom))",
             "message": "each peer needs an address, or addressFrom for an address of each node's own (not both)"},
            {"rule": "self.all(p, !has(p.addressFrom) || has(p.addressFrom.nodeAnnotation) != has(p.addressFrom.defaultGateway))",
             "message": "addressFrom names one source of the address: nodeAnnotation or defaultGateway"},
            {"rule": "self.all(p, !has(p.holdTime) || p.holdTime == 0 || p.holdTime >= 3)",
             "message": "holdTime must be 0 (no keepalives) or at least 3 seconds (RFC 4271 §4.2)"},
            {"rule": "self.all(p, !has(p.keepaliveTime) || ((has(p.holdTime) ? p.holdTime : 90) == 0 ? p.keepaliveTime == 0 : (p.keepaliveTime >= 1 && p.keepaliveTime < (has(p.holdTime) ? p.holdTime : 90))))",
             "message": "keepaliveTime must be at least 1 and less than holdTime, or 0 when holdTime is 0"},
        ])
    )]
    pub peers: Vec<Peer>,
    /// Where each agent accepts BGP connections on its node. Leave it out for
    /// port 179 on every IPv4 address of the node.
    #[serde(default, skip_serializing_if = "Listen::is_default")]
    pub listen: Listen,
    /// The prefixes every agent announces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 4096),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["prefix"])
    )]
    pub announce: Vec<Announcement>,
    /// Port of each agent's `/status` and `/metrics` on its node (the pods
    /// use the host network); the operator reads each node's active agent
    /// there, and the handoff passes the port on, so it always reaches it.
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1))]
    pub admin_port: u16,
    /// Where each agent listens on `adminPort`: every address of its node
    /// (`All`, the default) or only the node's InternalIP (`Node`), which is
    /// where the operator reads it; the status stays off other networks of
    /// the node (loopback included: on the node, use `nonstop-agent status`).
    #[serde(default, skip_serializing_if = "AdminBind::is_all")]
    pub admin_bind: AdminBind,
    #[serde(default)]
    pub upgrade: Upgrade,
    #[serde(default)]
    pub shutdown: Shutdown,
    /// BMP (RFC 7854) collectors each agent exports its sessions to: Peer
    /// Up/Down, Route Monitoring of what each peer sent and (RFC 8671) of
    /// what the gateway sends, Statistics Reports. The collector connection
    /// is handed over with the sessions, so an upgrade shows it nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub bmp: Vec<BmpCollector>,
    /// Services of type LoadBalancer: which ones this gateway serves.
    #[serde(default, skip_serializing_if = "LoadBalancer::is_default")]
    pub load_balancer: LoadBalancer,
}

/// The gateway's part in Services of type LoadBalancer. A Service whose
/// `spec.loadBalancerClass` is `nonstop.dev/bgp` always gets an address from
/// a BgpAddressPool; this says which others do, and whether this gateway
/// announces those addresses.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// true: Services without a `spec.loadBalancerClass` are nonstop's too,
    /// for clusters where nonstop is the only load balancer (and for
    /// Kubernetes before 1.24, where Services cannot name a class). One
    /// gateway that says so is enough for the whole cluster.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unclassed: bool,
    /// true: every agent of this gateway announces the address of each of
    /// nonstop's Services (a /32 or /128), beside `announce[]`. The
    /// addresses reach the agents while they run: a Service added or gone
    /// replaces no pod.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub announce: bool,
    /// Only the addresses of these BgpAddressPools (all when left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::kubernetes)]
    pub address_pool_selector:
        Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Sent with every Service address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub communities: Vec<nonstop_agent::route::Community>,
    /// Sent with every Service address.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub large_communities: Vec<nonstop_agent::route::LargeCommunity>,
    /// LOCAL_PREF of every Service address towards iBGP peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 4_294_967_295u32))]
    pub local_pref: Option<u32>,
}

impl LoadBalancer {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// The BGP listener of each agent. Another BGP speaker on the same nodes
/// (Calico's BIRD, MetalLB's FRR) keeps port 179 when this gateway listens
/// elsewhere, or not at all.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Listen {
    /// false: no listener at all. Every peer is then dialled by the agent
    /// (none may be `passive`), and the routers need not dial it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `0.0.0.0` (every IPv4 address of the node, the default), `::` (every
    /// address, IPv4 and IPv6: for dual-stack and IPv6-only nodes), or one
    /// address that every selected node has.
    #[serde(default = "any_ipv4")]
    #[schemars(length(max = 45))]
    pub address: IpAddr,
    /// TCP port; the routers must dial this port when it is not 179.
    #[serde(default = "bgp_port")]
    #[schemars(range(min = 1))]
    pub port: u16,
}

fn yes() -> bool {
    true
}

fn any_ipv4() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

fn bgp_port() -> u16 {
    179
}

impl Default for Listen {
    fn default() -> Self {
        Self { enabled: true, address: any_ipv4(), port: bgp_port() }
    }
}

impl Listen {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// Where the agent binds, or None for no listener.
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        self.enabled.then(|| SocketAddr::new(self.address, self.port))
    }
}

/// How a change of image or config reaches the nodes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upgrade {
    #[serde(default)]
    pub strategy: Strategy,
    /// Nodes upgraded at the same time.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_nodes_in_flight: u32,
    /// Seconds a node's new agent has to become active before the node's
    /// upgrade is rolled back and the rollout stops.
    #[serde(default = "default_handoff_timeout")]
    #[schemars(range(min = 1, max = 3600))]
    pub handoff_timeout_seconds: u32,
    /// Seconds to wait after a node before starting the next.
    #[serde(default)]
    #[schemars(range(max = 86400))]
    pub pause_seconds: u32,
    /// Stop between nodes until set back to false.
    #[serde(default)]
    pub paused: bool,
    /// Rollouts whose record (a BgpGatewayRollout) is kept, the newest ones.
    #[serde(default = "default_history_limit")]
    #[schemars(range(min = 1, max = 100))]
    pub history_limit: u32,
}

fn default_admin_port() -> u16 {
    9179
}

fn one() -> u32 {
    1
}

fn default_handoff_timeout() -> u32 {
    60
}

fn default_history_limit() -> u32 {
    10
}

impl Default for Upgrade {
    fn default() -> Self {
        Self {
            strategy: Strategy::default(),
            max_nodes_in_flight: 1,
            handoff_timeout_seconds: default_handoff_timeout(),
            pause_seconds: 0,
            paused: false,
            history_limit: default_history_limit(),
        }
    }
}

/// The three ways to replace a node's agent (the README's table of strategies says when to pick each).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Strategy {
    /// The new agent takes the live sessions over from the old one on the same
    /// node: the routers see nothing.
    #[default]
    Handoff,
    /// The old agent stops without withdrawing; routers keep its routes stale
    /// (RFC 4724) until the new agent is back.
    GracefulRestart,
    /// The old agent withdraws (RFC 8326 graceful shutdown), then the new one
    /// starts: traffic moves to other gateways meanwhile.
    Recreate,
}

/// Which of a node's addresses the agent's admin port listens on.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum AdminBind {
    /// 0.0.0.0: every address of the node.
    #[default]
    All,
    /// The node's InternalIP only (the pod's `status.hostIP`).
    Node,
}

impl AdminBind {
    fn is_all(&self) -> bool {
        *self == AdminBind::All
    }
}

impl BgpGateway {
    /// A gateway from the JSON the API server returns, checked against every
    /// rule: a field that does not parse and a rule that does not hold are
    /// both reported with the field's path, e.g. `spec.announce[0].prefix`.
    pub fn checked(object: serde_json::Value) -> Result<BgpGateway, Problems> {
        let gateway: BgpGateway = serde_path_to_error::deserialize(object).map_err(|e| {
            let mut problems = Problems::default();
            problems.push(e.path().to_string(), e.inner().to_string());
            problems
        })?;
        gateway.spec.validate()?;
        Ok(gateway)
    }
}

impl BgpGatewaySpec {
    fn validate_listen(&self, problems: &mut Problems) {
        let listen = &self.listen;
        if !listen.enabled {
            validate::passive_without_listener(&self.peers, "spec.", problems);
            return;
        }
        if listen.port == 0 {
            problems.push("spec.listen.port", "must be a port number, 1 to 65535");
        } else if listen.port == self.admin_port {
            problems.push(
                "spec.adminPort",
                format!("{} is the BGP port (spec.listen.port); pick another", listen.port),
            );
        }
        if listen.address.is_multicast() {
            problems
                .push("spec.listen.address", format!("{} is a multicast address", listen.address));
        }
    }

    /// Every rule the spec breaks, with paths under `spec.`. Includes the CEL
    /// rules, so servers older than 1.25 (which ignore CEL) are covered too.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        if !self.image.is_empty() && self.image.trim().is_empty() {
            problems.push("spec.image", "must name the agent image, or be left out");
        }
        validate::asn(self.asn, "spec.asn", &mut problems);
        if let Some(id) = self.router_id
            && id.is_unspecified()
        {
            problems.push("spec.routerId", "0.0.0.0 is not a valid BGP identifier");
        }
        if self.peers.is_empty() {
            problems.push("spec.peers", "at least one peer is needed");
        }
        validate::peers(&self.peers, self.asn, "spec.", &mut problems);
        self.validate_listen(&mut problems);
        validate::announcements(&self.announce, "spec.", &mut problems);
        validate::bmp(&self.bmp, "spec.", &mut problems);
        if self.admin_port == 0 {
            problems.push("spec.adminPort", "must be a port number, 1 to 65535");
        }
        if self.upgrade.max_nodes_in_flight == 0 {
            problems.push("spec.upgrade.maxNodesInFlight", "must be at least 1");
        }
        if !(1..=100).contains(&self.upgrade.history_limit) {
            problems.push("spec.upgrade.historyLimit", "must be 1 to 100");
        }
        if self.upgrade.handoff_timeout_seconds == 0 {
            problems.push("spec.upgrade.handoffTimeoutSeconds", "must be at least 1");
        }
        problems.into_result()
    }
}

#[cfg(test)]
mod tests;
