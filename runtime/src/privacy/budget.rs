//! The coordinator's privacy book: what each silo's data has spent under silo-level DP, kept
//! on disk before the spend happens.
//!
//! Every round that releases a DP aggregate is a Gaussian mechanism on each participant's data
//! with multiplier z (the effective one, see
//! [`PrivacyRules::effective_multiplier`](fedsilo_policies::privacy::PrivacyRules::effective_multiplier)).
//! The cohort of a round is public in a cross-silo federation (the coordinator names it in its
//! log), so no amplification by sampling is claimed: a silo is charged q = 1 for each round it
//! is dispatched in, and nothing for rounds it sits out.
//!
//! Before a round is dispatched, [`PrivacyBook::plan`] leaves out every silo whose budget the
//! round would exceed; [`PrivacyBook::charge`] then appends the charge to `privacy.jsonl` and
//! syncs it, and only then are silos asked to train. A round that is later abandoned stays
//! charged (its silos may already have released noised updates); a coordinator that crashes
//! and restarts replays the file, so no spend is ever forgotten.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};

use fedsilo_policies::privacy::{Budget, PrivacyRules};
use serde::{Deserialize, Serialize};

use super::rdp::RdpLedger;

/// One line of `privacy.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A round was charged to these silos before it was dispatched.
    Charge {
        /// Round number.
        round: u64,
        /// The mechanism: `central` or `distributed` (silo-level), `dp-sgd` (record-level).
        mode: String,
        /// The noise multiplier the released sum carries at least.
        noise_multiplier: f64,
        /// Poisson sampling rate of each composition (1 for silo-level rounds).
        #[serde(default = "one")]
        sampling_rate: f64,
        /// Compositions (1 for silo-level rounds; DP-SGD steps).
        #[serde(default = "one_step")]
        steps: u64,
        /// The silos dispatched.
        silos: Vec<String>,
    },
    /// A round was refused because of the budget.
    Refused {
        /// Round number.
        round: u64,
        /// Why.
        reason: String,
    },
}

fn one() -> f64 {
    1.0
}
fn one_step() -> u64 {
    1
}

/// A round's spend, recorded with the version it made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSpend {
    /// `central` or `distributed`.
    pub mode: String,
    /// The effective noise multiplier of the round.
    pub noise_multiplier: f64,
    /// ε of this round alone, at `delta`.
    pub round_epsilon: f64,
    /// The largest cumulative ε of any silo after this round, at `delta`.
    pub epsilon: f64,
    /// δ of the two figures above (the federation budget's).
    pub delta: f64,
    /// Each participant's cumulative ε after this round, at its own budget's δ.
    pub silos: BTreeMap<String, f64>,
    /// The largest share of its own ε budget any participant has spent after this round
    /// (1 = spent); none without a budget.
    #[serde(default)]
    pub budget_used: Option<f64>,
}

/// Who may take part in a round under the budget.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetPlan {
    /// Silos the round may be dispatched to.
    pub admitted: Vec<String>,
    /// Silos left out, with the reason.
    pub refused: Vec<(String, String)>,
    /// The effective noise multiplier for the admitted cohort.
    pub noise_multiplier: f64,
}

/// Errors of the privacy book.
#[derive(Debug, thiserror::Error)]
pub enum BookError {
    /// Reading or writing the file failed.
    #[error("privacy book {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A line is not a valid entry.
    #[error("privacy book {path}:{line}: {message} (the file records spent privacy budget and must not be edited; restore it from a backup)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// Per-silo RDP ledgers, backed by an append-only file.
#[derive(Debug)]
pub struct PrivacyBook {
    path: PathBuf,
    silos: BTreeMap<String, RdpLedger>,
    last_round: Option<u64>,
}

impl PrivacyBook {
    /// Opens (or starts) the book at `path`, replaying every charge. A torn last line (a crash
    /// while appending it, before its round was dispatched) is dropped; any other bad line is
    /// an error naming it.
    pub fn open(path: &Path) -> Result<Self, BookError> {
        let io = |source| BookError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut book = PrivacyBook {
            path: path.to_path_buf(),
            silos: BTreeMap::new(),
            last_round: None,
        };
        // A torn last line was never synced, so its round was never dispatched.
        let text = crate::line_file::read_complete(path).map_err(io)?;
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<Entry>(line) {
                Ok(Entry::Charge {
                    round,
                    noise_multiplier,
                    sampling_rate,
                    steps,
                    silos,
                    ..
                }) => {
                    book.last_round = Some(book.last_round.map_or(round, |r| r.max(round)));
                    let bad = if !(noise_multiplier.is_finite() && noise_multiplier > 0.0) {
                        Some(format!(
                            "noise multiplier {noise_multiplier} is not positive"
                        ))
                    } else if !(sampling_rate > 0.0 && sampling_rate <= 1.0) {
                        Some(format!("sampling rate {sampling_rate} is not in (0, 1]"))
                    } else {
                        None
                    };
                    if let Some(message) = bad {
                        return Err(BookError::Corrupt {
                            path: path.to_path_buf(),
                            line: i + 1,
                            message,
                        });
                    }
                    book.compose(&silos, sampling_rate, noise_multiplier, steps)
                }
                Ok(Entry::Refused { round, .. }) => {
                    book.last_round = Some(book.last_round.map_or(round, |r| r.max(round)));
                }
                Err(e) => {
                    return Err(BookError::Corrupt {
                        path: path.to_path_buf(),
                        line: i + 1,
                        message: e.to_string(),
                    })
                }
            }
        }
        Ok(book)
    }

