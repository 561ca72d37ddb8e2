//! Unit tests of the governance report: a journal written by hand (two runs, the gate, an
//! approval, a rejection, a rollback, a deployment, a quarantine, DP) assembled and rendered.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::governance::*;
use super::governance_page::render;
use crate::audit::entry::{Body, GENESIS};
use crate::audit::verify::Checked;
use crate::audit::Record;
use crate::deploy::Target;
use crate::model::eval::EvalMetrics;
use crate::registry::{Status, VersionMeta};

const POLICY: &str = "[participation]\nmin_silos = 2\nquorum = 2\n\n[privacy]\nmode = \"central\"\nclip_norm = 0.5\nnoise_multiplier = 1.0\nbudget = { epsilon = 8.0, delta = 1e-5 }\n";

fn entries(records: Vec<Record>) -> Vec<Checked> {
    records
        .into_iter()
        .enumerate()
        .map(|(i, record)| Checked {
            line: i + 1,
            body: Body {
                seq: i as u64 + 1,
                time_ms: 1_764_000_000_000 + 1000 * i as u64,
                prev: GENESIS.into(),
                record,
            },
            hash: format!("h{i}"),
        })
        .collect()
}

fn auc(a: f64, n: u64) -> EvalMetrics {
    EvalMetrics {
        examples: n,
        loss: 0.5,
        accuracy: Some(0.7),
        auc: Some(a),
        r2: None,
        mae: None,
        personalized: None,
        business: None,
    }
}

fn meta(
    version: u64,
    parent: u64,
    round: u64,
    status: Status,
    run: Option<u64>,
    by: &str,
    policy: &str,
) -> VersionMeta {
    let figures: BTreeMap<String, EvalMetrics> = [
        ("a".to_string(), auc(0.6 + 0.05 * version as f64, 100)),
        ("b".to_string(), auc(0.7 + 0.05 * version as f64, 300)),
    ]
    .into();
    VersionMeta {
        version,
        parent,
        round,
        status,
        digest: format!("params{version}"),
        file_sha256: format!("file{version}"),
        participants: vec![("a".into(), 100), ("b".into(), 300)],
        aggregation: "mean".into(),
        policy_digest: policy.into(),
        privacy: None,
        validation: if round == 0 { BTreeMap::new() } else { figures },
        reason: String::new(),
        created_ms: 1_764_000_000_000,
        decided_by: by.into(),
        run,
    }
}

fn round(round: u64, base: u64, silos: &[&str]) -> Vec<Record> {
    let mut r = vec![Record::RoundStarted {
        round,
        base_version: base,
        base_digest: "d".into(),
        cohort: silos.iter().map(|s| s.to_string()).collect(),
        excluded: vec![("d".into(), "not linked".into())],
    }];
    for s in silos {
        r.push(Record::UpdateAdmitted {
            round,
            silo: s.to_string(),
            digest: "u".into(),
            norm: 1.0,
            examples: 100,
        });
    }
    r
}

