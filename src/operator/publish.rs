//! What each gateway's agents announce for Services of type LoadBalancer,
//! and getting it to them: after each address pass ([`super::services`]),
//! one set per gateway (its Services' addresses, as /32 and /128, with its
//! communities), published to the active agent of each of its nodes
//! (`PUT /announcements` on the agent's admin port, with the gateway's API
//! token). A gateway that announces no Services publishes an empty set, so
//! nothing of an earlier setting stays announced.
//!
//! ```text
//!   outcomes ──set_for(gateway, node)──▶ Published{version = hash} ──PUT──▶ each node's active agent
//!                                        └─ remembered per (gateway uid, node, pod): sent once
//! ```
//!
//! The agent keeps the set in its state dir and hands it to its successor,
//! so a handoff needs no new PUT; a new pod gets one all the same (it may
//! be a cold start), which changes nothing at the routers when the set is
//! the same.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use kube::api::Api;
use kube::core::{Selector, SelectorExt};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use nonstop_agent::config::Announcement;
use nonstop_agent::http::{self, Outgoing, hyper::Method};
use nonstop_agent::published::Published;
use nonstop_agent::route::{Community, Prefix};
use tracing::{info, warn};

use super::ipam::Outcome;
use super::render;
use crate::api::pool::{BGP_COMMUNITIES, BgpAddressPool};
use crate::api::{BgpGateway, LoadBalancerStatus};

/// How long one agent has to take a set.
const PUT_TIMEOUT: Duration = Duration::from_secs(5);
/// Agents published to at the same time.
const AT_ONCE: usize = 32;

/// One set on its way to one agent.
#[derive(Debug)]
struct Delivery {
    /// (gateway uid, node).
    at: (String, String),
    /// namespace/name, for the log.
    gateway: String,
    pod: String,
    addr: SocketAddr,
    token: String,
    body: http::hyper::body::Bytes,
    version: String,
    prefixes: usize,
}

/// One of nonstop's Services as the gateways announce it.
#[derive(Debug, Clone)]
pub struct Served<'a> {
    pub outcome: &'a Outcome,
    /// Its own communities (annotation `nonstop.dev/bgp-communities`).
    pub communities: Vec<Community>,
    /// `externalTrafficPolicy: Local`: only these nodes (those with a ready
    /// endpoint) announce it. None: every node does.
    pub local: Option<BTreeSet<String>>,
}

/// A Service's own communities, and what is wrong with the annotation if
/// it cannot be read (then none are taken from it; the address stays).
pub fn service_communities(service: &Service) -> (Vec<Community>, Option<String>) {
    let annotations = service.metadata.annotations.as_ref();
    let Some(text) = annotations.and_then(|a| a.get(BGP_COMMUNITIES)) else {
        return (Vec::new(), None);
    };
    let mut communities = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word.parse::<Community>() {
            Ok(c) => communities.push(c),
            Err(e) => {
                return (Vec::new(), Some(format!("{BGP_COMMUNITIES} ignored: {word:?}: {e}")));
            }
        }
    }
    (communities, None)
}

/// The set a gateway's agent on `node` announces for Services: the
/// addresses of `served` from the pools the gateway selects (a Service with
/// `externalTrafficPolicy: Local` only where it has a ready endpoint), in
/// address order, each with the gateway's communities and its Service's own.
pub fn set_for(
    gateway: &BgpGateway,
    pools: &[Arc<BgpAddressPool>],
    served: &[Served<'_>],
    node: &str,
) -> Result<Published, String> {
    let lb = &gateway.spec.load_balancer;
    if !lb.announce {
        return Ok(Published::default());
    }
    let selector = match lb.address_pool_selector.clone().map(Selector::try_from) {
        None => None,
        Some(Ok(selector)) => Some(selector),
        Some(Err(e)) => return Err(format!("spec.loadBalancer.addressPoolSelector: {e}")),
    };
    let chosen: Vec<String> = pools
        .iter()
        .filter(|p| {
            selector
                .as_ref()
                .is_none_or(|s| s.matches(p.metadata.labels.as_ref().unwrap_or(&BTreeMap::new())))
        })
        .map(|p| p.name_any())
        .collect();
    // A prefix of the gateway's own announce[] stays the config's.
    let configured: HashSet<Prefix> = gateway.spec.announce.iter().map(|a| a.prefix).collect();
    let host =
        |ip: IpAddr| Prefix::new(ip, if ip.is_ipv4() { 32 } else { 128 }).expect("a host prefix");
    let mut ips: Vec<(IpAddr, &[Community])> = served
        .iter()
        .filter(|s| s.local.as_ref().is_none_or(|nodes| nodes.contains(node)))
        .filter_map(|s| Some((s.outcome.as_ref().ok()?, &s.communities)))
        .flat_map(|(addresses, own)| addresses.iter().map(move |a| (a, own)))
        .filter(|(a, _)| chosen.contains(&a.pool) && !configured.contains(&host(a.ip)))
        .map(|(a, own)| (a.ip, own.as_slice()))
        .collect();
    ips.sort_by_key(|(ip, _)| *ip);
    ips.dedup_by_key(|(ip, _)| *ip);
    let announce: Vec<Announcement> = ips
        .into_iter()
        .map(|(ip, own)| Announcement {
            prefix: host(ip),
            next_hop: Default::default(),
            communities: {
                let mut all = lb.communities.clone();
                all.extend(own.iter().filter(|c| !lb.communities.contains(c)));
                all
            },
            large_communities: lb.large_communities.clone(),
            local_pref: lb.local_pref,
            med: None,
            check: None,
        })
        .collect();
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&announce).expect("JSON").hash(&mut hasher);
    Ok(Published { version: format!("{:016x}", hasher.finish()), announce })
}

