//! The built-in tabular MLP behind [`ModelTrainer`]: the silo's rows under the federation's
//! schema, encoded with the feature scaling the coordinator sent, trained by fedsilo's own
//! mini-batch SGD (record-level DP-SGD when the silo runs it), as LoRA adapters on a frozen
//! base, or by the silo's own program. Unlike a described model's trainer it is built for each
//! request: the MLP's spec, the scaling and (for LoRA) the frozen base come with the request,
//! and the trainer actor checks them against the schema before building one.

use std::path::Path;
use std::sync::Arc;

use fedsilo::model::lora::Adapters;
use fedsilo::model::ModelSpec;
use fedsilo::privacy::noise::secure_rng;
use fedsilo::protocol::{EvalMetrics, Personalize, Scaling, TrainPlan};
use ndarray::{Array1, Array2};

use super::{Fitted, ModelTrainer, Personalised, TrainError};
use crate::data::{encode, unlabelled, Dataset, Split};
use crate::external::ExternalTrainer;
use crate::faults::{forge, RoundAttack};
use crate::train::dp_sgd::{train_dp, DpSgd};
use crate::train::lora::train_adapters;
use crate::train::{evaluate, train, Mlp, Sgd, TrainOutcome};

/// How a round is trained.
#[derive(Debug, Clone)]
pub enum How {
    /// fedsilo's own SGD, DP-SGD when the silo asks (and, in robustness experiments, a forged
    /// update).
    BuiltIn {
        /// The attack this round is trained under, if any.
        attack: RoundAttack,
    },
    /// The silo's own program ([`crate::external`]), for round `round`.
    External {
        /// The program.
        runner: ExternalTrainer,
        /// The round it trains.
        round: u64,
    },
    /// LoRA: the trained values are the adapters, on top of the frozen base.
    Lora {
        /// The adapters' layout.
        layout: Adapters,
        /// The frozen base model.
        frozen: Arc<Vec<f32>>,
    },
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct TabularTrainer {
    data: Arc<Dataset>,
    spec: ModelSpec,
    scaling: Scaling,
    how: How,
}

/// fedsilo's SGD settings for `plan`, shuffled with `seed`.
pub fn sgd(plan: &TrainPlan, seed: u64) -> Sgd {
    Sgd {
        epochs: plan.epochs,
        batch_size: plan.batch_size as usize,
        learning_rate: plan.learning_rate,
        prox_mu: plan.prox_mu,
        train_from: 0,
        seed,
    }
}

impl TabularTrainer {
    /// A trainer of the MLP `spec` on `data`, its features scaled by `scaling` (both already
    /// checked against the schema).
    pub fn new(data: Arc<Dataset>, spec: ModelSpec, scaling: Scaling, how: How) -> Self {
        TabularTrainer {
            data,
            spec,
            scaling,
            how,
        }
    }

    fn encoded(&self, split: &Split) -> (Array2<f32>, Array1<f32>) {
        (
            encode(&self.data.schema, split, &self.scaling),
            Array1::from(split.labels.clone()),
        )
    }
}

impl ModelTrainer for TabularTrainer {
    fn train_rows(&self) -> usize {
        self.data.train.labels.len()
    }

    fn train(
        &self,
        base: &[f32],
        plan: &TrainPlan,
        seed: u64,
        dp: Option<DpSgd>,
    ) -> Result<Fitted, TrainError> {
        let (x, y) = self.encoded(&self.data.train);
        let (update, out) = match &self.how {
            How::External { runner, round } => {
                // The silo's own shuffling seed, as the built-in trainer uses.
                let own = TrainPlan {
                    seed,
                    ..plan.clone()
                };
                let got = runner.run(*round, &self.spec, base, &own, &x, &y)?;
                return Ok(Fitted::from_trained(
                    base,
                    &got.params,
                    got.train_loss,
                    x.nrows(),
                ));
            }
            How::BuiltIn { attack } => built_in(&x, &y, base, &self.spec, plan, seed, *attack, dp),
            How::Lora { layout, frozen } => {
                let mut adapters = base.to_vec();
                let out = train_adapters(
                    layout,
                    &Mlp::new(&self.spec),
                    frozen,
                    &mut adapters,
                    &x,
                    &y,
                    sgd(plan, seed),
                );
                (adapters.iter().zip(base).map(|(n, b)| n - b).collect(), out)
            }
        };
        Ok(Fitted {
            update,
            loss: out.last_epoch_loss,
            examples: out.examples,
        })
    }

    /// FedPer: the last dense layer (its weight then bias, the end of the flat vector) is the
    /// head; the body is frozen by training only from the head's offset.
    fn personalise(
        &self,
        params: &[f32],
        own: Option<&[f32]>,
        p: &Personalize,
    ) -> Result<Option<Personalised>, TrainError> {
        let layout = self.spec.layout();
        let from = layout.tensors.iter().rev().nth(1).map_or(0, |t| t.offset);
        let mut mine = params.to_vec();
        if let Some(head) = own.filter(|h| h.len() == mine.len() - from) {
            mine[from..].copy_from_slice(head);
        }
        let (x, y) = self.encoded(&self.data.train);
        let sgd = Sgd {
            epochs: p.epochs,
            batch_size: p.batch_size as usize,
            learning_rate: p.learning_rate,
            prox_mu: 0.0,
            train_from: from,
            seed: p.seed,
        };
        train(&Mlp::new(&self.spec), &mut mine, &x, &y, sgd);
        let head = mine[from..].to_vec();
        Ok(Some(Personalised { params: mine, head }))
    }

