//! The coordinator's configuration file (`federation.toml`).
//!
//! ```toml
//! [federation]
//! name = "churn"
//! rounds = 20                  # rounds to run (abandoned ones count)
//! policy = "policy.toml"       # participation rules (see fedsilo-policies)
//! state_dir = "state"          # checkpoints, events.jsonl, rounds.jsonl
//! wait_for_silos_secs = 300    # give up if no round can start for this long
//! compare_local = true         # at the end, ask each silo for a local-only baseline
//! pooled_reference = "pooled.safetensors"  # optional, with compare_local: also score this
//!                              # model (fedsilo-pretrain --pooled) at every silo
//! serve = false                # true: keep serving and take training runs as jobs
//!
//! [schedule]                    # optional, with serve: runs submitted on a schedule
//! cron = "0 2 * * *"           # or every_secs = 86400; cron is UTC
//! rounds = 20                  # each scheduled run's size
//!
//! [network]
//! listen = "127.0.0.1:7443"
//! kit = "certs/coordinator"    # ca.pem, cert.pem, key.pem
//! handshake_timeout_secs = 10
//! heartbeat_interval_secs = 1
//! heartbeat_timeout_secs = 5   # silent this long → unhealthy, left out of rounds
//! chunk_values = 1048576       # f32 values per control-plane chunk
//! spill_above_mb = 32          # updates above this, together, go to <state_dir>/spill
//! connections_per_address = 128 # links held at once from one address (a silo holds two)
//! connections_total = 512
//! metrics_listen = "127.0.0.1:9464"   # optional: Prometheus metrics at GET /metrics
//! crl = "certs/crl.pem"        # optional: revoked certificates (fedsilo certs revoke)
//!
//! [model]
//! schema = "schema.toml"
//! hidden = [32]                # [] = logistic regression
//! seed = 7
//! initial = "pretrained.safetensors"   # optional: start from a pretrained model
//!
//! [plan]
//! epochs = 1
//! batch_size = 32
//! learning_rate = 0.05
//! prox_mu = 0.01               # optional: FedProx proximal term μ (default 0: plain SGD)
//! compression = "int8"         # optional: none | int8 | int4 | top-k:F (default none)
//! personalize_epochs = 2       # optional: each silo's own head, fine-tuned (default 0: off)
//!
//! [plan.lora]                  # optional: train and send only low-rank adapters
//! rank = 4
//! layers = [0]                 # dense layers adapted (0 = the first)
//! alpha = 8.0                  # optional: the adapters' scale is alpha / rank (default 1)
//!
//! [aggregation]                # optional; default kernel = "mean"
//! kernel = "trimmed-mean"
//! trim = 0.2
//!
//! [admin]                      # optional: the admin HTTP API (HTTPS, see docs/operations.md)
//! listen = "127.0.0.1:8443"
//! tokens = "admin-tokens.toml" # optional: bearer tokens (`fedsilo admin token add`)
//!
//! [[webhooks]]                 # optional, repeatable: see `fedsilo::webhooks`
//! url = "https://hooks.example.com/fedsilo"
//! secret_file = "webhook.secret"
//! ```
//!
//! Relative paths are resolved against the directory of the configuration file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedsilo_policies::duration;
use serde::Deserialize;

use crate::compression::Compression;
use crate::kernels::Aggregation;
use crate::model::lora::LoraPlan;
use crate::{Error, Result};

/// `[federation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationSection {
    /// Name, for logs and the CA.
    pub name: String,
    /// Rounds to run.
    pub rounds: u64,
    /// Policy file.
    pub policy: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// Give up when no round could start for this long.
    #[serde(default = "default_wait")]
    pub wait_for_silos_secs: f64,
    /// Run the local-only comparison at the end.
    #[serde(default)]
    pub compare_local: bool,
    /// A model trained on the union of the silos' training rows (`fedsilo-pretrain
    /// --pooled`), scored by every silo in the end-of-run comparison as the non-private
    /// reference — computable only where all the data is on one machine, as in the examples.
    #[serde(default)]
    pub pooled_reference: Option<PathBuf>,
    /// Keep serving between training runs ([`crate::runs`]): `rounds` is then the first run's
    /// size (0: none), and further runs are submitted through the admin API.
    #[serde(default)]
    pub serve: bool,
}

