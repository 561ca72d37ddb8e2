//! What `[secure_aggregation]` asks of the coordinator's aggregation settings: a weighted mean
//! of updates it never sees one by one, in a ring that cannot overflow.

use fedsilo_policies::secure_aggregation::SecureAggregationRules;

use super::quantize::{QuantizeError, Quantizer};
use crate::kernels::{Aggregation, Kernel};

/// Aggregation settings secure aggregation cannot work with.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Unsupported {
    /// A kernel other than the mean.
    #[error("[secure_aggregation] needs aggregation.kernel = \"mean\": `{0}` needs each silo's update, and the aggregator only ever sees their sum")]
    Kernel(String),
    /// Clipping at the aggregator.
    #[error("[secure_aggregation] cannot clip updates at the aggregator (aggregation.clip_norm = {0}): it never sees one; let the silos clip with [privacy] mode = \"distributed\", or rely on secure_aggregation.range")]
    Clipping(f64),
    /// A ring too small for the cohort.
    #[error(transparent)]
    Ring(#[from] QuantizeError),
}

/// Whether `aggregation` can run under `rules` with cohorts of at most `max_silos` (when the
/// policy caps them): the mean only, no server-side clipping, and a ring sized for the cohort.
pub fn check_aggregation(
    rules: &SecureAggregationRules,
    aggregation: &Aggregation,
    max_silos: Option<usize>,
) -> Result<(), Unsupported> {
    if !matches!(aggregation.kernel, Kernel::Mean) {
        return Err(Unsupported::Kernel(aggregation.kernel.name().to_string()));
    }
    if let Some(c) = aggregation.clip_norm {
        return Err(Unsupported::Clipping(c));
    }
    if let Some(m) = max_silos {
        Quantizer::new(rules.bits, rules.range, m)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robust_kernels_and_central_clipping_are_refused_with_the_reason() {
        let rules = SecureAggregationRules {
            threshold: None,
            bits: 32,
            range: 1.0,
        };
        assert!(check_aggregation(&rules, &Aggregation::default(), Some(10)).is_ok());
        let trimmed = Aggregation {
            kernel: Kernel::TrimmedMean { trim: 0.2 },
            ..Aggregation::default()
        };
        let e = check_aggregation(&rules, &trimmed, None).unwrap_err();
        assert_eq!(e, Unsupported::Kernel("trimmed-mean".into()));
        assert!(e.to_string().contains("only ever sees their sum"), "{e}");
        let clipped = Aggregation {
            clip_norm: Some(1.0),
            ..Aggregation::default()
        };
        assert_eq!(
            check_aggregation(&rules, &clipped, None),
            Err(Unsupported::Clipping(1.0))
        );
        let narrow = SecureAggregationRules { bits: 16, ..rules };
        let e = check_aggregation(&narrow, &Aggregation::default(), Some(1000)).unwrap_err();
        assert!(
            matches!(e, Unsupported::Ring(QuantizeError::Overflow { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("raise the bits"), "{e}");
    }
}