/// A random token for a gateway's API Secret: 32 bytes, hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes));
    read.expect("/dev/urandom");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What was published where, so each set goes to each agent once.
#[derive(Debug, Default)]
pub struct Publisher {
    /// (gateway uid, node) → (the active pod, the version it took).
    sent: HashMap<At, Held>,
    /// Gateway uid → its API token. By uid: a gateway deleted and made
    /// again under its name has a new Secret, with a new token.
    tokens: HashMap<String, String>,
    /// (gateway uid, node) → why its agent has not taken the current set.
    problems: HashMap<At, String>,
}

/// (gateway uid, node).
type At = (String, String);
/// (the active pod, the version of the set it should hold).
type Held = (String, String);

/// What one gateway's agents should hold after a pass.
struct Wanted {
    /// Each node with a running agent, and what it should hold.
    expect: Vec<(At, Held)>,
    /// The addresses any of its nodes announces.
    addresses: HashSet<Prefix>,
    /// Why no set could be made for it (its spec), if so.
    broken: Option<String>,
}

/// How many problems a gateway's status lists.
const PROBLEMS_SHOWN: usize = 8;

impl Publisher {
    /// Publishes each gateway's set to the active agent of each of its
    /// nodes that does not have it yet, [`AT_ONCE`] agents at a time (an
    /// unreachable node holds up no other); false if one could not be
    /// reached (the next pass tries again). With it, what each gateway's
    /// `status.loadBalancer` should say (None: it announces no Services).
    pub async fn publish(
        &mut self,
        client: &Client,
        gateways: &[Arc<BgpGateway>],
        pools: &[Arc<BgpAddressPool>],
        served: &[Served<'_>],
        nodes: &Store<Node>,
    ) -> (bool, Vec<Option<LoadBalancerStatus>>) {
        let mut clean = true;
        let mut live = HashSet::new();
        let mut deliveries = Vec::new();
        let mut wanted = Vec::with_capacity(gateways.len());
        for gateway in gateways {
            let key = format!("{}/{}", gateway.namespace().unwrap_or_default(), gateway.name_any());
            let uid = gateway.uid().unwrap_or_default();
            let slots = gateway.status.as_ref().map(|s| s.nodes.clone()).unwrap_or_default();
            let (mut expect, mut addresses) = (Vec::new(), HashSet::new());
            let mut broken = None;
            for slot in slots {
                let Some(pod) = slot.pod.clone() else { continue };
                let set = match set_for(gateway, pools, served, &slot.node) {
                    Ok(set) => set,
                    Err(e) => {
                        warn!("load balancer: gateway {key}: {e}");
                        broken = Some(e);
                        break;
                    }
                };
                addresses.extend(set.announce.iter().map(|a| a.prefix));
                let at = (uid.clone(), slot.node.clone());
                live.insert(at.clone());
                expect.push((at.clone(), (pod.clone(), set.version.clone())));
                if self.sent.get(&at) == Some(&(pod.clone(), set.version.clone())) {
                    continue;
                }
                let Some(token) = self.token(client, gateway, &uid).await else {
                    let secret = render::api_secret_name(gateway);
                    self.problems.insert(at, format!("no API token yet (Secret {secret})"));
                    clean = false;
                    continue;
                };
                let Some(ip) = nodes
                    .get(&kube::runtime::reflector::ObjectRef::new(&slot.node))
                    .and_then(|n| super::observe::internal_ip(&n))
                else {
                    self.problems.insert(at, "the node has no InternalIP address".into());
                    continue;
                };
                deliveries.push(Delivery {
                    at,
                    gateway: key.clone(),
                    pod,
                    addr: SocketAddr::new(ip, gateway.spec.admin_port),
                    token,
                    body: http::hyper::body::Bytes::from(serde_json::to_vec(&set).expect("JSON")),
                    version: set.version.clone(),
                    prefixes: set.announce.len(),
                });
            }
            wanted.push(Wanted { expect, addresses, broken });
        }
        let results: Vec<_> = futures::stream::iter(deliveries)
            .map(|d| async move {
                let outgoing = Outgoing { bearer: Some(&d.token), body: d.body.clone() };
                let answer =
                    http::request_tcp(d.addr, Method::PUT, "/announcements", outgoing, PUT_TIMEOUT)
                        .await;
                (d, answer)
            })
            .buffer_unordered(AT_ONCE)
            .collect()
            .await;
        for (d, answer) in results {
            let (uid, node) = &d.at;
            match answer {
                Ok(answer) => {
                    info!(
                        gateway = d.gateway,
                        node,
                        pod = d.pod,
                        prefixes = d.prefixes,
                        answer = answer.trim(),
                        "load balancer: Service addresses published"
                    );
                    self.problems.remove(&d.at);
                    self.sent.insert(d.at.clone(), (d.pod, d.version));
                }
                // An agent made before the operator published (no token
                // mounted: 403; an older agent: 405) takes no set until its
                // pod is replaced: said once per pod, not retried.
                Err(http::ClientError::Status { status, .. })
                    if status == http::hyper::StatusCode::FORBIDDEN
                        || status == http::hyper::StatusCode::METHOD_NOT_ALLOWED =>
                {
                    if d.prefixes > 0 {
                        warn!(
                            gateway = d.gateway,
                            node,
                            pod = d.pod,
                            "load balancer: this agent takes no Service addresses ({status}); \
                             they reach the node with its next pod (an image bump rolls it)"
                        );
                    }
                    self.problems.insert(
                        d.at.clone(),
                        format!(
                            "its agent ({}) takes no Service addresses ({status}): \
                             they reach the node with its next pod",
                            d.pod
                        ),
                    );
                    self.sent.insert(d.at.clone(), (d.pod, d.version));
                }
                Err(e) => {
                    warn!(
                        gateway = d.gateway,
                        node,
                        pod = d.pod,
                        "load balancer: cannot publish to {}: {e}",
                        d.addr
                    );
                    if let http::ClientError::Status { status, .. } = &e
                        && *status == http::hyper::StatusCode::UNAUTHORIZED
                    {
                        // Read the Secret again next time.
                        self.tokens.remove(uid);
                    }
                    self.problems.insert(d.at.clone(), format!("publishing to {}: {e}", d.addr));
                    clean = false;
                }
            }
        }
        self.sent.retain(|at, _| live.contains(at));
        self.problems.retain(|at, _| live.contains(at));
        let statuses = gateways
            .iter()
            .zip(wanted)
            .map(|(gateway, wanted)| {
                gateway.spec.load_balancer.announce.then(|| self.status_of(wanted))
            })
            .collect();
        (clean, statuses)
    }

    /// A gateway's `status.loadBalancer`: of the nodes with a running
    /// agent (`expect`), those holding the current set, and why the others
    /// do not, by node name.
    fn status_of(&self, Wanted { expect, addresses, broken }: Wanted) -> LoadBalancerStatus {
        let current = expect
            .iter()
            .filter(|(at, want)| self.sent.get(at) == Some(want) && !self.problems.contains_key(at))
            .count();
        let mut problems: Vec<String> = broken.into_iter().collect();
        let mut by_node: Vec<(&String, &String)> =
            expect.iter().filter_map(|(at, _)| Some((&at.1, self.problems.get(at)?))).collect();
        by_node.sort();
        problems.extend(by_node.into_iter().map(|(node, why)| format!("{node}: {why}")));
        problems.truncate(PROBLEMS_SHOWN);
        LoadBalancerStatus {
            addresses: u32::try_from(addresses.len()).unwrap_or(u32::MAX),
            published: format!("{current}/{}", expect.len()),
            problems,
        }
    }

    /// The gateway's API token, read from its Secret once.
    async fn token(&mut self, client: &Client, gateway: &BgpGateway, uid: &str) -> Option<String> {
        if let Some(token) = self.tokens.get(uid) {
            return Some(token.clone());
        }
        let api: Api<Secret> =
            Api::namespaced(client.clone(), &gateway.namespace().unwrap_or_default());
        let name = render::api_secret_name(gateway);
        let secret = match api.get_opt(&name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => return None,
            Err(e) => {
                warn!("load balancer: cannot read Secret {name}: {e}");
                return None;
            }
        };
        let token = secret.data?.get(render::API_TOKEN_KEY)?.0.clone();
        let token = String::from_utf8(token).ok()?;
        self.tokens.insert(uid.to_string(), token.clone());
        Some(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::ipam::{Address, Family, Refusal};

    fn gateway(load_balancer: &str) -> BgpGateway {
        serde_yaml_ng::from_str(&format!(
            "apiVersion: nonstop.dev/v1alpha1\nkind: BgpGateway\nmetadata: {{name: edge, namespace: net}}\n\
             spec:\n  asn: 65001\n  peers: [{{address: 10.99.0.1, asn: 65000}}]\n  loadBalancer: {load_balancer}\n"
        ))
        .unwrap()
    }

    fn pool(name: &str, tier: &str) -> Arc<BgpAddressPool> {
        Arc::new(
            serde_yaml_ng::from_str(&format!(
                "apiVersion: nonstop.dev/v1alpha1\nkind: BgpAddressPool\n\
                 metadata: {{name: {name}, labels: {{tier: {tier}}}}}\nspec: {{addresses: [198.51.100.0/24]}}\n"
            ))
            .unwrap(),
        )
    }

    fn assigned(list: &[(&str, &str)]) -> Outcome {
        Ok(list
            .iter()
            .map(|(ip, pool)| Address { ip: ip.parse().unwrap(), pool: pool.to_string() })
            .collect())
    }

    #[test]
    fn a_gateway_announces_the_addresses_of_the_pools_it_selects() {
        let pools = [pool("public", "front"), pool("inside", "back")];
        let outcomes = [
            assigned(&[("203.0.113.9", "public"), ("2001:db8::9", "public")]),
            assigned(&[("198.51.100.4", "public")]),
            assigned(&[("10.0.0.4", "inside")]),
            Err(Refusal::NoPool(Family::V4)),
        ];
        // (the gateway's loadBalancer, the prefixes it announces with their communities)
        let cases = [
            ("{}", vec![]),
            ("{unclassed: true}", vec![]),
            (
                "{announce: true}",
                vec!["10.0.0.4/32", "198.51.100.4/32", "203.0.113.9/32", "2001:db8::9/128"],
            ),
            (
                "{announce: true, addressPoolSelector: {matchLabels: {tier: front}}}",
                vec!["198.51.100.4/32", "203.0.113.9/32", "2001:db8::9/128"],
            ),
        ];
        let served: Vec<Served> = outcomes
            .iter()
            .map(|outcome| Served { outcome, communities: vec![], local: None })
            .collect();
        for (lb, want) in cases {
            let set = set_for(&gateway(lb), &pools, &served, "node-1").unwrap();
            let got: Vec<String> = set.announce.iter().map(|a| a.prefix.to_string()).collect();
            assert_eq!(got, want, "{lb}");
        }
        // A prefix of the gateway's own announce[] stays the config's.
        let mut own = gateway("{announce: true}");
        own.spec.announce = serde_yaml_ng::from_str("[{prefix: 198.51.100.4/32}]").unwrap();
        let set = set_for(&own, &pools, &served, "node-1").unwrap();
        assert!(set.announce.iter().all(|a| a.prefix.to_string() != "198.51.100.4/32"));
        assert_eq!(set.announce.len(), 3);
        let with = gateway("{announce: true, communities: ['65001:80'], localPref: 150}");
        let own: Vec<Community> = vec!["65001:80".parse().unwrap(), "no-export".parse().unwrap()];
        let one = [Served { outcome: &outcomes[1], communities: own, local: None }];
        let set = set_for(&with, &pools, &one, "node-1").unwrap();
        let communities: Vec<String> =
            set.announce[0].communities.iter().map(ToString::to_string).collect();
        assert_eq!(communities, ["65001:80", "no-export"], "the gateway's, then the Service's own");
        assert_eq!(set.announce[0].local_pref, Some(150));
        // The version names the set: the same set, the same version.
        let again = set_for(&with, &pools, &one, "node-1").unwrap();
        assert_eq!(set.version, again.version);
        assert_ne!(
            set.version,
            set_for(&gateway("{announce: true}"), &pools, &one, "node-1").unwrap().version
        );
    }

    #[test]
    fn a_local_service_is_announced_only_where_it_has_a_ready_endpoint() {
        let pools = [pool("public", "front")];
        let (web, api) =
            (assigned(&[("203.0.113.9", "public")]), assigned(&[("203.0.113.10", "public")]));
        let served = [
            Served {
                outcome: &web,
                communities: vec![],
                local: Some(["node-2".to_string()].into()),
            },
            Served { outcome: &api, communities: vec![], local: None },
        ];
        let gw = gateway("{announce: true}");
        // (node, what it announces)
        let cases = [
            ("node-1", vec!["203.0.113.10/32"]),
            ("node-2", vec!["203.0.113.9/32", "203.0.113.10/32"]),
        ];
        for (node, want) in cases {
            let set = set_for(&gw, &pools, &served, node).unwrap();
            let got: Vec<String> = set.announce.iter().map(|a| a.prefix.to_string()).collect();
            assert_eq!(got, want, "{node}");
        }
        let none = [Served { outcome: &web, communities: vec![], local: Some(BTreeSet::new()) }];
        assert!(
            set_for(&gw, &pools, &none, "node-2").unwrap().announce.is_empty(),
            "no endpoint, no route"
        );
    }

    #[test]
    fn a_service_names_its_own_communities_or_is_told_why_not() {
        let cases = [
            ("", Ok(vec![])),
            ("65001:100", Ok(vec!["65001:100"])),
            (" 65001:100 , no-export ", Ok(vec!["65001:100", "no-export"])),
            ("65001:100, lots", Err("nonstop.dev/bgp-communities ignored: \"lots\"")),
        ];
        for (text, want) in cases {
            let service: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "web", "annotations": {BGP_COMMUNITIES: text}}
            }))
            .unwrap();
            let (got, problem) = service_communities(&service);
            let got: Vec<String> = got.iter().map(ToString::to_string).collect();
            match want {
                Ok(want) => assert_eq!(
                    (got, problem),
                    (want.iter().map(|s| s.to_string()).collect(), None),
                    "{text}"
                ),
                Err(part) => {
                    assert!(got.is_empty(), "{text}");
                    let problem = problem.unwrap_or_default();
                    assert!(problem.starts_with(part), "{text}: {problem}");
                }
            }
        }
    }

    /// `status.loadBalancer`: a node counts as published only while its
    /// running agent holds the current set and nothing is wrong there;
    /// each other node is named with why.
    #[test]
    fn the_status_counts_the_nodes_holding_the_current_set_and_names_the_others() {
        let at = |node: &str| ("uid-1".to_string(), node.to_string());
        let held = |pod: &str, version: &str| (pod.to_string(), version.to_string());
        let mut publisher = Publisher::default();
        // node-1 holds v2; node-2 holds v1 and v2 failed; node-3's agent is
        // too old to take it; node-4's new pod holds v2.
        publisher.sent.insert(at("node-1"), held("pod-1", "v2"));
        publisher.sent.insert(at("node-2"), held("pod-2", "v1"));
        publisher.problems.insert(at("node-2"), "publishing to 10.0.0.2:9179: refused".into());
        publisher.sent.insert(at("node-3"), held("pod-3", "v2"));
        publisher.problems.insert(at("node-3"), "its agent takes no Service addresses".into());
        publisher.sent.insert(at("node-4"), held("pod-4b", "v2"));
        let expect = vec![
            (at("node-1"), held("pod-1", "v2")),
            (at("node-2"), held("pod-2", "v2")),
            (at("node-3"), held("pod-3", "v2")),
            (at("node-4"), held("pod-4b", "v2")),
        ];
        let addresses: HashSet<Prefix> =
            ["198.51.100.1/32", "2001:db8::1/128"].iter().map(|p| p.parse().unwrap()).collect();
        let status = publisher.status_of(Wanted { expect, addresses, broken: None });
        assert_eq!(
            status,
            LoadBalancerStatus {
                addresses: 2,
                published: "2/4".into(),
                problems: vec![
                    "node-2: publishing to 10.0.0.2:9179: refused".into(),
                    "node-3: its agent takes no Service addresses".into(),
                ],
            }
        );

        // A gateway whose set cannot be made says why first; at most 8 lines.
        let many: Vec<(At, Held)> =
            (0..12).map(|i| (at(&format!("n{i:02}")), held("p", "v"))).collect();
        for (at, _) in &many {
            publisher.problems.insert(at.clone(), "down".into());
        }
        let broken = Some("spec.loadBalancer.addressPoolSelector: bad".to_string());
        let status =
            publisher.status_of(Wanted { expect: many, addresses: HashSet::new(), broken });
        assert_eq!(status.published, "0/12");
        assert_eq!(status.problems.len(), PROBLEMS_SHOWN);
        assert!(status.problems[0].starts_with("spec.loadBalancer"), "{:?}", status.problems);
        assert_eq!(status.problems[1], "n00: down");
    }
}
