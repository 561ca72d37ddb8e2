//! The Aggregator actor: admits or refuses each arriving update by the policy's admission rules,
//! and combines the admitted ones with the federation's kernel.
//!
//! Admission is decided here, where the update is: the norm and finiteness are computed from
//! the values themselves (never taken from the silo's report), the anomaly score against this
//! round's admitted updates and their running sum. The weighted mean folds each update in as it
//! arrives (O(model) memory whatever the number of silos); robust kernels, and a mean whose
//! weights are capped by `participation.max_weight_share`, need every update, so those are kept
//! until the round ends. With `clip_norm`, each admitted update is clipped before combining.
//! Under the policy's silo-level DP every update weighs the same, and in central mode each is
//! clipped to the policy's `privacy.clip_norm` (the round adds the noise to the combination).

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use fedsilo_policies::admission::{admit, Expected, RoundSoFar, UpdateFacts};
use fedsilo_policies::participation::capped_shares;
use fedsilo_policies::privacy::NoiseMode;
use fedsilo_policies::Policy;

use crate::kernels::clip::{clip_l2, l2_norm};
use crate::kernels::{Aggregation, Kernel, WeightedMean};

/// What a round's combination produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The combined update.
    pub values: Vec<f32>,
    /// Silos whose updates a selecting kernel (Krum family, Bulyan) kept, in fold order.
    pub selected: Option<Vec<String>>,
    /// Silos whose updates were clipped, with their original norm.
    pub clipped: Vec<(String, f64)>,
}

/// Why an update was not taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The reason.
    pub reason: String,
    /// Whether an admission rule of the policy refused it (counts towards quarantine), as
    /// opposed to a round mix-up on our side.
    pub by_policy: bool,
}

/// Messages of the Aggregator actor.
#[derive(Debug)]
pub enum AggregatorMessage {
    /// Start a round: fresh state for updates of `len` values combined as `aggregation` says
    /// (any previous round's state is discarded).
    Begin {
        /// Round number.
        round: u64,
        /// Values per update.
        len: usize,
        /// Kernel and clipping.
        aggregation: Aggregation,
        /// The policy in force for this round (admission rules, weight cap).
        policy: Box<Policy>,
        /// What the round dispatched (round, base version and digest, model size).
        expected: Expected,
    },
    /// Add one admitted update with its weight (example count). Replies with the refusal
    /// reason if it cannot be taken (wrong round, length, non-finite values).
    Fold {
        /// Round number; must be the current one.
        round: u64,
        /// Silo, for the record.
        silo: String,
        /// The update.
        update: Vec<f32>,
        /// Its weight (example count).
        weight: f64,
        /// The round and base the silo says it trained for and from.
        claimed: (u64, u64, String),
        /// `Ok` or the refusal.
        reply: RpcReplyPort<Result<(), Refusal>>,
    },
    /// End the round: combine what was added.
    Finish {
        /// Round number.
        round: u64,
        /// The aggregate, or why there is none (e.g. too few updates for Bulyan's f).
        reply: RpcReplyPort<Result<Aggregate, String>>,
    },
    /// Discard the round's state.
    Abort {
        /// Round number.
        round: u64,
    },
}

impl ractor::Message for AggregatorMessage {}

/// The Aggregator actor.
#[derive(Debug)]
pub struct AggregatorActor;

#[derive(Debug)]
enum Held {
    Streaming(WeightedMean),
    Buffered(Vec<Vec<f32>>, Vec<f64>),
}

#[derive(Debug)]
struct OpenRound {
    round: u64,
    aggregation: Aggregation,
    policy: Box<Policy>,
    expected: Expected,
    held: Held,
    silos: Vec<String>,
    clipped: Vec<(String, f64)>,
    norms: Vec<f64>,
    running_sum: Option<Vec<f64>>,
}

/// Its state: the open round, if any.
#[derive(Debug, Default)]
pub struct AggregatorState {
    open: Option<OpenRound>,
}