/// The sources of the scenario in the module documentation.
fn scenario(dir: &std::path::Path) -> Sources {
    let policy = fedsilo_policies::Policy::from_toml_str(POLICY, "policy.toml").unwrap();
    let d = policy.digest.clone();
    let validated = |round, version, passed: bool, reason: &str| Record::Validated {
        round,
        version,
        passed,
        reason: reason.into(),
        figures: BTreeMap::new(),
    };
    let committed = |round, version, parent| Record::Committed {
        round,
        version,
        parent,
        digest: format!("params{version}"),
        file_sha256: format!("file{version}"),
        participants: vec![("a".into(), 100), ("b".into(), 300)],
    };
    let mut r = vec![
        Record::Signer {
            node: "coordinator".into(),
            certificate: "3082".into(),
            version: 0,
        },
        Record::PolicyChanged { digest: d.clone() },
        Record::RunSubmitted {
            run: 1,
            rounds: 2,
            by: "schedule".into(),
            settings: Default::default(),
            policy: Default::default(),
            key: None,
        },
        Record::RunStarted {
            run: 1,
            first_round: 1,
        },
    ];
    r.extend(round(1, 0, &["a", "b"]));
    r.push(Record::UpdateRefused {
        round: 1,
        silo: "c".into(),
        reason: "non-finite values".into(),
    });
    r.push(validated(1, 1, true, "auc 0.78 ≥ 0.60"));
    r.push(committed(1, 1, 0));
    r.push(Record::Deployed {
        deployment: 1,
        version: 1,
        digest: "params1".into(),
        target: Target::All,
        by: "policy auto_deploy".into(),
        reason: "committed".into(),
    });
    r.extend(round(2, 1, &["a", "b"]));
    r.push(validated(2, 2, true, "auc up"));
    r.push(Record::AwaitingApproval {
        round: 2,
        version: 2,
        file_sha256: "file2".into(),
    });
    r.push(Record::DecisionApplied {
        hash: "decision-hash-1".into(),
        decision: "approve".into(),
        version: 2,
        by: "alice".into(),
    });
    r.push(Record::Approved {
        version: 2,
        by: "alice".into(),
        reason: "reviewed".into(),
    });
    r.push(committed(2, 2, 1));
    r.push(Record::RunEnded {
        run: 1,
        committed: 2,
        error: None,
    });
    r.push(Record::RunSubmitted {
        run: 2,
        rounds: 1,
        by: "token ci".into(),
        settings: Default::default(),
        policy: Default::default(),
        key: None,
    });
    r.push(Record::RunStarted {
        run: 2,
        first_round: 3,
    });
    r.extend(round(3, 2, &["a"]));
    r.push(Record::SiloQuarantined {
        silo: "c".into(),
        until_round: 5,
    });
    r.push(validated(3, 3, false, "auc dropped 0.09 > 0.02"));
    r.push(Record::Rejected {
        round: 3,
        version: Some(3),
        file_sha256: Some("file3".into()),
        current: 2,
        reason: "auc dropped 0.09 > 0.02".into(),
    });
    r.push(Record::RunEnded {
        run: 2,
        committed: 0,
        error: None,
    });
    r.push(Record::DecisionApplied {
        hash: "decision-hash-2".into(),
        decision: "rollback".into(),
        version: 1,
        by: "token ops".into(),
    });
    r.push(Record::RolledBack {
        from: 2,
        to: 1,
        file_sha256: "file1".into(),
        by: "token ops".into(),
        reason: "complaints".into(),
    });
    let mut book = crate::privacy::budget::PrivacyBook::open(&dir.join("privacy.jsonl")).unwrap();
    book.record(1, "central", 1.0, 1.0, 1, &["a".into(), "b".into()])
        .unwrap();
    let events: Vec<Value> = vec![
        json!({"event": "silo_joined", "silo": "a", "region": "eu"}),
        json!({"event": "silo_deployed", "silo": "a", "version": 1, "deployment": 1}),
        json!({"event": "deployment_refused", "silo": "b", "version": 1, "reason": "a newer order"}),
        json!({"event": "member_missing", "member": "d", "region": "us", "role": "silo"}),
        json!({"event": "unexpected_member", "member": "<!--<script>x</script>", "role": "silo"}),
        json!({"event": "deployment_refused", "silo": "c", "version": 1, "deployment": 9, "reason": "<!--<script>"}),
    ];
    Sources {
        federation: "consortium".into(),
        generated_ms: 1_764_000_100_000,
        journal: JournalCheck::default(),
        entries: entries(r),
        versions: vec![
            meta(0, 0, 0, Status::Committed, None, "initial", &d),
            meta(1, 0, 1, Status::Committed, Some(1), "gate", &d),
            meta(2, 1, 2, Status::Committed, Some(1), "alice", &d),
            meta(3, 2, 3, Status::Rejected, Some(2), "gate", &d),
        ],
        events,
        policies: [(d, Ok(Some(policy)))].into(),
        book: Some(book),
        roster: None,
    }
}

fn find<'a>(r: &'a GovernanceReport, kind: &str) -> Vec<&'a Decision> {
    r.decisions.iter().filter(|d| d.kind == kind).collect()
}

#[test]
fn every_decision_names_who_took_it_and_the_run_it_belongs_to() {
    let dir = tempfile::tempdir().unwrap();
    let r = assemble(scenario(dir.path()));
    let gate = find(&r, "gate_committed");
    assert_eq!(
        gate.len(),
        1,
        "v2's commit is its approval's effect, not the gate's"
    );
    assert_eq!(
        (gate[0].by.as_str(), gate[0].version, gate[0].run),
        ("validation gate", Some(1), Some(1))
    );
    assert_eq!(gate[0].reason, "auc 0.78 ≥ 0.60", "the gate's reason");
    let approved = find(&r, "approved");
    assert_eq!(approved[0].by, "alice");
    assert_eq!(
        approved[0].decision_sha256.as_deref(),
        Some("decision-hash-1")
    );
    let rejected = find(&r, "rejected");
    assert_eq!(
        (rejected[0].by.as_str(), rejected[0].run),
        ("validation gate", Some(2))
    );
    let rolled = find(&r, "rolled_back");
    assert_eq!(rolled[0].by, "token ops");
    assert_eq!(
        rolled[0].decision_sha256.as_deref(),
        Some("decision-hash-2")
    );
    let submitted: Vec<(&str, Option<u64>)> = find(&r, "run_submitted")
        .iter()
        .map(|d| (d.by.as_str(), d.run))
        .collect();
    assert_eq!(submitted, [("schedule", Some(1)), ("token ci", Some(2))]);
    assert_eq!(find(&r, "deployed")[0].by, "policy auto_deploy");
    assert_eq!(find(&r, "silo_quarantined")[0].run, Some(2));
    assert_eq!(find(&r, "policy_in_force").len(), 1);
    assert!(
        r.decisions.windows(2).all(|w| w[0].seq < w[1].seq),
        "oldest first"
    );
    assert_eq!(r.summary.decisions, r.decisions.len());
}

