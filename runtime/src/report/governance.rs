//! # The governance report: what a risk officer files
//!
//! One document, per federation and per run, that answers a reviewer's questions without access
//! to the machine: who decided what and when (an operator's certificate name, an API token,
//! the validation gate, the policy), which version came from which (lineage), the SHA-256 of
//! every checkpoint file, where each version was deployed and which silos confirmed it, which
//! policy texts were in force, the differential-privacy settings and each silo's ε spent and
//! left, each silo's contribution (its share of each aggregate, its refusals and quarantines),
//! the gate's evidence for every version, the runs and the roster.
//!
//! It is drawn from the records the coordinator keeps, never from its memory:
//! - the **audit journal**, verified entry by entry as it is read (chain, signatures, and the
//!   checkpoint files against it); a journal that does not verify is reported as such at the
//!   top, with the entries before the first problem;
//! - the **model registry** (every version's metadata, the gate's per-silo figures);
//! - the **policy archive** ([`crate::policy_archive`]) for the rules behind each digest;
//! - the **privacy book** (`privacy.jsonl`), replayed to compute each silo's ε;
//! - **events.jsonl** only for what the silos reported (deployments confirmed or refused,
//!   members missing), which the journal does not hold.
//!
//! [`GovernanceReport`] is the JSON; [`super::governance_page`] renders the same value as one
//! self-contained HTML page, which also carries the JSON.

use std::collections::BTreeMap;

use fedsilo_policies::Policy;
use serde::Serialize;
use serde_json::Value;

use crate::audit::verify::Checked;
use crate::federation::MemberSpec;
use crate::model::eval::EvalMetrics;
use crate::registry::VersionMeta;

/// The format's name and version, the JSON's first field.
pub const FORMAT: &str = "fedsilo-governance-report/1";

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct GovernanceReport {
    /// [`FORMAT`].
    pub format: &'static str,
    /// The federation's name.
    pub federation: String,
    /// When the report was made, ms since the Unix epoch.
    pub generated_ms: u64,
    /// Whether the journal and the checkpoint files verify.
    pub journal: JournalCheck,
    /// Headline figures.
    pub summary: Summary,
    /// Every decision, oldest first.
    pub decisions: Vec<Decision>,
    /// Every training run.
    pub runs: Vec<RunReport>,
    /// Every version, with its lineage, checkpoint and the gate's evidence.
    pub versions: Vec<VersionReport>,
    /// Every deployment order and what the silos did with it.
    pub deployments: Vec<DeploymentReport>,
    /// Every policy text that was in force.
    pub policies: Vec<PolicyReport>,
    /// Differential privacy, if any silo's data was ever charged or the policy asks for it.
    pub privacy: Option<PrivacyReport>,
    /// Each silo's contribution over the federation's life.
    pub silos: Vec<SiloReport>,
    /// The members the federation expects, and those it did not.
    pub roster: RosterReport,
}

/// The audit journal's verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JournalCheck {
    /// Entries that verified.
    pub entries: usize,
    /// Time of the first and the last of them.
    pub first_ms: Option<u64>,
    /// Time of the last verified entry.
    pub last_ms: Option<u64>,
    /// The coordinators that signed it, in order.
    pub signers: Vec<Signer>,
    /// Whether the signers' certificates were checked against the consortium CA.
    pub ca_checked: bool,
    /// Whether the checkpoint files and `CURRENT` were checked against the journal.
    pub files_checked: bool,
    /// Where the (unsigned) model registry disagrees with the journal; the report shows the
    /// journal's word.
    pub discrepancies: Vec<String>,
    /// The first problem (a broken chain, a bad signature, a modified checkpoint), if any: the
    /// report holds only what came before it.
    pub problem: Option<String>,
}

/// A coordinator that signed entries.
#[derive(Debug, Clone, Serialize)]
pub struct Signer {
    /// Its first entry.
    pub seq: u64,
    /// When.
    pub time_ms: u64,
    /// Its node name.
    pub node: String,
    /// SHA-256 of its certificate (DER).
    pub certificate_sha256: String,
}

