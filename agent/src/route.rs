//! What a route is, independent of how it travels: an IP prefix and the
//! community values attached to it.
//!
//! These types appear in three places that must agree on their spelling — the
//! agent's config file, the `BgpGateway` CRD (which embeds the agent's config
//! types) and the wire codec — so each has one canonical text form:
//!
//! ```text
//! Prefix          10.0.0.0/24   2001:db8::/48       (host bits must be zero)
//! Community       65000:100     no-export  graceful-shutdown  llgr-stale ...
//! LargeCommunity  65000:1:2
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a text form of a route value was refused. The message is written for a
/// person editing a config file: it says what was expected and, where it can,
/// what was probably meant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(String);

/// An IPv4 or IPv6 prefix with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// A prefix from an address and a length; refuses host bits and lengths
    /// beyond the family's width.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, ParseError> {
        let width = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if len > width {
            return Err(ParseError(format!(
                "prefix length /{len} is longer than the {width} bits of {addr}"
            )));
        }
        let masked = mask(addr, len);
        if masked != addr {
            return Err(ParseError(format!(
                "{addr}/{len} has host bits set; did you mean {masked}/{len}?"
            )));
        }
        Ok(Self { addr, len })
    }

    /// A prefix from wire bytes, whose trailing bits "are irrelevant"
    /// (RFC 4271 §4.3): they are cleared. None when `len` is too long.
    pub fn masked(addr: IpAddr, len: u8) -> Option<Self> {
        let width = if addr.is_ipv4() { 32 } else { 128 };
        (len <= width).then(|| Self { addr: mask(addr, len), len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn len(&self) -> u8 {
        self.len
    }

    /// True for a default route (`/0`); named to keep clippy's `len`/`is_empty` pairing meaningful.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `other` is this prefix or a more specific one inside it.
    pub fn contains(&self, other: &Prefix) -> bool {
        other.is_ipv4() == self.is_ipv4()
            && other.len >= self.len
            && mask(other.addr, self.len) == self.addr
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 { 0 } else { u128::MAX << (128 - u32::from(len)) };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl FromStr for Prefix {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            ParseError(format!("`{s}` is not a prefix: expected ADDRESS/LENGTH, e.g. 10.0.0.0/24"))
        })?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| ParseError(format!("`{addr}` in `{s}` is not an IP address")))?;
        let len: u8 = len
            .parse()
            .map_err(|_| ParseError(format!("`{len}` in `{s}` is not a prefix length")))?;
        Prefix::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// An RFC 1997 community, `ASN:VALUE` or a well-known name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Community(pub u32);

impl Community {
    /// RFC 8326: the route is about to go away; receivers lower its preference.
    pub const GRACEFUL_SHUTDOWN: Community = Community(0xFFFF_0000);
    /// RFC 9494: the route is kept only by Long-Lived Graceful Restart.
    pub const LLGR_STALE: Community = Community(0xFFFF_0006);
    /// RFC 9494: do not keep this route under Long-Lived Graceful Restart.
    pub const NO_LLGR: Community = Community(0xFFFF_0007);
    /// RFC 7999.
    pub const BLACKHOLE: Community = Community(0xFFFF_029A);
    /// RFC 1997.
    pub const NO_EXPORT: Community = Community(0xFFFF_FF01);
    pub const NO_ADVERTISE: Community = Community(0xFFFF_FF02);
    pub const NO_EXPORT_SUBCONFED: Community = Community(0xFFFF_FF03);
    /// RFC 3765.
    pub const NO_PEER: Community = Community(0xFFFF_FF04);

    const NAMES: [(&'static str, Community); 8] = [
        ("graceful-shutdown", Self::GRACEFUL_SHUTDOWN),
        ("llgr-stale", Self::LLGR_STALE),
        ("no-llgr", Self::NO_LLGR),
        ("blackhole", Self::BLACKHOLE),
        ("no-export", Self::NO_EXPORT),
        ("no-advertise", Self::NO_ADVERTISE),
        ("no-export-subconfed", Self::NO_EXPORT_SUBCONFED),
        ("no-peer", Self::NO_PEER),
    ];
}

impl FromStr for Community {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((_, c)) = Self::NAMES.iter().find(|(name, _)| *name == s) {
            return Ok(*c);
        }
        let parts = split_u32s(s, 2).filter(|p| p.iter().all(|v| *v <= 0xFFFF));
        match parts.as_deref() {
            Some([asn, value]) => Ok(Community((asn << 16) | value)),
            _ => Err(ParseError(format!(
                "`{s}` is not a community: expected ASN:VALUE with both parts 0-65535 \
                 (e.g. 65000:100) or one of {}",
                Self::NAMES.map(|(n, _)| n).join(", ")
            ))),
        }
    }
}

impl fmt::Display for Community {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::NAMES.iter().find(|(_, c)| c == self) {
            Some((name, _)) => f.write_str(name),
            None => write!(f, "{}:{}", self.0 >> 16, self.0 & 0xFFFF),
        }
    }
}

/// An RFC 8092 large community, `GLOBAL:LOCAL1:LOCAL2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity(pub u32, pub u32, pub u32);

impl FromStr for LargeCommunity {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match split_u32s(s, 3).as_deref() {
            Some([a, b, c]) => Ok(LargeCommunity(*a, *b, *c)),
            _ => Err(ParseError(format!(
                "`{s}` is not a large community: expected GLOBAL:LOCAL1:LOCAL2, \
                 three numbers 0-4294967295 (e.g. 65000:1:2)"
            ))),
        }
    }
}

