//! The aggregation a federation chooses: which kernel, with which parameters, plus optional
//! clipping of each update and a server optimiser. This is Flower's `Strategy` idea reduced to
//! data: `[aggregation]` in the federation file, recorded with every committed version.
//!
//! ```toml
//! [aggregation]
//! kernel = "trimmed-mean"   # mean | trimmed-mean | median | krum | multi-krum | bulyan
//! trim = 0.2                # trimmed-mean: β in [0, 0.5); k = ⌊β·n⌋ cut from each tail
//! # byzantine = 2           # krum, multi-krum, bulyan: f, the Byzantine silos tolerated
//! # keep = 4                # multi-krum: m, how many best-scored updates are averaged
//! # clip_norm = 5.0         # clip every update to this L2 norm before combining
//! # [aggregation.server_optimizer]
//! # kind = "adam"           # adam | yogi | adagrad | momentum; learning_rate, beta1, beta2, tau
//! ```
//!
//! How to choose: `mean` when every silo is trusted (streaming, O(model) memory, weighted by
//! example counts); `trimmed-mean` or `median` against a minority of outliers (unweighted, need
//! every update in memory); `multi-krum` to drop whole updates that sit far from the rest;
//! `bulyan` for the strongest guarantee, at n ≥ 4f + 3.

use serde::Deserialize;

use super::bulyan::bulyan;
use super::error::validate;
use super::krum::multi_krum;
use super::order_statistics::{median, trimmed_mean};
use super::server_optimizer::ServerOptimizer;
use super::weighted_mean::weighted_mean;
use super::{KernelError, SettingsError};

/// A combining rule and its parameters. Invariant: parameters are in range (checked at parse).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kernel {
    /// Weighted mean by example counts (FedAvg).
    Mean,
    /// Coordinate-wise trimmed mean, β = `trim`.
    TrimmedMean {
        /// β in [0, 0.5).
        trim: f64,
    },
    /// Coordinate-wise median.
    Median,
    /// Krum: the single update with the best score.
    Krum {
        /// f.
        byzantine: usize,
    },
    /// Multi-Krum: weighted mean of the `keep` best-scored updates.
    MultiKrum {
        /// f.
        byzantine: usize,
        /// m ≥ 1.
        keep: usize,
    },
    /// Bulyan.
    Bulyan {
        /// f.
        byzantine: usize,
    },
    /// A kernel registered with [`super::custom::register`], by name.
    Custom {
        /// Its registered name.
        name: &'static str,
    },
}

/// The result of combining.
#[derive(Debug, Clone, PartialEq)]
pub struct Combined {
    /// The aggregate.
    pub values: Vec<f32>,
    /// For selecting kernels (Krum family, Bulyan): the indices of the updates selected.
    pub selected: Option<Vec<usize>>,
}

