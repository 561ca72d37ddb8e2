//! A silo's text CSV, read under a model's manifest: the rows read, labelled and split as
//! [`super::rows`] does it (a label the task does not declare — or, for a regression, one that
//! is not a number — is an error naming the file, line, column and what is allowed; an empty
//! label skips the row; the split is seeded, or
//! a held-out file of the silo's own), then each row's text columns joined with a space (an
//! empty text is kept: the tokenizer gives it the special tokens only).

use std::path::Path;

use fedsilo::model::manifest::Manifest;

use super::rows::Holdout;
pub use super::rows::TextDataError;
use super::rows::{Labels, Rows};

/// The longest text cell kept, in bytes (the tokenizer truncates far below this anyway).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Texts and their labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TextSplit {
    /// One text per example.
    pub texts: Vec<String>,
    /// Their classes (indices into the task's classes), or a regression's numbers.
    pub labels: Labels,
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

/// The indices of the manifest's text columns in `header`, each required.
fn text_columns(
    path: &Path,
    header: &csv::StringRecord,
    manifest: &Manifest,
) -> Result<Vec<usize>, TextDataError> {
    let bad = |message: String| TextDataError {
        origin: path.display().to_string(),
        message,
    };
    if manifest.data.text.is_empty() {
        return Err(bad(
            "the manifest's [data] names no text column: a text model needs `text = [\"column\"]`"
                .into(),
        ));
    }
    manifest
        .data
        .text
        .iter()
        .map(|name| {
            header.iter().position(|h| h == name).ok_or_else(|| {
                bad(format!(
                    "column `{name}` named in the manifest's [data] is missing; the file has: {}",
                    header.iter().collect::<Vec<_>>().join(", ")
                ))
            })
        })
        .collect()
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
    let (header, rows) = Rows::unlabelled(path, manifest)?;
    let columns = text_columns(path, &header, manifest)?;
    Ok(rows.iter().map(|r| joined(r, &columns)).collect())
}

impl TextData {
    /// Reads the silo's rows as `holdout` says (see the module documentation).
    pub fn read(
        data: &Path,
        holdout: &Holdout,
        manifest: &Manifest,
    ) -> Result<Self, TextDataError> {
        let rows = Rows::read(data, holdout, manifest)?;
        let columns = text_columns(data, &rows.header, manifest)?;
        let texts = |records: &[csv::StringRecord]| -> Vec<String> {
            records.iter().map(|r| joined(r, &columns)).collect()
        };
        Ok(TextData {
            train: TextSplit {
                texts: texts(&rows.train),
                labels: rows.train_labels.clone(),
            },
            holdout: TextSplit {
                texts: texts(&rows.holdout),
                labels: rows.holdout_labels.clone(),
            },
            skipped_rows: rows.skipped,
        })
    }

