//! What a journal already holds, as the coordinator needs it when it starts. The journal is the
//! source of truth: where the model registry disagrees with it (a crash between the two), the
//! registry is corrected from this.

use std::collections::{BTreeMap, BTreeSet};

use super::record::Record;
use super::verify::Checked;
use crate::runs::{RunBook, RunPlan};
use serde::{Deserialize, Serialize};

/// Where a version stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Passed the gate and was made current (it may have been superseded since).
    Committed,
    /// Failed the validation gate, or an operator rejected it.
    Rejected,
    /// Passed the gate; waits for an operator's `fedsilo models approve`.
    AwaitingApproval,
}

impl Status {
    /// `committed`, `rejected`, `awaiting-approval`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Committed => "committed",
            Status::Rejected => "rejected",
            Status::AwaitingApproval => "awaiting-approval",
        }
    }
}

/// A version as the journal knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournaledVersion {
    /// The round that made it.
    pub round: u64,
    /// The version it was built on (the round's base).
    pub parent: u64,
    /// Its status after the journal's last word on it.
    pub status: Status,
    /// SHA-256 of its checkpoint file.
    pub file_sha256: String,
}

/// The run so far, read from the journal's entries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The highest round number ever started.
    pub last_round: Option<u64>,
    /// A round started but never committed, rejected, abandoned or set aside for approval (the
    /// coordinator stopped during it).
    pub open_round: Option<u64>,
    /// The version the journal made current last (committed or rolled back to) and the SHA-256
    /// of its checkpoint file.
    pub last_commit: Option<(u64, String)>,
    /// The highest version number the journal ever named (candidates included).
    pub max_version: Option<u64>,
    /// Every version the journal kept (committed, rejected, awaiting approval).
    pub versions: BTreeMap<u64, JournaledVersion>,
    /// The candidate awaiting an operator, if any.
    pub awaiting: Option<u64>,
    /// Hashes of the operators' decisions already applied.
    pub applied: BTreeSet<String>,
    /// The federation is paused: by whom and why.
    pub paused: Option<(String, String)>,
    /// The training runs: the queue, the running one, the past ones.
    pub runs: RunBook,
    /// Every deployment order, oldest first.
    pub deployments: crate::deploy::DeploymentBook,
    /// When the journal's first entry was written (the federation's first start), ms since the
    /// Unix epoch.
    pub first_ms: Option<u64>,
    /// The digest of the policy the journal last said was in force (`policy_changed`).
    pub policy: Option<String>,
}

impl History {
    /// Reads the history from verified entries.
    pub fn of(entries: &[Checked]) -> Self {
        let mut h = History::default();
        let mut base: BTreeMap<u64, u64> = BTreeMap::new();
        let named = |h: &mut History, v: u64| {
            h.max_version = Some(h.max_version.map_or(v, |m| m.max(v)));
        };
        h.first_ms = entries.first().map(|e| e.body.time_ms);
        for e in entries {
            match &e.body.record {
                Record::RoundStarted {
                    round,
                    base_version,
                    ..
                } => {
                    h.last_round = Some(h.last_round.map_or(*round, |r| r.max(*round)));
                    h.open_round = Some(*round);
                    base.insert(*round, *base_version);
                }
                Record::Validated { version, .. } => named(&mut h, *version),
                Record::Committed {
                    round,
                    version,
                    parent,
                    file_sha256,
                    ..
                } => {
                    named(&mut h, *version);
                    if h.open_round == Some(*round) {
                        h.open_round = None;
                    }
                    if h.awaiting == Some(*version) {
                        h.awaiting = None;
                    }
                    h.last_commit = Some((*version, file_sha256.clone()));
                    h.versions.insert(
                        *version,
                        JournaledVersion {
                            round: *round,
                            parent: *parent,
                            status: Status::Committed,
                            file_sha256: file_sha256.clone(),
                        },
                    );
                }
                Record::RolledBack {
                    to, file_sha256, ..
                } => {
                    h.last_commit = Some((*to, file_sha256.clone()));
                }
                Record::AwaitingApproval {
                    round,
                    version,
                    file_sha256,
                } => {
                    named(&mut h, *version);
                    if h.open_round == Some(*round) {
                        h.open_round = None;
                    }
                    h.awaiting = Some(*version);
                    h.versions.insert(
                        *version,
                        JournaledVersion {
                            round: *round,
                            parent: base.get(round).copied().unwrap_or(0),
                            status: Status::AwaitingApproval,
                            file_sha256: file_sha256.clone(),
                        },
                    );
                }
                Record::Rejected {
                    round,
                    version,
                    file_sha256,
                    ..
                } => {
                    if h.open_round == Some(*round) {
                        h.open_round = None;
                    }
                    if let (Some(v), Some(sha)) = (version, file_sha256) {
                        named(&mut h, *v);
                        if h.awaiting == Some(*v) {
                            h.awaiting = None;
                        }
                        h.versions.insert(
                            *v,
                            JournaledVersion {
                                round: *round,
                                parent: base.get(round).copied().unwrap_or(0),
                                status: Status::Rejected,
                                file_sha256: sha.clone(),
                            },
                        );
                    }
                }
                Record::Abandoned { round, .. } if h.open_round == Some(*round) => {
                    h.open_round = None;
                }
                Record::DecisionApplied { hash, .. } => {
                    h.applied.insert(hash.clone());
                }
                Record::Paused { by, reason } => h.paused = Some((by.clone(), reason.clone())),
                Record::PolicyChanged { digest } => h.policy = Some(digest.clone()),
                Record::Resumed { .. } => h.paused = None,
                // The coordinator checked each transition before journaling it; one the book
                // refuses now (a journal from an older version) changes nothing.
                Record::RunSubmitted {
                    run,
                    rounds,
                    by,
                    settings,
                    policy,
                    key,
                } => {
                    let plan = RunPlan {
                        rounds: *rounds,
                        settings: settings.clone(),
                        policy: policy.clone(),
                        key: key.clone(),
                    };
                    h.runs.submit(*run, plan, by.clone(), e.body.time_ms);
                }
                Record::RunStarted { run, first_round } => {
                    let _ = h.runs.start(*run, *first_round);
                }
                Record::RunCancelled { run, by, reason } => {
                    let _ = h.runs.cancel(*run, by.clone(), reason.clone());
                }
                Record::RunEnded {
                    run,
                    committed,
                    error,
                } => {
                    let _ = h.runs.end(*run, *committed, error.clone());
                }
                Record::Deployed {
                    deployment,
                    version,
                    digest,
                    target,
                    by,
                    reason,
                } => h.deployments.record(crate::deploy::Deployment {
                    id: *deployment,
                    version: *version,
                    digest: digest.clone(),
                    target: target.clone(),
                    by: by.clone(),
                    reason: reason.clone(),
                    at_ms: e.body.time_ms,
                }),
                _ => {}
            }
        }
        h
    }
}
