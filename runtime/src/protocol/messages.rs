//! The messages of the coordinator ↔ silo conversation. Every request gets exactly one
//! response; [`Response::Error`] carries a silo's refusal with its reason.

use serde::{Deserialize, Serialize};

use crate::compression::{CompressedChunk, Compression};
pub use crate::model::eval::{EvalMetrics, PersonalizedMetrics};
use crate::model::lora::LoraPlan;
pub use crate::model::scaling::Scaling;
use crate::model::{Architecture, Digest};
pub use crate::privacy::noise::UpdateNoise;
use crate::secagg::keys::Advertisement;
use crate::secagg::messages::{RelayedShares, RevealedShare, RingSpec, SealedShares};

/// A model the silo holds or is asked to use: its version and content digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelRef {
    /// Version number (0 = the initial model; candidates carry the version they would become).
    pub version: u64,
    /// SHA-256 of the parameters (little-endian f32 bytes).
    pub digest: Digest,
}

/// The most passes over its training rows a silo makes for one request — a round's epochs, a
/// local baseline's rounds × epochs, a personalisation's epochs — whoever asks: a coordinator
/// (or a careless federation file) cannot keep a silo's CPU busy without end. The federation
/// file is checked against it at load.
pub const MAX_PASSES: u64 = 10_000;

/// Local training hyper-parameters for one round.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainPlan {
    /// Passes over the silo's training split.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// SGD step size.
    pub learning_rate: f32,
    /// Seed for shuffling (the silo mixes in its own name and the round).
    pub seed: u64,
    /// Distributed silo-level DP: clip the update and add noise before it leaves the silo.
    pub noise: Option<UpdateNoise>,
    /// FedProx μ: the proximal term μ/2·‖w − w_base‖² added to the local loss (0: plain SGD).
    pub prox_mu: f32,
    /// How the update travels (compressed or not).
    pub compression: Compression,
    /// LoRA: the model sent with the round is the adapters; train only them, on top of the
    /// frozen base.
    pub lora: Option<LoraTrain>,
}

/// The adapters of a LoRA federation, and the frozen base they sit on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraTrain {
    /// Rank, layers and scale.
    pub plan: LoraPlan,
    /// The frozen base model (sent once; the silo keeps it).
    pub frozen: ModelRef,
}

/// Per-feature sufficient statistics of one silo's training split. No rows, only sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureStats {
    /// Digest of the schema the silo encoded with; must equal the coordinator's.
    pub schema_digest: Digest,
    /// The silo's software version (`MAJOR.MINOR.PATCH`), for the policy's version rule.
    pub software_version: String,
    /// Rows in the training split.
    pub rows: u64,
    /// Non-missing values per numeric feature.
    pub count: Vec<u64>,
    /// Sum per numeric feature.
    pub sum: Vec<f64>,
    /// Sum of squares per numeric feature.
    pub sum_sq: Vec<f64>,
    /// Why this silo cannot take part with its data (e.g. a training split of one class),
    /// said at the schema check; `None` when it can.
    pub unusable: Option<String>,
    /// Files its manifest pins that it does not hold, by SHA-256 (hex): the coordinator sends
    /// them with `PutFile`, then asks again.
    #[serde(default)]
    pub missing_files: Vec<String>,
    /// Its files have all arrived and its model is being loaded: ask again.
    #[serde(default)]
    pub loading: bool,
    /// The file it was receiving when a transfer stopped, and the bytes of it it holds: the
    /// coordinator goes on from there.
    #[serde(default)]
    pub partial: Option<(String, u64)>,
}

/// What a silo reports after local training. The update itself is fetched in chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    /// The round trained for.
    pub round: u64,
    /// The model trained from.
    pub base: ModelRef,
    /// Examples trained on (the aggregation weight).
    pub examples: u64,
    /// Mean training loss over the last epoch.
    pub train_loss: f64,
    /// Wall time of local training, seconds.
    pub train_seconds: f64,
    /// Number of values in the update (= model parameters).
    pub update_len: u64,
    /// SHA-256 of the update's bytes, to check the chunks against.
    pub update_digest: Digest,
    /// L2 norm of the update.
    pub update_norm: f64,
}

/// FedPer-style personalisation asked of a silo when it scores a model: fine-tune its own head
/// (the last dense layer) on its training split, the body frozen, and score that model too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Personalize {
    /// Passes over the training split.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// Step size.
    pub learning_rate: f32,
    /// Shuffling seed.
    pub seed: u64,
}

