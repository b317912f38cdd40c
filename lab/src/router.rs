//! The lab router: gobgpd, bird or frr in the `lab-router` namespace, and
//! what it sees, as data: its sessions, its routes, and the route events
//! (announcements, withdrawals, session changes) in the order it saw them.
//!
//! Events come from the daemon's own record: gobgpd's log (Peer Up/Down)
//! and its `gobgp monitor adj-in` stream (every path each neighbour sends,
//! best or not: with several nodes announcing one prefix, the global RIB's
//! stream shows only best-path changes), the trace log
//! (`debug { states, routes }`) for BIRD, the update
//! and neighbour-change log for FRR.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nonstop_testbed::{netns, tables};
use serde_json::Value;

use crate::network::{ROUTER_NS, RouterKind, router_config, write};
use crate::process::{self, wait_for};
use crate::{LabError, Result};

/// What the router remembers of the lab: which daemon runs.
pub fn kind_file(dir: &Path) -> PathBuf {
    dir.join("router/kind")
}

pub fn router_dir(dir: &Path) -> PathBuf {
    dir.join("router")
}

fn in_router(args: &[&str]) -> Command {
    netns::exec(ROUTER_NS, args)
}

/// The lab daemons each kind of router runs.
pub fn daemons(kind: RouterKind) -> &'static [&'static str] {
    match kind {
        RouterKind::Gobgpd => &["router-gobgpd", "router-monitor-rib"],
        RouterKind::Bird => &["router-bird"],
        RouterKind::Frr => &["router-zebra", "router-bgpd"],
    }
}

/// Starts the router for `nodes` nodes, unless it runs.
pub fn start(dir: &Path, kind: RouterKind, nodes: usize) -> Result<()> {
    let rdir = router_dir(dir);
    fs::create_dir_all(&rdir).map_err(crate::io("creating the router dir"))?;
    write(&kind_file(dir), kind.name())?;
    let conf = router_config(kind, nodes, &rdir);
    let s = |p: PathBuf| p.display().to_string();
    match kind {
        RouterKind::Gobgpd => {
            let path = rdir.join("gobgpd.toml");
            write(&path, &conf)?;
            process::start(
                dir,
                "router-gobgpd",
                in_router(&[
                    "gobgpd",
                    "-f",
                    &s(path),
                    "--log-plain",
                    "--api-hosts",
                    "127.0.0.1:50051",
                ]),
            )?;
            wait_for("gobgpd's API", Duration::from_secs(20), || {
                gobgp(LAB_API, &["global"]).map(drop)
            })?;
            process::start(
                dir,
                "router-monitor-rib",
                in_router(&["gobgp", "-j", "monitor", "adj-in"]),
            )?;
        }
        RouterKind::Bird => {
            let path = rdir.join("bird.conf");
            write(&path, &conf)?;
            let ctl = s(rdir.join("bird.ctl"));
            process::start(
                dir,
                "router-bird",
                in_router(&["bird", "-f", "-c", &s(path), "-s", &ctl]),
            )?;
            wait_for("bird's control socket", Duration::from_secs(20), || {
                birdc(dir, "show status").map(drop)
            })?;
        }
        RouterKind::Frr => {
            let path = rdir.join("frr.conf");
            write(&path, &conf)?;
            let _ = Command::new("chown").args(["-R", "frr:frr", &s(rdir.clone())]).status();
            let common = |pid: &str| -> Vec<String> {
                vec![
                    "-z".into(),
                    s(rdir.join("zserv.api")),
                    "--vty_socket".into(),
                    s(rdir.clone()),
                    "-i".into(),
                    s(rdir.join(pid)),
                    "-f".into(),
                    s(path.clone()),
                    "-u".into(),
                    "frr".into(),
                    "-g".into(),
                    "frr".into(),
                ]
            };
            let zebra = common("zebra.pid");
            let mut cmd = in_router(&["/usr/lib/frr/zebra"]);
            cmd.args(&zebra);
            process::start(dir, "router-zebra", cmd)?;
            wait_for("zebra", Duration::from_secs(20), || {
                if rdir.join("zserv.api").exists() {
                    Ok(())
                } else {
                    Err("no zserv.api yet".into())
                }
            })?;
            let mut cmd = in_router(&["/usr/lib/frr/bgpd"]);
            cmd.args(common("bgpd.pid")).args(["-p", "179"]);
            process::start(dir, "router-bgpd", cmd)?;
            wait_for("bgpd", Duration::from_secs(20), || vtysh(dir, "show bgp summary").map(drop))?;
        }
    }
    Ok(())
}

