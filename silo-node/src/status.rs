//! What the silo is doing, said in one place: its [`Activity`] (starting, waiting for the
//! coordinator, linked, training a round, blocked with the coordinator's reason, stopped), its
//! last round, and the version deployed at it.
//!
//! Every part of the node reports a [`Change`]; [`SiloStatus::apply`] is the one state machine
//! (pure, unit tested), and the [`StatusBoard`] logs each change of activity once, at the
//! default level, and writes the whole status to `--status-file` (atomically), which
//! `silo-node status` reads — from another shell, a monitoring check, a container probe.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What the silo is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Activity {
    /// Loading its data and model.
    Starting,
    /// Not linked: connecting, or reconnecting after the link closed.
    Waiting {
        /// The coordinator's address.
        coordinator: String,
    },
    /// Linked to the coordinator, between rounds.
    Linked,
    /// Training a round.
    Training {
        /// The round.
        round: u64,
    },
    /// The coordinator leaves it out of every round, and says why (e.g. another schema).
    Blocked {
        /// The coordinator's reason.
        reason: String,
    },
    /// The node stopped.
    Stopped {
        /// Why.
        reason: String,
    },
}

/// The last round it trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LastRound {
    /// The round.
    pub round: u64,
    /// Examples trained on.
    pub examples: u64,
    /// Mean training loss of the last epoch.
    pub loss: f64,
    /// When it finished, ms since the Unix epoch.
    pub at_ms: u64,
}

/// The version deployed at the silo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployedVersion {
    /// The version.
    pub version: u64,
    /// Its digest, hex.
    pub digest: String,
}

/// The silo's status, as `--status-file` holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SiloStatus {
    /// The silo's name.
    pub silo: String,
    /// The node's process id.
    pub pid: u32,
    /// What it is doing.
    pub activity: Activity,
    /// Since when, ms since the Unix epoch.
    pub since_ms: u64,
    /// The last round it trained, if any.
    pub last_round: Option<LastRound>,
    /// The version deployed at it, if any.
    pub deployed: Option<DeployedVersion>,
    /// Why the coordinator blocked it on its current link (kept once it stops, so that the
    /// status still says why it never trained).
    #[serde(default)]
    pub blocked: Option<String>,
}

/// Something that happened to the silo.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Connecting to the coordinator at this address.
    Connecting(String),
    /// The link to the coordinator is up.
    Linked,
    /// The link closed; reconnecting to this address.
    Unlinked(String),
    /// A round's training started.
    TrainingStarted(u64),
    /// A round's training ended: (round, examples, loss), or `None` if it was refused.
    Trained(u64, Option<(u64, f64)>),
    /// The coordinator blocked the silo, with its reason.
    Blocked(String),
    /// A version is deployed.
    Deployed(u64, String),
    /// The node stops.
    Stopped(String),
}

impl SiloStatus {
    /// A silo starting.
    pub fn new(silo: &str, now_ms: u64) -> Self {
        SiloStatus {
            silo: silo.to_string(),
            pid: std::process::id(),
            activity: Activity::Starting,
            since_ms: now_ms,
            last_round: None,
            deployed: None,
            blocked: None,
        }
    }

    /// Applies `change` at `now_ms`; whether the activity changed.
    pub fn apply(&mut self, change: Change, now_ms: u64) -> bool {
        let next = match (&self.activity, change) {
            // A stopped node stays stopped.
            (Activity::Stopped { .. }, _) => None,
            (_, Change::Stopped(reason)) => Some(Activity::Stopped { reason }),
            (_, Change::Connecting(coordinator)) | (_, Change::Unlinked(coordinator)) => {
                Some(Activity::Waiting { coordinator })
            }
            // A new link is checked again by the coordinator: not blocked until it says so.
            (_, Change::Linked) => {
                self.blocked = None;
                Some(Activity::Linked)
            }
            (_, Change::Blocked(reason)) => {
                self.blocked = Some(reason.clone());
                Some(Activity::Blocked { reason })
            }
            (Activity::Blocked { .. } | Activity::Waiting { .. }, Change::TrainingStarted(_)) => {
                None
            }
            (_, Change::TrainingStarted(round)) => Some(Activity::Training { round }),
            (current, Change::Trained(round, outcome)) => {
                if let Some((examples, loss)) = outcome {
                    self.last_round = Some(LastRound {
                        round,
                        examples,
                        loss,
                        at_ms: now_ms,
                    });
                }
                match current {
                    Activity::Training { round: r } if *r == round => Some(Activity::Linked),
                    _ => None,
                }
            }
            (_, Change::Deployed(version, digest)) => {
                self.deployed = Some(DeployedVersion { version, digest });
                None
            }
        };
        match next {
            Some(a) if a != self.activity => {
                self.activity = a;
                self.since_ms = now_ms;
                true
            }
            _ => false,
        }
    }

