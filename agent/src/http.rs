//! The HTTP/1.1 doors of both binaries, on hyper: a server whose every
//! door is bounded, and a one-request client.
//!
//! ```text
//!   listener ──accept (a slot of `connections`)──▶ hyper http1, keep-alive off
//!              │  accept error: logged once per kind, backs off 10 ms → 1 s
//!              └─ request head ≤ 8 KiB, read within `head_timeout`;
//!                 the whole exchange within `exchange_timeout`
//!   handler(Call { method, path?query, bearer token }) ──▶ Reply ──await──▶ Answer
//!                 the body is read only by a handler that wants it, up to its own limit
//! ```
//!
//! The agent serves `/status` and `/metrics` on its admin TCP port and on
//! the control socket; the operator serves its metrics and asks each node's
//! agent for `/status`. Anything on the network may knock on these ports:
//! a flood of connections waits for a slot instead of growing memory, a
//! slow or huge request is dropped, and an accept error (EMFILE, say)
//! cannot spin a core.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tracing::warn;

/// The HTTP types of the handlers' signatures, for the operator's use.
pub use hyper;

/// The smallest request buffer hyper takes, and all a GET needs.
pub const MAX_HEAD_BYTES: usize = 8192;

/// How much a door lets in at once, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at the same time; the next waits to be accepted.
    pub connections: usize,
    /// The request head must arrive within this.
    pub head_timeout: Duration,
    /// The whole exchange, answer included, within this.
    pub exchange_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connections: 64,
            head_timeout: Duration::from_secs(5),
            exchange_timeout: Duration::from_secs(10),
        }
    }
}

/// What a handler answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    pub fn ok(content_type: &'static str, body: String) -> Answer {
        Answer { status: StatusCode::OK, content_type, body }
    }

    pub fn text(status: StatusCode, body: impl Into<String>) -> Answer {
        Answer { status, content_type: "text/plain", body: body.into() }
    }
}

/// An answer to come: most are ready at once ([`Answer::now`]); one that
/// asks other tasks (the agent's `/routes`) is awaited, within the
/// exchange's timeout.
pub type Reply = std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send>>;

impl Answer {
    /// This answer, as a reply that is ready.
    pub fn now(self) -> Reply {
        Box::pin(std::future::ready(self))
    }
}

/// A request as a handler sees it; its body is read only if the handler
/// asks ([`Call::body`]), after it has looked at the rest.
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    /// The path with its query.
    pub path: String,
    /// The token of an `Authorization: Bearer` header.
    pub bearer: Option<String>,
    body: Incoming,
    length: Option<usize>,
}

impl Call {
    /// The body, at most `max` bytes of it: a larger one is answered 413.
    pub async fn body(self, max: usize) -> Result<Bytes, Answer> {
        let too_large = || {
            Answer::text(StatusCode::PAYLOAD_TOO_LARGE, format!("the body is over {max} bytes\n"))
        };
        if self.length.is_some_and(|n| n > max) {
            return Err(too_large());
        }
        match http_body_util::Limited::new(self.body, max).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => {
                Err(Answer::text(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")))
            }
        }
    }
}

/// Answers a request.
pub type Handler = Arc<dyn Fn(Call) -> Reply + Send + Sync>;

/// A listener whose connections can be served.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&self) -> impl std::future::Future<Output = io::Result<Self::Io>> + Send;
}

impl Listener for TcpListener {
    type Io = TcpStream;
    async fn accept(&self) -> io::Result<TcpStream> {
        TcpListener::accept(self).await.map(|(s, _)| s)
    }
}

impl Listener for UnixListener {
    type Io = UnixStream;
    async fn accept(&self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(s, _)| s)
    }
}

