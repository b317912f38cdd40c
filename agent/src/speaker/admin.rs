//! The agent's two status doors, one protocol: a minimal HTTP/1.1 GET
//! responder served on the admin TCP address and on the control socket in
//! the state dir (`control.sock`, owner-only).
//!
//! ```text
//!   GET /status   → the status document (JSON)
//!   GET /metrics  → Prometheus text
//!   POST /stop?mode=restart|decommission   (control socket only)
//! ```
//!
//! Two routes and no bodies do not need an HTTP framework.

use std::io;
use std::path::Path;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::mpsc;

/// Renders the current answer for a path; None is 404.
pub type Render = std::sync::Arc<dyn Fn(&str) -> Option<(&'static str, String)> + Send + Sync>;

/// How the agent is asked to stop over the control socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Close sessions without withdrawing; routers keep routes stale.
    Restart,
    /// Withdraw everything gracefully (RFC 8326), then exit.
    Decommission,
}

pub async fn serve_tcp(listener: TcpListener, render: Render) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let render = render.clone();
        tokio::spawn(async move { answer(stream, &render, None).await });
    }
}

/// The control socket: the same GETs, plus POST /stop (owner-only socket).
pub async fn serve_unix(listener: UnixListener, render: Render, stop: mpsc::Sender<StopMode>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let render = render.clone();
        let stop = stop.clone();
        tokio::spawn(async move { answer(stream, &render, Some(&stop)).await });
    }
}

async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    render: &Render,
    stop: Option<&mpsc::Sender<StopMode>>,
) {
    let mut request = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") && request.len() < 8192 {
        match tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut chunk)).await
        {
            Ok(Ok(n)) if n > 0 => request.extend_from_slice(&chunk[..n]),
            _ => return,
        }
    }
    let line = String::from_utf8_lossy(&request);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let mode = match path {
        "/stop?mode=restart" => Some(StopMode::Restart),
        "/stop?mode=decommission" => Some(StopMode::Decommission),
        _ => None,
    };
    let (status, content_type, body) = match (method, stop, mode) {
        ("POST", Some(stop), Some(mode)) => {
            let _ = stop.send(mode).await;
            (
                "202 Accepted",
                "text/plain",
                format!("stopping ({mode:?}), pid {}\n", std::process::id()),
            )
        }
        ("POST", Some(_), None) => (
            "400 Bad Request",
            "text/plain",
            "POST /stop?mode=restart or /stop?mode=decommission\n".to_string(),
        ),
        ("GET", _, _) => match render(path) {
            Some((content_type, body)) => ("200 OK", content_type, body),
            None => ("404 Not Found", "text/plain", format!("no such path: {path}\n")),
        },
        _ => ("405 Method Not Allowed", "text/plain", "only GET here\n".to_string()),
    };
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// GET `path` over the control socket; the body, or why it failed.
pub async fn get(socket: &Path, path: &str) -> io::Result<String> {
    request(socket, "GET", path).await
}

/// A request over the control socket; the body of a 2xx answer, or why not.
pub async fn request(socket: &Path, method: &str, path: &str) -> io::Result<String> {
    let mut stream = UnixStream::connect(socket).await?;
    stream.write_all(format!("{method} {path} HTTP/1.1\r\nhost: agent\r\n\r\n").as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "not an HTTP response"))?;
    if !head.starts_with("HTTP/1.1 2") {
        return Err(io::Error::other(head.lines().next().unwrap_or("").to_string()));
    }
    Ok(body.to_string())
}