/// The kind of router the lab runs.
pub fn kind(dir: &Path) -> Result<RouterKind> {
    let text = fs::read_to_string(kind_file(dir))
        .map_err(|_| LabError::Failed("the lab runs no router: lab up first".into()))?;
    match text.trim() {
        "gobgpd" => Ok(RouterKind::Gobgpd),
        "bird" => Ok(RouterKind::Bird),
        "frr" => Ok(RouterKind::Frr),
        other => Err(LabError::Failed(format!("unknown router kind {other:?}"))),
    }
}

pub fn stop(dir: &Path) {
    for kind in [RouterKind::Gobgpd, RouterKind::Bird, RouterKind::Frr] {
        for d in daemons(kind).iter().rev() {
            process::stop(dir, d, Duration::from_secs(5));
        }
    }
}

/// The lab router's gobgpd API.
const LAB_API: u16 = 50051;

/// gobgp against the gobgpd whose API listens on `api` (127.0.0.1) in the
/// router namespace.
pub(crate) fn gobgp(api: u16, args: &[&str]) -> std::result::Result<String, String> {
    let port = api.to_string();
    let mut full = vec!["gobgp", "-p", &port];
    full.extend_from_slice(args);
    netns::output("gobgp", in_router(&full))
}

fn birdc(dir: &Path, command: &str) -> std::result::Result<String, String> {
    let ctl = router_dir(dir).join("bird.ctl").display().to_string();
    let mut c = Command::new("birdc");
    c.args(["-s", &ctl, command]);
    netns::output("birdc", c)
}

fn vtysh(dir: &Path, command: &str) -> std::result::Result<String, String> {
    let mut c = in_router(&["vtysh", "--vty_socket", &router_dir(dir).display().to_string()]);
    c.args(["-c", command]);
    netns::output("vtysh", c)
}

/// One BGP session as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub neighbor: String,
    pub established: bool,
}

/// One route in the router's table: the prefix and the next hop of each
/// path, sorted.
pub type Routes = BTreeMap<String, Vec<String>>;

/// Something the router saw happen, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteEvent {
    Announced { prefix: String, neighbor: String },
    Withdrawn { prefix: String, neighbor: String },
    SessionUp { neighbor: String },
    SessionDown { neighbor: String },
}

/// One path as the router received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub prefix: String,
    pub neighbor: String,
    pub withdrawal: bool,
    /// Standard communities as "asn:value" (GRACEFUL_SHUTDOWN is "65535:0").
    pub communities: Vec<String>,
    /// When the router received it (Unix seconds), where it says.
    pub age: Option<u64>,
}

/// A router in front of the lab's nodes, read through its own tools: the
/// lab router, or a rack's ([`crate::rack`]).
#[derive(Debug, Clone)]
pub struct Router {
    pub kind: RouterKind,
    dir: PathBuf,
    /// What its daemons' logs are named after (`<name>-gobgpd`, …).
    name: String,
    /// Its gobgpd's API port.
    api: u16,
    /// Its table is IPv6 unicast (a rack router at an IPv6 address).
    v6: bool,
}

