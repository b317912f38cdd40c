//! The BGP session state machine (RFC 4271 §8), sans I/O.
//!
//! ```text
//!   inputs: Start, Stop, TcpConnected, TcpFailed, Received(msg), Undecodable, TimerFired
//!                                   │
//!        Idle ─▶ Connect ⇄ Active ─▶ OpenSent ─▶ OpenConfirm ─▶ Established
//!                                   │
//!   outputs: Connect, Send(msg), ArmTimer/CancelTimer, Established(Negotiated),
//!            Update(..), RefreshRequested(..), Down { reason, sent }
//! ```
//!
//! No sockets, no clock: the caller owns the connection and the timers, feeds
//! what happened in, and carries out the outputs in order. One `Session` is one
//! connection's life; two connections racing for the same peer are settled by
//! [`resolve_collision`].

mod negotiate;

use std::time::{Duration, Instant};

pub use negotiate::{Collision, LocalOffer, Negotiated, negotiate, resolve_collision};

use crate::wire::{
    AfiSafi, DecodeError, Malformed, Message, Notification, Open, RefreshSubtype, Update,
    WireContext, code,
};

/// RFC 4271 §8.2.2: the hold time used until the OPENs are exchanged.
pub const LARGE_HOLD_TIME: Duration = Duration::from_secs(240);

/// The RFC 4271 §8 states, as `status` shows them ("Established", …).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum State {
    #[default]
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    Hold,
    Keepalive,
}

// Received messages are most inputs; see `wire::Message` for why not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Start (or restart) the session: dial, or wait for the peer if passive.
    Start,
    /// Stop the session, sending this NOTIFICATION if a connection is up.
    Stop(Notification),
    /// A TCP connection to the peer is up (dialled or accepted).
    TcpConnected,
    /// The connection failed or was closed by the peer.
    TcpFailed,
    Received(Message, Vec<Malformed>),
    /// The peer sent something that could not be decoded.
    Undecodable(DecodeError),
    TimerFired(Timer),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Dial the peer.
    Connect,
    Send(Message),
    ArmTimer(Timer, Duration),
    CancelTimer(Timer),
    Established(Box<Negotiated>),
    /// An UPDATE for the RIB, with its RFC 7606 findings.
    Update(Update, Vec<Malformed>),
    /// The peer asked for our routes of a family again.
    RefreshRequested(AfiSafi),
    /// The connection is finished: close it. `sent` is the NOTIFICATION we
    /// sent, `received` the one the peer sent, if any.
    Down {
        reason: DownReason,
        sent: Option<Notification>,
        received: Option<Notification>,
    },
}

/// Why a session went down; shown as the peer's last error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We stopped it: shutdown, decommission, or a reset of ours.
    Stopped,
    /// A connection came while Idle, which RFC 4271 §8.2.2 refuses.
    ConnectionWhileIdle,
    /// Their OPEN could not be accepted: what was wrong with it.
    OpenRefused(String),
    /// The peer sent a NOTIFICATION.
    PeerNotification(Notification),
    /// What the peer sent could not be decoded: what was wrong.
    Malformed(String),
    HoldTimerExpired,
    /// The connection closed or failed under us.
    ConnectionClosed,
    /// A message this state does not take (RFC 6608 says which state).
    Unexpected {
        message: &'static str,
        state: &'static str,
    },
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Stopped => f.write_str("stopped"),
            DownReason::ConnectionWhileIdle => f.write_str("connection while Idle"),
            DownReason::OpenRefused(why) | DownReason::Malformed(why) => f.write_str(why),
            DownReason::PeerNotification(n) => write!(f, "peer sent {n}"),
            DownReason::HoldTimerExpired => f.write_str("hold timer expired"),
            DownReason::ConnectionClosed => f.write_str("connection closed by peer"),
            DownReason::Unexpected { message, state } => {
                write!(f, "unexpected {message} in {state}")
            }
        }
    }
}

/// How a session behaves, fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    pub offer: LocalOffer,
    pub connect_retry: Duration,
    /// Never dial; wait for the peer.
    pub passive: bool,
}

/// One BGP session.
#[derive(Debug)]
pub struct Session {
    config: SessionConfig,
    state: State,
    negotiated: Option<Negotiated>,
    stopped: bool,
    established_at: Option<Instant>,
    established_transitions: u64,
}

impl Session {
    pub fn new(config: SessionConfig) -> Self {
        Self {
            config,
            state: State::Idle,
            negotiated: None,
            stopped: true,
            established_at: None,
            established_transitions: 0,
        }
    }

