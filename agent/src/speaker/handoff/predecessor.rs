//! The running agent's side of a handoff, from a successor's knock to
//! retirement or rollback.
//!
//! ```text
//!  admit ─▶ WELCOME ─▶ snapshot each session's RIBs and send them (live)
//!        ─▶ COPIED ─▶ READY (the successor caught up) ─▶ freeze every peer task ─▶ LISTENERS, SESSIONS…, RIB changes…, DONE
//!        ─▶ COMMIT within the budget? ─▶ RETIRE, let go │ else ABORT, resume
//! ```
//!
//! The snapshot pass is what keeps a full table out of the pause: a peer
//! task copies its RIBs in tens of milliseconds (routes share their
//! attributes with the copy) and goes on; the copy is encoded and sent
//! while the session runs. Frozen, the task sends only what changed since.

use std::net::IpAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::super::descriptors;
use super::super::monitor::{Exporter, Handed};
use super::super::peer::{FrozenPeer, PeerCommand, RibSnapshot, Thaw};
use super::super::status::{AgentRef, HandoffReport, HandoffResult, HandoffRole};
use super::error::{HandoffError, Other};
use super::{Knock, read_token, report, step};
use crate::handoff::protocol::{CarriedVerdict, MAX_FDS, Message, RibPart, SessionState, Welcome};
use crate::handoff::transport::{self, Channel, MAX_PACKET, TransportError};
use crate::handoff::{admit, rib_state};

/// Longest a successor may take to read one packet of the first pass, or to
/// finish applying it.
const SNAPSHOT_STEP: Duration = Duration::from_secs(10);

/// One peer task as the handoff sees it: address, commands, hold time.
pub type PeerHandle = (IpAddr, mpsc::Sender<PeerCommand>, Option<u16>);

