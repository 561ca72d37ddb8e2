//! The Trainer actor: a silo's only voice in the federation.
//!
//! It answers the coordinator's [`Request`]s (carried as [`TrainerMessage::Rpc`]) and never
//! sends data: the only things that leave are feature sums, the update, its example count and
//! metrics. Training runs on a blocking thread so heartbeats are answered meanwhile; the result
//! comes back as [`TrainerMessage::JobDone`], is stored for `FetchUpdate`, and only then is the
//! coordinator told the update is ready.
//!
//! Every request is decoded here from opaque bytes: a malformed or incompatible frame gets a
//! [`Response::Error`] naming the problem, and the actor keeps serving.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedsilo::compression::top_k::ErrorFeedback;
use fedsilo::compression::{compress, Compression, Encoded};
use fedsilo::identity::signature::CaCheck;
use fedsilo::kernels::clip::{clip_l2, l2_norm};
use fedsilo::model::{Digest, ModelSpec};
use fedsilo::privacy::budget::PrivacyBook;
use fedsilo::privacy::noise::{add_gaussian, secure_rng};
use fedsilo::protocol::{
    decode, encode, FeatureStats, LoraTrain, ModelRef, PersonalizedMetrics, Request, Response,
    Scaling, TrainPlan, TrainReport, TrainerMessage,
};
use fedsilo::secagg::participant::Participant;
use fedsilo::secagg::quantize::packed_width;
use fedsilo::tls::NodeCredentials;
use ndarray::Array1;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use rand::SeedableRng;

use crate::attack::{Attack, ALIE_SAMPLES};
use crate::data::{encode as encode_rows, local_stats, scaling_from, Dataset};
use crate::external::ExternalTrainer;
use crate::train::dp_sgd::{schedule, train_dp, DpSgd};
use crate::train::lora::train_adapters;
use crate::train::personal::PersonalHead;
use crate::train::{evaluate, train, Mlp, Sgd, TrainOutcome};
use fedsilo::metrics::SiloMetrics;
use fedsilo::model::lora::Adapters;

/// Models kept at once (base, candidate, one spare).
const MODEL_CACHE: usize = 3;
/// Largest model a silo accepts, in values (1 GiB of f32).
const MAX_MODEL_VALUES: u64 = 1 << 28;

/// Start-up arguments of the trainer.
#[derive(Debug)]
pub struct TrainerArgs {
    /// This silo's name (from its certificate).
    pub name: String,
    /// Its data.
    pub data: Arc<Dataset>,
    /// Fault injection for tests: wait this long before each training job.
    pub train_delay: Duration,
    /// Robustness experiments: replace every update with a forged one, from the given round on.
    pub attack: Option<(Attack, u64)>,
    /// Record-level DP-SGD, on the silo's own terms.
    pub dp_sgd: Option<SiloDpSgd>,
    /// The silo's certificate and key: secure-aggregation keys are signed with it, and peers'
    /// are checked against its consortium root (`None`: secure aggregation is refused).
    pub credentials: Option<NodeCredentials>,
    /// Fault injection: exit when the shares of this secure-aggregation round are delivered.
    pub exit_after_sharing: Option<u64>,
    /// Train with this external program instead of the built-in trainer.
    pub external: Option<ExternalTrainer>,
    /// The node's metrics.
    pub metrics: Arc<SiloMetrics>,
}

/// Record-level DP-SGD as this silo runs it, whatever the coordinator asks.
#[derive(Debug, Clone, PartialEq)]
pub struct SiloDpSgd {
    /// Per-example clipping and noise.
    pub dp: DpSgd,
    /// δ at which the spend is reported and budgeted.
    pub delta: f64,
    /// The largest ε this silo lets its data spend; a round that would pass it is refused.
    pub epsilon_budget: Option<f64>,
    /// Where the spend is recorded, synced before each training job (kept across restarts).
    pub ledger: PathBuf,
}

/// The Trainer actor.
#[derive(Debug)]
pub struct TrainerActor;

/// Its state.
#[derive(Debug)]
pub struct TrainerState {
    args: TrainerArgs,
    staging: Option<(ModelRef, u64, Vec<f32>)>,
    models: VecDeque<(ModelRef, Arc<Vec<f32>>)>,
    update: Option<(u64, Vec<f32>)>,
    busy: Option<u64>,
    /// The DP-SGD spend of this silo's data (with `dp_sgd`).
    book: Option<PrivacyBook>,
    /// This round's secure-aggregation keys, shares and masked update.
    secagg: Option<Participant>,
    /// The last round keys were advertised for: a round is never keyed twice, or the
    /// coordinator could sum one update under two sets of masks and subtract.
    last_keyed: Option<u64>,
    /// A round trained under secure aggregation: its update leaves this silo only masked.
    masked_only: Option<u64>,
    /// The round whose update is to be compressed once trained, how, and the rounding seed.
    compress_next: Option<(u64, Compression, u64)>,
    /// The compressed update of a round, served in chunks by `FetchUpdate`.
    encoded: Option<(u64, Encoded)>,
    /// What top-k compression has not sent yet (kept across rounds in memory).
    feedback: ErrorFeedback,
    /// This silo's own head (personalisation), shared with the scoring jobs.
    head: Arc<std::sync::Mutex<PersonalHead>>,
    /// LoRA: the frozen base, kept outside the model cache for the federation's life.
    pinned: Option<(ModelRef, Arc<Vec<f32>>)>,
}

