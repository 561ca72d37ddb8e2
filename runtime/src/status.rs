//! What a running federation looks like from outside: the coordinator publishes a
//! [`FederationStatus`] after every step it takes, for the admin API and for custom actors.

use serde::Serialize;

/// Where the federation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Feature scaling not agreed yet.
    #[default]
    Starting,
    /// Idle and able to start a round (or waiting for enough eligible silos).
    Ready,
    /// A round is in flight.
    RoundInFlight,
    /// A candidate waits for an operator's approval; no round starts meanwhile.
    AwaitingApproval,
    /// Paused by an operator: no new round starts until it is resumed.
    Paused,
    /// The run is over.
    Finished,
    /// Between training runs: serving, waiting for a run to be submitted.
    Idle,
}

/// Who paused the federation, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pause {
    /// Operator certificate name or API token name.
    pub by: String,
    /// Their reason.
    pub reason: String,
}

/// A candidate waiting for an operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AwaitingCandidate {
    /// The candidate version.
    pub version: u64,
    /// The round that made it.
    pub round: u64,
    /// SHA-256 of its checkpoint file.
    pub file_sha256: String,
}

/// One silo as the coordinator sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SiloStatus {
    /// Name, from its certificate.
    pub name: String,
    /// Region, from its certificate.
    pub region: String,
    /// Answers heartbeats.
    pub healthy: bool,
    /// Seconds since its last heartbeat answer.
    pub last_heartbeat_secs: f64,
    /// Its schema digest matches the federation's.
    pub schema_verified: bool,
    /// Its software version, once known.
    pub software_version: String,
    /// Why it is excluded from rounds for good (schema mismatch, ...), if it is.
    pub blocked: Option<String>,
    /// Quarantined: excluded from rounds before this one.
    pub quarantined_until: Option<u64>,
    /// The version deployed there, as it last said.
    pub deployed_version: Option<u64>,
    /// The version due to it by the last deployment order that covers it, if any.
    pub deployment_due: Option<u64>,
    /// Why it refused the order due to it, if it did.
    pub deployment_refused: Option<String>,
}

/// A member the roster (`[[members]]`) expects, and whether it is there.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RosterEntry {
    /// Its name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// `silo` or `aggregator`.
    pub role: String,
    /// Linked and answering heartbeats.
    pub present: bool,
}

/// The federation at one moment.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct FederationStatus {
    /// The federation's name (`federation.name`).
    pub federation: String,
    /// The coordinator's node name.
    pub coordinator: String,
    /// Where it stands.
    pub state: RunState,
    /// Set while paused.
    pub paused: Option<Pause>,
    /// The round in flight.
    pub round_in_flight: Option<u64>,
    /// The number the next round gets.
    pub next_round: u64,
    /// The active run's last round (0 between runs).
    pub rounds: u64,
    /// The active run's id (a serving coordinator; `None` between runs, or when not serving).
    pub run: Option<u64>,
    /// Every training run of a serving coordinator: queued, running, past.
    pub runs: Vec<crate::runs::RunRecord>,
    /// The members the federation file expects, each present or not (empty: no roster).
    pub roster: Vec<RosterEntry>,
    /// The last deployment orders, newest last ([`crate::deploy`]).
    pub deployments: Vec<crate::deploy::Deployment>,
    /// The current version.
    pub current_version: u64,
    /// Versions committed by this run of the coordinator.
    pub committed_this_run: u64,
    /// The candidate awaiting approval.
    pub awaiting_approval: Option<AwaitingCandidate>,
    /// Why no round can start now, when none can.
    pub waiting_for: Vec<String>,
    /// Every silo with an open session, by name.
    pub silos: Vec<SiloStatus>,
    /// How the run ended (`None` while it runs, or when it ended successfully).
    pub error: Option<String>,
}
