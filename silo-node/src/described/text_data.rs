//! A silo's text CSV, read under a model's manifest: the text column(s) joined with a space,
//! the label column mapped to the task's classes. A label the task does not declare is an
//! error naming the file, line, column and the allowed values (never guessed, case included);
//! an empty label skips the row; an empty text is kept (the tokenizer gives it the special
//! tokens only). Rows are split into training and held-out rows as the tabular data is: shuffled
//! with the split seed, the held-out fraction rounded, at least one row on each side.

use std::collections::HashMap;
use std::path::Path;

use fedsilo::model::manifest::Manifest;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The longest text cell kept, in bytes (the tokenizer truncates far below this anyway).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Why a text CSV cannot be used: the file and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct TextDataError {
    /// The file.
    pub origin: String,
    /// What is wrong, with the line and column where there is one.
    pub message: String,
}

/// Texts and their class indices.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextSplit {
    /// One text per example.
    pub texts: Vec<String>,
    /// Its class (index into the task's classes).
    pub labels: Vec<usize>,
}

impl TextSplit {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// A silo's text data: training and held-out rows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextData {
    /// Training rows.
    pub train: TextSplit,
    /// Held-out rows (never trained on).
    pub holdout: TextSplit,
    /// Rows skipped because the label was empty.
    pub skipped_rows: usize,
}

/// Where the manifest's columns are in a file.
struct Columns {
    text: Vec<usize>,
    label: Option<usize>,
}