impl Router {
    /// The router of the lab in `dir`.
    pub fn of(dir: &Path) -> Result<Router> {
        let name = "router".into();
        Ok(Router { kind: kind(dir)?, dir: dir.to_path_buf(), name, api: LAB_API, v6: false })
    }

    /// A gobgpd whose daemons are `<name>-gobgpd` and `<name>-monitor-rib`,
    /// read in the IPv6 table when `v6`.
    pub(crate) fn gobgpd(dir: &Path, name: &str, api: u16, v6: bool) -> Router {
        Router { kind: RouterKind::Gobgpd, dir: dir.to_path_buf(), name: name.into(), api, v6 }
    }

    fn gobgp(&self, args: &[&str]) -> std::result::Result<String, String> {
        gobgp(self.api, args)
    }

    /// Shuts the session with `neighbor` down at the router (a Cease /
    /// Administrative Shutdown, and no reconnection) or lets it up again,
    /// as an operator at the router would. gobgpd only.
    pub fn set_session_enabled(
        &self,
        neighbor: &str,
        enabled: bool,
    ) -> std::result::Result<(), String> {
        match self.kind {
            RouterKind::Gobgpd => self
                .gobgp(&["neighbor", neighbor, if enabled { "enable" } else { "disable" }])
                .map(|_| ()),
            other => {
                Err(format!("shutting a session down is done with gobgpd only, not {other:?}"))
            }
        }
    }

    /// Every configured session and whether it is Established.
    pub fn sessions(&self) -> std::result::Result<Vec<Session>, String> {
        let neighbors = match self.kind {
            RouterKind::Gobgpd => tables::gobgp_neighbors(&self.gobgp(&["-j", "neighbor"])?)?,
            RouterKind::Bird => tables::bird_neighbors(&birdc(&self.dir, "show protocols all")?),
            RouterKind::Frr => {
                tables::frr_neighbors(&vtysh(&self.dir, "show bgp neighbors json")?)?
            }
        };
        Ok(neighbors
            .into_iter()
            .map(|n| Session { neighbor: n.address, established: n.established })
            .collect())
    }

    /// The unicast table (IPv4; IPv6 for a rack router at an IPv6 address):
    /// each prefix's next hops, sorted.
    pub fn routes(&self) -> std::result::Result<Routes, String> {
        let paths = match self.kind {
            RouterKind::Gobgpd => {
                let family = if self.v6 { "ipv6" } else { "ipv4" };
                tables::gobgp_routes(&self.gobgp(&["-j", "global", "rib", "-a", family])?)?
            }
            RouterKind::Bird => tables::bird_routes(&birdc(&self.dir, "show route all")?),
            RouterKind::Frr => {
                tables::frr_routes(&vtysh(&self.dir, "show bgp ipv4 unicast json")?)?
            }
        };
        let mut routes = Routes::new();
        // BIRD lists its own (static, direct) routes too: no BGP next hop.
        for (prefix, route) in paths.into_iter().filter(|(_, r)| !r.next_hop.is_empty()) {
            routes.entry(prefix).or_default().push(route.next_hop);
        }
        for hops in routes.values_mut() {
            hops.sort();
        }
        Ok(routes)
    }

