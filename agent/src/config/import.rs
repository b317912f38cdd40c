//! What a peer may put into the agent: which of its routes are kept, and how
//! many before the session is reset (`peers[].import`).
//!
//! A gateway announces; it forwards nothing by what it receives. So what a
//! peer sends costs memory and handoff time and buys nothing but visibility:
//! `accept: none` keeps counts only, and every peer has a prefix limit by
//! default, so a router that leaks a full table (or ten) cannot push the agent
//! out of memory.

use serde::{Deserialize, Serialize};

use crate::route::Prefix;

/// What the gateway keeps of the routes one peer sends.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Import {
    /// `all` (default): keep every route; `none`: keep none, count them only
    /// (a handoff then carries nothing of this peer's routes); `prefixes`:
    /// keep only routes that `prefixes` matches.
    #[serde(default)]
    pub accept: Accept,
    /// With `accept: prefixes`: the routes to keep.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 1000)))]
    pub prefixes: Vec<PrefixMatch>,
    #[serde(default)]
    pub max_prefixes: MaxPrefixes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Accept {
    #[default]
    All,
    None,
    Prefixes,
}

/// Routes inside `prefix` whose length is from the prefix's own up to
/// `maxLength` (as an RPKI ROA reads): `{prefix: 0.0.0.0/0}` is the default
/// route only, `{prefix: 10.0.0.0/8, maxLength: 24}` is 10/8 and every
/// more specific route in it up to /24.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct PrefixMatch {
    pub prefix: Prefix,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(range(max = 128)))]
    pub max_length: Option<u8>,
}

impl PrefixMatch {
    pub fn matches(&self, p: &Prefix) -> bool {
        let longest = self.max_length.unwrap_or(self.prefix.len());
        self.prefix.contains(p) && p.len() <= longest
    }
}

/// The most routes of one address family the peer may have kept here (BIRD's
/// `import limit`, FRR's `maximum-prefix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MaxPrefixes {
    /// Routes per address family (IPv4 and IPv6 counted apart).
    #[serde(default = "default_limit")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub limit: u32,
    /// A warning (log, status, metric) once this share of the limit is reached.
    #[serde(default = "default_warning_percent")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub warning_percent: u8,
    /// Past the limit: `restart` closes the session with a Cease NOTIFICATION
    /// (Maximum Number of Prefixes Reached, RFC 4486) and takes it up again
    /// after `restartAfter`; `warn` only warns and keeps the routes.
    #[serde(default)]
    pub action: LimitAction,
    /// Seconds before a session reset for its prefix count comes back.
    #[serde(default = "default_restart_after")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1)))]
    pub restart_after: u16,
}

/// 100,000 routes per family: far above what routers in front of a gateway
/// send it (a default route, a few aggregates), far below a leaked full table
/// (1M IPv4 routes, about 130 MB in the agent and again in its successor).
fn default_limit() -> u32 {
    100_000
}

fn default_warning_percent() -> u8 {
    80
}

fn default_restart_after() -> u16 {
    60
}

impl Default for MaxPrefixes {
    fn default() -> Self {
        Self {
            limit: default_limit(),
            warning_percent: default_warning_percent(),
            action: LimitAction::default(),
            restart_after: default_restart_after(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum LimitAction {
    #[default]
    Restart,
    Warn,
}

impl Import {
    /// Whether a route for `p` is kept.
    pub fn admits(&self, p: &Prefix) -> bool {
        match self.accept {
            Accept::All => true,
            Accept::None => false,
            Accept::Prefixes => self.prefixes.iter().any(|m| m.matches(p)),
        }
    }
}

/// Where one family's count stands against the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitVerdict {
    Within,
    /// At or past the warning share, not past the limit.
    Warning,
    Exceeded,
}

impl MaxPrefixes {
    pub fn verdict(&self, count: usize) -> LimitVerdict {
        let limit = self.limit as usize;
        let warn_at = (limit * usize::from(self.warning_percent)).div_ceil(100);
        if count > limit {
            LimitVerdict::Exceeded
        } else if count >= warn_at {
            LimitVerdict::Warning
        } else {
            LimitVerdict::Within
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(prefix: &str, max_length: Option<u8>) -> PrefixMatch {
        PrefixMatch { prefix: prefix.parse().unwrap(), max_length }
    }

    #[test]
    fn prefix_matches_read_as_a_roa_does() {
        // (match, route, kept)
        let cases = [
            (m("0.0.0.0/0", None), "0.0.0.0/0", true),
            (m("0.0.0.0/0", None), "10.0.0.0/8", false),
            (m("10.0.0.0/8", Some(24)), "10.0.0.0/8", true),
            (m("10.0.0.0/8", Some(24)), "10.1.2.0/24", true),
            (m("10.0.0.0/8", Some(24)), "10.1.2.0/25", false),
            (m("10.0.0.0/8", Some(24)), "11.0.0.0/24", false),
            (m("10.0.0.0/8", Some(24)), "0.0.0.0/0", false),
            (m("2001:db8::/32", Some(48)), "2001:db8:1::/48", true),
            (m("2001:db8::/32", Some(48)), "10.0.0.0/8", false),
            (m("::/0", Some(128)), "10.0.0.0/8", false),
        ];
        for (rule, route, kept) in cases {
            assert_eq!(rule.matches(&route.parse().unwrap()), kept, "{rule:?} {route}");
        }
    }

    #[test]
    fn accept_decides_what_is_kept() {
        let route: Prefix = "10.1.0.0/16".parse().unwrap();
        let with = |accept, prefixes| Import { accept, prefixes, ..Default::default() };
        assert!(with(Accept::All, vec![]).admits(&route));
        assert!(!with(Accept::None, vec![]).admits(&route));
        assert!(with(Accept::Prefixes, vec![m("10.0.0.0/8", Some(16))]).admits(&route));
        assert!(!with(Accept::Prefixes, vec![m("10.0.0.0/8", None)]).admits(&route));
    }

    #[test]
    fn the_limit_warns_at_its_share_and_is_exceeded_only_past_it() {
        let limit =
            |limit, warning_percent| MaxPrefixes { limit, warning_percent, ..Default::default() };
        // (limit, count, verdict)
        let cases = [
            (limit(100, 80), 0, LimitVerdict::Within),
            (limit(100, 80), 79, LimitVerdict::Within),
            (limit(100, 80), 80, LimitVerdict::Warning),
            (limit(100, 80), 100, LimitVerdict::Warning),
            (limit(100, 80), 101, LimitVerdict::Exceeded),
            (limit(3, 50), 2, LimitVerdict::Warning),
            (limit(1, 100), 1, LimitVerdict::Warning),
            (limit(1, 100), 2, LimitVerdict::Exceeded),
            (limit(u32::MAX, 100), u32::MAX as usize, LimitVerdict::Warning),
        ];
        for (rule, count, verdict) in cases {
            assert_eq!(rule.verdict(count), verdict, "{rule:?} at {count}");
        }
    }
}
