//! The coordinator's durable record: checkpoints ([`ModelStore`]), the signed audit journal,
//! the version registry and the event log, written in one order by one helper.
//!
//! Every version the coordinator keeps — committed, rejected by the gate, set aside for an
//! operator, withdrawn by one — goes through [`Ledger::keep`] (or [`Ledger::settle`] for a file
//! already staged): checkpoint staged and synced → journal entry synced → published as
//! `CURRENT` (commits only) → registry. A crash between any two steps is finished or undone at
//! the next start from the journal, which is why it comes before anything a reader sees.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::audit::{Journal, Record};
use crate::events::{Event, EventLog, RoundSummary};
use crate::identity::signature::CaCheck;
use crate::kernels::server_optimizer::OptimizerState;
use crate::model::checkpoint::Checkpoint;
use crate::registry::{Registry, Status, VersionMeta};
use crate::store::ModelStore;
use crate::Error;

/// What becomes of a version kept by [`Ledger::keep`].
#[derive(Debug, Clone, PartialEq)]
pub enum Disposition {
    /// Committed: the new current version.
    Committed,
    /// Rejected (by the gate, or by an operator); `current` stays current.
    Rejected {
        /// The version that stays current.
        current: u64,
        /// Why.
        reason: String,
    },
    /// Passed the gate; waits for an operator.
    AwaitingApproval,
}

/// The files and logs the coordinator writes, and what it has recorded in them.
pub struct Ledger {
    /// Checkpoints, `CURRENT`, `rounds.jsonl`.
    pub store: ModelStore,
    /// The signed audit journal.
    pub journal: Arc<Journal>,
    /// Version metadata.
    pub registry: Arc<Registry>,
    /// `events.jsonl` and the subscribers (metrics, webhooks).
    pub events: Arc<EventLog>,
    /// The consortium CA, to check operators' decision files against.
    pub ca: CaCheck,
    /// SHA-256 of every committed checkpoint, as journaled (for resume and rollbacks).
    pub committed_sha: BTreeMap<u64, String>,
    /// Hashes of the operators' decisions already applied (each applies at most once).
    pub applied: BTreeSet<String>,
}

impl Ledger {
    /// Keeps version `meta.version`: its checkpoint staged and synced (a candidate's also
    /// kept under `models/candidates/`), then [`Ledger::settle`]d. Returns its metadata as
    /// recorded.
    pub fn keep(
        &mut self,
        ckpt: &Checkpoint,
        optimizer: Option<&OptimizerState>,
        mut meta: VersionMeta,
        disposition: Disposition,
    ) -> crate::Result<VersionMeta> {
        meta.file_sha256 = self.store.stage(meta.version, ckpt, optimizer)?;
        if disposition != Disposition::Committed {
            self.store.keep_candidate(meta.version)?;
        }
        self.settle(meta, disposition)
    }

    /// Records what became of a staged version: the journal entry (synced), `CURRENT` for a
    /// commit, then the registry.
    pub fn settle(
        &mut self,
        mut meta: VersionMeta,
        disposition: Disposition,
    ) -> crate::Result<VersionMeta> {
        let record = match &disposition {
            Disposition::Committed => Record::Committed {
                round: meta.round,
                version: meta.version,
                parent: meta.parent,
                digest: meta.digest.clone(),
                file_sha256: meta.file_sha256.clone(),
                participants: meta.participants.clone(),
            },
            Disposition::Rejected { current, reason } => Record::Rejected {
                round: meta.round,
                version: Some(meta.version),
                file_sha256: Some(meta.file_sha256.clone()),
                current: *current,
                reason: reason.clone(),
            },
            Disposition::AwaitingApproval => Record::AwaitingApproval {
                round: meta.round,
                version: meta.version,
                file_sha256: meta.file_sha256.clone(),
            },
        };
        self.journal.record_synced(record)?;
        match disposition {
            Disposition::Committed => {
                self.committed_sha
                    .insert(meta.version, meta.file_sha256.clone());
                self.store.publish(meta.version)?;
                meta.status = Status::Committed;
            }
            Disposition::Rejected { reason, .. } => {
                meta.status = Status::Rejected;
                meta.reason = reason;
            }
            Disposition::AwaitingApproval => {
                meta.status = Status::AwaitingApproval;
                meta.reason = "passed the validation gate; awaiting an operator's approval".into();
            }
        }
        self.registry.put(&meta)?;
        Ok(meta)
    }

    /// Committed version `v`'s checkpoint, checked against the SHA-256 the journal committed.
    pub fn load_committed(&self, v: u64) -> crate::Result<Checkpoint> {
        let Some(sha) = self.committed_sha.get(&v) else {
            return Err(Error::Checkpoint {
                origin: self.store.model_path(v).display().to_string(),
                message: format!(
                    "version {v} is named as committed (CURRENT or a rollback) but the audit journal never committed it"
                ),
            });
        };
        self.store.load_committed(v, sha)
    }

    /// Records a round that will never end as abandoned (journal, synced; event).
    pub fn abandon(&self, round: u64, reason: &str) -> crate::Result<()> {
        self.journal.record_synced(Record::Abandoned {
            round,
            reason: reason.to_string(),
        })?;
        self.events.emit(Event::RoundAbandoned {
            round,
            reason: reason.to_string(),
        });
        Ok(())
    }

    /// Records a round that made no candidate to keep as rejected (journal, synced; event).
    pub fn reject_round(&self, round: u64, current: u64, reason: String) -> crate::Result<()> {
        self.journal.record_synced(Record::Rejected {
            round,
            version: None,
            file_sha256: None,
            current,
            reason: reason.clone(),
        })?;
        self.events.emit(Event::RoundRejected {
            round,
            version: None,
            current,
            reason,
        });
        Ok(())
    }

    /// A committed round's outcome, for `rounds.jsonl` and the event log (and so metrics,
    /// webhooks, the report).
    pub fn announce_commit(&self, summary: Box<RoundSummary>) -> crate::Result<()> {
        self.store.append_round(&summary)?;
        self.events.emit(Event::RoundCommitted(summary));
        Ok(())
    }
}

/// A round's summary as the registry keeps it: what a candidate that waited across a restart
/// still has (training loss, times and bytes were not kept: unknown, NaN or zero).
pub fn summary_of(meta: &VersionMeta) -> RoundSummary {
    let examples: f64 = meta.validation.values().map(|m| m.examples as f64).sum();
    RoundSummary {
        round: meta.round,
        version: meta.version,
        digest: meta.digest.clone(),
        participants: meta.participants.iter().map(|(s, _)| s.clone()).collect(),
        missing: vec![],
        mean_train_loss: f64::NAN,
        eval: meta.validation.clone(),
        eval_loss: meta
            .validation
            .values()
            .map(|m| m.loss * m.examples as f64)
            .sum::<f64>()
            / examples.max(1.0),
        wall_seconds: 0.0,
        bytes_to_silos: BTreeMap::new(),
        phases: Default::default(),
        period_seconds: None,
        slowest_train_seconds: 0.0,
        overhead_seconds: 0.0,
        bytes_from_silos: BTreeMap::new(),
        update_bytes: 0,
        aggregation: meta.aggregation.clone(),
        policy_digest: meta.policy_digest.clone(),
        refused: vec![],
        selected: None,
        clipped: vec![],
        examples: meta.participants.iter().cloned().collect(),
        update_norms: BTreeMap::new(),
        privacy: meta.privacy.clone(),
        run: meta.run,
    }
}
