//! A peer task's connections: dialling, accepting, reading whole messages
//! off the socket, and RFC 4271 §6.8 when the peer and we dial each other.

use super::*;

impl PeerTask {
    /// A connection from the peer (RFC 4271 §6.8 when one is already up).
    pub(super) async fn accept(&mut self, stream: TcpStream) {
        if self.peer.ttl_security {
            let v6 = stream.local_addr().is_ok_and(|a| a.is_ipv6());
            let min = 255 - self.peer.ebgp_multihop.unwrap_or(1) + 1;
            let gtsm =
                sockopt::ttl(&stream, v6, 255).and_then(|()| sockopt::min_ttl(&stream, v6, min));
            if let Err(e) = gtsm {
                warn!(peer = %self.peer.address, "cannot apply GTSM to the accepted connection: {e}");
            }
        }
        let Ok(conn) = Conn::new(stream) else { return };
        if self.held_until().is_some() {
            // Reset for its prefix limit: not before restartAfter.
            debug!(peer = %self.peer.address, "refusing a connection: held down for maxPrefixes");
            let mut conn = conn;
            let cease = Notification::new(code::CEASE, subcode::CONNECTION_REJECTED, []);
            conn.queue(&Message::Notification(cease).to_bytes(&Default::default()));
            tokio::spawn(conn.close(Duration::from_secs(1)));
            return;
        }
        match self.main.session.state() {
            State::Idle | State::Connect | State::Active if !self.stopping => {
                if let Some(dial) = self.main.dial.take() {
                    dial.abort();
                }
                if self.main.session.state() == State::Idle {
                    self.feed(Which::Main, Input::Start).await;
                    if let Some(dial) = self.main.dial.take() {
                        dial.abort();
                    }
                }
                self.main.conn = Some(conn);
                self.feed(Which::Main, Input::TcpConnected).await;
            }
            State::OpenSent | State::OpenConfirm if self.inbound.is_none() => {
                debug!(peer = %self.peer.address, "connection collision: keeping both until the OPENs decide");
                let mut slot =
                    Slot::new(Session::new(session_config(&self.peer, &self.local, true)));
                slot.conn = Some(conn);
                self.inbound = Some(slot);
                self.feed(Which::Inbound, Input::Start).await;
                self.feed(Which::Inbound, Input::TcpConnected).await;
            }
            _ => {
                // RFC 4271 §6.8: an Established session keeps priority over a new
                // connection; anything else (stopping, a collision already being
                // settled) simply refuses it.
                let established = self.main.session.state() == State::Established;
                debug!(peer = %self.peer.address, established, "refusing a second connection");
                let mut conn = conn;
                let sub = if established {
                    subcode::CONNECTION_COLLISION_RESOLUTION
                } else {
                    subcode::CONNECTION_REJECTED
                };
                let cease = Notification::new(code::CEASE, sub, []);
                conn.queue(&Message::Notification(cease).to_bytes(&Default::default()));
                tokio::spawn(conn.close(Duration::from_secs(1)));
            }
        }
    }

    pub(super) async fn on_dialled(&mut self, result: io::Result<TcpStream>) {
        if self.main.session.state() != State::Connect || self.main.conn.is_some() {
            return; // late: the peer's own connection won, or we gave up
        }
        match result.and_then(Conn::new) {
            Ok(conn) => {
                self.main.conn = Some(conn);
                self.feed(Which::Main, Input::TcpConnected).await;
            }
            Err(e) => {
                self.note_dial_failure(&e);
                self.feed(Which::Main, Input::TcpFailed).await;
            }
        }
    }

    /// Records why a dial failed, with what to check when MD5 is on.
    pub(super) fn note_dial_failure(&mut self, e: &io::Error) {
        let hint = if self.password.is_some() && e.kind() == io::ErrorKind::TimedOut {
            " (TCP MD5 is on: a password mismatch drops packets without a word; \
             check the password on both sides)"
        } else {
            ""
        };
        self.last_error = Some(format!("connecting to {}: {e}{hint}", self.peer.address));
        self.metrics.error(self.peer.address, ErrorKind::Transport);
    }