    /// Everything the router saw happen since it started, in order.
    pub fn events(&self) -> Vec<RouteEvent> {
        let read = |name: &str| {
            String::from_utf8_lossy(
                &fs::read(crate::process::log_path(&self.dir, name)).unwrap_or_default(),
            )
            .into_owned()
        };
        match self.kind {
            RouterKind::Gobgpd => {
                let mut events = Vec::new();
                for line in read(&format!("{}-gobgpd", self.name)).lines() {
                    let neighbor = || {
                        line.split("Key=")
                            .nth(1)
                            .and_then(|r| r.split_whitespace().next())
                            .unwrap_or("")
                            .to_string()
                    };
                    if line.contains("msg=\"Peer Up\"") {
                        events.push(RouteEvent::SessionUp { neighbor: neighbor() });
                    } else if line.contains("msg=\"Peer Down\"") {
                        events.push(RouteEvent::SessionDown { neighbor: neighbor() });
                    }
                }
                // The two streams interleave only loosely; session changes
                // are listed first, then routes, each in its own order.
                for line in read(&format!("{}-monitor-rib", self.name)).lines() {
                    let Ok(Value::Array(paths)) = serde_json::from_str::<Value>(line) else {
                        continue;
                    };
                    for p in paths {
                        let prefix = p["nlri"]["prefix"].as_str().unwrap_or("").to_string();
                        let neighbor = p["neighbor-ip"].as_str().unwrap_or("").to_string();
                        events.push(if p["withdrawal"] == true {
                            RouteEvent::Withdrawn { prefix, neighbor }
                        } else {
                            RouteEvent::Announced { prefix, neighbor }
                        });
                    }
                }
                events
            }
            RouterKind::Bird => {
                let text = fs::read_to_string(router_dir(&self.dir).join("router-events.log"))
                    .unwrap_or_default();
                bird_events(&text, &self.sessions().unwrap_or_default())
            }
            RouterKind::Frr => {
                let text = fs::read_to_string(router_dir(&self.dir).join("router-events.log"))
                    .unwrap_or_default();
                frr_events(&text)
            }
        }
    }

    /// Every path the router received (gobgpd's adj-in stream), in order,
    /// with its communities: what a drain test reads GRACEFUL_SHUTDOWN from.
    /// gobgpd only; the other routers' traces do not carry attributes.
    pub fn received(&self) -> std::result::Result<Vec<Received>, String> {
        if self.kind != RouterKind::Gobgpd {
            return Err(format!("the {:?} router's log carries no path attributes", self.kind));
        }
        let text = fs::read(crate::process::log_path(&self.dir, "router-monitor-rib"))
            .map_err(|e| format!("the router's adj-in stream: {e}"))?;
        let mut out = Vec::new();
        for line in String::from_utf8_lossy(&text).lines() {
            let Ok(Value::Array(paths)) = serde_json::from_str::<Value>(line) else { continue };
            for p in paths {
                let communities = p["attrs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a["communities"].as_array())
                    .flatten()
                    .filter_map(Value::as_u64)
                    .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                    .collect();
                out.push(Received {
                    prefix: p["nlri"]["prefix"].as_str().unwrap_or("").into(),
                    neighbor: p["neighbor-ip"].as_str().unwrap_or("").into(),
                    withdrawal: p["withdrawal"] == true,
                    communities,
                    age: p["age"].as_u64(),
                });
            }
        }
        Ok(out)
    }

    /// The BGP identifier `neighbor` sent in its OPEN, while the session is
    /// up. gobgpd only.
    pub fn router_id_of(&self, neighbor: &str) -> std::result::Result<String, String> {
        if self.kind != RouterKind::Gobgpd {
            return Err(format!("identifiers are read from gobgpd only, not {:?}", self.kind));
        }
        let json = self.gobgp(&["-j", "neighbor", neighbor])?;
        let v: Value =
            serde_json::from_str(&json).map_err(|e| format!("gobgp -j neighbor: {e}"))?;
        let peer = if v.is_array() { &v[0] } else { &v };
        peer["state"]["router_id"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| format!("no identifier from {neighbor} yet: {}", peer["state"]))
    }

    /// Withdrawals seen so far.
    pub fn withdrawals(&self) -> usize {
        self.events().iter().filter(|e| matches!(e, RouteEvent::Withdrawn { .. })).count()
    }
}

fn first_prefix(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| {
            w.contains('/')
                && w.split('/').next().is_some_and(|a| a.parse::<std::net::IpAddr>().is_ok())
        })
        .map(String::from)
}

