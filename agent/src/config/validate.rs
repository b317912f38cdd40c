//! The rules a configuration must keep that its types alone cannot say.
//!
//! Each rule reports the path of the field it is about, so the same functions
//! serve the agent's file (`peers[1].holdTime`) and the operator's CRD spec
//! (`spec.peers[1].holdTime`). Rules that fit a single object also stand as CEL
//! rules in the CRD; a test checks that both agree case by case.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Accept, Announcement, Config, Import, Peer};
use crate::route::NextHop;
use crate::wire::{AsPath, MAX_MESSAGE_LEN, Origin, PathAttrs, UpdateBuilder, WireContext};

/// One broken rule: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every broken rule found, in the order of the fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into() });
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }

    pub fn into_result(self) -> Result<(), Problems> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "  - {p}")?;
        }
        Ok(())
    }
}

pub(super) fn config(c: &Config, problems: &mut Problems) {
    asn(c.asn, "asn", problems);
    if let Some(id) = c.router_id
        && id.is_unspecified()
    {
        problems.push("routerId", "0.0.0.0 is not a valid BGP identifier");
    }
    if c.peers.is_empty() {
        problems
            .push("peers", "at least one peer is needed: a gateway with no peer announces nothing");
    }
    peers(&c.peers, c.asn, "", problems);
    listener(c.listen, &c.peers, problems);
    announcements(&c.announce, "", problems);
    bmp(&c.bmp, "", problems);
}

/// The BGP listener: a port peers can reach, or none at all.
fn listener(listen: Option<SocketAddr>, peers: &[Peer], problems: &mut Problems) {
    match listen {
        Some(addr) if addr.port() == 0 => {
            problems.push("listen", "port 0 is not a port BGP peers can reach")
        }
        Some(addr) if addr.ip().is_multicast() => {
            problems.push("listen", format!("{} is a multicast address", addr.ip()))
        }
        Some(_) => {}
        None => passive_without_listener(peers, "", problems),
    }
}

/// With no listener, a passive peer (one we never dial) could never connect.
pub fn passive_without_listener(peers: &[Peer], prefix: &str, problems: &mut Problems) {
    for (i, p) in peers.iter().enumerate().filter(|(_, p)| p.passive) {
        problems.push(
            format!("{prefix}peers[{i}].passive"),
            format!(
                "{} could never connect: the gateway has no listener, so every peer must be dialled",
                p.named()
            ),
        );
    }
}

/// BMP collectors: each reachable, each once.
pub fn bmp(collectors: &[super::BmpCollector], prefix: &str, problems: &mut Problems) {
    for (i, c) in collectors.iter().enumerate() {
        let at = |field: &str| format!("{prefix}bmp[{i}].{field}");
        if c.port == 0 {
            problems.push(at("port"), "port 0 cannot be dialled");
        }
        if c.address.is_unspecified() || c.address.is_multicast() {
            problems.push(at("address"), format!("{} cannot be dialled", c.address));
        }
        if let Some(first) = collectors[..i].iter().position(|o| o.socket_addr() == c.socket_addr())
        {
            problems.push(at("address"), format!("{} is already bmp[{first}]", c.socket_addr()));
        }
    }
}

/// The local AS: 0 is reserved (RFC 7607) and 23456 stands in for 4-octet ASNs
/// on 2-octet sessions (RFC 6793), so neither can be ours.
pub fn asn(asn: u32, path: &str, problems: &mut Problems) {
    match asn {
        0 => problems.push(path, "AS 0 is reserved (RFC 7607)"),
        23456 => problems.push(path, "AS 23456 is AS_TRANS (RFC 6793), not a real AS"),
        _ => {}
    }
}