    fn evaluate(&self, params: &[f32]) -> Result<EvalMetrics, TrainError> {
        let (x, y) = self.encoded(&self.data.holdout);
        Ok(evaluate(&Mlp::new(&self.spec), params, &x, &y))
    }

    fn holdout_scores(&self, params: &[f32]) -> Result<Option<super::ScoredRows>, TrainError> {
        let (x, y) = self.encoded(&self.data.holdout);
        let p = Mlp::new(&self.spec).predict(params, x.view());
        Ok(Some((p.to_vec(), y.to_vec())))
    }

    /// The schema's classes in its order: `[negative, positive]`.
    fn predict(&self, params: &[f32], path: &Path) -> Result<Vec<Vec<f32>>, TrainError> {
        let rows = unlabelled(path, &self.data.schema)?;
        let (x, _) = self.encoded(&rows);
        let p = Mlp::new(&self.spec).predict(params, x.view());
        Ok(p.iter().map(|p| vec![1.0 - p, *p]).collect())
    }
}

/// Trains with fedsilo's SGD: the update and what training did.
#[allow(clippy::too_many_arguments)]
fn built_in(
    x: &Array2<f32>,
    y: &Array1<f32>,
    base: &[f32],
    spec: &ModelSpec,
    plan: &TrainPlan,
    seed: u64,
    attack: RoundAttack,
    dp: Option<DpSgd>,
) -> (Vec<f32>, TrainOutcome) {
    let mlp = Mlp::new(spec);
    let honest = |x: &Array2<f32>, y: &Array1<f32>, seed: u64| {
        let mut params = base.to_vec();
        let out = match dp {
            Some(settings) => {
                train_dp(
                    &mlp,
                    &mut params,
                    x,
                    y,
                    sgd(plan, seed),
                    settings,
                    &mut secure_rng(),
                )
                .outcome
            }
            None => train(&mlp, &mut params, x, y, sgd(plan, seed)),
        };
        let update: Vec<f32> = params.iter().zip(base).map(|(n, b)| n - b).collect();
        (update, out)
    };
    let (update, mut out) = honest(x, y, seed);
    let retrain = |rows: &[usize], seed: u64| {
        let (xs, ys) = (
            x.select(ndarray::Axis(0), rows),
            y.select(ndarray::Axis(0), rows),
        );
        honest(&xs, &ys, seed).0
    };
    let (update, examples) = forge(attack, update, out.examples, x.nrows(), seed, &retrain);
    out.examples = examples;
    (update, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo::data::Schema;
    use fedsilo::model::initial_params;

    /// A dataset of `n` rows with two numeric features, labelled by their sum.
    fn separable(n: usize) -> Arc<Dataset> {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let mut text = String::from("a,b,y\n");
        for i in 0..n {
            let (a, b) = ((i % 17) as f32 - 8.0, (i % 5) as f32 - 2.0);
            text += &format!("{a},{b},{}\n", if a + b > 0.0 { "yes" } else { "no" });
        }
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        let schema = Schema::from_toml_str(
            "[target]\ncolumn = \"y\"\npositive = \"yes\"\nnegative = [\"no\"]\n[[feature]]\ncolumn = \"a\"\nkind = \"numeric\"\n[[feature]]\ncolumn = \"b\"\nkind = \"numeric\"\n",
            "s",
        )
        .unwrap();
        Arc::new(Dataset::load(f.path(), &schema, 0.3, 1).unwrap())
    }

    #[test]
    fn personalisation_trains_only_the_head_and_prediction_reads_unlabelled_rows() {
        let data = separable(300);
        let spec = ModelSpec {
            inputs: 2,
            hidden: vec![6],
        };
        let unscaled = Scaling {
            mean: vec![0.0; 2],
            std: vec![1.0; 2],
        };
        let t = TabularTrainer::new(data, spec.clone(), unscaled, How::BuiltIn { attack: None });
        let global = initial_params(&spec, 5);
        let p = Personalize {
            epochs: 5,
            batch_size: 16,
            learning_rate: 0.5,
            seed: 1,
        };
        let first = t.personalise(&global, None, &p).unwrap().unwrap();
        let head_from = 2 * 6 + 6;
        assert_eq!(
            first.params[..head_from],
            global[..head_from],
            "the body is frozen"
        );
        assert_ne!(
            first.params[head_from..],
            global[head_from..],
            "the head moved"
        );
        assert_eq!(first.head, first.params[head_from..]);
        let (g, m) = (
            t.evaluate(&global).unwrap().loss,
            t.evaluate(&first.params).unwrap().loss,
        );
        assert!(m < g, "personalised {m} vs global {g}");
        // From the silo's own head: zero epochs leave it as it was.
        let none = Personalize { epochs: 0, ..p };
        let kept = t
            .personalise(&global, Some(&first.head), &none)
            .unwrap()
            .unwrap();
        assert_eq!(kept.head, first.head);
        // Prediction reads rows without their label, in the file's order, as the held-out
        // scoring does; a file missing a feature is refused by name.
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"b,a\n-2,8\n2,-8\n").unwrap();
        let probs = t.predict(&first.params, f.path()).unwrap();
        assert_eq!(probs.len(), 2);
        assert!(probs.iter().all(|p| (p[0] + p[1] - 1.0).abs() < 1e-6));
        assert!(probs[0][1] > probs[1][1], "{probs:?}");
        let mut g = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut g, b"a,y\n1,yes\n").unwrap();
        let e = t.predict(&first.params, g.path()).unwrap_err().to_string();
        assert!(e.contains("column `b`"), "{e}");
        // A head of the wrong size is not the silo's: the global one is used.
        let short = t
            .personalise(&global, Some(&first.head[1..]), &none)
            .unwrap()
            .unwrap();
        assert_eq!(short.params, global);
    }
}
