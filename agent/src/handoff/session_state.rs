//! A live session frozen by the predecessor and thawed by the successor.
//!
//! The state carries both OPENs as they were sent; the successor negotiates
//! them again and gets the very same parameters (hold, keepalive, families,
//! encoding), so nothing about the session has to be trusted twice.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::protocol::{BadMessage, Feature, SessionState};
use crate::session::{LocalOffer, Negotiated, negotiate};
use crate::wire::{Message, Open, WireContext};

/// Where a session stood when it was frozen, besides what it negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frozen {
    pub peer: IpAddr,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub hold_remaining: Option<Duration>,
    pub keepalive_remaining: Option<Duration>,
    pub established_since_ms: u64,
    pub established_transitions: u64,
    pub features: BTreeSet<Feature>,
    /// CLOCK_MONOTONIC (ns) when the session was last read.
    pub frozen_at_ns: u64,
}

pub fn freeze(n: &Negotiated, at: Frozen) -> SessionState {
    let open = |o: &Open| Message::Open(o.clone()).to_bytes(&WireContext::BEFORE_OPEN);
    SessionState {
        peer: at.peer,
        local: at.local,
        remote: at.remote,
        local_open: open(&n.local_open),
        peer_open: open(&n.peer_open),
        keepalive_time: n.keepalive_time,
        hold_remaining_ms: at.hold_remaining.map(|d| d.as_millis() as u64),
        keepalive_remaining_ms: at.keepalive_remaining.map(|d| d.as_millis() as u64),
        established_since_ms: at.established_since_ms,
        established_transitions: at.established_transitions,
        features: at.features.into_iter().collect(),
        frozen_at_ns: at.frozen_at_ns,
    }
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the host,
/// so the pause is measured across the two agents.
pub fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64) * 1_000_000_000 + t.tv_nsec as u64
}

