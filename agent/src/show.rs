//! What `nonstop-agent show …` prints: the status document as the tables a
//! network engineer reads elsewhere (`birdc show protocols`, `gobgp
//! neighbor`). Pure formatting of an [`AgentStatus`]; the command fetches it.

use crate::speaker::routes::{PeerRoutes, RouteRow, RoutesDocument};
use crate::speaker::status::{
    AgentStatus, CollectorStatus, EventsDocument, HandoffReport, HandoffResult, HandoffRole,
    PeerStatus, Role,
};

/// `show peers`: a line about the agent, then one row per peer.
///
/// ACCEPTED is what the peer's routes left in the Adj-RIB-In after the
/// import policy (stale ones included), REFUSED what the policy turned away
/// since the session came up, ADVERTISED what we send it: the router's own
/// CLI shows the first as its advertised count and the last as received.
pub fn peers(status: &AgentStatus) -> String {
    let mut out = agent_line(status);
    let rows = status.peers.iter().map(peer_row).collect();
    out.push_str(&table(
        &[
            "PEER",
            "AS",
            "STATE",
            "UP/DOWN",
            "ACCEPTED",
            "STALE",
            "REFUSED",
            "ADVERTISED",
            "LAST ERROR",
        ],
        rows,
    ));
    for why in &status.peers_not_run {
        out.push_str(&format!("not run here: {why}\n"));
    }
    out
}

fn agent_line(s: &AgentStatus) -> String {
    let role = match s.role {
        Role::Active => "active",
        Role::Retired => "retired",
    };
    let pod = s.pod.as_deref().map(|p| format!(", pod {p}")).unwrap_or_default();
    format!(
        "nonstop-agent {} pid {}{pod}: AS {}, router ID {}, {role}, up {}, {} prefix(es) announced\n",
        s.version,
        s.pid,
        s.asn,
        s.router_id,
        duration(s.uptime_seconds),
        s.routes_announced,
    )
}

fn peer_row(p: &PeerStatus) -> Vec<String> {
    let up_down = if p.state == crate::session::State::Established {
        duration(p.uptime_seconds)
    } else if p.established_transitions == 0 {
        "never".to_string()
    } else {
        "down".to_string()
    };
    vec![
        p.address.clone(),
        p.asn.to_string(),
        p.state.as_str().to_string(),
        up_down,
        p.routes_received.to_string(),
        p.routes_stale.to_string(),
        p.routes_refused.to_string(),
        p.routes_advertised.to_string(),
        p.last_error.clone().unwrap_or_else(|| "-".to_string()),
    ]
}

/// `show handoff`: the last handoff this agent took part in, and its
/// successor once retired. `now_ms` is the wall clock (Unix ms).
pub fn handoff(status: &AgentStatus, now_ms: u64) -> String {
    let mut out = agent_line(status);
    match &status.last_handoff {
        None => out.push_str("no handoff yet: this agent started the node's sessions itself\n"),
        Some(h) => out.push_str(&handoff_lines(h, now_ms)),
    }
    if let Some(s) = &status.successor {
        out.push_str(&format!("retired: agent {} pid {} took over\n", s.version, s.pid));
    }
    out
}

/// `show bmp`: each BMP collector's connection.
pub fn bmp(status: &AgentStatus, now_ms: u64) -> String {
    let mut out = agent_line(status);
    if status.bmp.is_empty() {
        out.push_str("no BMP collector configured\n");
        return out;
    }
    let row = |c: &CollectorStatus| {
        let state = match (c.up, c.carried_on) {
            (true, true) => "up (carried on)",
            (true, false) => "up",
            (false, _) => "down",
        };
        vec![
            c.collector.clone(),
            state.to_string(),
            duration(now_ms.saturating_sub(c.since_ms) / 1000),
            c.connects.to_string(),
            c.last_error.clone().unwrap_or_default(),
        ]
    };
    let rows = status.bmp.iter().map(row).collect();
    out.push_str(&table(&["COLLECTOR", "STATE", "SINCE", "CONNECTS", "LAST ERROR"], rows));
    out
}

