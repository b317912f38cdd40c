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
//!  predecessor: knock (uid, HELLO) ─▶ admit ─▶ freeze every peer task ─▶
//!               WELCOME, LISTENERS, SESSIONS…, RIB…, DONE ─▶ COMMIT in time?
//!               ─▶ RETIRE, unlock, let go │ otherwise ABORT and resume
//!  successor:   connect ─▶ HELLO ─▶ collect ─▶ thaw and decode everything ─▶
//!               COMMIT ─▶ RETIRE ─▶ lock ─▶ start the adopted sessions
//! ```
//!
//! Every wait is bounded: the predecessor's whole pause by a third of the
//! smallest hold time (so no peer's hold timer can run out meanwhile), the
//! successor's steps by [`STEP`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::peer::{Adopted, FrozenPeer, PeerCommand, Thaw};
use super::status::{AgentRef, HandoffReport, HandoffResult, HandoffRole};
use crate::handoff::protocol::{
    Feature, Hello, MAX_FDS, Message, PROTOCOL, RibPart, STATE_SCHEMA, SessionState, Welcome,
};
use crate::handoff::session_state::{monotonic_ns, thaw};
use crate::handoff::transport::{self, Channel, MAX_PACKET, TransportError};
use crate::handoff::{admit, rib_state};
use crate::rib::{AdjRibIn, AdjRibOut};

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
pub fn lock_waiting(dir: &Path, limit: Option<Duration>) -> Result<ActiveLock, String> {
    let started = Instant::now();
    let mut said = Duration::ZERO;
    loop {
        match try_lock(dir) {
            Ok(Some(lock)) => return Ok(lock),
            Ok(None) => {}
            Err(e) => return Err(format!("cannot lock {}: {e}", dir.join(LOCK).display())),
        }
        let waited = started.elapsed();
        if limit.is_some_and(|l| waited >= l) {
            return Err(format!(
                "agent pid {} still holds {} after {waited:?}",
                lock_holder(dir),
                dir.join(LOCK).display()
            ));
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

/// What this build can carry; the tests narrow it (`NONSTOP_TEST_CANNOT_CARRY`,
/// `NONSTOP_TEST_STATE_SCHEMA`) to play an incompatible successor.
fn our_hello(dir: &Path) -> Hello {
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

/// The predecessor's side, from a knock to its end. `peers` are the
/// command channels of every peer task; `listeners` the BGP then the admin
/// listener. Returns the report; `Completed` means retired.
pub async fn hand_over(
    dir: &Path,
    (channel, hello): Knock,
    peers: &[(std::net::IpAddr, mpsc::Sender<PeerCommand>, Option<u16>)],
    listeners: [BorrowedFd<'_>; 2],
    retire_control: impl FnOnce() -> std::io::Result<Box<dyn FnOnce()>>,
) -> HandoffReport {
    let other = AgentRef { pid: hello.pid, version: hello.agent_version.clone() };
    let mut sessions = Vec::new();
    for (address, commands, _) in peers {
        let (tx, rx) = oneshot::channel();
        if commands.send(PeerCommand::Features(tx)).await.is_ok()
            && let Ok(Some(features)) = rx.await
        {
            sessions.push((*address, features));
        }
    }
    if let Err(refusal) = admit(&hello, &read_token(dir), &sessions) {
        warn!(successor = hello.pid, version = hello.agent_version, "handoff refused: {refusal}");
        let _ = channel.send(&Message::Abort(refusal.to_string()), &[]);
        return report(
            HandoffRole::Predecessor,
            HandoffResult::Refused,
            Some(refusal.to_string()),
            other,
        );
    }
    // The whole pause must fit well inside every peer's hold time.
    let smallest_hold = peers.iter().filter_map(|(_, _, hold)| *hold).filter(|h| *h > 0).min();
    let budget = smallest_hold.map_or(Duration::from_secs(10), |h| {
        (Duration::from_secs(u64::from(h)) / 3)
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    });
    info!(
        successor = hello.pid,
        version = hello.agent_version,
        sessions = sessions.len(),
        ?budget,
        "handing over"
    );

    // Freeze every task at once, then collect.
    let started = Instant::now();
    let mut thaws = Vec::new();
    let mut replies = Vec::new();
    for (_, commands, _) in peers {
        let (reply, reply_rx) = oneshot::channel();
        let (thaw_tx, thaw) = oneshot::channel();
        if commands.send(PeerCommand::Freeze { reply, thaw }).await.is_ok() {
            thaws.push(thaw_tx);
            replies.push(reply_rx);
        }
    }
    let mut frozen = Vec::new();
    for r in replies {
        if let Ok(Some(f)) = r.await {
            frozen.push(f);
        }
    }
    let deadline = started + budget;
    let conversation = tokio::task::block_in_place(|| pass(&channel, &frozen, listeners, deadline));
    let mut r = report(HandoffRole::Predecessor, HandoffResult::RolledBack, None, other);
    r.sessions = frozen.len();
    r.listeners = 2;
    let outcome = conversation.and_then(|bytes| {
        r.state_bytes = bytes;
        // Out of the successor's way first: the control socket's path.
        let restore =
            retire_control().map_err(|e| format!("cannot move the control socket aside: {e}"))?;
        match channel.send(&Message::Retire, &[]) {
            Ok(()) => Ok(()),
            Err(e) => {
                restore();
                Err(format!("sending RETIRE: {e}"))
            }
        }
    });
    match outcome {
        Ok(()) => {
            step("old:retire");
            for t in thaws {
                let _ = t.send(Thaw::Retire);
            }
            r.result = HandoffResult::Completed;
            info!(
                successor = hello.pid,
                sessions = r.sessions,
                bytes = r.state_bytes,
                "handed over: retired"
            );
        }
        Err(reason) => {
            warn!(successor = hello.pid, "handoff rolled back, carrying on: {reason}");
            let _ = channel.set_send_timeout(Duration::from_millis(100));
            let _ = channel.send(&Message::Abort(reason.clone()), &[]);
            for t in thaws {
                let _ = t.send(Thaw::Resume);
            }
            r.reason = Some(reason);
        }
    }
    r
}

/// WELCOME to COMMIT; the bytes of state sent, or why it failed.
fn pass(
    channel: &Channel,
    frozen: &[FrozenPeer],
    listeners: [BorrowedFd<'_>; 2],
    deadline: Instant,
) -> Result<usize, String> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let send = |m: &Message, fds: &[BorrowedFd<'_>]| -> Result<(), String> {
        if left().is_zero() {
            return Err(format!("the pause the hold times allow ran out before {}", m.name()));
        }
        channel.set_send_timeout(left()).map_err(|e| e.to_string())?;
        channel.send(m, fds).map_err(|e| format!("sending {}: {e}", m.name()))
    };
    let welcome = Welcome {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        sessions: frozen.len() as u32,
    };
    send(&Message::Welcome(welcome), &[])?;
    step("old:welcome");
    send(&Message::Listeners, &listeners)?;
    step("old:listeners");
    let mut bytes = 0;
    let mut rest = frozen;
    while !rest.is_empty() {
        // As many as fit in one packet, at most MAX_FDS.
        let mut n = rest.len().min(MAX_FDS);
        let batch = loop {
            let states: Vec<SessionState> = rest[..n].iter().map(|f| f.state.clone()).collect();
            let m = Message::Sessions(states);
            if m.encode().len() <= MAX_PACKET || n == 1 {
                break m;
            }
            n = n.div_ceil(2);
        };
        let fds: Vec<BorrowedFd<'_>> = rest[..n].iter().map(|f| f.socket.as_fd()).collect();
        bytes += batch.encode().len();
        send(&batch, &fds)?;
        rest = &rest[n..];
    }
    step("old:sessions");
    for (i, f) in frozen.iter().enumerate() {
        for (part, stream) in &f.parts {
            let room = MAX_PACKET - 16;
            let pieces: Vec<&[u8]> = if part.is_updates() {
                transport::chunks(stream, room)
            } else {
                stream.chunks(room).collect()
            };
            for piece in pieces {
                bytes += piece.len();
                send(
                    &Message::Rib { session: i as u32, part: *part, updates: piece.to_vec() },
                    &[],
                )?;
            }
        }
    }
    send(&Message::Done { sessions: frozen.len() as u32 }, &[])?;
    step("old:done");
    match channel.recv(left()) {
        Ok((Message::Commit, _)) if !left().is_zero() => {
            step("old:commit");
            Ok(bytes)
        }
        Ok((Message::Commit, _)) => Err("COMMIT came after the pause the hold times allow".into()),
        Ok((Message::Abort(why), _)) => Err(format!("the successor gave up: {why}")),
        Ok((m, _)) => Err(format!("expected COMMIT, got {}", m.name())),
        Err(TransportError::Timeout(_)) => {
            Err("no COMMIT within the pause the hold times allow".into())
        }
        Err(e) => Err(format!("waiting for COMMIT: {e}")),
    }
}

/// What a successor took over.
#[derive(Debug)]
pub struct Takeover {
    pub predecessor: AgentRef,
    /// The BGP listener and the admin listener (None: the predecessor died
    /// before passing them; bind anew).
    pub listeners: Option<(OwnedFd, OwnedFd)>,
    pub sessions: Vec<Adopted>,
    pub report: HandoffReport,
    /// When the first session was last read by the predecessor.
    pub frozen_at_ns: Option<u64>,
}

#[derive(Default)]
struct Collected {
    listeners: Option<(OwnedFd, OwnedFd)>,
    states: Vec<(SessionState, OwnedFd)>,
    parts: HashMap<u32, Vec<(RibPart, Vec<u8>)>>,
    bytes: usize,
    done: bool,
}

/// The successor's side. None: no agent answers (start cold). An error:
/// the handoff did not happen and the predecessor keeps serving.
pub fn take_over(dir: &Path) -> Result<Option<(Takeover, ActiveLock)>, String> {
    let path: PathBuf = dir.join(SOCKET);
    let channel = match Channel::connect(&path) {
        Ok(c) => c,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot reach the running agent at {}: {e}", path.display())),
    };
    channel.set_send_timeout(STEP).map_err(|e| e.to_string())?;
    channel.send(&Message::Hello(our_hello(dir)), &[]).map_err(|e| format!("saying HELLO: {e}"))?;
    let welcome = match channel.recv(STEP) {
        Ok((Message::Welcome(w), _)) => w,
        Ok((Message::Abort(why), _)) => {
            // A retired agent still answers on its old socket; when no agent
            // holds the lock, nobody is active and we start cold.
            return match try_lock(dir) {
                Ok(Some(_)) => {
                    info!(
                        "the agent at {} refused ({why}) and none is active: starting cold",
                        path.display()
                    );
                    Ok(None)
                }
                _ => Err(format!("the running agent refused the handoff: {why}")),
            };
        }
        Ok((m, _)) => return Err(format!("the running agent answered HELLO with {}", m.name())),
        Err(e) => return Err(format!("waiting for the running agent's WELCOME: {e}")),
    };
    let predecessor = AgentRef { pid: welcome.pid, version: welcome.agent_version.clone() };
    info!(
        predecessor = welcome.pid,
        version = welcome.agent_version,
        sessions = welcome.sessions,
        "taking over"
    );
    step("new:welcome");
    let abort = |why: String| {
        let _ = channel.send(&Message::Abort(why.clone()), &[]);
        why
    };
    let mut got = Collected::default();
    let gone = loop {
        match channel.recv(STEP) {
            Ok((Message::Listeners, fds)) => {
                let [bgp, admin]: [OwnedFd; 2] = fds.try_into().map_err(|fds: Vec<OwnedFd>| {
                    abort(format!("LISTENERS came with {} descriptors, not 2", fds.len()))
                })?;
                got.listeners = Some((bgp, admin));
                step("new:listeners");
            }
            Ok((Message::Sessions(states), fds)) => {
                got.bytes += Message::Sessions(states.clone()).encode().len();
                if states.len() != fds.len() {
                    return Err(abort(format!(
                        "SESSIONS of {} came with {} descriptors",
                        states.len(),
                        fds.len()
                    )));
                }
                got.states.extend(states.into_iter().zip(fds));
                step("new:sessions");
            }
            Ok((Message::Rib { session, part, updates }, _)) => {
                if session as usize >= got.states.len() {
                    return Err(abort(format!(
                        "RIB for session {session}, of {} passed",
                        got.states.len()
                    )));
                }
                got.bytes += updates.len();
                got.parts.entry(session).or_default().push((part, updates));
            }
            Ok((Message::Done { sessions }, _)) => {
                if sessions as usize != got.states.len() {
                    return Err(abort(format!(
                        "DONE says {sessions} sessions; {} arrived",
                        got.states.len()
                    )));
                }
                got.done = true;
                break None;
            }
            Ok((Message::Abort(why), _)) => {
                return Err(format!("the running agent gave up: {why}"));
            }
            Ok((m, _)) => return Err(abort(format!("{} out of order", m.name()))),
            Err(TransportError::Closed) => match lock_after_close(dir) {
                Ok(Some(lock)) => break Some(lock),
                _ => return Err("the running agent closed the handoff and keeps serving".into()),
            },
            Err(e) => return Err(abort(format!("waiting for the running agent's state: {e}"))),
        }
    };
    // Everything is checked before COMMIT, so that any fault rolls back.
    let complete = got.done;
    let frozen_at_ns = got.states.iter().map(|(s, _)| s.frozen_at_ns).min();
    let mut sessions = Vec::new();
    let mut parts = std::mem::take(&mut got.parts);
    for (i, (state, fd)) in got.states.into_iter().enumerate() {
        match adopted(state, fd, parts.remove(&(i as u32)).unwrap_or_default(), complete) {
            Ok(a) => sessions.push(a),
            Err(e) if complete => return Err(abort(e)),
            Err(e) => warn!("cannot keep a session the dead predecessor passed: {e}"),
        }
    }
    let mut r = report(HandoffRole::Successor, HandoffResult::Completed, None, predecessor.clone());
    r.sessions = sessions.len();
    r.state_bytes = got.bytes;
    r.listeners = if got.listeners.is_some() { 2 } else { 0 };
    let lock =
        match gone {
            Some(lock) => {
                r.result = HandoffResult::Partial;
                r.reason = Some(format!(
                    "agent {} died mid-way; the rest falls back to Graceful Restart",
                    predecessor.pid
                ));
                warn!("{}", r.reason.as_deref().unwrap_or_default());
                lock
            }
            None => {
                channel.send(&Message::Commit, &[]).map_err(|e| format!("sending COMMIT: {e}"))?;
                step("new:commit");
                match channel.recv(STEP) {
                    Ok((Message::Retire, _)) => lock_waiting(dir, Some(STEP))?,
                    Ok((Message::Abort(why), _)) => {
                        return Err(format!("the running agent rolled back: {why}"));
                    }
                    Ok((m, _)) => return Err(format!("expected RETIRE, got {}", m.name())),
                    Err(TransportError::Closed) => match lock_after_close(dir) {
                        Ok(Some(lock)) => lock,
                        _ => return Err(
                            "the running agent closed the handoff after COMMIT and keeps serving"
                                .into(),
                        ),
                    },
                    Err(e) => return Err(format!("waiting for RETIRE: {e}")),
                }
            }
        };
    let takeover =
        Takeover { predecessor, listeners: got.listeners, sessions, report: r, frozen_at_ns };
    Ok(Some((takeover, lock)))
}

fn adopted(
    state: SessionState,
    fd: OwnedFd,
    parts: Vec<(RibPart, Vec<u8>)>,
    complete: bool,
) -> Result<Adopted, String> {
    let negotiated = thaw(&state).map_err(|e| e.to_string())?;
    let (mut rib_in, mut sent) = (AdjRibIn::default(), AdjRibOut::default());
    let (mut unread, mut unwritten) = (Vec::new(), Vec::new());
    for (part, bytes) in parts {
        let restored = match part {
            RibPart::Unread => {
                unread.extend_from_slice(&bytes);
                Ok(())
            }
            RibPart::Unwritten => {
                unwritten.extend_from_slice(&bytes);
                Ok(())
            }
            RibPart::Out => rib_state::restore_out(&mut sent, &bytes).map(drop),
            p => rib_state::restore_in(&mut rib_in, p, &bytes).map(drop),
        };
        restored.map_err(|e| format!("session with {}: {e}", state.peer))?;
    }
    let stream = std::net::TcpStream::from(fd);
    Ok(Adopted { negotiated, state, stream, rib_in, sent, unread, unwritten, complete })
}

/// The pause the successor saw, from the predecessor's last read.
pub fn pause_ms(frozen_at_ns: Option<u64>) -> Option<f64> {
    frozen_at_ns.map(|at| monotonic_ns().saturating_sub(at) as f64 / 1e6)
}

/// Closes an adopted session we have no peer config for: Cease, Peer
/// De-configured (RFC 4486), after whatever the predecessor had queued.
pub fn let_go(a: Adopted, message: &str) {
    let cease = crate::wire::Notification::cease_with_message(
        crate::wire::subcode::PEER_DECONFIGURED,
        message,
    );
    let mut bytes = a.unwritten;
    bytes.extend(crate::wire::Message::Notification(cease).to_bytes(&a.negotiated.wire));
    let mut stream = a.stream;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Both);
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
        listener: &tokio::net::TcpListener,
        admin: &OwnedFd,
    ) -> bool {
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
        let report =
            hand_over(&dir, knock, &peers, [listener.as_fd(), admin.as_fd()], move_aside).await;
        self.metrics.handoff(&report);
        let done = report.result == HandoffResult::Completed;
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

    /// Records a takeover once the adopted sessions run.
    pub(super) fn took_over(&mut self, t: Takeover) {
        let mut report = t.report;
        report.pause_ms = pause_ms(t.frozen_at_ns);
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
    }
}
