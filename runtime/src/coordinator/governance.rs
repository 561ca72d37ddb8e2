//! Operators' say over the federation: pause and resume, a round started by hand, training
//! runs submitted and cancelled (carried out by [`super::jobs`]), and
//! decisions — approve or reject the candidate awaiting approval, roll back to an earlier
//! committed version — whether they come through the admin API ([`control`]) or as signed
//! files in the decision inbox ([`apply_decisions`], between rounds only).
//!
//! A decision is checked before it has any effect ([`check_decision`]), journaled, then
//! carried out ([`apply_decision`]). Once journaled, a failure to carry it out stops the
//! coordinator so that a restart reconciles the state with the journal.

use std::time::Instant;

use super::jobs;
use super::ledger::{summary_of, Disposition};
use super::messages::{ControlError, ControlRequest, RunRequest};
use super::phase::{Awaiting, Hold};
use super::state::CoordinatorState;
use crate::audit::entry::now_ms;
use crate::audit::Record;
use crate::decision::{self, Decision, Kind as DecisionKind};
use crate::events::Event;
use crate::model::Digest;
use crate::registry::Status;
use crate::status::Pause;

/// Carries out a control request; `Ok`: what was done; `Err`: why it cannot be done now
/// (`Conflict`), or that the journal or registry failed (`Failed`: the coordinator stops).
pub fn control(
    state: &mut CoordinatorState,
    request: ControlRequest,
) -> Result<String, ControlError> {
    match request {
        ControlRequest::Pause { by, reason } => pause(state, by, reason),
        ControlRequest::Resume { by } => resume(state, by),
        ControlRequest::StartRound { by } => start_round(state, by),
        ControlRequest::Run(RunRequest::Submit { plan, by }) => {
            match jobs::submit(state, plan, by)? {
                jobs::Submitted::Queued(id) => {
                    let ahead = state
                        .runs
                        .all()
                        .filter(|r| r.id != id && !r.status.is_over())
                        .count();
                    Ok(format!("run {id} queued ({ahead} run(s) ahead of it)"))
                }
                jobs::Submitted::Again(id) => Ok(format!(
                    "run {id} was submitted with this key already; nothing new is queued"
                )),
            }
        }
        ControlRequest::Run(RunRequest::Cancel { run, by, reason }) => {
            jobs::cancel(state, run, by, reason)
        }
        ControlRequest::Deploy {
            version,
            target,
            by,
            reason,
        } => {
            let what = target.describe();
            let id = super::deployments::order(state, version, target, &by, &reason)?;
            Ok(format!(
                "deployment {id}: v{version} to {what}; each silo gets it at its next heartbeat between rounds"
            ))
        }
        ControlRequest::Decide {
            kind,
            version,
            reason,
            by,
            certificate,
        } => decide(
            state,
            Decision {
                kind,
                version,
                reason,
                operator: by,
                certificate,
                time_ms: now_ms(),
                expect_sha256: None,
                expect_current: None,
            },
        ),
    }
}

fn journal_error(e: crate::audit::AuditError) -> ControlError {
    ControlError::Failed(format!("cannot record it in the audit journal: {e}"))
}

fn pause(state: &mut CoordinatorState, by: String, reason: String) -> Result<String, ControlError> {
    if let Some(p) = state.hold.pause() {
        return Err(ControlError::Conflict(format!(
            "already paused by {}: {}",
            p.by, p.reason
        )));
    }
    state
        .ledger
        .journal
        .record_synced(Record::Paused {
            by: by.clone(),
            reason: reason.clone(),
        })
        .map_err(journal_error)?;
    state.ledger.events.emit(Event::FederationPaused {
        by: by.clone(),
        reason: reason.clone(),
    });
    let answer = match state.phase.round_in_flight() {
        Some(r) => format!("paused; round {r} in flight finishes, no new round starts"),
        None => "paused; no new round starts until resumed".to_string(),
    };
    state.hold = Hold::Paused {
        pause: Pause { by, reason },
        step: false,
    };
    Ok(answer)
}

