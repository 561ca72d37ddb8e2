//! Encoding rows into a feature matrix, and the sums the federation's scaling is agreed from.

use fedsilo::data::{FeatureKind, Schema};
use fedsilo::protocol::{FeatureStats, Scaling};
use ndarray::Array2;

use super::Split;

/// Encodes a split: numeric features standardised with `scaling` (missing → 0, the mean),
/// categorical features one-hot in the schema's level order, text columns left out. Shape
/// `[rows × encoded_width]`.
pub fn encode(schema: &Schema, split: &Split, scaling: &Scaling) -> Array2<f32> {
    let width = schema.encoded_width();
    let n_num = schema.numeric_count();
    let n_cat = schema.categorical_count();
    let mut x = Array2::<f32>::zeros((split.len(), width));
    for (r, mut row) in x.rows_mut().into_iter().enumerate() {
        let (mut col, mut ni, mut ci) = (0, 0, 0);
        for f in &schema.features {
            match &f.kind {
                FeatureKind::Numeric => {
                    let v = split.numeric[r * n_num + ni];
                    let (m, s) = (
                        scaling.mean.get(ni).copied().unwrap_or(0.0),
                        scaling.std.get(ni).copied().unwrap_or(1.0),
                    );
                    row[col] = if v.is_nan() { 0.0 } else { (v - m) / s };
                    ni += 1;
                    col += 1;
                }
                FeatureKind::Categorical { levels } => {
                    if let Some(l) = split.categorical[r * n_cat + ci] {
                        row[col + l as usize] = 1.0;
                    }
                    ci += 1;
                    col += levels.len();
                }
                // Read by text models only.
                FeatureKind::Text => {}
            }
        }
    }
    x
}

/// Count, sum and sum of squares of each numeric feature over `split` (missing values skipped).
pub fn local_stats(schema: &Schema, split: &Split) -> FeatureStats {
    let n = schema.numeric_count();
    let mut st = FeatureStats {
        schema_digest: schema.digest(),
        software_version: env!("CARGO_PKG_VERSION").to_string(),
        rows: split.len() as u64,
        count: vec![0; n],
        sum: vec![0.0; n],
        sum_sq: vec![0.0; n],
        unusable: None,
        missing_files: vec![],
        loading: false,
        partial: None,
    };
    for r in 0..split.len() {
        for i in 0..n {
            let v = split.numeric[r * n + i];
            if !v.is_nan() {
                st.count[i] += 1;
                st.sum[i] += v as f64;
                st.sum_sq[i] += (v as f64) * (v as f64);
            }
        }
    }
    st
}

/// The scaling a silo would use alone (from its own statistics).
pub fn scaling_from(stats: &FeatureStats) -> Scaling {
    fedsilo::model::scaling::combine_stats(&stats.count, &stats.sum, &stats.sum_sq)
}
