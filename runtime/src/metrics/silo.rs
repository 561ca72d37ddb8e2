//! A silo node's metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// What a request to the silo was.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: &'static str,
}

/// A silo node's metrics.
#[derive(Debug)]
pub struct SiloMetrics {
    requests: Family<Kind, Counter>,
    refused: Family<Kind, Counter>,
    train_seconds: Histogram,
    deployed: Gauge,
    registry: Registry,
}

impl Default for SiloMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SiloMetrics {
    /// Empty metrics, registered.
    pub fn new() -> Self {
        let requests = Family::<Kind, Counter>::default();
        let refused = Family::<Kind, Counter>::default();
        let train_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 20));
        let mut registry = Registry::with_prefix("fedsilo_silo");
        registry.register(
            "requests",
            "Requests from the coordinator, by kind",
            requests.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests this silo refused or failed, by kind",
            refused.clone(),
        );
        registry.register(
            "train_seconds",
            "Local training time per round",
            train_seconds.clone(),
        );
        let deployed = Gauge::default();
        registry.register(
            "deployed_version",
            "The model version deployed at this silo (0: none)",
            deployed.clone(),
        );
        SiloMetrics {
            requests,
            refused,
            train_seconds,
            deployed,
            registry,
        }
    }

    /// Counts a request of `kind`.
    pub fn request(&self, kind: &'static str) {
        self.requests.get_or_create(&Kind { kind }).inc();
    }

    /// Counts a request of `kind` refused, or failed.
    pub fn refused(&self, kind: &'static str) {
        self.refused.get_or_create(&Kind { kind }).inc();
    }

    /// Records a training job's time.
    pub fn trained(&self, seconds: f64) {
        self.train_seconds.observe(seconds);
    }

    /// Records the version deployed at this silo.
    pub fn deployed(&self, version: u64) {
        self.deployed
            .set(i64::try_from(version).unwrap_or(i64::MAX));
    }

    /// The registry, to encode.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }
}
