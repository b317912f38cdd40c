//! The core's connections: a dial's outcome, an accepted connection,
//! whole messages framed off the bytes read, and RFC 4271 §6.8 when the
//! peer and we dial each other.

use std::io;
use std::time::Duration;

use tracing::{debug, warn};

use super::core::{ConnId, ConnInfo, PeerCore, PeerEffect, Slot, Which};
use super::session_config;
use crate::session::{Collision, Input, Session, State, resolve_collision};
use crate::speaker::status::{Direction, ErrorKind, MessageKind, SessionEventKind};
use crate::wire::{DecodeError, HEADER_LEN, Message, Notification, code, frame, subcode};

impl PeerCore {
    /// A connection from the peer (RFC 4271 §6.8 when one is already up).
    pub(super) fn accept(&mut self, conn: ConnInfo) {
        if self.held_until().is_some() {
            // Reset for its prefix limit: not before restartAfter.
            debug!(peer = %self.peer.address, "refusing a connection: held down for maxPrefixes");
            self.refuse(conn.id, subcode::CONNECTION_REJECTED);
            return;
        }
        match self.main.session.state() {
            State::Idle | State::Connect | State::Active if !self.stopping => {
                self.cancel_dial();
                if self.main.session.state() == State::Idle {
                    self.feed(Which::Main, Input::Start);
                    self.cancel_dial();
                }
                self.main.conn = Some(conn);
                self.feed(Which::Main, Input::TcpConnected);
            }
            State::OpenSent | State::OpenConfirm if self.inbound.is_none() => {
                debug!(peer = %self.peer.address, "connection collision: keeping both until the OPENs decide");
                let mut slot =
                    Slot::new(Session::new(session_config(&self.peer, &self.local, true)));
                slot.conn = Some(conn);
                self.inbound = Some(slot);
                self.feed(Which::Inbound, Input::Start);
                self.feed(Which::Inbound, Input::TcpConnected);
            }
            _ => {
                // RFC 4271 §6.8: an Established session keeps priority over a new
                // connection; anything else (stopping, a collision already being
                // settled) simply refuses it.
                let established = self.main.session.state() == State::Established;
                debug!(peer = %self.peer.address, established, "refusing a second connection");
                let sub = if established {
                    subcode::CONNECTION_COLLISION_RESOLUTION
                } else {
                    subcode::CONNECTION_REJECTED
                };
                self.refuse(conn.id, sub);
            }
        }
    }

    /// Sends Cease with `subcode` on a connection the core does not take.
    fn refuse(&mut self, conn: ConnId, subcode: u8) {
        let cease = Notification::new(code::CEASE, subcode, []);
        let bytes = Message::Notification(cease).to_bytes(&Default::default());
        self.effects.push(PeerEffect::Send { conn, bytes });
        self.effects.push(PeerEffect::Close { conn, linger: Duration::from_secs(1) });
    }

    pub(super) fn on_dialled(&mut self, result: io::Result<ConnInfo>) {
        self.dialling = false;
        let late = self.main.session.state() != State::Connect || self.main.conn.is_some();
        match result {
            // Late: the peer's own connection won, or we gave up.
            Ok(conn) if late => {
                self.effects.push(PeerEffect::Close { conn: conn.id, linger: Duration::ZERO });
            }
            Err(_) if late => {}
            Ok(conn) => {
                self.main.conn = Some(conn);
                self.feed(Which::Main, Input::TcpConnected);
            }
            Err(e) => {
                self.note_dial_failure(&e);
                self.feed(Which::Main, Input::TcpFailed);
            }
        }
    }

    /// Records why a dial failed, with what to check when MD5 is on.
    pub(super) fn note_dial_failure(&mut self, e: &io::Error) {
        let hint = if self.md5 && e.kind() == io::ErrorKind::TimedOut {
            " (TCP MD5 is on: a password mismatch drops packets without a word; \
             check the password on both sides)"
        } else {
            ""
        };
        let error = format!("connecting to {}: {e}{hint}", self.peer.address);
        self.log.record(self.now, SessionEventKind::Connection, error.clone());
        self.last_error = Some(error);
        self.metrics.error(self.peer.address, ErrorKind::Transport);
    }

    /// A connection ended under us: its session fails over TCP.
    pub(super) fn on_closed(&mut self, conn: ConnId, error: Option<String>) {
        let Some(which) = self.holder(conn) else { return };
        if let Some(e) = error {
            // A live session's broken connection is news; an attempt that
            // fails is told once by its Down (repeats collapse).
            if which == Which::Main && self.main.session.state() == State::Established {
                self.note(SessionEventKind::Connection, e.clone());
            }
            self.last_error = Some(e);
            self.metrics.error(self.peer.address, ErrorKind::Transport);
        }
        self.feed(which, Input::TcpFailed);
        // A session that went down closed it already; no state keeps a dead one.
        if let Some(which) = self.holder(conn)
            && let Some(slot) = self.slot(which)
        {
            slot.conn = None;
            self.effects.push(PeerEffect::Abort { conn });
        }
    }

