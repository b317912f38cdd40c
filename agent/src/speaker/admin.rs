//! The agent's two status doors, one protocol: a minimal HTTP/1.1 GET
//! responder served on the admin TCP address and on the control socket in
//! the state dir (`control.sock`, owner-only).
//!
//! ```text
//!   GET /status   → the status document (JSON)
//!   GET /metrics  → Prometheus text
//!   GET /events   → each peer's recent session events (JSON)
//!   GET /routes[?peer=ADDR&limit=N] → what each session received and is sent (JSON)
//!   POST /stop?mode=restart|decommission   (control socket only)
//! ```
//!
//! Both doors are [`crate::http`] servers, bounded in connections, request
//! size and time: the admin port is reachable from the network.

use std::io;
use std::path::Path;
use std::sync::Arc;

use hyper::{Method, StatusCode};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;

use crate::http::{self, Answer, Limits, Reply};

/// Answers a GET of a path (with its query), 404 included. Most pages are
/// ready at once; `/routes` asks each peer's task for its tables first.
pub type Render = Arc<dyn Fn(&str) -> Reply + Send + Sync>;

/// How the agent is asked to stop over the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Close sessions without withdrawing; routers keep routes stale.
    Restart,
    /// Withdraw everything gracefully (RFC 8326), then exit.
    Decommission,
}

pub async fn serve_tcp(listener: TcpListener, render: Render) {
    let handler = Arc::new(move |method: &Method, path: &str| answer(method, path, &render, None));
    http::serve(listener, Limits::default(), handler).await;
}

/// The control socket: the same GETs, plus POST /stop (owner-only socket).
pub async fn serve_unix(listener: UnixListener, render: Render, stop: mpsc::Sender<StopMode>) {
    let handler =
        Arc::new(move |method: &Method, path: &str| answer(method, path, &render, Some(&stop)));
    http::serve(listener, Limits::default(), handler).await;
}

fn answer(
    method: &Method,
    path: &str,
    render: &Render,
    stop: Option<&mpsc::Sender<StopMode>>,
) -> Reply {
    let mode = match path {
        "/stop?mode=restart" => Some(StopMode::Restart),
        "/stop?mode=decommission" => Some(StopMode::Decommission),
        _ => None,
    };
    match (method, stop, mode) {
        (&Method::POST, Some(stop), Some(mode)) => match stop.try_send(mode) {
            Ok(()) => Answer::text(
                StatusCode::ACCEPTED,
                format!("stopping ({mode:?}), pid {}\n", std::process::id()),
            ),
            Err(_) => Answer::text(StatusCode::CONFLICT, "already stopping\n"),
        }
        .now(),
        (&Method::POST, Some(_), None) => Answer::text(
            StatusCode::BAD_REQUEST,
            "POST /stop?mode=restart or /stop?mode=decommission\n",
        )
        .now(),
        (&Method::GET, _, _) => render(path),
        _ => Answer::text(StatusCode::METHOD_NOT_ALLOWED, "only GET here\n").now(),
    }
}

/// GET `path` over the control socket; the body, or why it failed.
pub async fn get(socket: &Path, path: &str) -> io::Result<String> {
    request(socket, "GET", path).await
}

/// A request over the control socket; the body of a 2xx answer, or why not.
pub async fn request(socket: &Path, method: &str, path: &str) -> io::Result<String> {
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    http::request_unix(socket, method, path).await.map_err(|e| match e {
        http::ClientError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    })
}