    fn compose(&mut self, silos: &[String], q: f64, z: f64, steps: u64) {
        for s in silos {
            self.silos
                .entry(s.clone())
                .or_default()
                .compose(q, z, steps);
        }
    }

    /// The last round charged or refused, if any.
    pub fn last_round(&self) -> Option<u64> {
        self.last_round
    }

    /// Every silo ever charged.
    pub fn silos(&self) -> impl Iterator<Item = &String> {
        self.silos.keys()
    }

    /// ε `silo` has spent, at `delta`.
    pub fn spent(&self, silo: &str, delta: f64) -> f64 {
        self.silos.get(silo).map_or(0.0, |l| l.epsilon(delta))
    }

    /// ε `silo` would have spent after `steps` more compositions at rate `q`, multiplier `z`.
    pub fn after(&self, silo: &str, q: f64, z: f64, steps: u64, delta: f64) -> f64 {
        let mut l = self.silos.get(silo).cloned().unwrap_or_default();
        l.compose(q, z, steps);
        l.epsilon(delta)
    }

    /// Which of `cohort` may take part in a round needing `quorum` reports: every silo whose
    /// budget one more round would exceed is left out, with its figures.
    pub fn plan(&self, rules: &PrivacyRules, cohort: &[String], quorum: usize) -> BudgetPlan {
        self.plan_for(rules, cohort, cohort.len(), quorum)
    }

    /// As [`PrivacyBook::plan`], for a round that may dispatch up to `largest` silos (the
    /// distributed multiplier is planned for that many).
    pub fn plan_for(
        &self,
        rules: &PrivacyRules,
        cohort: &[String],
        largest: usize,
        quorum: usize,
    ) -> BudgetPlan {
        // Leaving silos out only raises the distributed multiplier, so deciding with the full
        // cohort's is conservative.
        let z = rules.effective_multiplier(largest, quorum);
        let (mut admitted, mut refused) = (Vec::new(), Vec::new());
        for s in cohort {
            match rules.budget_of(s) {
                Some(b) if self.after(s, 1.0, z, 1, b.delta) > b.epsilon => refused.push((
                    s.clone(),
                    format!(
                        "privacy budget: one more round (z = {z:.3}) would take ε from {:.3} to {:.3}, above its budget ε = {} at δ = {:e}",
                        self.spent(s, b.delta),
                        self.after(s, 1.0, z, 1, b.delta),
                        b.epsilon,
                        b.delta
                    ),
                )),
                _ => admitted.push(s.clone()),
            }
        }
        let noise_multiplier = rules.effective_multiplier(admitted.len(), quorum);
        BudgetPlan {
            admitted,
            refused,
            noise_multiplier,
        }
    }

