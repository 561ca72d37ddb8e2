//! Starting work when the coordinator is idle: nothing while a task is out or a candidate
//! awaits an operator; a serving coordinator's next queued run when none is active
//! ([`super::jobs`]); the end of the run after its last round (or once it is cancelled); otherwise the policy file is
//! re-read (it takes effect at round boundaries), the privacy budget is checked, the Policy
//! actor selects a cohort from the [`candidates`](super::cohort::candidates), and either the
//! cohort agrees on feature scaling (first time) or a round is dispatched.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use fedsilo_policies::participation::Selection;
use fedsilo_policies::Policy;
use ractor::ActorRef;

use super::cohort::{candidates, route_for, Eligibility};
use super::jobs;
use super::lifecycle::{end_run, finish, run_over, task_failure};
use super::messages::CoordinatorMessage;
use super::phase::Phase;
use super::scaling;
use super::state::CoordinatorState;
use crate::actors::ask;
use crate::actors::policy::{PolicyMessage, Reload};
use crate::audit::Record;
use crate::events::Event;
use crate::model::Digest;
use crate::privacy::budget::BookError;
use crate::privacy::budget::RoundSpend;
use crate::privacy::mechanism::{check_aggregation, silo_share, NotASum};
use crate::protocol::SiloHandle;
use crate::protocol::{LoraTrain, ModelRef, Personalize, TrainPlan, UpdateNoise};
use crate::round::{run_round, Attendance, BaseModel, RoundContext, RoundOutcome};

/// Starts the next piece of work if the coordinator is idle and may (see the module doc).
pub async fn maybe_start_work(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    if state.phase.busy() || state.phase.finished() {
        return;
    }
    if let Some(a) = state.phase.awaiting() {
        // Paused until an operator approves or rejects the candidate.
        let (round, version) = (a.meta.round, a.meta.version);
        let why = vec![format!(
            "candidate v{version} awaits an operator's approval (fedsilo models approve|reject {version})"
        )];
        if state.run.last_waiting != why {
            state
                .ledger
                .events
                .emit(Event::AwaitingApproval { round, version });
            state.run.last_waiting = why;
        }
        return;
    }
    if state.settings.serve {
        match jobs::start_next(state) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => return finish(state, myself, Some(e.to_string())),
        }
    }
    if state.run.next_round > state.run.until()
        || state.run.exhausted
        || state.run.cancelled()
        || state.run.stopped_early
    {
        end_run(state, myself);
        return;
    }
    if let Some(p) = state.hold.pause() {
        // Paused (even with a round asked for): the no-round-could-start clock does not run.
        state.run.idle_since = Instant::now();
        if !state.hold.may_dispatch() {
            state.run.last_waiting = vec![format!("paused by {}: {}", p.by, p.reason)];
            return;
        }
    }
    let round = state.run.next_round;
    refresh_policy(state).await;
    let current = match ask(&state.links.policy, "policy", PolicyMessage::Snapshot).await {
        // The run's own policy can only tighten the federation's.
        Ok(p) => state.run.policy(&p),
        Err(e) => return finish(state, myself, Some(e.to_string())),
    };
    let over_budget = match budget_check(state, &current, round) {
        Ok(over) => over,
        Err(why) => return finish(state, myself, Some(why.to_string())),
    };
    if state.run.exhausted {
        return end_run(state, myself);
    }
    let Some(selection) = select(state, myself, &current, &over_budget, round).await else {
        return;
    };
    let cohort: Vec<SiloHandle> = selection
        .cohort
        .iter()
        .filter_map(|n| state.members.silos.get(n).map(|e| e.handle.clone()))
        .collect();
    if state.versions.scaling.is_none() {
        if !scaling::backing_off(&state.phase) {
            let quorum = current.participation.quorum;
            scaling::start(state, myself, cohort, quorum);
        }
        return;
    }
    dispatch(state, myself, current, cohort, selection.excluded).await;
}

