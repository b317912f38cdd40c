//! The new agent's side of a handoff: knock, collect, check, commit.
//!
//! ```text
//!  connect ─▶ HELLO ─▶ WELCOME {peers} ─▶ apply each RIB part as it comes
//!          ─▶ COPIED: READY ─▶ LISTENERS, SESSIONS, RIB changes, DONE ─▶ thaw and check
//!          ─▶ COMMIT ─▶ RETIRE ─▶ lock ─▶ the adopted sessions start
//! ```
//!
//! Everything is checked before COMMIT, so that any fault rolls back; a
//! predecessor that dies mid-way (closed channel, lock free) leaves us what
//! arrived, and the rest falls back to Graceful Restart.

use std::io::Write;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{info, warn};

use super::super::descriptors;
use super::super::monitor::Handed;
use super::super::peer::Adopted;
use super::super::status::{AgentRef, HandoffReport, HandoffResult, HandoffRole};
use super::error::{HandoffError, Other};
use super::{ActiveLock, SOCKET, STEP, lock_after_close, lock_waiting, our_hello, report, step};
use crate::handoff::protocol::{CarriedVerdict, Message, RibPart, SessionState, Welcome};
use crate::handoff::rib_state;
use crate::handoff::session_state::{monotonic_ns, thaw};
use crate::handoff::transport::{Channel, TransportError};
use crate::rib::{AdjRibIn, AdjRibOut};

/// The listening sockets a predecessor passes on.
#[derive(Debug)]
pub struct Listeners {
    /// BGP's; None when the gateway runs without a listener.
    pub bgp: Option<OwnedFd>,
    /// `/status` and `/metrics`.
    pub admin: OwnedFd,
}

/// What a successor took over.
#[derive(Debug)]
pub struct Takeover {
    pub predecessor: AgentRef,
    /// The listeners (None: the predecessor died before passing them;
    /// bind anew).
    pub listeners: Option<Listeners>,
    pub sessions: Vec<Adopted>,
    pub report: HandoffReport,
    /// Each peer's recent events as the predecessor sent them (JSON of
    /// `Vec<SessionEvent>`), decoded once the sessions run again.
    pub events: Vec<(IpAddr, Vec<u8>)>,
    /// The predecessor's BMP collector connections, to write on.
    pub monitors: Vec<Handed>,
    /// The predecessor's verdicts on the checked announcements, a drain's
    /// end as milliseconds from when they came.
    pub verdicts: Vec<(crate::route::Prefix, crate::health::Verdict)>,
}

/// One peer's state as it arrives: both RIBs applied part by part.
#[derive(Default)]
struct Table {
    rib_in: AdjRibIn,
    sent: AdjRibOut,
    unread: Vec<u8>,
    unwritten: Vec<u8>,
}

impl Table {
    fn apply(
        &mut self,
        part: RibPart,
        bytes: &[u8],
    ) -> Result<(), crate::handoff::protocol::BadMessage> {
        match part {
            RibPart::Unread => self.unread.extend_from_slice(bytes),
            RibPart::Unwritten => self.unwritten.extend_from_slice(bytes),
            part => {
                rib_state::apply(&mut self.rib_in, &mut self.sent, part, bytes)?;
            }
        }
        Ok(())
    }
}

struct Collected {
    peers: Vec<IpAddr>,
    tables: Vec<Table>,
    listeners: Option<Listeners>,
    states: Vec<(SessionState, OwnedFd)>,
    events: Vec<(IpAddr, Vec<u8>)>,
    monitors: Vec<Handed>,
    verdicts: Vec<CarriedVerdict>,
    bytes: usize,
    done: bool,
}