    fn append(&self, entry: &Entry) -> Result<(), BookError> {
        let io = |source| BookError::Io {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_string(entry).map_err(|e| io(std::io::Error::other(e)))?;
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// Charges `round` to `silos` with multiplier `z`: synced to disk before it returns, so
    /// the caller may dispatch. Returns the spend to record with the round's version.
    pub fn charge(
        &mut self,
        rules: &PrivacyRules,
        round: u64,
        z: f64,
        silos: &[String],
    ) -> Result<RoundSpend, BookError> {
        self.record(round, rules.mode.as_str(), 1.0, z, 1, silos)?;
        let delta = rules.report_delta();
        let mut one = RdpLedger::default();
        one.compose(1.0, z, 1);
        let budget_used = silos
            .iter()
            .filter_map(|s| {
                let b = rules.budget_of(s)?;
                (b.epsilon > 0.0).then(|| self.spent(s, b.delta) / b.epsilon)
            })
            .reduce(f64::max);
        Ok(RoundSpend {
            mode: rules.mode.as_str().to_string(),
            noise_multiplier: z,
            round_epsilon: one.epsilon(delta),
            epsilon: self.max_spent(delta),
            delta,
            silos: silos
                .iter()
                .map(|s| {
                    let d = rules.budget_of(s).map_or(delta, |b| b.delta);
                    (s.clone(), self.spent(s, d))
                })
                .collect(),
            budget_used,
        })
    }

    /// Appends and syncs a charge of `steps` compositions at rate `q`, multiplier `z` to each
    /// of `silos`, then adds it to their ledgers.
    pub fn record(
        &mut self,
        round: u64,
        mode: &str,
        q: f64,
        z: f64,
        steps: u64,
        silos: &[String],
    ) -> Result<(), BookError> {
        self.last_round = Some(self.last_round.map_or(round, |r| r.max(round)));
        self.append(&Entry::Charge {
            round,
            mode: mode.to_string(),
            noise_multiplier: z,
            sampling_rate: q,
            steps,
            silos: silos.to_vec(),
        })?;
        self.compose(silos, q, z, steps);
        Ok(())
    }

    /// Records that `round` was refused for the budget.
    pub fn refuse(&self, round: u64, reason: &str) -> Result<(), BookError> {
        self.append(&Entry::Refused {
            round,
            reason: reason.to_string(),
        })
    }

    /// The largest ε any silo has spent, at `delta`.
    pub fn max_spent(&self, delta: f64) -> f64 {
        self.silos
            .values()
            .map(|l| l.epsilon(delta))
            .fold(0.0, f64::max)
    }
}

/// How many rounds with multiplier `z` fit in `budget` (q = 1 each): the largest r with
/// ε(r) ≤ ε_budget at its δ (at most `cap`).
pub fn rounds_within(z: f64, budget: Budget, cap: u64) -> u64 {
    let fits = |r: u64| {
        let mut l = RdpLedger::default();
        l.compose(1.0, z, r);
        l.epsilon(budget.delta) <= budget.epsilon
    };
    if !fits(1) {
        return 0;
    }
    // ε grows with r: double to bracket, then bisect.
    let (mut lo, mut hi) = (1u64, 2u64);
    while hi <= cap && fits(hi) {
        lo = hi;
        hi *= 2;
    }
    if hi > cap && fits(cap) {
        return cap;
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::privacy::rdp::epsilon;
    use fedsilo_policies::privacy::NoiseMode;

    fn rules(eps: f64) -> PrivacyRules {
        PrivacyRules {
            mode: NoiseMode::Central,
            clip_norm: 1.0,
            noise_multiplier: 4.0,
            budget: Some(Budget {
                epsilon: eps,
                delta: 1e-5,
            }),
            silos: BTreeMap::new(),
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_budget_for_r_rounds_admits_exactly_r_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privacy.jsonl");
        // The budget sits between the spend of 3 and of 4 Gaussian rounds with z = 4.
        let (e3, e4) = (
            epsilon(1.0, 4.0, 3, 1e-5).unwrap().0,
            epsilon(1.0, 4.0, 4, 1e-5).unwrap().0,
        );
        let r = rules((e3 + e4) / 2.0);
        let cohort = names(&["a", "b"]);
        let mut book = PrivacyBook::open(&path).unwrap();
        for round in 1..=3 {
            let plan = book.plan(&r, &cohort, 2);
            assert_eq!(plan.admitted, cohort, "round {round}");
            let spend = book
                .charge(&r, round, plan.noise_multiplier, &plan.admitted)
                .unwrap();
            assert!((spend.epsilon - epsilon(1.0, 4.0, round, 1e-5).unwrap().0).abs() < 1e-9);
        }
        // A restart replays the file: the fourth round is still refused, with figures.
        let book = PrivacyBook::open(&path).unwrap();
        assert!((book.spent("a", 1e-5) - e3).abs() < 1e-9);
        let plan = book.plan(&r, &cohort, 2);
        assert!(plan.admitted.is_empty());
        assert!(
            plan.refused[0].1.contains("above its budget"),
            "{:?}",
            plan.refused
        );
        // A silo that sat out has spent nothing and may still take part.
        let plan = book.plan(&r, &names(&["a", "c"]), 1);
        assert_eq!(plan.admitted, names(&["c"]));
    }

    #[test]
    fn rounds_within_a_budget_is_the_last_that_fits() {
        let b = Budget {
            epsilon: (epsilon(1.0, 2.0, 7, 1e-5).unwrap().0
                + epsilon(1.0, 2.0, 8, 1e-5).unwrap().0)
                / 2.0,
            delta: 1e-5,
        };
        assert_eq!(rounds_within(2.0, b, 1000), 7);
        assert_eq!(rounds_within(2.0, b, 5), 5);
        let tiny = Budget {
            epsilon: 0.01,
            delta: 1e-5,
        };
        assert_eq!(rounds_within(2.0, tiny, 1000), 0);
    }

    #[test]
    fn a_silo_budget_is_stricter_and_distributed_noise_counts_the_quorum() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = rules(100.0);
        r.mode = NoiseMode::Distributed;
        r.silos.insert(
            "strict".into(),
            fedsilo_policies::privacy::SiloBudget {
                epsilon: epsilon(1.0, 4.0 * 0.5f64.sqrt(), 1, 1e-5).unwrap().0 + 1e-6,
                delta: None,
            },
        );
        let mut book = PrivacyBook::open(&dir.path().join("p.jsonl")).unwrap();
        let cohort = names(&["a", "b", "c", "strict"]);
        // 4 dispatched, quorum 2: the sum may carry only z·√(2/4).
        let plan = book.plan(&r, &cohort, 2);
        assert!((plan.noise_multiplier - 4.0 * 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!(plan.admitted.len(), 4);
        book.charge(&r, 1, plan.noise_multiplier, &plan.admitted)
            .unwrap();
        let plan = book.plan(&r, &cohort, 2);
        assert_eq!(plan.refused.len(), 1);
        assert_eq!(plan.refused[0].0, "strict");
    }

    #[test]
    fn subsampled_charges_replay_like_one_long_run() {
        // A silo's DP-SGD: 3 rounds of 50 steps at q = 0.02, z = 1.1, recorded and replayed.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dp-sgd.jsonl");
        let mut book = PrivacyBook::open(&path).unwrap();
        let me = names(&["bank"]);
        let predicted = book.after("bank", 0.02, 1.1, 150, 1e-5);
        for round in 1..=3 {
            book.record(round, "dp-sgd", 0.02, 1.1, 50, &me).unwrap();
        }
        let book = PrivacyBook::open(&path).unwrap();
        let want = epsilon(0.02, 1.1, 150, 1e-5).unwrap().0;
        assert!((book.spent("bank", 1e-5) - want).abs() < 1e-9);
        assert!((predicted - want).abs() < 1e-9);
    }

    #[test]
    fn a_corrupt_line_is_named_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("privacy.jsonl");
        let good = serde_json::to_string(&Entry::Charge {
            round: 1,
            mode: "central".into(),
            noise_multiplier: 2.0,
            sampling_rate: 1.0,
            steps: 1,
            silos: names(&["a"]),
        })
        .unwrap();
        std::fs::write(&path, format!("{good}\n{{\"kind\":\"charge\",\"rou")).unwrap();
        let mut book = PrivacyBook::open(&path).unwrap();
        assert!(book.spent("a", 1e-5) > 0.0);
        // The torn tail is cut off: the next entry starts on its own line and replays.
        book.charge(&rules(10.0), 2, 2.0, &names(&["b"])).unwrap();
        let book = PrivacyBook::open(&path).unwrap();
        assert!(book.spent("b", 1e-5) > 0.0);
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = PrivacyBook::open(&path).unwrap_err().to_string();
        assert!(err.contains("privacy.jsonl:2"), "{err}");
        let neg = good.replace("2.0", "-2.0");
        std::fs::write(&path, format!("{neg}\n")).unwrap();
        let err = PrivacyBook::open(&path).unwrap_err().to_string();
        assert!(err.contains(":1") && err.contains("not positive"), "{err}");
    }
}
