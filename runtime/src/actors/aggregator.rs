//! The Aggregator actor: admits or refuses each arriving update by the policy's admission rules,
//! screens the whole cohort once collection ends, and combines what is left with the
//! federation's kernel.
//!
//! Admission is decided here, where the update is: the norm and finiteness are computed from
//! the values themselves (never taken from the silo's report). Rules on one update apply as it
//! arrives ([`admit`]); rules relative to the others — norm ratio to the median, robust
//! z-score, cosine to the coordinate-wise median — apply to the whole cohort at
//! [`AggregatorMessage::Screen`] ([`screen_cohort`]).
//!
//! **Order.** Every update is held until the round ends, and the cohort is screened and
//! combined in silo-name order: the result — refusals and the aggregate, to the last bit — is
//! the same whatever order the updates arrived in, so an auditor re-running a round with
//! `fedsilo aggregate` gets the same digest. The price is memory: a round holds every update
//! (n × model), as robust kernels always needed. With `clip_norm`, each update is clipped
//! before combining. Under the policy's silo-level DP every update weighs the same, and in
//! central mode each is clipped to the policy's `privacy.clip_norm` (the round adds the noise
//! to the combination).

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use fedsilo_policies::admission::{admit, screen_cohort, CohortMember, Expected, UpdateFacts};
use fedsilo_policies::participation::capped_shares;
use fedsilo_policies::privacy::NoiseMode;
use fedsilo_policies::Policy;

use super::update_values::{combine_by_slices, SliceError, Values};
use crate::kernels::clip::clip_l2;
use crate::kernels::order_statistics::median;
use crate::kernels::{Aggregation, KernelError};

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
        /// The update (in memory, or spilled to disk by a round of large updates).
        update: Values,
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
        reply: RpcReplyPort<Result<Aggregate, FinishError>>,
    },
    /// Collection has ended: screen the cohort by the rules relative to it, drop what they
    /// refuse, and reply with the refused silos and reasons (in silo order).
    Screen {
        /// Round number.
        round: u64,
        /// The refusals.
        reply: RpcReplyPort<Vec<(String, String)>>,
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

/// One admitted update, held until the round ends.
#[derive(Debug)]
struct Member {
    silo: String,
    update: Values,
    /// Its weight under the policy (example count, or 1 under silo-level DP).
    weight: f64,
    norm: f64,
}

#[derive(Debug)]
struct OpenRound {
    round: u64,
    aggregation: Aggregation,
    policy: Box<Policy>,
    expected: Expected,
    members: Vec<Member>,
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
        update: Values,
        weight: f64,
        claimed: (u64, u64, String),
    ) -> Result<(), Refusal> {
        let (first_non_finite, norm) = update.facts();
        let facts = UpdateFacts {
            round: claimed.0,
            base_version: claimed.1,
            base_digest: claimed.2,
            len: update.len(),
            examples: weight as u64,
            first_non_finite,
            norm,
        };
        let verdict = admit(&self.policy, &facts, &self.expected);
        if !verdict.allow {
            return Err(Refusal {
                reason: verdict.reasons.join("; "),
                by_policy: true,
            });
        }
        if self.members.iter().any(|m| m.silo == silo) {
            return Err(Refusal {
                reason: format!("a second update from {silo} this round"),
                by_policy: false,
            });
        }
        self.members.push(Member {
            weight: self.policy.update_weight(weight),
            silo,
            update,
            norm,
        });
        Ok(())
    }

    /// Puts the cohort in silo order: what follows depends on the set, not the arrival order.
    fn sort(&mut self) {
        self.members.sort_by(|a, b| a.silo.cmp(&b.silo));
    }

    /// Screens the cohort by the rules relative to it; drops and returns what they refuse.
    fn screen(&mut self) -> Vec<(String, String)> {
        self.sort();
        let cosine = matches!(
            self.policy.admission.anomaly,
            Some(fedsilo_policies::Anomaly::Cosine { .. })
        );
        // The cosine rule needs whole updates: a round under it never spills.
        let in_memory: Option<Vec<&[f32]>> = self
            .members
            .iter()
            .map(|m| match &m.update {
                Values::Memory(v) => Some(v.as_slice()),
                Values::Spilled(_) => None,
            })
            .collect();
        let reference = in_memory
            .filter(|v| cosine && v.len() >= 3)
            .map(|views| median(&views));
        let cohort: Vec<CohortMember> = self
            .members
            .iter()
            .map(|m| CohortMember {
                silo: m.silo.clone(),
                norm: m.norm,
                cosine_to_median: reference.as_ref().and_then(|r| match &m.update {
                    Values::Memory(v) => Some(cosine_similarity(v, r)),
                    Values::Spilled(_) => None,
                }),
            })
            .collect();
        let refused = screen_cohort(&self.policy, &cohort);
        self.members
            .retain(|m| !refused.iter().any(|(s, _)| *s == m.silo));
        refused
    }

    fn finish(mut self) -> Result<Aggregate, FinishError> {
        if self.members.is_empty() {
            return Err(FinishError::Empty);
        }
        self.sort();
        // Central DP: the bound is enforced here. Clipping is per update, so its order is
        // irrelevant; it is done in silo order anyway.
        let dp = self.policy.privacy.as_ref();
        let central_clip = dp
            .filter(|d| d.mode == NoiseMode::Central)
            .map(|d| d.clip_norm);
        let clip = match (self.aggregation.clip_norm, central_clip) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let mut clipped = Vec::new();
        let ws: Vec<f64> = self.members.iter().map(|m| m.weight).collect();
        let cap = self.policy.max_weight_share();
        let ws = if cap < 1.0 {
            capped_shares(&ws, cap)
        } else {
            ws
        };
        let spilled = self
            .members
            .iter()
            .any(|m| matches!(m.update, Values::Spilled(_)));
        if spilled {
            // Clipped as each slice is read, by the factor `clip_l2` would apply.
            let scale: Vec<Option<f32>> = self
                .members
                .iter()
                .map(|m| {
                    let c = clip.filter(|c| c.is_finite() && *c > 0.0 && m.norm > *c)?;
                    clipped.push((m.silo.clone(), m.norm));
                    Some((c / m.norm) as f32)
                })
                .collect();
            let refs: Vec<&Values> = self.members.iter().map(|m| &m.update).collect();
            let values = combine_by_slices(&self.aggregation.kernel, &refs, &ws, &scale)?;
            return Ok(Aggregate {
                values,
                selected: None,
                clipped,
            });
        }
        let mut views: Vec<&[f32]> = Vec::with_capacity(self.members.len());
        for m in &mut self.members {
            let Values::Memory(update) = &mut m.update else {
                continue; // none is spilled here
            };
            if let Some(c) = clip {
                if clip_l2(update, c) > c {
                    clipped.push((m.silo.clone(), m.norm));
                }
            }
        }
        for m in &self.members {
            if let Values::Memory(update) = &m.update {
                views.push(update);
            }
        }
        let c = self.aggregation.kernel.combine(&views, &ws)?;
        let selected = c.selected.map(|sel| {
            sel.into_iter()
                .map(|i| self.members[i].silo.clone())
                .collect()
        });
        Ok(Aggregate {
            values: c.values,
            selected,
            clipped,
        })
    }
}

