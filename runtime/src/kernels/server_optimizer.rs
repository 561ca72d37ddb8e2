//! Server optimisers: the aggregate update Δ is treated as a pseudo-gradient and the global
//! model moves by a step of its own. The adaptive rules (Reddi et al. 2021, "Adaptive
//! Federated Optimization"):
//!
//! ```text
//! m ← β₁·m + (1 − β₁)·Δ
//! v ← v + Δ²                               FedAdagrad
//! v ← v − (1 − β₂)·Δ²·sign(v − Δ²)         FedYogi
//! v ← β₂·v + (1 − β₂)·Δ²                   FedAdam
//! x ← x + η·m / (√v + τ)
//! ```
//! with `m₀ = 0`, `v₀ = τ²`; and server momentum (FedAvgM, Hsu et al. 2019), heavy-ball
//! momentum on the averaged update, `m ← β₁·m + Δ; x ← x + η·m` — with β₁ = 0 it is FedAvg
//! with a server learning rate η. Without a server optimiser the model simply moves by Δ
//! (FedAvg). The default learning rate depends on the rule: 1 for momentum (a step of the
//! averaged update's own size), 0.01 for the adaptive ones (whose steps are normalised).
//!
//! The learning rate can follow a schedule over a run (`schedule = "cosine"`): round `r` of a
//! run of `T` steps with `η·(1 + cos(π·(r − 1)/T))/2` — full steps while the model is far from
//! a good one, small ones at the end, where full momentum steps make the score swing from
//! round to round.
//! [`ServerOptimizer::step`] is pure: it returns the new model and the new state, so a round
//! whose candidate is rejected leaves the optimiser untouched.

use serde::{Deserialize, Serialize};

/// Which adaptive rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// FedAdagrad.
    Adagrad,
    /// FedYogi.
    Yogi,
    /// FedAdam.
    Adam,
    /// Server momentum (FedAvgM).
    Momentum,
}

/// How the server learning rate changes over a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LearningRateSchedule {
    /// The same every round.
    #[default]
    Constant,
    /// Cosine decay from the full rate at the run's first round towards 0 after its last.
    Cosine,
}

impl LearningRateSchedule {
    /// The factor of the learning rate at `progress` ∈ [0, 1], the share of the run's rounds
    /// before this one.
    pub fn factor(self, progress: f32) -> f32 {
        match self {
            Self::Constant => 1.0,
            Self::Cosine => 0.5 * (1.0 + (std::f32::consts::PI * progress.clamp(0.0, 1.0)).cos()),
        }
    }
}

impl OptimizerKind {
    /// β₁ when the settings leave it out: 0.85 for momentum (the default plan's), 0.9 for the
    /// adaptive rules' first moment.
    pub fn default_beta1(self) -> f32 {
        match self {
            Self::Momentum => 0.85,
            Self::Adagrad | Self::Yogi | Self::Adam => 0.9,
        }
    }

    /// The learning rate used when the settings leave it out.
    pub fn default_learning_rate(self) -> f32 {
        match self {
            Self::Momentum => 1.0,
            Self::Adagrad | Self::Yogi | Self::Adam => 0.01,
        }
    }
}

/// Server optimiser settings, as in `[aggregation.server_optimizer]` (read through
/// `Written`, where the defaults are).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "Written")]
pub struct ServerOptimizer {
    /// The rule.
    pub kind: OptimizerKind,
    /// Server learning rate η (> 0; default: the rule's
    /// [`default_learning_rate`](OptimizerKind::default_learning_rate)).
    pub learning_rate: f32,
    /// Momentum β, or the first-moment decay β₁, in [0, 1) (default: the rule's
    /// [`default_beta1`](OptimizerKind::default_beta1)).
    pub beta1: f32,
    /// Second-moment decay β₂ in [0, 1) (Adam, Yogi; default 0.99).
    pub beta2: f32,
    /// Adaptivity τ (> 0; default 0.001).
    pub tau: f32,
    /// How the learning rate changes over a run (default: constant).
    pub schedule: LearningRateSchedule,
}