/// A changed policy file takes effect here, at the round boundary (a refused one is recorded
/// and the old one stays).
async fn refresh_policy(state: &mut CoordinatorState) {
    match ask(&state.links.policy, "policy", PolicyMessage::Refresh).await {
        Ok(Reload::Changed(digest)) => {
            // Kept before it is journaled, so a reviewer can read every digest the journal names.
            if let Ok(p) = ask(&state.links.policy, "policy", PolicyMessage::Snapshot).await {
                if let Err(e) = crate::policy_archive::keep(state.ledger.store.dir(), &p) {
                    tracing::warn!("cannot keep the new policy's text: {e}");
                }
            }
            let _ = state.ledger.journal.record(Record::PolicyChanged {
                digest: digest.clone(),
            });
            state.ledger.events.emit(Event::PolicyChanged { digest })
        }
        Ok(Reload::Refused(error)) => {
            let _ = state.ledger.journal.record(Record::PolicyRefused {
                error: error.clone(),
            });
            state.ledger.events.emit(Event::PolicyRefused { error })
        }
        _ => {}
    }
}

/// The Policy actor's cohort for `round`, or `None` when no round can start yet (the reasons
/// are reported once; after `wait_for_silos` the run ends).
async fn select(
    state: &mut CoordinatorState,
    myself: &ActorRef<CoordinatorMessage>,
    policy: &Policy,
    over_budget: &BTreeMap<String, String>,
    round: u64,
) -> Option<Selection> {
    let candidates = candidates(
        &state.members,
        &Eligibility {
            policy,
            round,
            over_budget,
            own_region: &state.settings.region,
            misroute: state.settings.misroute.as_deref(),
        },
    );
    let selection = match ask(&state.links.policy, "policy", |reply| {
        PolicyMessage::SelectCohort {
            round,
            candidates,
            reply,
        }
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            finish(state, myself, Some(e.to_string()));
            return None;
        }
    };
    if selection.verdict.allow {
        state.run.last_waiting.clear();
        return Some(selection);
    }
    let waited = state.run.idle_since.elapsed();
    if waited > state.settings.wait_for_silos {
        let why = format!(
            "no round could start for {:.0} s: {}",
            waited.as_secs_f64(),
            selection.verdict.reasons.join("; ")
        );
        run_over(state, myself, Some(why));
    } else if state.run.last_waiting != selection.verdict.reasons {
        state.run.last_waiting = selection.verdict.reasons.clone();
        state.ledger.events.emit(Event::WaitingForSilos {
            reasons: selection.verdict.reasons,
        });
    }
    None
}

/// Under the policy's silo-level DP: the silos one more round would take over their budget,
/// with the figures (each reported once). When too few silos are left for a round, the
/// refusal is recorded and the run ends (`run.exhausted`). `Err`: the policy's privacy
/// cannot be honoured with this aggregation.
fn budget_check(
    state: &mut CoordinatorState,
    policy: &Policy,
    round: u64,
) -> Result<BTreeMap<String, String>, NotASum> {
    let Some(dp) = &policy.privacy else {
        return Ok(BTreeMap::new());
    };
    check_aggregation(dp, &state.settings.aggregation)?;
    // Every silo this coordinator knows: connected now, or charged before (it may be
    // reconnecting). Budgets only shrink, so when too few of these have budget left, no round
    // can ever start again.
    let connected: Vec<String> = state.members.silos.keys().cloned().collect();
    let run = &mut state.run;
    let mut known: BTreeSet<String> = run.privacy.silos().cloned().collect();
    known.extend(connected.iter().cloned());
    let known: Vec<String> = known.into_iter().collect();
    let p = &policy.participation;
    // Planned for the largest cohort a round could dispatch: the worst case for distributed noise.
    let largest = known.len().min(p.max_silos.unwrap_or(usize::MAX));
    let plan = run.privacy.plan_for(dp, &known, largest, p.quorum);
    let over: BTreeMap<String, String> = plan
        .refused
        .into_iter()
        .filter(|(s, _)| connected.contains(s))
        .collect();
    for (silo, reason) in &over {
        if run.over_budget.insert(silo.clone()) {
            state.ledger.events.emit(Event::BudgetExcluded {
                round,
                silo: silo.clone(),
                reason: reason.clone(),
            });
        }
    }
    let spent = known.len() - plan.admitted.len();
    if spent > 0 && plan.admitted.len() < p.min_silos {
        let out: Vec<&str> = known
            .iter()
            .filter(|s| !plan.admitted.contains(s))
            .map(String::as_str)
            .collect();
        let reason = format!(
            "{spent} of {} silos have spent their privacy budget ({}); a round needs participation.min_silos = {}",
            known.len(),
            out.join(", "),
            p.min_silos
        );
        if let Err(e) = run.privacy.refuse(round, &reason) {
            tracing::error!("cannot record the budget refusal: {e}");
        }
        let _ = state.ledger.journal.record_synced(Record::BudgetExhausted {
            round,
            reason: reason.clone(),
        });
        state
            .ledger
            .events
            .emit(Event::BudgetExhausted { round, reason });
        run.exhausted = true;
    }
    Ok(over)
}

