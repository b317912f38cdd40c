//! Many sessions at once, each between its own pair of addresses.

use std::fs;

use serde_json::Value;

use super::*;

/// `n` address pairs (agent side, router side), on loopback in each
/// namespace behind one route each way: a thousand neighbours on the veth
/// itself would overflow the ARP table.
pub fn address_pairs(link: &Link, n: usize) -> Vec<(String, String)> {
    let pairs: Vec<(String, String)> = (0..n)
        .map(|k| {
            let (hi, lo) = (k / 200, 1 + k % 200);
            (format!("10.78.{}.{lo}", 1 + hi), format!("10.78.{}.{lo}", 21 + hi))
        })
        .collect();
    let mut a_cmds = format!("route add 10.78.16.0/20 via {}\n", link.b_v4);
    let mut b_cmds = format!("route add 10.78.0.0/20 via {}\n", link.a_v4);
    for (ours, theirs) in &pairs {
        a_cmds += &format!("addr add {ours}/32 dev lo\n");
        b_cmds += &format!("addr add {theirs}/32 dev lo\n");
    }
    for (ns, cmds) in [(&link.a, &a_cmds), (&link.b, &b_cmds)] {
        let path = link.dir.join(format!("{}.ip", ns.name));
        fs::write(&path, cmds).unwrap();
        super::super::sh(&["ip", "-n", &ns.name, "-batch", path.to_str().unwrap()]);
    }
    pairs
}

/// `n` sessions from one gobgpd to the agent over [`address_pairs`]
/// (gobgpd passive, the agent dials). Returns gobgpd and the agent's
/// `peers:` entries as YAML.
pub fn gobgp_many(link: &Link, n: usize, hold_time: u32) -> (Daemon, String) {
    let mut conf = format!(
        "[global.config]\n  as = {ROUTER_AS}\n  router-id = \"{}\"\n  port = 179\n",
        link.b_v4
    );
    let mut peers = String::new();
    for (ours, theirs) in address_pairs(link, n) {
        conf += &format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{ours}\"\n    peer-as = {AGENT_AS}\n  \
             [neighbors.transport.config]\n    local-address = \"{theirs}\"\n    passive-mode = true\n  \
             [neighbors.ebgp-multihop.config]\n    enabled = true\n    multihop-ttl = 2\n  \
             [neighbors.timers.config]\n    hold-time = {hold_time}\n    keepalive-interval = {}\n  \
             [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"ipv4-unicast\"\n",
            hold_time / 3
        );
        peers += &format!(
            "- address: {theirs}\n  localAddress: {ours}\n  asn: {ROUTER_AS}\n  holdTime: {hold_time}\n  \
             connectRetryTime: 1\n  families: [ipv4-unicast]\n"
        );
    }
    let path = link.dir.join("gobgpd-many.toml");
    fs::write(&path, conf).unwrap();
    let args =
        ["gobgpd", "-f", path.to_str().unwrap(), "--api-hosts", "127.0.0.1:50061", "--log-plain"];
    (Daemon::spawn("gobgpd", link.b.exec(&args), link.dir.join("gobgpd-many.log")), peers)
}
/// The Established sessions of [`gobgp_many`]'s gobgpd as it counts them:
/// (agent address, uptime, UPDATEs received), sorted.
pub fn gobgp_many_sessions(link: &Link) -> Result<Vec<(String, String, u64)>, String> {
    let text = run(&link.b, &["gobgp", "-p", "50061", "-j", "neighbor"])?;
    let all: Vec<Value> = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let mut up: Vec<_> = all
        .iter()
        .filter(|n| n["state"]["session_state"] == 6)
        .map(|n| {
            (
                n["state"]["neighbor_address"].to_string(),
                n["timers"]["state"]["uptime"]["seconds"].to_string(),
                n["state"]["messages"]["received"]["update"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    up.sort();
    Ok(up)
}
