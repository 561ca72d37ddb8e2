//! Reading a CSV file under a [`Schema`].

use std::collections::HashMap;
use std::path::Path;

use fedsilo::data::{FeatureKind, Label, Schema};
use fedsilo::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Rows of one split, column-typed. Invariant: every vector has one entry per row.
#[derive(Debug, Clone, Default)]
pub struct Split {
    /// Numeric features, row-major `[rows × numeric]`; `NaN` marks a missing value.
    pub numeric: Vec<f32>,
    /// Categorical features, row-major `[rows × categorical]`; `None`: empty or unseen level.
    pub categorical: Vec<Option<u16>>,
    /// Labels (0 or 1).
    pub labels: Vec<f32>,
}

impl Split {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Adds `other`'s rows after these (both read under the same schema): the pooled rows of
    /// several silos, for the non-private reference.
    pub fn append(&mut self, other: &Split) {
        self.numeric.extend_from_slice(&other.numeric);
        self.categorical.extend_from_slice(&other.categorical);
        self.labels.extend_from_slice(&other.labels);
    }
}

/// A silo's dataset: training and held-out splits.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The schema it was read with.
    pub schema: Schema,
    /// Training rows.
    pub train: Split,
    /// Held-out rows (never trained on; used for evaluation).
    pub holdout: Split,
    /// Rows skipped because the target was empty.
    pub skipped_rows: usize,
    /// Categorical cells whose value is not a declared level (encoded as all zeros).
    pub unseen_levels: usize,
}

impl Dataset {
    /// Why the training split cannot train a binary model, if it cannot: all its labels are
    /// one class. Said at the schema check, so the coordinator leaves the silo out with the
    /// reason instead of training a model that learned nothing.
    pub fn single_class(&self) -> Option<String> {
        let n = self.train.len();
        if n == 0 {
            return None; // an evaluate-only silo trains on nothing
        }
        let positives = self.train.labels.iter().filter(|l| **l > 0.5).count();
        let t = &self.schema.target;
        let (negative, positive) = match t.classes.as_slice() {
            [negative, positive] => (negative.clone(), positive.clone()),
            _ => (t.negative.join(", "), t.positive.clone()),
        };
        let only = if positives == 0 {
            Some(format!("negative ({negative})"))
        } else if positives == n {
            Some(format!("positive ({positive})"))
        } else {
            None
        };
        only.map(|class| {
            format!(
                "its training split has a single class: all {n} rows are {class} in column `{}`; a binary model needs both",
                t.column
            )
        })
    }

    /// Reads `path` under `schema`, shuffles rows with `seed` and keeps `holdout` (0 < f ≤ 1)
    /// of them as the held-out split (1: every row, for a central hold-out that never trains).
    /// Errors name the file, line and column.
    pub fn load(path: &Path, schema: &Schema, holdout: f64, seed: u64) -> Result<Self> {
        let origin = path.display().to_string();
        let bad = |message: String| Error::Data {
            origin: origin.clone(),
            message,
        };
        if !(holdout > 0.0 && holdout <= 1.0) {
            return Err(bad(format!("holdout fraction {holdout} must be in (0, 1]")));
        }
        schema.for_mlp().map_err(|e| bad(e.to_string()))?;
        let read = read_rows(path, schema, true)?;
        let all = read.rows;
        if all.len() < 2 {
            return Err(bad(format!("{} usable rows; need at least 2", all.len())));
        }
        let (n_num, n_cat) = (schema.numeric_count(), schema.categorical_count());
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_hold = if holdout >= 1.0 {
            all.len()
        } else {
            ((all.len() as f64 * holdout).round() as usize).clamp(1, all.len() - 1)
        };
        let pick = |rows: &[usize]| Split {
            numeric: rows
                .iter()
                .flat_map(|&r| all.numeric[r * n_num..(r + 1) * n_num].iter().copied())
                .collect(),
            categorical: rows
                .iter()
                .flat_map(|&r| all.categorical[r * n_cat..(r + 1) * n_cat].iter().copied())
                .collect(),
            labels: rows.iter().map(|&r| all.labels[r]).collect(),
        };
        Ok(Dataset {
            schema: schema.clone(),
            holdout: pick(&order[..n_hold]),
            train: pick(&order[n_hold..]),
            skipped_rows: read.skipped_rows,
            unseen_levels: read.unseen_levels,
        })
    }
}

