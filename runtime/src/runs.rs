//! Training runs as jobs. A long-lived coordinator (`federation.serve`) trains in *runs*: each
//! is submitted (through the admin API, `fedsilo run submit`, or the federation file's
//! `rounds` on a federation's first start), waits in a queue, runs alone — its rounds are the
//! federation's next round numbers — and ends finished, failed or cancelled. Between runs the
//! coordinator keeps serving: heartbeats, the admin API, metrics, webhooks.
//!
//! This module is the book of runs and its state machine, with no I/O: the coordinator journals
//! every transition in the audit journal first ([`crate::audit::Record`]'s `Run*` records), and
//! a restart rebuilds the book by replaying them — the queue survives a crash, and a run that
//! was running resumes.
//!
//! ```text
//!  submit            start (oldest queued, none running)
//! ───────▶ Queued ─────────────────────────────────────▶ Running ──end──▶ Finished | Failed
//!            │ cancel                                       │ cancel
//!            ▼                                              ▼  (a round in flight completes)
//!        Cancelled ◀───────────────────end─────────────  Cancelling
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The most runs that may wait in the queue at once: a flood of submissions is refused, not
/// kept.
pub const MAX_QUEUED: usize = 100;

/// The most rounds one run may ask for.
pub const MAX_RUN_ROUNDS: u64 = 100_000;

/// A run's own training settings, each replacing the federation file's `[plan]` value for
/// the run's rounds (`None`: the federation file's). Checked by the coordinator at submission.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// Local epochs per round.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epochs: Option<u32>,
    /// Mini-batch size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_size: Option<u32>,
    /// Learning rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub learning_rate: Option<f32>,
    /// FedProx μ.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prox_mu: Option<f32>,
}

impl RunSettings {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == RunSettings::default()
    }
}

/// A run's own policy, tighter than the federation's: the run's rounds are judged by the
/// stricter of each value and the policy's (`None`: the policy's). A run can ask for an
/// operator's approval of every candidate, or a smaller allowed drop of held-out AUC; it can
/// never loosen the federation's policy — not even if the policy file changes after the run was
/// submitted, because the stricter value is taken when each round starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyOverrides {
    /// Every candidate of the run waits for an operator's approval.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_approval: bool,
    /// Largest allowed drop of the example-weighted held-out AUC, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_auc_drop: Option<f64>,
    /// Largest allowed drop of any one silo's held-out AUC, in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_silo_auc_drop: Option<f64>,
}

impl PolicyOverrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == PolicyOverrides::default()
    }

    /// Why the values cannot be used, if they cannot.
    pub fn check(&self) -> Result<(), String> {
        for (key, v) in [
            ("max_auc_drop", self.max_auc_drop),
            ("max_silo_auc_drop", self.max_silo_auc_drop),
        ] {
            if let Some(d) = v.filter(|d| !(d.is_finite() && (0.0..=1.0).contains(d))) {
                return Err(format!(
                    "{key} = {d}: an AUC difference in [0, 1], e.g. 0.01"
                ));
            }
        }
        Ok(())
    }

    /// `policy` with the run's stricter values.
    pub fn tighten(&self, policy: &fedsilo_policies::Policy) -> fedsilo_policies::Policy {
        let mut p = policy.clone();
        if self.is_empty() {
            return p;
        }
        let v = p.validation.get_or_insert_with(Default::default);
        v.require_approval |= self.require_approval;
        let stricter = |own: Option<f64>, run: Option<f64>| match (own, run) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        v.max_auc_drop = stricter(v.max_auc_drop, self.max_auc_drop);
        v.max_silo_auc_drop = stricter(v.max_silo_auc_drop, self.max_silo_auc_drop);
        p
    }
}

/// What a run is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// Rounds to commit or attempt (1 to [`MAX_RUN_ROUNDS`]).
    pub rounds: u64,
    /// Its own training settings.
    #[serde(default, skip_serializing_if = "RunSettings::is_empty")]
    pub settings: RunSettings,
    /// Its own, stricter, policy.
    #[serde(default, skip_serializing_if = "PolicyOverrides::is_empty")]
    pub policy: PolicyOverrides,
    /// The submitter's idempotency key: a submission repeating it (a retry after a timeout)
    /// gets the run the first one made instead of a second run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The longest idempotency key.