/// Headline figures.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The version in force (the last committed, approved or rolled back to).
    pub current_version: Option<u64>,
    /// Runs submitted.
    pub runs: usize,
    /// Versions committed.
    pub committed: usize,
    /// Candidates rejected (by the gate or an operator).
    pub rejected: usize,
    /// The candidate awaiting an operator, if any.
    pub awaiting_approval: Option<u64>,
    /// Deployment orders.
    pub deployments: usize,
    /// Decisions recorded.
    pub decisions: usize,
    /// Who paused the federation and why, if it is paused.
    pub paused: Option<(String, String)>,
}

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// Its journal entry.
    pub seq: u64,
    /// When.
    pub time_ms: u64,
    /// The run it belongs to.
    pub run: Option<u64>,
    /// What kind (`approved`, `gate_committed`, `deployed`, ...).
    pub kind: &'static str,
    /// Who: an operator's certificate name, `token NAME`, `validation gate`, `policy`, ...
    pub by: String,
    /// The version it concerns.
    pub version: Option<u64>,
    /// In words.
    pub what: String,
    /// The reason given.
    pub reason: String,
    /// For an operator's signed decision: the SHA-256 of its body.
    pub decision_sha256: Option<String>,
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Its id.
    pub id: u64,
    /// Who submitted it and when.
    pub submitted_by: String,
    /// When.
    pub submitted_ms: u64,
    /// What it asked for (rounds, settings, policy overrides).
    pub plan: Value,
    /// `queued`, `running`, `finished`, `failed`, `cancelled`, ...
    pub state: String,
    /// Why it failed or was cancelled, and by whom.
    pub detail: String,
    /// When it started and ended.
    pub started_ms: Option<u64>,
    /// When it ended.
    pub ended_ms: Option<u64>,
    /// Rounds started in it.
    pub rounds: Vec<u64>,
    /// Versions its rounds made (committed or not).
    pub versions: Vec<u64>,
    /// Each silo's contribution to it.
    pub silos: Vec<SiloReport>,
}

/// One version.
#[derive(Debug, Clone, Serialize)]
pub struct VersionReport {
    /// The version.
    pub version: u64,
    /// The version it was built on.
    pub parent: u64,
    /// The round that made it (0: the initial model).
    pub round: u64,
    /// Its run.
    pub run: Option<u64>,
    /// `committed`, `rejected`, `awaiting-approval`.
    pub status: &'static str,
    /// Whether it is the version in force.
    pub current: bool,
    /// Who decided its status.
    pub decided_by: String,
    /// The gate's or the operator's reason.
    pub reason: String,
    /// When it was made.
    pub created_ms: u64,
    /// Its checkpoint file, relative to the state directory.
    pub checkpoint: String,
    /// SHA-256 of the checkpoint file.
    pub file_sha256: String,
    /// SHA-256 of its parameters.
    pub parameters_sha256: String,
    /// Digest of the policy in force when it was made.
    pub policy_digest: String,
    /// Kernel, clipping and server optimiser.
    pub aggregation: String,
    /// Each participant's examples and share of the aggregate.
    pub participants: Vec<Participant>,
    /// The gate's evidence.
    pub gate: GateEvidence,
    /// Silo-level DP spend of its round.
    pub privacy: Option<crate::privacy::budget::RoundSpend>,
    /// Silos that reported it deployed (their last report).
    pub deployed_at: Vec<String>,
}

/// A participant of a version.
#[derive(Debug, Clone, Serialize)]
pub struct Participant {
    /// The silo.
    pub silo: String,
    /// Examples it trained on.
    pub examples: u64,
    /// Its weight in the aggregate over the sum of weights (examples, or 1 each under DP).
    pub weight_share: f64,
}

/// What the gate saw.
#[derive(Debug, Clone, Serialize)]
pub struct GateEvidence {
    /// `AUC` or `R²`.
    pub score_name: &'static str,
    /// Example-weighted held-out score over the silos.
    pub weighted_score: Option<f64>,
    /// The parent's.
    pub parent_score: Option<f64>,
    /// Each silo's held-out figures.
    pub figures: BTreeMap<String, EvalMetrics>,
    /// The parent's figures per silo (the comparison the gate made).
    pub parent_figures: BTreeMap<String, EvalMetrics>,
    /// The silos that scored both the version and its parent: the gate compares on these.
    pub compared_on: Vec<String>,
    /// The change of the example-weighted score over `compared_on` (the candidate's examples
    /// weigh both sides).
    pub change: Option<f64>,
}

/// One deployment order.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentReport {
    /// Its id.
    pub id: u64,
    /// When it was ordered.
    pub time_ms: u64,
    /// The version.
    pub version: u64,
    /// Its parameter digest.
    pub digest: String,
    /// Where to, in words.
    pub target: String,
    /// Who ordered it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Silos that confirmed it.
    pub confirmed: Vec<String>,
    /// Silos that refused the version, and why.
    pub refused: Vec<(String, String)>,
}

