//! The `BgpAddressPool` API (`nonstop.dev/v1alpha1`, cluster-scoped): the
//! addresses the operator hands to Services of type LoadBalancer, and what
//! it reports back about them.
//!
//! The shape is the one MetalLB's `IPAddressPool` and Cilium's
//! `CiliumLoadBalancerIPPool` users know: a list of CIDRs or ranges, a
//! Service selector, and a switch for pools that only serve Services
//! asking for one of their addresses by name. Which Services are nonstop's
//! at all is said by the Service (`spec.loadBalancerClass: nonstop.dev/bgp`)
//! or, for Services without a class, by a gateway
//! (`spec.loadBalancer.unclassed`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::bounds;

/// The `spec.loadBalancerClass` of the Services nonstop serves.
pub const LOAD_BALANCER_CLASS: &str = "nonstop.dev/bgp";

/// The annotation by which a Service asks for specific addresses, one per
/// IP family, comma-separated (as MetalLB's `loadBalancerIPs` and Cilium's
/// `lbipam.cilium.io/ips`). `spec.loadBalancerIP` is read too.
pub const REQUESTED_IPS: &str = "nonstop.dev/load-balancer-ips";

/// The annotation with a Service's own BGP communities, comma-separated
/// (`65001:100, no-export`), sent with its address beside the gateway's.
pub const BGP_COMMUNITIES: &str = "nonstop.dev/bgp-communities";

/// The condition the operator keeps on each of its Services.
pub const ASSIGNED_CONDITION: &str = "nonstop.dev/AddressAssigned";

/// Addresses for Services of type LoadBalancer.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "nonstop.dev",
    version = "v1alpha1",
    kind = "BgpAddressPool",
    plural = "bgpaddresspools",
    shortname = "bgppool",
    status = "BgpAddressPoolStatus",
    printcolumn = r#"{"name":"IPv4 used","type":"string","jsonPath":".status.ipv4","description":"IPv4 addresses assigned / assignable"}"#,
    printcolumn = r#"{"name":"IPv6 used","type":"string","jsonPath":".status.ipv6","description":"IPv6 addresses assigned / assignable"}"#,
    printcolumn = r#"{"name":"Auto","type":"boolean","jsonPath":".spec.autoAssign"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "Addresses the nonstop operator assigns to Services of type LoadBalancer, which the gateways then announce."
)]
#[serde(rename_all = "camelCase")]
pub struct BgpAddressPoolSpec {
    /// CIDRs (`198.51.100.0/28`, `2001:db8:1::/120`) and ranges
    /// (`198.51.100.10-198.51.100.20`), IPv4 and IPv6 mixed as needed. The
    /// first and last address of a CIDR wider than /31 (/127) are not handed
    /// out, as routers and hosts often treat them specially; write a range to
    /// use them. Two pools may overlap: an address goes to one Service only.
    #[schemars(length(min = 1, max = 256), inner(length(max = 100)))]
    pub addresses: Vec<String>,
    /// The Services this pool serves; all of nonstop's Services when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(transform = bounds::kubernetes)]
    pub service_selector: Option<LabelSelector>,
    /// false: the pool only serves Services that ask for one of its addresses
    /// (annotation `nonstop.dev/load-balancer-ips` or `spec.loadBalancerIP`).
    #[serde(default = "yes")]
    pub auto_assign: bool,
}

fn yes() -> bool {
    true
}

/// What the operator reports about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BgpAddressPoolStatus {
    /// "assigned/assignable" IPv4 addresses, e.g. "2/14".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<String>,
    /// "assigned/assignable" IPv6 addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<String>,
    /// `Valid`: False names each entry of the spec the operator cannot use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One entry of `spec.addresses`: the addresses from `first` to `last`,
/// both included, of one IP family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressBlock {
    pub first: IpAddr,
    pub last: IpAddr,
}

impl AddressBlock {
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.first.is_ipv4() && self.first <= ip && ip <= self.last
    }

    /// How many addresses the block holds (saturating, for IPv6 /0).
    pub fn size(&self) -> u128 {
        (ordinal(self.last) - ordinal(self.first)).saturating_add(1)
    }
}

/// An address as a number, so blocks can be walked.
pub fn ordinal(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u32::from(v4) as u128,
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `family` (IPv4 when `v4`) with number `n`.
pub fn from_ordinal(v4: bool, n: u128) -> IpAddr {
    if v4 { IpAddr::V4((n as u32).into()) } else { IpAddr::V6(n.into()) }
}

impl FromStr for AddressBlock {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let ip = |s: &str| -> Result<IpAddr, String> {
            s.trim().parse().map_err(|_| format!("{:?} is not an IP address", s.trim()))
        };
        if let Some((first, last)) = text.split_once('-') {
            let (first, last) = (ip(first)?, ip(last)?);
            if first.is_ipv4() != last.is_ipv4() {
                return Err(format!("{text:?} mixes IPv4 and IPv6"));
            }
            if first > last {
                return Err(format!("{text:?} ends before it starts"));
            }
            return Ok(AddressBlock { first, last });
        }
        let Some((address, length)) = text.split_once('/') else {
            return Err(format!(
                "{text:?} is neither a CIDR (198.51.100.0/28) nor a range (198.51.100.10-198.51.100.20)"
            ));
        };
        let address = ip(address)?;
        let bits: u32 = if address.is_ipv4() { 32 } else { 128 };
        let length: u32 = length
            .parse()
            .ok()
            .filter(|l| *l <= bits)
            .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {bits}"))?;
        let host = if length == 0 { u128::MAX } else { (1u128 << (bits - length)) - 1 };
        let host = if bits == 32 { host & u32::MAX as u128 } else { host };
        let n = ordinal(address);
        if n & host != 0 {
            return Err(format!(
                "{text:?} has host bits set: the CIDR is {}/{length}",
                from_ordinal(address.is_ipv4(), n & !host)
            ));
        }
        let (mut first, mut last) = (n, n | host);
        // Network and broadcast (IPv6: subnet-router anycast) addresses.
        if bits - length >= 2 {
            first += 1;
            last -= 1;
        }
        let v4 = address.is_ipv4();
        Ok(AddressBlock { first: from_ordinal(v4, first), last: from_ordinal(v4, last) })
    }
}

impl fmt::Display for AddressBlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}
