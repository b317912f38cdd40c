//! Socket options no safe wrapper offers: TCP MD5 signatures (RFC 2385) and
//! the TTL rules of GTSM (RFC 5082) and eBGP multihop. The only `unsafe` in
//! the agent lives here, one `setsockopt` call, each use with its SAFETY note.
//!
//! ```text
//!  listener ── md5(peer address, key) per peer ── the kernel drops unsigned or
//!                                                 wrongly signed segments
//!  dialling socket ── md5(peer, key), ttl(255 | hops), min_ttl(254)
//! ```
#![allow(unsafe_code)]

use std::io;
use std::mem::size_of;
use std::net::IpAddr;
use std::os::fd::AsRawFd;

/// Longest key the kernel takes (TCP_MD5SIG_MAXKEYLEN).
pub const MAX_KEY_LEN: usize = 80;

/// `struct tcp_md5sig` of linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefix_len: u8,
    key_len: u16,
    ifindex: libc::c_int,
    key: [u8; MAX_KEY_LEN],
}

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` is a live, initialised `T` for the whole call and the
    // length passed is exactly its size; the kernel only reads from it. The
    // descriptor is borrowed from an open socket owned by the caller.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// Sets (or, with an empty key, removes) the MD5 key for segments to and from
/// `peer` on a socket of the given family (`v6`: an IPv6 or dual-stack
/// socket, where IPv4 peers appear as ::ffff:a.b.c.d).
pub fn md5(fd: &impl AsRawFd, v6: bool, peer: IpAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP MD5 password of {} bytes; at most {MAX_KEY_LEN}", key.len()),
        ));
    }
    // SAFETY: an all-zero `sockaddr_storage` is a valid (AF_UNSPEC) value;
    // every other field is plain integers or bytes.
    let mut sig: TcpMd5Sig = unsafe { std::mem::zeroed() };
    sig.key_len = key.len() as u16;
    sig.key[..key.len()].copy_from_slice(key);
    let storage = &mut sig.addr as *mut libc::sockaddr_storage;
    match (peer, v6) {
        (IpAddr::V4(a), false) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is large and aligned enough for any
            // sockaddr, by definition.
            unsafe { storage.cast::<libc::sockaddr_in>().write(sin) };
        }
        (ip, _) => {
            let v6addr = match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: v6addr.octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: as above.
            unsafe { storage.cast::<libc::sockaddr_in6>().write(sin6) };
        }
    }
    setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_MD5SIG, &sig)
}

/// The TTL (hop limit) of outgoing packets.
pub fn ttl(fd: &impl AsRawFd, v6: bool, ttl: u8) -> io::Result<()> {
    let value = libc::c_int::from(ttl);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &value)?;
    }
    // A dual-stack socket talking IPv4 uses the IPv4 option.
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &value)
        .or_else(|e| if v6 { Ok(()) } else { Err(e) })
}

/// GTSM: drop incoming packets with a TTL (hop limit) below `min`.
pub fn min_ttl(fd: &impl AsRawFd, v6: bool, min: u8) -> io::Result<()> {
    let value = libc::c_int::from(min);
    if v6 {
        setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_MINHOPCOUNT, &value)?;
    }
    setsockopt(fd, libc::IPPROTO_IP, libc::IP_MINTTL, &value)
        .or_else(|e| if v6 { Ok(()) } else { Err(e) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The struct must match the kernel's layout, or the kernel reads garbage.
    #[test]
    fn tcp_md5sig_has_the_kernel_layout() {
        assert_eq!(size_of::<TcpMd5Sig>(), 216);
        assert_eq!(std::mem::offset_of!(TcpMd5Sig, key), 136);
    }

    #[test]
    fn keys_are_accepted_on_both_families_and_refused_when_too_long() {
        let v4 = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        let v6 = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::STREAM, None).unwrap();
        md5(&v4, false, "192.0.2.1".parse().unwrap(), b"secret").unwrap();
        md5(&v6, true, "192.0.2.1".parse().unwrap(), b"secret").unwrap();
        md5(&v6, true, "2001:db8::1".parse().unwrap(), b"secret").unwrap();
        let err = md5(&v4, false, "192.0.2.1".parse().unwrap(), &[b'x'; 81]).unwrap_err();
        assert!(err.to_string().contains("at most 80"), "{err}");
        ttl(&v4, false, 255).unwrap();
        min_ttl(&v4, false, 254).unwrap();
        ttl(&v6, true, 255).unwrap();
        min_ttl(&v6, true, 254).unwrap();
    }
}