    /// Why the training rows cannot train the task, if they cannot: all one class (or one
    /// number, for a regression). Said at
    /// the schema check, as for tabular data.
    pub fn single_class(&self, manifest: &Manifest) -> Option<String> {
        super::rows::single_class(&self.train.labels, manifest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file with a seeded `fraction` held out.
    fn load(path: &Path, fraction: f64, seed: u64) -> Result<TextData, TextDataError> {
        TextData::read(path, &Holdout::Fraction { fraction, seed }, &manifest())
    }

    /// [`load`] with seed 1, under `manifest`.
    fn load_under(path: &Path, fraction: f64, m: &Manifest) -> Result<TextData, TextDataError> {
        TextData::read(path, &Holdout::Fraction { fraction, seed: 1 }, m)
    }

    #[test]
    fn a_held_out_file_with_other_columns_is_refused() {
        let train = file("title,review,score\na,b,great\nc,d,other\n");
        let hold = file("review,title,score\ne,f,other\ng,h,great\n");
        let e = TextData::read(
            train.path(),
            &Holdout::File(hold.path().to_path_buf()),
            &manifest(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("differ from the data file's (title, review, score)"),
            "{e}"
        );
    }

    const MANIFEST: &str = r#"
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
"#;

    fn manifest() -> Manifest {
        Manifest::parse(MANIFEST).unwrap()
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
        let d = load(f.path(), 0.34, 1).unwrap();
        assert_eq!(d.skipped_rows, 1);
        assert_eq!(d.train.len() + d.holdout.len(), 3);
        assert_eq!(d.holdout.len(), 1);
        let Some(Labels::Classes(labels)) = d.train.labels.chain(&d.holdout.labels) else {
            panic!("{d:?}")
        };
        let mut all: Vec<(String, usize)> = d
            .train
            .texts
            .iter()
            .chain(&d.holdout.texts)
            .cloned()
            .zip(labels)
            .collect();
        all.sort();
        assert_eq!(all[1], ("Good Tasty, really".to_string(), 1));
        assert_eq!(all[2], ("Meh bland".to_string(), 0));
        // The same seed splits the same way.
        assert_eq!(d, load(f.path(), 0.34, 1).unwrap());
    }

    #[test]
    fn an_unknown_label_or_missing_column_is_named() {
        let f = file("title,review,score\na,b,great\nc,d,Great\n");
        let e = load(f.path(), 0.5, 1).unwrap_err().to_string();
        assert!(
            e.contains("line 3") && e.contains("`Great`") && e.contains("\"great\""),
            "{e}"
        );
        let f = file("title,text,score\na,b,great\nc,d,other\n");
        let e = load(f.path(), 0.5, 1).unwrap_err().to_string();
        assert!(
            e.contains("column `review`") && e.contains("title, text, score"),
            "{e}"
        );
    }

    #[test]
    fn a_split_the_silo_made_is_kept() {
        let train = file("title,review,score\na,b,great\nc,d,other\n");
        let hold = file("title,review,score\ne,f,other\ng,h,great\ni,j,great\n");
        let d = TextData::read(
            train.path(),
            &Holdout::File(hold.path().to_path_buf()),
            &manifest(),
        )
        .unwrap();
        assert_eq!(d.train.labels, Labels::Classes(vec![1, 0]));
        assert_eq!(d.holdout.texts, vec!["e f", "g h", "i j"]);
    }

    #[test]
    fn a_column_named_twice_is_refused() {
        // Two `score` columns: scoring would strip one and hand the other to the model.
        let f = file("title,review,score,score\na,b,great,great\nc,d,other,other\n");
        let e = load(f.path(), 0.5, 1).unwrap_err().to_string();
        assert!(e.contains("`score` appears more than once"), "{e}");
        let e = read_texts(f.path(), &manifest()).unwrap_err().to_string();
        assert!(e.contains("more than once"), "{e}");
    }

    #[test]
    fn one_class_is_unusable() {
        let f = file("title,review,score\na,b,great\nc,d,great\ne,f,great\n");
        let d = load(f.path(), 0.3, 1).unwrap();
        let why = d.single_class(&manifest()).unwrap();
        assert!(
            why.contains("\"great\"") && why.contains("`score`"),
            "{why}"
        );
    }

    #[test]
    fn a_regression_reads_numbers_and_names_what_is_not_one() {
        let regression = || {
            Manifest::parse(&MANIFEST.replacen(
                "kind = \"binary\"\nclasses = [\"other\", \"great\"]",
                "kind = \"regression\"\nmean = 3.0",
                1,
            ))
            .unwrap()
        };
        let f = file("title,review,score\na,b,4.5\nc,d,\ne,f,-1e3\n");
        let d = load_under(f.path(), 0.5, &regression()).unwrap();
        let Some(Labels::Values(mut v)) = d.train.labels.chain(&d.holdout.labels) else {
            panic!("{d:?}")
        };
        v.sort_by(f64::total_cmp);
        assert_eq!((v, d.skipped_rows), (vec![-1000.0, 4.5], 1));
        let f = file("title,review,score\na,b,4.5\nc,d,great\n");
        let e = load_under(f.path(), 0.5, &regression())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 3") && e.contains("`great` is not a number"),
            "{e}"
        );
        let f = file("title,review,score\na,b,2\nc,d,2\ne,f,2\n");
        let d = load_under(f.path(), 0.3, &regression()).unwrap();
        let why = d.single_class(&regression()).unwrap();
        assert!(
            why.contains("labels that vary") && why.contains("`score`"),
            "{why}"
        );
    }
}
