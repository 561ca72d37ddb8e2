//! Building the governance report ([`super::governance`]) from its sources: [`read`] gathers
//! them from a state directory, [`assemble`] (pure, unit-tested without files) turns them into
//! the report.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;

use super::governance::*;
use super::governance_decisions::decisions;
use super::governance_members::{confirmations, deployed_versions, refusals_of, regions, roster};
use crate::audit::verify::{verify_chain, verify_state, Checked};
use crate::audit::{History, Record};
use crate::federation::MemberSpec;
use crate::identity::signature::CaCheck;
use crate::model::Digest;
use crate::registry::{RegistryReader, Status, VersionMeta};

/// How to read a state directory.
#[derive(Default)]
pub struct ReadOptions {
    /// The federation's name (the state directory's path when unknown).
    pub federation: String,
    /// The consortium CA: the journal's signers must hold certificates it issued.
    pub ca: Option<CaCheck>,
    /// The federation file's roster.
    pub roster: Option<Vec<MemberSpec>>,
    /// The versions, when the caller holds the registry open (the coordinator itself); else
    /// the registry is opened read-only.
    pub versions: Option<Vec<VersionMeta>>,
    /// Whether to hash every checkpoint file against the journal too (slow for large models).
    pub check_files: bool,
}

/// Reads a state directory's records and assembles the report. Fails only when there is no
/// journal to read; a journal or a kept file that does not verify is reported in the report.
pub fn read(dir: &Path, opts: ReadOptions) -> crate::Result<GovernanceReport> {
    let verification = if opts.check_files {
        verify_state(dir, opts.ca.as_ref())?
    } else {
        let path = dir.join("audit.jsonl");
        let text =
            std::fs::read_to_string(&path).map_err(|e| crate::Error::io("reading", &path, e))?;
        verify_chain(&text, "audit.jsonl", opts.ca.as_ref())
    };
    let versions = match opts.versions {
        Some(v) => v,
        None => RegistryReader::open(dir)?.list()?,
    };
    let events = match std::fs::read_to_string(dir.join("events.jsonl")) {
        Ok(text) => text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => vec![],
        Err(e) => return Err(crate::Error::io("reading", dir.join("events.jsonl"), e)),
    };
    let mut digests: BTreeSet<String> = versions
        .iter()
        .map(|v| v.policy_digest.clone())
        .filter(|d| !d.is_empty())
        .collect();
    for e in &verification.entries {
        if let Record::PolicyChanged { digest } = &e.body.record {
            digests.insert(digest.clone());
        }
    }
    let policies = digests
        .into_iter()
        .map(|d| {
            let kept = crate::policy_archive::read(dir, &d).map_err(|e| e.to_string());
            (d, kept)
        })
        .collect();
    let book_path = dir.join("privacy.jsonl");
    let book = if book_path.exists() {
        Some(crate::privacy::budget::PrivacyBook::open(&book_path)?)
    } else {
        None
    };
    Ok(assemble(Sources {
        federation: opts.federation,
        generated_ms: crate::audit::entry::now_ms(),
        journal: JournalCheck {
            ca_checked: opts.ca.is_some(),
            files_checked: opts.check_files,
            problem: verification.problem.as_ref().map(|p| p.to_string()),
            ..Default::default()
        },
        entries: verification.entries,
        versions,
        events,
        policies,
        book,
        roster: opts.roster,
    }))
}

/// Which run each round, and each journal entry, belongs to.
#[derive(Default)]
pub(super) struct RunIndex {
    pub(super) of_round: BTreeMap<u64, u64>,
    pub(super) of_seq: BTreeMap<u64, u64>,
    pub(super) started: BTreeMap<u64, u64>,
    pub(super) ended: BTreeMap<u64, u64>,
}

impl RunIndex {
    fn of(entries: &[Checked]) -> Self {
        let mut ix = RunIndex::default();
        let mut active = None;
        for e in entries {
            let (seq, at) = (e.body.seq, e.body.time_ms);
            match &e.body.record {
                Record::RunStarted { run, .. } => {
                    active = Some(*run);
                    ix.started.insert(*run, at);
                }
                Record::RunSubmitted { run, .. } | Record::RunCancelled { run, .. } => {
                    ix.of_seq.insert(seq, *run);
                }
                Record::RunEnded { run, .. } => {
                    ix.ended.insert(*run, at);
                    ix.of_seq.insert(seq, *run);
                    active = None;
                }
                Record::RoundStarted { round, .. } => {
                    if let Some(r) = active {
                        ix.of_round.insert(*round, r);
                    }
                }
                _ => {}
            }
            if let Some(r) = e.body.record.round().and_then(|n| ix.of_round.get(&n)) {
                ix.of_seq.insert(seq, *r);
            } else if let Some(r) = active {
                ix.of_seq.entry(seq).or_insert(r);
            }
        }
        ix
    }
}

