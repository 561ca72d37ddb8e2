//! Training runs as jobs, for a serving coordinator (`federation.serve`): submitting and
//! cancelling runs ([`submit`], [`cancel`]; the schedule's, [`submit_due`]), starting the next
//! queued one when none is active ([`start_next`]), ending the active one ([`close`]), and the
//! book at start ([`recover`]). Each transition is checked against
//! the book of runs ([`crate::runs::RunBook`]), journaled (synced), then applied — the order
//! that lets a restart rebuild the book from the journal.
//!
//! A coordinator that does not serve has one run, up to round `federation.rounds`, and none of
//! this applies: its run has no id and ends the process.

use super::messages::ControlError;
use super::phase::Phase;
use super::settings::CoordinatorSettings;
use super::state::{CoordinatorState, Job};
use crate::audit::entry::now_ms;
use crate::audit::Record;
use crate::events::Event;
use crate::federation::MAX_EPOCHS;
use crate::protocol::MAX_PASSES;
use crate::retraining::SCHEDULE;
use crate::runs::{RunPlan, RunSettings, RunStatus};

/// Who submits the first run of a federation that has never had one (`federation.rounds`).
pub const FEDERATION_FILE: &str = "federation file";

fn journal_error(e: crate::audit::AuditError) -> ControlError {
    ControlError::Failed(format!("cannot record it in the audit journal: {e}"))
}

/// A submission's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Submitted {
    /// Queued as this run.
    Queued(u64),
    /// Its idempotency key made this run already (a retry): nothing new was queued.
    Again(u64),
}

/// Queues a run of `plan` (or, for a key already used with the same plan, finds its run).
pub fn submit(
    state: &mut CoordinatorState,
    plan: RunPlan,
    by: String,
) -> Result<Submitted, ControlError> {
    if !state.settings.serve {
        return Err(ControlError::Conflict(
            "this coordinator runs one run and stops; runs can be submitted only with `federation.serve = true`".into(),
        ));
    }
    if let Some(r) = plan.key.as_deref().and_then(|k| state.runs.by_key(k)) {
        if r.plan == plan {
            return Ok(Submitted::Again(r.id));
        }
    }
    state
        .runs
        .check_submit(&plan)
        .map_err(|e| ControlError::Conflict(e.to_string()))?;
    check_settings(&state.settings, &plan).map_err(ControlError::Conflict)?;
    queue(state, plan, by, now_ms())
        .map(Submitted::Queued)
        .map_err(journal_error)
}

/// A run's own settings within the bounds the federation file's `[plan]` has, and its local-only
/// baseline (with `compare_local`) within what silos accept for one request.
fn check_settings(s: &CoordinatorSettings, plan: &RunPlan) -> Result<(), String> {
    plan.policy.check()?;
    let r = &plan.settings;
    if let Some(e) = r.epochs.filter(|e| *e == 0 || *e > MAX_EPOCHS) {
        return Err(format!("epochs = {e}: must be between 1 and {MAX_EPOCHS}"));
    }
    if r.batch_size == Some(0) {
        return Err("batch_size = 0: must be at least 1".into());
    }
    if let Some(l) = r.learning_rate.filter(|l| !(l.is_finite() && *l > 0.0)) {
        return Err(format!("learning_rate = {l}: must be a positive number"));
    }
    if let Some(m) = r.prox_mu.filter(|m| !(m.is_finite() && *m >= 0.0)) {
        return Err(format!("prox_mu = {m}: must be 0 or a positive number"));
    }
    let epochs = r.epochs.unwrap_or(s.epochs);
    let passes = plan.rounds.saturating_mul(u64::from(epochs));
    if s.compare_local && passes > MAX_PASSES {
        return Err(format!(
            "{} rounds × {epochs} epochs: with compare_local each silo's local-only baseline would be {passes} passes over its data, more than the {MAX_PASSES} silos accept",
            plan.rounds
        ));
    }
    Ok(())
}

