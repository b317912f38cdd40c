//! gobgpd's, BIRD's and FRR's routes and neighbours as data: each reader
//! takes what the daemon's own CLI printed and gives the same shape, so a
//! test asks "which paths does the router hold" the same way of all three.

use serde_json::Value;

/// One path a router holds for a prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    pub next_hop: String,
    pub as_path: Vec<u64>,
    pub med: Option<u64>,
    /// `ASN:VALUE`, as RFC 1997 communities are written.
    pub communities: Vec<String>,
}

/// A table's paths, each with its prefix, in the order the daemon listed them.
pub type Paths = Vec<(String, Route)>;

/// A configured neighbour and whether its session is Established.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub address: String,
    pub established: bool,
}

fn parse(json: &str) -> Result<Value, String> {
    serde_json::from_str(json).map_err(|e| format!("not JSON ({e}): {json}"))
}

fn each<'a>(v: &'a Value, key: &str) -> impl Iterator<Item = &'a Value> {
    v[key].as_array().into_iter().flatten()
}

/// `gobgp -j global rib [-a FAMILY]`: every path, by prefix.
pub fn gobgp_routes(json: &str) -> Result<Paths, String> {
    let table = parse(json)?;
    let mut out = Vec::new();
    for (prefix, paths) in table.as_object().into_iter().flatten() {
        for path in paths.as_array().into_iter().flatten() {
            let mut route = Route::default();
            for attr in each(path, "attrs") {
                match attr["type"].as_u64() {
                    Some(2) => {
                        for segment in each(attr, "as_paths") {
                            route.as_path.extend(each(segment, "asns").filter_map(Value::as_u64));
                        }
                    }
                    // NEXT_HOP, or MP_REACH_NLRI's next hop.
                    Some(3) | Some(14) => {
                        route.next_hop = attr["nexthop"].as_str().unwrap_or("").to_string()
                    }
                    Some(4) => route.med = attr["metric"].as_u64(),
                    Some(8) => {
                        route.communities = each(attr, "communities")
                            .filter_map(Value::as_u64)
                            .map(|c| format!("{}:{}", c >> 16, c & 0xffff))
                            .collect()
                    }
                    _ => {}
                }
            }
            out.push((prefix.clone(), route));
        }
    }
    Ok(out)
}

/// `birdc show route all [...]`: every path, in BIRD's order. A prefix's
/// first path is on a line that starts with the prefix; each further path
/// on an indented line that starts with the route's type.
pub fn bird_routes(text: &str) -> Paths {
    const TYPES: [&str; 4] = ["unicast [", "blackhole [", "unreachable [", "prohibited ["];
    let mut out: Paths = Vec::new();
    let mut prefix = None;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if !line.starts_with(char::is_whitespace) && first.contains('/') {
            prefix = Some(first.to_string());
            out.push((first.to_string(), Route::default()));
            continue;
        }
        let line = line.trim();
        if let Some(p) = &prefix
            && TYPES.iter().any(|t| line.starts_with(t))
        {
            out.push((p.clone(), Route::default()));
            continue;
        }
        let Some((_, route)) = out.last_mut() else { continue };
        if let Some(v) = line.strip_prefix("BGP.next_hop:") {
            // IPv6: the global address, then the link-local one.
            route.next_hop = v.split_whitespace().next().unwrap_or("").to_string();
        } else if let Some(v) = line.strip_prefix("BGP.as_path:") {
            route.as_path = v.split_whitespace().filter_map(|a| a.parse().ok()).collect();
        } else if let Some(v) = line.strip_prefix("BGP.med:") {
            route.med = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("BGP.community:") {
            route.communities = v
                .trim()
                .split(") (")
                .map(|c| c.trim_matches(|ch| ch == '(' || ch == ')').replace(',', ":"))
                .collect();
        }
    }
    out
}

/// `vtysh -c 'show bgp FAMILY unicast json [detail]'`: every path. The AS
/// path is read from `detail`'s segments, else from the summary's string.
pub fn frr_routes(json: &str) -> Result<Paths, String> {
    let v = parse(json)?;
    let mut out = Vec::new();
    for (prefix, paths) in v["routes"].as_object().into_iter().flatten() {
        for path in paths.as_array().into_iter().flatten() {
            let segments: Vec<u64> = each(&path["aspath"], "segments")
                .flat_map(|s| each(s, "list"))
                .filter_map(Value::as_u64)
                .collect();
            let as_path = if segments.is_empty() {
                let summary = path["path"].as_str().unwrap_or("");
                summary.split_whitespace().filter_map(|a| a.parse().ok()).collect()
            } else {
                segments
            };
            let route = Route {
                next_hop: path["nexthops"][0]["ip"].as_str().unwrap_or("").to_string(),
                as_path,
                med: path["metric"].as_u64(),
                communities: each(&path["community"], "list")
                    .filter_map(|c| c.as_str().map(String::from))
                    .collect(),
            };
            out.push((prefix.clone(), route));
        }
    }
    Ok(out)
}

/// `gobgp -j neighbor`.
pub fn gobgp_neighbors(json: &str) -> Result<Vec<Neighbor>, String> {
    let v = parse(json)?;
    Ok(v.as_array()
        .into_iter()
        .flatten()
        .map(|n| Neighbor {
            address: n["conf"]["neighbor_address"].as_str().unwrap_or("").into(),
            // gobgp's SessionState: 6 is Established.
            established: n["state"]["session_state"] == 6,
        })
        .collect())
}

/// `birdc show protocols all`: each BGP protocol's neighbour.
pub fn bird_neighbors(text: &str) -> Vec<Neighbor> {
    let mut out = Vec::new();
    let mut established = false;
    for line in text.lines() {
        let t = line.trim();
        if let Some(state) = t.strip_prefix("BGP state:") {
            established = state.trim() == "Established";
        }
        if let Some(address) = t.strip_prefix("Neighbor address:") {
            out.push(Neighbor { address: address.trim().into(), established });
        }
    }
    out
}

/// `vtysh -c 'show bgp neighbors json'`.
pub fn frr_neighbors(json: &str) -> Result<Vec<Neighbor>, String> {
    let v = parse(json)?;
    Ok(v.as_object()
        .into_iter()
        .flatten()
        .map(|(address, n)| Neighbor {
            address: address.clone(),
            established: n["bgpState"] == "Established",
        })
        .collect())
}

#[cfg(test)]
mod tests;
