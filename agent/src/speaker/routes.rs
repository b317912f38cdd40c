//! `GET /routes`: what each session has received (its Adj-RIB-In after the
//! import policy, stale routes of a restarting peer included and marked)
//! and what we send it (its Adj-RIB-Out), as rows a person reads:
//! `nonstop-agent show routes [PEER]` prints them.
//!
//! Asked of each peer's task when requested, never kept up to date: a copy
//! of a table shares every route's attributes with the table, and at most
//! `limit` rows per table are written (10,000 unless the query says).

use std::net::IpAddr;
use std::sync::Arc;

use hyper::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};

use super::peer::{PeerCommand, RibSnapshot};
use super::status::PeerStatus;
use crate::http::Answer;
use crate::rib::{Route, Staleness};
use crate::route::Prefix;
use crate::wire::{AsSegment, Origin};

/// Rows written per table unless the query asks for another limit.
pub const DEFAULT_LIMIT: usize = 10_000;

/// A running peer as the admin door sees it: its status and its task.
#[derive(Debug, Clone)]
pub struct PeerView {
    pub status: watch::Receiver<PeerStatus>,
    pub commands: mpsc::Sender<PeerCommand>,
}

/// `?peer=ADDR&limit=N`, both optional.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub peer: Option<IpAddr>,
    pub limit: usize,
}

impl Query {
    pub fn parse(query: &str) -> Result<Query, String> {
        let mut parsed = Query { peer: None, limit: DEFAULT_LIMIT };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("peer", v)) => {
                    let ip = v.parse::<IpAddr>().map_err(|_| {
                        format!("peer={v}: not an IP address (the peer's address, e.g. 10.0.0.1)")
                    })?;
                    parsed.peer = Some(ip.to_canonical());
                }
                Some(("limit", v)) => {
                    parsed.limit = v
                        .parse()
                        .map_err(|_| format!("limit={v}: not a number of rows (0 or more)"))?;
                }
                _ => return Err(format!("{pair}: unknown; /routes takes peer=ADDR and limit=N")),
            }
        }
        Ok(parsed)
    }
}

/// The answer to `GET /routes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RoutesDocument {
    pub peers: Vec<PeerRoutes>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PeerRoutes {
    pub address: String,
    pub asn: u32,
    pub state: String,
    /// All the routes the table holds; `received` may be cut at the limit.
    pub received_total: usize,
    pub received: Vec<RouteRow>,
    pub advertised_total: usize,
    pub advertised: Vec<RouteRow>,
}

/// One route, its attributes spelled out.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteRow {
    pub prefix: String,
    pub next_hop: String,
    /// `65000 65010 {65020,65030}`; empty for an iBGP peer's own routes.
    pub as_path: String,
    pub origin: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub med: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Standard and large communities, well-known ones by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// `stale` (the peer restarts, RFC 4724) or `llgr-stale` (kept by
    /// Long-Lived GR, RFC 9494); absent for a fresh route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale: Option<String>,
}

impl RouteRow {
    pub fn of(prefix: Prefix, route: &Route, staleness: Staleness) -> RouteRow {
        let attrs = &route.attrs;
        let mut communities: Vec<String> =
            attrs.communities.iter().map(|c| c.to_string()).collect();
        communities.extend(attrs.large_communities.iter().map(|c| c.to_string()));
        RouteRow {
            prefix: prefix.to_string(),
            next_hop: route.next_hop.to_string(),
            as_path: attrs.as_path.as_ref().map(|p| as_path(&p.0)).unwrap_or_default(),
            origin: match attrs.origin {
                Some(Origin::Igp) => "igp",
                Some(Origin::Egp) => "egp",
                Some(Origin::Incomplete) => "incomplete",
                None => "-",
            }
            .into(),
            med: attrs.med,
            local_pref: attrs.local_pref,
            communities,
            stale: match staleness {
                Staleness::Fresh => None,
                Staleness::Stale => Some("stale".into()),
                Staleness::LongLived => Some("llgr-stale".into()),
            },
        }
    }
}