/// The report from its sources.
pub fn assemble(src: Sources) -> GovernanceReport {
    let history = History::of(&src.entries);
    let ix = RunIndex::of(&src.entries);
    let meta: BTreeMap<u64, &VersionMeta> = src.versions.iter().map(|v| (v.version, v)).collect();
    let run_of_version = |v: u64| {
        meta.get(&v)
            .and_then(|m| m.run.or_else(|| ix.of_round.get(&m.round).copied()))
    };
    let current = history.last_commit.as_ref().map(|(v, _)| *v);
    let deployed = deployed_versions(&src.events);

    // Policies: in the order the journal named them, then those known only from versions.
    let mut order: Vec<(String, Option<u64>)> = vec![];
    for e in &src.entries {
        if let Record::PolicyChanged { digest } = &e.body.record {
            match order.iter_mut().find(|(d, _)| d == digest) {
                Some((_, since)) => *since = Some(e.body.time_ms),
                None => order.push((digest.clone(), Some(e.body.time_ms))),
            }
        }
    }
    for v in &src.versions {
        if !v.policy_digest.is_empty() && !order.iter().any(|(d, _)| *d == v.policy_digest) {
            order.push((v.policy_digest.clone(), None));
        }
    }
    let in_force = history
        .policy
        .clone()
        .or_else(|| src.versions.last().map(|v| v.policy_digest.clone()));
    let kept = |d: &str| {
        src.policies
            .get(d)
            .and_then(|p| p.as_ref().ok())
            .and_then(|p| p.as_ref())
    };
    let policies: Vec<PolicyReport> = order
        .iter()
        .map(|(d, since)| PolicyReport {
            digest: d.clone(),
            since_ms: *since,
            in_force: in_force.as_deref() == Some(d.as_str()),
            versions: src
                .versions
                .iter()
                .filter(|v| v.policy_digest == *d)
                .map(|v| v.version)
                .collect(),
            archive: match src.policies.get(d) {
                Some(Ok(Some(_))) => "kept".into(),
                Some(Ok(None)) | None => "not kept (the state directory predates the policy archive, or keeping it failed: see the coordinator's log)".into(),
                Some(Err(e)) => e.clone(),
            },
            rules: kept(d).and_then(|p| serde_json::to_value(p).ok()),
        })
        .collect();
    let policy_now = in_force.as_deref().and_then(kept);
    let privacy = privacy_report(policy_now, in_force.as_deref(), src.book.as_ref());
    let spent: BTreeMap<&str, f64> = privacy
        .iter()
        .flat_map(|p| p.silos.iter().map(|s| (s.silo.as_str(), s.spent)))
        .collect();

    let journaled = journaled_versions(&src.entries);
    let mut discrepancies = vec![];
    let versions: Vec<VersionReport> = src
        .versions
        .iter()
        .map(|m| {
            let m = journal_word(m, journaled.get(&m.version), &mut discrepancies);
            let parent = meta
                .get(&m.parent)
                .map(|p| journal_word(p, journaled.get(&p.version), &mut vec![]));
            version_report(
                &m,
                parent.as_ref(),
                current,
                &deployed,
                run_of_version(m.version),
            )
        })
        .collect();
    let regions = regions(&src.events, src.roster.as_deref());
    let contributions = |run: Option<u64>| {
        let mut out = contributions(&src.entries, &src.versions, &ix, run);
        for s in &mut out {
            s.region = regions.get(&s.silo).cloned();
            if run.is_none() {
                s.epsilon_spent = spent.get(s.silo.as_str()).copied();
                s.deployed_version = deployed.get(&s.silo).copied();
            }
        }
        out
    };
    let runs: Vec<RunReport> = history
        .runs
        .all()
        .map(|r| {
            let (state, detail) = run_state(&r.status);
            RunReport {
                id: r.id,
                submitted_by: r.submitted_by.clone(),
                submitted_ms: r.submitted_ms,
                plan: serde_json::to_value(&r.plan).unwrap_or(Value::Null),
                state,
                detail,
                started_ms: ix.started.get(&r.id).copied(),
                ended_ms: ix.ended.get(&r.id).copied(),
                rounds: ix
                    .of_round
                    .iter()
                    .filter(|(_, run)| **run == r.id)
                    .map(|(round, _)| *round)
                    .collect(),
                versions: src
                    .versions
                    .iter()
                    .filter(|v| run_of_version(v.version) == Some(r.id))
                    .map(|v| v.version)
                    .collect(),
                silos: contributions(Some(r.id)),
            }
        })
        .collect();
    let decisions = decisions(&src.entries, &ix, &run_of_version);
    let deployments = history
        .deployments
        .all()
        .iter()
        .map(|d| DeploymentReport {
            id: d.id,
            time_ms: d.at_ms,
            version: d.version,
            digest: d.digest.clone(),
            target: d.target.describe(),
            by: d.by.clone(),
            reason: d.reason.clone(),
            confirmed: confirmations(&src.events, d.id),
            refused: refusals_of(&src.events, d.id, d.version),
        })
        .collect::<Vec<_>>();
    let summary = Summary {
        current_version: current,
        runs: runs.len(),
        committed: versions
            .iter()
            .filter(|v| v.status == "committed" && v.round > 0)
            .count(),
        rejected: versions.iter().filter(|v| v.status == "rejected").count(),
        awaiting_approval: history.awaiting,
        deployments: deployments.len(),
        decisions: decisions.len(),
        paused: history.paused.clone(),
    };
    let mut journal = src.journal;
    journal.discrepancies = discrepancies;
    journal.entries = src.entries.len();
    journal.first_ms = src.entries.first().map(|e| e.body.time_ms);
    journal.last_ms = src.entries.last().map(|e| e.body.time_ms);
    journal.signers = src
        .entries
        .iter()
        .filter_map(|e| match &e.body.record {
            Record::Signer {
                node, certificate, ..
            } => Some(Signer {
                seq: e.body.seq,
                time_ms: e.body.time_ms,
                node: node.clone(),
                certificate_sha256: hex::decode(certificate)
                    .map(|der| Digest::of_bytes(&der).hex())
                    .unwrap_or_default(),
            }),
            _ => None,
        })
        .collect();
    GovernanceReport {
        format: FORMAT,
        federation: src.federation,
        generated_ms: src.generated_ms,
        journal,
        summary,
        decisions,
        silos: contributions(None),
        runs,
        versions,
        deployments,
        policies,
        privacy,
        roster: roster(&src.events, src.roster.as_deref()),
    }
}