/// Routes the cohort (residency), charges its privacy spend, records the round's start
/// (journal, synced) and spawns the round; its outcome comes back as
/// [`CoordinatorMessage::RoundDone`].
async fn dispatch(
    state: &mut CoordinatorState,
    myself: &ActorRef<CoordinatorMessage>,
    policy: Policy,
    mut cohort: Vec<SiloHandle>,
    mut excluded: Vec<(String, String)>,
) {
    let round = state.run.next_round;
    // The round runs on the policy its cohort was chosen by.
    state.run.round_policy = policy.clone();
    let mut routes = BTreeMap::new();
    for h in &cohort {
        let region = state
            .members
            .silos
            .get(&h.name)
            .map(|e| e.region.clone())
            .unwrap_or_default();
        let s = &state.settings;
        let route = route_for(
            &state.members.aggregators,
            &policy,
            &h.name,
            &region,
            &s.region,
            s.misroute.as_deref(),
        );
        match route {
            Ok(Some(agg)) => {
                routes.insert(h.name.clone(), agg);
            }
            Ok(None) => {}
            // Never fall back to aggregating here: an update with nowhere allowed to go stays home.
            Err(why) => excluded.push((h.name.clone(), why.to_string())),
        }
    }
    cohort.retain(|h| !excluded.iter().any(|(n, _)| *n == h.name));
    let (privacy_spend, noise) = match charge_privacy(state, &policy, &mut cohort, &mut excluded) {
        Ok(charged) => charged,
        Err(e) => {
            let why = format!(
                "cannot record round {round}'s privacy spend, so it is not dispatched: {e}"
            );
            return finish(state, myself, Some(why));
        }
    };
    let mut ctx = context(state, round, policy, cohort, excluded, noise);
    ctx.routes = routes;
    state.run.noised |= privacy_spend.is_some();
    ctx.privacy_spend = privacy_spend;
    // On disk before any silo is asked to train (and before an orderly stop could record the
    // round as abandoned).
    let names: Vec<String> = ctx.cohort.iter().map(|h| h.name.clone()).collect();
    if let Err(e) = state.ledger.journal.record_synced(Record::RoundStarted {
        round,
        base_version: ctx.base.version,
        base_digest: ctx.base.digest.hex(),
        cohort: names.clone(),
        excluded: ctx.excluded.clone(),
    }) {
        let why = format!(
            "cannot record round {round} in the audit journal, so it is not dispatched: {e}"
        );
        return finish(state, myself, Some(why));
    }
    state.ledger.events.emit(Event::RoundStarted {
        round,
        base_version: ctx.base.version,
        cohort: names,
        excluded: ctx.excluded.clone(),
        privacy: ctx.privacy_spend.clone(),
    });
    state.hold.step_taken();
    let task = tokio::spawn(run_round(ctx));
    state.phase = Phase::Round {
        round,
        task: Some(task.abort_handle()),
    };
    let me = myself.clone();
    tokio::spawn(async move {
        // Whatever happens to the round task (even a panic), the coordinator hears back.
        let outcome = task.await.unwrap_or_else(|e| RoundOutcome::Abandoned {
            round,
            reason: task_failure(e),
            attendance: Attendance::default(),
        });
        let _ = me.cast(CoordinatorMessage::RoundDone(Box::new(outcome)));
    });
}

