//! An independent witness at the lab router: tshark captures every BGP
//! packet in the router's namespace while a test acts, and reads them back
//! with Wireshark's own BGP dissector — not the router's logs, not our
//! codec. What the end-to-end tests hold the router's word against.
//!
//! ```text
//!   Capture::start ── tshark -i any -f "tcp port 179" -w <lab>/captures/NAME.pcapng
//!   Capture::finish ── Recording::on(node addresses) ── NOTIFICATIONs, FIN/RSTs,
//!                       withdrawn prefixes on connections with those addresses
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::network::ROUTER_NS;

/// How long [`Capture::finish`] waits for the recording to hold BGP on each
/// neighbour of [`Capture::hearing`]: three keepalive intervals of the lab's
/// 9 s hold time, and some.
const HEAR_WITHIN: Duration = Duration::from_secs(15);

/// A capture running at the router.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    /// Neighbours whose BGP the recording must hold before finishing.
    hearing: Vec<String>,
}

/// What crossed the wire on the connections of the given addresses; each
/// entry is "source → destination: what".
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Witnessed {
    pub notifications: Vec<String>,
    pub fin_or_rst: Vec<String>,
    pub withdrawals: Vec<String>,
    /// BGP messages seen in all (so an empty capture is not read as calm).
    pub bgp_messages: usize,
}

impl Witnessed {
    /// No NOTIFICATION, no FIN or RST, no withdrawal.
    pub fn is_calm(&self) -> bool {
        self.notifications.is_empty() && self.fin_or_rst.is_empty() && self.withdrawals.is_empty()
    }
}

impl Capture {
    /// Starts capturing; returns once tshark says it captures.
    pub fn start(lab: &Path, name: &str) -> Result<Capture, String> {
        let dir = lab.join("captures");
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let file = dir.join(format!("{name}.pcapng"));
        let log = dir.join(format!("{name}.log"));
        let _ = std::fs::remove_file(&file);
        let err = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new("ip")
            .args(["netns", "exec", ROUTER_NS, "tshark", "-q", "-i", "any"])
            .args(["-f", "tcp port 179", "-w"])
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .spawn()
            .map_err(|e| format!("starting tshark (apt-get install tshark): {e}"))?;
        let capture = Capture { child: Some(child), file, hearing: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("Capturing on") {
                return Ok(capture);
            }
            if Instant::now() >= deadline {
                return Err(format!("tshark did not start capturing in 20 s: {said}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Makes [`Capture::finish`] wait until the recording holds a BGP
    /// message (a keepalive at least) on a connection with each of
    /// `neighbors`, so that a quiet stretch shorter than a keepalive interval
    /// still records BGP on each: a capture with no BGP in it proves nothing,
    /// and this tells "nothing was sent" from "too short to see". It reads
    /// the file tshark writes, not a router's counters: a message the router
    /// has counted can still be in the kernel's capture buffer, and tshark
    /// stopped then never writes it.
    pub fn hearing(mut self, neighbors: &[String]) -> Capture {
        self.hearing.extend(neighbors.iter().cloned());
        self
    }

    /// Stops the capture (once the recording holds BGP on each neighbour of
    /// [`Capture::hearing`], or [`HEAR_WITHIN`] has passed); what it recorded.
    pub fn finish(mut self) -> Recording {
        let recording = Recording { file: self.file.clone() };
        let deadline = Instant::now() + HEAR_WITHIN;
        for neighbor in std::mem::take(&mut self.hearing) {
            let addresses = [neighbor];
            while Instant::now() < deadline
                && recording
                    .matching(&addresses, "bgp.type", &[], false)
                    .is_ok_and(|m| m.is_empty())
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if let Some(mut child) = self.child.take() {
            // `ip netns exec` execs tshark in its own process: SIGINT reaches it,
            // and it writes out what it holds.
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            let _ = child.wait();
        }
        recording
    }
}

/// A finished capture, kept in the lab dir for a person to open.
#[derive(Debug, Clone)]
pub struct Recording {
    pub file: PathBuf,
}

impl Recording {
    /// What crossed on connections with any of `addresses`.
    pub fn on(&self, addresses: &[String]) -> Result<Witnessed, String> {
        let read = |filter: &str, fields: &[&str]| self.matching(addresses, filter, fields, true);
        Ok(Witnessed {
            notifications: read("bgp.type == 3", &["bgp.notify.major_error"])?,
            fin_or_rst: read("tcp.flags.fin == 1 || tcp.flags.reset == 1", &["tcp.flags.str"])?,
            withdrawals: read(
                "bgp.withdrawn_prefix || bgp.mp_unreach_nlri_ipv4_prefix || bgp.mp_unreach_nlri_ipv6_prefix",
                &["bgp.withdrawn_prefix"],
            )?,
            bgp_messages: read("bgp.type", &[])?.len(),
        })
    }

    /// The packets on connections with any of `addresses` that match
    /// `filter`, one line each: "source/destination/fields…". `finished`
    /// says tshark is done with the file; one still being written may end
    /// in half a packet, which tshark reports and which is no error then.
    fn matching(
        &self,
        addresses: &[String],
        filter: &str,
        fields: &[&str],
        finished: bool,
    ) -> Result<Vec<String>, String> {
        let v6 = |a: &String| a.contains(':');
        let ours = addresses
            .iter()
            .map(|a| if v6(a) { format!("ipv6.addr == {a}") } else { format!("ip.addr == {a}") })
            .collect::<Vec<_>>()
            .join(" || ");
        let ends =
            if addresses.iter().any(v6) { ["ipv6.src", "ipv6.dst"] } else { ["ip.src", "ip.dst"] };
        let mut c = Command::new("tshark");
        c.arg("-r").arg(&self.file).args(["-Y", &format!("({ours}) && ({filter})")]);
        c.args(["-T", "fields", "-E", "separator=/"]);
        for f in ends.iter().chain(fields) {
            c.args(["-e", f]);
        }
        let out = c.output().map_err(|e| format!("tshark -r: {e}"))?;
        if finished && !out.status.success() {
            return Err(format!("tshark -r: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
