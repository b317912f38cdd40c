//! The handoff channel: AF_UNIX SOCK_SEQPACKET, one [`Message`] per packet,
//! descriptors beside it as SCM_RIGHTS. Blocking on purpose: a handoff is a
//! rare, short conversation, run on its own thread, with a deadline per step
//! (the receive timeout).
//!
//! ```text
//!  state dir/handoff.sock (0600) ◀── connect ── successor
//!  Channel::send(message, fds ≤ 253)  ⇄  Channel::recv(deadline) → (message, fds)
//! ```

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};

use super::protocol::{BadMessage, MAX_FDS, Message};

/// The largest packet either side sends; RIB streams are cut to fit.
pub const MAX_PACKET: usize = 192 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("handoff channel: {0}")]
    Io(#[from] std::io::Error),
    #[error("the other agent did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the other agent closed the handoff channel")]
    Closed,
    #[error("{0} descriptors in one packet; at most {MAX_FDS}")]
    TooManyFds(usize),
    #[error("a packet of {0} bytes; at most {MAX_PACKET}")]
    TooLarge(usize),
    #[error("a packet arrived cut short (data or descriptors)")]
    Truncated,
    #[error(transparent)]
    Bad(#[from] BadMessage),
}

/// One end of a handoff conversation.
#[derive(Debug)]
pub struct Channel {
    fd: OwnedFd,
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn seqpacket() -> std::io::Result<OwnedFd> {
    Ok(rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?)
}

fn grow_buffers(fd: &OwnedFd) -> std::io::Result<()> {
    // Room for the largest packet in flight both ways.
    rustix::net::sockopt::set_socket_send_buffer_size(fd, 4 * MAX_PACKET)?;
    rustix::net::sockopt::set_socket_recv_buffer_size(fd, 4 * MAX_PACKET)?;
    Ok(())
}

/// Listens on `path` (replacing a stale socket file), owner-only.
pub fn listen(path: &Path) -> std::io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let fd = seqpacket()?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    rustix::net::listen(&fd, 1)?;
    Ok(fd)
}

impl Channel {
    /// The successor's side: connect to a predecessor's socket.
    pub fn connect(path: &Path) -> std::io::Result<Channel> {
        let fd = seqpacket()?;
        grow_buffers(&fd)?;
        rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
        Ok(Channel { fd })
    }

    /// The predecessor's side: the next successor knocking.
    pub fn accept(listener: &OwnedFd) -> std::io::Result<Channel> {
        let fd = rustix::net::accept_with(listener, SocketFlags::CLOEXEC)?;
        grow_buffers(&fd)?;
        Ok(Channel { fd })
    }

    /// Two connected ends, for tests and in-process use.
    pub fn pair() -> std::io::Result<(Channel, Channel)> {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )?;
        grow_buffers(&a)?;
        grow_buffers(&b)?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// The uid of the process at the other end (SO_PEERCRED).
    ///
    /// Read with libc, not rustix: two agents in two containers sit in two
    /// PID namespaces, where the kernel reports the peer's pid as 0, and
    /// rustix's `UCred` holds the pid as a non-zero `Pid` (it failed with
    /// "Success" on a real node). Only the uid matters here.
    #[allow(unsafe_code)]
    pub fn peer_uid(&self) -> std::io::Result<u32> {
        use std::os::fd::AsRawFd;
        let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
        let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: `cred` and `len` are valid for writes of a ucred.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&mut cred as *mut libc::ucred).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if len as usize != std::mem::size_of::<libc::ucred>() {
            return Err(std::io::Error::other(format!("SO_PEERCRED returned {len} bytes")));
        }
        Ok(cred.uid)
    }

    pub fn send(&self, message: &Message, fds: &[BorrowedFd<'_>]) -> Result<(), TransportError> {
        self.send_encoded(&message.encode(), fds)
    }

    /// Sends a message already encoded (`Message::encode`), e.g. one whose
    /// size was checked first.
    pub fn send_encoded(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), TransportError> {
        if fds.len() > MAX_FDS {
            return Err(TransportError::TooManyFds(fds.len()));
        }
        if bytes.len() > MAX_PACKET {
            return Err(TransportError::TooLarge(bytes.len()));
        }
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(TransportError::TooManyFds(fds.len()));
        }
        let sent = rustix::net::sendmsg(
            &self.fd,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        )
        .map_err(|e| match e {
            rustix::io::Errno::PIPE | rustix::io::Errno::CONNRESET => TransportError::Closed,
            rustix::io::Errno::AGAIN => TransportError::Timeout(self.send_timeout()),
            e => TransportError::Io(e.into()),
        })?;
        if sent != bytes.len() {
            return Err(TransportError::Truncated);
        }
        Ok(())
    }

    /// How long a send may wait for the other side to make room.
    pub fn set_send_timeout(&self, limit: Duration) -> std::io::Result<()> {
        let limit = limit.max(Duration::from_millis(1));
        rustix::net::sockopt::set_socket_timeout(
            &self.fd,
            rustix::net::sockopt::Timeout::Send,
            Some(limit),
        )?;
        Ok(())
    }

    fn send_timeout(&self) -> Duration {
        rustix::net::sockopt::socket_timeout(&self.fd, rustix::net::sockopt::Timeout::Send)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// The next message and its descriptors, waiting at most `deadline`.
    pub fn recv(&self, deadline: Duration) -> Result<(Message, Vec<OwnedFd>), TransportError> {
        self.recv_sized(deadline).map(|(m, fds, _)| (m, fds))
    }

    /// As `recv`, with the packet's size.
    pub fn recv_sized(
        &self,
        deadline: Duration,
    ) -> Result<(Message, Vec<OwnedFd>, usize), TransportError> {
        rustix::net::sockopt::set_socket_timeout(
            &self.fd,
            rustix::net::sockopt::Timeout::Recv,
            Some(deadline.max(Duration::from_millis(1))),
        )
        .map_err(std::io::Error::from)?;
        let mut bytes = vec![0u8; MAX_PACKET + 1];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let received = rustix::net::recvmsg(
            &self.fd,
            &mut [IoSliceMut::new(&mut bytes)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| match e {
            rustix::io::Errno::AGAIN => TransportError::Timeout(deadline),
            rustix::io::Errno::CONNRESET => TransportError::Closed,
            e => TransportError::Io(e.into()),
        })?;
        let mut fds = Vec::new();
        for m in control.drain() {
            if let RecvAncillaryMessage::ScmRights(passed) = m {
                fds.extend(passed);
            }
        }
        if received.flags.intersects(ReturnFlags::TRUNC | ReturnFlags::CTRUNC) {
            return Err(TransportError::Truncated);
        }
        if received.bytes == 0 {
            return Err(TransportError::Closed);
        }
        Ok((Message::decode(&bytes[..received.bytes])?, fds, received.bytes))
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Cuts a stream of BGP messages into pieces of at most `max` bytes, at
/// message boundaries (a single message never exceeds 65,535 bytes).
pub fn chunks(mut stream: &[u8], max: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !stream.is_empty() {
        let mut end = 0;
        while end + 19 <= stream.len() {
            let len = usize::from(u16::from_be_bytes([stream[end + 16], stream[end + 17]]));
            if len < 19 || (end + len > max && end > 0) {
                break;
            }
            end += len;
        }
        let end = end.clamp(1.min(stream.len()), stream.len());
        out.push(&stream[..end]);
        stream = &stream[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use super::*;
    use crate::handoff::protocol::{RibPart, Welcome};

    /// 253 live TCP connections cross in one packet and still carry bytes.
    #[test]
    fn a_full_batch_of_live_connections_crosses_and_still_works() {
        let (old, new) = Channel::pair().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut far_ends = Vec::new();
        let mut ours = Vec::new();
        for _ in 0..MAX_FDS {
            far_ends.push(TcpStream::connect(addr).unwrap());
            ours.push(listener.accept().unwrap().0);
        }
        let fds: Vec<BorrowedFd<'_>> = ours.iter().map(|s| s.as_fd()).collect();
        old.send(&Message::Done { sessions: MAX_FDS as u32 }, &fds).unwrap();
        drop(fds);
        drop(ours); // the sender lets go; the passed descriptors live on
        let (message, passed) = new.recv(Duration::from_secs(5)).unwrap();
        assert_eq!(message, Message::Done { sessions: MAX_FDS as u32 });
        assert_eq!(passed.len(), MAX_FDS);
        for (i, (fd, far)) in passed.into_iter().zip(far_ends.iter_mut()).enumerate() {
            let mut stream = TcpStream::from(fd);
            stream.write_all(&[i as u8]).unwrap();
            let mut byte = [0u8];
            far.read_exact(&mut byte).unwrap();
            assert_eq!(byte[0], i as u8);
        }
        // Our own uid, as /proc/self shows it.
        let uid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        assert_eq!(new.peer_uid().unwrap(), uid.unwrap());
    }

    #[test]
    fn limits_and_silence_give_clear_errors() {
        let (a, b) = Channel::pair().unwrap();
        let null = std::fs::File::open("/dev/null").unwrap();
        let too_many: Vec<BorrowedFd<'_>> = (0..MAX_FDS + 1).map(|_| null.as_fd()).collect();
        let err = a.send(&Message::Listeners, &too_many).unwrap_err();
        assert_eq!(err.to_string(), "254 descriptors in one packet; at most 253");
        let huge = Message::Rib { session: 0, part: RibPart::Out, updates: vec![0; MAX_PACKET] };
        assert!(matches!(a.send(&huge, &[]), Err(TransportError::TooLarge(_))));
        let err = b.recv(Duration::from_millis(50)).unwrap_err();
        assert_eq!(err.to_string(), "the other agent did not answer within 50ms");
        drop(a);
        assert!(matches!(b.recv(Duration::from_millis(50)), Err(TransportError::Closed)));
    }

    #[test]
    fn a_socket_in_the_state_dir_connects_successor_to_predecessor() {
        let dir = std::env::temp_dir().join(format!("nonstop-handoff-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("handoff.sock");
        let listener = listen(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        let successor = std::thread::spawn({
            let path = path.clone();
            move || {
                let c = Channel::connect(&path).unwrap();
                c.recv(Duration::from_secs(5)).unwrap().0
            }
        });
        let old = Channel::accept(&listener).unwrap();
        let welcome =
            Message::Welcome(Welcome { agent_version: "0.1.0".into(), pid: 1, peers: vec![] });
        old.send(&welcome, &[]).unwrap();
        assert_eq!(successor.join().unwrap(), welcome);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rib_streams_are_cut_at_message_boundaries() {
        let keepalive = crate::wire::Message::Keepalive.to_bytes(&Default::default());
        let stream: Vec<u8> = keepalive.iter().copied().cycle().take(19 * 100).collect();
        let pieces = chunks(&stream, 19 * 7 + 5);
        assert!(
            pieces.iter().all(|p| p.len() == 19 * 7 || p.len() == 19 * 2),
            "{:?}",
            pieces.iter().map(|p| p.len()).collect::<Vec<_>>()
        );
        assert_eq!(pieces.concat(), stream);
        assert!(chunks(&[], 100).is_empty());
    }
}