/// A request from the coordinator to a silo's trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness probe; answered with [`Response::Pong`] even while training.
    Ping {
        /// Echoed back.
        seq: u64,
    },
    /// Asks for [`FeatureStats`] of the training split.
    FeatureStats,
    /// One chunk of a model the silo should hold. Chunks arrive in order, `offset` counting
    /// values; the model is usable once `offset + values.len() == total` and its digest matches.
    PutModel {
        /// The model being transferred.
        model: ModelRef,
        /// Index of the first value of this chunk.
        offset: u64,
        /// Total number of values.
        total: u64,
        /// The values.
        values: Vec<f32>,
    },
    /// Train from a model previously sent with `PutModel`.
    Train {
        /// Round number.
        round: u64,
        /// The base model.
        base: ModelRef,
        /// Its architecture.
        spec: Architecture,
        /// Hyper-parameters.
        plan: TrainPlan,
        /// Agreed feature scaling.
        scaling: Scaling,
    },
    /// A chunk of the update the silo computed in `round`.
    FetchUpdate {
        /// Round number.
        round: u64,
        /// First value.
        offset: u64,
        /// Number of values.
        len: u64,
    },
    /// Score a model previously sent with `PutModel` on the held-out split.
    Evaluate {
        /// The model.
        model: ModelRef,
        /// Its architecture.
        spec: Architecture,
        /// Agreed feature scaling.
        scaling: Scaling,
        /// Also score the silo's personalised model.
        personalize: Option<Personalize>,
        /// LoRA: `model` is the adapters; score them merged into the frozen base.
        lora: Option<LoraTrain>,
        /// The policy's `[business]`: also capture, lift, precision and recall on the same
        /// rows (aggregates only).
        business: Option<crate::model::business::BusinessSpec>,
    },
    /// Whether the silo holds `model` (so that a frozen base is sent once, not every round).
    Holds {
        /// The model.
        model: ModelRef,
    },
    /// Train a model on this silo's data alone (its own scaling), from `initial`, for
    /// `rounds` × `plan.epochs` epochs, and report its held-out metrics: the "would we have been
    /// better off alone?" comparison. Nothing but the metrics leaves the silo.
    LocalBaseline {
        /// Starting model (sent with `PutModel`).
        initial: ModelRef,
        /// Architecture.
        spec: Architecture,
        /// Hyper-parameters per round.
        plan: TrainPlan,
        /// Number of rounds to match.
        rounds: u32,
        /// The policy's `[business]`, as for `Evaluate`.
        business: Option<crate::model::business::BusinessSpec>,
    },
    /// Secure aggregation, step 1: make this round's key pairs and advertise them, signed.
    SecAggAdvertise {
        /// Round number.
        round: u64,
    },
    /// Step 2: the advertisements of every silo that answered step 1, as relayed. The silo
    /// checks each against the consortium CA and escrows its secrets with the peers.
    SecAggShare {
        /// Round number.
        round: u64,
        /// Survivors needed to unmask.
        threshold: u32,
        /// The relayed advertisements (the silo's own included).
        advertisements: Vec<Advertisement>,
    },
    /// Step 3: the shares peers escrowed with this silo, and the ring to sum in.
    SecAggDeliver {
        /// Round number.
        round: u64,
        /// The ring.
        ring: RingSpec,
        /// Encrypted shares, one per peer that escrowed.
        shares: Vec<RelayedShares>,
    },
    /// Step 4 (after `Train`): a chunk of the masked update, the update weighed by `weight`.
    FetchMasked {
        /// Round number.
        round: u64,
        /// The silo's aggregation weight, in (0, 1].
        weight: f64,
        /// First value.
        offset: u64,
        /// Number of values.
        len: u64,
    },
    /// Step 5: reveal the shares that unmask the sum of `survivors`' updates.
    SecAggUnmask {
        /// Round number.
        round: u64,
        /// Silos whose masked updates are in the sum: their self-mask shares are revealed.
        survivors: Vec<String>,
        /// Silos that escrowed but sent nothing: their mask-key shares are revealed.
        dropped: Vec<String>,
    },
    /// One chunk of a file the silo's manifest pins and its schema check said it lacks
    /// ([`FeatureStats::missing_files`]). Chunks arrive in order, `offset` counting bytes; the
    /// silo keeps the file once whole and only if its SHA-256 is `sha256`, a digest its own
    /// manifest pins (see [`crate::model::files`]).
    PutFile {
        /// The file's SHA-256, hex, as the manifest pins it.
        sha256: String,
        /// Index of the first byte of this chunk.
        offset: u64,
        /// The file's size in bytes.
        total: u64,
        /// The bytes.
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Put a committed version to use at the silo: keep it on disk, score with it
    /// ([`crate::deploy`]). The silo checks the note's signature and the values' digest; when it
    /// holds neither the values in memory nor on disk it answers `Holds { held: false }`, and
    /// the coordinator sends them with `PutModel` and asks again.
    Deploy {
        /// The coordinator's signed note: version, digest, architecture, scaling.
        note: crate::deploy::SignedNote,
    },
    /// The coordinator leaves this silo out of every round, and says why (another schema, a
    /// file it cannot send, …): the silo shows it in its log and `silo-node status`. Answered
    /// with [`Response::Noted`].
    Blocked {
        /// The coordinator's reason.
        reason: String,
    },
}

