//! The end-of-run comparison: per silo, the held-out score of a model trained on the silo's
//! data alone, of the federated model and — where all the data is on one machine, as in the
//! examples — of the pooled reference (the same trainer on the union of the silos' training
//! rows, a non-private figure no real federation can compute). It answers a consortium's two
//! questions: "are we better off than alone?" and "how much does not pooling cost?".
//!
//! Where the federated model is worse than local-only at a silo, [`shortfalls`] says so with
//! the likely cause and what to try. The causes are told apart from what the coordinator
//! knows, in this order: privacy noise (the run added silo-level DP noise to the updates; a
//! silo's own DP-SGD is its business and the coordinator is not told); too few rounds (the
//! federated score was still rising at the end); otherwise the silo's data is unlike the
//! others' (its own model fits its own held-out rows better).
//! Pure functions of the rows and the run's context, so the rules are tested without sockets.

use serde::Serialize;

use crate::model::eval::EvalMetrics;

/// One silo's row of the comparison.
#[derive(Debug, Clone, Serialize)]
pub struct ComparisonRow {
    /// The silo.
    pub silo: String,
    /// Its held-out examples.
    pub examples: u64,
    /// Held-out metrics of a model trained on the silo's data alone.
    pub local: Option<EvalMetrics>,
    /// Held-out metrics of the federated model.
    pub federated: Option<EvalMetrics>,
    /// Held-out metrics of the pooled reference (`federation.pooled_reference`): the same
    /// trainer on the union of the silos' training rows — a non-private figure a real
    /// federation cannot compute.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pooled: Option<EvalMetrics>,
    /// Why a side is missing, if one is.
    pub note: Option<String>,
}

/// Why the federated model is worse than local-only at a silo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The run added silo-level DP noise to the updates.
    PrivacyNoise,
    /// The federated score was still rising when the run ended.
    TooFewRounds,
    /// Neither: the silo's data is unlike the others'.
    UnlikeOthers,
}

/// A silo where federating did not pay, why, and what to try.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Shortfall {
    /// The silo.
    pub silo: String,
    /// How far the federated score is below local-only.
    pub by: f64,
    /// The likely cause.
    pub cause: Cause,
    /// What to try, in a sentence.
    pub advice: String,
}

/// What the coordinator knows about the run that bears on a shortfall's cause.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunContext {
    /// Rounds the run ran.
    pub rounds: u64,
    /// Silo-level DP noise was added to the updates in this run.
    pub privacy_noise: bool,
    /// The federation's held-out score (example-weighted) at each version the run committed,
    /// in order: whether it was still rising at the end.
    pub scores: Vec<f64>,
}

/// How much the score must have risen over the last quarter of the run for the run to count
/// as cut short (AUC or R² points).
pub const STILL_RISING: f64 = 0.002;

impl RunContext {
    /// The rise of the federated score over the last quarter of the run (at least the last two
    /// versions), if there were enough versions to tell.
    pub fn late_gain(&self) -> Option<f64> {
        let n = self.scores.len();
        if n < 4 {
            return None;
        }
        let back = (n / 4).max(2);
        Some(self.scores[n - 1] - self.scores[n - 1 - back])
    }
}

/// Every silo whose federated score is below its local-only score, worst first, with the
/// likely cause and what to try.
pub fn shortfalls(rows: &[ComparisonRow], ctx: &RunContext) -> Vec<Shortfall> {
    let mut out: Vec<Shortfall> = rows
        .iter()
        .filter_map(|r| {
            let l = r.local.as_ref().and_then(EvalMetrics::score)?;
            let f = r.federated.as_ref().and_then(EvalMetrics::score)?;
            (f < l).then(|| {
                let (cause, advice) = cause(ctx);
                Shortfall {
                    silo: r.silo.clone(),
                    by: l - f,
                    cause,
                    advice,
                }
            })
        })
        .collect();
    out.sort_by(|a, b| b.by.total_cmp(&a.by));
    out
}

fn cause(ctx: &RunContext) -> (Cause, String) {
    if ctx.privacy_noise {
        return (
            Cause::PrivacyNoise,
            "privacy noise: the updates carry DP noise that a model trained alone does not. Try a larger ε budget, more silos per round (the noise is shared among them), or fewer, longer rounds (plan.epochs)".into(),
        );
    }
    match ctx.late_gain() {
        Some(g) if g >= STILL_RISING => (
            Cause::TooFewRounds,
            format!(
                "too few rounds: the federated score was still rising at the end (+{g:.3} over the last quarter of the run). Try twice the rounds ({}), with early stopping (validation.patience) to stop when it levels off",
                (ctx.rounds * 2).max(2)
            ),
        ),
        _ => (
            Cause::UnlikeOthers,
            "this silo's data is unlike the others': its own model fits its own held-out rows better than the shared one. Try personalisation (plan.personalize_epochs), FedProx (plan.prox_mu), or check that its columns mean what the others' do".into(),
        ),
    }
}

/// The example-weighted mean of one column's score over the rows that have it; `None` if no
/// row has it.
pub fn weighted(
    rows: &[ComparisonRow],
    pick: impl Fn(&ComparisonRow) -> Option<&EvalMetrics>,
) -> Option<f64> {
    crate::model::eval::weighted_score(rows.iter().filter_map(pick))
}