pub const MAX_KEY_LEN: usize = 128;

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting for the runs before it.
    Queued,
    /// Its rounds are being trained; the first was `first_round`.
    Running {
        /// The federation's round number its first round got.
        first_round: u64,
    },
    /// Cancelled while running: it ends when the round in flight (if any) is over.
    Cancelling {
        /// Its first round.
        first_round: u64,
        /// Who cancelled it.
        by: String,
        /// Why.
        reason: String,
    },
    /// All its rounds were attempted (or the privacy budget ran out).
    Finished {
        /// Its first round.
        first_round: u64,
        /// Versions it committed.
        committed: u64,
    },
    /// It could not go on (no round could start for too long, scaling not agreed, ...).
    Failed {
        /// Versions it committed before failing.
        committed: u64,
        /// Why.
        error: String,
    },
    /// Cancelled by an operator.
    Cancelled {
        /// Who.
        by: String,
        /// Why.
        reason: String,
        /// Versions it committed before it was cancelled.
        committed: u64,
    },
}

impl RunStatus {
    /// Whether the run is over (finished, failed or cancelled).
    pub fn is_over(&self) -> bool {
        matches!(
            self,
            RunStatus::Finished { .. } | RunStatus::Failed { .. } | RunStatus::Cancelled { .. }
        )
    }

    /// Its first round, once it started.
    pub fn first_round(&self) -> Option<u64> {
        match self {
            RunStatus::Running { first_round }
            | RunStatus::Cancelling { first_round, .. }
            | RunStatus::Finished { first_round, .. } => Some(*first_round),
            _ => None,
        }
    }
}

/// One run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Its id (1, 2, ... in submission order).
    pub id: u64,
    /// What it was asked to do.
    pub plan: RunPlan,
    /// Who submitted it (an API token, an operator certificate, `federation file` or
    /// `schedule`).
    pub submitted_by: String,
    /// When, ms since the Unix epoch (the journal entry's time).
    pub submitted_ms: u64,
    /// Where it stands.
    #[serde(flatten)]
    pub status: RunStatus,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// No run has this id.
    #[error("there is no run {0}")]
    Unknown(u64),
    /// The plan cannot be run.
    #[error("rounds = {0}: a run needs between 1 and {MAX_RUN_ROUNDS} rounds")]
    Rounds(u64),
    /// An idempotency key that is empty, too long or not printable ASCII.
    #[error("key: 1 to {MAX_KEY_LEN} printable ASCII characters")]
    Key,
    /// An idempotency key already used for another plan.
    #[error("key {key:?} was used for run {run}, with another plan")]
    KeyReused {
        /// The key.
        key: String,
        /// The run it made.
        run: u64,
    },
    /// The queue is full.
    #[error("{MAX_QUEUED} runs are already queued; cancel some or wait for them")]
    QueueFull,
    /// The run is not in a state that allows it.
    #[error("run {id} is {state}: {what}")]
    State {
        /// The run.
        id: u64,
        /// Its state's name.
        state: &'static str,
        /// What cannot be done.
        what: &'static str,
    },
    /// Another run is running.
    #[error("run {0} is running")]
    Busy(u64),
}

/// Every run, by id.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunBook {
    runs: BTreeMap<u64, RunRecord>,
}

fn state_name(s: &RunStatus) -> &'static str {
    match s {
        RunStatus::Queued => "queued",
        RunStatus::Running { .. } => "running",
        RunStatus::Cancelling { .. } => "being cancelled",
        RunStatus::Finished { .. } => "finished",
        RunStatus::Failed { .. } => "failed",
        RunStatus::Cancelled { .. } => "cancelled",
    }
}

impl RunBook {
    /// The id the next submitted run gets.
    pub fn next_id(&self) -> u64 {
        self.runs.keys().next_back().map_or(1, |id| id + 1)
    }