/// Rows read from a CSV, in the file's order.
struct Read {
    rows: Split,
    skipped_rows: usize,
    unseen_levels: usize,
}

/// Every row of `path` under `schema`'s features. With `labelled`, the target column must be
/// there, rows with an empty target are skipped and an undeclared one is an error; without,
/// the target column is ignored (present or not) and each row's label is `NaN` (unknown).
/// Errors name the file, line and column.
fn read_rows(path: &Path, schema: &Schema, labelled: bool) -> Result<Read> {
    let origin = path.display().to_string();
    let bad = |message: String| Error::Data {
        origin: origin.clone(),
        message,
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| bad(e.to_string()))?;
    let headers = rdr.headers().map_err(|e| bad(e.to_string()))?.clone();
    let index: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let col = |name: &str| {
        index.get(name).copied().ok_or_else(|| {
            bad(format!(
                "column `{name}` named in the schema is missing; the file has: {}",
                headers.iter().collect::<Vec<_>>().join(", ")
            ))
        })
    };
    let target_col = if labelled {
        Some(col(&schema.target.column)?)
    } else {
        None
    };
    let mut numeric_cols = Vec::new();
    let mut cat_cols = Vec::new();
    for f in &schema.features {
        match &f.kind {
            FeatureKind::Numeric => numeric_cols.push((f.column.clone(), col(&f.column)?)),
            FeatureKind::Categorical { levels } => {
                let lv: HashMap<String, u16> = levels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.clone(), i as u16))
                    .collect();
                cat_cols.push((f.column.clone(), col(&f.column)?, lv));
            }
            // Read by text models only; the MLP does not need the column.
            FeatureKind::Text => {}
        }
    }
    let mut all = Split::default();
    let (mut skipped_rows, mut unseen_levels) = (0, 0);
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| bad(format!("line {line}: {e}")))?;
        let label = match target_col {
            None => f32::NAN,
            Some(t) => {
                let target = rec.get(t).unwrap_or("").trim();
                match schema.target.label(target) {
                    Label::Missing => {
                        skipped_rows += 1;
                        continue;
                    }
                    Label::Unknown => {
                        return Err(bad(format!(
                            "line {line}, column `{}`: label `{target}` is not declared in the schema's [target] ({}); labels are compared exactly, case included",
                            schema.target.column,
                            schema.target.allowed()
                        )))
                    }
                    Label::Positive => 1.0,
                    Label::Negative => 0.0,
                }
            }
        };
        for (name, c) in &numeric_cols {
            let cell = rec.get(*c).unwrap_or("").trim();
            let v = if cell.is_empty() || cell.eq_ignore_ascii_case("na") {
                f32::NAN
            } else {
                let v: f32 = cell.parse().map_err(|_| {
                    bad(format!(
                        "line {line}, column `{name}`: `{cell}` is not a number (numeric feature)"
                    ))
                })?;
                if !v.is_finite() {
                    return Err(bad(format!(
                        "line {line}, column `{name}`: `{cell}` is not finite"
                    )));
                }
                v
            };
            all.numeric.push(v);
        }
        for (_, c, levels) in &cat_cols {
            let cell = rec.get(*c).unwrap_or("").trim();
            let idx = levels.get(cell).copied();
            if idx.is_none() && !cell.is_empty() {
                unseen_levels += 1;
            }
            all.categorical.push(idx);
        }
        all.labels.push(label);
    }
    if unseen_levels > 0 {
        tracing::warn!(file = %origin, unseen_levels, "cells with a level the schema does not declare were encoded as all zeros");
    }
    Ok(Read {
        rows: all,
        skipped_rows,
        unseen_levels,
    })
}

