//! The coordinator's metrics, updated from its events.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::events::{Event, Observer};

/// A round's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
}

/// Why an update was not aggregated, in a few classes (the full reason is in the event log).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Refusal {
    reason: &'static str,
}

/// An admin API refusal, by HTTP status.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdminRefusal {
    status: u16,
}

/// A silo, by name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Silo {
    silo: String,
}

/// A phase of a round.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Phase {
    phase: &'static str,
}

/// The coordinator's metrics.
#[derive(Debug)]
pub struct FederationMetrics {
    rounds: Family<Outcome, Counter>,
    refused: Family<Refusal, Counter>,
    quarantined: Counter,
    participants: Histogram,
    round_seconds: Family<Phase, Histogram>,
    bytes_from_silos: Counter,
    version: Gauge,
    epsilon: Gauge<f64, AtomicU64>,
    admin_refused: Family<AdminRefusal, Counter>,
    runs_ended: Family<Outcome, Counter>,
    active_run: Gauge,
    members_missing: Gauge,
    deployed: Family<Silo, Gauge>,
    registry: Registry,
}

impl Default for FederationMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The class of an update refusal's reason.
fn class(reason: &str) -> &'static str {
    let r = reason.to_lowercase();
    if r.contains("late") || r.contains("deadline") || r.contains("not collected") {
        "late"
    } else if r.contains("left the federation") || r.contains("heartbeat") || r.contains("session")
    {
        "lost"
    } else if r.contains("secure aggregation") {
        "secure_aggregation"
    } else if r.contains("budget") {
        "privacy_budget"
    } else {
        "refused"
    }
}

impl Observer for FederationMetrics {
    fn observe(&self, event: &Event) {
        self.observe_event(event);
    }
}

impl FederationMetrics {
    /// Counts an admin API request refused with `status` (401 or 403).
    pub fn admin_refused(&self, status: u16) {
        self.admin_refused
            .get_or_create(&AdminRefusal { status })
            .inc();
    }