/// One policy text.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyReport {
    /// SHA-256 of its text.
    pub digest: String,
    /// When the journal last named it in force (`None`: known only from a version).
    pub since_ms: Option<u64>,
    /// Whether it is the one in force now.
    pub in_force: bool,
    /// Versions made under it.
    pub versions: Vec<u64>,
    /// `kept`, `not kept (…)`, or what is wrong with the kept text.
    pub archive: String,
    /// Its rules, when the text was kept.
    pub rules: Option<Value>,
}

/// Differential privacy.
#[derive(Debug, Clone, Serialize)]
pub struct PrivacyReport {
    /// The policy whose settings these are (the one in force), if its text is known.
    pub policy_digest: Option<String>,
    /// `central` or `distributed`; `None` when the policy in force has no `[privacy]`.
    pub mode: Option<String>,
    /// The clipping norm C.
    pub clip_norm: Option<f64>,
    /// The noise multiplier z.
    pub noise_multiplier: Option<f64>,
    /// The federation's budget.
    pub budget_epsilon: Option<f64>,
    /// Its δ.
    pub delta: f64,
    /// Each silo's spend.
    pub silos: Vec<SiloBudget>,
}

/// A silo's privacy spend.
#[derive(Debug, Clone, Serialize)]
pub struct SiloBudget {
    /// The silo.
    pub silo: String,
    /// ε spent, at `delta`.
    pub spent: f64,
    /// δ.
    pub delta: f64,
    /// Its budget, if capped.
    pub budget: Option<f64>,
    /// What is left of it.
    pub left: Option<f64>,
}

/// A silo's contribution.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SiloReport {
    /// The silo.
    pub silo: String,
    /// Its region, if known.
    pub region: Option<String>,
    /// Rounds it was asked to train in.
    pub rounds_dispatched: u64,
    /// Rounds it was left out of, and why.
    pub excluded: Vec<(u64, String)>,
    /// Updates admitted into an aggregate.
    pub updates_admitted: u64,
    /// Examples those updates were trained on.
    pub examples: u64,
    /// Committed versions it took part in.
    pub versions: u64,
    /// Its mean share of the committed versions' aggregates (0 for versions it missed).
    pub mean_weight_share: f64,
    /// Updates refused, by round, and why.
    pub refusals: Vec<(u64, String)>,
    /// Quarantines: when, and until which round.
    pub quarantines: Vec<(u64, u64)>,
    /// ε spent (silo-level DP), at the report's δ.
    pub epsilon_spent: Option<f64>,
    /// The version it last reported deployed.
    pub deployed_version: Option<u64>,
}

/// The roster.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RosterReport {
    /// Whether the federation file's `[[members]]` was read (else members come from events).
    pub from_federation_file: bool,
    /// Expected members.
    pub members: Vec<RosterMember>,
    /// Nodes that linked without being on the roster.
    pub unexpected: Vec<String>,
}

/// An expected member.
#[derive(Debug, Clone, Serialize)]
pub struct RosterMember {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// `silo` or `aggregator`.
    pub role: String,
    /// Times it was reported missing.
    pub missing_reports: u64,
    /// `present`, `missing` or `never seen`, as of the last event.
    pub last_seen: &'static str,
}

/// What the report is drawn from (see the module documentation).
#[derive(Debug, Default)]
pub struct Sources {
    /// The federation's name.
    pub federation: String,
    /// When, ms since the Unix epoch.
    pub generated_ms: u64,
    /// The journal's verification (its `entries` count is filled in from `entries`).
    pub journal: JournalCheck,
    /// The verified entries.
    pub entries: Vec<Checked>,
    /// The registry's versions.
    pub versions: Vec<VersionMeta>,
    /// events.jsonl, parsed.
    pub events: Vec<Value>,
    /// Each policy digest's kept text: the policy, `None` if never kept, or what is wrong.
    pub policies: BTreeMap<String, Result<Option<Policy>, String>>,
    /// The privacy book (`privacy.jsonl`), replayed.
    pub book: Option<crate::privacy::budget::PrivacyBook>,
    /// The federation file's roster, if it was given.
    pub roster: Option<Vec<MemberSpec>>,
}

pub use super::governance_build::{assemble, read, ReadOptions};