/// A silo's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to `Ping`.
    Pong {
        /// The request's sequence number.
        seq: u64,
        /// The version deployed at the silo, if any.
        deployed: Option<ModelRef>,
    },
    /// Answer to `FeatureStats`.
    FeatureStats(FeatureStats),
    /// Answer to `PutModel`: values received so far for that model.
    ModelChunkStored {
        /// Values received so far.
        received: u64,
    },
    /// Answer to `Train`.
    Trained(TrainReport),
    /// Answer to `FetchUpdate`.
    UpdateChunk {
        /// The values.
        values: Vec<f32>,
    },
    /// Answer to `FetchUpdate` when the plan compresses updates: the chunk, compressed.
    CompressedChunk(CompressedChunk),
    /// Answer to `Evaluate` and `LocalBaseline`.
    Evaluated(EvalMetrics),
    /// Answer to `SecAggAdvertise`.
    SecAggAdvertised(Advertisement),
    /// Answer to `SecAggShare`: the silo's shares, one per peer, encrypted to it.
    SecAggShares(Vec<SealedShares>),
    /// Answer to `SecAggDeliver`.
    SecAggReady,
    /// Answer to `FetchMasked`: ring values packed in ⌈bits/8⌉ little-endian bytes each.
    MaskedChunk {
        /// The packed values (encoded as one byte string, not value by value).
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    },
    /// Answer to `SecAggUnmask`.
    SecAggRevealed(Vec<RevealedShare>),
    /// Answer to `Holds`.
    Holds {
        /// Whether the silo holds the model.
        held: bool,
    },
    /// Answer to `PutFile`: bytes received so far of that file.
    FileChunkStored {
        /// Bytes received so far.
        received: u64,
    },
    /// Answer to `Blocked`.
    Noted,
    /// Answer to `Deploy`: the version is on the silo's disk and deployed.
    Deployed {
        /// The version.
        model: ModelRef,
    },
    /// The request was refused or failed; the message says why.
    Error {
        /// Human-readable reason.
        message: String,
    },
}

impl Request {
    /// A short name of the variant, for metrics and messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping { .. } => "ping",
            Request::FeatureStats => "feature_stats",
            Request::PutModel { .. } => "put_model",
            Request::Train { .. } => "train",
            Request::FetchUpdate { .. } => "fetch_update",
            Request::Evaluate { .. } => "evaluate",
            Request::LocalBaseline { .. } => "local_baseline",
            Request::SecAggAdvertise { .. } => "secagg_advertise",
            Request::SecAggShare { .. } => "secagg_share",
            Request::SecAggDeliver { .. } => "secagg_deliver",
            Request::FetchMasked { .. } => "fetch_masked",
            Request::SecAggUnmask { .. } => "secagg_unmask",
            Request::Holds { .. } => "holds",
            Request::PutFile { .. } => "put_file",
            Request::Deploy { .. } => "deploy",
            Request::Blocked { .. } => "blocked",
        }
    }
}

impl Response {
    /// A short name of the variant, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Response::Pong { .. } => "Pong",
            Response::FeatureStats(_) => "FeatureStats",
            Response::ModelChunkStored { .. } => "ModelChunkStored",
            Response::Trained(_) => "Trained",
            Response::UpdateChunk { .. } => "UpdateChunk",
            Response::CompressedChunk(_) => "CompressedChunk",
            Response::Evaluated(_) => "Evaluated",
            Response::SecAggAdvertised(_) => "SecAggAdvertised",
            Response::SecAggShares(_) => "SecAggShares",
            Response::SecAggReady => "SecAggReady",
            Response::MaskedChunk { .. } => "MaskedChunk",
            Response::SecAggRevealed(_) => "SecAggRevealed",
            Response::Holds { .. } => "Holds",
            Response::FileChunkStored { .. } => "FileChunkStored",
            Response::Deployed { .. } => "Deployed",
            Response::Noted => "Noted",
            Response::Error { .. } => "Error",
        }
    }
}
