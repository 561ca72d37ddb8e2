//! Who decided what, read off the audit journal for the governance report: each decision
//! entry with the operator, API token, gate or rule that took it. An operator's signed decision
//! (`decision_applied`) covers only the entries right after it that carry it out, so its hash
//! is never attached to a later, unrelated entry; one journaled and never carried out is shown.

use std::collections::BTreeMap;

use super::governance::Decision;
use super::governance_build::RunIndex;
use crate::audit::verify::Checked;
use crate::audit::Record;

/// Every decision in the journal, with who took it.
pub(super) fn decisions(
    entries: &[Checked],
    ix: &RunIndex,
    run_of_version: &dyn Fn(u64) -> Option<u64>,
) -> Vec<Decision> {
    let mut out = vec![];
    // The operator's signed decision being applied: (kind, version, by, hash), its entry, and
    // whether an entry carrying it out followed.
    let mut applying: Option<(String, u64, String, String)> = None;
    let mut applied_at: (u64, u64, bool) = (0, 0, false);
    let mut gate_reason: BTreeMap<u64, String> = BTreeMap::new();
    // A decision journaled but never carried out (the coordinator stopped, or applying failed).
    let not_applied = |a: &(String, u64, String, String), (seq, time_ms): (u64, u64)| Decision {
        seq,
        time_ms,
        run: run_of_version(a.1),
        kind: "decision_not_applied",
        by: a.2.clone(),
        version: Some(a.1),
        what: format!("{} of v{} journaled but not carried out", a.0, a.1),
        reason: String::new(),
        decision_sha256: Some(a.3.clone()),
    };
    for e in entries {
        let (seq, time_ms) = (e.body.seq, e.body.time_ms);
        let run = ix.of_seq.get(&seq).copied();
        // A signed decision covers only the entries right after it that carry it out: an
        // approval and its commit, a rejection, or a rollback (the candidate it withdraws, the
        // rollback, the redeployments it orders).
        let part_of = applying.as_ref().is_some_and(|(k, v, operator, _)| {
            let (k, v) = (k.as_str(), *v);
            match &e.body.record {
                Record::Approved { version, .. } | Record::Committed { version, .. } => {
                    k == "approve" && *version == v
                }
                Record::Rejected {
                    version, reason, ..
                } => {
                    (k == "reject" && *version == Some(v))
                        || (k == "rollback" && reason.starts_with("withdrawn:"))
                }
                Record::RolledBack { to, .. } => k == "rollback" && *to == v,
                Record::Deployed { version, by, .. } => {
                    k == "rollback" && *version == v && by == operator
                }
                _ => false,
            }
        });
        if part_of {
            applied_at.2 = true;
        } else if let Some(a) = applying.take() {
            if !applied_at.2 {
                out.push(not_applied(&a, (applied_at.0, applied_at.1)));
            }
        }
        let mut push = |kind, by: &str, version: Option<u64>, what: String, reason: &str| {
            let hash = match (&applying, version) {
                (Some((_, v, _, h)), Some(n)) if *v == n => Some(h.clone()),
                _ => None,
            };
            out.push(Decision {
                seq,
                time_ms,
                run: version.and_then(run_of_version).or(run),
                kind,
                by: by.to_string(),
                version,
                what,
                reason: reason.to_string(),
                decision_sha256: hash,
            })
        };
        const GATE: &str = "validation gate";
        match &e.body.record {
            Record::DecisionApplied {
                hash,
                decision,
                version,
                by,
            } => {
                applying = Some((decision.clone(), *version, by.clone(), hash.clone()));
                applied_at = (seq, time_ms, false);
                continue;
            }
            Record::Validated {
                version, reason, ..
            } => {
                gate_reason.insert(*version, reason.clone());
            }
            Record::Committed {
                round,
                version,
                parent,
                ..
            } => {
                // An approved candidate's commit is the approval's effect, listed with it.
                let approved = applying
                    .as_ref()
                    .is_some_and(|(k, v, _, _)| k == "approve" && v == version);
                if *round == 0 {
                    push(
                        "initial_model",
                        "coordinator",
                        Some(*version),
                        format!("v{version} is the initial model"),
                        "",
                    );
                } else if !approved {
                    push(
                        "gate_committed",
                        GATE,
                        Some(*version),
                        format!("v{version} committed (round {round}, built on v{parent})"),
                        gate_reason.get(version).map_or("", String::as_str),
                    );
                }
            }
            Record::AwaitingApproval { round, version, .. } => push(
                "gate_passed_awaiting_approval",
                GATE,
                Some(*version),
                format!(
                    "v{version} (round {round}) passed the gate; held for an operator's approval"
                ),
                gate_reason.get(version).map_or("", String::as_str),
            ),
            Record::Approved {
                version,
                by,
                reason,
            } => push(
                "approved",
                by,
                Some(*version),
                format!("v{version} approved and made current"),
                reason,
            ),
            Record::Rejected {
                round,
                version,
                current,
                reason,
                ..
            } => {
                // An operator's reject, a rollback's withdrawal of the candidate, or the gate.
                let by = match &applying {
                    Some((k, v, by, _)) if k == "reject" && Some(*v) == *version => by.clone(),
                    Some((k, _, by, _)) if k == "rollback" && reason.starts_with("withdrawn:") => {
                        by.clone()
                    }
                    // A round that made nothing to keep: the coordinator's call.
                    _ if version.is_none() => "coordinator".into(),
                    _ => GATE.into(),
                };
                let what = match version {
                    Some(v) => format!("v{v} (round {round}) rejected; v{current} stays current"),
                    None => format!("round {round} rejected; v{current} stays current"),
                };
                push("rejected", &by, *version, what, reason)
            }
            Record::RolledBack {
                from,
                to,
                by,
                reason,
                ..
            } => {
                push(
                    "rolled_back",
                    by,
                    Some(*to),
                    format!("rolled back from v{from} to v{to}"),
                    reason,
                );
                // A federation's decision, taken when it was: not part of the old version's run.
                if let Some(d) = out.last_mut() {
                    d.run = run;
                }
            }
            Record::DecisionRefused { file, reason } => push(
                "decision_refused",
                "(unverified decision file)",
                None,
                format!("decision file {file} refused"),
                reason,
            ),
            Record::Paused { by, reason } => {
                push("paused", by, None, "federation paused".into(), reason)
            }
            Record::Resumed { by } => push("resumed", by, None, "federation resumed".into(), ""),
            Record::RunSubmitted {
                run, rounds, by, ..
            } => push(
                "run_submitted",
                by,
                None,
                format!("run {run} submitted: {rounds} round(s)"),
                "",
            ),
            Record::RunCancelled { run, by, reason } => push(
                "run_cancelled",
                by,
                None,
                format!("run {run} cancelled"),
                reason,
            ),
            Record::Deployed {
                deployment,
                version,
                target,
                by,
                reason,
                ..
            } => push(
                "deployed",
                by,
                Some(*version),
                format!(
                    "deployment {deployment}: v{version} to {}",
                    target.describe()
                ),
                reason,
            ),
            Record::PolicyChanged { digest } => push(
                "policy_in_force",
                "policy file",
                None,
                format!("policy {} in force", &digest[..digest.len().min(12)]),
                "",
            ),
            Record::PolicyRefused { error } => push(
                "policy_refused",
                "policy file",
                None,
                "a changed policy file was refused; the previous one stays".into(),
                error,
            ),
            Record::SiloQuarantined { silo, until_round } => push(
                "silo_quarantined",
                "policy (admission)",
                None,
                format!("{silo} quarantined until round {until_round}"),
                "",
            ),
            Record::BudgetExhausted { round, reason } => push(
                "budget_exhausted",
                "privacy budget",
                None,
                format!("round {round} refused"),
                reason,
            ),
            Record::Abandoned { round, reason } => push(
                "round_abandoned",
                "participation rules",
                None,
                format!("round {round} abandoned"),
                reason,
            ),
            _ => {}
        }
    }
    if let Some(a) = applying.filter(|_| !applied_at.2) {
        out.push(not_applied(&a, (applied_at.0, applied_at.1)));
    }
    out
}
