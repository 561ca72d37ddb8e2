//! What a finished round leaves behind: a candidate committed, set aside for an operator or
//! kept as rejected by the gate; or a round rejected or abandoned with no candidate. Then the
//! silos that failed it start a cool-down and those refused by admission rules count towards
//! quarantine.

use std::collections::HashMap;

use fedsilo_policies::Policy;

use super::ledger::Disposition;
use super::phase::{Awaiting, Phase};
use super::state::CoordinatorState;
use crate::audit::entry::now_ms;
use crate::audit::Record;
use crate::events::{Event, RoundSummary};
use crate::kernels::server_optimizer::OptimizerState;
use crate::model::checkpoint::Checkpoint;
use crate::model::lora::{adapters_to_hex, ADAPTERS_KEY};
use crate::model::{Architecture, Digest};
use crate::protocol::Scaling;
use crate::registry::{Status, VersionMeta};
use crate::round::{Attendance, RoundOutcome};

/// A checkpoint of `params` made in `round` from version `parent`.
pub fn checkpoint(
    spec: &Architecture,
    params: &[f32],
    scaling: &Scaling,
    round: u64,
    parent: u64,
) -> Checkpoint {
    Checkpoint {
        spec: spec.clone(),
        params: params.to_vec(),
        scaling: scaling.clone(),
        metadata: HashMap::from([
            ("fedsilo.round".to_string(), round.to_string()),
            ("fedsilo.parent".to_string(), parent.to_string()),
        ]),
    }
}

/// The candidate's checkpoint, with what made it in its metadata (under LoRA, `adapters`).
fn candidate_checkpoint(
    state: &CoordinatorState,
    params: Vec<f32>,
    adapters: Option<&[f32]>,
    summary: &RoundSummary,
) -> Checkpoint {
    // The values move into the checkpoint (and back out once it is written): no copy.
    let mut ckpt = checkpoint(
        &state.settings.spec,
        &[],
        &state.scaling_or_empty(),
        summary.round,
        state.versions.model.version,
    );
    ckpt.params = params;
    let meta = &mut ckpt.metadata;
    if let Some(a) = adapters {
        meta.insert(ADAPTERS_KEY.into(), adapters_to_hex(a));
    }
    meta.insert("fedsilo.version".into(), summary.version.to_string());
    meta.insert("fedsilo.aggregation".into(), summary.aggregation.clone());
    meta.insert(
        "fedsilo.policy_digest".into(),
        summary.policy_digest.clone(),
    );
    if let Some(p) = &summary.privacy {
        for (k, v) in [
            ("mode", p.mode.clone()),
            ("noise_multiplier", p.noise_multiplier.to_string()),
            ("round_epsilon", p.round_epsilon.to_string()),
            ("epsilon", p.epsilon.to_string()),
            ("delta", p.delta.to_string()),
        ] {
            meta.insert(format!("fedsilo.privacy.{k}"), v);
        }
    }
    ckpt
}

/// The registry's entry for a candidate made from the current version.
fn candidate_meta(state: &CoordinatorState, summary: &RoundSummary) -> VersionMeta {
    VersionMeta {
        version: summary.version,
        parent: state.versions.model.version,
        round: summary.round,
        status: Status::Committed,
        digest: summary.digest.clone(),
        file_sha256: String::new(),
        participants: summary
            .participants
            .iter()
            .map(|p| (p.clone(), summary.examples.get(p).copied().unwrap_or(0)))
            .collect(),
        aggregation: summary.aggregation.clone(),
        policy_digest: summary.policy_digest.clone(),
        privacy: summary.privacy.clone(),
        validation: summary.eval.clone(),
        reason: String::new(),
        created_ms: now_ms(),
        decided_by: "gate".into(),
        run: summary.run,
    }
}

/// Takes a finished round's outcome (the phase leaves `Round`). An error means the journal,
/// a checkpoint or the registry could not be written: the coordinator stops.
pub fn on_round(state: &mut CoordinatorState, outcome: RoundOutcome) -> crate::Result<()> {
    state.phase = Phase::Ready;
    state.run.next_round += 1;
    state.run.idle_since = std::time::Instant::now();
    let current = state.versions.model.version;
    let (round, attendance) = match outcome {
        RoundOutcome::Candidate {
            params,
            summary,
            optimizer,
            failed_gate,
        } => on_candidate(state, params, summary, optimizer, failed_gate)?,
        RoundOutcome::Rejected {
            round,
            reason,
            attendance,
        } => {
            state.ledger.reject_round(round, current, reason)?;
            (round, attendance)
        }
        RoundOutcome::Abandoned {
            round,
            reason,
            attendance,
        } => {
            state.ledger.abandon(round, &reason)?;
            (round, attendance)
        }
    };
    after_round(state, round, attendance)
}

