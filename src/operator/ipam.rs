//! Address assignment for Services of type LoadBalancer: which address of
//! which BgpAddressPool each of nonstop's Services gets, or why it gets
//! none. Pure: [`super::services`] reads the pools and Services and writes
//! what [`assign`] decides.
//!
//! ```text
//!   claims, oldest first ──▶ 1. keep:   every current address still valid
//!                            2. ask:    the addresses a Service names
//!                            3. choose: lowest free address, pools by name
//! ```
//!
//! A Service keeps its addresses while they stay valid, so nothing another
//! Service does (created, deleted, asking for the same address) moves them.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::Service;
use kube::core::{Selector, SelectorExt};

use crate::api::pool::{AddressBlock, LOAD_BALANCER_CLASS, REQUESTED_IPS, from_ordinal, ordinal};

/// A pool as the assignment sees it: only its valid parts.
#[derive(Debug, Clone)]
pub struct Pool {
    pub name: String,
    pub blocks: Vec<AddressBlock>,
    /// None: every Service.
    pub selector: Option<Selector>,
    pub auto_assign: bool,
}

impl Pool {
    fn serves(&self, claim: &Claim) -> bool {
        self.selector.as_ref().is_none_or(|s| s.matches(&claim.labels))
    }

    fn holds(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|b| b.contains(ip))
    }

    /// The lowest address of `family` in the pool that nobody holds.
    fn first_free(&self, family: Family, taken: &HashMap<IpAddr, usize>) -> Option<IpAddr> {
        let v4 = family == Family::V4;
        let mut blocks: Vec<&AddressBlock> =
            self.blocks.iter().filter(|b| b.first.is_ipv4() == v4).collect();
        blocks.sort_by_key(|b| b.first);
        for block in blocks {
            // Every step past the first lands on a taken address, so the walk
            // is never longer than the number of Services.
            let mut n = ordinal(block.first);
            while n <= ordinal(block.last) {
                let ip = from_ordinal(v4, n);
                if !taken.contains_key(&ip) {
                    return Some(ip);
                }
                n += 1;
            }
        }
        None
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// What one Service asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    /// `namespace/name`.
    pub service: String,
    pub labels: BTreeMap<String, String>,
    /// The Service's `spec.ipFamilies`, in order.
    pub families: Vec<Family>,
    /// `PreferDualStack`: an address of the second family only if there is one.
    pub second_optional: bool,
    /// The addresses it names, if any.
    pub requested: Vec<IpAddr>,
    /// What its status holds now.
    pub current: Vec<IpAddr>,
}

impl Claim {
    /// The claim of a Service, or what is wrong with what it asks for.
    pub fn of(service: &Service) -> Result<Claim, Refusal> {
        let meta = &service.metadata;
        let spec = service.spec.clone().unwrap_or_default();
        let mut families: Vec<Family> = Vec::new();
        for family in spec.ip_families.iter().flatten() {
            let family = if family == "IPv6" { Family::V6 } else { Family::V4 };
            if !families.contains(&family) {
                families.push(family);
            }
        }
        if families.is_empty() {
            families.push(Family::V4);
        }
        let mut requested = Vec::new();
        if let Some(text) = meta.annotations.as_ref().and_then(|a| a.get(REQUESTED_IPS)) {
            for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                let ip = word.parse().map_err(|_| {
                    Refusal::BadRequest(format!("{REQUESTED_IPS}: {word:?} is not an IP address"))
                })?;
                requested.push(ip);
            }
        }
        if let Some(text) = spec.load_balancer_ip.as_deref().filter(|t| !t.is_empty()) {
            let ip: IpAddr = text.parse().map_err(|_| {
                Refusal::BadRequest(format!("spec.loadBalancerIP: {text:?} is not an IP address"))
            })?;
            if !requested.contains(&ip) {
                requested.push(ip);
            }
        }
        for (i, ip) in requested.iter().enumerate() {
            if !families.contains(&Family::of(*ip)) {
                return Err(Refusal::BadRequest(format!(
                    "{ip} is {} but the Service's ipFamilies are {}",
                    Family::of(*ip),
                    families.iter().map(Family::to_string).collect::<Vec<_>>().join(", ")
                )));
            }
            if requested[..i].iter().any(|other| Family::of(*other) == Family::of(*ip)) {
                return Err(Refusal::BadRequest(format!(
                    "more than one {} address asked for ({REQUESTED_IPS}, spec.loadBalancerIP)",
                    Family::of(*ip)
                )));
            }
        }
        let current = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .map(|ingress| ingress.iter().filter_map(|i| i.ip.as_deref()?.parse().ok()).collect())
            .unwrap_or_default();
        Ok(Claim {
            service: format!(
                "{}/{}",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
            labels: meta.labels.clone().unwrap_or_default(),
            second_optional: spec.ip_family_policy.as_deref() == Some("PreferDualStack"),
            families,
            requested,
            current,
        })
    }
}