    /// In a line, for `silo-node status` and the log.
    pub fn describe(&self) -> String {
        let activity = match &self.activity {
            Activity::Starting => "starting".to_string(),
            Activity::Waiting { coordinator } => {
                format!("waiting for the coordinator at {coordinator}")
            }
            Activity::Linked => "linked to the coordinator".into(),
            Activity::Training { round } => format!("training round {round}"),
            Activity::Blocked { reason } => format!("blocked by the coordinator: {reason}"),
            Activity::Stopped { reason } => format!("stopped: {reason}"),
        };
        let mut line = format!("silo {}: {activity}", self.silo);
        if let (Some(why), false) = (
            &self.blocked,
            matches!(self.activity, Activity::Blocked { .. }),
        ) {
            line += &format!(" (blocked by the coordinator: {why})");
        }
        if let Some(r) = &self.last_round {
            line += &format!(
                "; last trained round {} ({} examples, loss {:.4})",
                r.round, r.examples, r.loss
            );
        }
        match &self.deployed {
            Some(d) => {
                line += &format!(
                    "; deployed v{} ({})",
                    d.version,
                    &d.digest[..12.min(d.digest.len())]
                )
            }
            None => line += "; nothing deployed",
        }
        line
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The silo's status, shared by the parts of the node, logged and written to a file.
#[derive(Debug)]
pub struct StatusBoard {
    status: Mutex<SiloStatus>,
    file: Option<PathBuf>,
}

impl StatusBoard {
    /// The board of silo `silo`, writing to `file` if given.
    pub fn new(silo: &str, file: Option<PathBuf>) -> Self {
        let board = StatusBoard {
            status: Mutex::new(SiloStatus::new(silo, now_ms())),
            file,
        };
        board.write(&board.snapshot());
        board
    }

    /// The status now.
    pub fn snapshot(&self) -> SiloStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reports `change`: a change of activity is logged once, and the file rewritten.
    pub fn report(&self, change: Change) {
        // Held while the file is written: two parts of the node reporting at once cannot
        // interleave their writes, nor an older state land last.
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let before = s.clone();
        let changed = s.apply(change, now_ms());
        if *s == before {
            return;
        }
        let now = s.clone();
        if changed {
            match &now.activity {
                Activity::Blocked { reason } => {
                    tracing::warn!("blocked by the coordinator: {reason}")
                }
                Activity::Training { .. } => {}
                _ => tracing::info!(state = ?now.activity, "{}", now.describe()),
            }
        }
        self.write(&now);
        drop(s);
    }

    fn write(&self, s: &SiloStatus) {
        let Some(path) = &self.file else {
            return;
        };
        let json = match serde_json::to_vec_pretty(s) {
            Ok(j) => j,
            Err(_) => return,
        };
        if let Err(e) = fedsilo::model::checkpoint::write_atomic(path, &json) {
            tracing::warn!("cannot write the status file: {e}");
        }
    }
}

/// Reads a status file (`silo-node status`): the status, and whether its node still runs.
pub fn read(path: &Path) -> anyhow::Result<(SiloStatus, bool)> {
    use anyhow::Context;
    let bytes = std::fs::read(path).with_context(|| {
        format!(
            "{}: no status here (start silo-node with --status-file {})",
            path.display(),
            path.display()
        )
    })?;
    let s: SiloStatus = serde_json::from_slice(&bytes)
        .with_context(|| format!("{}: not a silo status file", path.display()))?;
    let running = !matches!(s.activity, Activity::Stopped { .. })
        && Path::new(&format!("/proc/{}", s.pid)).exists();
    Ok((s, running))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silo_moves_from_waiting_to_training_and_says_when_it_is_blocked() {
        let mut s = SiloStatus::new("bank-a", 0);
        assert!(s.apply(Change::Connecting("10.0.0.5:7443".into()), 1));
        assert!(s
            .describe()
            .contains("waiting for the coordinator at 10.0.0.5:7443"));
        assert!(s.apply(Change::Linked, 2));
        assert!(s.apply(Change::TrainingStarted(3), 3));
        assert_eq!(s.activity, Activity::Training { round: 3 });
        assert!(s.apply(Change::Trained(3, Some((900, 0.25))), 4));
        assert_eq!(s.activity, Activity::Linked);
        assert_eq!(
            s.last_round.as_ref().map(|r| (r.round, r.examples)),
            Some((3, 900))
        );
        // A refused round changes nothing but the activity.
        s.apply(Change::TrainingStarted(4), 5);
        s.apply(Change::Trained(4, None), 6);
        assert_eq!(s.last_round.as_ref().map(|r| r.round), Some(3));
        // Deployed: remembered, the activity unchanged.
        assert!(!s.apply(Change::Deployed(2, "ab".repeat(32)), 7));
        assert!(s.describe().contains("deployed v2"));
        // Blocked: said, and kept until the link is made again.
        assert!(s.apply(Change::Blocked("another schema".into()), 8));
        assert!(!s.apply(Change::TrainingStarted(5), 9));
        assert!(s
            .describe()
            .contains("blocked by the coordinator: another schema"));
        assert!(s.apply(Change::Unlinked("10.0.0.5:7443".into()), 10));
        assert!(s.apply(Change::Linked, 11));
        assert_eq!(s.since_ms, 11);
        // Stopped is final.
        assert!(s.apply(Change::Blocked("another schema".into()), 12));
        assert!(s.apply(Change::Stopped("interrupted".into()), 13));
        assert!(!s.apply(Change::Linked, 14));
        // Stopped, it still says why it never trained.
        assert!(s
            .describe()
            .contains("stopped: interrupted (blocked by the coordinator: another schema)"));
    }

    #[test]
    fn the_board_writes_what_status_reads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        let board = StatusBoard::new("bank-a", Some(path.clone()));
        board.report(Change::Linked);
        board.report(Change::Deployed(4, "cd".repeat(32)));
        let (s, running) = read(&path).unwrap();
        assert!(running, "this process runs");
        assert_eq!(
            (s.activity, s.deployed.map(|d| d.version)),
            (Activity::Linked, Some(4))
        );
        board.report(Change::Stopped("interrupted".into()));
        assert!(!read(&path).unwrap().1);
        let e = read(&dir.path().join("none.json")).unwrap_err().to_string();
        assert!(e.contains("--status-file"), "{e}");
    }
}