fn reply_with(reply: RpcReplyPort<Vec<u8>>, r: Response) {
    let _ = reply.send(encode(&r));
}

fn err(message: impl Into<String>) -> Response {
    Response::Error {
        message: message.into(),
    }
}

impl TrainerState {
    /// Compresses round `round`'s update as the plan asks and keeps it to serve; the report in
    /// `response` then describes the update the coordinator will decode (its digest and norm).
    /// Returns that decoded update.
    fn compress(
        &mut self,
        round: u64,
        values: Vec<f32>,
        scheme: Compression,
        seed: u64,
        response: &mut Response,
    ) -> Vec<f32> {
        // A non-finite update is sent as it is, to be refused by the coordinator like any
        // other: quantisation would hide it, and it must not reach the error feedback.
        if values.iter().any(|v| !v.is_finite()) {
            return values;
        }
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let Some(encoded) = compress(&values, scheme, &mut self.feedback, &mut rng) else {
            return values;
        };
        let decoded = encoded.decode();
        if let Response::Trained(report) = response {
            report.update_digest = Digest::of_f32(&decoded);
            report.update_norm = l2_norm(&decoded);
        }
        self.encoded = Some((round, encoded));
        decoded
    }

    /// The secure-aggregation state of `round`.
    fn participant(&mut self, round: u64) -> Result<&mut Participant, String> {
        self.secagg
            .as_mut()
            .filter(|p| p.round() == round)
            .ok_or_else(|| format!("no secure-aggregation keys for round {round} here"))
    }

    /// Answers the secure-aggregation steps (see [`fedsilo::secagg::participant`]).
    fn secure_aggregation(&mut self, request: Request) -> Response {
        let result = match request {
            Request::SecAggAdvertise { round } => match &self.args.credentials {
                None => Err("this silo has no credentials to sign secure-aggregation keys".into()),
                Some(_) if self.last_keyed.is_some_and(|r| round <= r) => Err(format!(
                    "keys for round {round} asked after round {}: a round is keyed once, and rounds only move forward",
                    self.last_keyed.unwrap_or_default()
                )),
                Some(creds) => Participant::new(round, creds).map(|p| {
                    let ad = p.advertisement().clone();
                    self.secagg = Some(p);
                    self.last_keyed = Some(round);
                    Response::SecAggAdvertised(ad)
                }),
            },
            Request::SecAggShare {
                round,
                threshold,
                advertisements,
            } => {
                let ca = self
                    .args
                    .credentials
                    .as_ref()
                    .map(|c| CaCheck::new(c.roots()));
                self.participant(round).and_then(|p| {
                    let ca = ca.ok_or("this silo has no consortium root to check keys against")?;
                    p.share(&ca, threshold as usize, &advertisements)
                        .map(Response::SecAggShares)
                })
            }
            Request::SecAggDeliver {
                round,
                ring,
                shares,
            } => {
                if self.args.exit_after_sharing == Some(round) {
                    eprintln!(
                        "silo {}: fault injection: exiting after key sharing in round {round}",
                        self.args.name
                    );
                    std::process::exit(3);
                }
                self.participant(round)
                    .and_then(|p| p.receive(ring, &shares))
                    .map(|_| Response::SecAggReady)
            }
            Request::FetchMasked {
                round,
                weight,
                offset,
                len,
            } => match self.update.take() {
                Some((r, u)) if r == round => {
                    let out = self.participant(round).and_then(|p| {
                        let width = packed_width(p.bits()?) as u64;
                        let masked = p.mask(&u, weight)?;
                        let end = offset.saturating_add(len);
                        if end.saturating_mul(width) > masked.len() as u64 {
                            return Err(format!(
                                "asked for values {offset}..{end} of a masked update of {}",
                                masked.len() as u64 / width
                            ));
                        }
                        Ok(Response::MaskedChunk {
                            bytes: masked[(offset * width) as usize..(end * width) as usize]
                                .to_vec(),
                        })
                    });
                    self.update = Some((r, u));
                    out
                }
                other => {
                    self.update = other;
                    Err(format!("no update for round {round} here"))
                }
            },
            Request::SecAggUnmask {
                round,
                survivors,
                dropped,
            } => self
                .participant(round)
                .and_then(|p| p.reveal(&survivors, &dropped))
                .map(Response::SecAggRevealed),
            other => Err(format!("not a secure-aggregation request: {other:?}")),
        };
        result.unwrap_or_else(err)
    }

