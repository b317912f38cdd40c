//! The node's default routes, read from the kernel over rtnetlink: for
//! peers whose address is the next hop of the node's default route
//! (`addressFrom.defaultGateway`). The agent runs in the node's network,
//! so its main routing table is the node's. Which route and next hop a
//! peer dials is [`crate::config::DefaultGateway::addresses`]'s to say;
//! when a change is acted on, [`Hold`]'s.

use std::io;
use std::net::IpAddr;
use std::time::Duration;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::config::{DefaultRoute, IpFamily};

/// How often a dump the kernel interrupted (the table changed while it
/// was read) is read again before the read fails.
const TRIES: usize = 3;

/// How long the kernel may take to answer: the agent's main loop waits.
const ANSWER_WITHIN: Duration = Duration::from_secs(2);

/// The default routes of the node's main table, both families. A dump
/// the kernel marks interrupted may have missed routes, and a route
/// missed would let a session go: it is read again, and after [`TRIES`]
/// it is an error (the running peers are kept).
pub fn read() -> io::Result<Vec<DefaultRoute>> {
    for _ in 0..TRIES {
        if let Some(routes) = dump()? {
            return Ok(routes);
        }
    }
    Err(io::Error::other(format!("the routing table changed during each of {TRIES} reads")))
}

/// One dump: None when the kernel says it was interrupted.
fn dump() -> io::Result<Option<Vec<DefaultRoute>>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    rustix::net::sockopt::set_socket_timeout(
        &socket,
        rustix::net::sockopt::Timeout::Recv,
        Some(ANSWER_WITHIN),
    )?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    let request = RouteNetlinkMessage::GetRoute(RouteMessage::default());
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let mut routes = Vec::new();
    let mut interrupted = false;
    loop {
        let (bytes, _) = socket.recv_from_full()?;
        let mut at = 0;
        while at < bytes.len() {
            let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[at..])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            interrupted |= message.header.flags & NLM_F_DUMP_INTR != 0;
            match message.payload {
                NetlinkPayload::Done(_) => return Ok((!interrupted).then_some(routes)),
                NetlinkPayload::Error(e) => {
                    return Err(e.to_io());
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => {
                    routes.extend(default_route(&route));
                }
                _ => {}
            }
            let length = message.header.length as usize;
            if length == 0 {
                break;
            }
            at += length;
        }
    }
}

/// Holds a change of the node's default routes until the next look
/// agrees. A network daemon that takes a route away and puts it back (a
/// DHCP client or a network manager restarting) must not cost a session,
/// and with it our routes at the router, when one look fell in between.
/// A change that lasts is acted on one look later.
#[derive(Debug, Default)]
pub struct Hold {
    /// What the last look read, where it differed from what is acted on.
    seen: Option<Vec<DefaultRoute>>,
}

/// What a look at the node's default routes comes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// As acted on.
    Same,
    /// Changed since the last look: held until the next one agrees.
    Held,
    /// As acted on again, after a look that saw them changed.
    Back,
    /// Changed, and the last look saw the same: act on it.
    Settled,
}

impl Hold {
    /// Compares what a look `read` with what the running peers were
    /// chosen by (`acted`).
    pub fn look(&mut self, acted: &[DefaultRoute], read: &[DefaultRoute]) -> Look {
        if read == acted {
            return if self.seen.take().is_some() { Look::Back } else { Look::Same };
        }
        if self.seen.as_deref() == Some(read) {
            self.seen = None;
            return Look::Settled;
        }
        self.seen = Some(read.to_vec());
        Look::Held
    }
}

/// The route as a default route of the main table, if it is one.
fn default_route(route: &RouteMessage) -> Option<DefaultRoute> {
    let h = &route.header;
    let family = match h.address_family {
        AddressFamily::Inet => IpFamily::Ipv4,
        AddressFamily::Inet6 => IpFamily::Ipv6,
        _ => return None,
    };
    let (mut table, mut metric, mut gateways) = (u32::from(h.table), 0, Vec::new());
    for attribute in &route.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Priority(p) => metric = *p,
            RouteAttribute::Gateway(address) => gateways.extend(ip(address)),
            RouteAttribute::MultiPath(hops) => {
                for hop in hops {
                    gateways.extend(hop.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Gateway(address) => ip(address),
                        _ => None,
                    }));
                }
            }
            _ => {}
        }
    }
    if h.destination_prefix_length != 0
        || h.kind != RouteType::Unicast
        || table != u32::from(RouteHeader::RT_TABLE_MAIN)
    {
        return None;
    }
    Some(DefaultRoute { family, metric, gateways })
}