/// The predecessor's side, from a knock to its end. `peers` are the
/// command channels of every peer task; `listeners` the BGP listener (if
/// the gateway has one), then the admin listener. Returns the report; `Completed` means retired.
pub async fn hand_over(
    dir: &Path,
    (channel, hello): Knock,
    peers: &[PeerHandle],
    listeners: &[BorrowedFd<'_>],
    exporter: &Exporter,
    verdicts: &[CarriedVerdict],
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
    let budget = pause_budget(peers);
    info!(
        successor = hello.pid,
        version = hello.agent_version,
        sessions = sessions.len(),
        ?budget,
        "handing over"
    );
    let mut r = report(HandoffRole::Predecessor, HandoffResult::RolledBack, None, other);
    // The freeze duplicates every session's socket: room for them now.
    if let Err(e) = descriptors::reserve(channel.as_fd(), peers.len() + 16) {
        warn!("cannot make room for {} sessions' sockets ahead: {e}", peers.len());
    }

    // First pass, live: every table as it stands.
    let snapshots = match snapshot(&channel, peers, hello.events).await {
        Ok((snapshots, bytes)) => {
            r.state_bytes = bytes;
            snapshots
        }
        Err(reason) => {
            warn!(successor = hello.pid, "handoff given up before any pause: {reason}");
            let _ = channel.set_send_timeout(Duration::from_millis(100));
            let _ = channel.send(&Message::Abort(reason.to_string()), &[]);
            r.reason = Some(reason.to_string());
            return r;
        }
    };

    // Freeze every task at once, then collect.
    let started = Instant::now();
    let (mut thaws, frozen) = freeze(peers, snapshots).await;
    // The collectors go along only to a successor that carries them on.
    let monitors = if hello.monitors {
        let (handed, collector_thaws) = exporter.release().await;
        thaws.extend(collector_thaws);
        handed
    } else {
        Vec::new()
    };
    let deadline = started + budget;
    let froze = started.elapsed();
    // Only to a successor that reads them, and only when there are checks.
    let verdicts = if hello.verdicts { verdicts } else { &[] };
    let carried = Carried { listeners, monitors: &monitors, verdicts };
    let conversation = tokio::task::block_in_place(|| pass(&channel, &frozen, carried, deadline));
    info!(?froze, total = ?started.elapsed(), "handoff: frozen, then passed");
    r.sessions = frozen.len();
    r.listeners = listeners.len();
    let outcome = conversation.and_then(|bytes| {
        r.state_bytes += bytes;
        retire(&channel, retire_control)
    });
    conclude(&channel, outcome, thaws, &mut r, hello.pid);
    r
}

/// Retired (every session task told so), or rolled back: ABORT to the
/// successor and every session resumes where it froze.
fn conclude(
    channel: &Channel,
    outcome: Result<(), HandoffError>,
    thaws: Vec<oneshot::Sender<Thaw>>,
    r: &mut HandoffReport,
    successor: u32,
) {
    match outcome {
        Ok(()) => {
            step("old:retire");
            for t in thaws {
                let _ = t.send(Thaw::Retire);
            }
            r.result = HandoffResult::Completed;
            info!(successor, sessions = r.sessions, bytes = r.state_bytes, "handed over: retired");
        }
        Err(reason) => {
            warn!(successor, "handoff rolled back, carrying on: {reason}");
            let _ = channel.set_send_timeout(Duration::from_millis(100));
            let _ = channel.send(&Message::Abort(reason.to_string()), &[]);
            for t in thaws {
                let _ = t.send(Thaw::Resume);
            }
            r.reason = Some(reason.to_string());
        }
    }
}

/// The whole pause must fit well inside every peer's hold time: a third
/// of the smallest, between 1 and 30 s (10 s with no hold time).
fn pause_budget(peers: &[PeerHandle]) -> Duration {
    let smallest_hold = peers.iter().filter_map(|(_, _, hold)| *hold).filter(|h| *h > 0).min();
    smallest_hold.map_or(Duration::from_secs(10), |h| {
        (Duration::from_secs(u64::from(h)) / 3)
            .clamp(Duration::from_secs(1), Duration::from_secs(30))
    })
}

/// Freezes every peer task at once (each against its first-pass
/// snapshot), then collects what each froze. Returns the thaw senders
/// and the frozen sessions, numbered in `peers` order.
async fn freeze(
    peers: &[PeerHandle],
    snapshots: Vec<Option<Arc<RibSnapshot>>>,
) -> (Vec<oneshot::Sender<Thaw>>, Vec<(u32, FrozenPeer)>) {
    let mut thaws = Vec::new();
    let mut replies = Vec::new();
    for ((i, (_, commands, _)), base) in peers.iter().enumerate().zip(snapshots) {
        let (reply, reply_rx) = oneshot::channel();
        let (thaw_tx, thaw) = oneshot::channel();
        if commands.send(PeerCommand::Freeze { reply, thaw, base }).await.is_ok() {
            thaws.push(thaw_tx);
            replies.push((i as u32, reply_rx));
        }
    }
    let mut frozen = Vec::new();
    for (i, r) in replies {
        if let Ok(Some(f)) = r.await {
            frozen.push((i, f));
        }
    }
    (thaws, frozen)
}

/// Out of the successor's way first (the control socket's path), then
/// RETIRE; the path comes back if RETIRE cannot be sent.
fn retire(
    channel: &Channel,
    retire_control: impl FnOnce() -> std::io::Result<Box<dyn FnOnce()>>,
) -> Result<(), HandoffError> {
    let restore = retire_control().map_err(HandoffError::ControlSocket)?;
    channel.send(&Message::Retire, &[]).map_err(|e| {
        restore();
        HandoffError::sending("RETIRE")(e)
    })
}

/// WELCOME and the first pass: each Established session's RIBs as they
/// stand, while the sessions run; then, once the successor is READY and
/// if it asked, each peer's recent events. Returns the snapshots, in
/// `peers` order, for the freeze to send only what changed since; and the
/// bytes sent.
async fn snapshot(
    channel: &Channel,
    peers: &[PeerHandle],
    events: bool,
) -> Result<(Vec<Option<Arc<RibSnapshot>>>, usize), HandoffError> {
    let send = |m: &Message| channel.send(m, &[]).map_err(HandoffError::sending(m.name()));
    // Nothing is paused yet; a successor that stops reading is given up on.
    channel.set_send_timeout(SNAPSHOT_STEP).map_err(HandoffError::Timeout)?;
    let welcome = Welcome {
        agent_version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        peers: peers.iter().map(|(address, _, _)| *address).collect(),
    };
    send(&Message::Welcome(welcome))?;
    step("old:welcome");
    let mut snapshots = Vec::new();
    let mut bytes = 0;
    for (i, (_, commands, _)) in peers.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        let snap = match commands.send(PeerCommand::Snapshot(tx)).await {
            Ok(()) => rx.await.ok().flatten(),
            Err(_) => None,
        };
        if let Some(snap) = &snap {
            let parts = tokio::task::block_in_place(|| {
                let mut parts = rib_state::encode_in_since(&snap.rib_in, None);
                parts.extend(rib_state::encode_out_since(&snap.sent, None));
                parts
            });
            bytes += send_parts(i as u32, &parts, |m| send(m))?;
        }
        snapshots.push(snap);
    }
    send(&Message::Copied)?;
    match channel.recv(SNAPSHOT_STEP) {
        Ok((Message::Ready, _)) => {}
        Ok((Message::Abort(why), _)) => return Err(HandoffError::GaveUp(Other::Successor, why)),
        Ok((m, _)) => return Err(HandoffError::Unexpected { expected: "READY", got: m.name() }),
        Err(e) => return Err(HandoffError::waiting("READY")(e)),
    }
    if events {
        bytes += send_events(peers, |m| send(m)).await?;
    }
    Ok((snapshots, bytes))
}