/// BIRD's trace: `node1 > added [best] 203.0.113.0/24 unicast`,
/// `node1 > removed …`, `node1: State changed to up|down|…`. Protocol
/// `node<i>` is the session with node i.
fn bird_events(text: &str, sessions: &[Session]) -> Vec<RouteEvent> {
    let neighbor_of = |proto: &str| -> String {
        proto
            .split('.')
            .next()
            .unwrap_or(proto)
            .strip_prefix("node")
            .and_then(|i| i.parse::<usize>().ok())
            .map(crate::network::uplink_ip)
            .filter(|ip| sessions.is_empty() || sessions.iter().any(|s| &s.neighbor == ip))
            .unwrap_or_else(|| proto.to_string())
    };
    let mut events = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.split("<TRACE> ").nth(1) else { continue };
        let proto = rest.split([' ', ':']).next().unwrap_or("");
        if !proto.starts_with("node") {
            continue;
        }
        let neighbor = neighbor_of(proto);
        if rest.contains(" > added") || rest.contains(" > updated") {
            if let Some(prefix) = first_prefix(rest) {
                events.push(RouteEvent::Announced { prefix, neighbor });
            }
        } else if rest.contains(" > removed") {
            if let Some(prefix) = first_prefix(rest) {
                events.push(RouteEvent::Withdrawn { prefix, neighbor });
            }
        } else if rest.contains("State changed to up") {
            events.push(RouteEvent::SessionUp { neighbor });
        } else if rest.contains("State changed to") && !rest.contains("State changed to start") {
            events.push(RouteEvent::SessionDown { neighbor });
        }
    }
    events
}

/// FRR's log: `10.99.1.2(…) rcvd 203.0.113.0/24 IPv4 unicast`, `… rcvd
/// UPDATE about 203.0.113.0/24 IPv4 unicast -- withdrawn`, `%ADJCHANGE:
/// neighbor 10.99.1.2(…) in vrf default Up|Down`.
fn frr_events(text: &str) -> Vec<RouteEvent> {
    let mut events = Vec::new();
    for line in text.lines() {
        let addr = |after: &str| -> String {
            line.split(after)
                .nth(1)
                .and_then(|r| r.split(['(', ' ']).find(|w| !w.is_empty()))
                .unwrap_or("")
                .to_string()
        };
        if line.contains("%ADJCHANGE") {
            let neighbor = addr("neighbor ");
            if line.trim_end().ends_with(" Up") {
                events.push(RouteEvent::SessionUp { neighbor });
            } else {
                events.push(RouteEvent::SessionDown { neighbor });
            }
            continue;
        }
        let Some(idx) = line.find(" rcvd ") else { continue };
        let neighbor = line[..idx]
            .split_whitespace()
            .last()
            .unwrap_or("")
            .split('(')
            .next()
            .unwrap_or("")
            .to_string();
        let Some(prefix) = first_prefix(&line[idx..]) else { continue };
        if line.contains("-- withdrawn") {
            events.push(RouteEvent::Withdrawn { prefix, neighbor });
        } else if !line.contains("DENIED") && !line.contains("rcvd UPDATE w/") {
            events.push(RouteEvent::Announced { prefix, neighbor });
        }
    }
    events
}

/// What the router has seen from some neighbours so far: session downs,
/// withdrawals and announcements, each list in its own order. gobgpd's session and route events come from
/// two logs, so only each kind on its own grows at the end: compare the
/// lists, not positions in the merged stream.
#[derive(Debug, Clone, PartialEq)]
pub struct Tally {
    pub downs: Vec<RouteEvent>,
    pub withdrawals: Vec<RouteEvent>,
    /// Every UPDATE announcing a path (a re-announcement too).
    pub announcements: Vec<RouteEvent>,
}

