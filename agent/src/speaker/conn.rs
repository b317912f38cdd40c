//! One TCP connection to a peer, with an inbound buffer that the codec reads
//! whole messages from and an outbound queue drained as the socket accepts.
//!
//! ```text
//!   socket ─read─▶ rbuf ─▶ frames          queue(bytes) ─▶ wbuf ─write─▶ socket
//! ```
//!
//! Reading and writing are separate halves so a peer task can wait on both at
//! once: a peer that stops reading fills our queue but never blocks our reads,
//! timers or other peers.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::peer::ConnId;

/// How long a closing connection waits for the peer's FIN after its own.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

pub struct Conn {
    /// Unique for the agent's life: tells a slot's connection from the one
    /// that replaced it (a collision can swap them mid-read).
    pub id: ConnId,
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    pub rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    wpos: usize,
    pub local: SocketAddr,
    pub remote: SocketAddr,
}

impl Conn {
    pub fn new(stream: TcpStream) -> io::Result<Conn> {
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let remote = stream.peer_addr()?;
        Ok(Self::adopted(stream, local, remote))
    }

    /// A connection whose ends are known and whose socket options are set
    /// (a session passed by a predecessor): no system call, as a handoff
    /// adopts a thousand of them inside its pause.
    pub fn adopted(stream: TcpStream, local: SocketAddr, remote: SocketAddr) -> Conn {
        let (reader, writer) = stream.into_split();
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Conn {
            id: ConnId(NEXT.fetch_add(1, Ordering::Relaxed)),
            reader,
            writer,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
            wpos: 0,
            local,
            remote,
        }
    }

    /// Appends bytes to send; they go out as the socket takes them.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Appends bytes to send, taking the buffer itself when nothing is
    /// queued (a full table's UPDATEs are not copied again).
    pub fn queue_owned(&mut self, bytes: Vec<u8>) {
        if self.wbuf.is_empty() {
            self.wbuf = bytes;
            self.wpos = 0;
        } else {
            self.wbuf.extend_from_slice(&bytes);
        }
    }

    /// Bytes queued but not yet written.
    pub fn pending(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// The bytes queued but not yet written.
    pub fn unwritten(&self) -> &[u8] {
        &self.wbuf[self.wpos..]
    }

    /// A second descriptor for the socket, to pass to a successor agent.
    pub fn dup(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        Ok(rustix::io::dup(self.reader.as_ref().as_fd())?)
    }

    /// Lets go of the socket without a FIN: a successor holds it now.
    /// (Dropping the halves apart would shut the write side down.)
    pub fn forget(self) {
        if let Ok(stream) = self.reader.reunite(self.writer) {
            drop(stream);
        }
    }

    /// Resets the connection: RST now, and the socket is gone (SO_LINGER
    /// of zero; it cannot block, as there is nothing to send).
    pub fn abort(self) {
        if let Ok(stream) = self.reader.reunite(self.writer) {
            let _ = stream.set_zero_linger();
        }
    }

    /// Sends what is queued (waiting at most `deadline`), then FIN, then
    /// reads until the peer closes too (at most [`CLOSE_WAIT`]): a socket
    /// closed with bytes unread sends RST, and a router that takes the RST
    /// first may lose the NOTIFICATION before it, and treat the session as
    /// restarting (keeping our routes stale) instead of reset.
    pub async fn close(mut self, deadline: Duration) {
        let flush = async {
            while self.pending() > 0 {
                match self.writer.write(&self.wbuf[self.wpos..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.wpos += n,
                }
            }
        };
        let _ = tokio::time::timeout(deadline, flush).await;
        let _ = self.writer.shutdown().await;
        let unread = async {
            let mut sink = [0u8; 4096];
            while let Ok(1..) = self.reader.read(&mut sink).await {}
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, unread).await;
    }

    /// The reading and the writing side, borrowed apart so both can be awaited.
    pub fn halves(&mut self) -> (Reading<'_>, Writing<'_>) {
        let pending = self.wbuf.len() > self.wpos;
        (
            Reading { half: &mut self.reader, buf: &mut self.rbuf },
            Writing { half: &mut self.writer, buf: &mut self.wbuf, pos: &mut self.wpos, pending },
        )
    }
}

pub struct Reading<'a> {
    half: &'a mut OwnedReadHalf,
    buf: &'a mut Vec<u8>,
}

pub struct Writing<'a> {
    half: &'a mut OwnedWriteHalf,
    buf: &'a mut Vec<u8>,
    pos: &'a mut usize,
    pending: bool,
}

/// Reads more bytes into the connection's buffer; never resolves without one.
/// The buffer is reserved at the first read, not when the connection is
/// made. The read is tokio's `read_buf`, which spends the task's
/// cooperative budget: under a flood the socket is always readable, and a
/// read that never yields keeps the runtime from firing the session's
/// timers (its KEEPALIVEs stop and the peer's hold timer runs out).
pub async fn read(side: Option<Reading<'_>>) -> io::Result<usize> {
    let Some(r) = side else { return std::future::pending().await };
    if r.buf.capacity() - r.buf.len() < 16 * 1024 {
        r.buf.reserve(64 * 1024);
    }
    r.half.read_buf(r.buf).await
}

/// Writes some queued bytes; never resolves while nothing is queued.
pub async fn write(side: Option<Writing<'_>>) -> io::Result<usize> {
    let Some(w) = side.filter(|w| w.pending) else { return std::future::pending().await };
    let n = w.half.write(&w.buf[*w.pos..]).await?;
    *w.pos += n;
    if *w.pos == w.buf.len() {
        w.buf.clear();
        *w.pos = 0;
        if w.buf.capacity() > 1 << 20 {
            w.buf.shrink_to(64 * 1024);
        }
    }
    Ok(n)
}

/// The halves of an optional connection.
pub fn halves(conn: Option<&mut Conn>) -> (Option<Reading<'_>>, Option<Writing<'_>>) {
    match conn {
        Some(c) => {
            let (r, w) = c.halves();
            (Some(r), Some(w))
        }
        None => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::{Duration, Instant};

    use super::{Conn, read};

    /// A peer that never stops sending (a full table, a flood) must not
    /// starve the session's timers: on a runtime with one thread, a read
    /// that is always ready and never yields would keep the timer below
    /// from ever firing.
    #[test]
    fn a_socket_that_is_always_readable_leaves_the_timers_running() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            std::thread::spawn(move || {
                let (mut peer, _) = listener.accept().unwrap();
                let chunk = vec![0u8; 64 * 1024];
                while peer.write_all(&chunk).is_ok() {}
            });
            let mut conn = Conn::new(tokio::net::TcpStream::connect(addr).await.unwrap()).unwrap();
            let timer = tokio::time::sleep(Duration::from_millis(20));
            tokio::pin!(timer);
            let started = Instant::now();
            let mut reads = 0u32;
            loop {
                let (reading, _) = conn.halves();
                tokio::select! {
                    n = read(Some(reading)) => {
                        assert!(n.unwrap() > 0);
                        reads += 1;
                        conn.rbuf.clear();
                        // What handling the bytes costs, so the sender
                        // stays ahead and the socket is never drained.
                        std::thread::sleep(Duration::from_micros(500));
                    }
                    () = &mut timer => break,
                }
                assert!(
                    started.elapsed() < Duration::from_secs(5),
                    "the timer has not fired after {reads} reads in {:?}",
                    started.elapsed()
                );
            }
            assert!(reads > 0, "the timer fired before any byte was read");
        });
    }
}
