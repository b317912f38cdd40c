//! The agent's configuration: what it speaks BGP with and what it announces.
//!
//! The file (YAML or JSON) uses the same field names as the `BgpGateway` spec;
//! the operator's CRD embeds [`Peer`], [`Announcement`] and [`Shutdown`] from
//! here, so one schema serves both and cannot drift.
//!
//! ```text
//!  file ──parse──▶ Config ──validate──▶ Config (every rule holds)
//!         │                   │
//!         └─ unknown field,   └─ every broken rule, each with the field's
//!            wrong type          path: "peers[1].holdTime: must be 0 or ≥ 3"
//! ```
//!
//! Nothing is announced from a config that failed to load.

pub mod check;
pub mod import;
pub mod node;
pub mod strict;
pub mod validate;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use check::{HealthCheck, HttpCheck, Probe};
pub use import::{Accept, Import, LimitAction, LimitVerdict, MaxPrefixes, PrefixMatch};
pub use node::{
    AddressFrom, DefaultGateway, DefaultRoute, IpFamily, NodeAnnotations, NodeFacts, NodeLabels,
    parse_node_map,
};
pub use validate::{FieldError, Problems};

use crate::route::{Community, LargeCommunity, NextHop, Prefix};

/// The whole agent configuration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Config {
    /// The gateway's own autonomous system number.
    pub asn: u32,
    /// BGP identifier. Optional in the file: `--router-id` (the operator passes
    /// the node's IP) fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router_id: Option<Ipv4Addr>,
    /// Where to accept BGP connections; `null` for no listener at all, when
    /// every peer is dialled (none `passive`), so another BGP speaker on the
    /// host can keep port 179.
    #[serde(default = "default_listen")]
    pub listen: Option<SocketAddr>,
    /// Where to serve `/status` and `/metrics`.
    #[serde(default = "default_admin")]
    pub admin: SocketAddr,
    pub peers: Vec<Peer>,
    #[serde(default)]
    pub announce: Vec<Announcement>,
    #[serde(default)]
    pub shutdown: Shutdown,
    /// BMP (RFC 7854) collectors to export every session to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bmp: Vec<BmpCollector>,
}

fn default_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([0, 0, 0, 0], 179)))
}

/// The BGP identifier for a node known by `address`: an IPv4 address is its
/// own identifier (so is an IPv4-mapped IPv6 one); an IPv6 address, which
/// has no 32-bit form, becomes the FNV-1a hash (32 bit) of its 16 octets,
/// written as a dotted quad. Pinned by a test: the same node gets the same
/// identifier from every version of the agent, so an upgrade never changes it.
pub fn router_id_for(address: IpAddr) -> Ipv4Addr {
    match address {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => v6.to_ipv4_mapped().unwrap_or_else(|| {
            let hash = v6
                .octets()
                .iter()
                .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
            // 0.0.0.0 is no identifier (RFC 6286); one hash in 2^32 lands there.
            Ipv4Addr::from(hash.max(1))
        }),
    }
}

fn default_admin() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9179))
}

