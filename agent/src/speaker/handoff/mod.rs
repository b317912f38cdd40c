//! The handoff at the speaker's edge: the state dir's files and both
//! conversations over `handoff.sock` (the messages are in `crate::handoff`).
//!
//! ```text
//!  state dir   handoff.sock   the running agent listens (SEQPACKET, 0600)
//!              handoff.token  read by whoever may take over (0600)
//!              active.lock    flock held by the agent that speaks BGP; the
//!                             kernel drops it when that process dies, so a
//!                             successor can tell a dead predecessor from
//!                             one that rolled back
//!
//!  predecessor: knock (uid, HELLO) ─▶ admit ─▶ WELCOME, RIB snapshots (live)
//!               ─▶ freeze every peer task ─▶ LISTENERS, SESSIONS…, RIB
//!               changes…, DONE ─▶ COMMIT in time? ─▶ RETIRE, unlock, let go
//!               │ otherwise ABORT and resume          (predecessor.rs)
//!  successor:   connect ─▶ HELLO ─▶ apply RIB parts as they come ─▶ thaw
//!               and check ─▶ COMMIT ─▶ RETIRE ─▶ lock ─▶ start the adopted
//!               sessions                              (successor.rs)
//! ```
//!
//! Every wait is bounded: the predecessor's whole pause by a third of the
//! smallest hold time (so no peer's hold timer can run out meanwhile), the
//! successor's steps by [`STEP`].

mod error;
mod predecessor;
mod successor;

use std::io::{Read, Write};
use std::net::IpAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::peer::PeerCommand;
use super::status::{AgentRef, HandoffReport, HandoffResult, HandoffRole, SessionEvent};
use crate::handoff::protocol::{Feature, Hello, Message, PROTOCOL, STATE_SCHEMA};
use crate::handoff::transport::{self, Channel};
pub use error::HandoffError;
pub use predecessor::hand_over;
pub use successor::{Takeover, let_go, take_over};

pub const SOCKET: &str = "handoff.sock";
pub const TOKEN: &str = "handoff.token";
pub const LOCK: &str = "active.lock";

/// How long a successor waits for each answer of its predecessor.
pub const STEP: Duration = Duration::from_secs(30);

/// A successor at the door: its channel and its HELLO.
pub type Knock = (Channel, Hello);

/// The exclusive lock of the active agent; released when dropped or when the
/// process dies.
#[derive(Debug)]
pub struct ActiveLock(#[allow(dead_code)] std::fs::File);

/// Takes the state dir's lock if no live agent holds it.
pub fn try_lock(dir: &Path) -> std::io::Result<Option<ActiveLock>> {
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join(LOCK))?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {
            file.set_len(0)?;
            write!(file, "{}", std::process::id())?;
            Ok(Some(ActiveLock(file)))
        }
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The channel closed: a dead predecessor's lock is released as its process
/// exits, possibly just after its sockets closed, so wait a moment for it. A
/// predecessor still holding it is alive: it rolled back.
fn lock_after_close(dir: &Path) -> std::io::Result<Option<ActiveLock>> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match try_lock(dir)? {
            Some(lock) => return Ok(Some(lock)),
            None if Instant::now() >= deadline => return Ok(None),
            None => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// The pid written by the lock's holder, for messages.
pub fn lock_holder(dir: &Path) -> String {
    let mut s = String::new();
    let _ = std::fs::File::open(dir.join(LOCK)).and_then(|mut f| f.read_to_string(&mut s));
    if s.trim().is_empty() { "unknown".into() } else { s.trim().to_string() }
}

/// Waits for the lock, saying every 5 s who holds it.
pub fn lock_waiting(dir: &Path, limit: Option<Duration>) -> Result<ActiveLock, HandoffError> {
    let started = Instant::now();
    let mut said = Duration::ZERO;
    loop {
        match try_lock(dir) {
            Ok(Some(lock)) => return Ok(lock),
            Ok(None) => {}
            Err(source) => return Err(HandoffError::Lock { path: dir.join(LOCK), source }),
        }
        let waited = started.elapsed();
        if limit.is_some_and(|l| waited >= l) {
            let (holder, path) = (lock_holder(dir), dir.join(LOCK));
            return Err(HandoffError::LockHeld { holder, path, waited });
        }
        if waited >= said + Duration::from_secs(5) {
            said = waited;
            info!(
                holder = lock_holder(dir),
                "another agent is still active in the state dir (stopping?); waiting for it"
            );
        }
        // The predecessor lets go right after RETIRE: look often at first.
        std::thread::sleep(Duration::from_millis(if waited < Duration::from_secs(1) {
            1
        } else {
            20
        }));
    }
}

/// The token a successor must present; made once per state dir.
pub fn ensure_token(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(TOKEN);
    if let Ok(token) = std::fs::read_to_string(&path)
        && token.trim().len() >= 32
    {
        return Ok(token.trim().to_string());
    }
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!("{TOKEN}.{}", std::process::id()));
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(token.as_bytes())?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(token)
}

fn read_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join(TOKEN)).map(|t| t.trim().to_string()).unwrap_or_default()
}