    /// With DP-SGD: refuses a round that would take this silo past its own budget, else
    /// records the round's spend (synced) before any training starts.
    fn charge_dp_sgd(&mut self, round: u64, plan: &TrainPlan) -> Result<(), String> {
        let (Some(cfg), Some(book)) = (&self.args.dp_sgd, &mut self.book) else {
            return Ok(());
        };
        let n = self.args.data.train.labels.len();
        let (q, steps) = schedule(n, plan.batch_size as usize, plan.epochs);
        let z = cfg.dp.noise_multiplier as f64;
        let name = &self.args.name;
        if let Some(budget) = cfg.epsilon_budget {
            let after = book.after(name, q, z, steps, cfg.delta);
            if after > budget {
                return Err(format!(
                    "privacy budget: DP-SGD for round {round} ({steps} steps at q = {q:.4}, z = {z}) would take this silo's ε from {:.3} to {after:.3}, above its --dp-epsilon-budget {budget} at δ = {:e}",
                    book.spent(name, cfg.delta),
                    cfg.delta
                ));
            }
        }
        book.record(round, "dp-sgd", q, z, steps, std::slice::from_ref(name))
            .map_err(|e| {
                format!("cannot record the DP-SGD spend, so this silo does not train: {e}")
            })
    }

    fn model(&self, m: &ModelRef) -> Result<Arc<Vec<f32>>, String> {
        self.models
            .iter()
            .chain(&self.pinned)
            .find(|(r, _)| r == m)
            .map(|(_, p)| p.clone())
            .ok_or_else(|| {
                format!(
                    "model v{} ({}) was not received; send it with PutModel first",
                    m.version,
                    m.digest.short()
                )
            })
    }

    /// A LoRA round's parts: the adapters' layout, the frozen base (kept from now on, outside
    /// the model cache) and the adapters `m`.
    fn lora_parts(
        &mut self,
        m: &ModelRef,
        spec: &ModelSpec,
        lora: &LoraTrain,
    ) -> Result<LoraParts, String> {
        let layout = Adapters::new(spec, &lora.plan)?;
        let frozen = self.model(&lora.frozen)?;
        let adapters = self.model(m)?;
        if frozen.len() != spec.layout().len {
            return Err("the frozen base model does not fit its spec".into());
        }
        if adapters.len() != layout.len {
            return Err(format!(
                "{} adapter values, the plan's adapters have {}",
                adapters.len(),
                layout.len
            ));
        }
        self.pinned = Some((lora.frozen, frozen.clone()));
        Ok((layout, frozen, adapters))
    }

    /// The full model to score: `m` itself, or under LoRA the adapters `m` merged into the
    /// frozen base.
    fn scored_model(
        &mut self,
        m: &ModelRef,
        spec: &ModelSpec,
        lora: Option<&LoraTrain>,
    ) -> Result<Arc<Vec<f32>>, String> {
        match lora {
            Some(l) => {
                let (layout, frozen, adapters) = self.lora_parts(m, spec, l)?;
                Ok(Arc::new(layout.merge(&frozen, &adapters)))
            }
            None => {
                let p = self.model(m)?;
                if p.len() != spec.layout().len {
                    return Err("model size does not fit its spec".into());
                }
                Ok(p)
            }
        }
    }

    fn check_spec(&self, spec: &ModelSpec, scaling: &Scaling) -> Result<(), String> {
        let schema = &self.args.data.schema;
        spec.validate()?;
        if spec.inputs != schema.encoded_width() {
            return Err(format!(
                "model expects {} inputs, this silo's schema encodes {} (schemas differ?)",
                spec.inputs,
                schema.encoded_width()
            ));
        }
        let n = schema.numeric_count();
        if scaling.mean.len() != n || scaling.std.len() != n {
            return Err(format!(
                "scaling has {} values, the schema has {n} numeric features",
                scaling.mean.len()
            ));
        }
        if scaling.std.iter().any(|s| !(s.is_finite() && *s > 0.0))
            || scaling.mean.iter().any(|m| !m.is_finite())
        {
            return Err(
                "scaling has a non-finite mean or a non-positive standard deviation".into(),
            );
        }
        Ok(())
    }

    fn put_chunk(
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
            self.models.retain(|(r, _)| *r != m);
            self.models.push_back((m, Arc::new(buf)));
            while self.models.len() > MODEL_CACHE {
                self.models.pop_front();
            }
        }
        Response::ModelChunkStored { received }
    }
}

fn sgd(plan: &TrainPlan, seed: u64) -> Sgd {
    Sgd {
        epochs: plan.epochs,
        batch_size: plan.batch_size as usize,
        learning_rate: plan.learning_rate,
        prox_mu: plan.prox_mu,
        train_from: 0,
        seed,
    }
}

/// A seed unique to this silo, mixed into every shuffling seed.
fn name_seed(name: &str) -> u64 {
    Digest::of_bytes(name.as_bytes())
        .0
        .iter()
        .take(8)
        .fold(0u64, |a, b| (a << 8) | *b as u64)
}

/// A LoRA round's adapter layout, frozen base and adapters.
type LoraParts = (Adapters, Arc<Vec<f32>>, Arc<Vec<f32>>);

/// A trained round: the update, its report, and the DP-SGD spend (sampling rate, steps).
type Trained = (Vec<f32>, TrainReport, Option<(f64, u64)>);

