//! The agent's two status doors, one protocol: a minimal HTTP/1.1 GET
//! responder served on the admin TCP address and on the control socket in
//! the state dir (`control.sock`, owner-only).
//!
//! ```text
//!   GET /status   → the status document (JSON)
//!   GET /metrics  → Prometheus text
//!   GET /events   → each peer's recent session events (JSON)
//!   GET /routes[?peer=ADDR&limit=N] → what each session received and is sent (JSON)
//!   PUT /announcements  → replace the published set (JSON, see [`crate::published`]);
//!                         on the admin port only with `Authorization: Bearer <token>`
//!   POST /stop?mode=restart|decommission   (control socket only)
//! ```
//!
//! Both doors are [`crate::http`] servers, bounded in connections, request
//! size and time: the admin port is reachable from the network. A body is
//! read only once the token is checked.

use std::io;
use std::path::Path;
use std::sync::Arc;

use hyper::{Method, StatusCode};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::{mpsc, oneshot};

use crate::http::{self, Answer, Call, Limits, Reply};

/// The largest published set taken, as JSON (100,000 prefixes with a few
/// communities each fit).
pub const MAX_PUBLISHED_BYTES: usize = 32 << 20;

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

/// A published set to apply, and where to say how it went.
#[derive(Debug)]
pub struct Publish {
    pub body: http::hyper::body::Bytes,
    pub reply: oneshot::Sender<Answer>,
}

/// Where `PUT /announcements` goes: the speaker, which checks and applies
/// the set and answers.
#[derive(Debug, Clone)]
pub struct Publisher {
    pub requests: mpsc::Sender<Publish>,
    /// What the admin port wants in `Authorization: Bearer`; None: the
    /// admin port takes no set (the control socket still does).
    pub token: Option<Arc<str>>,
}

pub async fn serve_tcp(listener: TcpListener, render: Render, publisher: Publisher) {
    let handler = Arc::new(move |call: Call| answer(call, &render, None, &publisher, true));
    http::serve(listener, Limits::default(), handler).await;
}

/// The control socket: the same, plus POST /stop; owner-only, so it takes
/// a published set without a token.
pub async fn serve_unix(
    listener: UnixListener,
    render: Render,
    stop: mpsc::Sender<StopMode>,
    publisher: Publisher,
) {
    let handler = Arc::new(move |call: Call| answer(call, &render, Some(&stop), &publisher, false));
    http::serve(listener, Limits::default(), handler).await;
}

/// Whether `given` is the token, in time that does not depend on where
/// they differ.
fn token_matches(want: &str, given: &str) -> bool {
    want.len() == given.len()
        && want.bytes().zip(given.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

fn publish(call: Call, publisher: &Publisher, network: bool) -> Reply {
    if network {
        let Some(want) = publisher.token.clone() else {
            return Answer::text(
                StatusCode::FORBIDDEN,
                "publishing on the admin port is off: start the agent with --api-token-file\n",
            )
            .now();
        };
        if !call.bearer.as_deref().is_some_and(|given| token_matches(&want, given)) {
            return Answer::text(
                StatusCode::UNAUTHORIZED,
                "PUT /announcements needs `Authorization: Bearer <token>` with the agent's API token\n",
            )
            .now();
        }
    }
    let requests = publisher.requests.clone();
    Box::pin(async move {
        let body = match call.body(MAX_PUBLISHED_BYTES).await {
            Ok(body) => body,
            Err(answer) => return answer,
        };
        let (reply, answered) = oneshot::channel();
        if requests.send(Publish { body, reply }).await.is_err() {
            return Answer::text(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n");
        }
        answered.await.unwrap_or_else(|_| {
            Answer::text(StatusCode::SERVICE_UNAVAILABLE, "the agent is stopping\n")
        })
    })
}

fn answer(
    call: Call,
    render: &Render,
    stop: Option<&mpsc::Sender<StopMode>>,
    publisher: &Publisher,
    network: bool,
) -> Reply {
    if call.path == "/announcements" && call.method == Method::PUT {
        return publish(call, publisher, network);
    }
    let (method, path) = (&call.method, call.path.as_str());
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
        _ => {
            Answer::text(StatusCode::METHOD_NOT_ALLOWED, "only GET here, and PUT /announcements\n")
                .now()
        }
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