/// What the session negotiated, from its frozen state.
pub fn thaw(state: &SessionState) -> Result<Negotiated, BadMessage> {
    let open = |what: &str, bytes: &[u8]| match Message::decode(bytes, &WireContext::BEFORE_OPEN) {
        Ok((Message::Open(o), _)) => Ok(o),
        Ok((m, _)) => {
            Err(BadMessage(format!("{what} of {} is a {} message", state.peer, m.kind())))
        }
        Err(e) => Err(BadMessage(format!("{what} of {}: {e}", state.peer))),
    };
    let local = open("our OPEN", &state.local_open)?;
    let peer = open("the peer's OPEN", &state.peer_open)?;
    let offer = LocalOffer {
        asn: local.asn(),
        router_id: local.router_id,
        hold_time: local.hold_time,
        keepalive_time: Some(state.keepalive_time),
        peer_asn: peer.asn(),
        capabilities: local.capabilities.clone(),
    };
    negotiate(&offer, &peer).map_err(|(_, why)| {
        BadMessage(format!("the session with {} does not negotiate again: {why}", state.peer))
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Instant;

    use super::*;
    use crate::session::{Input, Output, Session, SessionConfig, State, Timer};
    use crate::wire::{AfiSafi, Capability, GracefulRestartCap, Update};

    fn negotiated() -> (LocalOffer, Negotiated) {
        let offer = LocalOffer {
            asn: 4_200_000_001,
            router_id: Ipv4Addr::new(10, 0, 0, 1),
            hold_time: 30,
            keepalive_time: Some(7),
            peer_asn: 65000,
            capabilities: vec![
                Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
                Capability::Multiprotocol(AfiSafi::IPV6_UNICAST),
                Capability::FourOctetAs(4_200_000_001),
                Capability::ExtendedMessage,
                Capability::GracefulRestart(GracefulRestartCap {
                    restarting: false,
                    notification: true,
                    restart_time: 120,
                    families: vec![],
                }),
            ],
        };
        let peer = Open::new(
            65000,
            90,
            Ipv4Addr::new(10, 0, 0, 2),
            vec![
                Capability::Multiprotocol(AfiSafi::IPV4_UNICAST),
                Capability::FourOctetAs(65000),
                Capability::ExtendedMessage,
            ],
        );
        let n = negotiate(&offer, &peer).unwrap();
        (offer, n)
    }

    fn frozen() -> Frozen {
        Frozen {
            peer: "10.0.0.2".parse().unwrap(),
            local: "10.0.0.1:40000".parse().unwrap(),
            remote: "10.0.0.2:179".parse().unwrap(),
            hold_remaining: Some(Duration::from_millis(12_345)),
            keepalive_remaining: Some(Duration::from_millis(4_321)),
            established_since_ms: 1_795_000_000_000,
            established_transitions: 2,
            features: [Feature::Ipv4Unicast, Feature::FourOctetAs].into(),
            frozen_at_ns: 42,
        }
    }

    #[test]
    fn a_session_negotiates_again_to_exactly_what_it_was() {
        let (_, n) = negotiated();
        assert_eq!((n.hold_time, n.keepalive_time), (30, 7));
        let state = freeze(&n, frozen());
        let wire = super::super::protocol::Message::Sessions(vec![state]).encode();
        let super::super::protocol::Message::Sessions(back) =
            super::super::protocol::Message::decode(&wire).unwrap()
        else {
            panic!()
        };
        assert_eq!(thaw(&back[0]).unwrap(), n);
        assert_eq!(back[0].hold_remaining_ms, Some(12_345));
        assert_eq!(back[0].keepalive_remaining_ms, Some(4_321));
    }

    #[test]
    fn damaged_opens_are_refused_naming_the_peer() {
        let (_, n) = negotiated();
        let mut state = freeze(&n, frozen());
        state.peer_open.truncate(20);
        let err = thaw(&state).unwrap_err().0;
        assert!(err.contains("the peer's OPEN of 10.0.0.2"), "{err}");
        let mut state = freeze(&n, frozen());
        state.local_open = Message::Keepalive.to_bytes(&WireContext::BEFORE_OPEN);
        let err = thaw(&state).unwrap_err().0;
        assert!(err.contains("our OPEN of 10.0.0.2 is a keepalive message"), "{err}");
    }

    /// An adopted session keeps the hold time and the keepalive time it had
    /// left; from a predecessor that did not say when its next KEEPALIVE was
    /// due, it sends one at once and waits the full keepalive time. Then it
    /// carries on like any Established session.
    #[test]
    fn an_adopted_session_is_established_and_carries_on() {
        let ms = Duration::from_millis;
        let hold = Output::ArmTimer(Timer::Hold, ms(12_345));
        let cases = [
            (Some(ms(4_321)), vec![hold.clone(), Output::ArmTimer(Timer::Keepalive, ms(4_321))]),
            (Some(ms(0)), vec![hold.clone(), Output::ArmTimer(Timer::Keepalive, ms(0))]),
            (
                None,
                vec![
                    Output::Send(crate::wire::Message::Keepalive),
                    hold.clone(),
                    Output::ArmTimer(Timer::Keepalive, Duration::from_secs(7)),
                ],
            ),
        ];
        for (keepalive_remaining, expected) in cases {
            let (offer, n) = negotiated();
            let config =
                SessionConfig { offer, connect_retry: Duration::from_secs(5), passive: false };
            let (_, out) =
                Session::adopt(config, n, Some(ms(12_345)), keepalive_remaining, Instant::now(), 2);
            assert_eq!(out, expected, "keepalive due in {keepalive_remaining:?}");
        }
        let (offer, n) = negotiated();
        let config = SessionConfig { offer, connect_retry: Duration::from_secs(5), passive: false };
        let (mut s, _) = Session::adopt(config, n, Some(ms(12_345)), None, Instant::now(), 2);
        assert_eq!((s.state(), s.established_transitions()), (State::Established, 2));
        assert!(s.wire_context().four_octet_as && s.wire_context().extended_messages);
        let out = s.handle(
            Input::Received(crate::wire::Message::Update(Update::default()), vec![]),
            Instant::now(),
        );
        assert!(matches!(out[1], Output::Update(..)));
        let out = s.handle(Input::TimerFired(Timer::Hold), Instant::now());
        assert!(out.iter().any(|o| matches!(o, Output::Down { .. })));
    }
}
