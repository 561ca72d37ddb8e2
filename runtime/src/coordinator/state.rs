//! The Coordinator actor's state, grouped by what outlives what.
//!
//! The *federation* — who is a member ([`Members`]), the versions ([`Versions`]), the durable
//! record ([`Ledger`]), the operators' hold ([`Hold`]) — lives as long as the coordinator.
//! A *run* ([`Run`]) is one series of rounds towards `federation.rounds`: its counters, its
//! privacy spend and its waiting clock. What the coordinator is doing right now is the
//! [`Phase`]. Keeping these apart is what lets a later federation outlive its runs.

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
use crate::status::FederationStatus;

/// The actors and channels the coordinator talks to (none of them state of its own).
pub struct Links {
    /// Verified peers.
    pub directory: Arc<PeerDirectory>,
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

/// One run: rounds up to `federation.rounds`.
pub struct Run {
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
}

impl Run {
    /// A run that starts at round 1 (recovery moves it on).
    pub fn new(privacy: PrivacyBook) -> Self {
        Self {
            next_round: 1,
            committed: 0,
            idle_since: Instant::now(),
            last_waiting: Vec::new(),
            privacy,
            over_budget: BTreeSet::new(),
            exhausted: false,
            round_policy: Policy::default(),
            last_eval: BTreeMap::new(),
        }
    }
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
