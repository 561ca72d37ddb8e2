//! What the audit journal records: one variant per decision the coordinator takes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::eval::EvalMetrics;

/// One audited fact. Serialised with a `kind` tag; the journal never rewrites a record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Record {
    /// The coordinator opened the journal: entries from here on are signed with the key of this
    /// certificate.
    Signer {
        /// The coordinator's node name.
        node: String,
        /// Its certificate, DER, hex.
        certificate: String,
        /// The current version when it started.
        version: u64,
    },
    /// A round was dispatched.
    RoundStarted {
        /// Round number.
        round: u64,
        /// The version it trains from.
        base_version: u64,
        /// That version's parameter digest.
        base_digest: String,
        /// The silos asked to train.
        cohort: Vec<String>,
        /// Silos left out, with the reason.
        excluded: Vec<(String, String)>,
    },
    /// An update was admitted into the round's aggregate.
    UpdateAdmitted {
        /// Round number.
        round: u64,
        /// The silo.
        silo: String,
        /// The update's digest.
        digest: String,
        /// Its L2 norm (as reported with it).
        norm: f64,
        /// Examples it was trained on.
        examples: u64,
    },
    /// An update was refused or never arrived.
    UpdateRefused {
        /// Round number.
        round: u64,
        /// The silo.
        silo: String,
        /// Why.
        reason: String,
    },
    /// The admitted updates were combined into a candidate.
    Aggregated {
        /// Round number.
        round: u64,
        /// Kernel and its parameters.
        kernel: String,
        /// Each input: silo and update digest.
        inputs: Vec<(String, String)>,
        /// The candidate's parameter digest.
        candidate: String,
    },
    /// The candidate was scored.
    Validated {
        /// Round number.
        round: u64,
        /// The candidate version.
        version: u64,
        /// Whether it passed.
        passed: bool,
        /// The gate's reason.
        reason: String,
        /// Held-out figures per silo.
        figures: BTreeMap<String, EvalMetrics>,
    },
    /// A version became current.
    Committed {
        /// Round number.
        round: u64,
        /// The version.
        version: u64,
        /// The version it was built on.
        parent: u64,
        /// Parameter digest.
        digest: String,
        /// SHA-256 of the checkpoint file.
        file_sha256: String,
        /// Participants and their example counts.
        participants: Vec<(String, u64)>,
    },
    /// A candidate passed the gate and waits for an operator's decision (policy
    /// `validation.require_approval`); the current version stays meanwhile.
    AwaitingApproval {
        /// Round number.
        round: u64,
        /// The candidate.
        version: u64,
        /// SHA-256 of its checkpoint file (under `models/candidates/`).
        file_sha256: String,
    },
    /// An operator approved a candidate (its `committed` entry follows).
    Approved {
        /// The version.
        version: u64,
        /// The operator (certificate name).
        by: String,
        /// Their reason.
        reason: String,
    },
    /// An operator made an earlier version current again.
    RolledBack {
        /// The version that was current.
        from: u64,
        /// The version made current.
        to: u64,
        /// SHA-256 of its checkpoint file.
        file_sha256: String,
        /// The operator.
        by: String,
        /// Their reason.
        reason: String,
    },
    /// An operator's decision is being applied (its hash: a decision is applied at most once).
    DecisionApplied {
        /// SHA-256 of the decision's signed body.
        hash: String,
        /// `approve`, `reject` or `rollback`.
        decision: String,
        /// Of which version.
        version: u64,
        /// The operator.
        by: String,
    },
    /// An operator's decision could not be applied.
    DecisionRefused {
        /// The decision file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The candidate failed the gate (or could not be scored); the current version stays and
    /// is announced again to the silos.
    Rejected {
        /// Round number.
        round: u64,
        /// The candidate, kept as a rejected version (none if there was no candidate).
        version: Option<u64>,
        /// SHA-256 of the kept candidate's file.
        file_sha256: Option<String>,
        /// The version that stays current.
        current: u64,
        /// Why.
        reason: String,
    },
    /// The round ended without a candidate.
    Abandoned {
        /// Round number.
        round: u64,
        /// Why.
        reason: String,
    },
    /// The policy file changed.
    PolicyChanged {
        /// Its new digest.
        digest: String,
    },
    /// A changed policy file was refused.
    PolicyRefused {
        /// Why.
        error: String,
    },
    /// A round's privacy spend was charged before dispatch.
    PrivacyCharged {
        /// Round number.
        round: u64,
        /// The silos charged.
        silos: Vec<String>,
        /// The effective noise multiplier.
        noise_multiplier: f64,
        /// The largest cumulative ε of any silo afterwards.
        epsilon: f64,
        /// Its δ.
        delta: f64,
    },
    /// The privacy budget left too few silos for another round.
    BudgetExhausted {
        /// The refused round.
        round: u64,
        /// Why.
        reason: String,
    },
    /// An operator paused the federation: no new round starts until it is resumed (a restart
    /// stays paused).
    Paused {
        /// Who (operator certificate or API token).
        by: String,
        /// Why.
        reason: String,
    },
    /// The federation was resumed.
    Resumed {
        /// Who.
        by: String,
    },
    /// A silo was quarantined.
    SiloQuarantined {
        /// The silo.
        silo: String,
        /// Until this round.
        until_round: u64,
    },
    /// A training run was queued ([`crate::runs`]).
    RunSubmitted {
        /// Its id.
        run: u64,
        /// Rounds it asks for.
        rounds: u64,
        /// Who submitted it.
        by: String,
        /// Its own training settings, if any.
        #[serde(default, skip_serializing_if = "crate::runs::RunSettings::is_empty")]
        settings: crate::runs::RunSettings,
        /// Its own, stricter, policy, if any.
        #[serde(
            default,
            skip_serializing_if = "crate::runs::PolicyOverrides::is_empty"
        )]
        policy: crate::runs::PolicyOverrides,
        /// The submitter's idempotency key, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
    },
    /// A queued run started.
    RunStarted {
        /// Its id.
        run: u64,
        /// The round number its first round gets.
        first_round: u64,
    },
    /// A run was cancelled (a running one ends when its round in flight is over).
    RunCancelled {
        /// Its id.
        run: u64,
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// A running run ended.
    RunEnded {
        /// Its id.
        run: u64,
        /// Versions it committed.
        committed: u64,
        /// Why it could not go on, if it failed.
        error: Option<String>,
    },
    /// A committed version was ordered deployed ([`crate::deploy`]).
    Deployed {
        /// The order's id.
        deployment: u64,
        /// The version.
        version: u64,
        /// Its parameter digest (hex).
        digest: String,
        /// Where to.
        target: crate::deploy::Target,
        /// Who ordered it (an operator, `policy auto_deploy`, a rollback's operator).
        by: String,
        /// Why.
        reason: String,
    },
}

