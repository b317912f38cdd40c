//! BMP export's I/O (the messages are [`crate::bmp`]'s): the tap every peer
//! task publishes its session's events to, and one task per collector that
//! keeps a TCP connection to it and writes what its [`Feed`] says.
//!
//! ```text
//!  PeerTask ──publish──▶ Tap (broadcast, bounded) ──▶ collector task ──▶ TCP ──▶ collector
//!                                                     │ connect: Initiation, then each peer
//!                                                     │   task replays Peer Up and its RIBs
//!                                                     │ lagged (collector too slow): reconnect
//!                                                     │ every statisticsInterval: Stats Reports
//!                                                     └ handoff: write out, pass the socket on
//! ```
//!
//! A slow or absent collector never slows a session down: publishing never
//! waits, and a collector that falls a whole queue behind is reconnected and
//! told everything again, as RFC 7854 §3.3 lets a router do.
//!
//! In a handoff the collector connections go to the successor with the
//! sessions (the socket itself, so the collector sees no Peer Down, no
//! new Initiation, no reconnection): frozen, the predecessor's sessions
//! publish nothing more; each collector task writes out what is queued and
//! hands over a descriptor of its socket; the successor's sessions go on
//! publishing into it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::peer::{PeerCommand, Thaw};
use super::routes::PeerView;
use crate::bmp::{self, Counts, Feed, Monitored, Record};
use crate::config::BmpCollector;

/// Records a collector may fall behind by before it is reconnected and
/// told everything again.
const QUEUE: usize = 16_384;
/// Longest a write to a collector may block before it is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// Where peer tasks publish what their sessions do.
#[derive(Debug, Clone)]
pub struct Tap(broadcast::Sender<Arc<Record>>);

impl Default for Tap {
    fn default() -> Self {
        Self(broadcast::channel(QUEUE).0)
    }
}

impl Tap {
    /// Never waits: with no collector connected it is dropped.
    pub fn publish(&self, peer: IpAddr, target: Option<u64>, what: Monitored) {
        let _ = self.0.send(Arc::new(Record { peer, target, what, at: SystemTime::now() }));
    }
}

/// A collector connection crossing a handoff: the collector and the socket.
pub type Handed = (SocketAddr, OwnedFd);

/// The collector tasks.
#[derive(Debug, Default)]
pub struct Exporter {
    collectors: Vec<(SocketAddr, mpsc::Sender<Release>, JoinHandle<()>)>,
}

/// A handoff's ask: write out, then a descriptor of the socket (None: not
/// connected), then wait for how the handoff ended.
struct Release {
    reply: oneshot::Sender<Option<OwnedFd>>,
    thaw: oneshot::Receiver<Thaw>,
}

impl Exporter {
    /// A task per collector; a connection a predecessor handed over for
    /// one of them is carried on, the others are connected anew.
    pub fn start(
        collectors: &[BmpCollector],
        tap: &Tap,
        views: watch::Receiver<Vec<PeerView>>,
        mut handed: Vec<Handed>,
    ) -> Exporter {
        // The node's name (agents use the host's network, and so its UTS name).
        let sys_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "nonstop-agent".into(), |h| h.trim().to_string());
        let mut started = Vec::new();
        for (i, c) in collectors.iter().enumerate() {
            let address = c.socket_addr();
            let adopted = handed.iter().position(|(a, _)| *a == address).and_then(|at| {
                let (_, fd) = handed.remove(at);
                let std = std::net::TcpStream::from(fd);
                std.set_nonblocking(true).ok()?;
                TcpStream::from_std(std).ok()
            });
            if adopted.is_some() {
                info!(collector = %address, "BMP: carrying on the predecessor's connection");
            }
            let (tx, rx) = mpsc::channel(1);
            let link = Link {
                config: c.clone(),
                rx: tap.0.subscribe(),
                views: views.clone(),
                sys_name: sys_name.clone(),
                ids: (i as u64) << 32,
            };
            started.push((address, tx, tokio::spawn(link.run(rx, adopted))));
        }
        for (address, _) in handed {
            info!(collector = %address, "BMP: the predecessor's collector is no longer configured; closed");
        }
        Exporter { collectors: started }
    }

    /// For a handoff, with every session frozen: each connected collector
    /// is written up to date and its socket duplicated; and where to tell
    /// each collector task how the handoff ended.
    pub async fn release(&self) -> (Vec<Handed>, Vec<oneshot::Sender<Thaw>>) {
        let mut handed = Vec::new();
        let mut thaws = Vec::new();
        for (address, commands, _) in &self.collectors {
            let (reply, reply_rx) = oneshot::channel();
            let (thaw_tx, thaw) = oneshot::channel();
            if commands.send(Release { reply, thaw }).await.is_err() {
                continue;
            }
            thaws.push(thaw_tx);
            if let Ok(Some(fd)) = reply_rx.await {
                handed.push((*address, fd));
            }
        }
        (handed, thaws)
    }
}