    /// Empty metrics, registered.
    pub fn new() -> Self {
        let rounds = Family::<Outcome, Counter>::default();
        let refused = Family::<Refusal, Counter>::default();
        let quarantined = Counter::default();
        let participants = Histogram::new([1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 32.0, 64.0]);
        let round_seconds = Family::<Phase, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        });
        let bytes_from_silos = Counter::default();
        let version = Gauge::default();
        let epsilon = Gauge::<f64, AtomicU64>::default();
        let mut registry = Registry::with_prefix("fedsilo");
        registry.register("rounds", "Rounds ended, by outcome", rounds.clone());
        registry.register(
            "updates_refused",
            "Updates not aggregated, by class of reason",
            refused.clone(),
        );
        registry.register(
            "silos_quarantined",
            "Quarantines started",
            quarantined.clone(),
        );
        registry.register(
            "round_participants",
            "Silos whose updates a committed round aggregated",
            participants.clone(),
        );
        registry.register(
            "round_seconds",
            "Committed rounds' time by phase: total (dispatch to validated candidate), training (the slowest silo), overhead (total minus training), open, dispatch, fetch (the slowest silo's), collect, aggregate, validate, commit, and period (commit to commit)",
            round_seconds.clone(),
        );
        registry.register(
            "bytes_from_silos",
            "Bytes the silos sent during committed rounds",
            bytes_from_silos.clone(),
        );
        registry.register(
            "current_version",
            "The current model version",
            version.clone(),
        );
        registry.register(
            "privacy_epsilon",
            "Silo-level DP: the epsilon spent so far, as of the last committed round",
            epsilon.clone(),
        );
        let admin_refused = Family::<AdminRefusal, Counter>::default();
        registry.register(
            "admin_refusals",
            "Admin API requests refused for their credentials, by HTTP status (401, 403)",
            admin_refused.clone(),
        );
        let runs_ended = Family::<Outcome, Counter>::default();
        registry.register(
            "runs_ended",
            "Training runs ended (a serving coordinator), by outcome: finished, failed, cancelled",
            runs_ended.clone(),
        );
        let active_run = Gauge::default();
        registry.register(
            "active_run",
            "The id of the training run in progress (0: none)",
            active_run.clone(),
        );
        let members_missing = Gauge::default();
        registry.register(
            "members_missing",
            "Members of the roster ([[members]]) missing now",
            members_missing.clone(),
        );
        let deployed = Family::<Silo, Gauge>::default();
        registry.register(
            "silo_deployed_version",
            "The version deployed at each silo, as it last confirmed",
            deployed.clone(),
        );
        FederationMetrics {
            deployed,
            members_missing,
            runs_ended,
            active_run,
            admin_refused,
            rounds,
            refused,
            quarantined,
            participants,
            round_seconds,
            bytes_from_silos,
            version,
            epsilon,
            registry,
        }
    }

    /// Counts what `event` says.
    fn observe_event(&self, event: &Event) {
        let outcome = |o| {
            self.rounds.get_or_create(&Outcome { outcome: o }).inc();
        };
        match event {
            Event::RoundCommitted(s) => {
                outcome("committed");
                self.participants.observe(s.participants.len() as f64);
                let p = &s.phases;
                for (phase, secs) in [
                    ("total", s.wall_seconds),
                    ("training", s.slowest_train_seconds),
                    ("overhead", s.overhead_seconds),
                    ("open", p.open),
                    ("dispatch", p.dispatch),
                    ("fetch", p.fetch),
                    ("collect", p.collect),
                    ("aggregate", p.aggregate),
                    ("validate", p.validate),
                    ("commit", p.commit),
                ]
                .into_iter()
                .chain(s.period_seconds.map(|x| ("period", x)))
                {
                    self.round_seconds
                        .get_or_create(&Phase { phase })
                        .observe(secs);
                }
                self.bytes_from_silos
                    .inc_by(s.bytes_from_silos.values().sum::<u64>());
                self.version.set(s.version as i64);
                if let Some(p) = &s.privacy {
                    self.epsilon.set(p.epsilon);
                }
            }
            Event::RoundRejected { .. } => outcome("rejected"),
            // A candidate an operator approves becomes current then, not when its round ended
            // (its `round_committed` follows).
            Event::Approved { version, .. } => {
                self.version.set(*version as i64);
            }
            Event::RolledBack { to, .. } => {
                self.version.set(*to as i64);
            }
            Event::Resumed { version, .. } => {
                self.version.set(*version as i64);
            }
            Event::RoundAbandoned { .. } => outcome("abandoned"),
            Event::UpdateRefused { reason, .. } => {
                self.refused
                    .get_or_create(&Refusal {
                        reason: class(reason),
                    })
                    .inc();
            }
            Event::SiloQuarantined { .. } => {
                self.quarantined.inc();
            }
            Event::MemberMissing { .. } => {
                self.members_missing.inc();
            }
            Event::MemberReturned { .. } => {
                self.members_missing.dec();
            }
            Event::SiloDeployed { silo, version, .. } => {
                self.deployed
                    .get_or_create(&Silo { silo: silo.clone() })
                    .set(i64::try_from(*version).unwrap_or(i64::MAX));
            }
            Event::RunStarted { run, .. } => {
                self.active_run.set(*run as i64);
            }
            Event::RunEnded { outcome, .. } => {
                let outcome = match outcome.as_str() {
                    "finished" => "finished",
                    "failed" => "failed",
                    _ => "cancelled",
                };
                self.runs_ended.get_or_create(&Outcome { outcome }).inc();
                self.active_run.set(0);
            }
            _ => {}
        }
    }

    /// The registry, to encode.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::encoding::text::encode;

    #[test]
    fn events_become_counters_and_histograms() {
        let m = FederationMetrics::new();
        m.observe(&Event::RoundAbandoned {
            round: 1,
            reason: "quorum lost".into(),
        });
        for reason in [
            "no update before the round deadline (30s)",
            "left the federation mid-round (session closed)",
            "update has a non-finite value",
        ] {
            m.observe(&Event::UpdateRefused {
                round: 2,
                silo: "a".into(),
                reason: reason.into(),
            });
        }
        let mut text = String::new();
        encode(&mut text, m.registry()).unwrap();
        for line in [
            "fedsilo_rounds_total{outcome=\"abandoned\"} 1",
            "fedsilo_updates_refused_total{reason=\"late\"} 1",
            "fedsilo_updates_refused_total{reason=\"lost\"} 1",
            "fedsilo_updates_refused_total{reason=\"refused\"} 1",
            "fedsilo_current_version 0",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }

    #[test]
    fn runs_are_counted_by_outcome_and_the_active_one_is_shown() {
        let m = FederationMetrics::new();
        let text = |m: &FederationMetrics| {
            let mut t = String::new();
            encode(&mut t, m.registry()).unwrap();
            t
        };
        m.observe(&Event::RunStarted {
            run: 7,
            rounds: 3,
            first_round: 40,
        });
        assert!(text(&m).contains("fedsilo_active_run 7"));
        m.observe(&Event::RunEnded {
            run: 7,
            outcome: "cancelled".into(),
            committed: 1,
            reason: Some("by alice: stop".into()),
        });
        let t = text(&m);
        assert!(t.contains("fedsilo_active_run 0"), "{t}");
        assert!(
            t.contains("fedsilo_runs_ended_total{outcome=\"cancelled\"} 1"),
            "{t}"
        );
    }
}