fn default_wait() -> f64 {
    300.0
}

/// `[network]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Listen address.
    pub listen: SocketAddr,
    /// The coordinator's certificate kit directory.
    pub kit: PathBuf,
    /// TLS handshake timeout.
    #[serde(default = "default_handshake")]
    pub handshake_timeout_secs: f64,
    /// Heartbeat period.
    #[serde(default = "default_hb_interval")]
    pub heartbeat_interval_secs: f64,
    /// Silence after which a silo is unhealthy.
    #[serde(default = "default_hb_timeout")]
    pub heartbeat_timeout_secs: f64,
    /// Values per transfer chunk.
    #[serde(default = "default_chunk")]
    pub chunk_values: usize,
    /// A round whose updates together would take more than this many MiB spills each update
    /// to `<state_dir>/spill` as it arrives, so the coordinator's memory stays bounded
    /// whatever the model size and number of silos (mean, trimmed mean and median only).
    #[serde(default = "default_spill_above")]
    pub spill_above_mb: f64,
    /// Links the listener holds at once from one address (each silo holds two: its cluster
    /// link and its bulk link); beyond, a connection is closed at once.
    #[serde(default = "default_per_address")]
    pub connections_per_address: usize,
    /// Links the listener holds at once in all.
    #[serde(default = "default_connections")]
    pub connections_total: usize,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, unauthenticated): a
    /// loopback address only; scrapers on other hosts use the admin API's `GET /metrics`.
    /// Default: not served.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The consortium CA's certificate revocation list (`crl.pem`, from `fedsilo certs
    /// revoke`): a certificate it names is refused at the handshake, and its open link closed
    /// when the file changes. Default: none.
    #[serde(default)]
    pub crl: Option<PathBuf>,
}

fn default_handshake() -> f64 {
    10.0
}
fn default_hb_interval() -> f64 {
    1.0
}
fn default_hb_timeout() -> f64 {
    5.0
}
fn default_per_address() -> usize {
    crate::cluster::node::DEFAULT_CONNECTIONS.per_peer
}
fn default_connections() -> usize {
    crate::cluster::node::DEFAULT_CONNECTIONS.total
}
fn default_spill_above() -> f64 {
    32.0
}
fn default_chunk() -> usize {
    crate::protocol::transfer::DEFAULT_CHUNK_VALUES
}

/// `[[members]]`: a member the federation expects (the roster). The consortium CA still
/// decides who may join; the roster says who should be there, so that an absent one is noticed.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemberSpec {
    /// Its node name (as in its certificate).
    pub name: String,
    /// Its region.
    pub region: String,
    /// `silo` (default) or `aggregator`.
    #[serde(default = "silo_role")]
    pub role: String,
}

fn silo_role() -> String {
    "silo".into()
}

/// `[admin]`: the admin HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    /// Where to serve it (HTTPS with the coordinator's certificate).
    pub listen: SocketAddr,
    /// The bearer tokens file; without it only operator certificates are accepted.
    #[serde(default)]
    pub tokens: Option<PathBuf>,
}

/// `[model]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// Schema file: the built-in MLP on tabular data (or `manifest`).
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// A model's manifest (`fedsilo-model` writes one): any architecture its silos' trainer
    /// knows, e.g. a pretrained text encoder with LoRA; needs `initial` (or `schema`).
    #[serde(default)]
    pub manifest: Option<PathBuf>,
    /// Hidden layer widths (the built-in MLP).
    #[serde(default)]
    pub hidden: Vec<usize>,
    /// Initialisation seed.
    #[serde(default)]
    pub seed: u64,
    /// A pretrained model to start from (safetensors, one F32 tensor per layer:
    /// `dense{i}.weight` `[in, out]`, `dense{i}.bias` `[out]`) instead of a random one; with
    /// `manifest`, the initial values of its trainable tensors (required).
    #[serde(default)]
    pub initial: Option<PathBuf>,
    /// With `manifest`: the directory holding the files it pins (the frozen base, the
    /// tokenizer), each checked at start; a silo that lacks one receives it from the
    /// coordinator, checked against its own manifest's digest.
    #[serde(default)]
    pub files: Option<PathBuf>,
}