fn resume(state: &mut CoordinatorState, by: String) -> Result<String, ControlError> {
    if state.hold == Hold::Running {
        return Err(ControlError::Conflict("not paused".into()));
    }
    state
        .ledger
        .journal
        .record_synced(Record::Resumed { by: by.clone() })
        .map_err(journal_error)?;
    state.ledger.events.emit(Event::FederationResumed { by });
    state.hold = Hold::Running;
    state.run.idle_since = Instant::now();
    Ok("resumed; rounds start again".into())
}

fn start_round(state: &mut CoordinatorState, by: String) -> Result<String, ControlError> {
    let round = state.run.next_round;
    if let Some(why) = state
        .phase
        .refuses_step(&state.hold, round, state.run.until())
    {
        return Err(ControlError::Conflict(why));
    }
    if let Hold::Paused { step, .. } = &mut state.hold {
        *step = true;
    }
    state.run.idle_since = Instant::now();
    state
        .ledger
        .events
        .emit(Event::RoundRequested { by, round });
    Ok(format!(
        "round {round} starts as soon as enough silos are eligible"
    ))
}

fn decide(state: &mut CoordinatorState, d: Decision) -> Result<String, ControlError> {
    if let (DecisionKind::Rollback, Some(r)) = (d.kind, state.phase.round_in_flight()) {
        return Err(ControlError::Conflict(format!(
            "round {r} is in flight and trains from v{}: roll back when it ends (pause first)",
            state.versions.model.version
        )));
    }
    let from = state.versions.model.version;
    check_decision(state, &d).map_err(|r| ControlError::Conflict(r.to_string()))?;
    let hash = serde_json::to_vec(&d)
        .map(|b| Digest::of_bytes(&b).hex())
        .map_err(|e| ControlError::Failed(format!("cannot encode the decision: {e}")))?;
    journal_applied(state, &d, hash).map_err(journal_error)?;
    apply_decision(state, &d).map_err(|e| {
        ControlError::Failed(format!("the decision was journaled but not applied: {e}"))
    })?;
    let version = d.version;
    Ok(match d.kind {
        DecisionKind::Approve => format!("v{version} approved; it is current"),
        DecisionKind::Reject => format!(
            "v{version} rejected; v{} stays current",
            state.versions.model.version
        ),
        DecisionKind::Rollback => {
            format!("rolled back from v{from} to v{version}; the next round trains from it")
        }
    })
}

/// Records that decision `d` (hash `hash`) applies, before it is carried out.
fn journal_applied(
    state: &mut CoordinatorState,
    d: &Decision,
    hash: String,
) -> Result<(), crate::audit::AuditError> {
    state
        .ledger
        .journal
        .record_synced(Record::DecisionApplied {
            hash: hash.clone(),
            decision: d.kind.as_str().to_string(),
            version: d.version,
            by: d.operator.clone(),
        })?;
    state.ledger.applied.insert(hash);
    Ok(())
}

/// Applies the operators' decisions waiting in the inbox (between rounds only). A decision
/// that cannot apply is refused before it has any effect — recorded, moved aside — and the
/// federation goes on.
pub fn apply_decisions(state: &mut CoordinatorState) -> crate::Result<()> {
    for path in decision::pending(state.ledger.store.dir()) {
        let file = path
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().to_string());
        let checked = decision::read_verified(&path, &state.ledger.ca)
            .map_err(Refusal::from)
            .and_then(|(d, hash)| {
                if state.ledger.applied.contains(&hash) {
                    return Err(Refusal::Replayed);
                }
                check_decision(state, &d).map(|_| (d, hash))
            });
        match checked {
            Ok((d, hash)) => {
                journal_applied(state, &d, hash)?;
                decision::settle(&path, true);
                apply_decision(state, &d)?;
            }
            Err(refusal) => {
                let reason = refusal.to_string();
                state
                    .ledger
                    .journal
                    .record_synced(Record::DecisionRefused {
                        file: file.clone(),
                        reason: reason.clone(),
                    })?;
                state
                    .ledger
                    .events
                    .emit(Event::DecisionRefused { file, reason });
                decision::settle(&path, false);
            }
        }
    }
    Ok(())
}

