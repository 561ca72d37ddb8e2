//! The run report: one self-contained HTML page (inline SVG charts, no external asset) drawn
//! from a state directory's `events.jsonl` — the global metric per round, per-silo metrics,
//! participation, refusals, privacy spend and round time by phase, with the rounds that were
//! rejected or abandoned and the local-only comparison. The coordinator writes
//! `<state_dir>/report.html` when a run ends; `fedsilo report` makes one on demand.
//!
//! The governance report ([`governance`]) is the other view of the same state directory: the
//! decisions, lineage, checkpoints, deployments, policies and privacy spend a reviewer files.

pub mod chart;
pub mod governance;
pub mod governance_build;
mod governance_decisions;
mod governance_members;
pub mod governance_page;
#[cfg(test)]
mod governance_tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use serde_json::Value;

use chart::{escape, lines, stacked_bars};

/// What the report is drawn from.
#[derive(Debug, Default)]
pub struct RunData {
    /// `configured` events' model and aggregation (the last one).
    pub model: String,
    /// The aggregation.
    pub aggregation: String,
    /// Committed rounds' summaries, in order.
    pub committed: Vec<Value>,
    /// Rounds that produced no new version: (round, outcome, reason).
    pub other: Vec<(u64, String, String)>,
    /// Refused updates per round, by silo.
    pub refusals: BTreeMap<u64, Vec<(String, String)>>,
    /// The last local-only comparison.
    pub comparison: Option<Value>,
    /// How the last run ended.
    pub finished: Option<Value>,
    /// The version current at the end: the last committed, approved or rolled back to.
    pub current: Option<u64>,
}

impl RunData {
    /// Reads `<state_dir>/events.jsonl` (lines that do not parse are skipped).
    pub fn read(state_dir: &Path) -> crate::Result<Self> {
        let path = state_dir.join("events.jsonl");
        let text =
            std::fs::read_to_string(&path).map_err(|e| crate::Error::io("reading", &path, e))?;
        let mut d = RunData::default();
        for e in text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            let round = e["round"].as_u64().unwrap_or(0);
            match e["event"].as_str().unwrap_or_default() {
                "configured" => {
                    d.model = s("model");
                    d.aggregation = s("aggregation");
                }
                "round_committed" => {
                    d.current = e["version"].as_u64();
                    d.committed.push(e)
                }
                "rolled_back" => d.current = e["to"].as_u64(),
                "round_rejected" => d.other.push((round, "rejected".into(), s("reason"))),
                "round_abandoned" => d.other.push((round, "abandoned".into(), s("reason"))),
                "update_refused" => d
                    .refusals
                    .entry(round)
                    .or_default()
                    .push((s("silo"), s("reason"))),
                "comparison" => d.comparison = Some(e),
                "finished" => d.finished = Some(e),
                _ => {}
            }
        }
        Ok(d)
    }
}

/// A silo's headline score in stored figures: its AUC, or a regression's R².
fn score(m: &Value) -> Option<f64> {
    m["auc"].as_f64().or_else(|| m["r2"].as_f64())
}

/// Example-weighted held-out score (AUC, or a regression's R²) of per-silo figures (a
/// round's `eval`, a version's `validation`); silos without one do not count.
pub fn weighted_score(eval: &Value) -> Option<f64> {
    let eval = eval.as_object()?;
    let (mut num, mut den) = (0.0, 0.0);
    for m in eval.values() {
        if let (Some(a), Some(n)) = (score(m), m["examples"].as_f64()) {
            num += a * n;
            den += n;
        }
    }
    (den > 0.0).then(|| num / den)
}

impl RunData {
    /// The run's headline score: `"R²"` when its rounds were scored as a regression, else
    /// `"AUC"`.
    pub fn score_name(&self) -> &'static str {
        let regression = self
            .committed
            .iter()
            .filter_map(|r| r["eval"].as_object())
            .flat_map(|e| e.values())
            .any(|m| m["r2"].is_number() || (m["mae"].is_number() && m["auc"].is_null()));
        if regression {
            "R²"
        } else {
            "AUC"
        }
    }
}