    /// A session taken over from a predecessor agent (the handoff): already
    /// Established with what both sides negotiated. The outputs arm the hold
    /// timer with what was left of it (or the full hold time) and the
    /// keepalive timer with what was left of it. A predecessor that did not
    /// say when its next KEEPALIVE was due gets one sent at once and the
    /// full keepalive time: the peer hears from us before its hold timer
    /// could run out either way, and a thousand sessions taken over do not
    /// each send an unneeded KEEPALIVE inside the handoff's pause.
    pub fn adopt(
        config: SessionConfig,
        negotiated: Negotiated,
        hold_remaining: Option<Duration>,
        keepalive_remaining: Option<Duration>,
        established_at: Instant,
        established_transitions: u64,
    ) -> (Session, Vec<Output>) {
        let mut out = Vec::new();
        if keepalive_remaining.is_none() {
            out.push(Output::Send(Message::Keepalive));
        }
        if negotiated.hold_time > 0 {
            let hold = hold_remaining.unwrap_or_else(|| secs(negotiated.hold_time));
            let keepalive = keepalive_remaining.unwrap_or_else(|| secs(negotiated.keepalive_time));
            out.push(Output::ArmTimer(Timer::Hold, hold));
            out.push(Output::ArmTimer(Timer::Keepalive, keepalive));
        }
        let session = Session {
            config,
            state: State::Established,
            negotiated: Some(negotiated),
            stopped: false,
            established_at: Some(established_at),
            established_transitions,
        };
        (session, out)
    }

    /// Whether the session dials after it goes down; a connection accepted
    /// from the peer that wins a collision takes the peer's setting.
    pub fn set_passive(&mut self, passive: bool) {
        self.config.passive = passive;
    }

    /// The offer made in the next OPEN (to drop the R-bit after a restart).
    pub fn offer_mut(&mut self) -> &mut LocalOffer {
        &mut self.config.offer
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn config(&self) -> &SessionConfig {
        &self.config
    }

    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// How to decode what the peer sends now.
    pub fn wire_context(&self) -> WireContext {
        self.negotiated.as_ref().map_or(WireContext::BEFORE_OPEN, |n| n.wire)
    }

    pub fn established_at(&self) -> Option<Instant> {
        self.established_at
    }

    /// How many times this session reached Established.
    pub fn established_transitions(&self) -> u64 {
        self.established_transitions
    }

    /// Feeds one event; returns what to do, in order.
    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        match (self.state, input) {
            (_, Input::Start) => {
                self.stopped = false;
                if self.state == State::Idle {
                    self.start(&mut out);
                }
            }
            (_, Input::Stop(notification)) => self.stop(notification, &mut out),
            (State::Idle, Input::TimerFired(Timer::ConnectRetry)) if !self.stopped => {
                self.start(&mut out);
            }
            (State::Idle, Input::TcpConnected) => {
                // RFC 4271 §8.2.2: Idle refuses connections.
                out.push(Output::Down {
                    reason: DownReason::ConnectionWhileIdle,
                    sent: None,
                    received: None,
                });
            }
            (State::Idle, _) => {}
            (State::Connect | State::Active, Input::TcpConnected) => {
                out.push(Output::CancelTimer(Timer::ConnectRetry));
                out.push(Output::Send(Message::Open(self.config.offer.open())));
                out.push(Output::ArmTimer(Timer::Hold, LARGE_HOLD_TIME));
                self.state = State::OpenSent;
            }
            (State::Connect, Input::TcpFailed) => {
                out.push(Output::ArmTimer(Timer::ConnectRetry, self.config.connect_retry));
                self.state = State::Active;
            }
            (State::Connect | State::Active, Input::TimerFired(Timer::ConnectRetry)) => {
                if self.config.passive {
                    out.push(Output::ArmTimer(Timer::ConnectRetry, self.config.connect_retry));
                } else {
                    self.dial(&mut out);
                }
            }
            (State::Connect | State::Active, _) => {}
            (State::OpenSent, Input::Received(Message::Open(open), _)) => {
                self.open_received(&open, &mut out)
            }
            (State::OpenConfirm, Input::Received(Message::Keepalive, _)) => {
                self.establish(now, &mut out)
            }
            (State::Established, Input::Received(Message::Keepalive, _)) => {
                self.rearm_hold(&mut out)
            }
            (State::Established, Input::Received(Message::Update(update), malformed)) => {
                self.rearm_hold(&mut out);
                out.push(Output::Update(update, malformed));
            }
            (State::Established, Input::Received(Message::RouteRefresh(rr), _)) => {
                self.rearm_hold(&mut out);
                if rr.subtype == RefreshSubtype::Request {
                    out.push(Output::RefreshRequested(rr.family));
                }
            }
            (State::OpenConfirm | State::Established, Input::TimerFired(Timer::Keepalive)) => {
                out.push(Output::Send(Message::Keepalive));
                if let Some(n) = &self.negotiated {
                    out.push(Output::ArmTimer(Timer::Keepalive, secs(n.keepalive_time)));
                }
            }
            (_, Input::Received(Message::Notification(n), _)) => {
                self.down(&mut out, DownReason::PeerNotification(n.clone()), None, Some(n));
            }
            (_, Input::Undecodable(err)) => {
                let why = DownReason::Malformed(err.detail.clone());
                self.down(&mut out, why, Some(err.notification), None);
            }
            (_, Input::TimerFired(Timer::Hold)) => {
                let n = Notification::new(code::HOLD_TIMER_EXPIRED, 0, []);
                self.down(&mut out, DownReason::HoldTimerExpired, Some(n), None);
            }
            (_, Input::TcpFailed) => self.down(&mut out, DownReason::ConnectionClosed, None, None),
            (state, Input::Received(m, _)) => self.unexpected(state, &m, &mut out),
            (_, Input::TcpConnected | Input::TimerFired(_)) => {}
        }
        out
    }

