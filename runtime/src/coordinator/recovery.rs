//! Starting from what the state directory holds: the coordinator resumes the version the
//! journal last made current (its checkpoint checked against the journaled SHA-256), keeps a
//! candidate still awaiting approval waiting (if its file is the one journaled), stays paused
//! if it was, records a round the previous process never finished as abandoned, never reuses
//! a round or version number, and publishes to `rounds.jsonl` and `events.jsonl` any commit a
//! crash kept from them ([`crate::republish`]). A serving coordinator rebuilds its book of runs
//! from the journal: the queue is kept and the running run resumes ([`super::jobs`]).

use std::collections::BTreeMap;

use super::jobs;
use super::ledger::{summary_of, Ledger};
use super::membership::Members;
use super::phase::{Awaiting, Hold, Phase};
use super::roster::Roster;
use super::settings::CoordinatorArgs;
use super::state::{CoordinatorState, Job, Links, Run};
use super::versions::Versions;
use crate::audit::History;
use crate::events::Event;
use crate::model::checkpoint::Checkpoint;
use crate::model::Digest;
use crate::privacy::budget::PrivacyBook;
use crate::registry::Status;
use crate::status::Pause;
use crate::Error;

/// The coordinator's state from `args` and its state directory.
pub fn recover(args: CoordinatorArgs) -> crate::Result<CoordinatorState> {
    let spec = args.settings.spec.clone();
    let privacy = PrivacyBook::open(&args.store.dir().join("privacy.jsonl"))?;
    let (roster, heartbeat_timeout) = (
        args.settings.roster.clone(),
        args.settings.heartbeat_timeout,
    );
    let history = args.history;
    let committed_sha = history
        .versions
        .iter()
        .filter(|(_, j)| j.status == Status::Committed)
        .map(|(v, j)| (*v, j.file_sha256.clone()))
        .collect();
    let spilled = crate::model::spill::sweep(&args.store.dir().join("spill"));
    if spilled > 0 {
        tracing::warn!("removed {spilled} spilled update(s) a killed coordinator left behind");
    }
    let mut state = CoordinatorState {
        versions: Versions::initial(&args.settings, &spec)?,
        settings: args.settings,
        links: Links {
            directory: args.directory,
            bulk: args.bulk,
            data: args.data,
            policy: args.policy,
            aggregator: args.aggregator,
            validator: args.validator,
            done: args.done,
            status: args.status,
        },
        ledger: Ledger {
            store: args.store,
            journal: args.journal,
            registry: args.registry,
            events: args.events,
            ca: args.ca,
            committed_sha,
            applied: history.applied.clone(),
        },
        members: Members::default(),
        run: Run::new(privacy),
        phase: Phase::Starting {
            agreeing: false,
            retry_at: None,
        },
        hold: Hold::Running,
        runs: Default::default(),
        deployments: super::deployments::Deployments::new(
            history.deployments.clone(),
            args.credentials,
        ),
        roster: Roster::new(
            roster,
            std::time::Instant::now(),
            // Time for members to link after a start, as after a heartbeat gap.
            2 * heartbeat_timeout,
        ),
    };
    resume_current(&mut state)?;
    republish_committed(&state, &history)?;
    number_versions(&mut state, &history)?;
    if let Some((by, reason)) = history.paused.clone() {
        // Say so: nothing else would show why no round starts.
        state.ledger.events.emit(Event::FederationPaused {
            by: by.clone(),
            reason: format!(
                "{reason} (paused before the coordinator restarted; resume through the admin API)"
            ),
        });
        state.hold = Hold::Paused {
            pause: Pause { by, reason },
            step: false,
        };
    }
    if let Some(v) = history.awaiting {
        state.phase = Phase::AwaitingApproval(Box::new(awaiting(&state, &history, v)?));
    }
    number_rounds(&mut state, &history)?;
    if state.settings.serve {
        state.runs = history.runs.clone();
        if let Some(first) = history.first_ms {
            state.run.schedule_from_ms = first;
        }
        let committed: Vec<u64> = history
            .versions
            .values()
            .filter(|j| j.status == Status::Committed)
            .map(|j| j.round)
            .collect();
        let never_trained = history.last_round.is_none() && committed.iter().all(|r| *r == 0);
        jobs::recover(&mut state, &committed, never_trained)?;
    } else {
        let rounds = state.settings.rounds;
        state.run.begin(Job {
            id: None,
            until: rounds,
            rounds,
            settings: Default::default(),
            policy: Default::default(),
            cancelled: false,
        });
    }
    state.run.versions = run_lineage(&state)?;
    let len = state.versions.model.params.len();
    state.versions.optimizer = match &state.settings.aggregation.server_optimizer {
        Some(o) => Some(
            state
                .versions
                .optimizer
                .take()
                .filter(|st| st.m.len() == len)
                .unwrap_or_else(|| o.initial_state(len)),
        ),
        None => None,
    };
    Ok(state)
}

/// The versions of the run in progress that the current one descends from (itself included),
/// oldest first, with their held-out figures: early stopping and keep-best judge them as if
/// the coordinator had not stopped (a version an operator rolled back from is not in the line).
fn run_lineage(
    state: &CoordinatorState,
) -> crate::Result<Vec<(u64, BTreeMap<String, crate::model::eval::EvalMetrics>)>> {
    if state.run.job.is_none() {
        return Ok(Vec::new());
    }
    let run = state.run.id();
    let metas: BTreeMap<u64, crate::registry::VersionMeta> = state
        .ledger
        .registry
        .list()?
        .into_iter()
        .map(|m| (m.version, m))
        .collect();
    let mut line = Vec::new();
    let mut at = Some(state.versions.model.version);
    while let Some(m) = at.and_then(|v| metas.get(&v)) {
        if m.version == 0 || m.run != run || m.status != Status::Committed {
            break;
        }
        line.push((m.version, m.validation.clone()));
        at = (m.parent < m.version).then_some(m.parent);
    }
    line.reverse();
    Ok(line)
}