/// The successor's side. None: no agent answers (start cold). An error:
/// the handoff did not happen and the predecessor keeps serving.
pub fn take_over(
    dir: &Path,
    incarnation: Option<String>,
) -> Result<Option<(Takeover, ActiveLock)>, HandoffError> {
    let Some((channel, welcome)) = greet(dir, incarnation)? else { return Ok(None) };
    let predecessor = AgentRef { pid: welcome.pid, version: welcome.agent_version.clone() };
    info!(
        predecessor = welcome.pid,
        version = welcome.agent_version,
        peers = welcome.peers.len(),
        "taking over"
    );
    step("new:welcome");
    // Room for every session's socket now, not while the sessions wait.
    if let Err(e) = descriptors::reserve(channel.as_fd(), welcome.peers.len() + 64) {
        warn!("cannot make room for {} sessions' sockets ahead: {e}", welcome.peers.len());
    }
    let mut got = Collected {
        tables: welcome.peers.iter().map(|_| Table::default()).collect(),
        peers: welcome.peers,
        listeners: None,
        states: Vec::new(),
        events: Vec::new(),
        monitors: Vec::new(),
        verdicts: Vec::new(),
        bytes: 0,
        done: false,
    };
    let gone = got.collect(&channel, dir)?;
    // Everything is checked before COMMIT, so that any fault rolls back.
    let collected = monotonic_ns();
    let complete = got.done;
    let frozen_at_ns = got.states.iter().map(|(s, _)| s.frozen_at_ns).min();
    let mut sessions = Vec::new();
    for (state, fd) in got.states {
        let i = got.peers.iter().position(|p| *p == state.peer).expect("checked on arrival");
        let table = std::mem::take(&mut got.tables[i]);
        match adopted(state, fd, table, complete) {
            Ok(a) => sessions.push(a),
            Err(e) if complete => return Err(abort(&channel, e)),
            Err(e) => warn!("cannot keep a session the dead predecessor passed: {e}"),
        }
    }
    let decoded = monotonic_ns();
    let mut r = report(HandoffRole::Successor, HandoffResult::Completed, None, predecessor.clone());
    r.sessions = sessions.len();
    r.state_bytes = got.bytes;
    r.listeners = got.listeners.as_ref().map_or(0, |l| 1 + usize::from(l.bgp.is_some()));
    let lock = match gone {
        Some(lock) => {
            r.result = HandoffResult::Partial;
            r.reason = Some(format!(
                "agent {} died mid-way; the rest falls back to Graceful Restart",
                predecessor.pid
            ));
            warn!("{}", r.reason.as_deref().unwrap_or_default());
            lock
        }
        None => commit(&channel, dir)?,
    };
    let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
    let at = frozen_at_ns.unwrap_or(collected);
    info!(
        collected_ms = ms(at, collected),
        decoded_ms = ms(collected, decoded),
        retired_ms = ms(decoded, monotonic_ns()),
        "handoff: from the first freeze"
    );
    let takeover = Takeover {
        predecessor,
        listeners: got.listeners,
        sessions,
        report: r,
        events: got.events,
        monitors: got.monitors,
        verdicts: got.verdicts.into_iter().map(|c| (c.prefix, c.verdict)).collect(),
    };
    Ok(Some((takeover, lock)))
}

/// Tells the predecessor why we give up, and returns the reason.
fn abort(channel: &Channel, why: HandoffError) -> HandoffError {
    let _ = channel.send(&Message::Abort(why.to_string()), &[]);
    why
}

/// HELLO, and the predecessor's WELCOME. None: nobody to take over from.
fn greet(
    dir: &Path,
    incarnation: Option<String>,
) -> Result<Option<(Channel, Welcome)>, HandoffError> {
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
        Err(source) => return Err(HandoffError::Unreachable { path, source }),
    };
    channel.set_send_timeout(STEP).map_err(HandoffError::Timeout)?;
    channel
        .send(&Message::Hello(our_hello(dir, incarnation)), &[])
        .map_err(HandoffError::sending("HELLO"))?;
    match channel.recv(STEP) {
        Ok((Message::Welcome(w), _)) => Ok(Some((channel, w))),
        Ok((Message::Abort(why), _)) => {
            // A retired agent still answers on its old socket; when no agent
            // holds the lock, nobody is active and we start cold. (The
            // retired agent's own look at the lock holds it for an instant:
            // look for a moment, not once.)
            match lock_after_close(dir) {
                Ok(Some(_)) => {
                    info!(
                        "the agent at {} refused ({why}) and none is active: starting cold",
                        path.display()
                    );
                    Ok(None)
                }
                _ => Err(HandoffError::Refused(why)),
            }
        }
        Ok((m, _)) => Err(HandoffError::Unexpected { expected: "WELCOME", got: m.name() }),
        Err(e) => Err(HandoffError::waiting("WELCOME")(e)),
    }
}

/// COMMIT, then the predecessor's RETIRE: the node's lock is ours.
fn commit(channel: &Channel, dir: &Path) -> Result<ActiveLock, HandoffError> {
    channel.send(&Message::Commit, &[]).map_err(HandoffError::sending("COMMIT"))?;
    step("new:commit");
    match channel.recv(STEP) {
        Ok((Message::Retire, _)) => lock_waiting(dir, Some(STEP)),
        Ok((Message::Abort(why), _)) => Err(HandoffError::RolledBack(why)),
        Ok((m, _)) => Err(HandoffError::Unexpected { expected: "RETIRE", got: m.name() }),
        Err(TransportError::Closed) => match lock_after_close(dir) {
            Ok(Some(lock)) => Ok(lock),
            _ => Err(HandoffError::ClosedKeepsServing { after_commit: true }),
        },
        Err(e) => Err(HandoffError::waiting("RETIRE")(e)),
    }
}