impl Record {
    /// The round this record belongs to, if any.
    pub fn round(&self) -> Option<u64> {
        use Record::*;
        match self {
            RoundStarted { round, .. }
            | UpdateAdmitted { round, .. }
            | UpdateRefused { round, .. }
            | Aggregated { round, .. }
            | Validated { round, .. }
            | Committed { round, .. }
            | Rejected { round, .. }
            | Abandoned { round, .. }
            | PrivacyCharged { round, .. }
            | AwaitingApproval { round, .. }
            | BudgetExhausted { round, .. } => Some(*round),
            Signer { .. }
            | PolicyChanged { .. }
            | PolicyRefused { .. }
            | SiloQuarantined { .. }
            | Approved { .. }
            | RolledBack { .. }
            | DecisionApplied { .. }
            | DecisionRefused { .. }
            | Paused { .. }
            | Resumed { .. }
            | RunSubmitted { .. }
            | RunStarted { .. }
            | RunCancelled { .. }
            | RunEnded { .. }
            | Deployed { .. } => None,
        }
    }

    /// Whether this record concerns `silo`.
    pub fn mentions(&self, silo: &str) -> bool {
        use Record::*;
        match self {
            RoundStarted {
                cohort, excluded, ..
            } => cohort.iter().any(|s| s == silo) || excluded.iter().any(|(s, _)| s == silo),
            UpdateAdmitted { silo: s, .. }
            | UpdateRefused { silo: s, .. }
            | SiloQuarantined { silo: s, .. } => s == silo,
            Aggregated { inputs, .. } => inputs.iter().any(|(s, _)| s == silo),
            Validated { figures, .. } => figures.contains_key(silo),
            Committed { participants, .. } => participants.iter().any(|(s, _)| s == silo),
            PrivacyCharged { silos, .. } => silos.iter().any(|s| s == silo),
            Deployed {
                target: crate::deploy::Target::Silos { silos },
                ..
            } => silos.iter().any(|s| s == silo),
            _ => false,
        }
    }
}

