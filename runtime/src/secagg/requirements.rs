//! What `[secure_aggregation]` asks of the coordinator's aggregation settings: a weighted mean
//! of updates it never sees one by one, in a ring that cannot overflow.

use fedsilo_policies::secure_aggregation::SecureAggregationRules;

use super::quantize::Quantizer;
use crate::kernels::{Aggregation, Kernel};

/// Whether `aggregation` can run under `rules` with cohorts of at most `max_silos` (when the
/// policy caps them): the mean only, no server-side clipping, and a ring sized for the cohort.
pub fn check_aggregation(
    rules: &SecureAggregationRules,
    aggregation: &Aggregation,
    max_silos: Option<usize>,
) -> Result<(), String> {
    if !matches!(aggregation.kernel, Kernel::Mean) {
        return Err(format!(
            "[secure_aggregation] needs aggregation.kernel = \"mean\": `{}` needs each silo's update, and the aggregator only ever sees their sum",
            aggregation.kernel.name()
        ));
    }
    if let Some(c) = aggregation.clip_norm {
        return Err(format!(
            "[secure_aggregation] cannot clip updates at the aggregator (aggregation.clip_norm = {c}): it never sees one; let the silos clip with [privacy] mode = \"distributed\", or rely on secure_aggregation.range"
        ));
    }
    if let Some(m) = max_silos {
        Quantizer::new(rules.bits, rules.range, m).map_err(|e| e.to_string())?;
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
        assert!(
            e.contains("trimmed-mean") && e.contains("only ever sees their sum"),
            "{e}"
        );
        let clipped = Aggregation {
            clip_norm: Some(1.0),
            ..Aggregation::default()
        };
        assert!(check_aggregation(&rules, &clipped, None)
            .unwrap_err()
            .contains("clip"));
        let narrow = SecureAggregationRules { bits: 16, ..rules };
        let e = check_aggregation(&narrow, &Aggregation::default(), Some(1000)).unwrap_err();
        assert!(e.contains("raise the bits"), "{e}");
    }
}