/// `show checks`: each checked announcement's verdict.
pub fn checks(status: &AgentStatus, now_ms: u64) -> String {
    let mut out = agent_line(status);
    if status.checks.is_empty() {
        out.push_str("no announcement has a check\n");
        return out;
    }
    let rows = status
        .checks
        .iter()
        .map(|c| {
            vec![
                c.prefix.clone(),
                c.verdict.clone(),
                duration(now_ms.saturating_sub(c.since_ms) / 1000),
                c.detail.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["PREFIX", "VERDICT", "SINCE", "LAST PROBE"], rows));
    out
}

fn handoff_lines(h: &HandoffReport, now_ms: u64) -> String {
    let side = match h.role {
        HandoffRole::Successor => "took over from",
        HandoffRole::Predecessor => "handed over to",
    };
    let result = match h.result {
        HandoffResult::Completed => "completed",
        HandoffResult::Partial => "partial",
        HandoffResult::Refused => "refused",
        HandoffResult::RolledBack => "rolled back",
    };
    let ago = duration(now_ms.saturating_sub(h.at_ms) / 1000);
    let mut out = format!(
        "last handoff: {result}, {ago} ago: {side} agent {} pid {}\n",
        h.other.version, h.other.pid
    );
    let pause = h.pause_ms.map(|ms| format!(", longest pause {ms:.1} ms")).unwrap_or_default();
    out.push_str(&format!(
        "  {} session(s), {} listener(s), {:.1} MB of state{pause}\n",
        h.sessions,
        h.listeners,
        h.state_bytes as f64 / 1e6
    ));
    if let Some(reason) = &h.reason {
        out.push_str(&format!("  reason: {reason}\n"));
    }
    out
}

/// `show events [PEER]`: every peer's recent session events (or one
/// peer's), oldest first, each with how long ago it last happened. Errs
/// naming the peers there are when `peer` is none of them.
pub fn events(doc: &EventsDocument, peer: Option<&str>, now_ms: u64) -> Result<String, String> {
    let chosen: Vec<_> = doc.peers.iter().filter(|p| peer.is_none_or(|a| p.address == a)).collect();
    if let (Some(wanted), true) = (peer, chosen.is_empty()) {
        let known: Vec<&str> = doc.peers.iter().map(|p| p.address.as_str()).collect();
        return Err(format!("no peer {wanted}; the agent's peers: {}", known.join(", ")));
    }
    let mut rows: Vec<(u64, Vec<String>)> = chosen
        .iter()
        .flat_map(|p| {
            p.events.iter().map(|e| {
                let times =
                    if e.times > 1 { format!(" ({} times)", e.times) } else { String::new() };
                let ago = duration(now_ms.saturating_sub(e.at_ms) / 1000);
                let row = vec![
                    ago,
                    p.address.clone(),
                    e.kind.as_str().to_string(),
                    e.detail.clone() + &times,
                ];
                (e.at_ms, row)
            })
        })
        .collect();
    rows.sort_by_key(|(at, _)| *at);
    if rows.is_empty() {
        return Ok("no events yet\n".to_string());
    }
    Ok(table(&["AGO", "PEER", "EVENT", "DETAIL"], rows.into_iter().map(|(_, r)| r).collect()))
}

/// `show routes [PEER]`: for each peer, what it sent us (after the import
/// policy; stale routes marked) and what we send it, by prefix, like
/// `gobgp neighbor PEER adj-in` and `adj-out`.
pub fn routes(doc: &RoutesDocument) -> String {
    let mut out = String::new();
    for peer in &doc.peers {
        out.push_str(&format!(
            "{} (AS {}, {}): {} received, {} advertised\n",
            peer.address, peer.asn, peer.state, peer.received_total, peer.advertised_total
        ));
        out.push_str(&route_table("RECEIVED", &peer.received, peer.received_total, peer));
        out.push_str(&route_table("ADVERTISED", &peer.advertised, peer.advertised_total, peer));
        out.push('\n');
    }
    if doc.peers.is_empty() {
        out.push_str("no peers configured\n");
    }
    out
}

fn route_table(title: &str, rows: &[RouteRow], total: usize, peer: &PeerRoutes) -> String {
    if total == 0 {
        return format!("  {} none\n", title.to_lowercase());
    }
    let number = |n: Option<u32>| n.map_or_else(|| "-".to_string(), |n| n.to_string());
    let cells = rows
        .iter()
        .map(|r| {
            vec![
                format!("  {}", r.prefix),
                r.next_hop.clone(),
                if r.as_path.is_empty() { "-".into() } else { r.as_path.clone() },
                r.origin.clone(),
                number(r.med),
                number(r.local_pref),
                r.stale.clone().unwrap_or_else(|| "-".into()),
                r.communities.join(" "),
            ]
        })
        .collect();
    let first = format!("  {title}");
    let headers = [
        first.as_str(),
        "NEXT HOP",
        "AS PATH",
        "ORIGIN",
        "MED",
        "LOCAL PREF",
        "STALE",
        "COMMUNITIES",
    ];
    let mut out = table(&headers, cells);
    if rows.len() < total {
        out.push_str(&format!(
            "  … {} more (show routes {} --limit {total})\n",
            total - rows.len(),
            peer.address
        ));
    }
    out
}

/// Seconds as `gobgp neighbor` shows them: `HH:MM:SS`, with days in front
/// once there are any.
pub fn duration(seconds: u64) -> String {
    let (d, h, m, s) = (seconds / 86_400, seconds / 3600 % 24, seconds / 60 % 60, seconds % 60);
    if d > 0 { format!("{d}d {h:02}:{m:02}:{s:02}") } else { format!("{h:02}:{m:02}:{s:02}") }
}

/// Left-aligned columns two spaces apart; the last column is not padded.
/// Columns padded to their widest cell, two spaces apart, the last one
/// unpadded; also `kubectl nonstop`'s tables.
pub fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<w$}  "));
            }
        }
        text.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests;