impl std::fmt::Display for Record {
    /// One line for people (`fedsilo audit show`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use Record::*;
        let short = |d: &str| d.chars().take(12).collect::<String>();
        match self {
            Signer { node, version, .. } => {
                write!(f, "signer {node} (coordinator started at version {version})")
            }
            RoundStarted {
                base_version,
                cohort,
                excluded,
                ..
            } => {
                write!(f, "started from v{base_version}: cohort {}", cohort.join(", "))?;
                for (s, why) in excluded {
                    write!(f, "; excluded {s}: {why}")?;
                }
                Ok(())
            }
            UpdateAdmitted {
                silo,
                digest,
                norm,
                examples,
                ..
            } => write!(
                f,
                "admitted {silo}: update {} norm {norm:.4}, {examples} examples",
                short(digest)
            ),
            UpdateRefused { silo, reason, .. } => write!(f, "refused {silo}: {reason}"),
            Aggregated {
                kernel,
                inputs,
                candidate,
                ..
            } => write!(
                f,
                "aggregated {} update(s) with {kernel} into {}",
                inputs.len(),
                short(candidate)
            ),
            Validated {
                version,
                passed,
                reason,
                figures,
                ..
            } => {
                write!(
                    f,
                    "validated v{version}: {}",
                    if *passed { "passed" } else { "failed" }
                )?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                for (s, m) in figures {
                    match m.score() {
                        Some(a) => write!(f, "; {s} {} {a:.3}", m.score_name())?,
                        None => write!(f, "; {s} loss {:.4}", m.loss)?,
                    }
                }
                Ok(())
            }
            Committed {
                version,
                parent,
                digest,
                participants,
                ..
            } => write!(
                f,
                "committed v{version} (parent v{parent}, params {}) from {}",
                short(digest),
                participants
                    .iter()
                    .map(|(s, n)| format!("{s} ({n})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Rejected {
                version,
                current,
                reason,
                ..
            } => {
                match version {
                    Some(v) => write!(f, "rejected candidate v{v}")?,
                    None => write!(f, "rejected")?,
                }
                write!(f, "; v{current} stays current: {reason}")
            }
            Abandoned { reason, .. } => write!(f, "abandoned: {reason}"),
            PolicyChanged { digest } => write!(f, "policy changed to {}", short(digest)),
            PolicyRefused { error } => write!(f, "policy change refused: {error}"),
            PrivacyCharged {
                silos,
                noise_multiplier,
                epsilon,
                delta,
                ..
            } => write!(
                f,
                "privacy charged to {} silo(s) at z = {noise_multiplier:.3}; largest ε now {epsilon:.3} at δ = {delta:e}",
                silos.len()
            ),
            BudgetExhausted { reason, .. } => write!(f, "budget exhausted: {reason}"),
            AwaitingApproval { version, .. } => {
                write!(f, "candidate v{version} passed the gate; awaiting an operator's approval")
            }
            Approved {
                version,
                by,
                reason,
            } => write!(f, "v{version} approved by {by}: {reason}"),
            RolledBack {
                from,
                to,
                by,
                reason,
                ..
            } => write!(f, "rolled back from v{from} to v{to} by {by}: {reason}"),
            DecisionApplied {
                decision,
                version,
                by,
                ..
            } => write!(f, "decision by {by}: {decision} v{version}"),
            DecisionRefused { file, reason } => {
                write!(f, "decision {file} refused: {reason}")
            }
            SiloQuarantined { silo, until_round } => {
                write!(f, "{silo} quarantined until round {until_round}")
            }
            Paused { by, reason } => write!(f, "paused by {by}: {reason}"),
            Resumed { by } => write!(f, "resumed by {by}"),
            RunSubmitted {
                run, rounds, by, ..
            } => {
                write!(f, "run {run} of {rounds} round(s) submitted by {by}")
            }
            RunStarted { run, first_round } => {
                write!(f, "run {run} started at round {first_round}")
            }
            RunCancelled { run, by, reason } => {
                write!(f, "run {run} cancelled by {by}: {reason}")
            }
            RunEnded {
                run,
                committed,
                error: None,
            } => write!(f, "run {run} finished, {committed} version(s) committed"),
            RunEnded {
                run,
                committed,
                error: Some(e),
            } => write!(f, "run {run} failed after {committed} version(s): {e}"),
            Deployed {
                deployment,
                version,
                target,
                by,
                reason,
                ..
            } => {
                write!(
                    f,
                    "deployment {deployment}: v{version} to {} by {by}",
                    target.describe()
                )?;
                if !reason.is_empty() {
                    write!(f, " ({reason})")?;
                }
                Ok(())
            }
        }
    }
}