    /// Every run, oldest first.
    pub fn all(&self) -> impl Iterator<Item = &RunRecord> {
        self.runs.values()
    }

    /// One run.
    pub fn get(&self, id: u64) -> Option<&RunRecord> {
        self.runs.get(&id)
    }

    /// Whether no run was ever submitted.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The run that is running or being cancelled, if any.
    pub fn active(&self) -> Option<&RunRecord> {
        self.runs.values().find(|r| {
            matches!(
                r.status,
                RunStatus::Running { .. } | RunStatus::Cancelling { .. }
            )
        })
    }

    /// The oldest queued run, which starts next.
    pub fn next_queued(&self) -> Option<&RunRecord> {
        self.runs
            .values()
            .find(|r| matches!(r.status, RunStatus::Queued))
    }

    /// The run submitted with idempotency key `key`, if any.
    pub fn by_key(&self, key: &str) -> Option<&RunRecord> {
        self.runs
            .values()
            .find(|r| r.plan.key.as_deref() == Some(key))
    }

    /// Checks a plan and the queue before a submission is journaled.
    pub fn check_submit(&self, plan: &RunPlan) -> Result<(), RunError> {
        if plan.rounds == 0 || plan.rounds > MAX_RUN_ROUNDS {
            return Err(RunError::Rounds(plan.rounds));
        }
        if let Some(k) = &plan.key {
            if k.is_empty() || k.len() > MAX_KEY_LEN || !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(RunError::Key);
            }
            if let Some(r) = self.by_key(k).filter(|r| r.plan != *plan) {
                return Err(RunError::KeyReused {
                    key: k.clone(),
                    run: r.id,
                });
            }
        }
        let queued = self
            .runs
            .values()
            .filter(|r| r.status == RunStatus::Queued)
            .count();
        if queued >= MAX_QUEUED {
            return Err(RunError::QueueFull);
        }
        Ok(())
    }

    /// Queues run `id`, submitted by `by` at `at_ms` (replayed as journaled: the id is the
    /// journal's).
    pub fn submit(&mut self, id: u64, plan: RunPlan, by: String, at_ms: u64) {
        self.runs.insert(
            id,
            RunRecord {
                id,
                plan,
                submitted_by: by,
                submitted_ms: at_ms,
                status: RunStatus::Queued,
            },
        );
    }

    /// Every queued and active run, and the last `past` runs that are over, oldest first.
    pub fn recent(&self, past: usize) -> Vec<RunRecord> {
        let over = self.runs.values().filter(|r| r.status.is_over()).count();
        let skip = over.saturating_sub(past);
        let mut seen = 0;
        self.runs
            .values()
            .filter(|r| {
                if !r.status.is_over() {
                    return true;
                }
                seen += 1;
                seen > skip
            })
            .cloned()
            .collect()
    }

    /// The last run submitted by `by`, if any.
    pub fn last_by(&self, by: &str) -> Option<&RunRecord> {
        self.runs.values().rev().find(|r| r.submitted_by == by)
    }

    fn run_mut(&mut self, id: u64) -> Result<&mut RunRecord, RunError> {
        self.runs.get_mut(&id).ok_or(RunError::Unknown(id))
    }

    /// Checks that queued run `id` may start now (no other run active).
    pub fn check_start(&self, id: u64) -> Result<(), RunError> {
        if let Some(a) = self.active() {
            return Err(RunError::Busy(a.id));
        }
        let r = self.runs.get(&id).ok_or(RunError::Unknown(id))?;
        match r.status {
            RunStatus::Queued => Ok(()),
            ref s => Err(RunError::State {
                id,
                state: state_name(s),
                what: "only a queued run starts",
            }),
        }
    }

    /// Queued run `id` starts with round `first_round`.
    pub fn start(&mut self, id: u64, first_round: u64) -> Result<(), RunError> {
        self.check_start(id)?;
        self.run_mut(id)?.status = RunStatus::Running { first_round };
        Ok(())
    }

    /// Checks that run `id` may be cancelled.
    pub fn check_cancel(&self, id: u64) -> Result<(), RunError> {
        let r = self.runs.get(&id).ok_or(RunError::Unknown(id))?;
        match r.status {
            RunStatus::Queued | RunStatus::Running { .. } => Ok(()),
            ref s => Err(RunError::State {
                id,
                state: state_name(s),
                what: "only a queued or running run can be cancelled",
            }),
        }
    }

    /// Cancels run `id`: a queued one is over at once; a running one is being cancelled until
    /// [`end`](Self::end).
    pub fn cancel(&mut self, id: u64, by: String, reason: String) -> Result<(), RunError> {
        self.check_cancel(id)?;
        let r = self.run_mut(id)?;
        r.status = match r.status {
            RunStatus::Running { first_round } => RunStatus::Cancelling {
                first_round,
                by,
                reason,
            },
            _ => RunStatus::Cancelled {
                by,
                reason,
                committed: 0,
            },
        };
        Ok(())
    }

    /// The active run `id` ended, having committed `committed` versions; `error` if it could
    /// not go on. A run being cancelled ends cancelled whatever the error.
    pub fn end(&mut self, id: u64, committed: u64, error: Option<String>) -> Result<(), RunError> {
        let r = self.run_mut(id)?;
        r.status = match (&r.status, error) {
            (RunStatus::Cancelling { by, reason, .. }, _) => RunStatus::Cancelled {
                by: by.clone(),
                reason: reason.clone(),
                committed,
            },
            (RunStatus::Running { .. }, Some(error)) => RunStatus::Failed { committed, error },
            (RunStatus::Running { first_round }, None) => RunStatus::Finished {
                first_round: *first_round,
                committed,
            },
            (s, _) => {
                return Err(RunError::State {
                    id,
                    state: state_name(s),
                    what: "only an active run ends",
                })
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(rounds: u64) -> RunPlan {
        RunPlan {
            rounds,
            settings: RunSettings::default(),
            policy: Default::default(),
            key: None,
        }
    }

    #[test]
    fn runs_queue_in_order_and_run_one_at_a_time() {
        let mut b = RunBook::default();
        assert_eq!(b.next_id(), 1);
        b.submit(1, plan(3), "ops".into(), 0);
        b.submit(2, plan(1), "ops".into(), 0);
        assert_eq!(b.next_id(), 3);
        assert_eq!(b.next_queued().map(|r| r.id), Some(1));
        b.start(1, 10).unwrap();
        assert_eq!(b.active().map(|r| r.id), Some(1));
        assert_eq!(b.start(2, 13), Err(RunError::Busy(1)));
        assert_eq!(b.next_queued().map(|r| r.id), Some(2));
        b.end(1, 3, None).unwrap();
        assert_eq!(
            b.get(1).unwrap().status,
            RunStatus::Finished {
                first_round: 10,
                committed: 3
            }
        );
        assert!(b.active().is_none());
        b.start(2, 13).unwrap();
        b.end(2, 0, Some("no silo".into())).unwrap();
        assert!(matches!(b.get(2).unwrap().status, RunStatus::Failed { .. }));
        assert!(b.get(2).unwrap().status.is_over());
    }

    #[test]
    fn a_queued_run_is_cancelled_at_once_a_running_one_when_it_ends() {
        let mut b = RunBook::default();
        b.submit(1, plan(5), "ops".into(), 0);
        b.submit(2, plan(5), "ops".into(), 0);
        b.cancel(2, "alice".into(), "wrong data".into()).unwrap();
        assert!(b.get(2).unwrap().status.is_over());
        assert!(b.next_queued().map(|r| r.id) == Some(1));
        b.start(1, 1).unwrap();
        b.cancel(1, "bob".into(), "stop".into()).unwrap();
        // Still the active run until its round in flight is over.
        assert_eq!(b.active().map(|r| r.id), Some(1));
        b.end(1, 2, Some("ignored".into())).unwrap();
        assert_eq!(
            b.get(1).unwrap().status,
            RunStatus::Cancelled {
                by: "bob".into(),
                reason: "stop".into(),
                committed: 2
            }
        );
    }

    #[test]
    fn refused_transitions_name_the_run_and_its_state() {
        let mut b = RunBook::default();
        assert_eq!(
            b.cancel(9, "x".into(), "y".into()),
            Err(RunError::Unknown(9))
        );
        b.submit(1, plan(1), "ops".into(), 0);
        b.start(1, 1).unwrap();
        b.end(1, 1, None).unwrap();
        let e = b.cancel(1, "x".into(), "y".into()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "run 1 is finished: only a queued or running run can be cancelled"
        );
        assert!(b.start(1, 2).is_err());
        assert!(b.end(1, 1, None).is_err());
    }

    #[test]
    fn the_recent_runs_are_the_open_ones_and_the_last_past_ones() {
        let mut b = RunBook::default();
        for id in 1..=5 {
            b.submit(id, plan(1), "ops".into(), 0);
        }
        for id in [1, 2, 4] {
            b.cancel(id, "ops".into(), "x".into()).unwrap();
        }
        let ids = |v: Vec<RunRecord>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(b.recent(1)), [3, 4, 5]);
        assert_eq!(ids(b.recent(0)), [3, 5]);
        assert_eq!(ids(b.recent(10)), [1, 2, 3, 4, 5]);
    }

    #[test]
    fn plans_and_floods_are_checked() {
        let mut b = RunBook::default();
        assert_eq!(b.check_submit(&plan(0)), Err(RunError::Rounds(0)));
        assert!(b.check_submit(&plan(MAX_RUN_ROUNDS + 1)).is_err());
        for id in 1..=MAX_QUEUED as u64 {
            b.check_submit(&plan(1)).unwrap();
            b.submit(id, plan(1), "ops".into(), 0);
        }
        assert_eq!(b.check_submit(&plan(1)), Err(RunError::QueueFull));
        b.cancel(1, "ops".into(), "room".into()).unwrap();
        assert!(b.check_submit(&plan(1)).is_ok());
    }

    #[test]
    fn a_record_serialises_flat_with_its_state() {
        let r = RunRecord {
            id: 4,
            plan: plan(2),
            submitted_by: "ops".into(),
            submitted_ms: 5,
            status: RunStatus::Running { first_round: 7 },
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["state"], "running");
        assert_eq!(v["first_round"], 7);
        assert_eq!(v["plan"]["rounds"], 2);
    }

    #[test]
    fn a_run_tightens_the_policy_and_never_loosens_it() {
        let fed =
            fedsilo_policies::Policy::from_toml_str("[validation]\nmax_auc_drop = 0.02\n", "test")
                .unwrap();
        // Nothing asked: the policy as it is.
        assert_eq!(PolicyOverrides::default().tighten(&fed), fed);
        let run = PolicyOverrides {
            require_approval: true,
            max_auc_drop: Some(0.05),
            max_silo_auc_drop: Some(0.1),
        };
        let v = run.tighten(&fed).validation.unwrap();
        // Looser than the policy: the policy's 0.02 stays; new rules and approval are added.
        assert_eq!(
            (v.require_approval, v.max_auc_drop, v.max_silo_auc_drop),
            (true, Some(0.02), Some(0.1))
        );
        let stricter = PolicyOverrides {
            max_auc_drop: Some(0.005),
            ..Default::default()
        };
        assert_eq!(
            stricter.tighten(&fed).validation.unwrap().max_auc_drop,
            Some(0.005)
        );
        // A policy that requires approval keeps requiring it.
        let approving = fedsilo_policies::Policy::from_toml_str(
            "[validation]\nrequire_approval = true\n",
            "test",
        )
        .unwrap();
        assert!(
            stricter
                .tighten(&approving)
                .validation
                .unwrap()
                .require_approval
        );
        for bad in [-0.1, 1.5, f64::NAN] {
            let o = PolicyOverrides {
                max_auc_drop: Some(bad),
                ..Default::default()
            };
            assert!(o.check().unwrap_err().contains("max_auc_drop"), "{bad}");
        }
    }
}
