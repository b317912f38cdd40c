//! Real BGP routers from Debian's packages (gobgpd, bird2, frr) as test peers,
//! each with the same questions answered as data: what did you learn from the
//! agent, and what timers did you negotiate.
//!
//! Every router peers with the agent twice: over IPv4 transport (carrying
//! ipv4-unicast) and over IPv6 transport (carrying ipv6-unicast).

use std::collections::BTreeMap;

use nonstop_testbed::tables;
use std::fs;

use super::{Daemon, Link, Netns, eventually};

pub const ROUTER_AS: u32 = 65000;
pub const AGENT_AS: u32 = 65001;

/// A route as a router shows it (read by the lab's readers too).
pub use nonstop_testbed::tables::Route as RouteView;

/// Hold time and keepalive interval a router reports for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub hold: u64,
    pub keepalive: u64,
}

/// What every test router offers.
pub trait Router {
    fn kind(&self) -> &'static str;
    /// Routes learnt from the agent, of one family, keyed by prefix.
    fn learnt(&self, v6: bool) -> Result<BTreeMap<String, RouteView>, String>;
    /// Timers of the session with `neighbor`, once it is Established.
    fn timers(&self, neighbor: &str) -> Result<Timers, String>;
    /// Asks `neighbor` (the agent) to send its routes again with a
    /// ROUTE-REFRESH; false when this router has no way to send one.
    fn refresh(&self, neighbor: &str) -> bool;
    /// How many routes from the agent (IPv4) it holds only as Graceful
    /// Restart helper.
    fn stale(&self) -> Result<usize, String>;
    /// Starts counting withdrawals of the agent's routes from now on.
    fn watch(&mut self);
    /// Withdrawals of the agent's routes seen since `watch`.
    fn withdrawals(&self) -> usize;
    /// The IPv4 session with the agent as the router counts it: any reset
    /// changes `since`, any UPDATE from the agent changes `updates`.
    fn session(&self) -> Result<SessionView, String>;
    /// Announces (or withdraws) the `churn_v4` prefixes of the setup.
    fn churn(&self, announce: bool);
    /// Why the router says its IPv4 session with the agent last went down,
    /// in its own words (log line or CLI).
    fn last_reset(&self) -> Result<String, String>;
    /// Resets the IPv4 session with the agent from the router's CLI, which
    /// sends Cease/Administrative Reset.
    fn reset(&self);
}

/// What a router says about its session with the agent.
#[derive(Debug, Clone, Eq)]
pub struct SessionView {
    /// When (or how many times) the session was established.
    pub since: String,
    /// UPDATE messages (gobgpd, FRR) or route updates (BIRD) received from the agent.
    pub updates: u64,
}

/// Milliseconds into the day of a `HH:MM:SS.mmm …` time.
fn day_ms(since: &str) -> Option<(i64, &str)> {
    let (time, rest) = since.split_once(' ').unwrap_or((since, ""));
    let (hms, ms) = time.split_once('.')?;
    let mut parts = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some((((h * 60 + m) * 60 + s) * 1000 + ms.parse::<i64>().ok()?, rest))
}

/// The same session: same UPDATE count, established at the same moment.
/// BIRD shows that moment as wall time derived from its monotonic clock at
/// each `show protocols`, which moves by a millisecond between two reads;
/// a reset would move it by at least the 1 s connect retry.
impl PartialEq for SessionView {
    fn eq(&self, other: &Self) -> bool {
        self.updates == other.updates
            && (self.since == other.since
                || matches!((day_ms(&self.since), day_ms(&other.since)),
                    (Some((a, x)), Some((b, y))) if x == y && (a - b).abs() <= 5))
    }
}

fn count_in(path: &std::path::Path, needle: &str) -> usize {
    String::from_utf8_lossy(&fs::read(path).unwrap_or_default()).matches(needle).count()
}

/// How a router is set up.
#[derive(Debug, Clone, Default)]
pub struct RouterSetup {
    pub hold_time: u32,
    pub keepalive: u32,
    /// Prefixes the router originates towards the agent.
    pub originate_v4: Vec<String>,
    pub originate_v6: Vec<String>,
    /// Graceful Restart (with the N-bit and LLGR) towards the agent.
    pub graceful_restart: Option<GrSetup>,
    /// Peer with the agent over IPv4 transport only.
    pub ipv4_only: bool,
    /// TCP MD5 password on the IPv4 session (BIRD and FRR).
    pub password: Option<String>,
    /// GTSM (RFC 5082) on the sessions (BIRD only).
    pub ttl_security: bool,
    /// Prefixes announced at start and flapped by [`Router::churn`].
    pub churn_v4: Vec<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct GrSetup {
    pub restart_time: u32,
    pub long_lived_stale_time: u32,
}

fn run(ns: &Netns, args: &[&str]) -> Result<String, String> {
    nonstop_testbed::netns::output(&format!("{args:?}"), ns.exec(args))
}

/// The paths from the agent (its AS first) of a table, by prefix.
fn from_agent(paths: Vec<(String, RouteView)>) -> BTreeMap<String, RouteView> {
    paths.into_iter().filter(|(_, r)| r.as_path.first() == Some(&u64::from(AGENT_AS))).collect()
}

mod bird;
mod frr;
mod gobgp;
mod many;

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use bird::{Bird, spawn_bird};
#[allow(unused_imports)]
pub use frr::Frr;
#[allow(unused_imports)]
pub use gobgp::Gobgp;
#[allow(unused_imports)]
pub use many::{address_pairs, gobgp_many, gobgp_many_sessions};
