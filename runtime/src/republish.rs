//! After a crash: committed rounds the logs never heard of.
//!
//! A commit is journaled (synced) before its round is appended to `rounds.jsonl` and announced
//! as a `round_committed` event (`events.jsonl`, metrics, webhooks, the report, `/v1/rounds`).
//! A coordinator killed between those steps has a committed version that only the journal, the
//! registry and `models/` know. At the next start, [`missing_from_logs`] finds every such round
//! — committed by the journal, absent from one log or the other — and the coordinator re-derives
//! its summary from the registry and publishes it to exactly the logs that lack it. Each log is
//! checked on its own, so a round is never announced twice.

use std::collections::BTreeSet;
use std::path::Path;

use crate::line_file::read_complete;
use crate::{Error, Result};

/// Committed versions missing from each log, ascending.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Missing {
    /// Not in `rounds.jsonl`.
    pub rounds_log: Vec<u64>,
    /// No `round_committed` event in `events.jsonl`.
    pub events_log: Vec<u64>,
}

impl Missing {
    /// Every version missing from either log, ascending.
    pub fn any(&self) -> Vec<u64> {
        let all: BTreeSet<u64> = self
            .rounds_log
            .iter()
            .chain(&self.events_log)
            .copied()
            .collect();
        all.into_iter().collect()
    }
}

/// The `version` of each JSON line of `path` that `keep` accepts (unparsable lines skipped; a
/// torn last line cut off).
fn versions_in(path: &Path, keep: impl Fn(&serde_json::Value) -> bool) -> Result<BTreeSet<u64>> {
    let text = read_complete(path).map_err(|e| Error::io("reading", path, e))?;
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| keep(v))
        .filter_map(|v| v["version"].as_u64())
        .collect())
}

/// Which of `committed` (versions the journal committed through a round, i.e. round ≥ 1) the
/// logs of `state_dir` lack.
pub fn missing_from_logs(state_dir: &Path, committed: &[u64]) -> Result<Missing> {
    let in_rounds = versions_in(&state_dir.join("rounds.jsonl"), |_| true)?;
    let in_events = versions_in(&state_dir.join("events.jsonl"), |v| {
        v["event"] == "round_committed"
    })?;
    let mut m = Missing::default();
    for v in committed {
        if !in_rounds.contains(v) {
            m.rounds_log.push(*v);
        }
        if !in_events.contains(v) {
            m.events_log.push(*v);
        }
    }
    m.rounds_log.sort_unstable();
    m.events_log.sort_unstable();
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_log_is_checked_on_its_own() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("rounds.jsonl"),
            "{\"round\":1,\"version\":1}\n{\"round\":2,\"version\":2}\n{\"round\":3,\"vers",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("events.jsonl"),
            "{\"event\":\"round_committed\",\"version\":1}\n{\"event\":\"approved\",\"version\":3}\nnot json\n",
        )
        .unwrap();
        let m = missing_from_logs(dir.path(), &[1, 2, 3]).unwrap();
        assert_eq!(m.rounds_log, vec![3]);
        assert_eq!(m.events_log, vec![2, 3]);
        assert_eq!(m.any(), vec![2, 3]);
        // The torn line was cut off on disk.
        let rounds = std::fs::read_to_string(dir.path().join("rounds.jsonl")).unwrap();
        assert!(rounds.ends_with("\"version\":2}\n"), "{rounds}");
        // Nothing missing: nothing to do.
        assert_eq!(
            missing_from_logs(dir.path(), &[1]).unwrap(),
            Missing {
                rounds_log: vec![],
                events_log: vec![]
            }
        );
    }
}