/// A scored candidate: kept as rejected (it failed the gate), set aside for an operator (the
/// policy requires approval) or committed and made current.
fn on_candidate(
    state: &mut CoordinatorState,
    params: Vec<f32>,
    mut summary: Box<RoundSummary>,
    optimizer: Option<OptimizerState>,
    failed_gate: Option<String>,
) -> crate::Result<(u64, Attendance)> {
    // LoRA: the round made adapters; the version is the base with them merged in, and keeps
    // them (to train from, to resume).
    let (params, adapters) = match &state.versions.lora {
        Some(layout) => {
            let merged = layout.merge(&state.versions.initial, &params);
            summary.digest = Digest::of_f32(&merged).hex();
            (merged, Some(params))
        }
        None => (params, None),
    };
    let ckpt = candidate_checkpoint(state, params, adapters.as_deref(), &summary);
    let meta = candidate_meta(state, &summary);
    let v = &mut state.versions;
    v.next_version = v.next_version.max(summary.version + 1);
    let current = v.model.version;
    let result = (
        summary.round,
        Attendance::of(&summary.missing, &summary.refused),
    );
    if let Some(reason) = failed_gate {
        // Kept as a rejected version; the current one stays and is announced again.
        let rejected = Disposition::Rejected {
            current,
            reason: reason.clone(),
        };
        state.ledger.keep(&ckpt, None, meta, rejected)?;
        state.ledger.events.emit(Event::RoundRejected {
            round: summary.round,
            version: Some(summary.version),
            current,
            reason,
        });
        return Ok(result);
    }
    if requires_approval(&state.run.round_policy) {
        // Passed the gate; an operator decides. No round starts meanwhile.
        let meta = state.ledger.keep(
            &ckpt,
            optimizer.as_ref(),
            meta,
            Disposition::AwaitingApproval,
        )?;
        state.phase = Phase::AwaitingApproval(Box::new(Awaiting {
            meta,
            ckpt,
            optimizer,
            summary: Some(summary),
        }));
        return Ok(result);
    }
    let committing = std::time::Instant::now();
    state
        .ledger
        .keep(&ckpt, optimizer.as_ref(), meta, Disposition::Committed)?;
    let now = std::time::Instant::now();
    summary.phases.commit = now.duration_since(committing).as_secs_f64();
    summary.period_seconds = state
        .run
        .last_commit
        .replace(now)
        .map(|last| now.duration_since(last).as_secs_f64());
    let (version, eval) = (summary.version, summary.eval.clone());
    let summary_digest = summary.digest.clone();
    state.ledger.announce_commit(summary)?;
    let adapters = adapters.unwrap_or_default();
    state.run.made_current(version, &eval);
    let digest = Digest::from_hex(&summary_digest);
    state
        .versions
        .make_current(version, ckpt.params, adapters, optimizer, eval, digest);
    state.run.committed += 1;
    super::stopping::after_commit(state, result.0);
    super::deployments::on_current(state, version)?;
    Ok(result)
}

/// Whether a candidate that passed the gate needs an operator's approval under `policy`.
pub fn requires_approval(policy: &Policy) -> bool {
    policy
        .validation
        .as_ref()
        .is_some_and(|v| v.require_approval)
}

/// Failures start a cool-down; refusals by admission rules count towards quarantine.
fn after_round(
    state: &mut CoordinatorState,
    round: u64,
    attendance: Attendance,
) -> crate::Result<()> {
    for silo in attendance.failed() {
        state.members.failures.insert(silo.to_string(), round);
    }
    for (silo, why) in &attendance.missing {
        if why.starts_with(crate::round::outcome::LEFT_MID_ROUND) {
            super::membership::left_mid_round(state, silo);
        }
    }
    for (silo, _) in &attendance.refused {
        let quarantined = state
            .members
            .quarantine
            .refused(&state.run.round_policy, silo, round);
        if let Some(until_round) = quarantined {
            state.ledger.journal.record(Record::SiloQuarantined {
                silo: silo.clone(),
                until_round,
            })?;
            state.ledger.events.emit(Event::SiloQuarantined {
                silo: silo.clone(),
                until_round,
            });
        }
    }
    Ok(())
}