/// Why the Aggregator has no aggregate for a round.
#[derive(Debug, thiserror::Error)]
pub enum FinishError {
    /// Nothing was added.
    #[error("no update was added")]
    Empty,
    /// The kernel refused the updates (e.g. too few for Bulyan's f).
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Spilled updates could not be combined.
    #[error(transparent)]
    Sliced(#[from] SliceError),
    /// The kernel's task panicked.
    #[error("kernel failed: {0}")]
    Panicked(String),
    /// The round asked for is not the one open.
    #[error("finish for round {round}, aggregator is on round {open}")]
    OtherRound {
        /// The round asked for.
        round: u64,
        /// The round open.
        open: u64,
    },
    /// No round is open.
    #[error("finish for round {round}, no round open")]
    NoRound {
        /// The round asked for.
        round: u64,
    },
}

/// Cosine similarity of `a` and `b` (0 when either is zero: no direction).
fn cosine_similarity(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (*x as f64, *y as f64);
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na > 0.0 && nb > 0.0 {
        dot / (na.sqrt() * nb.sqrt())
    } else {
        0.0
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
                let _ = len; // every update's length is checked against `expected.len`
                state.open = Some(OpenRound {
                    round,
                    aggregation,
                    policy,
                    expected,
                    members: Vec::new(),
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
                            .unwrap_or_else(|e| Err(FinishError::Panicked(e.to_string())));
                        tracing::info!(round, kernel, ok = r.is_ok(), "aggregator: combined");
                        r
                    }
                    Some(o) => {
                        let r = o.round;
                        state.open = Some(o);
                        Err(FinishError::OtherRound { round, open: r })
                    }
                    None => Err(FinishError::NoRound { round }),
                };
                let _ = reply.send(result);
            }
            AggregatorMessage::Screen { round, reply } => {
                let refused = match &mut state.open {
                    Some(o) if o.round == round => o.screen(),
                    _ => Vec::new(),
                };
                for (silo, reason) in &refused {
                    tracing::info!(
                        round,
                        silo,
                        "aggregator: refused by the cohort screen: {reason}"
                    );
                }
                let _ = reply.send(refused);
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
    use crate::kernels::Kernel;

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
            update: Values::Memory(vec![v]),
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
            server_optimizer_unset: false,
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

    /// A cohort spilled to disk gives the aggregate and the clipped list the same cohort in
    /// memory gives, bit for bit — with clipping and a weight cap in force.
    #[test]
    fn spilled_updates_combine_to_the_same_bits_with_clipping_and_a_weight_cap() {
        use crate::model::spill::SpillWriter;
        let dir = tempfile::tempdir().unwrap();
        let policy = Policy::from_toml_str(
            "[participation]\nmin_silos = 4\nquorum = 4\nmax_weight_share = 0.3\n",
            "t",
        )
        .unwrap();
        let len = super::super::update_values::SLICE + 1001;
        let cohort: Vec<(String, Vec<f32>, f64)> = (0..4)
            .map(|k| {
                let v = (0..len)
                    .map(|i| ((i * 7 + k * 13) % 101) as f32 / 50.0 - 1.0 + k as f32 * 0.01)
                    .collect();
                (format!("silo-{k}"), v, 100.0 * (k + 1) as f64)
            })
            .collect();
        let finish = |spill: bool| {
            let mut round = OpenRound {
                round: 1,
                aggregation: Aggregation {
                    kernel: Kernel::Mean,
                    clip_norm: Some(200.0),
                    server_optimizer: None,
                    server_optimizer_unset: false,
                },
                policy: Box::new(policy.clone()),
                expected: Expected {
                    round: 1,
                    base_version: 0,
                    base_digest: "d".into(),
                    len,
                },
                members: Vec::new(),
            };
            // Arrival order reversed: the combination is in silo order anyway.
            for (silo, v, w) in cohort.iter().rev() {
                let values = if spill {
                    let mut w = SpillWriter::create(dir.path()).unwrap();
                    for c in v.chunks(3000) {
                        w.push(c).unwrap();
                    }
                    Values::Spilled(w.finish().unwrap())
                } else {
                    Values::Memory(v.clone())
                };
                round
                    .add(silo.clone(), values, *w, (1, 0, "d".into()))
                    .unwrap();
            }
            round.finish().unwrap()
        };
        let (memory, spilled) = (finish(false), finish(true));
        assert!(!memory.clipped.is_empty(), "the test clips something");
        assert_eq!(spilled.clipped, memory.clipped);
        assert!(spilled
            .values
            .iter()
            .map(|v| v.to_bits())
            .eq(memory.values.iter().map(|v| v.to_bits())));
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

    /// The same cohort in different arrival orders: the same refusals and the same aggregate,
    /// to the last bit. An attacker answering first or last is screened out alike.
    #[tokio::test]
    async fn arrival_order_changes_nothing() {
        use rand::{Rng, SeedableRng};
        let len = 4096;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut cohort: Vec<(String, Vec<f32>, f64)> = (0..5)
            .map(|i| {
                let v: Vec<f32> = (0..len).map(|_| rng.random_range(-0.01f32..0.01)).collect();
                (format!("silo-{i}"), v, 100.0 + 37.0 * i as f64)
            })
            .collect();
        // A scaled, sign-flipped update.
        let attack: Vec<f32> = cohort[0].1.iter().map(|x| -10.0 * x).collect();
        cohort.push(("mallory".into(), attack, 120.0));
        let run = |order: Vec<usize>| {
            let cohort = cohort.clone();
            async move {
                let (a, _) = Actor::spawn(None, AggregatorActor, ()).await.unwrap();
                a.cast(AggregatorMessage::Begin {
                    round: 1,
                    len,
                    aggregation: Aggregation::default(),
                    policy: Box::new(Policy::default()),
                    expected: Expected {
                        round: 1,
                        base_version: 0,
                        base_digest: "d".into(),
                        len,
                    },
                })
                .unwrap();
                for i in order {
                    let (silo, update, w) = cohort[i].clone();
                    ractor::call!(a, |reply| AggregatorMessage::Fold {
                        round: 1,
                        silo,
                        update: Values::Memory(update),
                        weight: w,
                        claimed: (1, 0, "d".into()),
                        reply
                    })
                    .unwrap()
                    .unwrap();
                }
                let refused =
                    ractor::call!(a, |reply| AggregatorMessage::Screen { round: 1, reply })
                        .unwrap();
                let g = ractor::call!(a, |reply| AggregatorMessage::Finish { round: 1, reply })
                    .unwrap()
                    .unwrap();
                (refused, g.values)
            }
        };
        let (first_refused, first) = run(vec![5, 0, 1, 2, 3, 4]).await;
        assert_eq!(first_refused.len(), 1, "{first_refused:?}");
        assert_eq!(first_refused[0].0, "mallory");
        for order in [
            vec![0, 1, 2, 3, 4, 5],
            vec![4, 2, 5, 0, 3, 1],
            vec![3, 4, 0, 1, 2, 5],
        ] {
            let (refused, values) = run(order).await;
            assert_eq!(refused, first_refused);
            let same = values
                .iter()
                .zip(&first)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "the aggregate depends on the arrival order");
        }
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