/// How this silo trains a round.
#[derive(Debug, Clone)]
enum Method {
    /// The built-in MLP trainer, with the silo's own DP-SGD if configured (and, in
    /// robustness experiments, a forged update).
    BuiltIn {
        attack: Option<Attack>,
        dp: Option<DpSgd>,
    },
    /// An external program ([`crate::external`]).
    External(ExternalTrainer),
    /// LoRA: the round's model is the adapters, trained on top of the frozen base.
    Lora {
        layout: Adapters,
        frozen: Arc<Vec<f32>>,
    },
}

#[allow(clippy::too_many_arguments)]
fn train_job(
    data: &Dataset,
    name: &str,
    round: u64,
    base_ref: ModelRef,
    base: &[f32],
    spec: &ModelSpec,
    plan: &TrainPlan,
    scaling: &Scaling,
    method: Method,
) -> Result<Trained, String> {
    let started = Instant::now();
    let x = encode_rows(&data.schema, &data.train, scaling);
    let y = Array1::from(data.train.labels.clone());
    let seed = plan.seed ^ name_seed(name);
    let (mut update, out, spent) = match method {
        Method::External(ext) => {
            // The silo's own shuffling seed, as the built-in trainer uses.
            let own = TrainPlan {
                seed,
                ..plan.clone()
            };
            let got = ext.run(round, spec, base, &own, &x, &y)?;
            let update: Vec<f32> = got.params.iter().zip(base).map(|(n, b)| n - b).collect();
            let out = TrainOutcome {
                last_epoch_loss: got.train_loss,
                examples: x.nrows(),
            };
            (update, out, None)
        }
        Method::BuiltIn { attack, dp } => built_in(&x, &y, base, spec, plan, seed, attack, dp),
        Method::Lora { layout, frozen } => {
            let mut adapters = base.to_vec();
            let out = train_adapters(
                &layout,
                &Mlp::new(spec),
                &frozen,
                &mut adapters,
                &x,
                &y,
                sgd(plan, seed),
            );
            let update = adapters.iter().zip(base).map(|(n, b)| n - b).collect();
            (update, out, None)
        }
    };
    if let Some(noise) = plan.noise {
        // Distributed silo-level DP: nothing leaves the silo unclipped or un-noised.
        clip_l2(&mut update, noise.clip_norm);
        add_gaussian(&mut update, noise.std, &mut secure_rng());
    }
    let norm = l2_norm(&update);
    let report = TrainReport {
        round,
        base: base_ref,
        examples: out.examples as u64,
        train_loss: out.last_epoch_loss,
        train_seconds: started.elapsed().as_secs_f64(),
        update_len: update.len() as u64,
        update_digest: Digest::of_f32(&update),
        update_norm: norm,
    };
    Ok((update, report, spent))
}

/// Trains with the built-in MLP trainer: the update, what training did, and the DP-SGD spend.
#[allow(clippy::too_many_arguments)]
fn built_in(
    x: &ndarray::Array2<f32>,
    y: &Array1<f32>,
    base: &[f32],
    spec: &ModelSpec,
    plan: &TrainPlan,
    seed: u64,
    attack: Option<Attack>,
    dp: Option<DpSgd>,
) -> (Vec<f32>, TrainOutcome, Option<(f64, u64)>) {
    let mlp = Mlp::new(spec);
    let honest = |x: &ndarray::Array2<f32>, y: &Array1<f32>, seed: u64| {
        let mut params = base.to_vec();
        let (out, spent): (TrainOutcome, Option<(f64, u64)>) = match dp {
            Some(settings) => {
                let o = train_dp(
                    &mlp,
                    &mut params,
                    x,
                    y,
                    sgd(plan, seed),
                    settings,
                    &mut secure_rng(),
                );
                (o.outcome, Some((o.sampling_rate, o.steps)))
            }
            None => (train(&mlp, &mut params, x, y, sgd(plan, seed)), None),
        };
        let update: Vec<f32> = params.iter().zip(base).map(|(n, b)| n - b).collect();
        (update, out, spent)
    };
    let (mut update, mut out, spent) = honest(x, y, seed);
    if attack == Some(Attack::Inflate) {
        out.examples *= 100;
    }
    if let Some(attack) = attack {
        let mut samples = vec![update];
        if attack == Attack::Alie {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let mut rows: Vec<usize> = (0..x.nrows()).collect();
            for s in 1..ALIE_SAMPLES {
                rows.shuffle(&mut rng);
                let half = &rows[..rows.len() / 2];
                let (xs, ys) = (
                    x.select(ndarray::Axis(0), half),
                    y.select(ndarray::Axis(0), half),
                );
                samples.push(honest(&xs, &ys, seed.wrapping_add(s as u64)).0);
            }
        }
        update = attack.forge(&samples, seed);
    }
    (update, out, spent)
}

