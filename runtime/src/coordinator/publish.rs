//! The coordinator's status, published after every step into a `watch` channel that the
//! admin API and platform actors read ([`crate::control::FederationControl`]).

use super::membership::SchemaCheck;
use super::state::CoordinatorState;
use crate::status::{AwaitingCandidate, FederationStatus, SiloStatus};

/// Past runs the status carries (every queued and active one besides): enough for an
/// operator's view, bounded however many runs a federation has had.
const RUNS_SHOWN: usize = 100;
/// Deployment orders the status carries (the newest).
const DEPLOYMENTS_SHOWN: usize = 100;

/// The status now.
pub fn status(state: &CoordinatorState) -> FederationStatus {
    let quarantine_round = state.run.next_round;
    let members = &state.members;
    let due = |name: &str, region: &str| state.deployments.book.desired(name, region);
    let silos = members
        .silos
        .iter()
        .map(|(name, e)| SiloStatus {
            name: name.clone(),
            region: e.region.clone(),
            healthy: e.healthy,
            last_heartbeat_secs: e.last_ok.elapsed().as_secs_f64(),
            schema_verified: e.schema == SchemaCheck::Passed,
            software_version: e.software_version.clone(),
            blocked: e.blocked.clone(),
            quarantined_until: members.quarantine.quarantined_until(name, quarantine_round),
            deployed_version: e.deployed.map(|m| m.version),
            deployment_due: due(name, &e.region).map(|d| d.version),
            deployment_refused: e
                .deploy_refused
                .as_ref()
                .filter(|(id, _, _)| due(name, &e.region).is_some_and(|d| d.id == *id))
                .map(|(_, why, _)| why.clone()),
        })
        .collect();
    let s = &state.settings;
    FederationStatus {
        federation: s.name.clone(),
        coordinator: s.node.clone(),
        state: state
            .phase
            .run_state(&state.hold, state.versions.scaling.is_some()),
        paused: state.hold.pause().cloned(),
        round_in_flight: state.phase.round_in_flight(),
        next_round: state.run.next_round,
        rounds: state.run.until(),
        run: state.run.id(),
        runs: state.runs.recent(RUNS_SHOWN),
        roster: state.roster.view(&super::roster::present(state)),
        deployments: {
            let all = state.deployments.book.all();
            all[all.len().saturating_sub(DEPLOYMENTS_SHOWN)..].to_vec()
        },
        current_version: state.versions.model.version,
        committed_this_run: state.run.committed,
        awaiting_approval: state.phase.awaiting().map(|a| AwaitingCandidate {
            version: a.meta.version,
            round: a.meta.round,
            file_sha256: a.meta.file_sha256.clone(),
        }),
        waiting_for: state.run.last_waiting.clone(),
        silos,
        error: state.phase.error().cloned(),
    }
}

/// Publishes the status.
pub fn publish(state: &CoordinatorState) {
    state.links.status.send_replace(status(state));
}