#[test]
fn versions_carry_lineage_checkpoints_and_the_gates_evidence() {
    let dir = tempfile::tempdir().unwrap();
    let r = assemble(scenario(dir.path()));
    assert_eq!(r.summary.current_version, Some(1), "rolled back to v1");
    let v: BTreeMap<u64, &VersionReport> = r.versions.iter().map(|v| (v.version, v)).collect();
    assert!(v[&1].current && !v[&2].current);
    assert_eq!((v[&2].parent, v[&2].decided_by.as_str()), (1, "alice"));
    assert_eq!(v[&3].checkpoint, "models/candidates/v3.safetensors");
    assert_eq!(
        (v[&1].checkpoint.as_str(), v[&1].file_sha256.as_str()),
        ("models/v1.safetensors", "file1")
    );
    let g = &v[&2].gate;
    assert!(
        (g.weighted_score.unwrap() - 0.775).abs() < 1e-9,
        "(0.7·100 + 0.8·300)/400"
    );
    assert!(
        (g.parent_score.unwrap() - 0.725).abs() < 1e-9,
        "(0.65·100 + 0.75·300)/400"
    );
    assert_eq!(
        g.parent_figures.len(),
        2,
        "the parent's per-silo figures beside the candidate's"
    );
    let shares: Vec<f64> = v[&1].participants.iter().map(|p| p.weight_share).collect();
    assert_eq!(shares, [0.25, 0.75], "by examples");
    assert_eq!(v[&1].deployed_at, ["a"]);
    assert_eq!((v[&3].run, r.summary.rejected), (Some(2), 1));
}

#[test]
fn silos_contributions_privacy_deployments_policies_and_roster() {
    let dir = tempfile::tempdir().unwrap();
    let r = assemble(scenario(dir.path()));
    let s: BTreeMap<&str, &SiloReport> = r.silos.iter().map(|s| (s.silo.as_str(), s)).collect();
    assert_eq!(
        (
            s["a"].rounds_dispatched,
            s["a"].updates_admitted,
            s["a"].examples
        ),
        (3, 3, 300)
    );
    assert_eq!(s["a"].region.as_deref(), Some("eu"));
    assert_eq!(s["a"].deployed_version, Some(1));
    assert_eq!(s["c"].refusals, [(1, "non-finite values".to_string())]);
    assert_eq!(s["c"].quarantines.len(), 1);
    assert_eq!(s["d"].excluded.len(), 3);
    // Three committed versions after the initial one: v1, v2 (b holds 75 % of each).
    assert!(
        (s["b"].mean_weight_share - 0.75).abs() < 1e-12,
        "{}",
        s["b"].mean_weight_share
    );
    let spent_a = s["a"].epsilon_spent.unwrap();
    assert!(spent_a > 0.0);
    assert_eq!(s["c"].epsilon_spent, None, "never charged, no own budget");
    // Per run: run 1 had no quarantine, run 2 no refusal.
    let run1 = r.runs.iter().find(|x| x.id == 1).unwrap();
    let run2 = r.runs.iter().find(|x| x.id == 2).unwrap();
    assert_eq!(
        (run1.rounds.clone(), run1.versions.clone()),
        (vec![1, 2], vec![1, 2])
    );
    assert_eq!(
        (
            run2.rounds.clone(),
            run2.versions.clone(),
            run2.state.as_str()
        ),
        (vec![3], vec![3], "finished")
    );
    let c1 = run1.silos.iter().find(|x| x.silo == "c").unwrap();
    assert!(c1.quarantines.is_empty() && c1.refusals.len() == 1);
    assert!(run2.silos.iter().all(|x| x.refusals.is_empty()));
    let p = r.privacy.as_ref().unwrap();
    assert_eq!(
        (p.mode.as_deref(), p.budget_epsilon, p.delta),
        (Some("central"), Some(8.0), 1e-5)
    );
    let pa = p.silos.iter().find(|x| x.silo == "a").unwrap();
    assert!(
        (pa.spent - spent_a).abs() < 1e-12 && (pa.left.unwrap() - (8.0 - spent_a)).abs() < 1e-12
    );
    let d = &r.deployments[0];
    assert_eq!(
        (d.confirmed.clone(), d.refused.len(), d.target.as_str()),
        (vec!["a".to_string()], 1, "every silo")
    );
    assert_eq!(r.policies.len(), 1);
    assert!(r.policies[0].in_force && r.policies[0].archive == "kept");
    assert_eq!(r.policies[0].versions, [0, 1, 2, 3]);
    assert!(r.policies[0].rules.as_ref().unwrap()["privacy"]["clip_norm"] == 0.5);
    assert_eq!(r.roster.members[0].name, "d");
    assert_eq!(
        (
            r.roster.members[0].last_seen,
            r.roster.members[0].missing_reports
        ),
        ("missing", 1)
    );
}