/// Under silo-level DP: the cohort's spend, charged (on disk) before dispatch, and the share
/// of noise each silo adds in distributed mode. `Err`: the spend could not be recorded (the
/// round is not dispatched).
fn charge_privacy(
    state: &mut CoordinatorState,
    policy: &Policy,
    cohort: &mut Vec<SiloHandle>,
    excluded: &mut Vec<(String, String)>,
) -> Result<(Option<RoundSpend>, Option<UpdateNoise>), BookError> {
    let Some(dp) = &policy.privacy else {
        return Ok((None, None));
    };
    let round = state.run.next_round;
    let names: Vec<String> = cohort.iter().map(|h| h.name.clone()).collect();
    let plan = state
        .run
        .privacy
        .plan(dp, &names, policy.participation.quorum);
    // Selection already left out silos over budget; this only re-checks.
    cohort.retain(|h| plan.admitted.contains(&h.name));
    excluded.extend(plan.refused);
    let spend = state
        .run
        .privacy
        .charge(dp, round, plan.noise_multiplier, &plan.admitted)?;
    let _ = state.ledger.journal.record(Record::PrivacyCharged {
        round,
        silos: plan.admitted.clone(),
        noise_multiplier: spend.noise_multiplier,
        epsilon: spend.epsilon,
        delta: spend.delta,
    });
    Ok((Some(spend), silo_share(dp, cohort.len())))
}

/// Everything round `round` needs, from the current version and the settings.
fn context(
    state: &CoordinatorState,
    round: u64,
    policy: Policy,
    cohort: Vec<SiloHandle>,
    excluded: Vec<(String, String)>,
    noise: Option<UpdateNoise>,
) -> RoundContext {
    let (s, v) = (&state.settings, &state.versions);
    // LoRA: the round moves the adapters; the frozen base goes to a silo once.
    let (base, lora) = match (&s.lora, v.lora.is_some()) {
        (Some(plan), true) => {
            let frozen = ModelRef {
                version: 0,
                digest: v.initial_digest,
            };
            let adapters = BaseModel {
                version: v.model.version,
                digest: Digest::of_f32(&v.adapters),
                params: Arc::new(v.adapters.clone()),
            };
            let train = LoraTrain {
                plan: plan.clone(),
                frozen,
            };
            (adapters, Some((train, v.initial.clone())))
        }
        _ => (v.model.clone(), None),
    };
    let seed = s.seed.wrapping_mul(1_000_003).wrapping_add(round);
    let t = state.run.training(s);
    let holdout = policy
        .validation
        .as_ref()
        .and_then(|v| v.central_holdout.as_ref())
        .and_then(|h| state.members.silos.get(h))
        .filter(|e| e.healthy && e.blocked.is_none())
        .map(|e| e.handle.clone());
    RoundContext {
        run: state.run.id(),
        round,
        reported_rows: state.reported_rows(),
        base,
        lora: lora.clone(),
        spec: s.spec.clone(),
        plan: TrainPlan {
            epochs: t.epochs,
            batch_size: t.batch_size,
            learning_rate: t.learning_rate,
            seed,
            noise,
            prox_mu: t.prox_mu,
            compression: s.compression,
            lora: lora.map(|(l, _)| l),
        },
        personalize: (s.personalize_epochs > 0).then_some(Personalize {
            epochs: s.personalize_epochs,
            batch_size: t.batch_size,
            learning_rate: t.learning_rate,
            seed,
        }),
        scaling: state.scaling_or_empty(),
        cohort,
        excluded,
        policy,
        policy_actor: state.links.policy.clone(),
        aggregator: state.links.aggregator.clone(),
        validator: state.links.validator.clone(),
        directory: state.links.directory.clone(),
        bulk: state.links.bulk.clone(),
        spill_dir: state.ledger.store.dir().join("spill"),
        spill_above: s.spill_above,
        chunk: s.chunk,
        events: state.ledger.events.clone(),
        unhealthy: state.members.unhealthy.subscribe(),
        aggregation: s.aggregation.clone(),
        optimizer: v.optimizer.clone(),
        progress: state.run.progress(round),
        routes: BTreeMap::new(),
        privacy_spend: None,
        journal: state.ledger.journal.clone(),
        version: v.next_version,
        baseline: v.baseline.clone(),
        holdout,
    }
}