fn ip(address: &RouteAddress) -> Option<IpAddr> {
    match address {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::RouteNextHop;

    use super::*;

    fn message(
        family: AddressFamily,
        prefix_len: u8,
        kind: RouteType,
        attributes: Vec<RouteAttribute>,
    ) -> RouteMessage {
        let mut route = RouteMessage::default();
        route.header.address_family = family;
        route.header.destination_prefix_length = prefix_len;
        route.header.kind = kind;
        route.header.table = RouteHeader::RT_TABLE_MAIN;
        route.attributes = attributes;
        route
    }

    fn gw(ip: &str) -> RouteAttribute {
        RouteAttribute::Gateway(ip.parse::<IpAddr>().unwrap().into())
    }

    fn hop(ip: &str) -> RouteNextHop {
        let mut hop = RouteNextHop::default();
        hop.attributes = vec![gw(ip)];
        hop
    }

    /// What the kernel reports, as the default routes a peer is chosen by:
    /// only main-table unicast routes to 0/0 and ::/0, with every next hop
    /// and the metric.
    #[test]
    fn only_the_main_tables_default_routes_count_with_every_next_hop() {
        use AddressFamily::{Inet, Inet6};
        let v4 = |gateways: &[&str]| DefaultRoute {
            family: IpFamily::Ipv4,
            metric: 0,
            gateways: gateways.iter().map(|g| g.parse().unwrap()).collect(),
        };
        let cases: Vec<(&str, RouteMessage, Option<DefaultRoute>)> = vec![
            (
                "via",
                message(Inet, 0, RouteType::Unicast, vec![gw("10.1.0.1")]),
                Some(v4(&["10.1.0.1"])),
            ),
            (
                "multipath",
                message(
                    Inet,
                    0,
                    RouteType::Unicast,
                    vec![RouteAttribute::MultiPath(vec![hop("10.1.0.1"), hop("10.2.0.1")])],
                ),
                Some(v4(&["10.1.0.1", "10.2.0.1"])),
            ),
            (
                "dev only",
                message(Inet, 0, RouteType::Unicast, vec![RouteAttribute::Oif(2)]),
                Some(v4(&[])),
            ),
            (
                "IPv6 with a metric",
                message(
                    Inet6,
                    0,
                    RouteType::Unicast,
                    vec![gw("2001:db8::1"), RouteAttribute::Priority(1024)],
                ),
                Some(DefaultRoute {
                    family: IpFamily::Ipv6,
                    metric: 1024,
                    gateways: vec!["2001:db8::1".parse().unwrap()],
                }),
            ),
            ("not default", message(Inet, 24, RouteType::Unicast, vec![gw("10.1.0.1")]), None),
            ("unreachable", message(Inet, 0, RouteType::Unreachable, vec![]), None),
            (
                "another table",
                message(
                    Inet,
                    0,
                    RouteType::Unicast,
                    vec![gw("10.1.0.1"), RouteAttribute::Table(100)],
                ),
                None,
            ),
        ];
        for (case, route, want) in cases {
            assert_eq!(default_route(&route), want, "{case}");
        }
    }

    /// A change is acted on only when two looks in a row agree on it; a
    /// route gone for one look and back is nothing.
    #[test]
    fn a_change_is_acted_on_when_the_next_look_agrees() {
        let via = |gateway: &str| {
            vec![DefaultRoute {
                family: IpFamily::Ipv4,
                metric: 0,
                gateways: vec![gateway.parse().unwrap()],
            }]
        };
        let (a, b, c, none) = (via("10.1.0.1"), via("10.2.0.1"), via("10.3.0.1"), vec![]);
        use Look::{Back, Held, Same, Settled};
        type Looks<'a> = Vec<(&'a Vec<DefaultRoute>, Look)>;
        let cases: Vec<(&str, Looks)> = vec![
            ("unchanged", vec![(&a, Same), (&a, Same)]),
            ("gone for one look", vec![(&none, Held), (&a, Back), (&a, Same)]),
            ("gone for good", vec![(&none, Held), (&none, Settled)]),
            ("moved", vec![(&b, Held), (&b, Settled)]),
            ("moved twice", vec![(&b, Held), (&c, Held), (&c, Settled)]),
            ("held again after coming back", vec![(&b, Held), (&a, Back), (&b, Held)]),
        ];
        for (case, looks) in cases {
            let mut hold = Hold::default();
            let mut acted = a.clone();
            for (n, (read, want)) in looks.into_iter().enumerate() {
                let got = hold.look(&acted, read);
                assert_eq!(got, want, "{case}: look {n}");
                if got == Settled {
                    acted = read.clone();
                }
            }
        }
    }
}