/// Whether a Service is nonstop's to serve: of type LoadBalancer, and of
/// nonstop's class, or of none when a gateway takes those (`unclassed`).
pub fn is_ours(service: &Service, unclassed: bool) -> bool {
    let Some(spec) = service.spec.as_ref() else { return false };
    spec.type_.as_deref() == Some("LoadBalancer")
        && match spec.load_balancer_class.as_deref() {
            Some(class) => class == LOAD_BALANCER_CLASS,
            None => unclassed,
        }
}

/// An address and the pool it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub ip: IpAddr,
    pub pool: String,
}

/// Why a Service has no address; each is a condition reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// What the Service asks for cannot be read or cannot be met.
    BadRequest(String),
    /// No pool that serves the Service hands out addresses of this family.
    NoPool(Family),
    /// Every pool that would serve it is full.
    Exhausted { family: Family, pools: Vec<String> },
    /// The address it asks for is in no pool.
    NotInPool(IpAddr),
    /// The address it asks for is in a pool that does not serve it.
    NotSelected { ip: IpAddr, pool: String },
    /// The address it asks for is another Service's.
    InUse { ip: IpAddr, by: String },
}

impl Refusal {
    /// The condition's and the Event's reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::BadRequest(_) => "InvalidRequest",
            Refusal::NoPool(_) => "NoAddressPool",
            Refusal::Exhausted { .. } => "AddressPoolExhausted",
            Refusal::NotInPool(_) | Refusal::NotSelected { .. } => "AddressNotInPool",
            Refusal::InUse { .. } => "AddressInUse",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::BadRequest(text) => f.write_str(text),
            Refusal::NoPool(family) => write!(
                f,
                "no BgpAddressPool that selects this Service assigns {family} addresses automatically"
            ),
            Refusal::Exhausted { family, pools } => {
                write!(f, "no free {family} address left in BgpAddressPool {}", pools.join(", "))
            }
            Refusal::NotInPool(ip) => write!(f, "{ip} is in no BgpAddressPool"),
            Refusal::NotSelected { ip, pool } => write!(
                f,
                "{ip} is in BgpAddressPool {pool}, whose serviceSelector does not select this Service"
            ),
            Refusal::InUse { ip, by } => write!(f, "{ip} is already assigned to Service {by}"),
        }
    }
}

pub type Outcome = Result<Vec<Address>, Refusal>;

/// Assigns addresses to `claims`, which come in priority order (oldest
/// Service first): one outcome per claim, in the same order. `pools` may
/// come in any order; they are tried by name.
pub fn assign(pools: &[Pool], claims: &[Claim]) -> Vec<Outcome> {
    let mut pools: Vec<&Pool> = pools.iter().collect();
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    let mut taken: HashMap<IpAddr, usize> = HashMap::new();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; claims.len()];

    // 1. Keep what is still valid, oldest first.
    for (i, claim) in claims.iter().enumerate() {
        if let Some(kept) = keep(&pools, claim, &taken) {
            for address in &kept {
                taken.insert(address.ip, i);
            }
            outcomes[i] = Some(Ok(kept));
        }
    }
    // 2. and 3. The rest, oldest first.
    for (i, claim) in claims.iter().enumerate() {
        if outcomes[i].is_some() {
            continue;
        }
        let outcome = if claim.requested.is_empty() {
            choose(&pools, claim, &taken)
        } else {
            ask(&pools, claim, &taken, claims)
        };
        if let Ok(addresses) = &outcome {
            for address in addresses {
                taken.insert(address.ip, i);
            }
        }
        outcomes[i] = Some(outcome);
    }
    outcomes.into_iter().map(|o| o.expect("every claim has an outcome")).collect()
}