/// Every row of `path` under `schema`'s features, in the file's order, for scoring: the
/// target column may be absent (it is ignored), and the labels are `NaN`.
pub fn unlabelled(path: &Path, schema: &Schema) -> Result<Split> {
    Ok(read_rows(path, schema, false)?.rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const SCHEMA: &str = "[target]\ncolumn = \"y\"\npositive = \"yes\"\nnegative = [\"no\"]\n[[feature]]\ncolumn = \"a\"\nkind = \"numeric\"\n[[feature]]\ncolumn = \"c\"\nkind = \"categorical\"\nlevels = [\"p\", \"q\"]\n";

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_and_splits() {
        let schema = Schema::from_toml_str(SCHEMA, "s").unwrap();
        let mut csv = String::from("a,c,y,extra\n");
        for i in 0..10 {
            csv.push_str(&format!(
                "{i},{},{},z\n",
                if i % 2 == 0 { "p" } else { "r" },
                if i < 3 { "yes" } else { "no" }
            ));
        }
        csv.push_str(",q,,z\n"); // no target: skipped
        let f = file(&csv);
        let d = Dataset::load(f.path(), &schema, 0.2, 1).unwrap();
        assert_eq!(d.train.len() + d.holdout.len(), 10);
        assert_eq!(d.holdout.len(), 2);
        assert_eq!(d.skipped_rows, 1);
        assert_eq!(d.unseen_levels, 5);
        let pos: f32 = d.train.labels.iter().chain(&d.holdout.labels).sum();
        assert_eq!(pos, 3.0);
    }

    #[test]
    fn a_label_the_schema_does_not_declare_is_an_error_and_one_class_is_named() {
        let schema = Schema::from_toml_str(SCHEMA, "s").unwrap();
        let f = file("a,c,y\n1,p,yes\n2,p,no\n3,q,Yes\n");
        let e = Dataset::load(f.path(), &schema, 0.5, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&f.path().display().to_string())
                && e.contains("line 4")
                && e.contains("`Yes`")
                && e.contains("positive \"yes\"; negative \"no\""),
            "{e}"
        );
        let f = file("a,c,y\n1,p,no\n2,p,no\n3,q,no\n4,q,no\n");
        let d = Dataset::load(f.path(), &schema, 0.25, 1).unwrap();
        let why = d.single_class().unwrap();
        assert!(
            why.contains("single class") && why.contains("negative (no)"),
            "{why}"
        );
        let f = file("a,c,y\n1,p,no\n2,p,yes\n3,q,no\n4,q,yes\n5,q,yes\n6,p,no\n");
        let d = Dataset::load(f.path(), &schema, 0.2, 1).unwrap();
        assert_eq!(d.single_class(), None);
    }

    #[test]
    fn errors_name_line_and_column() {
        let schema = Schema::from_toml_str(SCHEMA, "s").unwrap();
        let f = file("a,c,y\n1,p,yes\nabc,p,no\n");
        let e = Dataset::load(f.path(), &schema, 0.5, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("`a`") && e.contains("abc"),
            "{e}"
        );
        let f = file("a,y\n1,yes\n");
        let e = Dataset::load(f.path(), &schema, 0.5, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("column `c`"), "{e}");
    }

    /// A schema that also describes text for a text model: the MLP reads around the text
    /// column (its encoding has no column for it), and refuses a target of several classes.
    #[test]
    fn the_mlp_reads_around_text_columns_and_refuses_several_classes() {
        let text = format!("{SCHEMA}[[feature]]\ncolumn = \"note\"\nkind = \"text\"\n");
        let schema = Schema::from_toml_str(&text, "s").unwrap();
        let f = file("a,note,c,y\n1,\"great, fast\",p,yes\n2,slow,q,no\n3,,p,no\n4,ok,q,yes\n");
        let d = Dataset::load(f.path(), &schema, 0.5, 1).unwrap();
        assert_eq!(d.train.len() + d.holdout.len(), 4);
        let x = crate::data::encode(
            &schema,
            &d.train,
            &fedsilo::protocol::Scaling {
                mean: vec![0.0],
                std: vec![1.0],
            },
        );
        assert_eq!(x.ncols(), 3, "a, and c's two levels");
        let several = text.replace(
            "positive = \"yes\"\nnegative = [\"no\"]\n",
            "classes = [\"no\", \"yes\", \"maybe\"]\n",
        );
        let schema = Schema::from_toml_str(&several, "s").unwrap();
        let e = Dataset::load(f.path(), &schema, 0.5, 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("3 classes") && e.contains("binary"), "{e}");
    }
}