/// The charts of a run: (heading, what it shows, SVG).
pub fn charts(d: &RunData) -> Vec<(String, String, String)> {
    let rounds: Vec<u64> = d
        .committed
        .iter()
        .map(|r| r["round"].as_u64().unwrap_or(0))
        .collect();
    let f = |k: &str| -> Vec<Option<f64>> { d.committed.iter().map(|r| r[k].as_f64()).collect() };
    let name = d.score_name();
    let what = if name == "AUC" { "ROC AUC" } else { "R²" };
    let mut out = vec![];
    out.push((
        format!("Global held-out {name}"),
        format!("{what} of each committed version on every silo's held-out rows, weighted by their number."),
        lines(
            &format!("Global held-out {name} per round"),
            name,
            &rounds,
            &[(
                format!("weighted {name}"),
                d.committed.iter().map(|r| weighted_score(&r["eval"])).collect(),
            )],
        ),
    ));
    out.push((
        "Loss".to_string(),
        "Participants' mean training loss and the held-out loss of the committed version."
            .to_string(),
        lines(
            "Loss per round",
            "log loss",
            &rounds,
            &[
                ("train".into(), f("mean_train_loss")),
                ("held-out".into(), f("eval_loss")),
            ],
        ),
    ));
    let silos: BTreeSet<String> = d
        .committed
        .iter()
        .filter_map(|r| r["eval"].as_object())
        .flat_map(|e| e.keys().cloned())
        .collect();
    let per_silo: Vec<(String, Vec<Option<f64>>)> = silos
        .iter()
        .map(|s| {
            (
                s.clone(),
                d.committed.iter().map(|r| score(&r["eval"][s])).collect(),
            )
        })
        .collect();
    out.push((
        format!("Per-silo held-out {name}"),
        format!("Each silo's own held-out {what} of the committed version."),
        lines(
            &format!("Held-out {name} per silo"),
            name,
            &rounds,
            &per_silo,
        ),
    ));
    let count = |k: &str| -> Vec<f64> {
        d.committed
            .iter()
            .map(|r| r[k].as_array().map_or(0.0, |a| a.len() as f64))
            .collect()
    };
    out.push((
        "Participation".to_string(),
        "Silos whose update was aggregated, and silos of the cohort whose update was not."
            .to_string(),
        stacked_bars(
            "Participants per round",
            "silos",
            &rounds,
            &[
                ("aggregated".into(), count("participants")),
                ("missing".into(), count("missing")),
            ],
        ),
    ));
    // Refusals matter most in the rounds that made no version: every round is on this axis.
    let all: Vec<u64> = rounds
        .iter()
        .copied()
        .chain(d.other.iter().map(|(r, _, _)| *r))
        .chain(d.refusals.keys().copied())
        .collect::<BTreeSet<u64>>()
        .into_iter()
        .collect();
    out.push((
        "Refused updates".to_string(),
        "Updates an admission rule refused (non-finite, too large, wrong shape, late, …), in every round, also those that made no version.".to_string(),
        stacked_bars(
            "Refused updates per round",
            "updates",
            &all,
            &[(
                "refused".into(),
                all.iter()
                    .map(|r| d.refusals.get(r).map_or(0.0, |v| v.len() as f64))
                    .collect(),
            )],
        ),
    ));
    out.push((
        "Privacy spend".to_string(),
        "Cumulative ε of the most-spent silo (silo-level differential privacy); empty when the policy has none.".to_string(),
        lines(
            "Cumulative ε per round",
            "ε",
            &rounds,
            &[(
                "ε spent".into(),
                d.committed.iter().map(|r| r["privacy"]["epsilon"].as_f64()).collect(),
            )],
        ),
    ));
    // Rounds recorded with phase times show them; older ones training and the rest.
    let phased = d
        .committed
        .iter()
        .any(|r| r["phases"]["collect"].as_f64().is_some_and(|x| x > 0.0));
    let phase = |k: &str| -> Vec<f64> {
        d.committed
            .iter()
            .map(|r| r["phases"][k].as_f64().unwrap_or(0.0))
            .collect()
    };
    let (caption, series) = if phased {
        (
            "Time of each committed round by phase, on the coordinator's clock: opening it, collection (base to the silos, their training, updates back), aggregation, federated validation and the commit.",
            ["open", "collect", "aggregate", "validate", "commit"]
                .iter()
                .map(|k| (k.to_string(), phase(k)))
                .collect::<Vec<_>>(),
        )
    } else {
        (
            "Wall time of each committed round: the slowest participant's local training, and the rest (transfer, aggregation, validation).",
            vec![
                ("training".into(), f("slowest_train_seconds").into_iter().map(|v| v.unwrap_or(0.0)).collect()),
                ("overhead".into(), f("overhead_seconds").into_iter().map(|v| v.unwrap_or(0.0)).collect()),
            ],
        )
    };
    out.push((
        "Round time by phase".to_string(),
        caption.to_string(),
        stacked_bars("Round time by phase", "seconds", &rounds, &series),
    ));
    out
}