/// One collector's task.
struct Link {
    config: BmpCollector,
    rx: broadcast::Receiver<Arc<Record>>,
    views: watch::Receiver<Vec<PeerView>>,
    sys_name: String,
    /// The next connection's id (this collector's index in the high bits).
    ids: u64,
}

/// Why a connection ended.
enum Ended {
    /// Closed, failed or too slow: connect again.
    Lost(String),
    /// Handed to the successor: this task is done.
    Retired,
}

impl Link {
    async fn run(mut self, mut releases: mpsc::Receiver<Release>, adopted: Option<TcpStream>) {
        let address = self.config.socket_addr();
        let mut connection = adopted.map(|s| (s, Feed::adopted(self.next_id())));
        let mut retry = Duration::from_secs(1);
        loop {
            let Some((stream, feed)) = connection.take() else {
                tokio::select! {
                    c = self.connect() => match c {
                        Ok(c) => {
                            info!(collector = %address, "BMP: connected; sessions replayed");
                            retry = Duration::from_secs(1);
                            connection = Some(c);
                        }
                        Err(e) => {
                            warn!(collector = %address, "BMP: cannot connect: {e}; again in {} s", retry.as_secs());
                            if !self.wait(retry, &mut releases).await {
                                return;
                            }
                            retry = (retry * 2).min(RETRY_MAX);
                        }
                    },
                    Some(r) = releases.recv() => {
                        let _ = r.reply.send(None);
                        if matches!(r.thaw.await, Ok(Thaw::Retire)) {
                            return;
                        }
                    }
                }
                continue;
            };
            match self.serve(stream, feed, &mut releases).await {
                Ended::Retired => {
                    info!(collector = %address, "BMP: connection handed to the successor");
                    return;
                }
                Ended::Lost(why) => warn!(collector = %address, "BMP: connection lost: {why}"),
            }
        }
    }

    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    /// Sleeps `retry`, answering a handoff meanwhile; false: retired.
    async fn wait(&mut self, retry: Duration, releases: &mut mpsc::Receiver<Release>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(retry) => true,
            Some(r) = releases.recv() => {
                let _ = r.reply.send(None);
                !matches!(r.thaw.await, Ok(Thaw::Retire))
            }
        }
    }

    /// A new connection: Initiation, then every session replayed to it.
    async fn connect(&mut self) -> std::io::Result<(TcpStream, Feed)> {
        let address = self.config.socket_addr();
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))??;
        stream.set_nodelay(true)?;
        // Only what happens from now on: the replays tell the rest.
        self.rx = self.rx.resubscribe();
        let mut hello = Vec::new();
        let descr = format!("nonstop-agent {}", env!("CARGO_PKG_VERSION"));
        bmp::initiation(&mut hello, &self.sys_name, &descr);
        stream.write_all(&hello).await?;
        let feed = Feed::fresh(self.next_id());
        let peers: Vec<_> = self.views.borrow().iter().map(|v| v.commands.clone()).collect();
        for commands in peers {
            let _ = commands.send(PeerCommand::Replay(feed.id())).await;
        }
        Ok((stream, feed))
    }

    async fn serve(
        &mut self,
        mut stream: TcpStream,
        mut feed: Feed,
        releases: &mut mpsc::Receiver<Release>,
    ) -> Ended {
        let every = u64::from(self.config.statistics_interval);
        let mut stats = tokio::time::interval(Duration::from_secs(every.max(1)));
        stats.tick().await;
        let mut out = Vec::new();
        loop {
            tokio::select! {
                r = self.rx.recv() => match r {
                    Ok(record) => {
                        feed.record(&record, &mut out);
                        // Whatever else is queued goes in the same write.
                        while out.len() < 1 << 20
                            && let Ok(record) = self.rx.try_recv()
                        {
                            feed.record(&record, &mut out);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        return Ended::Lost(format!(
                            "the collector fell {n} messages behind; reconnecting to tell it everything again"
                        ));
                    }
                    Err(RecvError::Closed) => return Ended::Retired,
                },
                _ = stats.tick(), if every > 0 => {
                    let counts = self.counts();
                    feed.statistics(|a| counts.get(&a).copied(), SystemTime::now(), &mut out);
                }
                r = stream.readable() => {
                    // Collectors send nothing (RFC 7854 §3.2): only the end.
                    let mut buf = [0u8; 512];
                    match (r, stream.try_read(&mut buf)) {
                        (Err(e), _) | (_, Err(e)) if e.kind() != std::io::ErrorKind::WouldBlock => {
                            return Ended::Lost(e.to_string());
                        }
                        (_, Ok(0)) => return Ended::Lost("closed by the collector".into()),
                        _ => {}
                    }
                }
                Some(r) = releases.recv() => {
                    if let Some(ended) = self.release(&mut stream, &mut feed, r).await {
                        return ended;
                    }
                }
            }
            if !out.is_empty() {
                let written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out)).await;
                out.clear();
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Ended::Lost(format!("writing: {e}")),
                    Err(_) => return Ended::Lost("a write blocked for 30 s".into()),
                }
            }
        }
    }

    /// A handoff: everything the frozen sessions published is written, the
    /// socket duplicated for the successor; None: carry on (rolled back).
    async fn release(
        &mut self,
        stream: &mut TcpStream,
        feed: &mut Feed,
        r: Release,
    ) -> Option<Ended> {
        let mut out = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(record) => feed.record(&record, &mut out),
                Err(TryRecvError::Lagged(_)) => {
                    // Not up to date: the successor connects anew instead.
                    let _ = r.reply.send(None);
                    return Some(Ended::Lost("fell behind during a handoff".into()));
                }
                Err(_) => break,
            }
        }
        let written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out)).await;
        let fd = match written {
            Ok(Ok(())) => rustix::io::dup(stream.as_fd()).ok(),
            _ => None,
        };
        let handed = fd.is_some();
        let _ = r.reply.send(fd);
        match r.thaw.await {
            // The successor holds the socket: closing ours sends no FIN.
            Ok(Thaw::Retire) => Some(Ended::Retired),
            _ if handed => None,
            _ => Some(Ended::Lost("could not be written up to date for a handoff".into())),
        }
    }

    /// Each session's route counts, for Statistics Reports.
    fn counts(&self) -> HashMap<IpAddr, Counts> {
        self.views
            .borrow()
            .iter()
            .filter_map(|v| {
                let s = v.status.borrow();
                let address: IpAddr = s.address.parse().ok()?;
                Some((
                    address,
                    Counts {
                        adj_rib_in: s.routes_received as u64,
                        rejected: u32::try_from(s.routes_refused).unwrap_or(u32::MAX),
                        adj_rib_out: s.routes_advertised as u64,
                    },
                ))
            })
            .collect()
    }
}