    /// The slot that now holds connection `id`, if any: a collision can move
    /// a connection from the inbound slot to the main one while it is read.
    pub(super) fn holder(&self, id: ConnId) -> Option<Which> {
        let holds = |slot: Option<&Slot>| slot.and_then(|s| s.conn).is_some_and(|c| c.id == id);
        if holds(Some(&self.main)) {
            Some(Which::Main)
        } else if holds(self.inbound.as_ref()) {
            Some(Which::Inbound)
        } else {
            None
        }
    }

    /// Handles every whole message at the start of `buf`, read from `conn`:
    /// how many bytes it took (the rest is the start of the next message)
    /// and what to do.
    pub fn receive(
        &mut self,
        conn: ConnId,
        buf: &[u8],
        now: std::time::Instant,
    ) -> (usize, Vec<PeerEffect>) {
        self.now = now;
        // Counted here and added once per read: an atomic add per message
        // fenced the table's stores on every UPDATE of a full table.
        let mut received = [0u64; MessageKind::ALL.len()];
        let consumed = self.frame_all(conn, buf, &mut received);
        for (kind, n) in MessageKind::ALL.into_iter().zip(received).filter(|(_, n)| *n > 0) {
            self.series.message(Direction::Received, kind).inc_by(n);
        }
        (consumed, std::mem::take(&mut self.effects))
    }

    fn frame_all(&mut self, id: ConnId, buf: &[u8], received: &mut [u64]) -> usize {
        let mut consumed = 0;
        loop {
            // Follow the connection; stop if it was closed by what we fed.
            let Some(which) = self.holder(id) else { return consumed };
            let ctx = self.slot(which).expect("holder found it").session.wire_context();
            let rest = &buf[consumed..];
            let input = match frame(rest, &ctx) {
                Ok(None) => return consumed,
                Ok(Some(h)) if rest.len() < h.len => return consumed,
                Ok(Some(h)) => {
                    let decoded = Message::decode_framed(h, &rest[HEADER_LEN..h.len], &ctx);
                    consumed += h.len;
                    match decoded {
                        Ok((m, malformed)) => Input::Received(m, malformed),
                        Err(e) => Input::Undecodable(e),
                    }
                }
                Err(e) => Input::Undecodable(e),
            };
            let fatal = matches!(input, Input::Undecodable(_));
            if let Input::Received(m, malformed) = &input {
                self.messages_received += 1;
                received[MessageKind::of(m) as usize] += 1;
                for bad in malformed {
                    warn!(peer = %self.peer.address, attr = bad.attr, action = ?bad.action, "{}", bad.reason);
                    self.metrics.error(self.peer.address, ErrorKind::MalformedAttribute);
                }
            }
            if let Input::Undecodable(e) = &input {
                self.note_decode_error(e);
            }
            self.feed(which, input);
            if fatal {
                return consumed;
            }
        }
    }

    pub(super) fn note_decode_error(&mut self, e: &DecodeError) {
        warn!(peer = %self.peer.address, "{e}");
        self.last_error = Some(e.to_string());
        self.metrics.error(self.peer.address, ErrorKind::Decode);
    }

    /// The inbound connection won the collision: it becomes the main one.
    pub(super) fn promote_inbound(&mut self) {
        if let Some(mut slot) = self.inbound.take() {
            slot.session.set_passive(self.peer.passive);
            self.cancel_dial();
            self.main = slot;
        }
    }

    /// RFC 4271 §6.8, once the OPENs tell both identifiers.
    pub(super) fn check_collision(&mut self) {
        let Some(inbound) = &self.inbound else { return };
        let (a, b) = (self.main.session.state(), inbound.session.state());
        let opening = |s| matches!(s, State::OpenSent | State::OpenConfirm);
        if !(opening(a) && opening(b)) || !(a == State::OpenConfirm || b == State::OpenConfirm) {
            if !opening(a) && b == State::OpenConfirm {
                self.promote_inbound();
            }
            return;
        }
        let remote = [&self.main.session, &inbound.session]
            .iter()
            .find_map(|s| s.negotiated().map(|n| n.peer_router_id))
            .expect("one side is in OpenConfirm");
        let cease = Notification::new(code::CEASE, subcode::CONNECTION_COLLISION_RESOLUTION, []);
        match resolve_collision(self.local.router_id, remote) {
            Collision::KeepInbound => {
                self.note(
                    SessionEventKind::Collision,
                    format!("keeping the peer's connection (its router ID {remote} is higher)"),
                );
                self.feed(Which::Main, Input::Stop(cease));
                self.promote_inbound();
            }
            Collision::KeepOutbound => {
                self.note(
                    SessionEventKind::Collision,
                    format!("keeping our connection (our router ID is higher than {remote})"),
                );
                self.feed(Which::Inbound, Input::Stop(cease));
                self.inbound = None;
            }
        }
    }
}