/// The Service's current addresses, if every one of them is still its own
/// to have, and it still asks for exactly them.
fn keep(pools: &[&Pool], claim: &Claim, taken: &HashMap<IpAddr, usize>) -> Option<Vec<Address>> {
    if claim.current.is_empty() {
        return None;
    }
    if !claim.requested.is_empty() {
        let mut want = claim.requested.clone();
        let mut have = claim.current.clone();
        want.sort();
        have.sort();
        if want != have {
            return None;
        }
    } else {
        let families: Vec<Family> = claim.current.iter().map(|ip| Family::of(*ip)).collect();
        let required = if claim.second_optional { 1 } else { claim.families.len() };
        let mut distinct = families.clone();
        distinct.sort();
        distinct.dedup();
        if distinct.len() != families.len()
            || families.iter().any(|f| !claim.families.contains(f))
            || claim.families[..required].iter().any(|f| !families.contains(f))
        {
            return None;
        }
    }
    let mut kept = Vec::new();
    for ip in &claim.current {
        if taken.contains_key(ip) {
            return None;
        }
        let pool = pools.iter().find(|p| {
            p.holds(*ip) && p.serves(claim) && (p.auto_assign || !claim.requested.is_empty())
        })?;
        kept.push(Address { ip: *ip, pool: pool.name.clone() });
    }
    Some(kept)
}

/// The addresses a Service names, if they are free and in a pool that serves it.
fn ask(
    pools: &[&Pool],
    claim: &Claim,
    taken: &HashMap<IpAddr, usize>,
    claims: &[Claim],
) -> Outcome {
    let mut addresses = Vec::new();
    for ip in &claim.requested {
        let holding: Vec<&&Pool> = pools.iter().filter(|p| p.holds(*ip)).collect();
        let Some(pool) = holding.iter().find(|p| p.serves(claim)) else {
            return Err(match holding.first() {
                Some(pool) => Refusal::NotSelected { ip: *ip, pool: pool.name.clone() },
                None => Refusal::NotInPool(*ip),
            });
        };
        if let Some(&by) = taken.get(ip) {
            return Err(Refusal::InUse { ip: *ip, by: claims[by].service.clone() });
        }
        addresses.push(Address { ip: *ip, pool: pool.name.clone() });
    }
    Ok(addresses)
}

/// One address per family: the current one if it is still free and valid,
/// else the lowest free one of the first pool (by name) that has one.
fn choose(pools: &[&Pool], claim: &Claim, taken: &HashMap<IpAddr, usize>) -> Outcome {
    let mut addresses = Vec::new();
    for (k, family) in claim.families.iter().enumerate() {
        let optional = k > 0 && claim.second_optional;
        let serving: Vec<&&Pool> = pools
            .iter()
            .filter(|p| {
                p.auto_assign
                    && p.serves(claim)
                    && p.blocks.iter().any(|b| Family::of(b.first) == *family)
            })
            .collect();
        let current = claim.current.iter().find(|ip| {
            Family::of(**ip) == *family
                && !taken.contains_key(ip)
                && serving.iter().any(|p| p.holds(**ip))
        });
        if let Some(ip) = current {
            let pool = serving.iter().find(|p| p.holds(*ip)).expect("checked above");
            addresses.push(Address { ip: *ip, pool: pool.name.clone() });
            continue;
        }
        if serving.is_empty() {
            if optional {
                continue;
            }
            return Err(Refusal::NoPool(*family));
        }
        match serving.iter().find_map(|p| Some((p, p.first_free(*family, taken)?))) {
            Some((pool, ip)) => addresses.push(Address { ip, pool: pool.name.clone() }),
            None if optional => {}
            None => {
                return Err(Refusal::Exhausted {
                    family: *family,
                    pools: serving.iter().map(|p| p.name.clone()).collect(),
                });
            }
        }
    }
    Ok(addresses)
}

/// How full a pool is, per family: (assigned, assignable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub ipv4: (u128, u128),
    pub ipv6: (u128, u128),
}

/// Each pool's usage after `outcomes`, by pool name.
pub fn usage(pools: &[Pool], outcomes: &[Outcome]) -> BTreeMap<String, Usage> {
    let mut usage: BTreeMap<String, Usage> = BTreeMap::new();
    for pool in pools {
        let entry = usage.entry(pool.name.clone()).or_default();
        for block in &pool.blocks {
            let side = if block.first.is_ipv4() { &mut entry.ipv4 } else { &mut entry.ipv6 };
            side.1 = side.1.saturating_add(block.size());
        }
    }
    for address in outcomes.iter().flatten().flatten() {
        if let Some(entry) = usage.get_mut(&address.pool) {
            let side = if address.ip.is_ipv4() { &mut entry.ipv4 } else { &mut entry.ipv6 };
            side.0 += 1;
        }
    }
    usage
}

#[cfg(test)]
#[path = "ipam_tests.rs"]
mod tests;