/// The settings as written: the learning rate's default depends on the rule.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Written {
    kind: OptimizerKind,
    #[serde(default)]
    learning_rate: Option<f32>,
    #[serde(default)]
    beta1: Option<f32>,
    #[serde(default = "default_beta2")]
    beta2: f32,
    #[serde(default = "default_tau")]
    tau: f32,
    #[serde(default)]
    schedule: LearningRateSchedule,
}

impl From<Written> for ServerOptimizer {
    fn from(w: Written) -> Self {
        Self {
            kind: w.kind,
            learning_rate: w
                .learning_rate
                .unwrap_or_else(|| w.kind.default_learning_rate()),
            beta1: w.beta1.unwrap_or_else(|| w.kind.default_beta1()),
            beta2: w.beta2,
            tau: w.tau,
            schedule: w.schedule,
        }
    }
}
fn default_beta2() -> f32 {
    0.99
}
fn default_tau() -> f32 {
    1e-3
}

/// The optimiser's moments. Invariant: `m` and `v` have the model's length; `v > 0`.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// First moment.
    pub m: Vec<f32>,
    /// Second moment.
    pub v: Vec<f32>,
}

impl ServerOptimizer {
    /// Checks the settings; the message names the key and what is allowed.
    pub fn validate(&self) -> Result<(), super::SettingsError> {
        let unit = |x: f32| (0.0..1.0).contains(&x);
        let bad = |key, value: f32, allowed| {
            Err(super::SettingsError::OutOfRange {
                key,
                value: value.to_string(),
                allowed,
            })
        };
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(
                "server_optimizer.learning_rate",
                self.learning_rate,
                "must be > 0",
            );
        }
        if !unit(self.beta1) {
            return bad("server_optimizer.beta1", self.beta1, "must be in [0, 1)");
        }
        if !unit(self.beta2) {
            return bad("server_optimizer.beta2", self.beta2, "must be in [0, 1)");
        }
        if !(self.tau.is_finite() && self.tau > 0.0) {
            return bad("server_optimizer.tau", self.tau, "must be > 0");
        }
        Ok(())
    }

    /// The initial state for a model of `len` parameters.
    pub fn initial_state(&self, len: usize) -> OptimizerState {
        OptimizerState {
            m: vec![0.0; len],
            v: vec![self.tau * self.tau; len],
        }
    }

    /// One server step from `x` with pseudo-gradient `delta`, `progress` ∈ [0, 1] of the way
    /// through the run (for the schedule): the new model and state.
    pub fn step(
        &self,
        x: &[f32],
        delta: &[f32],
        state: &OptimizerState,
        progress: f32,
    ) -> (Vec<f32>, OptimizerState) {
        let eta = self.learning_rate * self.schedule.factor(progress);
        let (b1, b2, tau) = (self.beta1, self.beta2, self.tau);
        let mut next = state.clone();
        let mut out = Vec::with_capacity(x.len());
        for i in 0..x.len() {
            let g = delta[i];
            if self.kind == OptimizerKind::Momentum {
                next.m[i] = b1 * state.m[i] + g;
                out.push(x[i] + eta * next.m[i]);
                continue;
            }
            let g2 = g * g;
            next.m[i] = b1 * state.m[i] + (1.0 - b1) * g;
            let v = state.v[i];
            next.v[i] = match self.kind {
                OptimizerKind::Adagrad => v + g2,
                OptimizerKind::Yogi => v - (1.0 - b2) * g2 * (v - g2).signum(),
                OptimizerKind::Adam => b2 * v + (1.0 - b2) * g2,
                OptimizerKind::Momentum => v,
            }
            .max(0.0);
            out.push(x[i] + eta * next.m[i] / (next.v[i].sqrt() + tau));
        }
        (out, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(kind: OptimizerKind) -> ServerOptimizer {
        ServerOptimizer {
            kind,
            learning_rate: 0.1,
            beta1: 0.9,
            beta2: 0.99,
            tau: 1e-3,
            schedule: LearningRateSchedule::Constant,
        }
    }

    #[test]
    fn a_cosine_schedule_takes_full_steps_first_and_small_ones_at_the_end() {
        let c = LearningRateSchedule::Cosine;
        assert_eq!(c.factor(0.0), 1.0);
        assert!((c.factor(0.5) - 0.5).abs() < 1e-6);
        assert!(c.factor(0.95) < 0.01 && c.factor(2.0) == c.factor(1.0));
        assert_eq!(LearningRateSchedule::Constant.factor(0.9), 1.0);
        let mut o = opt(OptimizerKind::Momentum);
        (o.beta1, o.learning_rate, o.schedule) = (0.0, 1.0, c);
        let s = o.initial_state(1);
        assert_eq!(o.step(&[0.0], &[1.0], &s, 0.0).0, vec![1.0]);
        assert!((o.step(&[0.0], &[1.0], &s, 0.5).0[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn first_step_by_hand() {
        // m = 0.1·Δ; Adam v = 0.99·τ² + 0.01·Δ²; x' = x + η·m/(√v + τ).
        let o = opt(OptimizerKind::Adam);
        let s = o.initial_state(1);
        let (x, st) = o.step(&[1.0], &[0.5], &s, 0.0);
        let m = 0.1 * 0.5f64;
        let v = 0.99 * 1e-6 + 0.01 * 0.25;
        assert!((st.m[0] as f64 - m).abs() < 1e-7);
        assert!((st.v[0] as f64 - v).abs() < 1e-7);
        assert!((x[0] as f64 - (1.0 + 0.1 * m / (v.sqrt() + 1e-3))).abs() < 1e-5);
        let (_, st) = opt(OptimizerKind::Adagrad).step(&[1.0], &[0.5], &s, 0.0);
        assert!((st.v[0] as f64 - (1e-6 + 0.25)).abs() < 1e-7);
        let (_, st) = opt(OptimizerKind::Yogi).step(&[1.0], &[0.5], &s, 0.0);
        assert!((st.v[0] as f64 - (1e-6 + 0.01 * 0.25)).abs() < 1e-7);
    }

    #[test]
    fn moves_along_the_pseudo_gradient() {
        for k in [
            OptimizerKind::Adagrad,
            OptimizerKind::Yogi,
            OptimizerKind::Adam,
        ] {
            let o = opt(k);
            let mut s = o.initial_state(2);
            let mut x = vec![0.0f32, 0.0];
            for _ in 0..100 {
                let (nx, ns) = o.step(&x, &[1.0, -1.0], &s, 0.0);
                x = nx;
                s = ns;
            }
            assert!(x[0] > 0.5 && x[1] < -0.5, "{k:?}: {x:?}");
        }
    }

    #[test]
    fn momentum_accumulates_the_averaged_update() {
        // β = 0.5, η = 1: steps Δ, then Δ + 0.5·Δ; with β = 0 and η = 2, twice Δ each time.
        let mut o = opt(OptimizerKind::Momentum);
        (o.beta1, o.learning_rate) = (0.5, 1.0);
        let s = o.initial_state(1);
        let (x, s) = o.step(&[0.0], &[1.0], &s, 0.0);
        assert_eq!(x, vec![1.0]);
        let (x, _) = o.step(&x, &[1.0], &s, 0.0);
        assert_eq!(x, vec![2.5]);
        (o.beta1, o.learning_rate) = (0.0, 2.0);
        let (x, _) = o.step(&[0.0], &[0.25], &o.initial_state(1), 0.0);
        assert_eq!(x, vec![0.5]);
    }

    #[test]
    fn the_default_learning_rate_follows_the_rule() {
        let read = |t: &str| toml::from_str::<ServerOptimizer>(t).unwrap();
        assert_eq!(read("kind = \"momentum\"").learning_rate, 1.0);
        assert_eq!(
            read("kind = \"momentum\"").beta1,
            0.85,
            "the default plan's β"
        );
        assert_eq!(read("kind = \"adam\"").beta1, 0.9);
        assert_eq!(read("kind = \"adam\"").learning_rate, 0.01);
        assert_eq!(
            read("kind = \"momentum\"\nlearning_rate = 0.5").learning_rate,
            0.5
        );
        assert!(toml::from_str::<ServerOptimizer>("kind = \"adam\"\nlr = 1").is_err());
    }

    #[test]
    fn bad_settings_name_the_key() {
        let mut o = opt(OptimizerKind::Adam);
        o.beta1 = 1.0;
        assert!(matches!(
            o.validate(),
            Err(crate::kernels::SettingsError::OutOfRange {
                key: "server_optimizer.beta1",
                ..
            })
        ));
    }
}