/// The page.
pub fn render(d: &RunData, title: &str) -> String {
    let mut h = String::new();
    // The current version's own figures (after a rollback, the version rolled back to).
    let current = d
        .current
        .and_then(|v| d.committed.iter().rev().find(|r| r["version"] == v));
    let _ = write!(
        h,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{t}</title><style>
body{{font-family:system-ui,sans-serif;margin:2rem;color:#222}}
h1{{font-size:1.5rem}} h2{{font-size:1.1rem;margin:0 0 .25rem}}
.grid{{display:flex;flex-wrap:wrap;gap:1.5rem}} figure{{margin:0;border:1px solid #ddd;border-radius:6px;padding:.75rem}}
figcaption{{font-size:.85rem;color:#555;max-width:640px;margin-bottom:.5rem}}
table{{border-collapse:collapse;font-size:.9rem;margin:.5rem 0 1.5rem}} td,th{{border:1px solid #ddd;padding:.25rem .6rem;text-align:left}}
.summary td:first-child{{color:#555}}
</style></head><body><h1>{t}</h1>"#,
        t = escape(title)
    );
    let finished = d.finished.as_ref().map_or(
        "still running (or stopped abruptly)".to_string(),
        |f| match f["error"].as_str() {
            Some(e) => format!("stopped: {e}"),
            None => format!(
                "finished: {} round(s) committed",
                f["rounds_committed"].as_u64().unwrap_or(0)
            ),
        },
    );
    let _ = write!(
        h,
        r#"<table class="summary"><tr><td>model</td><td>{}</td></tr><tr><td>aggregation</td><td>{}</td></tr><tr><td>committed rounds</td><td>{}</td></tr><tr><td>rejected or abandoned</td><td>{}</td></tr><tr><td>current version</td><td>{}</td></tr><tr><td>global held-out {}</td><td>{}</td></tr><tr><td>run</td><td>{}</td></tr></table>"#,
        escape(&d.model),
        escape(&d.aggregation),
        d.committed.len(),
        d.other.len(),
        d.current.map_or("-".into(), |v| v.to_string()),
        d.score_name(),
        current
            .and_then(|r| weighted_score(&r["eval"]))
            .map_or("-".into(), |a| format!("{a:.4}")),
        escape(&finished)
    );
    h.push_str(r#"<div class="grid">"#);
    for (heading, caption, svg) in charts(d) {
        let _ = write!(
            h,
            "<figure><h2>{}</h2><figcaption>{}</figcaption>{svg}</figure>",
            escape(&heading),
            escape(&caption)
        );
    }
    h.push_str("</div>");
    if !d.other.is_empty() {
        h.push_str("<h2>Rounds without a new version</h2><table><tr><th>round</th><th>outcome</th><th>why</th></tr>");
        for (r, what, why) in &d.other {
            let _ = write!(
                h,
                "<tr><td>{r}</td><td>{}</td><td>{}</td></tr>",
                escape(what),
                escape(why)
            );
        }
        h.push_str("</table>");
    }
    if !d.refusals.is_empty() {
        h.push_str(
            "<h2>Refused updates</h2><table><tr><th>round</th><th>silo</th><th>why</th></tr>",
        );
        for (r, list) in &d.refusals {
            for (silo, why) in list {
                let _ = write!(
                    h,
                    "<tr><td>{r}</td><td>{}</td><td>{}</td></tr>",
                    escape(silo),
                    escape(why)
                );
            }
        }
        h.push_str("</table>");
    }
    if let Some(rows) = d.comparison.as_ref().and_then(|c| c["rows"].as_array()) {
        let pooled = rows.iter().any(|r| r.get("pooled").is_some());
        let _ = write!(
            h,
            "<h2>Trained alone vs federated{} (held-out {})</h2><table><tr><th>silo</th><th>held-out rows</th><th>local only</th><th>federated</th>{}</tr>",
            if pooled { " vs pooled reference" } else { "" },
            d.score_name(),
            if pooled { "<th>pooled reference*</th>" } else { "" }
        );
        for r in rows {
            let auc = |k: &str| score(&r[k]).map_or("-".into(), |a| format!("{a:.3}"));
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                escape(r["silo"].as_str().unwrap_or_default()),
                r["examples"].as_u64().unwrap_or(0),
                auc("local"),
                auc("federated"),
                if pooled {
                    format!("<td>{}</td>", auc("pooled"))
                } else {
                    String::new()
                }
            );
        }
        h.push_str("</table>");
        if pooled {
            h.push_str("<p>* pooled reference: the same trainer on all the silos' training rows together, scored on each silo's held-out rows — a non-private reference that a real federation cannot compute.</p>");
        }
        // With `[business]`: each silo's capture at the first top k %, as the table prints it.
        let capture = |r: &Value, k: &str| {
            r[k]["business"]["top"][0]["capture"]
                .as_f64()
                .map_or("-".to_string(), |c| format!("{:.1} %", c * 100.0))
        };
        let top = rows
            .iter()
            .find_map(|r| r["federated"]["business"]["top"][0]["percent"].as_f64());
        if let Some(k) = top {
            let _ = write!(
                h,
                "<h2>Share of each silo's positives in its top {k} % of held-out scores</h2><table><tr><th>silo</th><th>local only</th><th>federated</th>{}</tr>",
                if pooled { "<th>pooled reference*</th>" } else { "" }
            );
            for r in rows {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td>{}</tr>",
                    escape(r["silo"].as_str().unwrap_or_default()),
                    capture(r, "local"),
                    capture(r, "federated"),
                    if pooled {
                        format!("<td>{}</td>", capture(r, "pooled"))
                    } else {
                        String::new()
                    }
                );
            }
            h.push_str("</table>");
        }
        let shortfalls = d
            .comparison
            .as_ref()
            .and_then(|c| c["shortfalls"].as_array());
        for s in shortfalls.into_iter().flatten() {
            let _ = write!(
                h,
                "<p class=\"warn\">{}: federated is {:.3} below local-only. Likely cause: {}</p>",
                escape(s["silo"].as_str().unwrap_or_default()),
                s["by"].as_f64().unwrap_or(f64::NAN),
                escape(s["advice"].as_str().unwrap_or_default())
            );
        }
    }
    // Marks how many charts the browser actually laid out with drawn marks (a check for
    // headless browsers and for people: it changes nothing on the page).
    h.push_str(
        r#"<script>addEventListener("load",function(){var c=document.querySelectorAll("svg.chart"),n=0;c.forEach(function(s){var r=s.getBoundingClientRect(),m=s.querySelectorAll(".series"),d=false;m.forEach(function(e){var b=e.getBBox();if(b.width>0||b.height>0)d=true});if(r.width>0&&r.height>0&&d)n++});document.body.setAttribute("data-charts-total",c.length);document.body.setAttribute("data-charts-rendered",n);document.body.setAttribute("data-charts-empty",document.querySelectorAll("svg.chart .note").length)});</script>"#,
    );
    h.push_str("</body></html>\n");
    h
}

/// Reads `state_dir`'s events and writes the report to `out`.
pub fn write(state_dir: &Path, out: &Path, title: &str) -> crate::Result<()> {
    let d = RunData::read(state_dir)?;
    let page = render(&d, title);
    std::fs::write(out, page).map_err(|e| crate::Error::io("writing", out, e))
}

/// Writes the governance report of `state_dir` as HTML to `html` and, if given, as JSON to
/// `json` (each written whole or not at all).
pub fn write_governance(
    state_dir: &Path,
    opts: governance::ReadOptions,
    html: &Path,
    json: Option<&Path>,
) -> crate::Result<governance::GovernanceReport> {
    let report = governance::read(state_dir, opts)?;
    crate::model::checkpoint::write_atomic(html, governance_page::render(&report).as_bytes())?;
    if let Some(path) = json {
        let text = serde_json::to_vec_pretty(&report).map_err(|e| crate::Error::Config {
            origin: path.display().to_string(),
            message: format!("cannot serialise the governance report: {e}"),
        })?;
        crate::model::checkpoint::write_atomic(path, &text)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_report_holds_every_chart_and_the_rounds_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let round = |r: u64, auc: f64| {
            json!({"event": "round_committed", "round": r, "version": r, "participants": ["a", "b"],
                   "missing": [["c", "late"]], "mean_train_loss": 0.5, "eval_loss": 0.4,
                   "eval": {"a": {"auc": auc, "examples": 10}, "b": {"auc": auc + 0.1, "examples": 30}},
                   "slowest_train_seconds": 1.0, "overhead_seconds": 0.2, "privacy": null})
        };
        let events = [
            json!({"event": "configured", "model": "mlp 3-2-1", "aggregation": "mean", "rounds": 3}),
            round(1, 0.6),
            json!({"event": "update_refused", "round": 2, "silo": "<c>", "reason": "non-finite"}),
            json!({"event": "round_abandoned", "round": 2, "reason": "quorum lost"}),
            round(3, 0.7),
            json!({"event": "finished", "rounds_committed": 2, "version": 3, "error": null}),
        ];
        let text: String = events.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(dir.path().join("events.jsonl"), text + "not json\n").unwrap();
        let d = RunData::read(dir.path()).unwrap();
        assert_eq!(d.committed.len(), 2);
        assert!((weighted_score(&d.committed[1]["eval"]).unwrap() - 0.775).abs() < 1e-12);
        // The refusals chart spans every round, also the abandoned one its refusal came from.
        let charts = charts(&d);
        let refused = &charts.iter().find(|c| c.0 == "Refused updates").unwrap().2;
        assert_eq!(
            refused.matches("<rect class=\"series\"").count(),
            1,
            "{refused}"
        );
        let page = render(&d, "churn");
        assert_eq!(page.matches("<svg class=\"chart\"").count(), 7);
        assert!(page.contains("quorum lost") && page.contains("&lt;c&gt;"));
        assert!(page.contains("0.7750"), "the summary's global AUC");
        assert!(
            !page.contains("src=") && !page.contains("href="),
            "self-contained: no external asset"
        );
    }

    /// After a rollback the summary names the version rolled back to and its figures, and an
    /// operator's rejection counts as a rejected round.
    #[test]
    fn the_summary_follows_rollbacks_and_rejections() {
        let dir = tempfile::tempdir().unwrap();
        let round = |r: u64, auc: f64| {
            json!({"event": "round_committed", "round": r, "version": r,
                   "eval": {"a": {"auc": auc, "examples": 10}}})
        };
        let events = [
            round(1, 0.61),
            round(2, 0.72),
            json!({"event": "round_rejected", "round": 3, "version": 3, "current": 2, "reason": "rejected by alice"}),
            json!({"event": "rolled_back", "from": 2, "to": 1, "by": "alice"}),
        ];
        let text: String = events.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(dir.path().join("events.jsonl"), text).unwrap();
        let d = RunData::read(dir.path()).unwrap();
        assert_eq!((d.current, d.other.len()), (Some(1), 1));
        let page = render(&d, "churn");
        assert!(
            page.contains("<td>current version</td><td>1</td>"),
            "the version rolled back to"
        );
        assert!(
            page.contains("0.6100") && !page.contains("0.7200</td>"),
            "v1's AUC"
        );
    }

    #[test]
    fn a_regression_run_is_reported_by_its_r2() {
        let dir = tempfile::tempdir().unwrap();
        let round = |r: u64, r2: f64| {
            json!({"event": "round_committed", "round": r, "version": r, "participants": ["a", "b"],
                   "missing": [], "mean_train_loss": 0.5, "eval_loss": 0.4,
                   "eval": {"a": {"auc": null, "accuracy": null, "r2": r2, "mae": 3.0, "examples": 10},
                            "b": {"auc": null, "accuracy": null, "r2": r2 + 0.2, "mae": 2.0, "examples": 30}},
                   "slowest_train_seconds": 1.0, "overhead_seconds": 0.2, "privacy": null})
        };
        let events = [round(1, 0.1), round(2, 0.3)];
        let text: String = events.iter().map(|e| format!("{e}\n")).collect();
        std::fs::write(dir.path().join("events.jsonl"), text).unwrap();
        let d = RunData::read(dir.path()).unwrap();
        assert_eq!(d.score_name(), "R²");
        assert!((weighted_score(&d.committed[1]["eval"]).unwrap() - 0.45).abs() < 1e-12);
        let page = render(&d, "incomes");
        assert!(page.contains("Global held-out R²") && page.contains("0.4500"));
        assert!(!page.contains("AUC"), "a regression has no AUC to show");
    }
}
