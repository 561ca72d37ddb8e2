//! The Trainer's state: what it was started with, the models it holds, the update it trained
//! and how it will be served, and the silo's own DP-SGD book.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use fedsilo::compression::top_k::ErrorFeedback;
use fedsilo::compression::{compress, Compression, Encoded};
use fedsilo::kernels::clip::l2_norm;
use fedsilo::metrics::SiloMetrics;
use fedsilo::model::Digest;
use fedsilo::privacy::budget::PrivacyBook;
use fedsilo::protocol::{encode, ModelRef, Response, TrainPlan};
use fedsilo::secagg::participant::Participant;
use fedsilo::tls::NodeCredentials;
use ractor::RpcReplyPort;
use rand::SeedableRng;

use super::files::{AwaitingFiles, FileIntake};
use super::refusal::Refusal;
use crate::data::Dataset;
use crate::external::ExternalTrainer;
use crate::model_trainers::DescribedTrainer;
use crate::train::dp_sgd::{schedule, DpSgd};
use crate::train::personal::PersonalHead;

/// Start-up arguments of the trainer.
#[derive(Debug)]
pub struct TrainerArgs {
    /// This silo's name (from its certificate).
    pub name: String,
    /// Its region (from its certificate).
    pub region: String,
    /// Its data, and for a described model its trainer.
    pub data: LocalData,
    /// Fault injection (tests only; empty without the `fault-injection` feature).
    pub faults: crate::faults::Faults,
    /// Record-level DP-SGD, on the silo's own terms.
    pub dp_sgd: Option<SiloDpSgd>,
    /// The silo's certificate and key: secure-aggregation keys are signed with it, and peers'
    /// are checked against its consortium root (`None`: secure aggregation is refused).
    pub credentials: Option<NodeCredentials>,
    /// Train with this external program instead of the built-in trainer.
    pub external: Option<ExternalTrainer>,
    /// The node's metrics.
    pub metrics: Arc<SiloMetrics>,
    /// Where deployed versions are kept (`None`: this silo refuses deployments).
    pub deploy: Option<fedsilo::deploy::DeployStore>,
    /// What the silo is doing ([`crate::status`]).
    pub board: Arc<crate::status::StatusBoard>,
}

/// What a silo trains on: tabular rows under a schema (the built-in MLP, LoRA on it, or an
/// external program), or a described model's trainer, which holds its own data.
#[derive(Debug, Clone)]
pub enum LocalData {
    /// Rows under the federation's schema.
    Tabular(Arc<Dataset>),
    /// A model with a manifest, and its trainer.
    Described(Arc<dyn DescribedTrainer>),
    /// A model with a manifest whose files are still to arrive from the coordinator.
    Awaiting(Arc<AwaitingFiles>),
}

impl LocalData {
    /// Training rows.
    pub fn train_rows(&self) -> usize {
        match self {
            LocalData::Tabular(d) => d.train.len(),
            LocalData::Described(t) => t.train_rows(),
            LocalData::Awaiting(a) => a.rows,
        }
    }