/// The comparison as the coordinator prints it: a row per silo, the weighted mean, the
/// pooled column's meaning when it is there, and a line per silo where federating did not pay.
pub fn table(rows: &[ComparisonRow], shortfalls: &[Shortfall]) -> String {
    let all = rows
        .iter()
        .flat_map(|r| r.local.iter().chain(&r.federated).chain(&r.pooled));
    let name = crate::model::eval::score_name(all);
    let pooled = rows.iter().any(|r| r.pooled.is_some());
    let mut t = match (name, pooled) {
        ("R²", false) => String::from("\nHeld-out R² per silo: trained alone vs federated\n"),
        ("R²", true) => {
            String::from("\nHeld-out R² per silo: trained alone, federated, pooled reference\n")
        }
        (_, false) => String::from("\nHeld-out ROC AUC per silo: trained alone vs federated\n"),
        (_, true) => String::from(
            "\nHeld-out ROC AUC per silo: trained alone, federated, pooled reference\n",
        ),
    };
    t.push_str(&format!(
        "{:<14} {:>9} {:>12} {:>10} {:>8}",
        "silo", "held-out", "local only", "federated", "gain"
    ));
    if pooled {
        t.push_str(&format!(" {:>9} {:>9}", "pooled*", "fed−pool"));
    }
    t.push('\n');
    let line = |t: &mut String, silo: &str, examples: String, l: Option<f64>, f, p| {
        let diff = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => format!("{:+.3}", a - b),
            _ => "-".into(),
        };
        let num = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.3}"));
        t.push_str(&format!(
            "{silo:<14} {examples:>9} {:>12} {:>10} {:>8}",
            num(l),
            num(f),
            diff(f, l)
        ));
        if pooled {
            t.push_str(&format!(" {:>9} {:>9}", num(p), diff(f, p)));
        }
    };
    for r in rows {
        let score = |m: Option<&EvalMetrics>| m.and_then(EvalMetrics::score);
        line(
            &mut t,
            &r.silo,
            r.examples.to_string(),
            score(r.local.as_ref()),
            score(r.federated.as_ref()),
            score(r.pooled.as_ref()),
        );
        if let Some(n) = &r.note {
            t.push_str(&format!("  ({n})"));
        }
        t.push('\n');
    }
    if rows.len() > 1 {
        let n: u64 = rows.iter().map(|r| r.examples).sum();
        line(
            &mut t,
            "weighted",
            n.to_string(),
            weighted(rows, |r| r.local.as_ref()),
            weighted(rows, |r| r.federated.as_ref()),
            weighted(rows, |r| r.pooled.as_ref()),
        );
        t.push('\n');
    }
    if pooled {
        t.push_str("* pooled: the same trainer on all the silos' training rows together — a non-private reference\n");
    }
    t.push_str(&capture_table(rows, pooled));
    for s in shortfalls {
        t.push_str(&format!(
            "! {}: federated is {:.3} below local-only. Likely cause: {}\n",
            s.silo, s.by, s.advice
        ));
    }
    t
}

