//! A local health check on an announcement, the keepalived habit: the
//! prefix is announced while the service behind it answers, drained
//! (GRACEFUL_SHUTDOWN) and then withdrawn when it stops answering.
//!
//! ```yaml
//! announce:
//! - prefix: 192.0.2.10/32
//!   check:
//!     tcp: 127.0.0.1:8080          # or http: {url, status}, or command: [...]
//!     intervalSeconds: 2
//!     timeoutSeconds: 1
//!     rise: 2                      # successes in a row to announce
//!     fall: 3                      # failures in a row to withdraw
//!     drainSeconds: 10             # GRACEFUL_SHUTDOWN first; 0: withdraw at once
//! ```

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// How an announcement's service is checked, and how quickly a verdict
/// changes. Exactly one of `tcp`, `http` and `command`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Healthy when a TCP connection to this address opens in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "schema", schemars(length(max = 53)))]
    pub tcp: Option<SocketAddr>,
    /// Healthy when a GET of the URL answers with the status in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheck>,
    /// Healthy when the command (run without a shell) exits 0 in time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "schema", schemars(length(max = 64), inner(length(max = 1024))))]
    pub command: Vec<String>,
    /// Seconds from the start of one probe to the start of the next.
    #[serde(default = "default_interval")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 3600)))]
    pub interval_seconds: u32,
    /// Seconds a probe may take; a slower one failed. At most the interval.
    #[serde(default = "default_timeout")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 3600)))]
    pub timeout_seconds: u32,
    /// Successes in a row that announce the prefix again.
    #[serde(default = "default_rise")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub rise: u32,
    /// Failures in a row that withdraw it.
    #[serde(default = "default_fall")]
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 100)))]
    pub fall: u32,
    /// Seconds the failed prefix stays announced with GRACEFUL_SHUTDOWN
    /// (RFC 8326), so the routers move traffic away before it goes; 0
    /// withdraws it at once.
    #[serde(default = "default_drain")]
    #[cfg_attr(feature = "schema", schemars(range(max = 3600)))]
    pub drain_seconds: u32,
}

/// An HTTP GET and the status it must answer with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct HttpCheck {
    /// `http://host:port/path`; plain HTTP to a local address.
    #[cfg_attr(feature = "schema", schemars(length(max = 2048)))]
    pub url: String,
    /// The status that means healthy.
    #[serde(default = "default_status")]
    #[cfg_attr(feature = "schema", schemars(range(min = 100, max = 599)))]
    pub status: u16,
}

fn default_interval() -> u32 {
    5
}
fn default_timeout() -> u32 {
    2
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}
fn default_drain() -> u32 {
    10
}
fn default_status() -> u16 {
    200
}

/// What a check probes, once validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Tcp(SocketAddr),
    Http { authority: String, path: String, status: u16 },
    Command(Vec<String>),
}

impl HealthCheck {
    /// The one probe it names, or what is wrong with it (the field and why).
    pub fn probe(&self) -> Result<Probe, (&'static str, String)> {
        let named = [self.tcp.is_some(), self.http.is_some(), !self.command.is_empty()];
        match named.iter().filter(|n| **n).count() {
            0 => return Err(("", "names no probe: set one of tcp, http, command".into())),
            1 => {}
            _ => {
                return Err((
                    "",
                    "names more than one probe: keep one of tcp, http, command".into(),
                ));
            }
        }
        if let Some(address) = self.tcp {
            if address.port() == 0 {
                return Err(("tcp", format!("{address}: port 0 cannot be connected to")));
            }
            return Ok(Probe::Tcp(address));
        }
        if let Some(http) = &self.http {
            let (authority, path) = http_target(&http.url).map_err(|e| ("http.url", e))?;
            return Ok(Probe::Http { authority, path, status: http.status });
        }
        Ok(Probe::Command(self.command.clone()))
    }
}

/// `http://host[:port][/path]` split into the authority and the path.
fn http_target(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs (a local check needs no TLS)"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || authority.contains(char::is_whitespace) {
        return Err(format!("{url:?}: no host to connect to"));
    }
    // "[::1]" has no port: what follows its last colon is not a number.
    let authority = if authority.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok((authority, path.to_string()))
}

#[cfg(test)]
mod tests {
    use super::http_target;

    #[test]
    fn http_urls_split_into_where_to_connect_and_what_to_ask() {
        let cases = [
            ("http://127.0.0.1:8080/healthz", Ok(("127.0.0.1:8080", "/healthz"))),
            ("http://127.0.0.1", Ok(("127.0.0.1:80", "/"))),
            ("http://[::1]/ready?full=1", Ok(("[::1]:80", "/ready?full=1"))),
            ("http://[::1]:9000/", Ok(("[::1]:9000", "/"))),
            ("http://localhost/x", Ok(("localhost:80", "/x"))),
            ("https://127.0.0.1/", Err("only http:// URLs")),
            ("http:///healthz", Err("no host to connect to")),
            ("http://user@host/", Err("no host to connect to")),
        ];
        for (url, want) in cases {
            match (http_target(url), want) {
                (Ok((authority, path)), Ok((a, p))) => {
                    assert_eq!((authority.as_str(), path.as_str()), (a, p), "{url}")
                }
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{url}: {e}"),
                (got, want) => panic!("{url}: got {got:?}, want {want:?}"),
            }
        }
    }
}