    /// What this silo trains, for refusals: `the schema's MLP` or the manifest.
    pub fn describe(&self) -> String {
        match self {
            LocalData::Tabular(_) => "tabular data under a schema (the built-in MLP)".into(),
            LocalData::Described(t) => format!(
                "the `{}` model of manifest {}",
                t.manifest().architecture,
                t.manifest().digest.short()
            ),
            LocalData::Awaiting(a) => format!(
                "the `{}` model of manifest {} (its files not all received yet)",
                a.manifest.architecture,
                a.manifest.digest.short()
            ),
        }
    }
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

/// Its state.
#[derive(Debug)]
pub struct TrainerState {
    pub(super) args: TrainerArgs,
    pub(super) staging: Option<(ModelRef, u64, Vec<f32>)>,
    pub(super) models: VecDeque<(ModelRef, Arc<Vec<f32>>)>,
    pub(super) update: Option<(u64, Arc<Vec<f32>>)>,
    pub(super) busy: Option<u64>,
    /// The DP-SGD spend of this silo's data (with `dp_sgd`).
    pub(super) book: Option<PrivacyBook>,
    /// This round's secure-aggregation keys, shares and masked update.
    pub(super) secagg: Option<Participant>,
    /// The last round keys were advertised for: a round is never keyed twice, or the
    /// coordinator could sum one update under two sets of masks and subtract.
    pub(super) last_keyed: Option<u64>,
    /// A round trained under secure aggregation: its update leaves this silo only masked.
    pub(super) masked_only: Option<u64>,
    /// The round whose update is to be compressed once trained, how, and the rounding seed.
    pub(super) compress_next: Option<(u64, Compression, u64)>,
    /// The compressed update of a round, served in chunks by `FetchUpdate`.
    pub(super) encoded: Option<(u64, Encoded)>,
    /// What top-k compression has not sent yet (kept across rounds in memory).
    pub(super) feedback: ErrorFeedback,
    /// This silo's own head (personalisation), shared with the scoring jobs.
    pub(super) head: Arc<std::sync::Mutex<PersonalHead>>,
    /// The models the coordinator last asked about with `Holds` (a LoRA round's frozen base,
    /// then its base), kept outside the model cache: each use of a frozen base is preceded
    /// by a `Holds` of it, so the [`PINNED`](super::models::PINNED) most recent always include it.
    pub(super) pinned: std::collections::VecDeque<(ModelRef, Arc<Vec<f32>>)>,
    /// A described model's files arriving from the coordinator.
    pub(super) intake: Option<FileIntake>,
    /// The version deployed at this silo (reported with every heartbeat).
    pub(super) deployed: Option<ModelRef>,
    /// The deployment order it carried out last (an older note is refused).
    pub(super) deployment: Option<u64>,
}

/// The version deployed in `store` when the silo starts; one that does not check out (changed
/// on disk) is reported and counts as none, so the coordinator deploys it again.
fn deployed_at_start(store: &fedsilo::deploy::DeployStore) -> Option<(ModelRef, u64)> {
    match store.current() {
        Ok(Some(d)) => {
            tracing::info!(
                version = d.note.version,
                digest = %d.note.digest.short(),
                "deployed v{}",
                d.note.version
            );
            Some((
                ModelRef {
                    version: d.note.version,
                    digest: d.note.digest,
                },
                d.note.deployment,
            ))
        }
        Ok(None) => None,
        Err(e) => {
            tracing::warn!(
                "the deployed model in {} cannot be used, waiting for the coordinator to deploy again: {e}",
                store.dir().display()
            );
            None
        }
    }
}

/// Answers `reply` with `r`, encoded.
pub(super) fn reply_with(reply: RpcReplyPort<Vec<u8>>, r: Response) {
    let _ = reply.send(encode(&r));
}

/// An error answer.
pub(super) fn err(message: impl std::fmt::Display) -> Response {
    Response::Error {
        message: message.to_string(),
    }
}

impl TrainerState {
    /// A trainer that holds nothing yet (its DP-SGD book opened, if it keeps one).
    pub(super) fn new(args: TrainerArgs) -> Result<Self, fedsilo::privacy::budget::BookError> {
        let at_start = args.deploy.as_ref().and_then(deployed_at_start);
        let deployed = at_start.map(|(m, _)| m);
        if let Some(m) = deployed {
            args.metrics.deployed(m.version);
            args.board
                .report(crate::status::Change::Deployed(m.version, m.digest.hex()));
        }
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
            pinned: Default::default(),
            deployed,
            deployment: at_start.map(|(_, order)| order),
            intake: match &args.data {
                LocalData::Awaiting(a) => Some(FileIntake::new(&a.model_dir, &a.absent)),
                _ => None,
            },
            book: match &args.dp_sgd {
                Some(cfg) => Some(PrivacyBook::open(&cfg.ledger)?),
                None => None,
            },
            args,
        })
    }

    /// Compresses round `round`'s update as the plan asks and keeps it to serve; the report in
    /// `response` then describes the update the coordinator will decode (its digest and norm).
    /// Returns that decoded update.
    pub(super) fn compress(
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

    /// How round `round`'s update will leave, whatever trained it: under secure aggregation
    /// only masked — nothing about it in the clear, not even its norm, and never compressed
    /// (masked updates travel as ring values); otherwise compressed as the plan asks. Returns
    /// whether it is masked.
    pub(super) fn round_output(&mut self, round: u64, plan: &TrainPlan) -> bool {
        let masked = self.secagg.as_ref().is_some_and(|p| p.round() == round);
        if masked {
            self.masked_only = Some(round);
        }
        let seed = plan.seed ^ super::jobs::name_seed(&self.args.name);
        self.compress_next = (!masked && plan.compression != Compression::None).then_some((
            round,
            plan.compression,
            seed,
        ));
        masked
    }

    /// With DP-SGD: refuses a round that would take this silo past its own budget, else
    /// records the round's spend (synced) before any training starts.
    pub(super) fn charge_dp_sgd(&mut self, round: u64, plan: &TrainPlan) -> Result<(), Refusal> {
        let (Some(cfg), Some(book)) = (&self.args.dp_sgd, &mut self.book) else {
            return Ok(());
        };
        let n = self.args.data.train_rows();
        let (q, steps) = schedule(n, plan.batch_size as usize, plan.epochs);
        let z = cfg.dp.noise_multiplier as f64;
        let name = &self.args.name;
        if let Some(budget) = cfg.epsilon_budget {
            let after = book.after(name, q, z, steps, cfg.delta);
            if after > budget {
                return Err(Refusal::Budget {
                    round,
                    steps,
                    q,
                    z,
                    spent: book.spent(name, cfg.delta),
                    after,
                    budget,
                    delta: cfg.delta,
                });
            }
        }
        Ok(book.record(round, "dp-sgd", q, z, steps, std::slice::from_ref(name))?)
    }
}