impl Kernel {
    /// The kernel's name as written in configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Kernel::Mean => "mean",
            Kernel::TrimmedMean { .. } => "trimmed-mean",
            Kernel::Median => "median",
            Kernel::Krum { .. } => "krum",
            Kernel::MultiKrum { .. } => "multi-krum",
            Kernel::Bulyan { .. } => "bulyan",
            Kernel::Custom { name } => name,
        }
    }

    /// Name and parameters, e.g. `trimmed-mean(trim=0.2)`; recorded with each version.
    pub fn describe(&self) -> String {
        match self {
            Kernel::Mean | Kernel::Median | Kernel::Custom { .. } => self.name().to_string(),
            Kernel::TrimmedMean { trim } => format!("trimmed-mean(trim={trim})"),
            Kernel::Krum { byzantine } => format!("krum(byzantine={byzantine})"),
            Kernel::MultiKrum { byzantine, keep } => {
                format!("multi-krum(byzantine={byzantine},keep={keep})")
            }
            Kernel::Bulyan { byzantine } => format!("bulyan(byzantine={byzantine})"),
        }
    }

    /// Name and parameters as [`Kernel::parse`] takes them: `(name, trim, byzantine, keep)`.
    pub fn params(&self) -> (&'static str, Option<f64>, Option<usize>, Option<usize>) {
        match *self {
            Kernel::Mean | Kernel::Median | Kernel::Custom { .. } => {
                (self.name(), None, None, None)
            }
            Kernel::TrimmedMean { trim } => (self.name(), Some(trim), None, None),
            Kernel::Krum { byzantine } | Kernel::Bulyan { byzantine } => {
                (self.name(), None, Some(byzantine), None)
            }
            Kernel::MultiKrum { byzantine, keep } => {
                (self.name(), None, Some(byzantine), Some(keep))
            }
        }
    }

    /// Whether the kernel can fold updates as they arrive (O(model) memory).
    pub fn is_streaming(&self) -> bool {
        matches!(self, Kernel::Mean)
    }

    /// Parses a kernel from its name and optional parameters; errors name the parameter.
    pub fn parse(
        name: &str,
        trim: Option<f64>,
        byzantine: Option<usize>,
        keep: Option<usize>,
    ) -> Result<Self, SettingsError> {
        let unused = |key: &'static str, v: bool| {
            if v {
                Err(SettingsError::NotApplicable {
                    key,
                    kernel: name.to_string(),
                })
            } else {
                Ok(())
            }
        };
        let need_f = || {
            byzantine.ok_or_else(|| SettingsError::Missing {
                kernel: name.to_string(),
                key: "byzantine",
                meaning: "f, the Byzantine silos to tolerate",
            })
        };
        let k = match name {
            "mean" => Kernel::Mean,
            "trimmed-mean" => {
                let trim = trim.ok_or(SettingsError::Missing {
                    kernel: name.to_string(),
                    key: "trim",
                    meaning: "β in [0, 0.5)",
                })?;
                if !(0.0..0.5).contains(&trim) {
                    return Err(SettingsError::OutOfRange {
                        key: "`trim`",
                        value: trim.to_string(),
                        allowed: "must be in [0, 0.5)",
                    });
                }
                Kernel::TrimmedMean { trim }
            }
            "median" => Kernel::Median,
            "krum" => Kernel::Krum {
                byzantine: need_f()?,
            },
            "multi-krum" => {
                let keep = keep.ok_or(SettingsError::Missing {
                    kernel: name.to_string(),
                    key: "keep",
                    meaning: "m, the updates to average",
                })?;
                if keep == 0 {
                    return Err(SettingsError::OutOfRange {
                        key: "`keep`",
                        value: "0".into(),
                        allowed: "must be at least 1",
                    });
                }
                Kernel::MultiKrum {
                    byzantine: need_f()?,
                    keep,
                }
            }
            "bulyan" => Kernel::Bulyan {
                byzantine: need_f()?,
            },
            other => match super::custom::lookup(other) {
                Some((name, _)) => Kernel::Custom { name },
                None => {
                    let registered: String = super::custom::names()
                        .iter()
                        .map(|n| format!(", {n}"))
                        .collect();
                    return Err(SettingsError::Unknown {
                        name: other.to_string(),
                        registered,
                    });
                }
            },
        };
        unused(
            "trim",
            trim.is_some() && !matches!(k, Kernel::TrimmedMean { .. }),
        )?;
        unused(
            "byzantine",
            byzantine.is_some()
                && !matches!(
                    k,
                    Kernel::Krum { .. } | Kernel::MultiKrum { .. } | Kernel::Bulyan { .. }
                ),
        )?;
        unused(
            "keep",
            keep.is_some() && !matches!(k, Kernel::MultiKrum { .. }),
        )?;
        Ok(k)
    }

    /// The fewest updates the kernel can combine with its parameters.
    pub fn min_updates(&self) -> usize {
        match *self {
            Kernel::Mean | Kernel::Median | Kernel::TrimmedMean { .. } => 1,
            Kernel::Krum { byzantine } => byzantine + 3,
            Kernel::MultiKrum { byzantine, keep } => (byzantine + 3).max(keep + byzantine),
            Kernel::Bulyan { byzantine } => 4 * byzantine + 3,
            Kernel::Custom { name } => {
                super::custom::lookup(name).map_or(1, |(_, r)| r.min_updates().max(1))
            }
        }
    }

    /// Combines `updates` with their `weights` (example counts; only the mean and Multi-Krum
    /// use them). Validates the inputs first: equal lengths, finite values, positive weights,
    /// and enough updates for the kernel's parameters.
    pub fn combine(&self, updates: &[&[f32]], weights: &[f64]) -> Result<Combined, KernelError> {
        validate(updates, Some(weights))?;
        let n = updates.len();
        if n < self.min_updates() {
            return Err(KernelError::Parameter {
                kernel: self.name(),
                message: format!(
                    "{} needs at least {} updates, got {n}",
                    self.describe(),
                    self.min_updates()
                ),
            });
        }
        let plain = |values| {
            Ok(Combined {
                values,
                selected: None,
            })
        };
        match *self {
            Kernel::Mean => plain(weighted_mean(updates, weights)),
            Kernel::TrimmedMean { trim } => {
                plain(trimmed_mean(updates, (trim * n as f64).floor() as usize))
            }
            Kernel::Median => plain(median(updates)),
            Kernel::Krum { byzantine } => {
                let (values, sel) = multi_krum(updates, weights, byzantine, 1);
                Ok(Combined {
                    values,
                    selected: Some(sel),
                })
            }
            Kernel::MultiKrum { byzantine, keep } => {
                let (values, sel) = multi_krum(updates, weights, byzantine, keep);
                Ok(Combined {
                    values,
                    selected: Some(sel),
                })
            }
            Kernel::Bulyan { byzantine } => {
                let (values, sel) = bulyan(updates, byzantine);
                Ok(Combined {
                    values,
                    selected: Some(sel),
                })
            }
            Kernel::Custom { name } => {
                let (_, rule) = super::custom::lookup(name).ok_or(KernelError::Parameter {
                    kernel: name,
                    message: "not registered in this process".into(),
                })?;
                // A third party's code: a panic is its error, not the aggregator's end.
                let values = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    rule.combine(updates, weights)
                }))
                .map_err(|_| KernelError::Parameter {
                    kernel: name,
                    message: "the custom kernel panicked".into(),
                })?;
                let len = updates.first().map_or(0, |u| u.len());
                if values.len() != len || values.iter().any(|v| !v.is_finite()) {
                    return Err(KernelError::Parameter {
                        kernel: name,
                        message: format!(
                            "the custom kernel returned {} values (expected {len}, all finite)",
                            values.len()
                        ),
                    });
                }
                plain(values)
            }
        }
    }
}