/// Makes the version `CURRENT` names current again, loaded only as the journal committed it.
fn resume_current(state: &mut CoordinatorState) -> crate::Result<()> {
    let Some(version) = state.ledger.store.current_version()? else {
        return Ok(());
    };
    let ckpt = state.ledger.load_committed(version)?;
    if ckpt.spec != state.settings.spec {
        return Err(Error::Checkpoint {
            origin: state.ledger.store.dir().display().to_string(),
            message: format!(
                "the state directory holds a model `{}` but the configuration asks for `{}`; use another state_dir",
                ckpt.spec.describe(),
                state.settings.spec.describe()
            ),
        });
    }
    let round: u64 = ckpt
        .metadata
        .get("fedsilo.round")
        .and_then(|r| r.parse().ok())
        .unwrap_or(0);
    if state.versions.lora.is_some() && state.ledger.committed_sha.contains_key(&0) {
        // Under LoRA the frozen base is the federation's version 0 where one was committed,
        // whatever the configuration now says. Otherwise it is the configured base, and the
        // adapters must reproduce the checkpoint from it.
        let v0 = state.ledger.load_committed(0)?;
        state.versions.initial_digest = Digest::of_f32(&v0.params);
        state.versions.initial = std::sync::Arc::new(v0.params);
    }
    let figures = state
        .ledger
        .registry
        .get(version)?
        .map(|m| m.validation)
        .unwrap_or_default();
    let optimizer = state.ledger.store.optimizer(version)?;
    state.versions.scaling = Some(ckpt.scaling.clone());
    let seed = state.settings.seed;
    state
        .versions
        .make_checkpoint_current(version, ckpt, optimizer, figures, seed)?;
    state.phase = Phase::Ready;
    state.run.next_round = round + 1;
    state.ledger.events.emit(Event::Resumed {
        version,
        next_round: state.run.next_round,
    });
    Ok(())
}

/// The next version number: above every version the registry or the journal ever named.
fn number_versions(state: &mut CoordinatorState, history: &History) -> crate::Result<()> {
    let versions = state.ledger.registry.list()?;
    state.versions.next_version = versions
        .iter()
        .map(|m| m.version + 1)
        .chain(history.max_version.map(|v| v + 1))
        .max()
        .unwrap_or(1)
        .max(state.versions.model.version + 1);
    Ok(())
}

/// The next round number: above every round the journal started or the privacy book charged;
/// a round the previous coordinator started and never finished is recorded as abandoned.
fn number_rounds(state: &mut CoordinatorState, history: &History) -> crate::Result<()> {
    // A round charged in the privacy book but never journaled (a crash between the two)
    // keeps its number too.
    if let Some(r) = state.run.privacy.last_round() {
        state.run.next_round = state.run.next_round.max(r + 1);
    }
    if let Some(round) = history.open_round {
        state.ledger.abandon(
            round,
            "the coordinator stopped during the round; abandoned when it restarted",
        )?;
    }
    if let Some(last) = history.last_round {
        state.run.next_round = state.run.next_round.max(last + 1);
    }
    Ok(())
}

/// The candidate awaiting approval, if its file is the one the journal recorded.
fn awaiting(state: &CoordinatorState, history: &History, v: u64) -> crate::Result<Awaiting> {
    let j = history.versions.get(&v);
    let path = state.ledger.store.candidate_path(v);
    let bytes = std::fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
    let origin = path.display().to_string();
    if j.map(|j| j.file_sha256.as_str()) != Some(Digest::of_bytes(&bytes).hex().as_str()) {
        return Err(Error::Checkpoint {
            origin,
            message: "the candidate awaiting approval differs from the one the audit journal recorded; it cannot be approved (reject it, or restore the file)".into(),
        });
    }
    let ckpt = Checkpoint::from_bytes(&bytes, &origin)?;
    let meta = state
        .ledger
        .registry
        .get(v)?
        .ok_or_else(|| Error::Checkpoint {
            origin,
            message: format!("version {v} awaits approval but is not in the registry"),
        })?;
    Ok(Awaiting {
        meta,
        ckpt,
        optimizer: state.ledger.store.candidate_optimizer(v)?,
        summary: None,
    })
}

/// After a crash: every round the journal committed that `rounds.jsonl` or `events.jsonl` lacks
/// is re-derived from the registry and published to the log that lacks it, once, in version
/// order ([`crate::republish`]).
fn republish_committed(state: &CoordinatorState, history: &History) -> crate::Result<()> {
    let committed: Vec<u64> = history
        .versions
        .iter()
        .filter(|(_, j)| j.status == Status::Committed && j.round >= 1)
        .map(|(v, _)| *v)
        .collect();
    let missing = crate::republish::missing_from_logs(state.ledger.store.dir(), &committed)?;
    for v in missing.any() {
        let Some(meta) = state.ledger.registry.get(v)? else {
            continue;
        };
        let summary = summary_of(&meta);
        tracing::warn!(
            version = v,
            "round {} was committed before the coordinator stopped but not logged; publishing it now",
            meta.round
        );
        if missing.rounds_log.contains(&v) {
            state.ledger.store.append_round(&summary)?;
        }
        if missing.events_log.contains(&v) {
            state
                .ledger
                .events
                .emit(Event::RoundCommitted(Box::new(summary)));
        }
    }
    Ok(())
}