/// Serves `listener` until the task is dropped.
pub async fn serve<L: Listener>(listener: L, limits: Limits, handler: Handler) {
    let slots = Arc::new(Semaphore::new(limits.connections));
    let mut backoff = Backoff::default();
    loop {
        let slot = slots.clone().acquire_owned().await.expect("the semaphore is never closed");
        match listener.accept().await {
            Ok(io) => {
                backoff.reset();
                let handler = handler.clone();
                tokio::spawn(async move {
                    exchange(io, limits, handler).await;
                    drop(slot);
                });
            }
            Err(e) => backoff.wait(&e).await,
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    limits: Limits,
    handler: Handler,
) {
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (head, body) = request.into_parts();
        let header = |name| {
            head.headers.get(name).and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
        };
        let call = Call {
            path: head.uri.path_and_query().map_or("/", |p| p.as_str()).to_string(),
            bearer: header(hyper::header::AUTHORIZATION)
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|t| t.trim().to_string()),
            length: header(hyper::header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
            method: head.method,
            body,
        };
        let reply = handler(call);
        async move {
            let answer = reply.await;
            let response = Response::builder()
                .status(answer.status)
                .header(hyper::header::CONTENT_TYPE, answer.content_type)
                .body(Full::new(Bytes::from(answer.body)))
                .expect("a response from valid parts");
            Ok::<_, Infallible>(response)
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .keep_alive(false)
        .serve_connection(TokioIo::new(io), service);
    // Too slow or malformed: the connection is simply dropped.
    let _ = tokio::time::timeout(limits.exchange_timeout, connection).await;
}

/// Accept errors (out of descriptors, say) neither spin nor flood the log.
#[derive(Debug, Default)]
struct Backoff {
    delay: Duration,
    said: Option<io::ErrorKind>,
}

impl Backoff {
    async fn wait(&mut self, e: &io::Error) {
        if self.said != Some(e.kind()) {
            warn!("accepting a connection: {e} (backing off)");
            self.said = Some(e.kind());
        }
        self.delay = (self.delay * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        tokio::time::sleep(self.delay).await;
    }

    fn reset(&mut self) {
        self.delay = Duration::ZERO;
        self.said = None;
    }
}

/// Why a request got no answer worth having.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("{status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// What a client sends besides its method and path.
#[derive(Debug, Clone, Default)]
pub struct Outgoing<'a> {
    /// For `Authorization: Bearer`.
    pub bearer: Option<&'a str>,
    pub body: Bytes,
}

/// One request on a connected stream; the answer's head.
async fn send<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    method: Method,
    host: &str,
    path: &str,
    outgoing: Outgoing<'_>,
) -> Result<Response<Incoming>, ClientError> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(connection);
    let mut request = Request::builder().method(method).uri(path).header(hyper::header::HOST, host);
    if let Some(token) = outgoing.bearer {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Full::new(outgoing.body))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    Ok(sender.send_request(request).await?)
}

/// One request on a connected stream; the body of a 2xx answer.
async fn ask<S: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: S,
    method: Method,
    path: &str,
    outgoing: Outgoing<'_>,
) -> Result<String, ClientError> {
    let response = send(io, method, "agent", path, outgoing).await?;
    let status = response.status();
    let bytes = response.into_body().collect().await?.to_bytes();
    let body = String::from_utf8_lossy(&bytes).into_owned();
    if status.is_success() { Ok(body) } else { Err(ClientError::Status { status, body }) }
}

/// `GET path` from `addr`, all within `limit`.
pub async fn get_tcp(addr: SocketAddr, path: &str, limit: Duration) -> Result<String, ClientError> {
    request_tcp(addr, Method::GET, path, Outgoing::default(), limit).await
}

/// A request to `addr`, all within `limit`; the body of a 2xx answer.
pub async fn request_tcp(
    addr: SocketAddr,
    method: Method,
    path: &str,
    outgoing: Outgoing<'_>,
    limit: Duration,
) -> Result<String, ClientError> {
    let asked = async { ask(TcpStream::connect(addr).await?, method, path, outgoing).await };
    tokio::time::timeout(limit, asked).await.map_err(|_| ClientError::Timeout(limit))?
}

/// The status `GET path` from `authority` ("host:port") answers with,
/// all within `limit`; the body is not read.
pub async fn get_status(
    authority: &str,
    path: &str,
    limit: Duration,
) -> Result<StatusCode, ClientError> {
    let asked = async {
        let response = send(
            TcpStream::connect(authority).await?,
            Method::GET,
            authority,
            path,
            Outgoing::default(),
        )
        .await?;
        Ok(response.status())
    };
    tokio::time::timeout(limit, asked).await.map_err(|_| ClientError::Timeout(limit))?
}

/// A request over a Unix socket; the body of a 2xx answer.
pub async fn request_unix(
    socket: &Path,
    method: Method,
    path: &str,
) -> Result<String, ClientError> {
    request_unix_with(socket, method, path, Outgoing::default()).await
}

