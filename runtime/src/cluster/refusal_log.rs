//! Rate-limited logging of refused connections.
//!
//! Every refusal must be visible (peer address, certificate identity when known, reason), but a
//! flood of refusals must not become a flood of log lines. [`RefusalLog`] writes at most
//! [`BURST`] warnings per [`WINDOW`], then one line saying how many it held back; every refusal is
//! counted either way ([`RefusalLog::total`]), for metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::identity::Identity;

/// Warnings written per window.
pub const BURST: u32 = 20;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(10);

#[derive(Debug)]
struct Window {
    started: Instant,
    written: u32,
    suppressed: u64,
}

/// A rate-limited refusal logger. Cheap to call from any task.
#[derive(Debug)]
pub struct RefusalLog {
    window: Mutex<Window>,
    total: AtomicU64,
}

impl Default for RefusalLog {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window {
                started: Instant::now(),
                written: 0,
                suppressed: 0,
            }),
            total: AtomicU64::new(0),
        }
    }
}

/// What [`RefusalLog::admit_line`] says about one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineDecision {
    /// Write it; `held_back` lines of the previous window were suppressed (say so first).
    Write {
        /// Suppressed in the window that just ended.
        held_back: u64,
    },
    /// Suppress it.
    Suppress,
}

impl RefusalLog {
    /// Refusals seen so far, logged or not.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The rate rule at time `now`.
    pub fn admit_line(&self, now: Instant) -> LineDecision {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let mut held_back = 0;
        if now.duration_since(w.started) >= WINDOW {
            held_back = w.suppressed;
            *w = Window {
                started: now,
                written: 0,
                suppressed: 0,
            };
        }
        if w.written < BURST {
            w.written += 1;
            LineDecision::Write { held_back }
        } else {
            w.suppressed += 1;
            LineDecision::Suppress
        }
    }

    /// Logs one refusal, subject to the rate rule.
    pub fn warn(&self, peer_addr: &str, identity: Option<&Identity>, reason: &str) {
        if let LineDecision::Write { held_back } = self.admit_line(Instant::now()) {
            if held_back > 0 {
                tracing::warn!(
                    "{held_back} more refused connections were not logged in the last {WINDOW:?}"
                );
            }
            match identity {
                Some(id) => {
                    tracing::warn!(peer = peer_addr, certificate = %id, "refused connection: {reason}")
                }
                None => tracing::warn!(peer = peer_addr, "refused connection: {reason}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_written_then_held_back_and_counted() {
        let log = RefusalLog::default();
        let t0 = Instant::now();
        for _ in 0..BURST {
            assert_eq!(log.admit_line(t0), LineDecision::Write { held_back: 0 });
        }
        for _ in 0..5 {
            assert_eq!(log.admit_line(t0), LineDecision::Suppress);
        }
        assert_eq!(
            log.admit_line(t0 + WINDOW),
            LineDecision::Write { held_back: 5 }
        );
        assert_eq!(log.total(), u64::from(BURST) + 6);
    }
}
