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
use super::status::{CollectorLabel, CollectorStatus, Metrics};
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

/// Each collector's connection as `/status` shows it, in config order.
pub type Board = Arc<std::sync::Mutex<Vec<CollectorStatus>>>;

/// The collector tasks.
#[derive(Debug, Default)]
pub struct Exporter {
    collectors: Vec<(SocketAddr, mpsc::Sender<Ask>, JoinHandle<()>)>,
}

/// What the speaker asks of a collector task.
enum Ask {
    /// A handoff: write out, then a descriptor of the socket (None: not
    /// connected), then wait for how the handoff ended.
    Release(Release),
    /// The agent stops: write out, say Termination, close.
    Stop(oneshot::Sender<()>),
}

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
        metrics: &Metrics,
        board: &Board,
    ) -> Exporter {
        // The node's name (agents use the host's network, and so its UTS name).
        let sys_name = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "nonstop-agent".into(), |h| h.trim().to_string());
        let mut started = Vec::new();
        *board.lock().expect("board") = collectors
            .iter()
            .map(|c| CollectorStatus {
                collector: c.socket_addr().to_string(),
                since_ms: crate::restart::now_ms(),
                ..Default::default()
            })
            .collect();
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
                metrics: metrics.clone(),
                label: CollectorLabel { collector: address.to_string() },
                board: board.clone(),
                index: i,
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
            if commands.send(Ask::Release(Release { reply, thaw })).await.is_err() {
                continue;
            }
            thaws.push(thaw_tx);
            if let Ok(Some(fd)) = reply_rx.await {
                handed.push((*address, fd));
            }
        }
        (handed, thaws)
    }

    /// The agent stops (its sessions closed): each collector is written up
    /// to date and told Termination (RFC 7854 §4.5) before its connection
    /// closes; at most `limit`.
    pub async fn stop(self, limit: Duration) {
        let all = async {
            for (_, commands, task) in self.collectors {
                let (done, wait) = oneshot::channel();
                if commands.send(Ask::Stop(done)).await.is_ok() {
                    let _ = wait.await;
                }
                task.abort();
            }
        };
        let _ = tokio::time::timeout(limit, all).await;
    }
}

/// Answers the speaker while not connected; false: the task is done.
async fn idle(ask: Ask) -> bool {
    match ask {
        Ask::Release(r) => {
            let _ = r.reply.send(None);
            !matches!(r.thaw.await, Ok(Thaw::Retire))
        }
        Ask::Stop(done) => {
            let _ = done.send(());
            false
        }
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
    metrics: Metrics,
    label: CollectorLabel,
    board: Board,
    /// This collector's place on the board.
    index: usize,
}

/// Why a connection ended.
enum Ended {
    /// Closed, failed or too slow: connect again.
    Lost(String),
    /// Handed to the successor: this task is done.
    Retired,
    /// The agent stops: Termination sent, or nothing left to export.
    Stopped,
}

impl Link {
    async fn run(mut self, mut releases: mpsc::Receiver<Ask>, adopted: Option<TcpStream>) {
        let address = self.config.socket_addr();
        let mut connection = adopted.map(|s| (s, Feed::adopted(self.next_id())));
        if connection.is_some() {
            self.mark(|c| (c.up, c.carried_on) = (true, true));
        }
        let mut retry = Duration::from_secs(1);
        loop {
            let Some((stream, feed)) = connection.take() else {
                tokio::select! {
                    c = self.connect() => match c {
                        Ok(c) => {
                            info!(collector = %address, "BMP: connected; sessions replayed");
                            retry = Duration::from_secs(1);
                            connection = Some(c);
                            self.metrics.bmp_connects.get_or_create(&self.label).inc();
                            self.mark(|c| {
                                (c.up, c.carried_on) = (true, false);
                                c.connects += 1;
                            });
                        }
                        Err(e) => {
                            self.mark(|c| c.last_error = Some(format!("connecting: {e}")));
                            warn!(collector = %address, "BMP: cannot connect: {e}; again in {} s", retry.as_secs());
                            if !self.wait(retry, &mut releases).await {
                                return;
                            }
                            retry = (retry * 2).min(RETRY_MAX);
                        }
                    },
                    Some(ask) = releases.recv() => {
                        if !idle(ask).await {
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
                Ended::Stopped => {
                    info!(collector = %address, "BMP: Termination sent; connection closed");
                    return;
                }
                Ended::Lost(why) => {
                    warn!(collector = %address, "BMP: connection lost: {why}");
                    self.mark(|c| (c.up, c.last_error) = (false, Some(why)));
                }
            }
        }
    }

    /// Changes this collector's entry on the board (and the up gauge);
    /// `since` moves when it goes up or down.
    fn mark(&self, change: impl FnOnce(&mut CollectorStatus)) {
        let mut board = self.board.lock().expect("board");
        let Some(entry) = board.get_mut(self.index) else { return };
        let was = entry.up;
        change(entry);
        if entry.up != was {
            entry.since_ms = crate::restart::now_ms();
        }
        self.metrics.bmp_up.get_or_create(&self.label).set(i64::from(entry.up));
    }

    fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    /// Sleeps `retry`, answering the speaker meanwhile; false: done.
    async fn wait(&mut self, retry: Duration, releases: &mut mpsc::Receiver<Ask>) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(retry) => true,
            Some(ask) = releases.recv() => idle(ask).await,
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
        releases: &mut mpsc::Receiver<Ask>,
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
                    Err(RecvError::Closed) => return Ended::Stopped,
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
                Some(ask) = releases.recv() => match ask {
                    Ask::Release(r) => {
                        if let Some(ended) = self.release(&mut stream, &mut feed, r).await {
                            return ended;
                        }
                    }
                    Ask::Stop(done) => {
                        self.terminate(&mut stream, &mut feed).await;
                        let _ = done.send(());
                        return Ended::Stopped;
                    }
                },
            }
            if !out.is_empty() {
                let written = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out)).await;
                self.metrics.bmp_sent_bytes.get_or_create(&self.label).inc_by(out.len() as u64);
                out.clear();
                match written {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Ended::Lost(format!("writing: {e}")),
                    Err(_) => return Ended::Lost("a write blocked for 30 s".into()),
                }
            }
        }
    }

    /// Everything published is written (the sessions' Peer Down included),
    /// then Termination; the connection closes when the stream drops.
    async fn terminate(&mut self, stream: &mut TcpStream, feed: &mut Feed) {
        let mut out = Vec::new();
        while let Ok(record) = self.rx.try_recv() {
            feed.record(&record, &mut out);
        }
        bmp::termination(&mut out, "nonstop-agent stopping");
        let _ = tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&out)).await;
        let _ = stream.shutdown().await;
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