/// A request with a body over a Unix socket; the body of a 2xx answer.
pub async fn request_unix_with(
    socket: &Path,
    method: Method,
    path: &str,
    outgoing: Outgoing<'_>,
) -> Result<String, ClientError> {
    ask(UnixStream::connect(socket).await?, method, path, outgoing).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn server(limits: Limits) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handler: Handler = Arc::new(|call: Call| {
            let method = call.method.clone();
            match call.path.as_str() {
                "/status" => Answer::ok("application/json", format!("{{\"method\":\"{method}\"}}")),
                // The body, read only here and at most 16 bytes of it.
                "/echo" => {
                    return Box::pin(async move {
                        let bearer = call.bearer.clone().unwrap_or_default();
                        match call.body(16).await {
                            Ok(body) => Answer::ok(
                                "text/plain",
                                format!("{bearer}:{}", String::from_utf8_lossy(&body)),
                            ),
                            Err(answer) => answer,
                        }
                    });
                }
                path => Answer::text(StatusCode::NOT_FOUND, format!("no such path: {path}")),
            }
            .now()
        });
        tokio::spawn(serve(listener, limits, handler));
        addr
    }

    /// What the server sends back on a raw connection after `request`.
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let _ = stream.write_all(request).await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
        read.await.expect("the server answers or closes").ok();
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn answers_a_get_and_names_a_missing_path() {
        let addr = server(Limits::default()).await;
        let limit = Duration::from_secs(5);
        assert_eq!(get_tcp(addr, "/status", limit).await.unwrap(), "{\"method\":\"GET\"}");
        match get_tcp(addr, "/nope", limit).await {
            Err(ClientError::Status { status, body }) => {
                assert_eq!((status, body.as_str()), (StatusCode::NOT_FOUND, "no such path: /nope"));
            }
            other => panic!("{other:?}"),
        }
        // The old clients' request, no Host header, still works.
        let answer = raw(addr, b"GET /status HTTP/1.1\r\n\r\n").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_the_handlers_limit() {
        let addr = server(Limits::default()).await;
        let put = |body: &str, length: Option<usize>| {
            let length = length.unwrap_or(body.len());
            format!(
                "PUT /echo HTTP/1.1\r\nAuthorization: Bearer  s3cret \r\ncontent-length: {length}\r\n\r\n{body}"
            )
        };
        // (request, what the answer starts with, what it holds)
        let cases = [
            (put("sixteen bytes ok", None), "HTTP/1.1 200", "s3cret:sixteen bytes ok"),
            (put("seventeen bytes!!", None), "HTTP/1.1 413", "the body is over 16 bytes"),
            // Declared too long: refused before a byte of it is read.
            (put("", Some(1 << 30)), "HTTP/1.1 413", "the body is over 16 bytes"),
            (
                "PUT /echo HTTP/1.1\r\ncontent-length: 2\r\n\r\nhi".to_string(),
                "HTTP/1.1 200",
                ":hi",
            ),
        ];
        for (request, status, holds) in cases {
            let answer = raw(addr, request.as_bytes()).await;
            assert!(answer.starts_with(status), "{request:?}: {answer}");
            assert!(answer.contains(holds), "{request:?}: {answer}");
        }
    }

    #[tokio::test]
    async fn a_request_head_over_8_kib_is_refused() {
        let addr = server(Limits::default()).await;
        let big =
            format!("GET /status HTTP/1.1\r\nx-pad: {}\r\n\r\n", "a".repeat(3 * MAX_HEAD_BYTES));
        let answer = raw(addr, big.as_bytes()).await;
        assert!(!answer.starts_with("HTTP/1.1 200"), "a huge head was served: {answer}");
        // And the door still works.
        assert!(get_tcp(addr, "/status", Duration::from_secs(5)).await.is_ok());
    }

    #[tokio::test]
    async fn a_client_that_never_finishes_its_head_is_dropped() {
        let limits = Limits { head_timeout: Duration::from_millis(300), ..Limits::default() };
        let addr = server(limits).await;
        // raw() waits at most 10 s: the server must close well before.
        let answer = raw(addr, b"GET /status HTTP/1.1\r\nx-slow: ").await;
        assert!(!answer.starts_with("HTTP/1.1 200"), "{answer}");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_slot() {
        let limits = Limits { connections: 2, ..Limits::default() };
        let addr = server(limits).await;
        // Two clients hold both slots, saying nothing.
        let idle1 = TcpStream::connect(addr).await.unwrap();
        let idle2 = TcpStream::connect(addr).await.unwrap();
        let third = tokio::spawn(get_tcp(addr, "/status", Duration::from_secs(10)));
        // Not served while both slots are taken...
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!third.is_finished(), "a third connection was served beside two held slots");
        // ...and served as soon as one is let go.
        drop(idle1);
        let answer = third.await.unwrap().unwrap();
        assert_eq!(answer, "{\"method\":\"GET\"}");
        drop(idle2);
    }

    #[tokio::test]
    async fn accept_errors_back_off_instead_of_spinning() {
        let mut backoff = Backoff::default();
        let e = io::Error::from_raw_os_error(24); // EMFILE
        let started = tokio::time::Instant::now();
        for _ in 0..5 {
            backoff.wait(&e).await;
        }
        // 10 + 20 + 40 + 80 + 160 ms at least: five errors cannot take less.
        assert!(started.elapsed() >= Duration::from_millis(310), "{:?}", started.elapsed());
        assert_eq!(backoff.said, Some(e.kind()), "said once, for its kind");
        backoff.reset();
        assert_eq!(backoff.delay, Duration::ZERO);
    }
}