impl Tally {
    /// What the router has seen from `neighbors` so far.
    pub fn of(router: &Router, neighbors: &[String]) -> Tally {
        let ours = neighbors;
        let events = router.events();
        let pick = |kind: fn(&RouteEvent) -> Option<&String>| {
            events.iter().filter(|e| kind(e).is_some_and(|n| ours.contains(n))).cloned().collect()
        };
        Tally {
            downs: pick(|e| match e {
                RouteEvent::SessionDown { neighbor } => Some(neighbor),
                _ => None,
            }),
            withdrawals: pick(|e| match e {
                RouteEvent::Withdrawn { neighbor, .. } => Some(neighbor),
                _ => None,
            }),
            announcements: pick(|e| match e {
                RouteEvent::Announced { neighbor, .. } => Some(neighbor),
                _ => None,
            }),
        }
    }

    /// What was added since `before`.
    pub fn since(&self, before: &Tally) -> Tally {
        Tally {
            downs: self.downs[before.downs.len().min(self.downs.len())..].to_vec(),
            withdrawals: self.withdrawals[before.withdrawals.len().min(self.withdrawals.len())..]
                .to_vec(),
            announcements: self.announcements
                [before.announcements.len().min(self.announcements.len())..]
                .to_vec(),
        }
    }

    /// The router saw nothing at all: no session down, no UPDATE.
    pub fn is_empty(&self) -> bool {
        self.downs.is_empty() && self.withdrawals.is_empty() && self.announcements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bird_traces_become_events() {
        let text = "2026-11-21 10:00:00.001 <TRACE> node1: State changed to up\n\
            2026-11-21 10:00:00.002 <TRACE> node1.ipv4 > added [best] 203.0.113.0/24 unicast\n\
            2026-11-21 10:00:00.003 <TRACE> node2 > removed [sole] 203.0.113.0/24 unicast\n\
            2026-11-21 10:00:00.004 <TRACE> node2: State changed to stop\n\
            2026-11-21 10:00:00.005 <TRACE> device1: Scanning interfaces\n";
        assert_eq!(
            bird_events(text, &[]),
            [
                RouteEvent::SessionUp { neighbor: "10.99.1.2".into() },
                RouteEvent::Announced {
                    prefix: "203.0.113.0/24".into(),
                    neighbor: "10.99.1.2".into()
                },
                RouteEvent::Withdrawn {
                    prefix: "203.0.113.0/24".into(),
                    neighbor: "10.99.2.2".into()
                },
                RouteEvent::SessionDown { neighbor: "10.99.2.2".into() },
            ]
        );
    }

    #[test]
    fn frr_logs_become_events() {
        let text = "2026/11/21 10:00:00.001 BGP: [M59KS-A3ZXZ] %ADJCHANGE: neighbor 10.99.1.2(Unknown) in vrf default Up\n\
            2026/11/21 10:00:00.002 BGP: [ZX1-Q] 10.99.1.2(Unknown) rcvd UPDATE w/ attr: nexthop 10.99.1.2\n\
            2026/11/21 10:00:00.003 BGP: [P8-X] 10.99.1.2(Unknown) rcvd 203.0.113.0/24 IPv4 unicast\n\
            2026/11/21 10:00:00.004 BGP: [P8-Y] 10.99.1.2(Unknown) rcvd UPDATE about 203.0.113.0/24 IPv4 unicast -- withdrawn\n\
            2026/11/21 10:00:00.005 BGP: [M59KS-A3ZXZ] %ADJCHANGE: neighbor 10.99.1.2(Unknown) in vrf default Down Peer closed the session\n";
        assert_eq!(
            frr_events(text),
            [
                RouteEvent::SessionUp { neighbor: "10.99.1.2".into() },
                RouteEvent::Announced {
                    prefix: "203.0.113.0/24".into(),
                    neighbor: "10.99.1.2".into()
                },
                RouteEvent::Withdrawn {
                    prefix: "203.0.113.0/24".into(),
                    neighbor: "10.99.1.2".into()
                },
                RouteEvent::SessionDown { neighbor: "10.99.1.2".into() },
            ]
        );
    }
}
