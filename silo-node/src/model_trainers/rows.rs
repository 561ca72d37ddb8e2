//! A silo's CSV under a manifest, as whole rows: the silo reads the label column (a label the
//! task does not declare is an error naming the file, line, column and the allowed classes,
//! compared exactly, case included; a regression's label must be a finite number; an empty
//! label skips the row) and splits the rows into
//! training and held-out ones itself — shuffled with the split seed, the held-out fraction
//! rounded with at least one row on each side, as for tabular data — or takes the held-out
//! rows from a file of their own. The text trainer joins the text columns of these rows; an
//! external program gets whole rows: the training rows with their labels to train on, other
//! rows without the label column to score.

use std::path::Path;

use csv::StringRecord;
use fedsilo::model::manifest::Manifest;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Why a silo's CSV cannot be used under a manifest: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct TextDataError {
    /// The file.
    pub origin: String,
    /// What is wrong, with the line and column where there is one.
    pub message: String,
}

/// Where a silo's held-out rows come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Holdout {
    /// A seeded random fraction of the data file, in (0, 1] (1: every row, for a central
    /// hold-out).
    Fraction {
        /// The fraction.
        fraction: f64,
        /// The shuffling seed.
        seed: u64,
    },
    /// A file of their own (`--holdout-data`); the data file is all training rows.
    File(std::path::PathBuf),
}

/// The labels of rows, as the task reads them.
#[derive(Debug, Clone, PartialEq)]
pub enum Labels {
    /// Class indices into the task's classes.
    Classes(Vec<usize>),
    /// A regression's numbers, in the label's units.
    Values(Vec<f64>),
}

impl Default for Labels {
    fn default() -> Self {
        Labels::Classes(Vec::new())
    }
}

