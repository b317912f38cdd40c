//! A full table for the benchmarks: the `i`th /24 and its attributes, and a
//! bird2 sender that originates `n` of them.

#![allow(dead_code)] // each benchmark uses part of it

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use crate::support::routers::spawn_bird;
use crate::support::{Daemon, Link, eventually};

/// How the table's prefixes share attributes: how UPDATEs pack them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sets {
    /// Every prefix has the same attributes: UPDATEs as full as they go.
    One,
    /// A MED per 4 prefixes: a quarter million sets, closer to a real table.
    Fours,
}

impl Sets {
    pub fn describe(self) -> &'static str {
        match self {
            Sets::One => "one attribute set",
            Sets::Fours => "attribute sets of 4",
        }
    }

    /// Its name in the ingest bench's ONLY filter.
    pub fn short(self) -> &'static str {
        match self {
            Sets::One => "one",
            Sets::Fours => "fours",
        }
    }
}

/// The `i`th /24 of the table, and the MED that groups 4 prefixes per set.
pub fn nth(i: u32) -> ([u8; 3], u32) {
    nth_in(i, Sets::Fours)
}

/// The `i`th /24 of the table and its MED, the prefixes grouped by `sets`.
pub fn nth_in(i: u32, sets: Sets) -> ([u8; 3], u32) {
    let med = match sets {
        Sets::One => 0,
        Sets::Fours => i / 4,
    };
    ([(1 + i / 65536) as u8, ((i / 256) % 256) as u8, (i % 256) as u8], med)
}

/// A bird2 sender of `n` prefixes (attribute sets of 4) towards the agent's address.
pub fn start_bird(link: &Link, n: u32) -> Daemon {
    start_bird_with(link, n, Sets::Fours).0
}

/// A bird2 sender of `n` prefixes grouped by `sets`; its control socket.
pub fn start_bird_with(link: &Link, n: u32, sets: Sets) -> (Daemon, PathBuf) {
    let mut conf = format!(
        "router id {};\nprotocol device {{}}\nprotocol static originated {{ ipv4; \n",
        link.b_v4
    );
    for i in 0..n {
        let ([a, b, c], med) = nth_in(i, sets);
        writeln!(conf, "route {a}.{b}.{c}.0/24 blackhole {{ bgp_med = {med}; }};").unwrap();
    }
    conf += &format!(
        "}}\nprotocol bgp receiver {{ local {} as 65000; neighbor {} as 65001; connect retry time 1;\n ipv4 {{ import none; export all; next hop self; }}; }}\n",
        link.b_v4, link.a_v4
    );
    let (d, ctl) = spawn_bird(&link.b, &link.dir, "sender", &conf);
    eventually(Duration::from_secs(120), "sender ready", || {
        let out = link
            .b
            .exec(&["birdc", "-s", ctl.to_str().unwrap(), "show", "route", "count"])
            .output()
            .map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains(&format!("{n} of {n} routes")) { Ok(()) } else { Err(text) }
    });
    (d, ctl)
}
