//! A second router for rack-style topologies: a top-of-rack gobgpd in
//! front of some of the lab's nodes only, beside the lab router.
//!
//! ```text
//!   lab-router ns:  gobgpd 10.99.0.1 AS 65000  (the lab router, every node)
//!                   gobgpd <address> AS <asn>  (a rack's router, its nodes only)
//!   node-i ──uplink 10.99.i.2──▶ either, by the address it dials
//! ```
//!
//! It shares the router namespace (and so the uplinks, and the lab's
//! capture, which sees both) but is its own BGP speaker: its own address,
//! AS, router ID, API port, logs and table. At an IPv4 address (on the
//! namespace's loopback) nodes reach it through their route to
//! 10.99.0.0/16. At an IPv6 address its nodes' uplinks get IPv6 too:
//!
//! ```text
//!   node-i uplink fd99::i:2/128 ──on-link──▶ fd99::1/128 on up<i> (router ns)
//! ```
//!
//! so its sessions, their next hops and the table are IPv6 alone.

use std::fs;
use std::path::Path;
use std::time::Duration;

use nonstop_testbed::netns;

use crate::network::{
    NODE_AS, ROUTER_NS, gobgpd_neighbor, node_name, uplink_ip, uplink_ipv6, write,
};
use crate::process::{self, wait_for};
use crate::router::{Router, gobgp};
use crate::{LabError, Result};

/// A rack's router: where it is and which nodes it peers with.
#[derive(Debug, Clone)]
pub struct Rack {
    /// Names its daemons and their logs (`<name>-gobgpd`).
    pub name: String,
    /// Its address: in 10.99.0.0/16 (not 10.99.0.1, the lab router's), or
    /// an IPv6 address in fd99::/16 (not a node's fd99::i:2).
    pub address: String,
    pub asn: u32,
    /// Its BGP identifier (a router at an IPv6 address needs one apart).
    pub router_id: String,
    /// Its gobgpd's API port on the namespace's loopback (not 50051).
    pub api: u16,
    /// The lab nodes it peers with (passive, from their uplink address).
    pub nodes: Vec<usize>,
}

impl Rack {
    /// Starts the rack's gobgpd, with the monitor its route events are read
    /// from; the router to read. Idempotent: a running one is restarted.
    pub fn start(&self, dir: &Path) -> Result<Router> {
        self.stop(dir);
        let rdir = dir.join(&self.name);
        fs::create_dir_all(&rdir).map_err(crate::io("creating the rack router's dir"))?;
        self.plumb()?;
        let mut conf = format!(
            "[global.config]\n  as = {asn}\n  router-id = \"{id}\"\n  port = 179\n  local-address-list = [\"{a}\"]\n",
            asn = self.asn,
            id = self.router_id,
            a = self.address
        );
        for i in &self.nodes {
            conf += &gobgpd_neighbor(&self.node_address(*i), NODE_AS, &self.address);
        }
        let path = rdir.join("gobgpd.toml");
        write(&path, &conf)?;
        let api = format!("127.0.0.1:{}", self.api);
        let daemon = netns::exec(
            ROUTER_NS,
            &["gobgpd", "-f", &path.display().to_string(), "--log-plain", "--api-hosts", &api],
        );
        process::start(dir, &format!("{}-gobgpd", self.name), daemon)?;
        wait_for(&format!("{}'s gobgpd API", self.name), Duration::from_secs(20), || {
            gobgp(self.api, &["global"]).map(drop)
        })?;
        let port = self.api.to_string();
        let family = if self.v6() { "ipv6" } else { "ipv4" };
        let monitor = netns::exec(
            ROUTER_NS,
            &["gobgp", "-p", &port, "-j", "monitor", "adj-in", "-a", family],
        );
        process::start(dir, &format!("{}-monitor-rib", self.name), monitor)?;
        Ok(Router::gobgpd(dir, &self.name, self.api, self.v6()))
    }

    fn v6(&self) -> bool {
        self.address.contains(':')
    }

    /// Where node `i`'s sessions with this router come from.
    pub fn node_address(&self, i: usize) -> String {
        if self.v6() { uplink_ipv6(i) } else { uplink_ip(i) }
    }

    /// The router's address where its nodes reach it; for IPv6, the nodes'
    /// uplink addresses and the routes both ways. DAD is skipped: the
    /// addresses are usable at once.
    fn plumb(&self) -> Result<()> {
        let run = |ns: &str, args: &[&str]| -> Result<()> {
            netns::output("ip", netns::exec(ns, args)).map(drop).map_err(LabError::Failed)
        };
        if !self.v6() {
            let host = format!("{}/32", self.address);
            return run(ROUTER_NS, &["ip", "addr", "replace", &host, "dev", "lo"]);
        }
        let router = format!("{}/128", self.address);
        for i in &self.nodes {
            let (node, up) = (node_name(*i), format!("up{i}"));
            let mine = format!("{}/128", uplink_ipv6(*i));
            run(ROUTER_NS, &["ip", "-6", "addr", "replace", &router, "dev", &up, "nodad"])?;
            run(ROUTER_NS, &["ip", "-6", "route", "replace", &mine, "dev", &up])?;
            run(&node, &["ip", "-6", "addr", "replace", &mine, "dev", "uplink", "nodad"])?;
            run(&node, &["ip", "-6", "route", "replace", &router, "dev", "uplink"])?;
        }
        Ok(())
    }

    /// Stops its daemons and takes its addresses away.
    pub fn stop(&self, dir: &Path) {
        for daemon in ["monitor-rib", "gobgpd"] {
            process::stop(dir, &format!("{}-{daemon}", self.name), Duration::from_secs(5));
        }
        let del = |ns: &str, args: &[&str]| drop(netns::exec(ns, args).output());
        if !self.v6() {
            del(ROUTER_NS, &["ip", "addr", "del", &format!("{}/32", self.address), "dev", "lo"]);
            return;
        }
        for i in &self.nodes {
            let router = format!("{}/128", self.address);
            del(ROUTER_NS, &["ip", "-6", "addr", "del", &router, "dev", &format!("up{i}")]);
            let mine = format!("{}/128", uplink_ipv6(*i));
            del(&node_name(*i), &["ip", "-6", "addr", "del", &mine, "dev", "uplink"]);
        }
    }
}