impl Labels {
    /// How many rows are labelled.
    pub fn len(&self) -> usize {
        match self {
            Labels::Classes(c) => c.len(),
            Labels::Values(v) => v.len(),
        }
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The labels of rows `ix`, in that order.
    pub fn pick(&self, ix: &[usize]) -> Labels {
        match self {
            Labels::Classes(c) => Labels::Classes(ix.iter().map(|&i| c[i]).collect()),
            Labels::Values(v) => Labels::Values(ix.iter().map(|&i| v[i]).collect()),
        }
    }

    /// These labels followed by `other`'s (of the same kind; `None` when they differ).
    pub fn chain(&self, other: &Labels) -> Option<Labels> {
        match (self, other) {
            (Labels::Classes(a), Labels::Classes(b)) => {
                Some(Labels::Classes(a.iter().chain(b).copied().collect()))
            }
            (Labels::Values(a), Labels::Values(b)) => {
                Some(Labels::Values(a.iter().chain(b).copied().collect()))
            }
            _ => None,
        }
    }
}

/// Rows with their labels, split.
#[derive(Debug, Clone)]
pub struct Rows {
    /// The data file's header.
    pub header: StringRecord,
    /// The label column's index in it.
    pub label: usize,
    /// Training rows.
    pub train: Vec<StringRecord>,
    /// Their labels.
    pub train_labels: Labels,
    /// Held-out rows.
    pub holdout: Vec<StringRecord>,
    /// Their labels.
    pub holdout_labels: Labels,
    /// Rows skipped because their label was empty.
    pub skipped: usize,
}

fn bad(path: &Path, message: String) -> TextDataError {
    TextDataError {
        origin: path.display().to_string(),
        message,
    }
}

/// A column the manifest names must appear at most once: with two `label` columns, scoring
/// would hand the program the second one.
fn check_header(
    path: &Path,
    header: &StringRecord,
    manifest: &Manifest,
) -> Result<(), TextDataError> {
    let named = std::iter::once(&manifest.data.label).chain(&manifest.data.text);
    for c in named {
        if header.iter().filter(|h| h == c).count() > 1 {
            return Err(bad(
                path,
                format!("column `{c}` appears more than once in the header"),
            ));
        }
    }
    Ok(())
}

/// A file's labelled rows.
struct Labelled {
    header: StringRecord,
    label: usize,
    rows: Vec<StringRecord>,
    labels: Labels,
    skipped: usize,
}

/// The header and labelled rows of `path` (rows with an empty label skipped).
fn labelled(path: &Path, manifest: &Manifest) -> Result<Labelled, TextDataError> {
    let mut rdr = csv::Reader::from_path(path).map_err(|e| bad(path, e.to_string()))?;
    let header = rdr.headers().map_err(|e| bad(path, e.to_string()))?.clone();
    check_header(path, &header, manifest)?;
    let label = header
        .iter()
        .position(|h| h == manifest.data.label)
        .ok_or_else(|| {
            bad(
                path,
                format!(
                    "the label column `{}` is missing; the file has: {}",
                    manifest.data.label,
                    header.iter().collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
    let (mut rows, mut classes, mut values, mut skipped) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.map_err(|e| bad(path, format!("line {}: {e}", i + 2)))?;
        let cell = rec.get(label).unwrap_or("").trim();
        if cell.is_empty() {
            skipped += 1;
            continue;
        }
        if manifest.task.is_regression() {
            let v = manifest.task.value_of(cell).ok_or_else(|| {
                bad(
                    path,
                    format!(
                        "line {}, column `{}`: label `{cell}` is not a number; a regression's label is a finite number of magnitude at most 1e12",
                        i + 2,
                        manifest.data.label,
                    ),
                )
            })?;
            rows.push(rec);
            values.push(v);
            continue;
        }
        let class = manifest.task.class_of(cell).ok_or_else(|| {
            bad(
                path,
                format!(
                    "line {}, column `{}`: label `{cell}` is not one of the manifest's classes ({}); labels are compared exactly, case included",
                    i + 2,
                    manifest.data.label,
                    manifest.task.classes().iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")
                ),
            )
        })?;
        rows.push(rec);
        classes.push(class);
    }
    let labels = if manifest.task.is_regression() {
        Labels::Values(values)
    } else {
        Labels::Classes(classes)
    };
    if rows.len() < 2 {
        return Err(bad(
            path,
            format!("{} usable rows; need at least 2", rows.len()),
        ));
    }
    Ok(Labelled {
        header,
        label,
        rows,
        labels,
        skipped,
    })
}

/// Why rows with these labels cannot train the task, if they cannot: all one class, or a
/// regression's label the same number in every row (nothing to learn).
pub fn single_class(labels: &Labels, manifest: &Manifest) -> Option<String> {
    match labels {
        Labels::Classes(labels) => {
            let first = *labels.first()?;
            labels.iter().all(|l| *l == first).then(|| {
                format!(
                    "its training split has a single class: all {} rows are {:?} in column `{}`; a classifier needs at least two",
                    labels.len(),
                    manifest.task.classes().get(first).copied().unwrap_or("?"),
                    manifest.data.label
                )
            })
        }
        Labels::Values(values) => {
            let first = *values.first()?;
            values.iter().all(|v| *v == first).then(|| {
                format!(
                    "its training split's label is {first} in all {} rows of column `{}`; a regression needs labels that vary",
                    values.len(),
                    manifest.data.label
                )
            })
        }
    }
}

impl Rows {
    /// Reads `data` and splits it as `holdout` says.
    pub fn read(
        data: &Path,
        holdout: &Holdout,
        manifest: &Manifest,
    ) -> Result<Self, TextDataError> {
        let Labelled {
            header,
            label,
            rows,
            labels,
            skipped,
        } = labelled(data, manifest)?;
        match holdout {
            Holdout::File(h) => {
                let held = labelled(h, manifest)?;
                if held.header != header {
                    let cols = |r: &StringRecord| r.iter().collect::<Vec<_>>().join(", ");
                    return Err(bad(
                        h,
                        format!(
                            "its columns ({}) differ from the data file's ({})",
                            cols(&held.header),
                            cols(&header)
                        ),
                    ));
                }
                Ok(Rows {
                    header,
                    label,
                    train: rows,
                    train_labels: labels,
                    holdout: held.rows,
                    holdout_labels: held.labels,
                    skipped: skipped + held.skipped,
                })
            }
            Holdout::Fraction { fraction, seed } => {
                if !(*fraction > 0.0 && *fraction <= 1.0) {
                    return Err(bad(
                        data,
                        format!("holdout fraction {fraction} must be in (0, 1]"),
                    ));
                }
                let mut order: Vec<usize> = (0..rows.len()).collect();
                order.shuffle(&mut ChaCha8Rng::seed_from_u64(*seed));
                let n_hold = if *fraction >= 1.0 {
                    rows.len()
                } else {
                    ((rows.len() as f64 * fraction).round() as usize).clamp(1, rows.len() - 1)
                };
                let pick = |ix: &[usize]| -> (Vec<StringRecord>, Labels) {
                    (
                        ix.iter().map(|&i| rows[i].clone()).collect(),
                        labels.pick(ix),
                    )
                };
                let (holdout, holdout_labels) = pick(&order[..n_hold]);
                let (train, train_labels) = pick(&order[n_hold..]);
                Ok(Rows {
                    header,
                    label,
                    train,
                    train_labels,
                    holdout,
                    holdout_labels,
                    skipped,
                })
            }
        }
    }

    /// Every row of `path` and its header, labels or not (for scoring).
    pub fn unlabelled(
        path: &Path,
        manifest: &Manifest,
    ) -> Result<(StringRecord, Vec<StringRecord>), TextDataError> {
        let mut rdr = csv::Reader::from_path(path).map_err(|e| bad(path, e.to_string()))?;
        let header = rdr.headers().map_err(|e| bad(path, e.to_string()))?.clone();
        check_header(path, &header, manifest)?;
        let rows = rdr
            .records()
            .enumerate()
            .map(|(i, r)| r.map_err(|e| bad(path, format!("line {}: {e}", i + 2))))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((header, rows))
    }

    /// Why the training rows cannot train the task, if they cannot: all one class.
    pub fn single_class(&self, manifest: &Manifest) -> Option<String> {
        single_class(&self.train_labels, manifest)
    }
}

/// Writes `records` under `header` to `path`, leaving out column `drop` (the label, when rows
/// are to be scored).
pub fn write_csv(
    path: &Path,
    header: &StringRecord,
    records: &[StringRecord],
    drop: Option<usize>,
) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_path(path)?;
    let keep = |r: &StringRecord| -> Vec<String> {
        r.iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != drop)
            .map(|(_, v)| v.to_string())
            .collect()
    };
    w.write_record(keep(header))?;
    for r in records {
        w.write_record(keep(r))?;
    }
    w.flush()?;
    Ok(())
}