/// The rules for `peers[]`. `prefix` is prepended to each path ("spec." for the CRD).
pub fn peers(peers: &[Peer], local_asn: u32, prefix: &str, problems: &mut Problems) {
    let mut seen = HashMap::new();
    for (i, p) in peers.iter().enumerate() {
        let at = |field: &str| format!("{prefix}peers[{i}].{field}");
        // ::ffff:a.b.c.d is a.b.c.d: the same neighbour, reaching one listener.
        let key = match p.address {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(p.address, Into::into),
            v4 => v4,
        };
        match &p.address_from {
            None if p.address.is_unspecified() => problems.push(
                at("address"),
                "needed (and not 0.0.0.0 or ::), or addressFrom for an address of each node's own",
            ),
            None if p.address.is_multicast() => {
                problems.push(at("address"), format!("{} cannot be dialled", p.address))
            }
            None => {
                if let Some(first) = seen.insert(key, i) {
                    problems
                        .push(at("address"), format!("{} is already peers[{first}]", p.address));
                    seen.insert(key, first);
                }
            }
            Some(_) if !p.address.is_unspecified() => problems.push(
                at("addressFrom"),
                format!("either address ({}) or addressFrom, not both", p.address),
            ),
            Some(from) => match (&from.node_annotation, &from.default_gateway) {
                (Some(key), None) => {
                    if let Some(problem) = annotation_key(key) {
                        problems.push(at("addressFrom.nodeAnnotation"), problem);
                    }
                }
                (None, Some(_)) => {}
                _ => problems.push(
                    at("addressFrom"),
                    "names one source of the address: nodeAnnotation or defaultGateway",
                ),
            },
        }
        if p.asn == 0 {
            problems.push(at("asn"), "AS 0 is reserved (RFC 7607)");
        }
        if let Some(message) = hold_and_keepalive(p.hold_time, p.keepalive_time) {
            let field = if message.starts_with("holdTime") { "holdTime" } else { "keepaliveTime" };
            problems.push(at(field), message);
        }
        if p.port == 0 {
            problems.push(at("port"), "port 0 cannot be dialled");
        }
        if p.connect_retry_time == 0 {
            problems.push(at("connectRetryTime"), "must be at least 1 second");
        }
        if let Some(local) = p.local_address
            && p.address_from.is_none()
            && local.is_ipv4() != p.address.is_ipv4()
        {
            problems.push(
                at("localAddress"),
                format!("{local} and the peer address {} are of different families", p.address),
            );
        }
        match p.ebgp_multihop {
            Some(_) if p.is_ibgp(local_asn) => problems.push(
                at("ebgpMultihop"),
                format!("applies to eBGP only; AS {} is the gateway's own AS (iBGP)", p.asn),
            ),
            Some(0) => problems.push(at("ebgpMultihop"), "must be 1-255 hops"),
            _ => {}
        }
        if p.families.is_empty() {
            problems.push(at("families"), "at least one family is needed");
        }
        if p.node_selector.keys().any(String::is_empty) {
            problems.push(at("nodeSelector"), "a label name cannot be empty");
        }
        for (j, f) in p.families.iter().enumerate() {
            if p.families[..j].contains(f) {
                problems.push(format!("{prefix}peers[{i}].families[{j}]"), "listed twice");
            }
        }
        if let Some(secret) = &p.password_secret_ref
            && (secret.name.is_empty() || secret.key.is_empty())
        {
            problems.push(at("passwordSecretRef"), "needs both name and key");
        }
        let gr = &p.graceful_restart;
        if gr.restart_time > 4095 {
            problems.push(
                at("gracefulRestart.restartTime"),
                "must be at most 4095 seconds (12 bits, RFC 4724)",
            );
        }
        if gr.long_lived_stale_time > 0xFF_FFFF {
            problems.push(
                at("gracefulRestart.longLivedStaleTime"),
                "must be at most 16777215 seconds (24 bits, RFC 9494)",
            );
        }
        import(&p.import, &at("import"), problems);
    }
}

/// What is wrong with `key` as the name of an annotation (an optional DNS
/// subdomain prefix and `/`, then a name of at most 63 characters), if
/// anything.
pub(crate) fn annotation_key(key: &str) -> Option<String> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = !key.contains('/')
        || (!prefix.is_empty()
            && prefix.len() <= 253
            && prefix.split('.').all(|l| {
                !l.is_empty()
                    && l.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            }));
    (!(name_ok && prefix_ok)).then(|| {
        format!(
            "{key:?} is not an annotation name: [prefix/]name, the name at most 63 letters, \
             digits, '-', '_' or '.', the prefix a DNS subdomain"
        )
    })
}

/// The rules for `peers[].import`; `at` is its path.
fn import(import: &Import, at: &str, problems: &mut Problems) {
    match (import.accept, import.prefixes.is_empty()) {
        (Accept::Prefixes, true) => problems.push(
            format!("{at}.prefixes"),
            "accept: prefixes needs at least one prefix; use accept: none to keep no route",
        ),
        (Accept::All | Accept::None, false) => problems.push(
            format!("{at}.prefixes"),
            format!("only used with accept: prefixes, not accept: {:?}", import.accept)
                .to_lowercase(),
        ),
        _ => {}
    }
    for (j, m) in import.prefixes.iter().enumerate() {
        let width = if m.prefix.is_ipv4() { 32 } else { 128 };
        if let Some(max) = m.max_length
            && !(m.prefix.len()..=width).contains(&max)
        {
            problems.push(
                format!("{at}.prefixes[{j}].maxLength"),
                format!("must be from {} to {width} for {}, got {max}", m.prefix.len(), m.prefix),
            );
        }
    }
    let limit = &import.max_prefixes;
    if limit.limit == 0 {
        problems.push(
            format!("{at}.maxPrefixes.limit"),
            "must be at least 1; use accept: none to keep no route",
        );
    }
    if !(1..=100).contains(&limit.warning_percent) {
        problems.push(
            format!("{at}.maxPrefixes.warningPercent"),
            format!("must be 1-100, got {}", limit.warning_percent),
        );
    }
    if limit.restart_after == 0 {
        problems.push(format!("{at}.maxPrefixes.restartAfter"), "must be at least 1 second");
    }
}