/// Journals and queues a run already checked, submitted at `at_ms`.
fn queue(
    state: &mut CoordinatorState,
    plan: RunPlan,
    by: String,
    at_ms: u64,
) -> Result<u64, crate::audit::AuditError> {
    let id = state.runs.next_id();
    state.ledger.journal.record_synced(Record::RunSubmitted {
        run: id,
        rounds: plan.rounds,
        by: by.clone(),
        settings: plan.settings.clone(),
        policy: plan.policy.clone(),
        key: plan.key.clone(),
    })?;
    state.runs.submit(id, plan, by, at_ms);
    Ok(id)
}

/// Submits the schedule's run if one is due at `now_ms` (`[schedule]`): due counting from the
/// schedule's last run, or from `since_ms` (the federation's first start) if it never
/// submitted one. While a scheduled run is still queued or running, the next waits for it —
/// runs do not pile up behind a slow one. Returns the id submitted, if any.
pub fn submit_due(
    state: &mut CoordinatorState,
    since_ms: u64,
    now_ms: u64,
) -> Result<Option<u64>, crate::audit::AuditError> {
    let Some(schedule) = &state.settings.schedule else {
        return Ok(None);
    };
    let last = state.runs.last_by(SCHEDULE);
    if last.is_some_and(|r| !r.status.is_over()) {
        return Ok(None);
    }
    let from = last.map_or(since_ms, |r| r.submitted_ms);
    let plan = RunPlan {
        rounds: schedule.rounds,
        settings: RunSettings::default(),
        policy: Default::default(),
        key: None,
    };
    if !schedule.due(from, now_ms) || state.runs.check_submit(&plan).is_err() {
        return Ok(None);
    }
    queue(state, plan, SCHEDULE.into(), now_ms).map(Some)
}

/// Cancels run `id`: a queued one at once; the active one ends at the next round boundary (a
/// round in flight completes and is judged as usual).
pub fn cancel(
    state: &mut CoordinatorState,
    id: u64,
    by: String,
    reason: String,
) -> Result<String, ControlError> {
    state.runs.check_cancel(id).map_err(|e| match e {
        crate::runs::RunError::Unknown(_) => ControlError::NotFound(e.to_string()),
        _ => ControlError::Conflict(e.to_string()),
    })?;
    state
        .ledger
        .journal
        .record_synced(Record::RunCancelled {
            run: id,
            by: by.clone(),
            reason: reason.clone(),
        })
        .map_err(journal_error)?;
    // Checked above: the book accepts it.
    let _ = state.runs.cancel(id, by, reason);
    match &mut state.run.job {
        Some(job) if job.id == Some(id) => {
            job.cancelled = true;
            if let Some(a) = state.phase.awaiting() {
                // Nothing more will start in it; the candidate still waits for its decision.
                let v = a.meta.version;
                close(state, None)?;
                return Ok(format!(
                    "run {id} is cancelled; candidate v{v} still awaits approval or rejection"
                ));
            }
            Ok(match state.phase.round_in_flight() {
                Some(r) => format!("run {id} is cancelled; it ends when round {r} is over"),
                None => format!("run {id} is cancelled"),
            })
        }
        _ => Ok(format!("run {id} is cancelled; it will not start")),
    }
}

/// The job of run `id` that starts (or resumes) at round `first_round`.
fn job(id: u64, plan: &RunPlan, first_round: u64) -> Job {
    Job {
        id: Some(id),
        until: first_round.saturating_add(plan.rounds - 1),
        rounds: plan.rounds,
        settings: plan.settings.clone(),
        policy: plan.policy.clone(),
        cancelled: false,
    }
}

