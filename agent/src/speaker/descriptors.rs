//! The process's file descriptors as a resource a handoff spends: one per
//! session on each side, a thousand at a time.
//!
//! ```text
//!  start      raise_limit()   soft RLIMIT_NOFILE up to the hard one (a plain
//!                             host's 1024 would not hold 1,000 sessions)
//!  handoff    reserve(n)      grow the descriptor table for n more *before*
//!                             the pause: every time the kernel doubles the
//!                             table of a multi-threaded process it waits for
//!                             an RCU grace period (synchronize_rcu, ~10 ms on
//!                             a small VM), and receiving or duplicating 1,000
//!                             sockets doubles it up to five times
//! ```

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Raises the soft limit on open files to the hard limit, as Go's runtime
/// does; returns the limit now in force (None: unlimited).
pub fn raise_limit() -> io::Result<Option<u64>> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum })?;
    }
    Ok(limit.maximum)
}

/// Grows the descriptor table so that `more` descriptors beyond the highest
/// open one fit without the kernel growing it again (`any` is any open
/// descriptor, duplicated once high up and closed). Returns the highest
/// descriptor number the table now holds. Best effort: a table that cannot
/// grow that far (the open-files limit) grows as far as it may, and the
/// kernel grows it on demand later, only more slowly.
pub fn reserve(any: BorrowedFd<'_>, more: usize) -> io::Result<usize> {
    let highest = std::fs::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<usize>().ok())
        .max()
        .unwrap_or(2);
    let limit = getrlimit(Resource::Nofile).current.map_or(usize::MAX, |l| l as usize);
    let target = (highest + more).min(limit.saturating_sub(1));
    // The lowest free descriptor at or above `target`: the kernel sizes the
    // table to hold it, and the table never shrinks once it is closed.
    let probe = rustix::io::fcntl_dupfd_cloexec(any, target as _)?;
    let got = probe.as_raw_fd() as usize;
    drop(probe);
    Ok(got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn any() -> std::fs::File {
        std::fs::File::open("/proc/self/stat").unwrap()
    }

    #[test]
    fn reserve_makes_room_beyond_the_highest_descriptor() {
        raise_limit().unwrap();
        let file = any();
        let got = reserve(file.as_fd(), 300).unwrap();
        assert!(got >= 300, "reserved up to {got}");
        // The probe is closed again: the next descriptor is a low one.
        let next = rustix::io::dup(file.as_fd()).unwrap();
        assert!((next.as_raw_fd() as usize) < got);
    }

    #[test]
    fn reserve_stops_below_the_open_files_limit() {
        let was = getrlimit(Resource::Nofile);
        let low = Rlimit { current: Some(400), maximum: was.maximum };
        setrlimit(Resource::Nofile, low).unwrap();
        let got = reserve(any().as_fd(), 100_000);
        setrlimit(Resource::Nofile, was).unwrap();
        assert_eq!(got.unwrap(), 399);
    }
}