impl Collected {
    /// Takes in the predecessor's state until DONE (None) or until it died
    /// mid-way and let go of the node (its lock, now ours).
    fn collect(
        &mut self,
        channel: &Channel,
        dir: &Path,
    ) -> Result<Option<ActiveLock>, HandoffError> {
        loop {
            let received = channel.recv_sized(STEP).map(|(m, fds, size)| {
                if matches!(m, Message::Sessions(_)) {
                    self.bytes += size;
                }
                (m, fds)
            });
            match received {
                Ok((Message::Copied, _)) => {
                    channel.send(&Message::Ready, &[]).map_err(HandoffError::sending("READY"))?;
                }
                Ok((Message::Abort(why), _)) => {
                    return Err(HandoffError::GaveUp(Other::Running, why));
                }
                Ok((Message::Done { sessions }, _)) => {
                    if sessions as usize != self.states.len() {
                        let why =
                            format!("DONE says {sessions} sessions; {} arrived", self.states.len());
                        return Err(abort(channel, HandoffError::Inconsistent(why)));
                    }
                    self.done = true;
                    return Ok(None);
                }
                Ok((m, fds)) => self.take(m, fds).map_err(|why| abort(channel, why))?,
                Err(TransportError::Closed) => match lock_after_close(dir) {
                    Ok(Some(lock)) => return Ok(Some(lock)),
                    _ => return Err(HandoffError::ClosedKeepsServing { after_commit: false }),
                },
                Err(e) => return Err(abort(channel, HandoffError::waiting("the state")(e))),
            }
        }
    }

    /// One part of the state: the listeners, sessions, a RIB part or a
    /// peer's events.
    fn take(&mut self, message: Message, fds: Vec<OwnedFd>) -> Result<(), HandoffError> {
        let inconsistent = |why: String| Err(HandoffError::Inconsistent(why));
        match message {
            Message::Listeners => {
                // The BGP listener, then the admin one; a gateway with no
                // BGP listener passes the admin one alone.
                let mut fds = fds.into_iter();
                let listeners = match (fds.next(), fds.next(), fds.len()) {
                    (Some(admin), None, 0) => Listeners { bgp: None, admin },
                    (Some(bgp), Some(admin), 0) => Listeners { bgp: Some(bgp), admin },
                    (first, second, rest) => {
                        let n = usize::from(first.is_some()) + usize::from(second.is_some()) + rest;
                        return inconsistent(format!(
                            "LISTENERS came with {n} descriptors, not 1 or 2"
                        ));
                    }
                };
                self.listeners = Some(listeners);
                step("new:listeners");
            }
            Message::Monitors(collectors) => {
                if collectors.len() != fds.len() {
                    return inconsistent(format!(
                        "MONITORS of {} collectors came with {} descriptors",
                        collectors.len(),
                        fds.len()
                    ));
                }
                self.monitors = collectors.into_iter().zip(fds).collect();
                step("new:monitors");
            }
            Message::Verdicts(verdicts) => {
                if !fds.is_empty() {
                    return inconsistent(format!("VERDICTS came with {} descriptors", fds.len()));
                }
                self.verdicts = verdicts;
                step("new:verdicts");
            }
            Message::Sessions(states) => {
                if states.len() != fds.len() {
                    return inconsistent(format!(
                        "SESSIONS of {} came with {} descriptors",
                        states.len(),
                        fds.len()
                    ));
                }
                for s in &states {
                    if !self.peers.contains(&s.peer) {
                        return inconsistent(format!(
                            "a session with {}, not a peer in WELCOME",
                            s.peer
                        ));
                    }
                    if self.states.iter().any(|(t, _)| t.peer == s.peer) {
                        return inconsistent(format!("two sessions with {}", s.peer));
                    }
                }
                self.states.extend(states.into_iter().zip(fds));
                step("new:sessions");
            }
            Message::Rib { session, part, updates } => {
                let Some(table) = self.tables.get_mut(session as usize) else {
                    return inconsistent(format!(
                        "RIB for peer {session}; WELCOME named {}",
                        self.peers.len()
                    ));
                };
                self.bytes += updates.len();
                let peer = self.peers[session as usize];
                table
                    .apply(part, &updates)
                    .map_err(|source| HandoffError::BadState { peer: peer.to_string(), source })?;
            }
            Message::Events { session, json } => {
                let Some(peer) = self.peers.get(session as usize) else {
                    return inconsistent(format!(
                        "EVENTS for peer {session}; WELCOME named {}",
                        self.peers.len()
                    ));
                };
                self.events.push((*peer, json));
            }
            m => return Err(HandoffError::OutOfOrder(m.name())),
        }
        Ok(())
    }
}

fn adopted(
    state: SessionState,
    fd: OwnedFd,
    table: Table,
    complete: bool,
) -> Result<Adopted, HandoffError> {
    let negotiated = thaw(&state)
        .map_err(|source| HandoffError::BadState { peer: state.peer.to_string(), source })?;
    let Table { rib_in, sent, unread, unwritten } = table;
    let stream = std::net::TcpStream::from(fd);
    Ok(Adopted { negotiated, state, stream, rib_in, sent, unread, unwritten, complete })
}

/// Closes an adopted session we have no peer config for: Cease, Peer
/// De-configured (RFC 4486; a Hard Reset under the N-bit, so the router
/// does not keep our routes stale), after whatever the predecessor had
/// queued.
pub fn let_go(a: Adopted, message: &str) {
    let cease = crate::graceful::deconfigured(Some(&a.negotiated), message);
    let mut bytes = a.unwritten;
    bytes.extend(crate::wire::Message::Notification(cease).to_bytes(&a.negotiated.wire));
    let mut stream = a.stream;
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(&bytes);
    let _ = stream.shutdown(std::net::Shutdown::Both);
}
