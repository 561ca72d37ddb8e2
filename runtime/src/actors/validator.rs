//! The Validator actor: the gate a candidate must pass. It sends the candidate to the silos,
//! has each score it on its own held-out split (federated evaluation), and decides.
//!
//! Rule in force: at least one silo evaluated the candidate and every reported metric is
//! finite. (Comparison rules against the current version come with the governance work.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::bulk::route::{ensure_model, put_model, Route};
use crate::bulk::BulkLinks;
use crate::model::Architecture;
use crate::protocol::transfer::unexpected;
use crate::protocol::{
    call, EvalMetrics, LoraTrain, ModelRef, Personalize, Request, Response, Scaling,
};
use crate::protocol::{until_silent, SiloFailure, SiloHandle};

/// What the validator concluded about a candidate.
#[derive(Debug, Clone)]
pub struct ValidationReport {
    /// Metrics per silo that evaluated.
    pub per_silo: BTreeMap<String, EvalMetrics>,
    /// Silos that could not evaluate, with the reason.
    pub failures: Vec<(String, String)>,
    /// Example-weighted held-out loss.
    pub weighted_loss: f64,
    /// Whether the candidate may be committed.
    pub accept: bool,
    /// Why (not).
    pub reason: String,
}

/// A candidate to validate.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Round number.
    pub round: u64,
    /// Version it would become, and digest.
    pub model: ModelRef,
    /// Parameters.
    pub params: Arc<Vec<f32>>,
    /// Architecture.
    pub spec: Architecture,
    /// Agreed scaling.
    pub scaling: Scaling,
    /// Personalisation the silos apply when they score it.
    pub personalize: Option<Personalize>,
    /// LoRA: `params` are adapters, scored merged into this frozen base (sent if missing).
    pub lora: Option<(LoraTrain, Arc<Vec<f32>>)>,
    /// The policy's `[business]`: the silos also report business metrics.
    pub business: Option<crate::model::business::BusinessSpec>,
}

/// Messages of the Validator actor.
#[derive(Debug)]
pub enum ValidatorMessage {
    /// Evaluate `candidate` at `silos` and decide.
    Validate {
        /// The candidate.
        candidate: Candidate,
        /// Where to evaluate it.
        silos: Vec<SiloHandle>,
        /// Their bulk links.
        bulk: Arc<BulkLinks>,
        /// Transfer chunk size, values.
        chunk: usize,
        /// Time limit for the whole evaluation.
        timeout: Duration,
        /// Silos whose heartbeats stopped; their evaluation is given up at once.
        silent: watch::Receiver<BTreeSet<String>>,
        /// The report.
        reply: RpcReplyPort<ValidationReport>,
    },
}

impl ractor::Message for ValidatorMessage {}

/// The Validator actor.
#[derive(Debug)]
pub struct ValidatorActor;

async fn evaluate_at(
    silo: SiloHandle,
    bulk: Arc<BulkLinks>,
    c: Candidate,
    chunk: usize,
    timeout: Duration,
    silent: watch::Receiver<BTreeSet<String>>,
) -> (String, Result<EvalMetrics, SiloFailure>) {
    let work = async {
        let route = Route::to(&silo, &bulk);
        if let Some((l, frozen)) = &c.lora {
            ensure_model(&route, l.frozen, frozen, chunk, timeout).await?;
        }
        put_model(&route, c.model, &c.params, chunk, timeout).await?;
        let req = Request::Evaluate {
            model: c.model,
            spec: c.spec.clone(),
            scaling: c.scaling.clone(),
            personalize: c.personalize,
            lora: c.lora.as_ref().map(|(l, _)| l.clone()),
            business: c.business.clone(),
        };
        match call(&silo.actor, &req, timeout, &silo.name).await? {
            Response::Evaluated(m) => Ok(m),
            other => Err(unexpected(&silo.name, "Evaluated", &other).into()),
        }
    };
    let r = tokio::select! {
        r = tokio::time::timeout(timeout, work) => r.unwrap_or(Err(SiloFailure::Timeout { what: "evaluation", after: timeout })),
        _ = until_silent(silent, &silo.name) => Err(SiloFailure::Silent("")),
    };
    (silo.name, r)
}

/// Decides on a set of per-silo metrics (the gate rule, pure).
pub fn decide(per_silo: &BTreeMap<String, EvalMetrics>) -> (bool, String, f64) {
    if per_silo.is_empty() {
        return (false, "no silo evaluated the candidate".into(), f64::NAN);
    }
    let n: f64 = per_silo.values().map(|m| m.examples as f64).sum();
    let loss = per_silo
        .values()
        .map(|m| m.loss * m.examples as f64)
        .sum::<f64>()
        / n.max(1.0);
    for (silo, m) in per_silo {
        if !m.is_valid() {
            return (
                false,
                format!("metrics out of range, or of two kinds, at {silo}: {m:?}"),
                loss,
            );
        }
    }
    (
        true,
        format!(
            "evaluated at {} silo(s) on {n} held-out examples",
            per_silo.len()
        ),
        loss,
    )
}

impl Actor for ValidatorActor {
    type Msg = ValidatorMessage;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _: ActorRef<Self::Msg>, _: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        let ValidatorMessage::Validate {
            candidate,
            silos,
            bulk,
            chunk,
            timeout,
            silent,
            reply,
        } = msg;
        let mut jobs = JoinSet::new();
        for s in silos {
            jobs.spawn(evaluate_at(
                s,
                bulk.clone(),
                candidate.clone(),
                chunk,
                timeout,
                silent.clone(),
            ));
        }
        let mut per_silo = BTreeMap::new();
        let mut failures = Vec::new();
        while let Some(j) = jobs.join_next().await {
            match j {
                Ok((silo, Ok(m))) => {
                    per_silo.insert(silo, m);
                }
                Ok((silo, Err(e))) => failures.push((silo, e.to_string())),
                Err(e) => failures.push(("?".into(), format!("evaluation task failed: {e}"))),
            }
        }
        let (accept, reason, weighted_loss) = decide(&per_silo);
        // Let go of the candidate before answering: the round then takes its values back
        // without a copy.
        let round = candidate.round;
        drop(candidate);
        tracing::info!(round, accept, reason, ?failures, "validator: verdict");
        let _ = reply.send(ValidationReport {
            per_silo,
            failures,
            weighted_loss,
            accept,
            reason,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(loss: f64) -> EvalMetrics {
        EvalMetrics {
            examples: 10,
            loss,
            accuracy: Some(0.9),
            r2: None,
            mae: None,
            auc: Some(0.8),
            personalized: None,
            business: None,
        }
    }

    #[test]
    fn gate_rejects_empty_and_non_finite() {
        assert!(!decide(&BTreeMap::new()).0);
        let mut p = BTreeMap::from([("a".to_string(), m(0.3))]);
        assert!(decide(&p).0);
        p.insert("b".into(), m(f64::NAN));
        let (ok, why, _) = decide(&p);
        assert!(!ok && why.contains("b"), "{why}");
    }
}