/// Why a decision cannot apply now.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The signed file does not verify.
    #[error(transparent)]
    Invalid(#[from] decision::DecisionError),
    /// Its hash is in the journal already.
    #[error("this decision was already applied (the audit journal has it): a replayed file")]
    Replayed,
    /// Approve/reject of a version that is not awaiting approval.
    #[error("version {version} is not awaiting approval ({})", awaiting.map_or("no candidate is".into(), |v| format!("v{v} is")))]
    NotAwaiting {
        /// The version named.
        version: u64,
        /// The one awaiting, if any.
        awaiting: Option<u64>,
    },
    /// Approve/reject of another file under the same number.
    #[error("the decision was made on another v{0} than the one awaiting (its SHA-256 differs)")]
    OtherCandidate(u64),
    /// A rollback made when another version was current.
    #[error("made when v{then} was current; v{now} is current now")]
    CurrentMoved {
        /// Current when the operator decided.
        then: u64,
        /// Current now.
        now: u64,
    },
    /// A rollback to the current version.
    #[error("version {0} is already current")]
    AlreadyCurrent(u64),
    /// A rollback to a version that was never committed.
    #[error("version {0} was never committed; only a committed version can be made current again")]
    NeverCommitted(u64),
    /// The checkpoint to roll back to cannot be read.
    #[error("{}: {source}", path.display())]
    Unreadable {
        /// The checkpoint.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The checkpoint to roll back to was modified.
    #[error("{}: its SHA-256 differs from the one the audit journal committed: the file was modified", path.display())]
    Modified {
        /// The checkpoint.
        path: std::path::PathBuf,
    },
}

/// Whether decision `d` can apply now (no effect).
pub fn check_decision(state: &CoordinatorState, d: &Decision) -> Result<(), Refusal> {
    let current = state.versions.model.version;
    match d.kind {
        DecisionKind::Approve | DecisionKind::Reject => {
            let awaiting = state.phase.awaiting().map(|a| &a.meta);
            let Some(m) = awaiting.filter(|m| m.version == d.version) else {
                return Err(Refusal::NotAwaiting {
                    version: d.version,
                    awaiting: awaiting.map(|m| m.version),
                });
            };
            if d.expect_sha256
                .as_ref()
                .is_some_and(|s| *s != m.file_sha256)
            {
                return Err(Refusal::OtherCandidate(d.version));
            }
            Ok(())
        }
        DecisionKind::Rollback => {
            if let Some(then) = d.expect_current.filter(|c| *c != current) {
                return Err(Refusal::CurrentMoved { then, now: current });
            }
            if d.version == current {
                return Err(Refusal::AlreadyCurrent(d.version));
            }
            let Some(sha) = state.ledger.committed_sha.get(&d.version) else {
                return Err(Refusal::NeverCommitted(d.version));
            };
            let path = state.ledger.store.model_path(d.version);
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(source) => return Err(Refusal::Unreadable { path, source }),
            };
            if Digest::of_bytes(&bytes).hex() != *sha {
                return Err(Refusal::Modified { path });
            }
            Ok(())
        }
    }
}

/// Carries out a decision [`check_decision`] allowed and the journal recorded.
pub fn apply_decision(state: &mut CoordinatorState, d: &Decision) -> crate::Result<()> {
    match d.kind {
        DecisionKind::Approve => {
            if let Some(a) = state.phase.take_awaiting() {
                approve(state, *a, d)?;
            }
        }
        DecisionKind::Reject => {
            if let Some(a) = state.phase.take_awaiting() {
                let reason = format!("rejected by {}: {}", d.operator, d.reason);
                let (round, current) = (a.meta.round, state.versions.model.version);
                withdraw(state, *a, d, &reason, current)?;
                state.ledger.events.emit(Event::RoundRejected {
                    round,
                    version: Some(d.version),
                    current,
                    reason,
                });
            }
        }
        DecisionKind::Rollback => rollback(state, d)?,
    }
    Ok(())
}

