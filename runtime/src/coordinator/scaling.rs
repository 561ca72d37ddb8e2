//! Agreeing on feature scaling, once per federation, before the first round: the cohort sends
//! counts, sums and sums of squares of its numeric features; their sums give the pooled mean
//! and standard deviation ([`crate::model::scaling::combine_stats`]), summed in silo order so
//! that the agreed scaling (and every model after it) does not depend on who answered first.
//! Version 0 is committed with it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ractor::ActorRef;

use super::ledger::Disposition;
use super::membership::Blocked;
use super::messages::{CoordinatorMessage, ScalingOutcome};
use super::outcome::checkpoint;
use super::phase::Phase;
use super::state::CoordinatorState;
use crate::audit::entry::now_ms;
use crate::events::Event;
use crate::model::scaling::combine_stats;
use crate::model::Digest;
use crate::protocol::SiloHandle;
use crate::protocol::{call, Request, Response};
use crate::registry::{Status, VersionMeta};

/// Asks `cohort` for its feature statistics (off the mailbox); the answer comes back as
/// [`CoordinatorMessage::ScalingDone`].
pub fn start(
    state: &mut CoordinatorState,
    myself: &ActorRef<CoordinatorMessage>,
    cohort: Vec<SiloHandle>,
    quorum: usize,
) {
    let (schema_digest, numeric, timeout) = (
        state.links.data.digest,
        state.links.data.numeric,
        state.settings.heartbeat_timeout * 6,
    );
    state.phase = Phase::Starting {
        agreeing: true,
        retry_at: None,
    };
    let task = tokio::spawn(agree(cohort, schema_digest, numeric, quorum, timeout));
    let me = myself.clone();
    tokio::spawn(async move {
        // Whatever happens to the task (even a panic), the coordinator hears back.
        let outcome = task.await.unwrap_or_else(|e| {
            tracing::error!("feature-scaling task failed: {e}");
            ScalingOutcome {
                scaling: None,
                silos: vec![],
                rows: 0,
                blocked: vec![],
            }
        });
        let _ = me.cast(CoordinatorMessage::ScalingDone(outcome));
    });
}

/// Whether a new agreement attempt must wait (back-off after a failed one).
pub fn backing_off(phase: &Phase) -> bool {
    matches!(phase, Phase::Starting { retry_at: Some(t), .. } if Instant::now() < *t)
}

async fn agree(
    cohort: Vec<SiloHandle>,
    schema_digest: Digest,
    numeric: usize,
    quorum: usize,
    timeout: Duration,
) -> ScalingOutcome {
    let mut jobs = tokio::task::JoinSet::new();
    for s in cohort {
        jobs.spawn(async move {
            let r = call(&s.actor, &Request::FeatureStats, timeout, &s.name).await;
            (s.name, r)
        });
    }
    let (mut count, mut sum, mut sum_sq) = (
        vec![0u64; numeric],
        vec![0f64; numeric],
        vec![0f64; numeric],
    );
    let (mut silos, mut rows, mut blocked) = (Vec::new(), 0u64, Vec::new());
    // Summed in silo order, not arrival order: the agreed scaling, and so every model after
    // it, is the same whoever answered first.
    let mut answers = BTreeMap::new();
    while let Some(j) = jobs.join_next().await {
        if let Ok((name, r)) = j {
            answers.insert(name, r);
        }
    }
    for (name, r) in answers {
        match r {
            Ok(Response::FeatureStats(st)) => {
                if st.schema_digest != schema_digest {
                    let why = Blocked::Schema {
                        theirs: st.schema_digest,
                        ours: schema_digest,
                    };
                    blocked.push((name, why.to_string()));
                    continue;
                }
                if let Some(why) = st.unusable {
                    blocked.push((name, Blocked::Unusable(why).to_string()));
                    continue;
                }
                if st.count.len() != numeric
                    || st.sum.len() != numeric
                    || st.sum_sq.len() != numeric
                {
                    blocked.push((name, format!("sent statistics for {} features, the schema has {numeric} numeric features", st.count.len())));
                    continue;
                }
                if !(st.sum.iter().chain(&st.sum_sq).all(|v| v.is_finite())) {
                    blocked.push((name, "sent non-finite feature statistics".into()));
                    continue;
                }
                for i in 0..numeric {
                    count[i] = count[i].saturating_add(st.count[i]);
                    sum[i] += st.sum[i];
                    sum_sq[i] += st.sum_sq[i];
                }
                rows = rows.saturating_add(st.rows);
                silos.push(name);
            }
            Ok(other) => tracing::warn!(
                silo = name,
                "feature statistics: unexpected {}",
                other.kind()
            ),
            Err(e) => tracing::warn!(silo = name, "feature statistics failed: {e}"),
        }
    }
    silos.sort();
    let scaling = (silos.len() >= quorum && !silos.is_empty())
        .then(|| combine_stats(&count, &sum, &sum_sq))
        .filter(|s| {
            let ok = s.mean.iter().chain(&s.std).all(|v| v.is_finite());
            if !ok {
                tracing::warn!(
                    "pooled feature statistics are not finite (overflowing sums?); not used"
                );
            }
            ok
        });
    ScalingOutcome {
        scaling,
        silos,
        rows,
        blocked,
    }
}

/// The agreement's answer: blocked silos are reported; with a scaling, version 0 is committed
/// with it and the federation is ready; without, a new attempt waits a few heartbeats.
pub fn on_done(state: &mut CoordinatorState, outcome: ScalingOutcome) {
    for (silo, reason) in outcome.blocked {
        if let Some(e) = state.members.silos.get_mut(&silo) {
            e.blocked = Some(reason.clone());
        }
        state
            .ledger
            .events
            .emit(Event::SiloBlocked { silo, reason });
    }
    let retry = || Phase::Starting {
        agreeing: false,
        retry_at: Some(
            Instant::now() + (state.settings.heartbeat_interval * 4).max(Duration::from_secs(1)),
        ),
    };
    let Some(scaling) = outcome.scaling else {
        tracing::warn!(contributors = ?outcome.silos, "too few silos sent feature statistics; will retry");
        state.phase = retry();
        return;
    };
    let v = &state.versions;
    let ckpt = checkpoint(
        &state.settings.spec,
        &v.model.params,
        &scaling,
        0,
        v.model.version,
    );
    let meta = VersionMeta {
        version: v.model.version,
        parent: v.model.version,
        round: 0,
        status: Status::Committed,
        digest: v.model.digest.hex(),
        file_sha256: String::new(),
        participants: outcome.silos.iter().map(|s| (s.clone(), 0)).collect(),
        aggregation: "initial model".into(),
        policy_digest: String::new(),
        privacy: None,
        validation: BTreeMap::new(),
        reason: match &state.settings.initial {
            Some(p) => format!("initial model: pretrained, from {}", p.origin),
            None => format!("initial model (seed {})", state.settings.seed),
        },
        created_ms: now_ms(),
        decided_by: "coordinator".into(),
        run: None,
    };
    let optimizer = v.optimizer.clone();
    if let Err(e) = state
        .ledger
        .keep(&ckpt, optimizer.as_ref(), meta, Disposition::Committed)
    {
        tracing::error!("cannot commit the initial checkpoint: {e}");
        // Scaling stays unagreed: the next tick tries again.
        state.phase = Phase::Starting {
            agreeing: false,
            retry_at: None,
        };
        return;
    }
    state.versions.scaling = Some(scaling);
    state.phase = Phase::Ready;
    state.ledger.events.emit(Event::ScalingAgreed {
        silos: outcome.silos,
        rows: outcome.rows,
    });
}