impl OpenRound {
    fn add(
        &mut self,
        silo: String,
        mut update: Vec<f32>,
        weight: f64,
        claimed: (u64, u64, String),
    ) -> Result<(), Refusal> {
        let first_non_finite = update.iter().position(|v| !v.is_finite());
        let norm = if first_non_finite.is_some() {
            f64::NAN
        } else {
            l2_norm(&update)
        };
        let cosine_to_aggregate = match (&self.running_sum, first_non_finite) {
            (Some(sum), None) if !self.norms.is_empty() && sum.len() == update.len() => {
                let dot: f64 = sum.iter().zip(&update).map(|(a, b)| a * *b as f64).sum();
                let sum_norm = sum.iter().map(|a| a * a).sum::<f64>().sqrt();
                // A zero update (or a sum that cancelled out) has no direction: score it as
                // orthogonal rather than skip it.
                Some(if sum_norm > 0.0 && norm > 0.0 {
                    dot / (sum_norm * norm)
                } else {
                    0.0
                })
            }
            _ => None,
        };
        let facts = UpdateFacts {
            round: claimed.0,
            base_version: claimed.1,
            base_digest: claimed.2,
            len: update.len(),
            examples: weight as u64,
            first_non_finite,
            norm,
        };
        let so_far = RoundSoFar {
            norms: self.norms.clone(),
            cosine_to_aggregate,
        };
        let verdict = admit(&self.policy, &facts, &self.expected, &so_far);
        if !verdict.allow {
            return Err(Refusal {
                reason: verdict.reasons.join("; "),
                by_policy: true,
            });
        }
        if let Some(sum) = &mut self.running_sum {
            sum.iter_mut()
                .zip(&update)
                .for_each(|(s, u)| *s += *u as f64);
        }
        self.norms.push(norm);
        // Silo-level DP: every silo counts once, and with central noise the bound is
        // enforced here.
        let dp = self.policy.privacy.as_ref();
        let weight = self.policy.update_weight(weight);
        let central_clip = dp
            .filter(|d| d.mode == NoiseMode::Central)
            .map(|d| d.clip_norm);
        let clip = match (self.aggregation.clip_norm, central_clip) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(c) = clip {
            if clip_l2(&mut update, c) > c {
                self.clipped.push((silo.clone(), norm));
            }
        }
        match &mut self.held {
            Held::Streaming(acc) => acc.fold(&update, weight).map_err(|e| Refusal {
                reason: e.to_string(),
                by_policy: false,
            })?,
            Held::Buffered(ups, ws) => {
                ups.push(update);
                ws.push(weight);
            }
        }
        self.silos.push(silo);
        Ok(())
    }

    fn finish(self) -> Result<Aggregate, String> {
        let (values, selected) = match self.held {
            Held::Streaming(acc) => (acc.finish().ok_or("no update was added")?, None),
            Held::Buffered(ups, ws) => {
                let views: Vec<&[f32]> = ups.iter().map(|u| u.as_slice()).collect();
                let cap = self.policy.participation.max_weight_share;
                let ws = if cap < 1.0 {
                    capped_shares(&ws, cap)
                } else {
                    ws
                };
                let c = self
                    .aggregation
                    .kernel
                    .combine(&views, &ws)
                    .map_err(|e| e.to_string())?;
                let names = c
                    .selected
                    .map(|sel| sel.into_iter().map(|i| self.silos[i].clone()).collect());
                (c.values, names)
            }
        };
        Ok(Aggregate {
            values,
            selected,
            clipped: self.clipped,
        })
    }
}