    pub(super) async fn on_read(&mut self, which: Which, result: io::Result<usize>) {
        match result {
            Ok(0) | Err(_) => {
                if let Err(e) = &result {
                    self.last_error = Some(format!("reading: {e}"));
                    self.metrics.error(self.peer.address, ErrorKind::Transport);
                }
                self.feed(which, Input::TcpFailed).await;
            }
            Ok(_) => self.drain(which).await,
        }
    }

    /// The slot that now holds connection `id`, if any: a collision can move
    /// a connection from the inbound slot to the main one while it is read.
    pub(super) fn holder(&self, id: u64) -> Option<Which> {
        let holds =
            |slot: Option<&Slot>| slot.and_then(|s| s.conn.as_ref()).is_some_and(|c| c.id == id);
        if holds(Some(&self.main)) {
            Some(Which::Main)
        } else if holds(self.inbound.as_ref()) {
            Some(Which::Inbound)
        } else {
            None
        }
    }

    /// Decodes and handles every whole message in the slot's read buffer.
    pub(super) async fn drain(&mut self, which: Which) {
        let Some(id) = self.slot(which).and_then(|s| s.conn.as_ref()).map(|c| c.id) else {
            return;
        };
        let mut consumed = 0;
        loop {
            // Follow the connection; stop if it was closed by what we fed.
            let Some(which) = self.holder(id) else { return };
            let slot = self.slot(which).expect("holder found it");
            let ctx = slot.session.wire_context();
            let conn = slot.conn.as_mut().expect("holder found it");
            let buf = &conn.rbuf[consumed..];
            let input = match frame(buf, &ctx) {
                Ok(None) => break,
                Ok(Some(h)) if buf.len() < h.len => break,
                Ok(Some(h)) => {
                    let decoded = Message::decode_framed(h, &buf[HEADER_LEN..h.len], &ctx);
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
                self.series.message(Direction::Received, MessageKind::of(m)).inc();
                for bad in malformed {
                    warn!(peer = %self.peer.address, attr = bad.attr, action = ?bad.action, "{}", bad.reason);
                    self.metrics.error(self.peer.address, ErrorKind::MalformedAttribute);
                }
            }
            if let Input::Undecodable(e) = &input {
                self.note_decode_error(e);
            }
            self.feed(which, input).await;
            if fatal {
                return;
            }
        }
        if let Some(which) = self.holder(id)
            && let Some(conn) = self.slot(which).and_then(|s| s.conn.as_mut())
        {
            conn.rbuf.drain(..consumed);
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
            if let Some(dial) = self.main.dial.take() {
                dial.abort();
            }
            self.main = slot;
        }
    }

    /// RFC 4271 §6.8, once the OPENs tell both identifiers.
    pub(super) async fn check_collision(&mut self) {
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
                info!(peer = %self.peer.address, "collision: keeping the peer's connection");
                Box::pin(self.feed(Which::Main, Input::Stop(cease))).await;
                self.promote_inbound();
            }
            Collision::KeepOutbound => {
                info!(peer = %self.peer.address, "collision: keeping our connection");
                Box::pin(self.feed(Which::Inbound, Input::Stop(cease))).await;
                self.inbound = None;
            }
        }
    }

    pub(super) fn spawn_dial(&self) -> JoinHandle<io::Result<TcpStream>> {
        let remote = SocketAddr::new(self.peer.address, self.peer.port);
        let local = self.peer.local_address;
        let timeout = Duration::from_secs(u64::from(self.peer.connect_retry_time));
        let password = self.password.clone();
        let (gtsm, multihop) = (self.peer.ttl_security, self.peer.ebgp_multihop);
        tokio::spawn(async move {
            let v6 = remote.is_ipv6();
            let socket = if v6 { TcpSocket::new_v6()? } else { TcpSocket::new_v4()? };
            if let Some(key) = &password {
                sockopt::md5(&socket, v6, remote.ip(), key)?;
            }
            if gtsm {
                // RFC 5082: send with 255, accept only what a direct neighbour sends.
                sockopt::ttl(&socket, v6, 255)?;
                sockopt::min_ttl(&socket, v6, 255 - multihop.unwrap_or(1) + 1)?;
            } else if let Some(hops) = multihop {
                sockopt::ttl(&socket, v6, hops)?;
            }
            if let Some(ip) = local {
                socket.bind(SocketAddr::new(ip, 0))?;
            }
            tokio::time::timeout(timeout, socket.connect(remote))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
        })
    }
}
