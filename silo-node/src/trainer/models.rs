//! The models a silo holds: received in chunks (each checked against its total and order,
//! the whole against its digest), a small cache of recent ones, a pinned LoRA base, and the
//! checks that a model, its spec and the scaling fit this silo's schema.

use std::sync::Arc;

use fedsilo::model::lora::Adapters;
use fedsilo::model::{Digest, ModelSpec};
use fedsilo::protocol::trainer_message::HolderRefusal;
use fedsilo::protocol::{LoraTrain, ModelRef, Response, Scaling};

/// Largest model a silo accepts, in values (1 GiB of f32); also the bulk data plane's limit.
pub const MAX_MODEL_VALUES: u64 = 1 << 28;

use super::refusal::Refusal;
use super::state::{err, TrainerState};
use crate::data::Dataset;

/// Models kept at once (base, candidate, one spare).
const MODEL_CACHE: usize = 3;

/// A LoRA round's adapter layout, frozen base and adapters.
pub(super) type LoraParts = (Adapters, Arc<Vec<f32>>, Arc<Vec<f32>>);

/// Models kept pinned at once: a frozen base and the base of the round it serves.
pub(super) const PINNED: usize = 2;

impl TrainerState {
    /// Keeps `m` outside the cache, among the [`PINNED`] most recently pinned.
    pub(super) fn pin(&mut self, m: ModelRef, p: Arc<Vec<f32>>) {
        self.pinned.retain(|(r, _)| *r != m);
        self.pinned.push_back((m, p));
        while self.pinned.len() > PINNED {
            self.pinned.pop_front();
        }
    }

    /// Model `m`, if it was received (or is the pinned base).
    pub(super) fn model(&self, m: &ModelRef) -> Result<Arc<Vec<f32>>, Refusal> {
        self.models
            .iter()
            .chain(&self.pinned)
            .find(|(r, _)| r == m)
            .map(|(_, p)| p.clone())
            .ok_or(Refusal::NotReceived {
                version: m.version,
                digest: m.digest,
            })
    }

    /// A LoRA round's parts: the adapters' layout, the frozen base (kept from now on, outside
    /// the model cache) and the adapters `m`.
    pub(super) fn lora_parts(
        &mut self,
        m: &ModelRef,
        spec: &ModelSpec,
        lora: &LoraTrain,
    ) -> Result<LoraParts, Refusal> {
        let layout = Adapters::new(spec, &lora.plan)?;
        let frozen = self.model(&lora.frozen)?;
        let adapters = self.model(m)?;
        if frozen.len() != spec.layout().len {
            return Err(Refusal::Size("the frozen base model"));
        }
        if adapters.len() != layout.len {
            return Err(Refusal::Adapters {
                got: adapters.len(),
                want: layout.len,
            });
        }
        self.pin(lora.frozen, frozen.clone());
        Ok((layout, frozen, adapters))
    }

    /// The full model to score: `m` itself, or under LoRA the adapters `m` merged into the
    /// frozen base.
    pub(super) fn scored_model(
        &mut self,
        m: &ModelRef,
        spec: &ModelSpec,
        lora: Option<&LoraTrain>,
    ) -> Result<Arc<Vec<f32>>, Refusal> {
        match lora {
            Some(l) => {
                let (layout, frozen, adapters) = self.lora_parts(m, spec, l)?;
                Ok(Arc::new(layout.merge(&frozen, &adapters)))
            }
            None => {
                let p = self.model(m)?;
                if p.len() != spec.layout().len {
                    return Err(Refusal::Size("model"));
                }
                Ok(p)
            }
        }
    }

    /// Whether a model of `spec`, under `scaling`, fits this silo's schema.
    pub(super) fn check_spec(
        &self,
        data: &Dataset,
        spec: &ModelSpec,
        scaling: &Scaling,
    ) -> Result<(), Refusal> {
        let schema = &data.schema;
        spec.validate()?;
        if spec.inputs != schema.encoded_width() {
            return Err(Refusal::Inputs {
                model: spec.inputs,
                schema: schema.encoded_width(),
            });
        }
        let n = schema.numeric_count();
        if scaling.mean.len() != n || scaling.std.len() != n {
            return Err(Refusal::ScalingLength {
                got: scaling.mean.len(),
                want: n,
            });
        }
        if scaling.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || scaling.mean.iter().any(|m| !m.is_finite())
        {
            return Err(Refusal::ScalingValues);
        }
        Ok(())
    }

    /// Keeps a whole model that came over the bulk data plane (its digest checked there).
    pub(super) fn store_whole(
        &mut self,
        model: ModelRef,
        values: Vec<f32>,
    ) -> Result<(), HolderRefusal> {
        if values.len() as u64 > MAX_MODEL_VALUES {
            return Err(HolderRefusal::Refused(format!(
                "model of {} values exceeds this silo's limit of {MAX_MODEL_VALUES}",
                values.len()
            )));
        }
        self.keep(model, values);
        Ok(())
    }

    /// Puts a whole model in the cache, the oldest out if it is full.
    fn keep(&mut self, m: ModelRef, values: Vec<f32>) {
        self.models.retain(|(r, _)| *r != m);
        self.models.push_back((m, Arc::new(values)));
        while self.models.len() > MODEL_CACHE {
            self.models.pop_front();
        }
    }

    /// Stores one chunk of a model sent with `PutModel`.
    pub(super) fn put_chunk(
        &mut self,
        model: ModelRef,
        offset: u64,
        total: u64,
        values: Vec<f32>,
    ) -> Response {
        if total > MAX_MODEL_VALUES {
            return err(format!(
                "model of {total} values exceeds this silo's limit of {MAX_MODEL_VALUES}"
            ));
        }
        if offset == 0 {
            self.staging = Some((model, total, Vec::with_capacity(total as usize)));
        }
        let Some((m, t, buf)) = &mut self.staging else {
            return err(format!(
                "chunk at offset {offset} of a model whose first chunk never came"
            ));
        };
        if *m != model || *t != total || buf.len() as u64 != offset {
            return err(format!(
                "out-of-order chunk: offset {offset}, have {} values of v{}",
                buf.len(),
                m.version
            ));
        }
        if offset + values.len() as u64 > total {
            return err(format!(
                "chunk overruns the model: {} + {} > {total}",
                offset,
                values.len()
            ));
        }
        buf.extend_from_slice(&values);
        let received = buf.len() as u64;
        if received == total {
            let Some((m, _, buf)) = self.staging.take() else {
                return err("internal: staging vanished");
            };
            if Digest::of_f32(&buf) != m.digest {
                return err(format!(
                    "model v{} does not match its digest {}",
                    m.version,
                    m.digest.short()
                ));
            }
            self.keep(m, buf);
        }
        Response::ModelChunkStored { received }
    }
}
