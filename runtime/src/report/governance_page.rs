//! The governance report as one self-contained HTML page: no script, style or font from
//! elsewhere, printable, and carrying the report's JSON (`<script type="application/json"
//! id="governance-data">`) so that the page and the JSON cannot disagree. A small script checks,
//! once the browser has laid the page out, that every decision, run, version, deployment and
//! silo of the JSON has its row, and that nothing is wider than the window; it writes what it
//! found into the `body`'s `data-*` attributes (for headless browsers and for people).

use std::fmt::Write;

use super::chart::escape;
use super::governance::*;

/// A time in UTC, to the second.
pub fn when(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".into(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// A time in a table cell (kept on one line).
fn at(ms: u64) -> String {
    format!("<span class=\"t\">{}</span>", when(ms))
}

fn opt_when(ms: Option<u64>) -> String {
    ms.map_or_else(|| "-".into(), at)
}

/// A policy's rules as `table.key = value` lines (unset ones left out).
fn rules(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Null => {}
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                rules(&key, x, out);
            }
        }
        x => out.push(format!("{prefix} = {x}")),
    }
}

fn e(s: &str) -> String {
    escape(s)
}

/// A digest in full, breakable, with its first 12 digits to read.
fn hash(h: &str) -> String {
    if h.is_empty() {
        return "-".into();
    }
    format!("<code class=\"hash\" title=\"{0}\">{0}</code>", e(h))
}

/// A digest's first 12 digits, the whole in its title.
fn short(h: &str) -> String {
    if h.is_empty() {
        return "-".into();
    }
    let first: String = h.chars().take(12).collect();
    format!("<code title=\"{}\">{}</code>", e(h), e(&first))
}

fn score(s: Option<f64>) -> String {
    s.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn v(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| format!("v{n}"))
}