/// RFC 4271 §4.2 and §10: the hold time is 0 or at least 3 seconds; keepalives
/// must come more often than the hold time, and not at all when it is 0.
/// The message starts with the field it is about.
pub fn hold_and_keepalive(hold: u16, keepalive: Option<u16>) -> Option<String> {
    if hold == 1 || hold == 2 {
        return Some(format!(
            "holdTime must be 0 (no keepalives) or at least 3 seconds, got {hold} (RFC 4271 §4.2)"
        ));
    }
    match keepalive {
        Some(k) if hold == 0 && k != 0 => {
            Some(format!("keepaliveTime must be 0 when holdTime is 0 (no keepalives), got {k}"))
        }
        Some(k) if hold > 0 && (k == 0 || k >= hold) => {
            Some(format!("keepaliveTime must be at least 1 and less than holdTime {hold}, got {k}"))
        }
        _ => None,
    }
}

/// The rules for `announce[]`.
pub fn announcements(list: &[Announcement], prefix: &str, problems: &mut Problems) {
    let mut seen = HashMap::new();
    for (i, a) in list.iter().enumerate() {
        let at = |field: &str| format!("{prefix}announce[{i}].{field}");
        if let Some(first) = seen.insert(a.prefix, i) {
            problems.push(at("prefix"), format!("{} is already announce[{first}]", a.prefix));
            seen.insert(a.prefix, first);
        }
        if let NextHop::Address(nh) = a.next_hop
            && nh.is_ipv4() != a.prefix.is_ipv4()
        {
            problems.push(
                at("nextHop"),
                format!("{nh} is not of the same family as the prefix {}", a.prefix),
            );
        }
        if let NextHop::Address(nh) = a.next_hop
            && (nh.is_unspecified() || nh.is_multicast())
        {
            problems.push(at("nextHop"), format!("{nh} cannot be a next hop"));
        }
        if let Some(check) = &a.check {
            health_check(check, &at("check"), problems);
        }
        // A checked prefix is sent with one community more while it drains.
        let len = match &a.check {
            Some(_) => worst_update_len(&crate::health::draining(a)),
            None => worst_update_len(a),
        };
        if len > MAX_MESSAGE_LEN {
            let field = if a.communities.is_empty() { "largeCommunities" } else { "communities" };
            problems.push(
                at(field),
                format!(
                    "with {} communities and {} large communities its UPDATE takes {len} bytes, \
                     over the {MAX_MESSAGE_LEN} of a BGP message to routers without extended \
                     messages (RFC 8654)",
                    a.communities.len(),
                    a.large_communities.len()
                ),
            );
        }
    }
}

/// The rules for an announcement's `check`.
fn health_check(check: &super::HealthCheck, at: &str, problems: &mut Problems) {
    if let Err((field, why)) = check.probe() {
        let path = if field.is_empty() { at.to_string() } else { format!("{at}.{field}") };
        problems.push(path, why);
    }
    if check.timeout_seconds > check.interval_seconds {
        problems.push(
            format!("{at}.timeoutSeconds"),
            format!(
                "{} s is longer than the interval ({} s): a probe would still run when the next one starts",
                check.timeout_seconds, check.interval_seconds
            ),
        );
    }
}

/// The largest UPDATE one announcement can need, to any peer: iBGP (with
/// LOCAL_PREF) or eBGP with a 4-octet AS towards a 2-octet peer (AS_PATH
/// and AS4_PATH), without extended messages.
fn worst_update_len(a: &Announcement) -> usize {
    let next_hop = if a.prefix.is_ipv4() {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    let attrs = PathAttrs {
        origin: Some(Origin::Igp),
        as_path: Some(AsPath::sequence([u32::MAX])),
        med: a.med,
        local_pref: Some(a.local_pref.unwrap_or(0)),
        communities: a.communities.clone(),
        large_communities: a.large_communities.clone(),
        ..Default::default()
    };
    [true, false]
        .into_iter()
        .map(|four_octet_as| {
            let ctx = WireContext { four_octet_as, extended_messages: false, ebgp: false };
            UpdateBuilder::new(ctx).single_len(&attrs, next_hop, &a.prefix)
        })
        .max()
        .unwrap_or(0)
}