impl Actor for AggregatorActor {
    type Msg = AggregatorMessage;
    type State = AggregatorState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        _: (),
    ) -> Result<AggregatorState, ActorProcessingErr> {
        Ok(AggregatorState::default())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut AggregatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            AggregatorMessage::Begin {
                round,
                len,
                aggregation,
                policy,
                expected,
            } => {
                let capped = policy.participation.max_weight_share < 1.0;
                let held = match aggregation.kernel {
                    Kernel::Mean if !capped => Held::Streaming(WeightedMean::new(len)),
                    _ => Held::Buffered(Vec::new(), Vec::new()),
                };
                let cosine = matches!(
                    policy.admission.anomaly,
                    Some(fedsilo_policies::Anomaly::Cosine { .. })
                );
                state.open = Some(OpenRound {
                    round,
                    aggregation,
                    policy,
                    expected,
                    held,
                    silos: Vec::new(),
                    clipped: Vec::new(),
                    norms: Vec::new(),
                    running_sum: cosine.then(|| vec![0.0; len]),
                });
            }
            AggregatorMessage::Fold {
                round,
                silo,
                update,
                weight,
                claimed,
                reply,
            } => {
                let mixup = |reason: String| {
                    Err(Refusal {
                        reason,
                        by_policy: false,
                    })
                };
                let result = match &mut state.open {
                    Some(o) if o.round == round => o.add(silo.clone(), update, weight, claimed),
                    Some(o) => mixup(format!(
                        "update for round {round}, aggregator is on round {}",
                        o.round
                    )),
                    None => mixup(format!("update for round {round}, no round open")),
                };
                tracing::debug!(round, silo, weight, ok = result.is_ok(), "aggregator: add");
                let _ = reply.send(result);
            }
            AggregatorMessage::Finish { round, reply } => {
                let result = match state.open.take() {
                    Some(o) if o.round == round => {
                        let kernel = o.aggregation.kernel.describe();
                        let r = tokio::task::spawn_blocking(move || o.finish())
                            .await
                            .unwrap_or_else(|e| Err(format!("kernel failed: {e}")));
                        tracing::info!(round, kernel, ok = r.is_ok(), "aggregator: combined");
                        r
                    }
                    Some(o) => {
                        let r = o.round;
                        state.open = Some(o);
                        Err(format!(
                            "finish for round {round}, aggregator is on round {r}"
                        ))
                    }
                    None => Err(format!("finish for round {round}, no round open")),
                };
                let _ = reply.send(result);
            }
            AggregatorMessage::Abort { round } => {
                if state.open.as_ref().is_some_and(|o| o.round == round) {
                    state.open = None;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(policy: Policy, aggregation: Aggregation) -> ActorRef<AggregatorMessage> {
        let (a, _) = Actor::spawn(None, AggregatorActor, ()).await.unwrap();
        let expected = Expected {
            round: 1,
            base_version: 0,
            base_digest: "d".into(),
            len: 1,
        };
        a.cast(AggregatorMessage::Begin {
            round: 1,
            len: 1,
            aggregation,
            policy: Box::new(policy),
            expected,
        })
        .unwrap();
        a
    }

    async fn fold(
        a: &ActorRef<AggregatorMessage>,
        silo: &str,
        v: f32,
        w: f64,
        claimed_round: u64,
    ) -> Result<(), Refusal> {
        ractor::call!(a, |reply| AggregatorMessage::Fold {
            round: 1,
            silo: silo.into(),
            update: vec![v],
            weight: w,
            claimed: (claimed_round, 0, "d".into()),
            reply
        })
        .unwrap()
    }

    #[tokio::test]
    async fn robust_kernels_hold_updates_admit_by_policy_and_clip() {
        let aggregation = Aggregation {
            kernel: Kernel::Median,
            clip_norm: Some(1.0),
            server_optimizer: None,
        };
        let a = open(Policy::default(), aggregation).await;
        for (s, v) in [("a", 0.2f32), ("b", 0.4), ("c", 50.0)] {
            assert!(fold(&a, s, v, 1.0, 1).await.is_ok());
        }
        let bad = fold(&a, "d", f32::NAN, 1.0, 1).await.unwrap_err();
        assert!(
            bad.by_policy && bad.reason.contains("not finite"),
            "{bad:?}"
        );
        let stale = fold(&a, "e", 0.1, 1.0, 0).await.unwrap_err();
        assert!(
            stale.by_policy && stale.reason.contains("stale"),
            "{stale:?}"
        );
        let g = ractor::call!(a, |reply| AggregatorMessage::Finish { round: 1, reply })
            .unwrap()
            .unwrap();
        assert_eq!(g.values, vec![0.4]);
        assert_eq!(g.clipped, vec![("c".to_string(), 50.0)]);
    }

    #[tokio::test]
    async fn the_weight_cap_limits_a_dominant_silo() {
        let policy = Policy::from_toml_str(
            "[participation]\nmin_silos = 2\nquorum = 2\nmax_weight_share = 0.5\n",
            "t",
        )
        .unwrap();
        let a = open(policy, Aggregation::default()).await;
        fold(&a, "big", 1.0, 9000.0, 1).await.unwrap();
        fold(&a, "small", 0.0, 1000.0, 1).await.unwrap();
        let g = ractor::call!(a, |reply| AggregatorMessage::Finish { round: 1, reply })
            .unwrap()
            .unwrap();
        // Uncapped the mean would be 0.9; capped at half the weight it is 0.5.
        assert!((g.values[0] - 0.5).abs() < 1e-6, "{:?}", g.values);
    }

    #[tokio::test]
    async fn min_examples_and_norm_bound_refuse() {
        let policy = Policy::from_toml_str(
            "[participation]\nmin_silos = 1\nquorum = 1\nmin_examples = 100\n[admission]\nmax_update_norm = 2.0\n",
            "t",
        )
        .unwrap();
        let a = open(policy, Aggregation::default()).await;
        assert!(fold(&a, "tiny", 0.1, 10.0, 1)
            .await
            .unwrap_err()
            .reason
            .contains("min_examples"));
        assert!(fold(&a, "huge", 5.0, 500.0, 1)
            .await
            .unwrap_err()
            .reason
            .contains("max_update_norm"));
        assert!(fold(&a, "ok", 1.0, 500.0, 1).await.is_ok());
    }
}