fn local_baseline(
    data: &Dataset,
    name: &str,
    initial: &[f32],
    spec: &ModelSpec,
    plan: &TrainPlan,
    rounds: u32,
) -> Response {
    let scaling = scaling_from(&local_stats(&data.schema, &data.train));
    let mlp = Mlp::new(spec);
    let x = encode_rows(&data.schema, &data.train, &scaling);
    let y = Array1::from(data.train.labels.clone());
    let mut params = initial.to_vec();
    for r in 0..rounds as u64 {
        let seed = plan.seed.wrapping_add(r) ^ Digest::of_bytes(name.as_bytes()).0[0] as u64;
        train(&mlp, &mut params, &x, &y, sgd(plan, seed));
    }
    let xh = encode_rows(&data.schema, &data.holdout, &scaling);
    let yh = Array1::from(data.holdout.labels.clone());
    Response::Evaluated(evaluate(&mlp, &params, &xh, &yh))
}

/// Runs `job` on a blocking thread and answers `reply` with its response through
/// [`TrainerMessage::JobDone`], so the mailbox (and heartbeats) keeps moving meanwhile.
fn answer_in_background(
    myself: ActorRef<TrainerMessage>,
    reply: RpcReplyPort<Vec<u8>>,
    what: &'static str,
    job: impl FnOnce() -> Response + Send + 'static,
) {
    tokio::spawn(async move {
        let response = tokio::task::spawn_blocking(job)
            .await
            .unwrap_or_else(|e| err(format!("{what} failed: {e}")));
        let _ = myself.cast(TrainerMessage::JobDone {
            update: None,
            response,
            reply,
            spent: None,
            training: false,
        });
    });
}

