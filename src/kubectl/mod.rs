//! What `kubectl nonstop` prints: a gateway's state, its rollout history
//! and its sessions, as tables a person reads in a terminal. Pure: from
//! the objects the API server returns; the `kubectl-nonstop` binary
//! fetches them and writes the retry annotation.

use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::api::history::{BgpGatewayRollout, Rollout, RolloutResult};
use crate::api::{BgpGateway, BgpGatewayStatus, ConditionType};

/// The first row as the header, the agent's table layout (`show peers`).
pub fn table(rows: &[Vec<String>]) -> String {
    let Some((head, rest)) = rows.split_first() else { return String::new() };
    let headers: Vec<&str> = head.iter().map(String::as_str).collect();
    nonstop_agent::show::table(&headers, rest.to_vec())
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.map(String::from).to_vec()
}

/// `HH:MM:SS` of a UTC time, enough within one rollout's table.
fn clock(time: &Time) -> String {
    let text = time.0.to_string();
    text.get(11..19).unwrap_or(&text).to_string()
}

/// Whole seconds from `from` to `to`, e.g. "41 s".
fn took(from: &Time, to: &Time) -> String {
    format!("{} s", to.0.duration_since(from.0).as_secs())
}

fn short(revision: Option<&str>) -> &str {
    revision.unwrap_or("none")
}

fn condition(status: &BgpGatewayStatus, kind: ConditionType) -> Option<&str> {
    let found = status.conditions.iter().find(|c| c.type_ == kind.as_str())?;
    Some(if found.status == "True" { found.message.as_str() } else { "" })
}

/// `kubectl nonstop status`: the gateway, its last rollout and each node.
pub fn status(gw: &BgpGateway) -> String {
    let status = gw.status.clone().unwrap_or_default();
    let mut out = format!("BgpGateway {}/{}\n", gw.namespace().unwrap_or_default(), gw.name_any());
    let ready = status.conditions.iter().find(|c| c.type_ == ConditionType::Ready.as_str());
    let _ = writeln!(
        out,
        "  Ready:     {} ({} nodes, {} sessions){}",
        ready.map_or("Unknown", |c| c.status.as_str()),
        status.ready.as_deref().unwrap_or("?"),
        status.sessions.as_deref().unwrap_or("?"),
        ready
            .filter(|c| c.status != "True")
            .map(|c| format!(": {}", c.message))
            .unwrap_or_default(),
    );
    let _ = writeln!(
        out,
        "  Rollout:   {}, image {} (revision {})",
        status.rollout.as_deref().unwrap_or("?"),
        status.image.as_deref().unwrap_or(&gw.spec.image),
        short(status.update_revision.as_deref()),
    );
    if let Some(why) = condition(&status, ConditionType::Degraded).filter(|m| !m.is_empty()) {
        let _ = writeln!(
            out,
            "  Degraded:  {why}\n             (`kubectl nonstop retry {}` resumes it)",
            gw.name_any()
        );
    }
    if let Some(last) = &status.last_rollout {
        let _ = writeln!(out, "  Last rollout: {}", summary(last));
    }
    let mut rows = vec![row([
        "NODE",
        "POD",
        "REVISION",
        "SESSIONS",
        "ROUTES",
        "LAST UPGRADE",
        "PAUSE",
        "NOTE",
    ])];
    for node in &status.nodes {
        let upgrade = node.last_upgrade.as_ref();
        let note = match (&node.maintenance, node.peers.iter().find(|p| !p.is_established())) {
            (Some(m), _) => format!("{m:?}"),
            (None, Some(down)) => format!("{} {}", down.peer, down.state),
            (None, None) => String::new(),
        };
        rows.push(vec![
            node.node.clone(),
            node.pod.clone().unwrap_or_else(|| "-".into()),
            short(node.revision.as_deref()).into(),
            format!("{}/{}", node.sessions.established, node.sessions.configured),
            node.routes_advertised.to_string(),
            upgrade.map_or_else(|| "-".into(), |u| format!("{:?} {}", u.result, u.time.0)),
            upgrade.and_then(|u| u.pause_ms).map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
            note,
        ]);
    }
    out.push('\n');
    out + &table(&rows)
}

