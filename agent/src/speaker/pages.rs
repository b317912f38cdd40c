//! The admin door's pages: `/status`, `/metrics`, `/events` and `/routes`
//! (see [`super::admin`] for the door itself), rendered from the current
//! peers' status and, for `/routes`, their tasks' tables.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use hyper::StatusCode;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use super::routes::{self, PeerView, Query};
use super::status::{self, AgentStatus, EventsDocument, PeerEvents, PeerStatus, PublishedStatus};
use super::{Standing, admin};
use crate::config::Config;
use crate::http::Answer;
use crate::restart;

pub(super) fn renderer(
    config: &Config,
    router_id: Ipv4Addr,
    pod: Option<String>,
    registry: Arc<Registry>,
    views: watch::Receiver<Vec<PeerView>>,
    (standing, board, checks): (
        Arc<std::sync::Mutex<Standing>>,
        super::monitor::Board,
        status::CheckBoard,
    ),
) -> admin::Render {
    let started = Instant::now();
    let (asn, listen) = (config.asn, config.listen);
    Arc::new(move |path: &str| {
        let (page, query) = path.split_once('?').unwrap_or((path, ""));
        let json = |body: String| Answer::ok("application/json", body + "\n").now();
        match page {
            "/status" => {
                let now_ms = restart::now_ms();
                let mut peers: Vec<PeerStatus> = views
                    .borrow()
                    .iter()
                    .map(|view| {
                        let mut p = view.status.borrow().clone();
                        p.uptime_seconds = p
                            .established_since_ms
                            .map_or(0, |since| now_ms.saturating_sub(since) / 1000);
                        p
                    })
                    .collect();
                peers.sort_by(|a, b| a.address.cmp(&b.address));
                let standing = standing.lock().expect("standing");
                let checks = checks.lock().expect("checks").clone();
                // What the agent means to announce now: a prefix its check
                // keeps out (not probed yet, or withdrawn) is not missing.
                let kept_out = checks
                    .iter()
                    .filter(|c| matches!(c.verdict.as_str(), "unknown" | "down"))
                    .count();
                let status = AgentStatus {
                    version: env!("CARGO_PKG_VERSION").to_string(),
                    pid: std::process::id(),
                    pod: pod.clone(),
                    asn,
                    router_id: router_id.to_string(),
                    listen: listen.map_or_else(|| "none".into(), |a| a.to_string()),
                    uptime_seconds: started.elapsed().as_secs(),
                    // A published prefix also in the config is the config's.
                    routes_announced: standing.configured.len().saturating_sub(kept_out)
                        + (standing.published.announce.iter())
                            .filter(|a| !standing.configured.contains(&a.prefix))
                            .count(),
                    role: standing.role,
                    successor: standing.successor.clone(),
                    last_handoff: standing.last_handoff.clone(),
                    peers,
                    bmp: board.lock().expect("board").clone(),
                    checks,
                    published: (!standing.published.version.is_empty()
                        || !standing.published.is_empty())
                    .then(|| PublishedStatus {
                        version: standing.published.version.clone(),
                        prefixes: standing.published.announce.len(),
                    }),
                    peers_not_run: standing.not_run.clone(),
                };
                json(serde_json::to_string_pretty(&status).expect("JSON"))
            }
            "/announcements" => {
                let published = standing.lock().expect("standing").published.clone();
                json(serde_json::to_string_pretty(&*published).expect("JSON"))
            }
            "/metrics" => Answer::ok(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                status::render_metrics(&registry),
            )
            .now(),
            "/events" => {
                let mut peers: Vec<PeerEvents> = views
                    .borrow()
                    .iter()
                    .map(|view| {
                        let p = view.status.borrow();
                        PeerEvents { address: p.address.clone(), events: p.events.clone() }
                    })
                    .collect();
                peers.sort_by(|a, b| a.address.cmp(&b.address));
                json(serde_json::to_string_pretty(&EventsDocument { peers }).expect("JSON"))
            }
            "/routes" => match Query::parse(query) {
                Ok(query) => Box::pin(routes::answer(views.borrow().clone(), query)),
                Err(e) => Answer::text(StatusCode::BAD_REQUEST, e + "\n").now(),
            },
            _ => Answer::text(StatusCode::NOT_FOUND, format!("no such path: {path}\n")).now(),
        }
    })
}