impl Actor for TrainerActor {
    type Msg = TrainerMessage;
    type State = TrainerState;
    type Arguments = TrainerArgs;

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: TrainerArgs,
    ) -> Result<TrainerState, ActorProcessingErr> {
        Ok(TrainerState {
            staging: None,
            models: VecDeque::new(),
            update: None,
            busy: None,
            secagg: None,
            last_keyed: None,
            masked_only: None,
            compress_next: None,
            encoded: None,
            feedback: ErrorFeedback::default(),
            head: Arc::default(),
            pinned: None,
            book: match &args.dp_sgd {
                Some(cfg) => Some(PrivacyBook::open(&cfg.ledger)?),
                None => None,
            },
            args,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut TrainerState,
    ) -> Result<(), ActorProcessingErr> {
        let (frame, reply) = match msg {
            TrainerMessage::JobDone {
                update,
                response,
                reply,
                spent,
                training,
            } => {
                if let (Some(_), Some(cfg), Some(book)) = (spent, &state.args.dp_sgd, &state.book) {
                    let (delta, dp) = (cfg.delta, cfg.dp);
                    let eps = book.spent(&state.args.name, delta);
                    tracing::info!(epsilon = eps, delta, "DP-SGD privacy spent so far");
                    println!(
                        "silo {}: DP-SGD spent so far: epsilon {eps:.4} at delta {delta} (clip {}, noise multiplier {})",
                        state.args.name, dp.clip, dp.noise_multiplier
                    );
                }
                let mut response = response;
                if let (true, Response::Trained(r)) = (training, &response) {
                    state.args.metrics.trained(r.train_seconds);
                }
                if training && matches!(response, Response::Error { .. }) {
                    state.args.metrics.refused("train");
                }
                if let Some((round, values)) = update {
                    state.encoded = None;
                    let values = match state.compress_next.take() {
                        Some((r, scheme, seed)) if r == round => {
                            state.compress(round, values, scheme, seed, &mut response)
                        }
                        _ => values,
                    };
                    state.update = Some((round, values));
                }
                if training {
                    state.busy = None;
                }
                reply_with(reply, response);
                return Ok(());
            }
            TrainerMessage::Rpc { frame, reply } => (frame, reply),
        };
        let request = match decode::<Request>(&frame, "coordinator") {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("refusing a request: {e}");
                reply_with(reply, err(e.to_string()));
                return Ok(());
            }
        };
        let kind = request.kind();
        state.args.metrics.request(kind);
        let response = match request {
            Request::Ping { seq } => Response::Pong { seq },
            Request::FeatureStats => Response::FeatureStats(FeatureStats {
                unusable: state.args.data.single_class(),
                ..local_stats(&state.args.data.schema, &state.args.data.train)
            }),
            Request::PutModel {
                model,
                offset,
                total,
                values,
            } => state.put_chunk(model, offset, total, values),
            r @ (Request::SecAggAdvertise { .. }
            | Request::SecAggShare { .. }
            | Request::SecAggDeliver { .. }
            | Request::FetchMasked { .. }
            | Request::SecAggUnmask { .. }) => state.secure_aggregation(r),
            Request::FetchUpdate { round, .. }
                if state.masked_only == Some(round)
                    || state.secagg.as_ref().is_some_and(|p| p.round() == round) =>
            {
                err(format!(
                    "round {round} is securely aggregated: its update leaves this silo only masked"
                ))
            }
            Request::FetchUpdate { round, offset, len } => match &state.update {
                Some((r, u)) if *r == round => {
                    let end = offset.saturating_add(len);
                    let encoded = state.encoded.as_ref().filter(|(r, _)| *r == round);
                    if end > u.len() as u64 {
                        err(format!(
                            "asked for values {offset}..{end} of an update of {}",
                            u.len()
                        ))
                    } else if let Some((_, e)) = encoded {
                        match e.chunk(offset as usize, len as usize) {
                            Some(c) => Response::CompressedChunk(c),
                            None => err(format!("asked for an empty chunk at value {offset}")),
                        }
                    } else {
                        Response::UpdateChunk {
                            values: u[offset as usize..end as usize].to_vec(),
                        }
                    }
                }
                _ => err(format!("no update for round {round} here")),
            },
            // Asked only of frozen bases: one held is pinned, so that models sent after it
            // cannot evict it from the cache.
            Request::Holds { model } => match state.model(&model) {
                Ok(p) => {
                    state.pinned = Some((model, p));
                    Response::Holds { held: true }
                }
                Err(_) => Response::Holds { held: false },
            },
            Request::Evaluate {
                model,
                spec,
                scaling,
                personalize,
                lora,
            } => match state
                .check_spec(&spec, &scaling)
                .and_then(|_| state.scored_model(&model, &spec, lora.as_ref()))
            {
                Err(e) => err(e),
                Ok(params) => {
                    // Off the mailbox, so heartbeats are answered while a large split is scored.
                    let (data, head) = (state.args.data.clone(), state.head.clone());
                    // A central hold-out has no training split to personalise on; a silo
                    // under its own DP-SGD does not fine-tune outside it.
                    let has_training = !data.train.labels.is_empty() && state.args.dp_sgd.is_none();
                    answer_in_background(myself, reply, "evaluation", move || {
                        let x = encode_rows(&data.schema, &data.holdout, &scaling);
                        let y = Array1::from(data.holdout.labels.clone());
                        let mlp = Mlp::new(&spec);
                        let mut metrics = evaluate(&mlp, &params, &x, &y);
                        if let Some(p) = personalize.filter(|_| has_training) {
                            let xt = encode_rows(&data.schema, &data.train, &scaling);
                            let yt = Array1::from(data.train.labels.clone());
                            let sgd = Sgd {
                                epochs: p.epochs,
                                batch_size: p.batch_size as usize,
                                learning_rate: p.learning_rate,
                                prox_mu: 0.0,
                                train_from: 0,
                                seed: p.seed,
                            };
                            let mut h = head.lock().unwrap_or_else(|p| p.into_inner());
                            let mine = h.personalise(model.digest, &spec, &params, &xt, &yt, sgd);
                            drop(h);
                            let p = evaluate(&mlp, &mine, &x, &y);
                            metrics.personalized = Some(PersonalizedMetrics {
                                loss: p.loss,
                                accuracy: p.accuracy,
                                auc: p.auc,
                            });
                        }
                        Response::Evaluated(metrics)
                    });
                    return Ok(());
                }
            },
            Request::Train {
                round,
                base,
                spec,
                plan,
                scaling,
            } => {
                if let Some(r) = state.busy {
                    err(format!("busy training round {r}"))
                } else if state.args.data.train.labels.is_empty() {
                    err("this node is a central hold-out (--evaluate-only): it scores candidates and never trains")
                } else {
                    let resolved = state.check_spec(&spec, &scaling).and_then(|_| {
                        match &plan.lora {
                            Some(_) if state.args.external.is_some() || state.args.dp_sgd.is_some() => Err(
                                "LoRA rounds train with the built-in trainer: this silo runs an external trainer or its own DP-SGD".to_string(),
                            ),
                            Some(l) => state
                                .lora_parts(&base, &spec, l)
                                .map(|(layout, frozen, theta)| (theta, Some((layout, frozen)))),
                            None => state.model(&base).and_then(|p| {
                                if p.len() != spec.layout().len {
                                    Err("base model size does not fit its spec".to_string())
                                } else {
                                    Ok((p, None))
                                }
                            }),
                        }
                    });
                    match resolved {
                        Err(e) => err(e),
                        Ok((params, lora)) => match state.charge_dp_sgd(round, &plan) {
                            Err(e) => err(e),
                            Ok(()) => {
                                state.busy = Some(round);
                                // The round trains from this model: it was committed, so the
                                // head personalised on it is this silo's from now on.
                                state
                                    .head
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .adopt(base.digest);
                                let (data, name, delay) = (
                                    state.args.data.clone(),
                                    state.args.name.clone(),
                                    state.args.train_delay,
                                );
                                let method = match (lora, &state.args.external) {
                                    (Some((layout, frozen)), _) => Method::Lora { layout, frozen },
                                    (None, Some(ext)) => Method::External(ext.clone()),
                                    (None, None) => Method::BuiltIn {
                                        attack: state
                                            .args
                                            .attack
                                            .filter(|(_, from)| round >= *from)
                                            .map(|(a, _)| a),
                                        dp: state.args.dp_sgd.as_ref().map(|c| c.dp),
                                    },
                                };
                                // Under secure aggregation nothing about the update itself
                                // leaves in the clear: not even its norm.
                                let masked =
                                    state.secagg.as_ref().is_some_and(|p| p.round() == round);
                                if masked {
                                    state.masked_only = Some(round);
                                }
                                // Masked updates travel as ring values: never compressed.
                                state.compress_next =
                                    (!masked && plan.compression != Compression::None).then(|| {
                                        (round, plan.compression, plan.seed ^ name_seed(&name))
                                    });
                                tokio::spawn(async move {
                                    if !delay.is_zero() {
                                        tokio::time::sleep(delay).await;
                                    }
                                    let job = tokio::task::spawn_blocking(move || {
                                        train_job(
                                            &data, &name, round, base, &params, &spec, &plan,
                                            &scaling, method,
                                        )
                                    })
                                    .await;
                                    let (update, response, spent) = match job {
                                        Ok(Ok((u, mut report, spent))) => {
                                            if masked {
                                                report.update_norm = 0.0;
                                                report.update_digest = Digest::of_f32(&[]);
                                            }
                                            (Some((round, u)), Response::Trained(report), spent)
                                        }
                                        Ok(Err(e)) => {
                                            tracing::warn!(round, "training refused: {e}");
                                            (None, err(e), None)
                                        }
                                        Err(e) => {
                                            (None, err(format!("training failed: {e}")), None)
                                        }
                                    };
                                    let _ = myself.cast(TrainerMessage::JobDone {
                                        update,
                                        response,
                                        reply,
                                        spent,
                                        training: true,
                                    });
                                });
                                return Ok(());
                            }
                        },
                    }
                }
            }
            Request::LocalBaseline {
                initial,
                spec,
                plan,
                rounds,
            } => {
                match state.model(&initial).and_then(|p| {
                    let n = state.args.data.schema.numeric_count();
                    state
                        .check_spec(
                            &spec,
                            &Scaling {
                                mean: vec![0.0; n],
                                std: vec![1.0; n],
                            },
                        )
                        .map(|_| p)
                }) {
                    Err(e) => err(e),
                    Ok(params) => {
                        let (data, name) = (state.args.data.clone(), state.args.name.clone());
                        answer_in_background(myself, reply, "local baseline", move || {
                            local_baseline(&data, &name, &params, &spec, &plan, rounds)
                        });
                        return Ok(());
                    }
                }
            }
        };
        if matches!(response, Response::Error { .. }) {
            state.args.metrics.refused(kind);
        }
        reply_with(reply, response);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedsilo::data::Schema;
    use fedsilo::model::initial_params;
    use fedsilo::protocol::call;
    use std::io::Write;

    async fn trainer() -> ActorRef<TrainerMessage> {
        trainer_with(None).await
    }

    /// One epoch of plain SGD.
    fn plan() -> TrainPlan {
        TrainPlan {
            epochs: 1,
            batch_size: 8,
            learning_rate: 0.1,
            seed: 1,
            noise: None,
            prox_mu: 0.0,
            compression: Compression::None,
            lora: None,
        }
    }

    /// A logistic model over the test data's one feature, and its reference.
    fn tiny_model() -> (ModelSpec, Vec<f32>, ModelRef) {
        let spec = ModelSpec {
            inputs: 1,
            hidden: vec![],
        };
        let p = initial_params(&spec, 1);
        let model = ModelRef {
            version: 0,
            digest: Digest::of_f32(&p),
        };
        (spec, p, model)
    }

    async fn trainer_with(credentials: Option<NodeCredentials>) -> ActorRef<TrainerMessage> {
        let schema = Schema::from_toml_str(
            "[target]\ncolumn = \"y\"\npositive = \"1\"\nnegative = [\"0\"]\n[[feature]]\ncolumn = \"a\"\nkind = \"numeric\"\n",
            "s",
        )
        .unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "a,y").unwrap();
        for i in 0..40 {
            writeln!(f, "{i},{}", i % 2).unwrap();
        }
        let data = Dataset::load(f.path(), &schema, 0.25, 1).unwrap();
        let args = TrainerArgs {
            name: "t".into(),
            data: Arc::new(data),
            train_delay: Duration::ZERO,
            attack: None,
            dp_sgd: None,
            credentials,
            exit_after_sharing: None,
            external: None,
            metrics: Arc::default(),
        };
        Actor::spawn(None, TrainerActor, args).await.unwrap().0
    }

    async fn raw(t: &ActorRef<TrainerMessage>, frame: Vec<u8>) -> Response {
        let bytes = t
            .call(
                |reply| TrainerMessage::Rpc { frame, reply },
                Some(Duration::from_secs(5)),
            )
            .await
            .unwrap()
            .unwrap();
        decode(&bytes, "t").unwrap()
    }

    /// Under secure aggregation a round is keyed once and its update never leaves in the
    /// clear, not even after the next round's keys: otherwise the coordinator could sum one
    /// update under two sets of masks and subtract, or simply ask for it.
    #[tokio::test]
    async fn a_securely_aggregated_update_is_keyed_once_and_never_fetched_in_the_clear() {
        fedsilo::tls::install_crypto_provider();
        let (ca, _) = fedsilo::certs::CertificateAuthority::generate("c", 30).unwrap();
        let id = fedsilo::identity::Identity {
            name: "t".into(),
            role: fedsilo::identity::Role::Silo,
            region: "eu".into(),
        };
        let t = trainer_with(Some(ca.credentials(&id, 30).unwrap())).await;
        let ask = |req: Request| {
            let t = t.clone();
            async move { call(&t, &req, Duration::from_secs(5), "t").await }
        };
        assert!(ask(Request::SecAggAdvertise { round: 2 }).await.is_ok());
        for again in [2, 1] {
            let e = ask(Request::SecAggAdvertise { round: again })
                .await
                .unwrap_err();
            assert!(e.to_string().contains("keyed once"), "{e}");
        }
        let (spec, p, model) = tiny_model();
        ask(Request::PutModel {
            model,
            offset: 0,
            total: p.len() as u64,
            values: p.clone(),
        })
        .await
        .unwrap();
        let Response::Trained(r) = ask(Request::Train {
            round: 2,
            base: model,
            spec,
            plan: plan(),
            scaling: Scaling {
                mean: vec![0.0],
                std: vec![1.0],
            },
        })
        .await
        .unwrap() else {
            panic!()
        };
        // Nothing about the update itself is reported.
        assert_eq!((r.update_norm, r.update_digest), (0.0, Digest::of_f32(&[])));
        let fetch = Request::FetchUpdate {
            round: 2,
            offset: 0,
            len: 2,
        };
        for _ in 0..2 {
            let e = ask(fetch.clone()).await.unwrap_err();
            assert!(e.to_string().contains("only masked"), "{e}");
            // The next round's keys do not release it.
            ask(Request::SecAggAdvertise { round: 3 }).await.ok();
        }
    }

    #[tokio::test]
    async fn malformed_and_incompatible_frames_get_an_error_and_the_actor_keeps_serving() {
        let t = trainer().await;
        let Response::Error { message } = raw(&t, b"garbage".to_vec()).await else {
            panic!()
        };
        assert!(message.contains("not a fedsilo frame"), "{message}");
        let mut f = encode(&Request::Ping { seq: 1 });
        f[4] = 7;
        let Response::Error { message } = raw(&t, f).await else {
            panic!()
        };
        assert!(message.contains("version 7"), "{message}");
        let mut f = encode(&Request::Ping { seq: 1 });
        f.truncate(f.len() - 1);
        f.push(0xff);
        assert!(matches!(
            raw(&t, f).await,
            Response::Error { .. } | Response::Pong { .. }
        ));
        assert_eq!(
            raw(&t, encode(&Request::Ping { seq: 9 })).await,
            Response::Pong { seq: 9 }
        );
    }

    #[tokio::test]
    async fn models_are_checked_chunk_by_chunk_and_against_their_digest() {
        let t = trainer().await;
        let (spec, p, model) = tiny_model();
        let put = |offset: u64, values: Vec<f32>, model: ModelRef| Request::PutModel {
            model,
            offset,
            total: p.len() as u64,
            values,
        };
        // A chunk that does not start at 0 without a first chunk.
        let e = call(&t, &put(1, vec![0.0], model), Duration::from_secs(5), "t")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("never came"), "{e}");
        // Wrong digest.
        let wrong = ModelRef {
            version: 0,
            digest: Digest::of_f32(&[1.0]),
        };
        let e = call(&t, &put(0, p.clone(), wrong), Duration::from_secs(5), "t")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("does not match its digest"), "{e}");
        // Training from a model never received.
        let scaling = Scaling {
            mean: vec![0.0],
            std: vec![1.0],
        };
        let plan = plan();
        let train = Request::Train {
            round: 1,
            base: model,
            spec: spec.clone(),
            plan,
            scaling: scaling.clone(),
        };
        let e = call(&t, &train, Duration::from_secs(5), "t")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("not received"), "{e}");
        // The right model, then training works and the update can be fetched.
        call(&t, &put(0, p.clone(), model), Duration::from_secs(5), "t")
            .await
            .unwrap();
        let Response::Trained(r) = call(&t, &train, Duration::from_secs(5), "t").await.unwrap()
        else {
            panic!()
        };
        assert_eq!(r.examples, 30);
        let Response::UpdateChunk { values } = call(
            &t,
            &Request::FetchUpdate {
                round: 1,
                offset: 0,
                len: 2,
            },
            Duration::from_secs(5),
            "t",
        )
        .await
        .unwrap() else {
            panic!()
        };
        assert_eq!(Digest::of_f32(&values), r.update_digest);
        // A spec that does not fit the silo's schema.
        let bad = Request::Evaluate {
            model,
            spec: ModelSpec {
                inputs: 5,
                hidden: vec![],
            },
            scaling,
            personalize: None,
            lora: None,
        };
        let e = call(&t, &bad, Duration::from_secs(5), "t")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("inputs"), "{e}");
    }
}