/// The most epochs a round (or a personalisation) may ask of a silo.
pub const MAX_EPOCHS: u32 = 1000;

/// `[plan]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSection {
    /// Local epochs per round.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// SGD learning rate.
    pub learning_rate: f32,
    /// FedProx (Li et al. 2020): weight μ of the proximal term μ/2·‖w − w_global‖² each silo
    /// adds to its local loss, keeping local models near the global one on non-IID data.
    #[serde(default)]
    pub prox_mu: f32,
    /// How silos compress their updates: `none`, `int8`, `int4` or `top-k:F`.
    #[serde(default)]
    pub compression: Option<String>,
    /// Personalisation (FedPer-style): each silo fine-tunes its own head for this many epochs
    /// whenever it scores a model, and reports that model's figures too (0: off).
    #[serde(default)]
    pub personalize_epochs: u32,
    /// LoRA (`[plan.lora]`): train and send only low-rank adapters on the frozen base model.
    #[serde(default)]
    pub lora: Option<LoraPlan>,
}

impl PlanSection {
    /// The compression scheme (`none` when unset).
    pub fn compression(&self) -> Result<Compression, crate::compression::UnknownScheme> {
        self.compression
            .as_deref()
            .map_or(Ok(Compression::None), Compression::parse)
    }
}

/// The whole file. Invariant after [`FederationConfig::load`]: paths are absolute or relative
/// to the working directory (resolved against the file's directory), values validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// `[federation]`.
    pub federation: FederationSection,
    /// `[network]`.
    pub network: NetworkSection,
    /// `[model]`.
    pub model: ModelSection,
    /// `[plan]`.
    pub plan: PlanSection,
    /// `[aggregation]` (default: the weighted mean). See [`crate::kernels::Aggregation`].
    #[serde(default)]
    pub aggregation: Aggregation,
    /// `[admin]`: the admin HTTP API (default: not served).
    #[serde(default)]
    pub admin: Option<AdminSection>,
    /// `[[webhooks]]`: where notices are POSTed.
    #[serde(default)]
    pub webhooks: Vec<crate::webhooks::WebhookConfig>,
    /// `[schedule]`: training runs submitted on a schedule (needs `federation.serve`).
    #[serde(default)]
    pub schedule: Option<crate::retraining::ScheduleSection>,
    /// `[[members]]`: the roster, the members the federation expects.
    #[serde(default)]
    pub members: Vec<MemberSpec>,
}

/// A duration key's value, checked against the one range every duration has
/// ([`fedsilo_policies::duration`]).
fn secs(origin: &str, key: &str, v: f64) -> Result<Duration> {
    if duration::is_duration(v) {
        Ok(duration::to_duration(v))
    } else {
        Err(Error::Config {
            origin: origin.into(),
            message: format!("`{key}` = {v}: must be {}", duration::ALLOWED),
        })
    }
}