/// The candidate awaiting approval is committed and made current.
fn approve(state: &mut CoordinatorState, a: Awaiting, d: &Decision) -> crate::Result<()> {
    state.ledger.journal.record(Record::Approved {
        version: d.version,
        by: d.operator.clone(),
        reason: d.reason.clone(),
    })?;
    let mut meta = a.meta;
    meta.status = Status::Committed;
    meta.decided_by = d.operator.clone();
    meta.reason = format!("approved by {}: {}", d.operator, d.reason);
    let meta = state
        .ledger
        .keep(&a.ckpt, a.optimizer.as_ref(), meta, Disposition::Committed)?;
    // What its round did (rebuilt from the registry if the coordinator restarted since).
    let summary = a.summary.unwrap_or_else(|| Box::new(summary_of(&meta)));
    state.ledger.store.append_round(&summary)?;
    let seed = state.settings.seed;
    state.run.made_current(meta.version, &meta.validation);
    let round = meta.round;
    state.versions.make_checkpoint_current(
        meta.version,
        a.ckpt,
        a.optimizer,
        meta.validation,
        seed,
    )?;
    state.run.committed += 1;
    super::stopping::after_commit(state, round);
    state.run.last_waiting.clear();
    state.ledger.events.emit(Event::Approved {
        version: d.version,
        by: d.operator.clone(),
    });
    // Its round's outcome, now that it is one.
    state.ledger.events.emit(Event::RoundCommitted(summary));
    super::deployments::on_current(state, d.version)
}

/// An earlier committed version is made current again (a candidate awaiting approval, built
/// on the version being left, is withdrawn).
fn rollback(state: &mut CoordinatorState, d: &Decision) -> crate::Result<()> {
    if let Some(a) = state.phase.take_awaiting() {
        let reason = format!(
            "withdrawn: {} rolled back to v{} ({})",
            d.operator, d.version, d.reason
        );
        withdraw(state, *a, d, &reason, d.version)?;
    }
    make_earlier_current(state, d.version, &d.operator, &d.reason)?;
    state.run.rolled_back_to(d.version);
    Ok(())
}

/// Makes the committed `version` current again, by an operator or a rule (`by`), for
/// `reason`: journal (synced), `CURRENT`, the optimiser state it had, its figures as the run's
/// latest, the `rolled_back` event and the deployments.
pub(super) fn make_earlier_current(
    state: &mut CoordinatorState,
    version: u64,
    by: &str,
    reason: &str,
) -> crate::Result<()> {
    let ckpt = state.ledger.load_committed(version)?;
    let from = state.versions.model.version;
    let target = state.ledger.registry.get(version)?;
    state.ledger.journal.record_synced(Record::RolledBack {
        from,
        to: version,
        file_sha256: state
            .ledger
            .committed_sha
            .get(&version)
            .cloned()
            .unwrap_or_default(),
        by: by.to_string(),
        reason: reason.to_string(),
    })?;
    state.ledger.store.publish(version)?;
    let optimizer = match &state.settings.aggregation.server_optimizer {
        Some(o) => Some(
            state
                .ledger
                .store
                .optimizer(version)?
                .unwrap_or_else(|| o.initial_state(ckpt.params.len())),
        ),
        None => None,
    };
    let figures = target.map(|m| m.validation).unwrap_or_default();
    state.run.last_eval = figures.clone();
    let seed = state.settings.seed;
    state
        .versions
        .make_checkpoint_current(version, ckpt, optimizer, figures, seed)?;
    state.ledger.events.emit(Event::RolledBack {
        from,
        to: version,
        by: by.to_string(),
    });
    super::deployments::on_rollback(state, version, by, reason)
}

/// Rejects the candidate awaiting approval on an operator's decision (journal, registry).
fn withdraw(
    state: &mut CoordinatorState,
    a: Awaiting,
    d: &Decision,
    reason: &str,
    current: u64,
) -> crate::Result<()> {
    let mut meta = a.meta;
    meta.decided_by = d.operator.clone();
    state.ledger.settle(
        meta,
        Disposition::Rejected {
            current,
            reason: reason.to_string(),
        },
    )?;
    state.run.last_waiting.clear();
    Ok(())
}
