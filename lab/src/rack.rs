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
//! capture, which sees both) but is its own BGP speaker: its own address on
//! the namespace's loopback, AS, router ID, API port, logs and table.
//! Nodes reach it through their route to 10.99.0.0/16.

use std::fs;
use std::path::Path;
use std::time::Duration;

use nonstop_testbed::netns;

use crate::network::{NODE_AS, ROUTER_NS, gobgpd_neighbor, uplink_ip, write};
use crate::process::{self, wait_for};
use crate::router::{Router, gobgp};
use crate::{LabError, Result};

/// A rack's router: where it is and which nodes it peers with.
#[derive(Debug, Clone)]
pub struct Rack {
    /// Names its daemons and their logs (`<name>-gobgpd`).
    pub name: String,
    /// Its address in 10.99.0.0/16 (not 10.99.0.1, the lab router's).
    pub address: String,
    pub asn: u32,
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
        let host = format!("{}/32", self.address);
        let added = netns::exec(ROUTER_NS, &["ip", "addr", "replace", &host, "dev", "lo"]).status();
        if !added.is_ok_and(|s| s.success()) {
            return Err(LabError::Failed(format!("adding {host} to {ROUTER_NS}'s loopback")));
        }
        let mut conf = format!(
            "[global.config]\n  as = {asn}\n  router-id = \"{a}\"\n  port = 179\n  local-address-list = [\"{a}\"]\n",
            asn = self.asn,
            a = self.address
        );
        for i in &self.nodes {
            conf += &gobgpd_neighbor(&uplink_ip(*i), NODE_AS, &self.address);
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
        let monitor = netns::exec(ROUTER_NS, &["gobgp", "-p", &port, "-j", "monitor", "adj-in"]);
        process::start(dir, &format!("{}-monitor-rib", self.name), monitor)?;
        Ok(Router::gobgpd(dir, &self.name, self.api))
    }

    /// Stops its daemons and takes its address away.
    pub fn stop(&self, dir: &Path) {
        for daemon in ["monitor-rib", "gobgpd"] {
            process::stop(dir, &format!("{}-{daemon}", self.name), Duration::from_secs(5));
        }
        let host = format!("{}/32", self.address);
        let _ = netns::exec(ROUTER_NS, &["ip", "addr", "del", &host, "dev", "lo"]).output();
    }
}