fn run_state(s: &crate::runs::RunStatus) -> (String, String) {
    use crate::runs::RunStatus::*;
    match s {
        Queued => ("queued".into(), String::new()),
        Running { .. } => ("running".into(), String::new()),
        Cancelling { by, reason, .. } => ("being cancelled".into(), format!("by {by}: {reason}")),
        Finished { committed, .. } => (
            "finished".into(),
            format!("{committed} version(s) committed"),
        ),
        Failed { committed, error } => {
            ("failed".into(), format!("{error} ({committed} committed)"))
        }
        Cancelled {
            by,
            reason,
            committed,
        } => (
            "cancelled".into(),
            format!("by {by}: {reason} ({committed} committed)"),
        ),
    }
}

/// Each participant's share of a version's aggregate: examples, or 1 each under DP (the
/// policy's `update_weight`).
fn shares(m: &VersionMeta) -> Vec<Participant> {
    let w = |n: u64| if m.privacy.is_some() { 1.0 } else { n as f64 };
    let total: f64 = m.participants.iter().map(|(_, n)| w(*n)).sum();
    m.participants
        .iter()
        .map(|(s, n)| Participant {
            silo: s.clone(),
            examples: *n,
            weight_share: if total > 0.0 { w(*n) / total } else { 0.0 },
        })
        .collect()
}