/// With the policy's `[business]`: each silo's capture at the first top k % for local-only,
/// federated (and pooled), and what the difference means at the same outreach budget.
fn capture_table(rows: &[ComparisonRow], pooled: bool) -> String {
    fn capture(m: Option<&EvalMetrics>) -> Option<&crate::model::business::BusinessMetrics> {
        m.and_then(|m| m.business.as_ref())
    }
    let Some(k) = rows
        .iter()
        .find_map(|r| capture(r.federated.as_ref()))
        .and_then(|b| b.top.first().map(|t| t.percent))
    else {
        return String::new();
    };
    let mut t = format!(
        "\nShare of each silo's positives in its top {k} % of held-out scores (business.top_percent)\n{:<14} {:>12} {:>10}{}\n",
        "silo",
        "local only",
        "federated",
        if pooled { "   pooled*" } else { "" }
    );
    let cell = |m: Option<&EvalMetrics>| {
        capture(m)
            .and_then(|b| b.capture())
            .map_or("-".to_string(), |c| format!("{:.1} %", c * 100.0))
    };
    let mut lines = Vec::new();
    for r in rows {
        t.push_str(&format!(
            "{:<14} {:>12} {:>10}{}\n",
            r.silo,
            cell(r.local.as_ref()),
            cell(r.federated.as_ref()),
            if pooled {
                format!(" {:>10}", cell(r.pooled.as_ref()))
            } else {
                String::new()
            }
        ));
        let (l, f) = (capture(r.local.as_ref()), capture(r.federated.as_ref()));
        if let (Some(l), Some(f)) = (l, f) {
            if let (Some(lc), Some(fc)) = (l.capture(), f.capture()) {
                // Positives per 1,000 rows found in the same top k %: capture × base rate.
                let more = (fc - lc) * f.base_rate * 1000.0;
                lines.push(format!(
                    "  {}: at the same outreach budget (the top {k} %), the federated model finds {:.0} {} positives per 1,000 customers than the silo's own model",
                    r.silo,
                    more.abs(),
                    if more >= 0.0 { "more" } else { "fewer" }
                ));
            }
        }
    }
    for l in lines {
        t.push_str(&l);
        t.push('\n');
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(score: f64, examples: u64) -> EvalMetrics {
        EvalMetrics {
            examples,
            loss: 0.4,
            accuracy: Some(0.8),
            auc: Some(score),
            r2: None,
            mae: None,
            personalized: None,
            business: None,
        }
    }

    fn row(silo: &str, local: f64, fed: f64, pooled: Option<f64>, n: u64) -> ComparisonRow {
        ComparisonRow {
            silo: silo.into(),
            examples: n,
            local: Some(m(local, n)),
            federated: Some(m(fed, n)),
            pooled: pooled.map(|p| m(p, n)),
            note: None,
        }
    }

    #[test]
    fn the_pooled_column_and_its_meaning_appear_only_with_a_reference() {
        let with = [
            row("a", 0.80, 0.85, Some(0.86), 100),
            row("b", 0.90, 0.88, Some(0.91), 300),
        ];
        let t = table(&with, &[]);
        assert!(t.contains("pooled*") && t.contains("non-private"), "{t}");
        assert!(t.contains("0.860") && t.contains("-0.010"), "{t}");
        // Weighted: local (80 + 270)/400, federated (85 + 264)/400, pooled (86 + 273)/400.
        assert!(
            t.contains("weighted") && t.contains("0.875") && t.contains("0.873"),
            "{t}"
        );
        assert!(t.contains("0.897"), "{t}");
        let without = [row("a", 0.80, 0.85, None, 100)];
        let t = table(&without, &[]);
        assert!(!t.contains("pooled") && !t.contains("weighted"), "{t}");
    }

    #[test]
    fn a_shortfall_is_blamed_on_noise_then_on_a_rising_score_then_on_the_silo() {
        let rows = [
            row("a", 0.80, 0.85, None, 100),
            row("b", 0.90, 0.88, None, 100),
            row("c", 0.90, 0.85, None, 100),
        ];
        let rising = RunContext {
            rounds: 8,
            privacy_noise: false,
            scores: vec![0.70, 0.75, 0.78, 0.80, 0.81, 0.82, 0.83, 0.84],
        };
        let s = shortfalls(&rows, &rising);
        assert_eq!(s.len(), 2, "{s:?}");
        assert_eq!((s[0].silo.as_str(), s[1].silo.as_str()), ("c", "b"));
        assert_eq!(s[0].cause, Cause::TooFewRounds);
        assert!(
            s[0].advice.contains("twice the rounds (16)"),
            "{}",
            s[0].advice
        );
        let noisy = RunContext {
            privacy_noise: true,
            ..rising.clone()
        };
        assert_eq!(shortfalls(&rows, &noisy)[0].cause, Cause::PrivacyNoise);
        let flat = RunContext {
            scores: vec![0.80, 0.84, 0.85, 0.85, 0.85, 0.85, 0.851, 0.85],
            ..rising.clone()
        };
        let s = shortfalls(&rows, &flat);
        assert_eq!(s[0].cause, Cause::UnlikeOthers);
        let t = table(&rows, &s);
        assert!(
            t.contains("! c: federated is 0.050 below local-only") && t.contains("personalisation"),
            "{t}"
        );
        // Too short a run to tell whether the score was rising: not blamed on the rounds.
        let short = RunContext {
            scores: vec![0.7, 0.8],
            ..rising
        };
        assert_eq!(shortfalls(&rows, &short)[0].cause, Cause::UnlikeOthers);
    }

    #[test]
    fn the_capture_table_says_what_a_difference_means_in_customers() {
        use crate::model::business::{BusinessMetrics, TopShare};
        let with = |m: EvalMetrics, capture: f64| EvalMetrics {
            business: Some(BusinessMetrics {
                top: vec![TopShare {
                    percent: 10.0,
                    capture,
                    lift: capture * 4.0,
                }],
                threshold: 0.5,
                precision: None,
                recall: 0.5,
                base_rate: 0.25,
                value_per_1000: None,
            }),
            ..m
        };
        let mut r = row("bank", 0.80, 0.85, None, 1000);
        r.local = r.local.map(|m| with(m, 0.40));
        r.federated = r.federated.map(|m| with(m, 0.49));
        let t = table(&[r], &[]);
        // (0.49 − 0.40) × 0.25 × 1000 = 22.5 more positives per 1,000.
        assert!(
            t.contains("top 10 %") && t.contains("40.0 %") && t.contains("49.0 %"),
            "{t}"
        );
        assert!(t.contains("finds 22 more positives per 1,000"), "{t}");
        // Without business figures, no such table.
        assert!(!table(&[row("a", 0.8, 0.85, None, 10)], &[]).contains("top 10 %"));
    }

    #[test]
    fn a_silo_without_both_scores_is_not_judged() {
        let mut r = row("a", 0.9, 0.8, None, 10);
        r.local = None;
        assert!(shortfalls(&[r], &RunContext::default()).is_empty());
    }
}
