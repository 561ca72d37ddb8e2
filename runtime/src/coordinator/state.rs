//! The Coordinator actor's state, grouped by what outlives what.
//!
//! The *federation* — who is a member ([`Members`]), the versions ([`Versions`]), the durable
//! record ([`Ledger`]), the operators' hold ([`Hold`]) — lives as long as the coordinator.
//! A *run* ([`Run`]) is one series of rounds (its [`Job`]): its counters, its waiting clock;
//! the book of runs ([`RunBook`]) and the privacy spend are the federation's. What the
//! coordinator is doing right now is the [`Phase`]. Keeping these apart is what lets a serving
//! federation outlive its runs.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use fedsilo_policies::Policy;
use ractor::ActorRef;
use tokio::sync::{mpsc, watch};

use super::ledger::Ledger;
use super::membership::Members;
use super::phase::{Hold, Phase};
use super::settings::{CoordinatorSettings, RunResult};
use super::versions::Versions;
use crate::actors::aggregator::AggregatorMessage;
use crate::actors::policy::PolicyMessage;
use crate::actors::validator::ValidatorMessage;
use crate::cluster::PeerDirectory;
use crate::data::DataContract;
use crate::model::eval::EvalMetrics;
use crate::privacy::budget::PrivacyBook;
use crate::runs::RunBook;
use crate::status::FederationStatus;

/// The actors and channels the coordinator talks to (none of them state of its own).
pub struct Links {
    /// Verified peers.
    pub directory: Arc<PeerDirectory>,
    /// Their bulk links (tensors travel there when a silo has one).
    pub bulk: Arc<crate::bulk::BulkLinks>,
    /// What every silo's data must agree on.
    pub data: DataContract,
    /// The Policy actor.
    pub policy: ActorRef<PolicyMessage>,
    /// The Aggregator actor.
    pub aggregator: ActorRef<AggregatorMessage>,
    /// The Validator actor.
    pub validator: ActorRef<ValidatorMessage>,
    /// Receives the result when the run ends.
    pub done: mpsc::UnboundedSender<RunResult>,
    /// Where the status is published after every step.
    pub status: watch::Sender<FederationStatus>,
}

/// Which run the rounds belong to, and where it stops.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// Its id in the book of runs; `None`: the one run of a coordinator that does not serve.
    pub id: Option<u64>,
    /// The last round number it may start.
    pub until: u64,
    /// The rounds it asked for (a local-only baseline trains as many).
    pub rounds: u64,
    /// Its own training settings, over the federation file's `[plan]`.
    pub settings: crate::runs::RunSettings,
    /// Its own, stricter, policy.
    pub policy: crate::runs::PolicyOverrides,
    /// An operator cancelled it: it ends at the next round boundary.
    pub cancelled: bool,
}

/// One run: its rounds, up to `job.until`.
pub struct Run {
    /// The run the rounds belong to; `None` between runs (a serving coordinator, idle).
    pub job: Option<Job>,
    /// Since when a schedule that never submitted a run counts, ms since the Unix epoch: the
    /// journal's first entry (the federation's first start), else this start.
    pub schedule_from_ms: u64,
    /// The next round's number.
    pub next_round: u64,
    /// Versions committed in this run.
    pub committed: u64,
    /// Since when no round could start (for `wait_for_silos_secs`).
    pub idle_since: Instant,
    /// The reasons last reported for not starting a round (each change is reported once).
    pub last_waiting: Vec<String>,
    /// Silo-level DP spend per silo, on disk before each round is dispatched.
    pub privacy: PrivacyBook,
    /// Silos already reported as left out for their privacy budget.
    pub over_budget: BTreeSet<String>,
    /// The privacy budget leaves too few silos for another round.
    pub exhausted: bool,
    /// The policy the last round was dispatched under (its outcome is judged by it).
    pub round_policy: Policy,
    /// The held-out figures of the last version this run made current (committed, approved
    /// or rolled back to): the comparison's "federated" column.
    pub last_eval: BTreeMap<String, EvalMetrics>,
    /// When this run last committed a version (a round's period runs from there).
    pub last_commit: Option<Instant>,
    /// The held-out figures of each version this run committed (or had approved), in order
    /// (early stopping, the best version, and whether a short run was still improving; see
    /// [`Run::scores`]). Rebuilt from the registry at a restart.
    pub versions: Vec<(u64, BTreeMap<String, EvalMetrics>)>,
    /// Validation stopped improving (`validation.patience`): the run ends at the next step.
    pub stopped_early: bool,
    /// A round of this run added DP noise to the updates.
    pub noised: bool,
}

