//! The model the federation stands on: the current version (its parameters, and under LoRA
//! its adapters on the frozen base), the agreed feature scaling, the server optimiser's state,
//! and the held-out figures the validation gate compares a candidate with.
//!
//! [`Versions::make_current`] is the one place a version becomes current in memory — after a
//! commit, an approval, a rollback or a restart — so the model, its adapters, its optimiser
//! state and its figures always move together. (What a *run* made current is the run's own
//! record: `Run::last_eval`.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::kernels::server_optimizer::OptimizerState;
use crate::model::checkpoint::Checkpoint;
use crate::model::lora::{adapters_from_hex, Adapters, ADAPTERS_KEY};
use crate::model::{initial_params, Architecture, Digest};
use crate::protocol::{EvalMetrics, Scaling};
use crate::round::BaseModel;

use super::settings::CoordinatorSettings;

/// The current version and what goes with it.
pub struct Versions {
    /// The current version: number, parameters, digest.
    pub model: BaseModel,
    /// Version 0's parameters (under LoRA, the frozen base).
    pub initial: Arc<Vec<f32>>,
    /// Their digest.
    pub initial_digest: Digest,
    /// LoRA: the adapters' layout (`None` without LoRA).
    pub lora: Option<Adapters>,
    /// LoRA: the current version's adapters on the frozen `initial` (empty without LoRA).
    pub adapters: Vec<f32>,
    /// The agreed feature scaling (`None` until the first cohort agrees on it).
    pub scaling: Option<Scaling>,
    /// The server optimiser's state (when one is configured).
    pub optimizer: Option<OptimizerState>,
    /// The number the next candidate gets (rejected candidates use numbers too).
    pub next_version: u64,
    /// The current version's held-out figures, for the validation gate.
    pub baseline: BTreeMap<String, EvalMetrics>,
}

impl Versions {
    /// Version 0 of `settings`: the pretrained model, or a seeded random one.
    pub fn initial(settings: &CoordinatorSettings, spec: &Architecture) -> crate::Result<Self> {
        let config = |origin: &str, message: String| crate::Error::Config {
            origin: origin.into(),
            message,
        };
        let initial = match (&settings.initial, spec) {
            (Some(p), _) => p.params.clone(),
            (None, Architecture::Mlp(mlp)) => Arc::new(initial_params(mlp, settings.seed)),
            (None, Architecture::Described(d)) => {
                return Err(config(
                    "[model]",
                    format!("a `{}` model needs `initial`: only its trainer knows how to initialise it (`fedsilo-model` writes one)", d.architecture),
                ))
            }
        };
        let lora =
            match (&settings.lora, spec.mlp()) {
                (Some(plan), Some(mlp)) => Some(
                    Adapters::new(mlp, plan).map_err(|e| config("[plan.lora]", e.to_string()))?,
                ),
                (Some(_), None) => return Err(config(
                    "[plan.lora]",
                    "is for the built-in MLP; a model with a manifest declares its own adapters"
                        .into(),
                )),
                (None, _) => None,
            };
        let adapters = lora
            .as_ref()
            .map(|l| l.init(settings.seed))
            .unwrap_or_default();
        Ok(Self {
            model: BaseModel {
                version: 0,
                digest: Digest::of_f32(&initial),
                params: initial.clone(),
            },
            lora,
            adapters,
            initial_digest: Digest::of_f32(&initial),
            initial,
            scaling: None,
            optimizer: None,
            next_version: 1,
            baseline: BTreeMap::new(),
        })
    }

    /// Version 0's values: kept under LoRA (the frozen base), rebuilt from `settings` once
    /// they were let go.
    pub fn initial_values(&self, settings: &CoordinatorSettings) -> crate::Result<Arc<Vec<f32>>> {
        if self.lora.is_some() || !self.initial.is_empty() {
            return Ok(self.initial.clone());
        }
        Ok(Self::initial(settings, &settings.spec)?.initial)
    }

    /// Makes `version` current: its parameters, its adapters (under LoRA), the optimiser
    /// state that produced it (`None`: the one in use stays) and its held-out figures.
    pub fn make_current(
        &mut self,
        version: u64,
        params: Vec<f32>,
        adapters: Vec<f32>,
        optimizer: Option<OptimizerState>,
        figures: BTreeMap<String, EvalMetrics>,
        digest: Option<Digest>,
    ) {
        self.model = BaseModel {
            version,
            // The round hashed the values once already; hashed here only when it did not.
            digest: digest.unwrap_or_else(|| Digest::of_f32(&params)),
            params: Arc::new(params),
        };
        if self.lora.is_some() {
            self.adapters = adapters;
        } else if version > 0 {
            // Without LoRA, version 0's values serve only the local-only comparison at the end
            // of a run: let go of them once another version is current (the coordinator then
            // holds the current version and a candidate, not a third model), and rebuild them
            // from the configuration when needed ([`Versions::initial_values`]). A pretrained
            // version 0 stays in the settings, as the one copy both shared.
            self.initial = Arc::new(Vec::new());
        }
        if optimizer.is_some() {
            self.optimizer = optimizer;
        }
        self.baseline = figures;
    }

    /// The adapters of version `version` (its checkpoint's `params` and `meta`): fresh ones
    /// for version 0, else the ones its metadata holds, which must reproduce the checkpoint
    /// when merged into the frozen base. Empty without LoRA. An error says the LoRA plan or
    /// the base changed.
    pub fn adapters_in(
        &self,
        version: u64,
        params: &[f32],
        meta: &HashMap<String, String>,
        seed: u64,
    ) -> crate::Result<Vec<f32>> {
        let Some(layout) = &self.lora else {
            return Ok(Vec::new());
        };
        if version == 0 {
            return Ok(layout.init(seed));
        }
        let bad = |message: String| crate::Error::Checkpoint {
            origin: format!("version {version}"),
            message,
        };
        let hex = meta.get(ADAPTERS_KEY).ok_or_else(|| {
            bad("holds no LoRA adapters: it was not made under [plan.lora]".into())
        })?;
        let values =
            adapters_from_hex(hex).ok_or_else(|| bad("its LoRA adapters are not hex".into()))?;
        if values.len() != layout.len || values.iter().any(|v| !v.is_finite()) {
            return Err(bad(format!(
                "holds {} adapter values, [plan.lora] now asks for {}: the LoRA plan changed",
                values.len(),
                layout.len
            )));
        }
        if Digest::of_f32(&layout.merge(&self.initial, &values)) != Digest::of_f32(params) {
            return Err(bad(
                "its adapters merged into the frozen base do not give the checkpoint: the base or [plan.lora] changed"
                    .into(),
            ));
        }
        Ok(values)
    }

    /// Makes committed checkpoint `ckpt` of `version` current (a rollback or a restart): its
    /// adapters are read back and checked first.
    pub fn make_checkpoint_current(
        &mut self,
        version: u64,
        ckpt: Checkpoint,
        optimizer: Option<OptimizerState>,
        figures: BTreeMap<String, EvalMetrics>,
        seed: u64,
    ) -> crate::Result<()> {
        let adapters = self.adapters_in(version, &ckpt.params, &ckpt.metadata, seed)?;
        self.make_current(version, ckpt.params, adapters, optimizer, figures, None);
        Ok(())
    }
}