/// At start, for a serving coordinator: the run the journal says was running resumes (a run
/// being cancelled ends at the first boundary); a federation that never had a run gets the
/// federation file's first one, queued — only if it never trained a round (`never_trained`:
/// a federation that ran without `serve` before does not train `rounds` more by itself).
/// Without an active run the coordinator is idle. `committed_rounds`: the rounds of every
/// version the journal committed.
pub fn recover(
    state: &mut CoordinatorState,
    committed_rounds: &[u64],
    never_trained: bool,
) -> Result<(), crate::audit::AuditError> {
    let rounds = state.settings.rounds;
    let plan = RunPlan {
        rounds,
        settings: RunSettings::default(),
        policy: Default::default(),
        key: None,
    };
    if never_trained
        && state.runs.is_empty()
        && rounds > 0
        && state.runs.check_submit(&plan).is_ok()
    {
        queue(state, plan, FEDERATION_FILE.into(), now_ms())?;
    }
    let Some(active) = state.runs.active().cloned() else {
        if matches!(state.phase, Phase::Ready | Phase::Starting { .. }) {
            state.phase = Phase::Idle;
        }
        return Ok(());
    };
    let first = active.status.first_round().unwrap_or(state.run.next_round);
    let mut j = job(active.id, &active.plan, first);
    j.cancelled = matches!(active.status, RunStatus::Cancelling { .. });
    state.run.begin(j);
    // What it committed before the restart still counts.
    state.run.committed = committed_rounds.iter().filter(|r| **r >= first).count() as u64;
    state.ledger.events.emit(Event::RunStarted {
        run: active.id,
        rounds: active.plan.rounds,
        first_round: first,
    });
    Ok(())
}

/// Starts the oldest queued run if no run is active; `Ok(false)` when there is none to start
/// (the coordinator stays idle).
pub fn start_next(state: &mut CoordinatorState) -> Result<bool, ControlError> {
    if state.run.job.is_some() {
        return Ok(true);
    }
    let Some(next) = state.runs.next_queued().cloned() else {
        if matches!(state.phase, Phase::Ready | Phase::Starting { .. }) {
            state.phase = Phase::Idle;
        }
        return Ok(false);
    };
    let first_round = state.run.next_round;
    state
        .runs
        .check_start(next.id)
        .map_err(|e| ControlError::Conflict(e.to_string()))?;
    state
        .ledger
        .journal
        .record_synced(Record::RunStarted {
            run: next.id,
            first_round,
        })
        .map_err(journal_error)?;
    let _ = state.runs.start(next.id, first_round);
    state.run.begin(job(next.id, &next.plan, first_round));
    if matches!(state.phase, Phase::Idle) {
        state.phase = if state.versions.scaling.is_some() {
            Phase::Ready
        } else {
            Phase::Starting {
                agreeing: false,
                retry_at: None,
            }
        };
    }
    state.ledger.events.emit(Event::RunStarted {
        run: next.id,
        rounds: next.plan.rounds,
        first_round,
    });
    Ok(true)
}

/// Ends the active run (`error`: why it could not go on); the coordinator goes idle unless a
/// candidate still awaits an operator (a decision outlives the run that made it).
pub fn close(state: &mut CoordinatorState, error: Option<String>) -> Result<(), ControlError> {
    let Some(job) = state.run.job.take() else {
        return Ok(());
    };
    // A round asked for by hand belonged to this run.
    state.hold.step_taken();
    if !matches!(state.phase, Phase::AwaitingApproval(_)) {
        state.phase = Phase::Idle;
    }
    let Some(id) = job.id else {
        return Ok(());
    };
    let committed = state.run.committed;
    state
        .ledger
        .journal
        .record_synced(Record::RunEnded {
            run: id,
            committed,
            error: error.clone(),
        })
        .map_err(journal_error)?;
    let _ = state.runs.end(id, committed, error);
    let (outcome, reason) = match state.runs.get(id).map(|r| &r.status) {
        Some(RunStatus::Cancelled { by, reason, .. }) => {
            ("cancelled", Some(format!("by {by}: {reason}")))
        }
        Some(RunStatus::Failed { error, .. }) => ("failed", Some(error.clone())),
        _ => ("finished", None),
    };
    state.ledger.events.emit(Event::RunEnded {
        run: id,
        outcome: outcome.into(),
        committed,
        reason,
    });
    Ok(())
}