/// A table: `id` (may be empty), headers, rows of cells that are already HTML.
fn table(out: &mut String, id: &str, head: &[&str], rows: &[Vec<String>]) {
    let id = if id.is_empty() {
        String::new()
    } else {
        format!(" id=\"{id}\"")
    };
    let _ = write!(out, "<table{id}><thead><tr>");
    for h in head {
        let _ = write!(out, "<th>{}</th>", e(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr class=\"none\"><td colspan=\"{}\">none</td></tr>",
            head.len()
        );
    }
    for r in rows {
        out.push_str("<tr>");
        for c in r {
            let _ = write!(out, "<td>{c}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

const STYLE: &str = r#"body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:100%}
h1{font-size:1.5rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #ccc} h3{font-size:1rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1rem;max-width:100%} td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:left;vertical-align:top} td{overflow-wrap:anywhere} .t{white-space:nowrap}
th{background:#f4f4f4} tr.none td{color:#777;font-style:italic}
code.hash{font-size:.75rem;word-break:break-all;display:inline-block;max-width:14rem}
.ok{background:#e8f5e9;border:1px solid #2e7d32;padding:.5rem 1rem} .bad{background:#ffebee;border:1px solid #c62828;padding:.5rem 1rem}
nav a{margin-right:1rem} .muted{color:#666;font-size:.85rem}
@media print{nav{display:none} h2{break-after:avoid} tr{break-inside:avoid}}"#;

/// The page.
pub fn render(r: &GovernanceReport) -> String {
    let mut h = String::new();
    let title = format!("Governance report — {}", r.federation);
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p class=\"muted\">Generated {} from the coordinator's signed audit journal, model registry, policy archive and privacy book. Times are UTC.</p>",
        when(r.generated_ms),
        t = e(&title)
    );
    h.push_str("<nav><a href=\"#integrity\">Integrity</a><a href=\"#decisions\">Decisions</a><a href=\"#runs\">Runs</a><a href=\"#versions\">Versions</a><a href=\"#gate\">Gate evidence</a><a href=\"#deployments\">Deployments</a><a href=\"#policies\">Policies</a><a href=\"#privacy\">Privacy</a><a href=\"#silos\">Silos</a><a href=\"#roster\">Roster</a></nav>");
    integrity(&mut h, r);
    decisions(&mut h, r);
    runs(&mut h, r);
    versions(&mut h, r);
    gate(&mut h, r);
    deployments(&mut h, r);
    policies(&mut h, r);
    privacy(&mut h, r);
    h.push_str("<section id=\"silos\"><h2>Silo contributions (the federation's life)</h2><p class=\"muted\">Weight share: a silo's share of each committed version's aggregate (its examples over all participants' examples; under differential privacy every admitted update weighs the same), averaged over the committed versions, 0 for those it missed. A robust kernel may still have left an admitted update out.</p>");
    silo_table(&mut h, "silo-table", &r.silos);
    h.push_str("</section>");
    roster(&mut h, r);
    // The JSON, with `<`, `>` and `&` written as escapes: no value can end the element or
    // put the HTML parser in another state.
    let json = serde_json::to_string(r)
        .unwrap_or_else(|_| "{}".into())
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    let _ = writeln!(
        h,
        "<script type=\"application/json\" id=\"governance-data\">{json}</script>{CHECK}</body></html>"
    );
    h
}

fn integrity(h: &mut String, r: &GovernanceReport) {
    let j = &r.journal;
    h.push_str("<section id=\"integrity\"><h2>Integrity and summary</h2>");
    match &j.problem {
        None => {
            let _ = write!(
                h,
                "<p class=\"ok\">The audit journal verifies: {} entries, hash-chained and signed{}, from {} to {}; {}.</p>",
                j.entries,
                if j.ca_checked {
                    " by coordinators whose certificates the consortium CA issued"
                } else {
                    " (signers' certificates not checked against a CA: pass --ca)"
                },
                opt_when(j.first_ms),
                opt_when(j.last_ms),
                if j.files_checked {
                    "every checkpoint file matches its recorded SHA-256"
                } else {
                    "checkpoint files were not hashed for this report (fedsilo audit verify, or fedsilo report --governance, checks them)"
                }
            );
        }
        Some(p) => {
            let _ = write!(
                h,
                "<p class=\"bad\">The audit journal does NOT verify: {}. This report holds only the {} entries before it; do not rely on it until the state directory is restored.</p>",
                e(p),
                j.entries
            );
        }
    }
    if !j.discrepancies.is_empty() {
        let _ = write!(
            h,
            "<p class=\"bad\">The model registry (unsigned) disagrees with the journal; this report shows the journal's word: {}</p>",
            e(&j.discrepancies.join("; "))
        );
    }
    let s = &r.summary;
    let rows = vec![
        vec!["current version".into(), v(s.current_version)],
        vec!["runs".into(), s.runs.to_string()],
        vec!["versions committed".into(), s.committed.to_string()],
        vec!["candidates rejected".into(), s.rejected.to_string()],
        vec!["awaiting approval".into(), v(s.awaiting_approval)],
        vec!["deployment orders".into(), s.deployments.to_string()],
        vec!["decisions recorded".into(), s.decisions.to_string()],
        vec![
            "paused".into(),
            s.paused
                .as_ref()
                .map_or("no".into(), |(by, why)| e(&format!("by {by}: {why}"))),
        ],
    ];
    table(h, "summary", &["", ""], &rows);
    let rows: Vec<Vec<String>> = j
        .signers
        .iter()
        .map(|s| {
            vec![
                s.seq.to_string(),
                at(s.time_ms),
                e(&s.node),
                hash(&s.certificate_sha256),
            ]
        })
        .collect();
    h.push_str("<h3>Signers of the journal</h3>");
    table(
        h,
        "signers",
        &["from entry", "since", "coordinator", "certificate SHA-256"],
        &rows,
    );
    h.push_str("</section>");
}

fn decisions(h: &mut String, r: &GovernanceReport) {
    h.push_str("<section id=\"decisions\"><h2>Decisions</h2><p class=\"muted\">Every decision in the journal, with who took it: an operator (certificate name), an API token (<code>token NAME</code>), the validation gate, or a rule of the policy. An operator's signed decision file is named by its SHA-256.</p>");
    let rows: Vec<Vec<String>> = r
        .decisions
        .iter()
        .map(|d| {
            vec![
                d.seq.to_string(),
                at(d.time_ms),
                d.run.map_or("-".into(), |n| n.to_string()),
                e(&d.by),
                e(&d.what),
                e(&d.reason),
                d.decision_sha256.as_deref().map_or("-".into(), hash),
            ]
        })
        .collect();
    table(
        h,
        "decision-table",
        &[
            "entry",
            "when",
            "run",
            "by",
            "decision",
            "reason",
            "signed decision",
        ],
        &rows,
    );
    h.push_str("</section>");
}

fn runs(h: &mut String, r: &GovernanceReport) {
    h.push_str("<section id=\"runs\"><h2>Runs</h2>");
    let rows: Vec<Vec<String>> = r
        .runs
        .iter()
        .map(|x| {
            vec![
                x.id.to_string(),
                e(&x.submitted_by),
                at(x.submitted_ms),
                opt_when(x.started_ms),
                opt_when(x.ended_ms),
                e(&x.state),
                e(&x.detail),
                x.rounds.len().to_string(),
                x.versions
                    .iter()
                    .map(|n| format!("v{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        })
        .collect();
    table(
        h,
        "run-table",
        &[
            "run",
            "submitted by",
            "submitted",
            "started",
            "ended",
            "state",
            "detail",
            "rounds",
            "versions",
        ],
        &rows,
    );
    for x in &r.runs {
        let _ = write!(
            h,
            "<section class=\"run\" id=\"run-{}\"><h3>Run {}</h3><p>Plan: <code>{}</code></p>",
            x.id,
            x.id,
            e(&x.plan.to_string())
        );
        silo_table(h, "", &x.silos);
        h.push_str("</section>");
    }
    h.push_str("</section>");
}

fn versions(h: &mut String, r: &GovernanceReport) {
    h.push_str("<section id=\"versions\"><h2>Versions and lineage</h2><p class=\"muted\">Each version names the version it was built on, its checkpoint file and that file's SHA-256 (as the journal recorded it), the SHA-256 of its parameters and of the policy in force (first 12 digits; the whole in the policies section).</p>");
    let rows: Vec<Vec<String>> = r
        .versions
        .iter()
        .map(|x| {
            vec![
                format!(
                    "v{}{}",
                    x.version,
                    if x.current { " (current)" } else { "" }
                ),
                format!("v{}", x.parent),
                x.round.to_string(),
                x.run.map_or("-".into(), |n| n.to_string()),
                e(x.status),
                e(&x.decided_by),
                at(x.created_ms),
                format!("{}<br>{}", e(&x.checkpoint), hash(&x.file_sha256)),
                hash(&x.parameters_sha256),
                short(&x.policy_digest),
                e(&x.aggregation),
                e(&x.deployed_at.join(", ")),
            ]
        })
        .collect();
    table(
        h,
        "version-table",
        &[
            "version",
            "parent",
            "round",
            "run",
            "status",
            "decided by",
            "made",
            "checkpoint",
            "file SHA-256",
            "parameters SHA-256",
            "policy",
            "aggregation",
            "deployed at",
        ],
        &rows,
    );
    h.push_str("</section>");
}

fn gate(h: &mut String, r: &GovernanceReport) {
    h.push_str("<section id=\"gate\"><h2>The gate's evidence</h2><p class=\"muted\">What the validation gate compared for each version: every silo's held-out score of the candidate beside its parent's, on the silo's own held-out rows (they never left the silo), and the gate's reason.</p>");
    let rows: Vec<Vec<String>> = r
        .versions
        .iter()
        .map(|x| {
            let g = &x.gate;
            let per_silo = g
                .figures
                .iter()
                .map(|(s, m)| {
                    let parent = g.parent_figures.get(s).and_then(|p| p.score());
                    format!(
                        "{}: {} (parent {}, {} rows)",
                        e(s),
                        score(m.score()),
                        score(parent),
                        m.examples
                    )
                })
                .collect::<Vec<_>>()
                .join("<br>");
            vec![
                format!("v{}", x.version),
                e(g.score_name),
                score(g.weighted_score),
                score(g.parent_score),
                g.change.map_or("-".into(), |c| {
                    format!("{c:+.4} on {}", e(&g.compared_on.join(", ")))
                }),
                per_silo,
                e(x.status),
                e(&x.reason),
            ]
        })
        .collect();
    table(
        h,
        "gate-table",
        &[
            "version",
            "score",
            "weighted",
            "parent",
            "change on the silos that scored both",
            "per silo",
            "outcome",
            "reason",
        ],
        &rows,
    );
    h.push_str("</section>");
}

fn deployments(h: &mut String, r: &GovernanceReport) {
    h.push_str("<section id=\"deployments\"><h2>Deployments</h2><p class=\"muted\">Orders signed by the coordinator; a silo confirms by reporting the version it runs.</p>");
    let rows: Vec<Vec<String>> = r
        .deployments
        .iter()
        .map(|d| {
            vec![
                d.id.to_string(),
                at(d.time_ms),
                format!("v{}", d.version),
                hash(&d.digest),
                e(&d.target),
                e(&d.by),
                e(&d.reason),
                e(&d.confirmed.join(", ")),
                e(&d.refused
                    .iter()
                    .map(|(s, why)| format!("{s}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")),
            ]
        })
        .collect();
    table(
        h,
        "deployment-table",
        &[
            "order",
            "when",
            "version",
            "parameters SHA-256",
            "to",
            "by",
            "reason",
            "confirmed by",
            "refused by",
        ],
        &rows,
    );
    h.push_str("</section>");
}

fn policies(h: &mut String, r: &GovernanceReport) {
    h.push_str("<section id=\"policies\"><h2>Policies</h2><p class=\"muted\">Every policy text the journal names, by SHA-256; the texts are kept in the state directory's <code>policies/</code>.</p>");
    let rows: Vec<Vec<String>> = r
        .policies
        .iter()
        .map(|p| {
            vec![
                hash(&p.digest),
                opt_when(p.since_ms),
                if p.in_force {
                    "yes".into()
                } else {
                    "no".into()
                },
                p.versions
                    .iter()
                    .map(|n| format!("v{n}"))
                    .collect::<Vec<_>>()
                    .join(" "),
                e(&p.archive),
                p.rules.as_ref().map_or("-".into(), |v| {
                    let mut lines = vec![];
                    rules("", v, &mut lines);
                    format!(
                        "<code>{}</code>",
                        e(&lines.join("\n")).replace('\n', "<br>")
                    )
                }),
            ]
        })
        .collect();
    table(
        h,
        "policy-table",
        &[
            "SHA-256",
            "in force since",
            "in force now",
            "versions made under it",
            "text",
            "rules",
        ],
        &rows,
    );
    h.push_str("</section>");
}

fn privacy(h: &mut String, r: &GovernanceReport) {
    h.push_str("<section id=\"privacy\"><h2>Differential privacy</h2>");
    match &r.privacy {
        None => h.push_str("<p>No silo-level differential privacy: the policy has no <code>[privacy]</code> and no silo's data was ever charged.</p>"),
        Some(p) => {
            let _ = write!(
                h,
                "<p>Mode <b>{}</b>, clipping norm {}, noise multiplier {}, federation budget ε = {} at δ = {:e}{}.</p>",
                e(p.mode.as_deref().unwrap_or("none in the policy in force")),
                p.clip_norm.map_or("-".into(), |c| c.to_string()),
                p.noise_multiplier.map_or("-".into(), |c| c.to_string()),
                p.budget_epsilon.map_or("uncapped".into(), |c| c.to_string()),
                p.delta,
                if p.policy_digest.is_none() {
                    " (the policy in force was not kept: budgets unknown)"
                } else {
                    ""
                }
            );
            let rows: Vec<Vec<String>> = p
                .silos
                .iter()
                .map(|s| {
                    vec![
                        e(&s.silo),
                        format!("{:.4}", s.spent),
                        format!("{:e}", s.delta),
                        s.budget.map_or("uncapped".into(), |b| b.to_string()),
                        s.left.map_or("-".into(), |l| format!("{l:.4}")),
                    ]
                })
                .collect();
            table(h, "privacy-table", &["silo", "ε spent", "δ", "ε budget", "ε left"], &rows);
        }
    }
    h.push_str("</section>");
}

/// A count, and what it counts below it.
fn counted(n: usize, what: String) -> String {
    if n == 0 {
        "0".into()
    } else {
        format!("{n}<br>{what}")
    }
}

fn silo_table(h: &mut String, id: &str, silos: &[SiloReport]) {
    let rows: Vec<Vec<String>> = silos
        .iter()
        .map(|s| {
            // The rounds of each distinct reason, the first reason first.
            let list = |l: &[(u64, String)]| {
                let mut by: Vec<(&str, Vec<String>)> = vec![];
                for (r, why) in l {
                    match by.iter_mut().find(|(w, _)| w == why) {
                        Some((_, rounds)) => rounds.push(r.to_string()),
                        None => by.push((why, vec![r.to_string()])),
                    }
                }
                e(&by
                    .iter()
                    .map(|(why, rounds)| {
                        let word = if rounds.len() == 1 { "round" } else { "rounds" };
                        format!("{word} {}: {why}", rounds.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join("; "))
            };
            vec![
                e(&s.silo),
                e(s.region.as_deref().unwrap_or("-")),
                s.rounds_dispatched.to_string(),
                s.updates_admitted.to_string(),
                s.examples.to_string(),
                s.versions.to_string(),
                format!("{:.1} %", 100.0 * s.mean_weight_share),
                counted(s.refusals.len(), list(&s.refusals)),
                counted(s.excluded.len(), list(&s.excluded)),
                e(&s.quarantines
                    .iter()
                    .map(|(t, until)| format!("{} until round {until}", when(*t)))
                    .collect::<Vec<_>>()
                    .join("; ")),
                s.epsilon_spent.map_or("-".into(), |x| format!("{x:.4}")),
                v(s.deployed_version),
            ]
        })
        .collect();
    table(
        h,
        id,
        &[
            "silo",
            "region",
            "rounds asked",
            "updates admitted",
            "examples",
            "versions",
            "weight share",
            "refused",
            "left out",
            "quarantined",
            "ε spent",
            "deployed",
        ],
        &rows,
    );
}

fn roster(h: &mut String, r: &GovernanceReport) {
    let ro = &r.roster;
    let _ = write!(
        h,
        "<section id=\"roster\"><h2>Roster</h2><p class=\"muted\">{}</p>",
        if ro.from_federation_file && ro.members.is_empty() {
            "The federation file lists no [[members]]: there is no roster to check attendance against."
        } else if ro.from_federation_file {
            "The members the federation file expects ([[members]]), and what the coordinator last saw of each."
        } else {
            "The federation file was not given: members are those the events reported missing."
        }
    );
    let rows: Vec<Vec<String>> = ro
        .members
        .iter()
        .map(|m| {
            vec![
                e(&m.name),
                e(&m.region),
                e(&m.role),
                e(m.last_seen),
                m.missing_reports.to_string(),
            ]
        })
        .collect();
    table(
        h,
        "roster-table",
        &["member", "region", "role", "last seen", "reported missing"],
        &rows,
    );
    let _ = write!(
        h,
        "<p>Linked without being on the roster: {}</p></section>",
        if ro.unexpected.is_empty() {
            "none".into()
        } else {
            e(&ro.unexpected.join(", "))
        }
    );
}

/// Checks the laid-out page against its JSON (see the module documentation).
const CHECK: &str = r#"<script>addEventListener("load",function(){var b=document.body,d;try{d=JSON.parse(document.getElementById("governance-data").textContent)}catch(x){b.setAttribute("data-json","unreadable");return}
function rows(id){var t=document.getElementById(id);if(!t)return -1;return t.querySelectorAll("tbody tr:not(.none)").length}
var want={"decision-table":d.decisions.length,"run-table":d.runs.length,"version-table":d.versions.length,"gate-table":d.versions.length,"deployment-table":d.deployments.length,"policy-table":d.policies.length,"silo-table":d.silos.length,"roster-table":d.roster.members.length};
if(d.privacy)want["privacy-table"]=d.privacy.silos.length;var bad=[];for(var k in want){if(rows(k)!==want[k])bad.push(k+" "+rows(k)+"/"+want[k])}
if(document.querySelectorAll("section.run").length!==d.runs.length)bad.push("runs");
b.setAttribute("data-json","read");b.setAttribute("data-mismatches",bad.join(", ")||"none");b.setAttribute("data-sections",document.querySelectorAll("body > section").length);
b.setAttribute("data-decisions",rows("decision-table"));b.setAttribute("data-page-width",document.documentElement.scrollWidth);b.setAttribute("data-window-width",window.innerWidth)});</script>"#;
