//! How many connections a listener holds, and how many descriptors the process keeps for
//! itself.
//!
//! A flood of idle connections must cost the process connections, never a commit: when the
//! journal, a checkpoint or `CURRENT` cannot be opened for want of a descriptor, the coordinator
//! stops. So every listener (cluster, admin API, metrics, aggregator) admits a connection only
//! through a [`Limiter`], which refuses it — closes it at once — when
//!
//! - the listener already holds its maximum (`total`), or this peer address its share
//!   (`per_peer`), or
//! - the process would keep fewer than [`RESERVED_DESCRIPTORS`] free descriptors under its
//!   soft `RLIMIT_NOFILE` (read at every admission, so a limit lowered at run time counts).
//!
//! [`raise_open_files_limit`] lifts the soft limit to the hard one at start, so a default
//! 1024 does not cap a federation that has more room. Idle timeouts belong to each listener
//! (a connection admitted here still has to authenticate and keep talking).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Descriptors the process keeps free for its own files (journal, checkpoints, logs, outgoing
/// links) whatever its listeners are asked to accept.
pub const RESERVED_DESCRIPTORS: usize = 128;

/// Connections held by all limiters of this process.
static HELD: AtomicUsize = AtomicUsize::new(0);

/// Raises the soft open-files limit to the hard limit. Returns (before, after).
pub fn raise_open_files_limit() -> std::io::Result<(u64, u64)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, lim.rlim_cur))
}

/// The soft open-files limit now (`usize::MAX` when unlimited or unreadable).
fn soft_open_files_limit() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return usize::MAX;
    }
    usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
}

/// Descriptors open in this process now (`/proc/self/fd`), if readable.
fn open_descriptors() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

/// The address a peer's share is counted under: IPv4 as it is, IPv6 by its /64 prefix (a
/// single host commonly holds a whole /64).
pub fn peer_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// How much a listener may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections at once.
    pub total: usize,
    /// Connections at once from one peer address.
    pub per_peer: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitRefusal {
    /// The listener holds its maximum.
    #[error("{listener}: already holding its maximum of {max} connections")]
    ListenerFull {
        /// Which listener.
        listener: &'static str,
        /// Its maximum.
        max: usize,
    },
    /// This peer address holds its share.
    #[error("{listener}: {peer} already holds its maximum of {max} connections")]
    PeerFull {
        /// Which listener.
        listener: &'static str,
        /// The peer address.
        peer: IpAddr,
        /// The per-peer maximum.
        max: usize,
    },
    /// The process would run short of descriptors for its own files.
    #[error("{listener}: {open} of {limit} descriptors open; {RESERVED_DESCRIPTORS} are kept for the federation's own files")]
    Descriptors {
        /// Which listener.
        listener: &'static str,
        /// Descriptors open now.
        open: usize,
        /// The soft limit.
        limit: usize,
    },
}

/// The pure admission rule: may one more connection be held?
pub fn admit_rule(
    limits: ConnectionLimits,
    held_here: usize,
    held_by_peer: usize,
    open: usize,
    soft_limit: usize,
) -> Result<(), AdmitRefusal> {
    if held_here >= limits.total {
        return Err(AdmitRefusal::ListenerFull);
    }
    if held_by_peer >= limits.per_peer {
        return Err(AdmitRefusal::PeerFull);
    }
    // The new connection is already open (accepted): it counts in `open`.
    if open.saturating_add(RESERVED_DESCRIPTORS) > soft_limit {
        return Err(AdmitRefusal::Descriptors);
    }
    Ok(())
}

/// What [`admit_rule`] refused, without the names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitRefusal {
    /// See [`LimitRefusal::ListenerFull`].
    ListenerFull,
    /// See [`LimitRefusal::PeerFull`].
    PeerFull,
    /// See [`LimitRefusal::Descriptors`].
    Descriptors,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    by_peer: HashMap<IpAddr, usize>,
}

/// Admits connections to one listener. Share it with `Arc`.
#[derive(Debug)]
pub struct Limiter {
    listener: &'static str,
    limits: ConnectionLimits,
    held: Mutex<Held>,
}

impl Limiter {
    /// A limiter for `listener` (its name in refusals).
    pub fn new(listener: &'static str, limits: ConnectionLimits) -> Arc<Self> {
        Arc::new(Self {
            listener,
            limits,
            held: Mutex::new(Held::default()),
        })
    }