/// Opens `path` and finds the manifest's text columns (each required) and its label column.
fn open(
    path: &Path,
    manifest: &Manifest,
) -> Result<(csv::Reader<std::fs::File>, Columns), TextDataError> {
    let origin = path.display().to_string();
    let bad = |message: String| TextDataError {
        origin: origin.clone(),
        message,
    };
    if manifest.data.text.is_empty() {
        return Err(bad(
            "the manifest's [data] names no text column: a text model needs `text = [\"column\"]`"
                .into(),
        ));
    }
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_path(path)
        .map_err(|e| bad(e.to_string()))?;
    let headers = rdr.headers().map_err(|e| bad(e.to_string()))?.clone();
    let index: HashMap<&str, usize> = headers.iter().enumerate().map(|(i, h)| (h, i)).collect();
    let text = manifest
        .data
        .text
        .iter()
        .map(|name| {
            index.get(name.as_str()).copied().ok_or_else(|| {
                bad(format!(
                    "column `{name}` named in the manifest's [data] is missing; the file has: {}",
                    headers.iter().collect::<Vec<_>>().join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let label = index.get(manifest.data.label.as_str()).copied();
    Ok((rdr, Columns { text, label }))
}

/// A row's text columns joined with a space, cut at [`MAX_TEXT_BYTES`].
fn joined(rec: &csv::StringRecord, columns: &[usize]) -> String {
    let mut text = String::new();
    for c in columns {
        let t = rec.get(*c).unwrap_or("").trim();
        if !text.is_empty() && !t.is_empty() {
            text.push(' ');
        }
        text.push_str(t);
    }
    if text.len() > MAX_TEXT_BYTES {
        let mut end = MAX_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// The texts of every row of `path` (for scoring: the label column may be absent).
pub fn read_texts(path: &Path, manifest: &Manifest) -> Result<Vec<String>, TextDataError> {
    let (mut rdr, columns) = open(path, manifest)?;
    rdr.records()
        .enumerate()
        .map(|(i, rec)| {
            rec.map(|r| joined(&r, &columns.text))
                .map_err(|e| TextDataError {
                    origin: path.display().to_string(),
                    message: format!("line {}: {e}", i + 2),
                })
        })
        .collect()
}

impl TextData {
    /// Reads `path` under `manifest` and splits it (see the module documentation);
    /// `holdout` in (0, 1] (1: every row is held out, for a central hold-out).
    pub fn load(
        path: &Path,
        manifest: &Manifest,
        holdout: f64,
        seed: u64,
    ) -> Result<Self, TextDataError> {
        let origin = path.display().to_string();
        let bad = |message: String| TextDataError {
            origin: origin.clone(),
            message,
        };
        if !(holdout > 0.0 && holdout <= 1.0) {
            return Err(bad(format!("holdout fraction {holdout} must be in (0, 1]")));
        }
        let (mut rdr, columns) = open(path, manifest)?;
        let (text_cols, label_col) = (
            columns.text,
            columns.label.ok_or_else(|| {
                bad(format!(
                    "column `{}` named in the manifest's [data] as the label is missing",
                    manifest.data.label
                ))
            })?,
        );
        let classes = manifest.task.classes();
        let mut all = TextSplit::default();
        let mut skipped_rows = 0;
        for (i, rec) in rdr.records().enumerate() {
            let line = i + 2;
            let rec = rec.map_err(|e| bad(format!("line {line}: {e}")))?;
            let cell = rec.get(label_col).unwrap_or("").trim();
            if cell.is_empty() {
                skipped_rows += 1;
                continue;
            }
            let Some(label) = manifest.task.class_of(cell) else {
                return Err(bad(format!(
                    "line {line}, column `{}`: label `{cell}` is not one of the manifest's classes ({}); labels are compared exactly, case included",
                    manifest.data.label,
                    classes.iter().map(|c| format!("{c:?}")).collect::<Vec<_>>().join(", ")
                )));
            };
            all.texts.push(joined(&rec, &text_cols));
            all.labels.push(label);
        }
        if all.len() < 2 {
            return Err(bad(format!("{} usable rows; need at least 2", all.len())));
        }
        let mut order: Vec<usize> = (0..all.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let n_hold = if holdout >= 1.0 {
            all.len()
        } else {
            ((all.len() as f64 * holdout).round() as usize).clamp(1, all.len() - 1)
        };
        let pick = |rows: &[usize]| TextSplit {
            texts: rows.iter().map(|&r| all.texts[r].clone()).collect(),
            labels: rows.iter().map(|&r| all.labels[r]).collect(),
        };
        Ok(TextData {
            holdout: pick(&order[..n_hold]),
            train: pick(&order[n_hold..]),
            skipped_rows,
        })
    }

    /// Why the training rows cannot train the task, if they cannot: all one class. Said at
    /// the schema check, as for tabular data.
    pub fn single_class(&self, manifest: &Manifest) -> Option<String> {
        let first = *self.train.labels.first()?;
        self.train.labels.iter().all(|l| *l == first).then(|| {
            format!(
                "its training split has a single class: all {} rows are {:?} in column `{}`; a classifier needs at least two",
                self.train.len(),
                manifest.task.classes()[first],
                manifest.data.label
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
architecture = "fedsilo.text-classifier"
[task]
kind = "binary"
classes = ["other", "great"]
[data]
text = ["title", "review"]
label = "score"
[[trainable]]
name = "head.weight"
shape = [4, 2]
"#,
        )
        .unwrap()
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    #[test]
    fn reads_joins_and_splits() {
        let f = file(
            "title,review,score\nGood,\"Tasty, really\",great\nMeh,bland,other\nx,y,\nA,b,great\n",
        );
        let d = TextData::load(f.path(), &manifest(), 0.34, 1).unwrap();
        assert_eq!(d.skipped_rows, 1);
        assert_eq!(d.train.len() + d.holdout.len(), 3);
        assert_eq!(d.holdout.len(), 1);
        let mut all: Vec<(String, usize)> = d
            .train
            .texts
            .iter()
            .chain(&d.holdout.texts)
            .cloned()
            .zip(d.train.labels.iter().chain(&d.holdout.labels).copied())
            .collect();
        all.sort();
        assert_eq!(all[1], ("Good Tasty, really".to_string(), 1));
        assert_eq!(all[2], ("Meh bland".to_string(), 0));
        // The same seed splits the same way.
        assert_eq!(d, TextData::load(f.path(), &manifest(), 0.34, 1).unwrap());
    }

    #[test]
    fn an_unknown_label_or_missing_column_is_named() {
        let f = file("title,review,score\na,b,great\nc,d,Great\n");
        let e = TextData::load(f.path(), &manifest(), 0.5, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("`Great`") && e.contains("\"great\""),
            "{e}"
        );
        let f = file("title,text,score\na,b,great\n");
        let e = TextData::load(f.path(), &manifest(), 0.5, 1)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("column `review`") && e.contains("title, text, score"),
            "{e}"
        );
    }

    #[test]
    fn one_class_is_unusable() {
        let f = file("title,review,score\na,b,great\nc,d,great\ne,f,great\n");
        let d = TextData::load(f.path(), &manifest(), 0.3, 1).unwrap();
        let why = d.single_class(&manifest()).unwrap();
        assert!(
            why.contains("\"great\"") && why.contains("`score`"),
            "{why}"
        );
    }
}