fn version_report(
    m: &VersionMeta,
    parent: Option<&VersionMeta>,
    current: Option<u64>,
    deployed: &BTreeMap<String, u64>,
    run: Option<u64>,
) -> VersionReport {
    let score_name = crate::model::eval::score_name(m.validation.values());
    VersionReport {
        version: m.version,
        parent: m.parent,
        round: m.round,
        run,
        status: m.status.as_str(),
        current: current == Some(m.version),
        decided_by: m.decided_by.clone(),
        reason: m.reason.clone(),
        created_ms: m.created_ms,
        checkpoint: match m.status {
            Status::Committed => format!("models/v{}.safetensors", m.version),
            _ => format!("models/candidates/v{}.safetensors", m.version),
        },
        file_sha256: m.file_sha256.clone(),
        parameters_sha256: m.digest.clone(),
        policy_digest: m.policy_digest.clone(),
        aggregation: m.aggregation.clone(),
        participants: shares(m),
        gate: gate_evidence(m, parent, score_name),
        privacy: m.privacy.clone(),
        deployed_at: deployed
            .iter()
            .filter(|(_, v)| **v == m.version)
            .map(|(s, _)| s.clone())
            .collect(),
    }
}

/// What the journal says of each version: status, file SHA-256, participants, figures.
type Journaled = (
    Status,
    String,
    Option<Vec<(String, u64)>>,
    Option<BTreeMap<String, crate::model::eval::EvalMetrics>>,
);

fn journaled_versions(entries: &[Checked]) -> BTreeMap<u64, Journaled> {
    let mut out: BTreeMap<u64, Journaled> = BTreeMap::new();
    let mut figures: BTreeMap<u64, BTreeMap<String, crate::model::eval::EvalMetrics>> =
        BTreeMap::new();
    for e in entries {
        match &e.body.record {
            Record::Validated {
                version,
                figures: f,
                ..
            } => {
                figures.insert(*version, f.clone());
            }
            Record::Committed {
                version,
                file_sha256,
                participants,
                ..
            } => {
                let f = figures.get(version).cloned();
                let p = Some(participants.clone());
                out.insert(*version, (Status::Committed, file_sha256.clone(), p, f));
            }
            Record::AwaitingApproval {
                version,
                file_sha256,
                ..
            } => {
                let f = figures.get(version).cloned();
                out.insert(
                    *version,
                    (Status::AwaitingApproval, file_sha256.clone(), None, f),
                );
            }
            Record::Rejected {
                version: Some(v),
                file_sha256: Some(sha),
                ..
            } => {
                let f = figures.get(v).cloned();
                out.insert(*v, (Status::Rejected, sha.clone(), None, f));
            }
            _ => {}
        }
    }
    out
}

/// `m` with the signed journal's word where it has one (status, checkpoint SHA-256,
/// participants, the gate's figures); each disagreement of the unsigned registry is noted.
fn journal_word(m: &VersionMeta, j: Option<&Journaled>, notes: &mut Vec<String>) -> VersionMeta {
    let mut m = m.clone();
    let Some((status, sha, participants, figures)) = j else {
        return m;
    };
    let v = m.version;
    if m.status != *status {
        notes.push(format!(
            "v{v}: the registry says {}, the journal {}",
            m.status.as_str(),
            status.as_str()
        ));
        m.status = *status;
    }
    if m.file_sha256 != *sha {
        notes.push(format!(
            "v{v}: the registry's checkpoint SHA-256 differs from the journal's"
        ));
        m.file_sha256 = sha.clone();
    }
    if let Some(p) = participants.as_ref().filter(|p| **p != m.participants) {
        notes.push(format!(
            "v{v}: the registry's participants differ from the journal's"
        ));
        m.participants = p.clone();
    }
    if let Some(f) = figures
        .as_ref()
        .filter(|f| !f.is_empty() && **f != m.validation)
    {
        notes.push(format!(
            "v{v}: the registry's held-out figures differ from the journal's"
        ));
        m.validation = f.clone();
    }
    m
}

/// The gate's evidence for `m` against its parent: the change is taken over the silos that
/// scored both, as the gate takes it.
fn gate_evidence(
    m: &VersionMeta,
    parent: Option<&VersionMeta>,
    score_name: &'static str,
) -> GateEvidence {
    let parent_figures = parent.map(|p| p.validation.clone()).unwrap_or_default();
    let mut compared_on = vec![];
    let (mut now, mut before, mut weight) = (0.0, 0.0, 0.0);
    for (silo, fig) in &m.validation {
        let old = parent_figures.get(silo).and_then(|p| p.score());
        if let (Some(a), Some(b)) = (fig.score(), old) {
            let w = fig.examples as f64;
            now += a * w;
            before += b * w;
            weight += w;
            compared_on.push(silo.clone());
        }
    }
    GateEvidence {
        score_name,
        weighted_score: m.mean_score(),
        parent_score: parent.and_then(VersionMeta::mean_score),
        figures: m.validation.clone(),
        parent_figures,
        compared_on,
        change: (weight > 0.0).then(|| (now - before) / weight),
    }
}