/// `[aggregation]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAggregation {
    kernel: String,
    trim: Option<f64>,
    byzantine: Option<usize>,
    keep: Option<usize>,
    clip_norm: Option<f64>,
    server_optimizer: Option<WrittenServer>,
}

/// `server_optimizer` as written: a table, or `"none"` (the model moves by the aggregate:
/// plain FedAvg, no optimiser state).
#[derive(Debug, Clone, Copy)]
enum WrittenServer {
    None,
    Some(ServerOptimizer),
}

impl<'de> Deserialize<'de> for WrittenServer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = WrittenServer;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a table (kind = \"momentum\" | \"adam\" | \"yogi\" | \"adagrad\", …) or \"none\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<WrittenServer, E> {
                match v {
                    "none" => Ok(WrittenServer::None),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(v), &self)),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                m: A,
            ) -> Result<WrittenServer, A::Error> {
                ServerOptimizer::deserialize(serde::de::value::MapAccessDeserializer::new(m))
                    .map(WrittenServer::Some)
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The server optimiser of the default plan: server momentum (FedAvgM) with β = 0.85 and
/// learning rate 1, chosen by the experiment in docs/aggregation.md ("The default plan") for
/// the built-in MLP with the mean kernel; see [`Aggregation::with_default_plan`].
pub const DEFAULT_SERVER_OPTIMIZER: ServerOptimizer = ServerOptimizer {
    kind: super::server_optimizer::OptimizerKind::Momentum,
    learning_rate: 1.0,
    beta1: 0.85,
    beta2: 0.99,
    tau: 1e-3,
    schedule: super::server_optimizer::LearningRateSchedule::Constant,
};

/// A federation's aggregation settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawAggregation")]
pub struct Aggregation {
    /// The kernel.
    pub kernel: Kernel,
    /// Clip each update to this L2 norm before combining.
    pub clip_norm: Option<f64>,
    /// Server optimiser applied to the aggregate.
    pub server_optimizer: Option<ServerOptimizer>,
    /// `server_optimizer` was not written: [`with_default_plan`](Self::with_default_plan)
    /// may choose one (and then [`default_plan`](Self::default_plan) says so).
    pub server_optimizer_unset: bool,
}

impl Default for Aggregation {
    fn default() -> Self {
        Aggregation {
            kernel: Kernel::Mean,
            clip_norm: None,
            server_optimizer: None,
            server_optimizer_unset: true,
        }
    }
}

/// An `[aggregation]` table that cannot be used: which setting, and why.
#[derive(Debug, thiserror::Error)]
#[error("aggregation: {0}")]
pub struct AggregationError(#[from] pub SettingsError);

impl TryFrom<RawAggregation> for Aggregation {
    type Error = AggregationError;
    fn try_from(r: RawAggregation) -> Result<Self, AggregationError> {
        let kernel = Kernel::parse(&r.kernel, r.trim, r.byzantine, r.keep)?;
        if let Some(c) = r.clip_norm {
            if !(c.is_finite() && c > 0.0) {
                return Err(SettingsError::OutOfRange {
                    key: "`clip_norm`",
                    value: c.to_string(),
                    allowed: "must be a positive number",
                }
                .into());
            }
        }
        let server_optimizer = match r.server_optimizer {
            Some(WrittenServer::Some(o)) => Some(o),
            Some(WrittenServer::None) | None => None,
        };
        if let Some(o) = &server_optimizer {
            o.validate()?;
        }
        Ok(Aggregation {
            kernel,
            clip_norm: r.clip_norm,
            server_optimizer,
            server_optimizer_unset: r.server_optimizer.is_none(),
        })
    }
}

impl Aggregation {
    /// The settings with the default plan's server optimiser where `server_optimizer` was not
    /// written and the plan is the one the default was chosen for: the weighted mean
    /// (`tuned_for`: the built-in MLP, trained whole — not LoRA, not a described model —
    /// and no silo-level DP, whose noise momentum would sum over rounds).
    /// Anything else keeps plain FedAvg unless its file says otherwise: the default was not
    /// measured there (and LoRA takes no server optimiser).
    pub fn with_default_plan(mut self, tuned_for: bool) -> Self {
        if self.server_optimizer_unset && tuned_for && self.kernel == Kernel::Mean {
            self.server_optimizer = Some(DEFAULT_SERVER_OPTIMIZER);
        }
        self
    }

    /// Whether the server optimiser is the default plan's (not written in the file).
    pub fn default_plan(&self) -> bool {
        self.server_optimizer_unset && self.server_optimizer.is_some()
    }

    /// Everything that shapes the aggregate, for the record, e.g.
    /// `trimmed-mean(trim=0.2) clip_norm=5 server=adam(lr=0.01, …)`.
    pub fn describe(&self) -> String {
        let mut s = self.kernel.describe();
        if let Some(c) = self.clip_norm {
            s.push_str(&format!(" clip_norm={c}"));
        }
        if let Some(o) = &self.server_optimizer {
            use super::server_optimizer::{LearningRateSchedule, OptimizerKind};
            s.push_str(&match o.kind {
                OptimizerKind::Momentum => {
                    format!(" server=momentum(lr={}, beta={})", o.learning_rate, o.beta1)
                }
                k => format!(
                    " server={k:?}(lr={}, beta1={}, beta2={}, tau={})",
                    o.learning_rate, o.beta1, o.beta2, o.tau
                ),
            });
            if o.schedule == LearningRateSchedule::Cosine {
                s.push_str(" schedule=cosine");
            }
        }
        s.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Aggregation, toml::de::Error> {
        #[derive(Deserialize)]
        struct W {
            aggregation: Aggregation,
        }
        toml::from_str::<W>(t).map(|w| w.aggregation)
    }

    #[test]
    fn the_default_plan_adds_server_momentum_only_where_it_was_chosen_for() {
        let read = |t: &str| -> Aggregation {
            #[derive(Deserialize)]
            struct F {
                #[serde(default)]
                aggregation: Aggregation,
            }
            toml::from_str::<F>(t).unwrap().aggregation
        };
        let momentum = Some(DEFAULT_SERVER_OPTIMIZER);
        // Nothing written, or a mean without a server optimiser: the default.
        assert_eq!(read("").with_default_plan(true).server_optimizer, momentum);
        let mean = read("[aggregation]\nkernel = \"mean\"\nclip_norm = 5.0\n");
        assert_eq!(mean.with_default_plan(true).server_optimizer, momentum);
        // Not for LoRA or a described model, nor a robust kernel, nor when turned off.
        assert_eq!(read("").with_default_plan(false).server_optimizer, None);
        let median = read("[aggregation]\nkernel = \"median\"\n");
        assert_eq!(median.with_default_plan(true).server_optimizer, None);
        let off = read("[aggregation]\nkernel = \"mean\"\nserver_optimizer = \"none\"\n");
        assert_eq!(off.with_default_plan(true).server_optimizer, None);
        // Written: kept as written.
        let adam = read(
            "[aggregation]\nkernel = \"mean\"\n[aggregation.server_optimizer]\nkind = \"adam\"\n",
        );
        let adam = adam.with_default_plan(true).server_optimizer.unwrap();
        assert_eq!(
            (adam.kind, adam.learning_rate),
            (super::super::server_optimizer::OptimizerKind::Adam, 0.01)
        );
        // A word other than "none" is refused, naming what is allowed.
        let e =
            parse("[aggregation]\nkernel = \"mean\"\nserver_optimizer = \"fast\"\n").unwrap_err();
        assert!(e.to_string().contains("\"none\""), "{e}");
    }

    #[test]
    fn parses_the_documented_forms() {
        assert_eq!(
            parse("aggregation = { kernel = \"trimmed-mean\", trim = 0.2 }")
                .unwrap()
                .kernel,
            Kernel::TrimmedMean { trim: 0.2 }
        );
        let a = parse("[aggregation]\nkernel = \"multi-krum\"\nbyzantine = 2\nkeep = 4\nclip_norm = 3.0\n[aggregation.server_optimizer]\nkind = \"yogi\"\n").unwrap();
        assert_eq!(
            a.kernel,
            Kernel::MultiKrum {
                byzantine: 2,
                keep: 4
            }
        );
        assert!(a.describe().contains("yogi"), "{}", a.describe());
    }

    #[test]
    fn errors_name_what_is_wrong() {
        for (t, want) in [
            (
                "aggregation = { kernel = \"trimmed-mean\", trim = 0.5 }",
                "[0, 0.5)",
            ),
            (
                "aggregation = { kernel = \"trimmed-mean\" }",
                "needs `trim`",
            ),
            ("aggregation = { kernel = \"krum\" }", "needs `byzantine`"),
            (
                "aggregation = { kernel = \"mean\", trim = 0.1 }",
                "does not apply",
            ),
            ("aggregation = { kernel = \"avg\" }", "unknown kernel `avg`"),
            ("aggregation = { kernel = \"mean\", trimm = 0.1 }", "trimm"),
            (
                "aggregation = { kernel = \"mean\", clip_norm = -1.0 }",
                "clip_norm",
            ),
        ] {
            let e = parse(t).unwrap_err().to_string();
            assert!(e.contains(want), "{t}: {e}");
        }
    }

    #[test]
    fn refuses_too_few_updates_and_non_finite_values() {
        let a = [1.0f32];
        let e = Kernel::Bulyan { byzantine: 1 }
            .combine(&[&a, &a, &a], &[1.0; 3])
            .unwrap_err();
        assert!(e.to_string().contains("at least 7"), "{e}");
        let nan = [f32::NAN];
        let e = Kernel::Median.combine(&[&a, &nan], &[1.0; 2]).unwrap_err();
        assert!(matches!(e, KernelError::NonFinite { update: 1, .. }));
    }
}