    fn stop(&mut self, notification: Notification, out: &mut Vec<Output>) {
        self.stopped = true;
        let connected =
            matches!(self.state, State::OpenSent | State::OpenConfirm | State::Established);
        let sent = connected.then_some(notification);
        self.down(out, DownReason::Stopped, sent, None);
    }

    /// The peer's OPEN in OpenSent: what both sides agree on, or why not.
    fn open_received(&mut self, open: &Open, out: &mut Vec<Output>) {
        match negotiate(&self.config.offer, open) {
            Ok(n) => {
                out.push(Output::Send(Message::Keepalive));
                self.arm_session_timers(&n, out);
                self.negotiated = Some(n);
                self.state = State::OpenConfirm;
            }
            Err((notification, why)) => {
                self.down(out, DownReason::OpenRefused(why), Some(notification), None)
            }
        }
    }

    /// The KEEPALIVE that confirms our OPEN.
    fn establish(&mut self, now: Instant, out: &mut Vec<Output>) {
        let n = self.negotiated.clone().expect("negotiated in OpenSent");
        self.rearm_hold(out);
        self.state = State::Established;
        self.established_at = Some(now);
        self.established_transitions += 1;
        out.push(Output::Established(Box::new(n)));
    }

    /// A message the state does not expect: an FSM error, with the state
    /// it arrived in as its subcode (RFC 6608).
    fn unexpected(&mut self, state: State, m: &Message, out: &mut Vec<Output>) {
        let sub = match state {
            State::OpenSent => 1,
            State::OpenConfirm => 2,
            _ => 3,
        };
        let n = Notification::new(code::FSM, sub, []);
        let why = DownReason::Unexpected { message: m.kind(), state: state.as_str() };
        self.down(out, why, Some(n), None);
    }

    fn start(&mut self, out: &mut Vec<Output>) {
        if self.config.passive {
            self.state = State::Active;
            out.push(Output::ArmTimer(Timer::ConnectRetry, self.config.connect_retry));
        } else {
            self.dial(out);
        }
    }

    fn dial(&mut self, out: &mut Vec<Output>) {
        self.state = State::Connect;
        out.push(Output::Connect);
        out.push(Output::ArmTimer(Timer::ConnectRetry, self.config.connect_retry));
    }

    fn arm_session_timers(&self, n: &Negotiated, out: &mut Vec<Output>) {
        if n.hold_time == 0 {
            out.push(Output::CancelTimer(Timer::Hold));
        } else {
            out.push(Output::ArmTimer(Timer::Hold, secs(n.hold_time)));
            out.push(Output::ArmTimer(Timer::Keepalive, secs(n.keepalive_time)));
        }
    }

    fn rearm_hold(&self, out: &mut Vec<Output>) {
        if let Some(n) = self.negotiated.as_ref().filter(|n| n.hold_time > 0) {
            out.push(Output::ArmTimer(Timer::Hold, secs(n.hold_time)));
        }
    }

    fn down(
        &mut self,
        out: &mut Vec<Output>,
        reason: DownReason,
        sent: Option<Notification>,
        received: Option<Notification>,
    ) {
        if let Some(n) = &sent {
            out.push(Output::Send(Message::Notification(n.clone())));
        }
        for t in [Timer::Hold, Timer::Keepalive, Timer::ConnectRetry] {
            out.push(Output::CancelTimer(t));
        }
        out.push(Output::Down { reason, sent, received });
        self.state = State::Idle;
        self.negotiated = None;
        self.established_at = None;
        if !self.stopped {
            // Automatic restart after the connect-retry time (RFC 4271 §8.1.1).
            out.push(Output::ArmTimer(Timer::ConnectRetry, self.config.connect_retry));
        }
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