impl Run {
    /// A run that starts at round 1 (recovery moves it on).
    pub fn new(privacy: PrivacyBook) -> Self {
        Self {
            job: None,
            schedule_from_ms: crate::audit::entry::now_ms(),
            next_round: 1,
            committed: 0,
            idle_since: Instant::now(),
            last_waiting: Vec::new(),
            privacy,
            over_budget: BTreeSet::new(),
            exhausted: false,
            round_policy: Policy::default(),
            last_eval: BTreeMap::new(),
            last_commit: None,
            versions: Vec::new(),
            stopped_early: false,
            noised: false,
        }
    }

    /// Starts `job` from round `next_round`: the counters and clocks of the last run are
    /// reset; the privacy book (the federation's budget, spent across runs) is kept.
    pub fn begin(&mut self, job: Job) {
        self.job = Some(job);
        self.committed = 0;
        self.last_commit = None;
        self.idle_since = Instant::now();
        self.last_waiting.clear();
        self.over_budget.clear();
        self.last_eval.clear();
        self.versions.clear();
        self.stopped_early = false;
        self.noised = false;
        // Re-judged by the next budget check (the policy may have changed since).
        self.exhausted = false;
    }

    /// A version this run committed (or had approved) became current with these held-out
    /// figures: the comparison's federated column, and its score for early stopping.
    pub fn made_current(&mut self, version: u64, eval: &BTreeMap<String, EvalMetrics>) {
        self.last_eval = eval.clone();
        self.versions.push((version, eval.clone()));
    }

    /// An operator made `version` current again: the run's later versions are no longer its
    /// lineage, and `keep_best` must not bring one back.
    pub fn rolled_back_to(&mut self, version: u64) {
        self.versions.retain(|(v, _)| *v <= version);
    }

    /// Each version's example-weighted held-out score, comparable across versions: over the
    /// silos that scored every version of the run (a silo that skipped one evaluation cannot
    /// make that version look better), or over each version's own silos when none scored them
    /// all. Versions without a score are left out.
    pub fn scores(&self) -> Vec<(u64, f64)> {
        let mut common: Option<BTreeSet<&String>> = None;
        for (_, eval) in &self.versions {
            let these: BTreeSet<&String> = eval
                .iter()
                .filter(|(_, m)| m.score().is_some())
                .map(|(s, _)| s)
                .collect();
            common = Some(match common {
                None => these,
                Some(c) => c.intersection(&these).copied().collect(),
            });
        }
        let common = common.unwrap_or_default();
        self.versions
            .iter()
            .filter_map(|(v, eval)| {
                let shared = eval
                    .iter()
                    .filter(|(s, _)| common.contains(s))
                    .map(|(_, m)| m);
                let score = if common.is_empty() {
                    crate::model::eval::weighted_score(eval.values())
                } else {
                    crate::model::eval::weighted_score(shared)
                };
                score.map(|s| (*v, s))
            })
            .collect()
    }

    /// The rounds the current run started so far (`None` between runs): all it asked for at
    /// its end, fewer when it stopped early.
    pub fn rounds_run(&self) -> Option<u64> {
        let (first, rounds) = self.span()?;
        Some(
            self.next_round
                .saturating_sub(first)
                .clamp(1, rounds.max(1)),
        )
    }

