//! What a journal already holds, as the coordinator needs it when it starts.

use super::record::Record;
use super::verify::Checked;

/// The run so far, read from the journal's entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The highest round number ever started.
    pub last_round: Option<u64>,
    /// A round started but never committed, rejected or abandoned (the coordinator stopped
    /// during it).
    pub open_round: Option<u64>,
    /// The version the journal made current last (committed or rolled back to) and the SHA-256
    /// of its checkpoint file.
    pub last_commit: Option<(u64, String)>,
}

impl History {
    /// Reads the history from verified entries.
    pub fn of(entries: &[Checked]) -> Self {
        let mut h = History::default();
        for e in entries {
            match &e.body.record {
                Record::RoundStarted { round, .. } => {
                    h.last_round = Some(h.last_round.map_or(*round, |r| r.max(*round)));
                    h.open_round = Some(*round);
                }
                Record::Committed {
                    round,
                    version,
                    file_sha256,
                    ..
                } => {
                    if h.open_round == Some(*round) {
                        h.open_round = None;
                    }
                    h.last_commit = Some((*version, file_sha256.clone()));
                }
                Record::RolledBack {
                    to, file_sha256, ..
                } => {
                    h.last_commit = Some((*to, file_sha256.clone()));
                }
                Record::Rejected { round, .. }
                | Record::Abandoned { round, .. }
                | Record::AwaitingApproval { round, .. }
                    if h.open_round == Some(*round) =>
                {
                    h.open_round = None;
                }
                _ => {}
            }
        }
        h
    }
}