/// Each peer's recent events, one EVENTS message per peer, the oldest
/// left out if a log does not fit in a packet. Sent as late as can be
/// before the freeze, so that the successor misses as little as can be.
async fn send_events(
    peers: &[PeerHandle],
    send: impl Fn(&Message) -> Result<(), HandoffError>,
) -> Result<usize, HandoffError> {
    let mut bytes = 0;
    for (i, (_, commands, _)) in peers.iter().enumerate() {
        let (tx, rx) = oneshot::channel();
        if commands.send(PeerCommand::Events(tx)).await.is_err() {
            continue;
        }
        let Ok(mut events) = rx.await else { continue };
        let json = loop {
            let json = serde_json::to_vec(&events).expect("events serialise");
            if json.len() <= MAX_PACKET - 16 || events.is_empty() {
                break json;
            }
            events.remove(0);
        };
        bytes += json.len();
        send(&Message::Events { session: i as u32, json })?;
    }
    step("old:events");
    Ok(bytes)
}

/// One peer's RIB parts as RIB messages of at most a packet each, cut at
/// message boundaries; the bytes of state sent.
fn send_parts(
    peer: u32,
    parts: &[(RibPart, Vec<u8>)],
    mut send: impl FnMut(&Message) -> Result<(), HandoffError>,
) -> Result<usize, HandoffError> {
    let mut bytes = 0;
    for (part, stream) in parts {
        let room = MAX_PACKET - 16;
        let pieces: Vec<&[u8]> = if part.is_updates() {
            transport::chunks(stream, room)
        } else {
            stream.chunks(room).collect()
        };
        for piece in pieces {
            bytes += piece.len();
            send(&Message::Rib { session: peer, part: *part, updates: piece.to_vec() })?;
        }
    }
    Ok(bytes)
}

/// What goes over besides the sessions: the BGP (if any) and admin
/// listeners, the collector connections, the checks' verdicts.
struct Carried<'a> {
    listeners: &'a [BorrowedFd<'a>],
    monitors: &'a [Handed],
    verdicts: &'a [CarriedVerdict],
}

/// LISTENERS to COMMIT, frozen; the bytes of state sent, or why it failed.
/// `frozen` pairs each session with its peer's index in WELCOME.
fn pass(
    channel: &Channel,
    frozen: &[(u32, FrozenPeer)],
    Carried { listeners, monitors, verdicts }: Carried<'_>,
    deadline: Instant,
) -> Result<usize, HandoffError> {
    let left = || deadline.saturating_duration_since(Instant::now());
    let send = |m: &Message, fds: &[BorrowedFd<'_>]| -> Result<(), HandoffError> {
        if left().is_zero() {
            return Err(HandoffError::PauseSpent(m.name()));
        }
        channel.set_send_timeout(left()).map_err(HandoffError::Timeout)?;
        channel.send(m, fds).map_err(HandoffError::sending(m.name()))
    };
    send(&Message::Listeners, listeners)?;
    step("old:listeners");
    if !monitors.is_empty() {
        let fds: Vec<BorrowedFd<'_>> = monitors.iter().map(|(_, fd)| fd.as_fd()).collect();
        send(&Message::Monitors(monitors.iter().map(|(a, _)| *a).collect()), &fds)?;
        step("old:monitors");
    }
    if !verdicts.is_empty() {
        send(&Message::Verdicts(verdicts.to_vec()), &[])?;
        step("old:verdicts");
    }
    let mut bytes = 0;
    let mut rest = frozen;
    while !rest.is_empty() {
        // As many as fit in one packet, at most MAX_FDS.
        let mut n = rest.len().min(MAX_FDS);
        let packet = loop {
            let states: Vec<SessionState> = rest[..n].iter().map(|f| f.1.state.clone()).collect();
            let packet = Message::Sessions(states).encode();
            if packet.len() <= MAX_PACKET || n == 1 {
                break packet;
            }
            n = n.div_ceil(2);
        };
        let fds: Vec<BorrowedFd<'_>> = rest[..n].iter().map(|f| f.1.socket.as_fd()).collect();
        bytes += packet.len();
        if left().is_zero() {
            return Err(HandoffError::PauseSpent("SESSIONS"));
        }
        channel.set_send_timeout(left()).map_err(HandoffError::Timeout)?;
        channel.send_encoded(&packet, &fds).map_err(HandoffError::sending("SESSIONS"))?;
        rest = &rest[n..];
    }
    step("old:sessions");
    for (i, f) in frozen {
        bytes += send_parts(*i, &f.parts, |m| send(m, &[]))?;
    }
    send(&Message::Done { sessions: frozen.len() as u32 }, &[])?;
    step("old:done");
    match channel.recv(left()) {
        Ok((Message::Commit, _)) if !left().is_zero() => {
            step("old:commit");
            Ok(bytes)
        }
        Ok((Message::Commit, _)) => Err(HandoffError::LateCommit),
        Ok((Message::Abort(why), _)) => Err(HandoffError::GaveUp(Other::Successor, why)),
        Ok((m, _)) => Err(HandoffError::Unexpected { expected: "COMMIT", got: m.name() }),
        Err(TransportError::Timeout(_)) => Err(HandoffError::NoCommit),
        Err(e) => Err(HandoffError::waiting("COMMIT")(e)),
    }
}