/// Each silo's contribution, over the whole journal or one run's rounds.
fn contributions(
    entries: &[Checked],
    versions: &[VersionMeta],
    ix: &RunIndex,
    run: Option<u64>,
) -> Vec<SiloReport> {
    let in_scope = |round: u64| run.is_none() || ix.of_round.get(&round).copied() == run;
    let mut by: BTreeMap<String, SiloReport> = BTreeMap::new();
    fn silo<'a>(by: &'a mut BTreeMap<String, SiloReport>, name: &str) -> &'a mut SiloReport {
        by.entry(name.to_string()).or_insert_with(|| SiloReport {
            silo: name.to_string(),
            ..Default::default()
        })
    }
    for e in entries {
        let seq_run = ix.of_seq.get(&e.body.seq).copied();
        match &e.body.record {
            Record::RoundStarted {
                round,
                cohort,
                excluded,
                ..
            } if in_scope(*round) => {
                for s in cohort {
                    silo(&mut by, s).rounds_dispatched += 1;
                }
                for (s, why) in excluded {
                    silo(&mut by, s).excluded.push((*round, why.clone()));
                }
            }
            Record::UpdateAdmitted {
                round,
                silo: s,
                examples,
                ..
            } if in_scope(*round) => {
                let r = silo(&mut by, s);
                r.updates_admitted += 1;
                r.examples += examples;
            }
            Record::UpdateRefused {
                round,
                silo: s,
                reason,
            } if in_scope(*round) => silo(&mut by, s).refusals.push((*round, reason.clone())),
            Record::SiloQuarantined {
                silo: s,
                until_round,
            } if run.is_none() || seq_run == run => silo(&mut by, s)
                .quarantines
                .push((e.body.time_ms, *until_round)),
            _ => {}
        }
    }
    let committed: Vec<&VersionMeta> = versions
        .iter()
        .filter(|v| v.status == Status::Committed && v.round > 0)
        .filter(|v| run.is_none() || v.run.or_else(|| ix.of_round.get(&v.round).copied()) == run)
        .collect();
    for v in &committed {
        for p in shares(v) {
            let r = silo(&mut by, &p.silo);
            r.versions += 1;
            r.mean_weight_share += p.weight_share;
        }
    }
    let n = committed.len().max(1) as f64;
    by.into_values()
        .map(|mut r| {
            r.mean_weight_share /= n;
            r
        })
        .collect()
}

fn privacy_report(
    policy: Option<&fedsilo_policies::Policy>,
    digest: Option<&str>,
    book: Option<&crate::privacy::budget::PrivacyBook>,
) -> Option<PrivacyReport> {
    let rules = policy.and_then(|p| p.privacy.as_ref());
    let mut silos: BTreeSet<String> = book
        .map(|b| b.silos().cloned().collect())
        .unwrap_or_default();
    if let Some(r) = rules {
        silos.extend(r.silos.keys().cloned());
    }
    if rules.is_none() && silos.is_empty() {
        return None;
    }
    let delta = rules.map_or(fedsilo_policies::privacy::REPORT_DELTA, |r| {
        r.report_delta()
    });
    Some(PrivacyReport {
        policy_digest: policy.and(digest.map(str::to_string)),
        mode: rules.map(|r| r.mode.as_str().to_string()),
        clip_norm: rules.map(|r| r.clip_norm),
        noise_multiplier: rules.map(|r| r.noise_multiplier),
        budget_epsilon: rules.and_then(|r| r.budget.map(|b| b.epsilon)),
        delta,
        silos: silos
            .into_iter()
            .map(|s| {
                let budget = rules.and_then(|r| r.budget_of(&s));
                let d = budget.map_or(delta, |b| b.delta);
                let spent = book.map_or(0.0, |b| b.spent(&s, d));
                SiloBudget {
                    left: budget.map(|b| (b.epsilon - spent).max(0.0)),
                    budget: budget.map(|b| b.epsilon),
                    silo: s,
                    spent,
                    delta: d,
                }
            })
            .collect(),
    })
}