impl fmt::Display for LargeCommunity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.0, self.1, self.2)
    }
}

/// Where an announced route points: the gateway itself or a given address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum NextHop {
    /// The local address of each session (eBGP and iBGP alike).
    #[default]
    SelfAddress,
    Address(IpAddr),
}

impl FromStr for NextHop {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "self" {
            return Ok(NextHop::SelfAddress);
        }
        s.parse().map(NextHop::Address).map_err(|_| {
            ParseError(format!("`{s}` is not a next hop: expected `self` or an IP address"))
        })
    }
}

impl fmt::Display for NextHop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NextHop::SelfAddress => f.write_str("self"),
            NextHop::Address(a) => a.fmt(f),
        }
    }
}

/// `n` colon-separated unsigned 32-bit numbers, or None.
fn split_u32s(s: &str, n: usize) -> Option<Vec<u32>> {
    let parts: Vec<u32> = s.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    (parts.len() == n).then_some(parts)
}

/// Serde and JSON Schema for the types above go through their text form.
macro_rules! text_form {
    ($ty:ty, $name:literal, $pattern:literal, $max_length:literal, $description:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

        #[cfg(feature = "schema")]
        impl schemars::JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                $name.into()
            }

            fn inline_schema() -> bool {
                true
            }

            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "pattern": $pattern,
                    "maxLength": $max_length,
                    "description": $description,
                })
            }
        }
    };
}

text_form!(
    Prefix,
    "Prefix",
    r"^[0-9a-fA-F:.]+/[0-9]{1,3}$",
    49, // ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255/128
    "An IPv4 or IPv6 prefix, ADDRESS/LENGTH with host bits zero, e.g. 192.0.2.0/24 or 2001:db8::/48."
);
text_form!(
    Community,
    "Community",
    r"^([0-9]{1,5}:[0-9]{1,5}|[a-z-]+)$",
    19, // no-export-subconfed
    "An RFC 1997 community, ASN:VALUE (e.g. 65000:100) or a well-known name: graceful-shutdown, llgr-stale, no-llgr, blackhole, no-export, no-advertise, no-export-subconfed, no-peer."
);
text_form!(
    NextHop,
    "NextHop",
    r"^(self|[0-9a-fA-F:.]+)$",
    45,
    "`self` (the session's local address) or an IP address of the same family as the prefix."
);
text_form!(
    LargeCommunity,
    "LargeCommunity",
    r"^[0-9]{1,10}:[0-9]{1,10}:[0-9]{1,10}$",
    32,
    "An RFC 8092 large community, GLOBAL:LOCAL1:LOCAL2, e.g. 65000:1:2."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_and_print_canonically() {
        for (text, printed) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("192.0.2.1/32", "192.0.2.1/32"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:0db8:0000::/48", "2001:db8::/48"),
            ("::/0", "::/0"),
        ] {
            let p: Prefix = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(p.to_string(), printed, "{text}");
        }
    }

    #[test]
    fn bad_prefixes_say_what_is_wrong() {
        for (text, needle) in [
            ("10.0.0.1/24", "did you mean 10.0.0.0/24?"),
            ("10.0.0.0/33", "longer than the 32 bits"),
            ("2001:db8::/129", "longer than the 128 bits"),
            ("10.0.0.0", "expected ADDRESS/LENGTH"),
            ("10.0.0/24", "is not an IP address"),
            ("10.0.0.0/x", "is not a prefix length"),
            ("2001:db8::1/64", "did you mean 2001:db8::/64?"),
        ] {
            let err = text.parse::<Prefix>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text}: got `{err}`, wanted `{needle}`");
        }
    }

    #[test]
    fn communities_round_trip_through_text() {
        for (text, value) in [
            ("65000:100", 0xFDE8_0064),
            ("0:0", 0),
            ("65535:65535", u32::MAX),
            ("graceful-shutdown", 0xFFFF_0000),
            ("llgr-stale", 0xFFFF_0006),
            ("no-export", 0xFFFF_FF01),
        ] {
            let c: Community = text.parse().unwrap();
            assert_eq!(c.0, value, "{text}");
            assert_eq!(c.to_string(), text);
        }
        // 65535:1 prints as its name.
        assert_eq!(Community(0xFFFF_FF01).to_string(), "no-export");
    }

    #[test]
    fn bad_communities_are_refused() {
        for text in ["65536:1", "1:65536", "1", "1:2:3", "no-such-name", "a:b", ""] {
            let err = text.parse::<Community>().unwrap_err().to_string();
            assert!(err.contains("is not a community"), "{text}: {err}");
        }
    }

    #[test]
    fn large_communities_round_trip_and_refuse_junk() {
        let c: LargeCommunity = "4294967295:1:2".parse().unwrap();
        assert_eq!(c, LargeCommunity(u32::MAX, 1, 2));
        assert_eq!(c.to_string(), "4294967295:1:2");
        for text in ["1:2", "1:2:3:4", "4294967296:1:2", "x:1:2"] {
            assert!(text.parse::<LargeCommunity>().is_err(), "{text}");
        }
    }
}