/// AS_PATH as routers print it: sequences as numbers, sets in braces,
/// confederation segments in parentheses.
fn as_path(segments: &[AsSegment]) -> String {
    let join =
        |asns: &[u32], sep: &str| asns.iter().map(u32::to_string).collect::<Vec<_>>().join(sep);
    segments
        .iter()
        .map(|s| match s {
            AsSegment::Sequence(a) => join(a, " "),
            AsSegment::Set(a) => format!("{{{}}}", join(a, ",")),
            AsSegment::ConfedSequence(a) => format!("({})", join(a, " ")),
            AsSegment::ConfedSet(a) => format!("[{}]", join(a, ",")),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A peer's tables as rows, by prefix, at most `limit` of each.
pub fn peer_routes(status: &PeerStatus, tables: &RibSnapshot, limit: usize) -> PeerRoutes {
    let mut received: Vec<(Prefix, &Route, Staleness)> = tables
        .rib_in
        .iter()
        .map(|(p, r)| (p, r, tables.rib_in.staleness(&p).unwrap_or(Staleness::Fresh)))
        .collect();
    received.sort_by_key(|(p, _, _)| *p);
    let mut advertised: Vec<(&Prefix, &Arc<Route>)> = tables.sent.routes.iter().collect();
    advertised.sort_by_key(|(p, _)| **p);
    PeerRoutes {
        address: status.address.clone(),
        asn: status.asn,
        state: status.state.as_str().into(),
        received_total: received.len(),
        received: received.into_iter().take(limit).map(|(p, r, s)| RouteRow::of(p, r, s)).collect(),
        advertised_total: advertised.len(),
        advertised: advertised
            .into_iter()
            .take(limit)
            .map(|(p, r)| RouteRow::of(*p, r, Staleness::Fresh))
            .collect(),
    }
}

/// Asks each peer (or the one queried) for its tables; the JSON answer.
pub async fn answer(peers: Vec<PeerView>, query: Query) -> Answer {
    let mut document = RoutesDocument::default();
    for view in peers {
        let status = view.status.borrow().clone();
        let address = status.address.parse::<IpAddr>().ok().map(|a| a.to_canonical());
        if query.peer.is_some() && address != query.peer {
            continue;
        }
        let (reply, tables) = oneshot::channel();
        if view.commands.send(PeerCommand::Tables(reply)).await.is_err() {
            continue; // the peer was just removed by a reload
        }
        if let Ok(tables) = tables.await {
            document.peers.push(peer_routes(&status, &tables, query.limit));
        }
    }
    if let Some(peer) = query.peer.filter(|_| document.peers.is_empty()) {
        return Answer::text(StatusCode::NOT_FOUND, format!("no peer {peer} is configured\n"));
    }
    document.peers.sort_by(|a, b| a.address.cmp(&b.address));
    let body = serde_json::to_string_pretty(&document).expect("JSON") + "\n";
    Answer::ok("application/json", body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::{Community, LargeCommunity};
    use crate::wire::{AsPath, PathAttrs};

    #[test]
    fn a_query_names_what_is_wrong_with_it() {
        let ok =
            |peer: Option<&str>, limit| Query { peer: peer.map(|p| p.parse().unwrap()), limit };
        let cases: [(&str, Result<Query, &str>); 6] = [
            ("", Ok(ok(None, DEFAULT_LIMIT))),
            ("peer=10.0.0.1", Ok(ok(Some("10.0.0.1"), DEFAULT_LIMIT))),
            // An IPv4-mapped address is the IPv4 peer.
            ("peer=::ffff:10.0.0.1&limit=5", Ok(ok(Some("10.0.0.1"), 5))),
            ("peer=router1", Err("peer=router1: not an IP address")),
            ("limit=-1", Err("limit=-1: not a number of rows")),
            ("prefix=10.0.0.0/8", Err("prefix=10.0.0.0/8: unknown; /routes takes peer=ADDR")),
        ];
        for (query, want) in cases {
            match (Query::parse(query), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{query}"),
                (Err(got), Err(want)) => assert!(got.starts_with(want), "{query}: {got}"),
                (got, want) => panic!("{query}: {got:?}, wanted {want:?}"),
            }
        }
    }

    #[test]
    fn a_route_row_spells_out_every_attribute() {
        let attrs = PathAttrs {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath(vec![
                AsSegment::Sequence(vec![65000, 65010]),
                AsSegment::Set(vec![65020, 65030]),
            ])),
            med: Some(7),
            communities: vec![Community(65000 << 16 | 100), Community(0xFFFF_0000)],
            large_communities: vec![LargeCommunity(65000, 1, 2)],
            ..PathAttrs::default()
        };
        let route = Route { attrs, next_hop: "10.0.0.1".parse().unwrap() };
        let row = RouteRow::of("192.0.2.0/24".parse().unwrap(), &route, Staleness::LongLived);
        assert_eq!(row.as_path, "65000 65010 {65020,65030}");
        assert_eq!((row.origin.as_str(), row.med, row.local_pref), ("igp", Some(7), None));
        assert_eq!(row.communities, ["65000:100", "graceful-shutdown", "65000:1:2"]);
        assert_eq!(row.stale.as_deref(), Some("llgr-stale"));
        let fresh = RouteRow::of("192.0.2.0/24".parse().unwrap(), &route, Staleness::Fresh);
        assert_eq!(fresh.stale, None);
    }
}