    /// The current run's first round number and its size.
    fn span(&self) -> Option<(u64, u64)> {
        let j = self.job.as_ref()?;
        Some(((j.until + 1).saturating_sub(j.rounds), j.rounds))
    }

    /// The share of the current run's rounds before `round`, in [0, 1] (0 between runs).
    pub fn progress(&self, round: u64) -> f32 {
        match self.span() {
            Some((first, rounds)) if rounds > 0 => {
                (round.saturating_sub(first) as f32 / rounds as f32).clamp(0.0, 1.0)
            }
            _ => 0.0,
        }
    }

    /// The last round number the current run may start (0 between runs).
    pub fn until(&self) -> u64 {
        self.job.as_ref().map_or(0, |j| j.until)
    }

    /// The current run's id (`None` between runs, or when the coordinator does not serve).
    pub fn id(&self) -> Option<u64> {
        self.job.as_ref().and_then(|j| j.id)
    }

    /// Whether an operator cancelled the current run.
    pub fn cancelled(&self) -> bool {
        self.job.as_ref().is_some_and(|j| j.cancelled)
    }

    /// The policy the current run's rounds are judged by: `policy`, tightened by the run's
    /// own.
    pub fn policy(&self, policy: &fedsilo_policies::Policy) -> fedsilo_policies::Policy {
        match &self.job {
            Some(j) => j.policy.tighten(policy),
            None => policy.clone(),
        }
    }

    /// The training settings of the current run's rounds: its own, else `s`'s.
    pub fn training(&self, s: &CoordinatorSettings) -> Training {
        let own = self.job.as_ref().map(|j| &j.settings);
        Training {
            epochs: own.and_then(|o| o.epochs).unwrap_or(s.epochs),
            batch_size: own.and_then(|o| o.batch_size).unwrap_or(s.batch_size),
            learning_rate: own.and_then(|o| o.learning_rate).unwrap_or(s.learning_rate),
            prox_mu: own.and_then(|o| o.prox_mu).unwrap_or(s.prox_mu),
        }
    }
}

/// The training settings a round is dispatched with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Training {
    /// Local epochs.
    pub epochs: u32,
    /// Mini-batch size.
    pub batch_size: u32,
    /// Learning rate.
    pub learning_rate: f32,
    /// FedProx μ.
    pub prox_mu: f32,
}

/// The Coordinator's state.
pub struct CoordinatorState {
    /// Settings of the run.
    pub settings: CoordinatorSettings,
    /// Actors and channels.
    pub links: Links,
    /// Checkpoints, journal, registry, events.
    pub ledger: Ledger,
    /// The current version and what goes with it.
    pub versions: Versions,
    /// Silos and regional aggregators.
    pub members: Members,
    /// The run's rounds.
    pub run: Run,
    /// What the coordinator is doing.
    pub phase: Phase,
    /// Whether an operator paused it.
    pub hold: Hold,
    /// Every training run: queued, running, past ([`crate::runs`]).
    pub runs: RunBook,
    /// The members the federation expects, and who of them is missing.
    pub roster: super::roster::Roster,
    /// Which version goes to which silo ([`crate::deploy`]).
    pub deployments: super::deployments::Deployments,
}

impl CoordinatorState {
    /// The scaling, or an empty one (checkpoints made before it was agreed).
    pub fn scaling_or_empty(&self) -> crate::protocol::Scaling {
        self.versions
            .scaling
            .clone()
            .unwrap_or(crate::protocol::Scaling {
                mean: vec![],
                std: vec![],
            })
    }

    /// The training rows each silo reported at its schema check.
    pub fn reported_rows(&self) -> BTreeMap<String, u64> {
        self.members
            .silos
            .iter()
            .filter_map(|(n, e)| e.reported_rows.map(|r| (n.clone(), r)))
            .collect()
    }
}