    /// Admits a connection accepted from `peer`, or says why not (the caller closes it). The
    /// permit releases its place when dropped. IPv6 peers count per /64 (one host's share).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Permit, LimitRefusal> {
        let peer = peer_key(peer);
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let by_peer = held.by_peer.get(&peer).copied().unwrap_or(0);
        let limit = soft_open_files_limit();
        // Count descriptors only when the budget could matter: reading /proc costs a syscall
        // per entry, and a process far below its limit need not pay it.
        let cheap_open = HELD.load(Ordering::Relaxed) + RESERVED_DESCRIPTORS;
        let open = if cheap_open.saturating_mul(4) < limit {
            cheap_open
        } else {
            open_descriptors().unwrap_or(cheap_open)
        };
        admit_rule(self.limits, held.total, by_peer, open, limit).map_err(|r| match r {
            AdmitRefusal::ListenerFull => LimitRefusal::ListenerFull {
                listener: self.listener,
                max: self.limits.total,
            },
            AdmitRefusal::PeerFull => LimitRefusal::PeerFull {
                listener: self.listener,
                peer,
                max: self.limits.per_peer,
            },
            AdmitRefusal::Descriptors => LimitRefusal::Descriptors {
                listener: self.listener,
                open,
                limit,
            },
        })?;
        held.total += 1;
        *held.by_peer.entry(peer).or_insert(0) += 1;
        HELD.fetch_add(1, Ordering::Relaxed);
        Ok(Permit {
            limiter: self.clone(),
            peer,
        })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).total
    }
}

/// Accepts the next connection on `listener` that `limiter` admits. A connection beyond the
/// limits is closed at once and handed to `refused` (to log and count it); an accept error (out
/// of descriptors, say) is logged and waited out for 100 ms, so the loop never spins and never
/// stops. Every listener of the process accepts through here.
pub async fn accept_admitted(
    listener: &tokio::net::TcpListener,
    limiter: &Arc<Limiter>,
    refused: impl Fn(std::net::SocketAddr, &LimitRefusal),
) -> (tokio::net::TcpStream, std::net::SocketAddr, Permit) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match limiter.admit(peer.ip()) {
                Ok(permit) => return (stream, peer, permit),
                Err(refusal) => {
                    drop(stream);
                    refused(peer, &refusal);
                }
            },
            Err(e) => {
                tracing::warn!("{}: accept failed: {e}", limiter.listener);
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A held place; released on drop.
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<Limiter>,
    peer: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut held = self.limiter.held.lock().unwrap_or_else(|p| p.into_inner());
        held.total = held.total.saturating_sub(1);
        if let Some(n) = held.by_peer.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                held.by_peer.remove(&self.peer);
            }
        }
        HELD.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: ConnectionLimits = ConnectionLimits {
        total: 4,
        per_peer: 2,
    };

    #[test]
    fn the_rule_keeps_the_listener_the_peer_and_the_reserve_within_bounds() {
        assert_eq!(admit_rule(L, 0, 0, 10, 1024), Ok(()));
        assert_eq!(
            admit_rule(L, 4, 0, 10, 1024),
            Err(AdmitRefusal::ListenerFull)
        );
        assert_eq!(admit_rule(L, 2, 2, 10, 1024), Err(AdmitRefusal::PeerFull));
        // 1024 − 128 = 896 descriptors may be open; the 897th connection is refused.
        assert_eq!(admit_rule(L, 0, 0, 896, 1024), Ok(()));
        assert_eq!(
            admit_rule(L, 0, 0, 897, 1024),
            Err(AdmitRefusal::Descriptors)
        );
        assert_eq!(admit_rule(L, 0, 0, 10, usize::MAX), Ok(()));
    }

    #[test]
    fn permits_are_released_per_peer() {
        let lim = Limiter::new("test", L);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let p1 = lim.admit(a).unwrap();
        let _p2 = lim.admit(a).unwrap();
        let e = lim.admit(a).unwrap_err();
        assert!(e.to_string().contains("127.0.0.2"), "{e}");
        let _p3 = lim.admit(b).unwrap();
        drop(p1);
        let _p4 = lim.admit(a).unwrap();
        let _p5 = lim.admit(b).unwrap();
        assert!(matches!(
            lim.admit(b),
            Err(LimitRefusal::ListenerFull { max: 4, .. })
        ));
        assert_eq!(lim.held(), 4);
    }

    #[test]
    fn ipv6_peers_share_their_64() {
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(peer_key(a), peer_key(b));
        assert_ne!(peer_key(a), peer_key(c));
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(peer_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