/// One BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Peer {
    /// The neighbour's address; a session is identified by it. Leave it out
    /// when each node has its own (`addressFrom`).
    #[serde(default = "no_address", skip_serializing_if = "IpAddr::is_unspecified")]
    #[cfg_attr(feature = "schema", schemars(length(max = 45)))]
    pub address: IpAddr,
    /// Where each node finds this neighbour's address, instead of `address`:
    /// its own top-of-rack router, say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address_from: Option<AddressFrom>,
    /// The neighbour's AS; equal to the gateway's own AS for iBGP.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 4_294_967_295u32)))]
    pub asn: u32,
    /// TCP port of the neighbour.
    #[serde(default = "default_port")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub port: u16,
    /// Seconds without a message before the session is declared dead: 0 (never)
    /// or at least 3. The session uses the smaller of ours and the neighbour's.
    #[serde(default = "default_hold_time")]
    pub hold_time: u16,
    /// Seconds between KEEPALIVEs; defaults to a third of the negotiated hold time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<u16>,
    /// Seconds between attempts to connect to the neighbour.
    #[serde(default = "default_connect_retry_time")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub connect_retry_time: u16,
    /// Only accept the neighbour's connection; never dial it.
    #[serde(default)]
    pub passive: bool,
    /// Source address for the session (and the next hop for `nextHop: self`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 45)))]
    pub local_address: Option<IpAddr>,
    /// TCP MD5 signature (RFC 2385) password. The agent reads it from
    /// `<secrets dir>/<name>/<key>`, where Kubernetes mounts a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// GTSM (RFC 5082): send with TTL 255, accept only TTL ≥ 254.
    #[serde(default)]
    pub ttl_security: bool,
    /// eBGP to a neighbour this many hops away (1–255).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub ebgp_multihop: Option<u8>,
    /// Address families to negotiate.
    #[serde(default = "default_families")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 2), extend("x-kubernetes-list-type" = "set")))]
    pub families: Vec<Family>,
    #[serde(default)]
    pub graceful_restart: GracefulRestart,
    /// What the gateway keeps of the routes this neighbour sends, and how many.
    #[serde(default)]
    pub import: Import,
    /// Only nodes with every one of these labels peer with this neighbour
    /// (every node when empty): one peer per top-of-rack router, each
    /// selecting its rack's nodes. The agent reads its node's labels from
    /// `--node-labels-file` (the operator passes them) and follows changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(
        feature = "schema",
        schemars(extend(
            "maxProperties" = 16,
            "additionalProperties" = {"type": "string", "maxLength": 63}
        ))
    )]
    pub node_selector: BTreeMap<String, String>,
}

/// What a config's `address` is when it gives none: no address at all.
fn no_address() -> IpAddr {
    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
}

fn default_port() -> u16 {
    179
}

fn default_hold_time() -> u16 {
    90
}

/// RFC 4271 suggests 120 s; a gateway wants its sessions back sooner.
fn default_connect_retry_time() -> u16 {
    30
}

fn default_families() -> Vec<Family> {
    vec![Family::Ipv4Unicast, Family::Ipv6Unicast]
}

impl Peer {
    /// The keepalive interval to offer: configured, or a third of the hold time.
    pub fn keepalive_time(&self) -> u16 {
        self.keepalive_time.unwrap_or(self.hold_time / 3)
    }

    /// True when the neighbour is in the gateway's own AS.
    pub fn is_ibgp(&self, local_asn: u32) -> bool {
        self.asn == local_asn
    }
}

/// Names a key of a Secret in the gateway's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub name: String,
    #[cfg_attr(feature = "schema", schemars(length(min = 1, max = 253)))]
    pub key: String,
}

/// An address family (AFI/SAFI) the agent can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Family {
    #[serde(rename = "ipv4-unicast")]
    Ipv4Unicast,
    #[serde(rename = "ipv6-unicast")]
    Ipv6Unicast,
}

impl Family {
    pub fn of(prefix: &Prefix) -> Family {
        if prefix.is_ipv4() { Family::Ipv4Unicast } else { Family::Ipv6Unicast }
    }
}

/// Graceful Restart (RFC 4724), its notification extension (RFC 8538) and
/// Long-Lived Graceful Restart (RFC 9494) towards one neighbour.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct GracefulRestart {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds the neighbour keeps our routes while we restart (12 bits on the wire).
    #[serde(default = "default_restart_time")]
    #[cfg_attr(feature = "schema", schemars(range(max = 4095)))]
    pub restart_time: u16,
    /// Advertise the N-bit: a NOTIFICATION other than Hard Reset also keeps routes.
    #[serde(default = "yes")]
    pub notification: bool,
    /// Seconds routes are kept as LLGR_STALE after the restart time; 0 turns LLGR off.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(range(max = 16_777_215)))]
    pub long_lived_stale_time: u32,
}