#[test]
fn the_page_escapes_everything_and_carries_the_same_json() {
    let dir = tempfile::tempdir().unwrap();
    let r = assemble(scenario(dir.path()));
    let page = render(&r);
    assert!(
        !page.contains("<script>x</script>"),
        "a hostile member name is escaped"
    );
    assert!(page.contains("&lt;script&gt;x&lt;/script&gt;"));
    let start = page.find("id=\"governance-data\">").unwrap() + 21;
    let end = start + page[start..].find("</script>").unwrap();
    let embedded: Value = serde_json::from_str(&page[start..end]).unwrap();
    assert!(
        !page[start..end].contains('<') && page[start..end].contains("\\u003c!--"),
        "no value can change how the page is parsed"
    );
    assert_eq!(
        embedded,
        serde_json::to_value(&r).unwrap(),
        "the page's JSON is the report"
    );
    for id in [
        "decision-table",
        "run-table",
        "version-table",
        "gate-table",
        "deployment-table",
        "policy-table",
        "privacy-table",
        "silo-table",
        "roster-table",
    ] {
        assert!(page.contains(&format!("id=\"{id}\"")), "{id}");
    }
    assert!(
        !page.contains("src=") && !page.contains("http"),
        "self-contained"
    );
    assert!(page.contains("2025-11-24 "), "times in UTC");
}

#[test]
fn a_journal_that_does_not_verify_is_said_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = scenario(dir.path());
    src.journal.problem = Some("audit.jsonl:7 (seq 7): the signature does not verify".into());
    let page = render(&assemble(src));
    assert!(page.contains("class=\"bad\">The audit journal does NOT verify: audit.jsonl:7"));
}

/// A signed decision covers only the entries that carry it out; one journaled and never
/// carried out is shown as such; the unsigned registry does not override the journal.
#[test]
fn a_decision_is_attributed_only_to_its_own_effects_and_the_journal_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = scenario(dir.path());
    let n = src.entries.len();
    let mut extra = entries(vec![
        Record::Deployed {
            deployment: 2,
            version: 1,
            digest: "params1".into(),
            target: Target::All,
            by: "token ci".into(),
            reason: "later".into(),
        },
        Record::DecisionApplied {
            hash: "decision-hash-3".into(),
            decision: "approve".into(),
            version: 9,
            by: "bob".into(),
        },
    ]);
    for (i, e) in extra.iter_mut().enumerate() {
        e.body.seq = (n + i + 1) as u64;
    }
    src.entries.extend(extra);
    src.versions[2].file_sha256 = "forged".into();
    let r = assemble(src);
    let deployed = find(&r, "deployed");
    assert_eq!(deployed.len(), 2);
    assert_eq!(
        (
            deployed[1].by.as_str(),
            deployed[1].decision_sha256.as_deref()
        ),
        ("token ci", None),
        "the rollback's signed decision does not reach a later, unrelated order"
    );
    let pending = find(&r, "decision_not_applied");
    assert_eq!((pending.len(), pending[0].by.as_str()), (1, "bob"));
    assert_eq!(
        pending[0].decision_sha256.as_deref(),
        Some("decision-hash-3")
    );
    let v2 = r.versions.iter().find(|v| v.version == 2).unwrap();
    assert_eq!(v2.file_sha256, "file2", "the journal's word");
    assert_eq!(
        r.journal.discrepancies.len(),
        1,
        "{:?}",
        r.journal.discrepancies
    );
    // The gate's change is over the silos that scored both versions.
    assert!((v2.gate.change.unwrap() - 0.05).abs() < 1e-9);
    assert_eq!(v2.gate.compared_on, ["a", "b"]);
    assert_eq!(
        r.summary.committed, 2,
        "v1 and v2; the initial model is not a commit"
    );
    // The refusal of order 9 is not order 1's.
    assert_eq!(r.deployments[0].refused.len(), 1);
}