/// For the acceptance tests only: `NONSTOP_TEST_HANDOFF_STOP_AT=old:listeners`
/// (or `new:commit`, …) makes the agent stop itself (SIGSTOP) at that step,
/// so a test can kill or freeze it at an exact point.
fn step(name: &str) {
    if std::env::var("NONSTOP_TEST_HANDOFF_STOP_AT").is_ok_and(|v| v == name) {
        warn!(step = name, "NONSTOP_TEST_HANDOFF_STOP_AT: stopping myself");
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::STOP);
        // Another thread may take the process-wide stop first; this one must
        // not run on meanwhile, so it waits in the kernel until it is stopped
        // too (and, after SIGCONT, a little longer).
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Successor incarnations (`pod@created-ms`) whose handoff to this agent
/// failed: the operator rolls such a pod back, and until its deletion lands
/// the kubelet may restart its container, which must not get the node.
/// The last few are kept.
#[derive(Debug, Default)]
pub(super) struct Failed(std::collections::VecDeque<String>);

impl Failed {
    const KEPT: usize = 16;

    pub(super) fn add(&mut self, incarnation: String) {
        if !self.has(&incarnation) {
            if self.0.len() == Self::KEPT {
                self.0.pop_front();
            }
            self.0.push_back(incarnation);
        }
    }

    pub(super) fn has(&self, incarnation: &str) -> bool {
        self.0.iter().any(|i| i == incarnation)
    }
}

/// What this build can carry; the tests narrow it (`NONSTOP_TEST_CANNOT_CARRY`,
/// `NONSTOP_TEST_STATE_SCHEMA`) to play an incompatible successor.
fn our_hello(dir: &Path, incarnation: Option<String>) -> Hello {
    let cannot: Vec<String> = std::env::var("NONSTOP_TEST_CANNOT_CARRY")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .collect();
    let name =
        |f: &Feature| serde_json::to_value(f).ok().and_then(|v| v.as_str().map(String::from));
    Hello {
        protocol: PROTOCOL,
        state_schema: std::env::var("NONSTOP_TEST_STATE_SCHEMA")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(STATE_SCHEMA),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        token: read_token(dir),
        can_carry: Feature::ALL
            .into_iter()
            .filter(|f| !name(f).is_some_and(|n| cannot.contains(&n)))
            .collect(),
        incarnation,
        events: true,
        monitors: true,
        verdicts: true,
    }
}

/// Listens for successors; each knock that passes the uid check and says
/// HELLO goes to the speaker, one at a time.
pub fn serve(dir: &Path, knocks: mpsc::Sender<Knock>) -> std::io::Result<()> {
    let listener = transport::listen(&dir.join(SOCKET))?;
    let uid = rustix::process::geteuid().as_raw();
    std::thread::Builder::new().name("handoff".into()).spawn(move || {
        loop {
            let channel = match Channel::accept(&listener) {
                Ok(c) => c,
                Err(e) => {
                    warn!("handoff socket: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            match channel.peer_uid() {
                Ok(theirs) if theirs == uid => {}
                other => {
                    let why =
                        format!("uid {other:?} may not take over an agent running as uid {uid}");
                    warn!("handoff refused: {why}");
                    let _ = channel.send(&Message::Abort(why), &[]);
                    continue;
                }
            }
            match channel.recv(Duration::from_secs(5)) {
                Ok((Message::Hello(hello), _)) => {
                    if let Err(mpsc::error::SendError((channel, _))) =
                        knocks.blocking_send((channel, hello))
                    {
                        let _ = channel.send(&Message::Abort("this agent is stopping".into()), &[]);
                    }
                }
                Ok((m, _)) => {
                    let _ = channel
                        .send(&Message::Abort(format!("expected HELLO, got {}", m.name())), &[]);
                }
                Err(e) => warn!("a would-be successor said nothing useful: {e}"),
            }
        }
    })?;
    Ok(())
}

fn report(
    role: HandoffRole,
    result: HandoffResult,
    reason: Option<String>,
    other: AgentRef,
) -> HandoffReport {
    HandoffReport {
        role,
        result,
        reason,
        other,
        sessions: 0,
        listeners: 0,
        state_bytes: 0,
        pause_ms: None,
        at_ms: crate::restart::now_ms(),
    }
}

impl super::Speaker {
    /// Path the control socket moves to when this agent retires, so the
    /// successor can take `control.sock` and this one still answers.
    pub(super) fn retired_control(&self) -> PathBuf {
        self.options.state_dir.join(format!("retired-{}.sock", std::process::id()))
    }

    /// Serves a successor's knock; true when this agent is now retired.
    pub(super) async fn hand_over(
        &mut self,
        knock: Knock,
        listener: Option<&tokio::net::TcpListener>,
        admin: &OwnedFd,
    ) -> bool {
        let incarnation = knock.1.incarnation.clone();
        if let Some(again) = incarnation.as_deref().filter(|i| self.failed_successors.has(i)) {
            let why = format!(
                "{again} already failed a handoff to this agent; its pod is being rolled back"
            );
            warn!(successor = knock.1.pid, "handoff refused: {why}");
            let _ = knock.0.send(&Message::Abort(why.clone()), &[]);
            let other = AgentRef { pid: knock.1.pid, version: knock.1.agent_version.clone() };
            let refused =
                report(HandoffRole::Predecessor, HandoffResult::Refused, Some(why), other);
            self.metrics.handoff(&refused);
            self.standing.lock().expect("standing").last_handoff = Some(refused);
            return false;
        }
        let peers: Vec<_> = self
            .peers
            .iter()
            .map(|(a, p)| (*a, p.commands.clone(), p.status.borrow().hold_time))
            .collect();
        let control = self.options.state_dir.join(super::CONTROL_SOCKET);
        let retired = self.retired_control();
        let move_aside = move || -> std::io::Result<Box<dyn FnOnce()>> {
            std::fs::rename(&control, &retired)?;
            Ok(Box::new(move || {
                let _ = std::fs::rename(&retired, &control);
            }))
        };
        let dir = self.options.state_dir.clone();
        let report = hand_over(
            &dir,
            knock,
            &peers,
            &listener.map(|l| l.as_fd()).into_iter().chain([admin.as_fd()]).collect::<Vec<_>>(),
            &self.exporter,
            &self.health.carried(),
            move_aside,
        )
        .await;
        self.metrics.handoff(&report);
        let done = report.result == HandoffResult::Completed;
        if let Some(incarnation) = incarnation.filter(|_| !done) {
            self.failed_successors.add(incarnation);
        }
        let mut standing = self.standing.lock().expect("standing");
        if done {
            standing.role = super::status::Role::Retired;
            standing.successor = Some(report.other.clone());
            // The successor waits for this before it speaks.
            self.lock = None;
            self.peers.clear();
            self.views.send_replace(Vec::new());
        }
        standing.last_handoff = Some(report);
        done
    }

    /// Records a takeover once every adopted session has been taken up
    /// (`resumed`, one per adopted session, says how long each went
    /// untended). The pause reported is the longest of them.
    pub(super) async fn took_over(
        &mut self,
        t: Takeover,
        resumed: Vec<oneshot::Receiver<Duration>>,
    ) {
        let mut report = t.report;
        let deadline = tokio::time::Instant::now() + STEP;
        let mut longest: Option<Duration> = None;
        for r in resumed {
            // A session that could not be resumed starts anew: no pause.
            if let Ok(Ok(pause)) = tokio::time::timeout_at(deadline, r).await {
                longest = longest.max(Some(pause));
            }
        }
        report.pause_ms = longest.map(|p| p.as_secs_f64() * 1e3);
        info!(
            predecessor = t.predecessor.pid,
            version = t.predecessor.version,
            sessions = report.sessions,
            bytes = report.state_bytes,
            pause_ms = report.pause_ms,
            result = ?report.result,
            "took over"
        );
        self.metrics.handoff(&report);
        self.standing.lock().expect("standing").last_handoff = Some(report);
        self.inherit_events(t.events).await;
    }

    /// The predecessor's events for each peer, now that every session runs:
    /// decoding them earlier would have lengthened the pause.
    async fn inherit_events(&self, events: Vec<(IpAddr, Vec<u8>)>) {
        for (peer, json) in events {
            let Some(handle) = self.peers.get(&peer) else { continue };
            match serde_json::from_slice::<Vec<SessionEvent>>(&json) {
                Ok(events) => {
                    let _ = handle.commands.send(PeerCommand::Inherit(events)).await;
                }
                Err(e) => warn!(%peer, "the predecessor's events do not parse, left out: {e}"),
            }
        }
    }
}