fn yes() -> bool {
    true
}

fn default_restart_time() -> u16 {
    120
}

impl Default for GracefulRestart {
    fn default() -> Self {
        Self {
            enabled: true,
            restart_time: default_restart_time(),
            notification: true,
            long_lived_stale_time: 0,
        }
    }
}

/// A prefix the gateway originates, with the attributes it carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Announcement {
    pub prefix: Prefix,
    #[serde(default)]
    pub next_hop: NextHop,
    /// At most about a thousand fit in one UPDATE with the other attributes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1000)))]
    pub communities: Vec<Community>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 340)))]
    pub large_communities: Vec<LargeCommunity>,
    /// LOCAL_PREF towards iBGP neighbours (ignored for eBGP, as RFC 4271 says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 4_294_967_295u32)))]
    pub local_pref: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 4_294_967_295u32)))]
    pub med: Option<u32>,
    /// A local check of the service behind the prefix: announced while
    /// it passes, drained and withdrawn while it fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<HealthCheck>,
}

/// A BGP Monitoring Protocol (RFC 7854) collector, such as OpenBMP or
/// pmacct's `pmbmpd`: the agent connects to it and reports each session's
/// Peer Up and Down, every UPDATE received (pre-policy Adj-RIB-In) and sent
/// (RFC 8671 Adj-RIB-Out), and periodic statistics. The connection is
/// handed to the next agent with the sessions: an upgrade shows the
/// collector nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct BmpCollector {
    /// The collector's address.
    #[cfg_attr(feature = "schema", schemars(length(max = 45)))]
    pub address: IpAddr,
    /// The collector's TCP port.
    #[serde(default = "default_bmp_port")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub port: u16,
    /// Seconds between Statistics Reports (route counts per session); 0: none.
    #[serde(default = "default_statistics_interval")]
    pub statistics_interval: u16,
}

impl BmpCollector {
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

fn default_bmp_port() -> u16 {
    crate::bmp::DEFAULT_PORT
}

fn default_statistics_interval() -> u16 {
    60
}

/// How the agent leaves when it goes away for good (RFC 8326).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Shutdown {
    /// Seconds between re-announcing with GRACEFUL_SHUTDOWN and the final Cease.
    #[serde(default = "default_drain_seconds")]
    #[cfg_attr(feature = "schema", schemars(range(max = 3600)))]
    pub drain_seconds: u32,
}

fn default_drain_seconds() -> u32 {
    10
}

impl Default for Shutdown {
    fn default() -> Self {
        Self { drain_seconds: default_drain_seconds() }
    }
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path} breaks {} rule(s):\n{problems}", problems.len())]
    Invalid { path: PathBuf, problems: Problems },
    #[error(
        "peers[{index}] ({peer}) {needs}, but the agent does not know its node's {facts}: \
         pass {flag}"
    )]
    NodeUnknown {
        index: usize,
        peer: String,
        needs: &'static str,
        facts: &'static str,
        flag: &'static str,
    },
    #[error("node file {path}: {message}")]
    NodeFile { path: PathBuf, message: String },
    /// The node's routes could not be read, and a peer's address comes
    /// from its default route.
    #[error("the node's routes, which {needs}: {message}")]
    NodeRoutes { needs: String, message: String },
}

impl Config {
    /// Reads, parses and validates a config file. YAML and JSON both parse
    /// (JSON is YAML); unknown fields are errors, so typos do not pass silently.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text, path)
    }

    /// Parses and validates config text; `path` only names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = strict::read(serde_yaml_ng::Deserializer::from_str(text))
            .map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?;
        config
            .validate()
            .map_err(|problems| ConfigError::Invalid { path: path.to_owned(), problems })?;
        Ok(config)
    }

    /// Every rule the config breaks, each naming its field.
    pub fn validate(&self) -> Result<(), Problems> {
        let mut problems = Problems::default();
        validate::config(self, &mut problems);
        problems.into_result()
    }
}

#[cfg(test)]
mod tests;