impl FederationConfig {
    /// Reads, resolves and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let cfg = Self::load_unchecked(path)?;
        cfg.validate(&path.display().to_string())?;
        Ok(cfg)
    }

    /// Reads a configuration file and resolves its paths, without validating its values: for a
    /// caller that overrides some (the command line's flags) and then calls
    /// [`validate`](Self::validate).
    pub fn load_unchecked(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        let origin = path.display().to_string();
        let mut cfg: FederationConfig = toml::from_str(&text).map_err(|e| Error::Config {
            origin: origin.clone(),
            message: e.to_string(),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for p in [
            &mut cfg.federation.policy,
            &mut cfg.federation.state_dir,
            &mut cfg.network.kit,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        for p in [
            cfg.federation.pooled_reference.as_mut(),
            cfg.model.initial.as_mut(),
            cfg.model.schema.as_mut(),
            cfg.model.manifest.as_mut(),
            cfg.model.files.as_mut(),
            cfg.network.crl.as_mut(),
        ]
        .into_iter()
        .flatten()
        .filter(|p| p.is_relative())
        {
            *p = base.join(&*p);
        }
        if let Some(p) = cfg
            .admin
            .as_mut()
            .and_then(|a| a.tokens.as_mut())
            .filter(|p| p.is_relative())
        {
            *p = base.join(&*p);
        }
        for w in &mut cfg.webhooks {
            w.resolve(base);
        }
        Ok(cfg)
    }

    /// Checks values.
    pub fn validate(&self, origin: &str) -> Result<()> {
        let bad = |message: String| Error::Config {
            origin: origin.to_string(),
            message,
        };
        if self.federation.rounds == 0 && !self.federation.serve {
            return Err(bad(
                "`federation.rounds` = 0: must be at least 1 (0 is allowed only with `federation.serve = true`, where runs are submitted later)".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.members {
            crate::identity::validate_name("`members.name`", &m.name)
                .and_then(|()| crate::identity::validate_name("`members.region`", &m.region))
                .map_err(|e| bad(e.to_string()))?;
            if !matches!(m.role.as_str(), "silo" | "aggregator") {
                return Err(bad(format!(
                    "`members.role` = {:?} for {}: must be \"silo\" or \"aggregator\"",
                    m.role, m.name
                )));
            }
            if !seen.insert(&m.name) {
                return Err(bad(format!("`[[members]]` lists {} twice", m.name)));
            }
        }
        if let Some(s) = &self.schedule {
            if !self.federation.serve {
                return Err(bad(
                    "`[schedule]` submits runs to a coordinator that serves: set `federation.serve = true`".into(),
                ));
            }
            crate::retraining::RetrainSchedule::parse(s).map_err(|e| bad(e.to_string()))?;
            let passes = s.rounds.saturating_mul(u64::from(self.plan.epochs));
            if self.federation.compare_local && passes > crate::protocol::MAX_PASSES {
                return Err(bad(format!(
                    "`schedule.rounds` = {} × {} epochs with `federation.compare_local`: each silo's local-only baseline would be {passes} passes over its data, more than the {} silos accept",
                    s.rounds,
                    self.plan.epochs,
                    crate::protocol::MAX_PASSES
                )));
            }
        }
        if self.federation.serve && self.federation.rounds > crate::runs::MAX_RUN_ROUNDS {
            return Err(bad(format!(
                "`federation.rounds` = {}: with `federation.serve = true` it is the first run's size, at most {}",
                self.federation.rounds,
                crate::runs::MAX_RUN_ROUNDS
            )));
        }
        self.heartbeat_interval(origin)?;
        self.heartbeat_timeout(origin)?;
        self.handshake_timeout(origin)?;
        secs(
            origin,
            "federation.wait_for_silos_secs",
            self.federation.wait_for_silos_secs,
        )?;
        if let Some(m) = self.network.metrics_listen {
            crate::metrics::check_listen(m)
                .map_err(|e| bad(format!("`network.metrics_listen` = {m}: {e}")))?;
        }
        if !(self.network.spill_above_mb.is_finite() && self.network.spill_above_mb >= 0.0) {
            return Err(Error::Config {
                origin: origin.to_string(),
                message: format!(
                    "`network.spill_above_mb` = {}: must be a number of MiB, 0 or more (0: always spill)",
                    self.network.spill_above_mb
                ),
            });
        }
        let (per, total) = (
            self.network.connections_per_address,
            self.network.connections_total,
        );
        if !(1..=65_536).contains(&total) || !(1..=total).contains(&per) {
            return Err(Error::Config {
                origin: origin.to_string(),
                message: format!(
                    "`network.connections_total` = {total}, `network.connections_per_address` = {per}: the total must be between 1 and 65536, and the per-address cap between 1 and the total"
                ),
            });
        }
        if self.network.chunk_values == 0 || self.network.chunk_values > (8 << 20) {
            return Err(bad(format!(
                "`network.chunk_values` = {}: must be between 1 and {} (frames stay below the 64 MiB limit)",
                self.network.chunk_values,
                8 << 20
            )));
        }
        if self.plan.epochs == 0 || self.plan.batch_size == 0 {
            return Err(bad(
                "`plan.epochs` and `plan.batch_size` must be at least 1".into(),
            ));
        }
        for (key, v) in [
            ("plan.epochs", self.plan.epochs),
            ("plan.personalize_epochs", self.plan.personalize_epochs),
        ] {
            if v > MAX_EPOCHS {
                return Err(bad(format!(
                    "`{key}` = {v}: at most {MAX_EPOCHS} passes over a silo's data per round (silos refuse more)"
                )));
            }
        }
        let baseline = self
            .federation
            .rounds
            .saturating_mul(u64::from(self.plan.epochs));
        if self.federation.compare_local && baseline > crate::protocol::MAX_PASSES {
            return Err(bad(format!(
                "`federation.compare_local` with {} rounds × {} epochs: each silo's local-only baseline would be {baseline} passes over its data, and silos refuse more than {} for one request (fewer rounds or epochs, or compare_local = false)",
                self.federation.rounds,
                self.plan.epochs,
                crate::protocol::MAX_PASSES
            )));
        }
        if self.federation.pooled_reference.is_some() && !self.federation.compare_local {
            return Err(bad(
                "`federation.pooled_reference` is scored in the end-of-run comparison: set `federation.compare_local = true` as well".into(),
            ));
        }
        if !(self.plan.learning_rate.is_finite() && self.plan.learning_rate > 0.0) {
            return Err(bad(format!(
                "`plan.learning_rate` = {}: must be a positive number",
                self.plan.learning_rate
            )));
        }
        if let Err(e) = self.plan.compression() {
            return Err(bad(format!("`plan.compression`: {e}")));
        }
        if !(self.plan.prox_mu.is_finite() && self.plan.prox_mu >= 0.0) {
            return Err(bad(format!(
                "`plan.prox_mu` = {}: must be 0 (plain local SGD) or a positive number, e.g. 0.01",
                self.plan.prox_mu
            )));
        }
        match (&self.model.schema, &self.model.manifest) {
            (Some(_), Some(_)) => return Err(bad("`model.schema` and `model.manifest` both set: a federation trains either the built-in MLP on a schema or the model its manifest describes".into())),
            (None, None) => return Err(bad("[model] needs `schema = \"schema.toml\"` (the built-in MLP on tabular data) or `manifest = \"model/manifest.toml\"` (a model prepared with fedsilo-model)".into())),
            (None, Some(_)) if !self.model.hidden.is_empty() => return Err(bad("`model.hidden` is for the built-in MLP; a model with a manifest has its own architecture".into())),
            (None, Some(_)) if self.model.initial.is_none() => return Err(bad("`model.manifest` needs `model.initial`: the starting values of its trainable tensors (fedsilo-model writes initial.safetensors beside the manifest)".into())),
            (Some(_), None) if self.model.files.is_some() => return Err(bad("`model.files` is the directory of a manifest's pinned files; the built-in MLP has none (set `model.manifest`, or remove `files`)".into())),
            _ => {}
        }
        if let Some(i) = self.model.hidden.iter().position(|h| *h == 0) {
            return Err(bad(format!(
                "`model.hidden[{i}]` = 0: layer widths must be at least 1"
            )));
        }
        if let Some(i) = self
            .model
            .hidden
            .iter()
            .position(|h| *h > crate::model::MAX_WIDTH)
        {
            return Err(bad(format!(
                "`model.hidden[{i}]` = {}: layer widths must be at most {}",
                self.model.hidden[i],
                crate::model::MAX_WIDTH
            )));
        }
        Ok(())
    }

    /// Heartbeat period.
    pub fn heartbeat_interval(&self, origin: &str) -> Result<Duration> {
        secs(
            origin,
            "network.heartbeat_interval_secs",
            self.network.heartbeat_interval_secs,
        )
    }
    /// Heartbeat silence limit.
    pub fn heartbeat_timeout(&self, origin: &str) -> Result<Duration> {
        secs(
            origin,
            "network.heartbeat_timeout_secs",
            self.network.heartbeat_timeout_secs,
        )
    }
    /// TLS handshake timeout.
    pub fn handshake_timeout(&self, origin: &str) -> Result<Duration> {
        secs(
            origin,
            "network.handshake_timeout_secs",
            self.network.handshake_timeout_secs,
        )
    }
}