/// One line about a rollout: number, from → to, how it ended, who.
fn summary(r: &Rollout) -> String {
    let from = r.from_image.as_deref().unwrap_or_else(|| short(r.from_revision.as_deref()));
    let how = match (&r.result, &r.finished) {
        (RolloutResult::Progressing, _) => format!("Progressing since {}", r.started.0),
        (result, Some(end)) => {
            format!("{result:?} in {} (started {})", took(&r.started, end), r.started.0)
        }
        (result, None) => format!("{result:?}"),
    };
    let by = r.triggered_by.as_deref().map(|b| format!(", by {b}")).unwrap_or_default();
    format!("#{} {from} -> {}: {how}{by}", r.number, r.image)
}

/// `kubectl nonstop history`: each recorded rollout, oldest first, with
/// its retries and every node's upgrade.
pub fn history(gateway: &str, records: &[BgpGatewayRollout]) -> String {
    if records.is_empty() {
        return format!("no rollout of {gateway} on record\n");
    }
    let mut records: Vec<&BgpGatewayRollout> = records.iter().collect();
    records.sort_by_key(|r| r.spec.rollout.number);
    let mut out = String::new();
    for record in records {
        let rollout = &record.spec.rollout;
        let _ = writeln!(out, "{}", summary(rollout));
        if let Some(reason) = &rollout.reason {
            let _ = writeln!(out, "  failed: {reason}");
        }
        for retry in &rollout.retries {
            let by = retry.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
            let after = retry.after.as_deref().map(|a| format!(" after: {a}")).unwrap_or_default();
            let _ = writeln!(out, "  retried at {}{by}{after}", retry.time.0);
        }
        let mut rows = vec![row(["  NODE", "STRATEGY", "RESULT", "PAUSE", "AT", "REASON"])];
        for node in &record.spec.nodes {
            rows.push(vec![
                format!("  {}", node.node),
                format!("{:?}", node.upgrade.mode),
                format!("{:?}", node.upgrade.result),
                node.upgrade.pause_ms.map_or_else(|| "-".into(), |ms| format!("{ms} ms")),
                clock(&node.upgrade.time),
                node.upgrade.reason.clone().unwrap_or_default(),
            ]);
        }
        if record.spec.nodes.is_empty() {
            out += "  no node upgraded (nodes started at this revision)\n";
        } else {
            out += &table(&rows);
        }
        out.push('\n');
    }
    out
}

/// `kubectl nonstop peers`: each node's sessions, as the gateway's status
/// lists them (those down first): state, for how long, routes each way,
/// and why one is down. `now` is when it is shown.
pub fn peers(gw: &BgpGateway, now: &Time) -> String {
    let status = gw.status.clone().unwrap_or_default();
    let mut rows =
        vec![row(["NODE", "PEER", "STATE", "UP FOR", "RECEIVED", "ADVERTISED", "LAST ERROR"])];
    for node in &status.nodes {
        if node.peers.is_empty() {
            let counts = format!("{}/{}", node.sessions.established, node.sessions.configured);
            rows.push(vec![
                node.node.clone(),
                "-".into(),
                format!("{counts} Established"),
                String::new(),
                String::new(),
                String::new(),
                "not listed: the status lists 256 sessions at most".into(),
            ]);
        }
        for p in &node.peers {
            let error = match (&p.last_error, &p.last_reset) {
                (Some(e), Some(r)) => format!("{e}; last reset: {r}"),
                (Some(e), None) => e.clone(),
                (None, Some(r)) => format!("last reset: {r}"),
                (None, None) => String::new(),
            };
            rows.push(vec![
                node.node.clone(),
                p.peer.clone(),
                p.state.clone(),
                p.established_since.as_ref().map_or_else(
                    || "-".into(),
                    |t| {
                        nonstop_agent::show::duration(
                            now.0.duration_since(t.0).as_secs().max(0) as u64
                        )
                    },
                ),
                p.routes_received.to_string(),
                p.routes_advertised.to_string(),
                error,
            ]);
        }
    }
    table(&rows)
}

/// Why `kubectl nonstop retry` has nothing to retry, if it has not.
pub fn nothing_to_retry(gw: &BgpGateway) -> Option<String> {
    let status = gw.status.clone().unwrap_or_default();
    let failed = status.last_rollout.as_ref().is_some_and(|r| r.result == RolloutResult::Failed);
    let degraded = condition(&status, ConditionType::Degraded).is_some_and(|m| !m.is_empty());
    (!failed && !degraded).then(|| {
        format!(
            "{} has no failed rollout to retry (rollout: {})",
            gw.name_any(),
            status.rollout.as_deref().unwrap_or("unknown")
        )
    })
}

#[cfg(test)]
mod tests;
