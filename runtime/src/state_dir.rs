//! # The coordinator's state directory
//!
//! Everything a federation is, on disk, and which module writes it:
//!
//! ```text
//! <state_dir>/
//!   audit.jsonl                  signed, hash-chained journal of every decision   audit::journal
//!   models/v<N>.safetensors      one checkpoint per committed version             store
//!   models/v<N>.optimizer.safetensors   server optimiser moments, if any          store
//!   models/staging/              a version being committed                         store
//!   models/candidates/           rejected and awaiting-approval candidates         store
//!   CURRENT                      the current version number (atomic rename)        store
//!   rounds.jsonl                 one line per committed round (fsynced)            store
//!   registry.redb                every version's metadata                          registry
//!   events.jsonl                 every event                                       events
//!   privacy.jsonl                silo-level DP spend per silo                      privacy::budget
//!   policies/<sha-256>.toml      every policy text enforced, by digest            policy_archive
//!   decisions/                   operators' signed decision files (the inbox)      decision
//!   webhooks.jsonl               every webhook delivery's outcome                  webhooks
//!   report.html                  the run report                                    report
//!   governance.html, .json       the governance report                             report::governance
//! ```
//!
//! The journal is the source of truth. [`open`] opens it first (checked end to end), then
//! finishes or drops a commit a crash left half-done in the store and brings the registry in
//! line with it, before anything else reads the directory.

use std::path::Path;
use std::sync::Arc;

use crate::audit::{History, Journal};
use crate::events::{EventFormat, EventLog, Observer};
use crate::registry::Registry;
use crate::store::ModelStore;
use crate::tls::NodeCredentials;

/// The state directory, opened and reconciled with its journal.
pub struct StateDir {
    /// Checkpoints, `CURRENT`, `rounds.jsonl`.
    pub store: ModelStore,
    /// `events.jsonl` and its observers.
    pub events: Arc<EventLog>,
    /// The audit journal, extended with a signer entry for this coordinator.
    pub journal: Journal,
    /// What the journal held.
    pub history: History,
    /// Version metadata.
    pub registry: Arc<Registry>,
    /// What recovery did (each line also logged and printed as it was done).
    pub recovered: Vec<String>,
}

/// Opens `dir` for the coordinator whose kit is `creds` (see the module documentation).
/// `refuse` looks at the journal's history before anything is reconciled: a reason stops the
/// start with the directory untouched.
pub fn open(
    dir: &Path,
    creds: &NodeCredentials,
    format: EventFormat,
    observers: Vec<Arc<dyn Observer>>,
    refuse: impl FnOnce(&History) -> Option<String>,
) -> crate::Result<StateDir> {
    let store = ModelStore::open(dir)?;
    let events = Arc::new(EventLog::open(dir, format, observers)?);
    // The journal first: it is checked end to end, and a commit it recorded that a crash left
    // half-done is finished, before anything else happens.
    let (journal, entries) = Journal::open(
        &dir.join("audit.jsonl"),
        creds,
        store.current_version()?.unwrap_or(0),
    )?;
    let history = History::of(&entries);
    if let Some(message) = refuse(&history) {
        return Err(crate::Error::Config {
            origin: dir.display().to_string(),
            message,
        });
    }
    let last = history
        .last_commit
        .as_ref()
        .map(|(v, sha)| (*v, sha.as_str()));
    // What recovery does is said as it is done, so a later failure cannot hide it.
    let say = |did: Vec<String>| {
        for d in &did {
            tracing::warn!("{d}");
            eprintln!("fedsilo: recovery: {d}");
        }
        did
    };
    let journaled = history.versions.keys().copied().collect();
    let mut recovered = say(store.reconcile(last, &journaled)?);
    let registry = Arc::new(Registry::open(dir)?);
    recovered.extend(say(registry.reconcile(&entries, &history)?));
    Ok(StateDir {
        store,
        events,
        journal,
        history,
        registry,
        recovered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self, NodeSpec};
    use crate::identity::Role;

    #[test]
    fn a_refused_start_reconciles_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [NodeSpec::parse(Role::Coordinator, "coordinator").unwrap()];
        certs::init(&dir.path().join("certs"), "t", &nodes, 30, false).unwrap();
        let creds = NodeCredentials::load_kit(&dir.path().join("certs/coordinator")).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let refused = open(&state, &creds, EventFormat::Json, vec![], |_| {
            Some("paused and nothing could resume it".into())
        });
        let Err(e) = refused else {
            panic!("the start was not refused");
        };
        assert!(e.to_string().contains("nothing could resume it"), "{e}");
        assert!(
            !state.join("registry.redb").exists(),
            "the registry was opened and reconciled before the refusal"
        );
        let opened = open(&state, &creds, EventFormat::Json, vec![], |_| None).unwrap();
        assert!(opened.recovered.is_empty());
        assert!(state.join("registry.redb").exists());
    }
}
