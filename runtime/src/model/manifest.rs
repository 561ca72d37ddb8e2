//! # A model's manifest: what any architecture looks like to the federation
//!
//! The built-in MLP is described by its [`ModelSpec`](super::ModelSpec). Every other model — a
//! pretrained text encoder with LoRA adapters and a head, or whatever an external program
//! trains — is described by a manifest (TOML), written once by whoever prepares the model
//! (`fedsilo-model text ...`) and given to the coordinator and to every silo:
//!
//! ```toml
//! architecture = "fedsilo.text-classifier"   # which trainer understands it
//!
//! [task]
//! kind = "binary"                            # binary | multiclass | regression
//! classes = ["other", "great"]               # binary: [negative, positive]
//! # regression instead: no classes; the label is a number, and the
//! # trainer learns it standardised as (y − mean) / std:
//! # kind = "regression"
//! # mean = 4.2
//! # std = 1.3
//!
//! [data]                                     # what a silo's CSV holds
//! text = ["review"]                          # the text column(s), joined with a space
//! label = "score"
//!
//! [[trainable]]                              # what travels, in this order
//! name = "head.weight"
//! shape = [384, 1]
//!
//! [[asset]]                                  # the frozen base and the tokenizer, by digest
//! name = "model.safetensors"
//! sha256 = "53aa5117..."
//!
//! [settings]                                 # the trainer's own; opaque to the coordinator
//! lora_rank = 8
//! ```
//!
//! The coordinator, kernels, secure aggregation, DP, compression, registry and audit see only
//! the trainable tensors as one flat vector (their [`Layout`](super::Layout)) and the
//! manifest's digest. Trainers read the rest. Frozen tensors and assets never travel with a
//! round: each silo holds them and checks them against the digests here, so every silo trains
//! on the same bytes, pinned.
//!
//! Everything is bounded before anything is allocated: the file size, the number of tensors
//! and assets, each shape and the total number of values.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::architecture::Described;
use super::{Digest, MAX_PARAMETERS};

/// The largest manifest file read.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// The most trainable tensors a manifest may list.
pub const MAX_TENSORS: usize = 4096;
/// The most classes a classification task may declare.
pub const MAX_CLASSES: usize = 1000;

/// What the model predicts.
#[derive(Debug, Clone, PartialEq)]
pub enum Task {
    /// Two classes: `negative` (0) and `positive` (1).
    Binary {
        /// The label value of class 0.
        negative: String,
        /// The label value of class 1.
        positive: String,
    },
    /// One of several classes, in this order.
    Multiclass {
        /// The label values, class 0 first.
        classes: Vec<String>,
    },
    /// A number. Trainers learn `(y − mean) / std`, so that a head starting near 0 starts
    /// near the data's centre whatever its units; predictions are in the label's units.
    Regression {
        /// The label's rough centre (default 0).
        mean: f64,
        /// Its rough spread (> 0; default 1).
        std: f64,
    },
}

/// The largest label magnitude a regression task reads (beyond it, a cell is a mistake).
pub const MAX_TARGET: f64 = 1e12;

impl Task {
    /// The label values, class 0 first (none for regression).
    pub fn classes(&self) -> Vec<&str> {
        match self {
            Task::Binary { negative, positive } => vec![negative, positive],
            Task::Multiclass { classes } => classes.iter().map(String::as_str).collect(),
            Task::Regression { .. } => Vec::new(),
        }
    }

    /// The model's outputs per example: one per class, one for regression.
    pub fn outputs(&self) -> usize {
        match self {
            Task::Regression { .. } => 1,
            _ => self.classes().len(),
        }
    }

    /// Whether the label is a number.
    pub fn is_regression(&self) -> bool {
        matches!(self, Task::Regression { .. })
    }

    /// The value of a (trimmed) regression label cell; `None` when it is not a finite number
    /// of magnitude at most [`MAX_TARGET`], or the task is a classification.
    pub fn value_of(&self, cell: &str) -> Option<f64> {
        match self {
            Task::Regression { .. } => cell
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && v.abs() <= MAX_TARGET),
            _ => None,
        }
    }

    /// The class of a (trimmed) label cell; `None` for a value the task does not declare.
    /// Exact and case-sensitive, as the tabular schema's target.
    pub fn class_of(&self, cell: &str) -> Option<usize> {
        self.classes().iter().position(|c| *c == cell)
    }
}

/// What a silo's CSV holds for this model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataColumns {
    /// Text columns, joined with a space in this order.
    #[serde(default)]
    pub text: Vec<String>,
    /// The label column.
    pub label: String,
}

/// A file a trainer needs, pinned by its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    /// The file's name in the model directory (no directories: `model.safetensors`).
    pub name: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
}

/// One trainable tensor, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trainable {
    /// Its name (the trainer's).
    pub name: String,
    /// Its shape, row-major.
    pub shape: Vec<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    kind: String,
    #[serde(default)]
    classes: Vec<String>,
    #[serde(default)]
    mean: Option<f64>,
    #[serde(default)]
    std: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    architecture: String,
    task: RawTask,
    data: DataColumns,
    trainable: Vec<Trainable>,
    #[serde(default, rename = "asset")]
    assets: Vec<Asset>,
    #[serde(default)]
    settings: toml::Table,
}

/// A manifest, checked. See the module documentation.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// Which trainer understands the model, e.g. `fedsilo.text-classifier`.
    pub architecture: String,
    /// What it predicts.
    pub task: Task,
    /// What a silo's CSV holds.
    pub data: DataColumns,
    /// The tensors that train and travel, in order.
    pub trainable: Vec<Trainable>,
    /// Files the trainer needs, by digest.
    pub assets: Vec<Asset>,
    /// The trainer's own settings.
    pub settings: toml::Table,
    /// SHA-256 of the file's bytes: the model's identity in the federation.
    pub digest: Digest,
}

/// Why a manifest cannot be used. Each names what is wrong; the file is named by the caller.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error("{0} bytes: a manifest is at most {max} bytes", max = MAX_MANIFEST_BYTES)]
    TooLong(u64),
    /// Not TOML of the manifest's shape.
    #[error("{0}")]
    Syntax(String),
    /// `architecture` is empty or not a plain identifier.
    #[error("architecture = {0:?}: letters, digits, '.', '-' and '_' only, 1 to 64 of them")]
    Architecture(String),
    /// `task.kind` is neither binary, multiclass nor regression.
    #[error("task.kind = {0:?}: allowed are \"binary\", \"multiclass\" and \"regression\"")]
    TaskKind(String),
    /// A regression task's `mean` or `std` is not usable, or a classification has them.
    #[error("task.{key} = {value}: {allowed}")]
    Standardise {
        /// `mean` or `std`.
        key: &'static str,
        /// What was written.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// Wrong number of classes for the task.
    #[error("task.classes has {found} values: {wanted}")]
    ClassCount {
        /// How many were given.
        found: usize,
        /// What the task needs.
        wanted: &'static str,
    },
    /// A class empty, with surrounding spaces, or named twice.
    #[error("task.classes: {0:?} is empty, has spaces around it, or is named twice")]
    Class(String),
    /// An empty column name, the label among the text columns, or a column named twice.
    #[error("[data]: {0}")]
    Column(String),
    /// Nothing trains.
    #[error("no [[trainable]] tensors: at least one must train")]
    NothingTrains,
    /// Too many tensors.
    #[error("{0} trainable tensors: at most {max}", max = MAX_TENSORS)]
    TooManyTensors(usize),
    /// A tensor's name empty, reused, reserved or not printable.
    #[error("trainable tensor {0:?}: names are unique, printable, 1 to 256 characters and do not start with `scaling.`")]
    TensorName(String),
    /// A tensor's shape is empty or has a zero dimension.
    #[error("trainable tensor `{name}`: shape {shape:?} must have at least one dimension, none 0")]
    Shape {
        /// The tensor.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// More values than [`MAX_PARAMETERS`].
    #[error("the trainable tensors hold more than {max} values", max = MAX_PARAMETERS)]
    TooLarge,
    /// An asset's name is not a plain file name, or is reused.
    #[error("asset {0:?}: a plain file name (no directories), named once")]
    AssetName(String),
    /// An asset's digest is not 64 hex digits.
    #[error("asset `{name}`: sha256 = {sha256:?} is not 64 hex digits")]
    AssetDigest {
        /// The asset.
        name: String,
        /// What was written.
        sha256: String,
    },
}

fn plain_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 255 && s != "." && s != ".." && !s.contains(['/', '\\', '\0'])
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self, ManifestError> {
        let read = |source| ManifestError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLong(len));
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(&text)
    }

    /// Parses and checks a manifest's text.
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        if text.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLong(text.len() as u64));
        }
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError::Syntax(e.to_string()))?;
        let arch_ok = !raw.architecture.is_empty()
            && raw.architecture.len() <= 64
            && raw
                .architecture
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !arch_ok {
            return Err(ManifestError::Architecture(raw.architecture));
        }
        let task = task(raw.task)?;
        if raw.data.label.is_empty() {
            return Err(ManifestError::Column("data.label is empty".into()));
        }
        if let Some(i) = raw.data.text.iter().position(String::is_empty) {
            return Err(ManifestError::Column(format!("data.text[{i}] is empty")));
        }
        if raw.data.text.contains(&raw.data.label) {
            return Err(ManifestError::Column(format!(
                "the label column `{}` is also a text column: the model would read its own answer",
                raw.data.label
            )));
        }
        let mut cols = std::collections::HashSet::new();
        if let Some(c) = raw.data.text.iter().find(|c| !cols.insert(c.as_str())) {
            return Err(ManifestError::Column(format!(
                "data.text names `{c}` twice"
            )));
        }
        check_trainable(&raw.trainable)?;
        let mut seen = std::collections::HashSet::new();
        for a in &raw.assets {
            if !plain_name(&a.name) || !seen.insert(a.name.as_str()) {
                return Err(ManifestError::AssetName(a.name.clone()));
            }
            if a.sha256.len() != 64 || !a.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ManifestError::AssetDigest {
                    name: a.name.clone(),
                    sha256: a.sha256.clone(),
                });
            }
        }
        Ok(Manifest {
            architecture: raw.architecture,
            task,
            data: raw.data,
            trainable: raw.trainable,
            assets: raw.assets,
            settings: raw.settings,
            digest: Digest::of_bytes(text.as_bytes()),
        })
    }

    /// What the federation needs to know of it: id, digest and the trainable layout.
    pub fn described(&self) -> Described {
        Described {
            architecture: self.architecture.clone(),
            manifest: self.digest,
            tensors: self
                .trainable
                .iter()
                .map(|t| (t.name.clone(), t.shape.clone()))
                .collect(),
        }
    }

    /// The asset called `name`, if the manifest pins one.
    pub fn asset(&self, name: &str) -> Option<&Asset> {
        self.assets.iter().find(|a| a.name == name)
    }
}

fn task(raw: RawTask) -> Result<Task, ManifestError> {
    let mut seen = std::collections::HashSet::new();
    if let Some(c) = raw
        .classes
        .iter()
        .find(|c| c.trim().is_empty() || c.trim() != c.as_str() || !seen.insert(c.as_str()))
    {
        return Err(ManifestError::Class(c.clone()));
    }
    let n = raw.classes.len();
    if raw.kind != "regression" {
        for (key, v) in [("mean", raw.mean), ("std", raw.std)] {
            if let Some(v) = v {
                return Err(ManifestError::Standardise {
                    key,
                    value: v.to_string(),
                    allowed: "only a regression task has it",
                });
            }
        }
    }
    match raw.kind.as_str() {
        "regression" if n == 0 => {
            let mean = raw.mean.unwrap_or(0.0);
            let std = raw.std.unwrap_or(1.0);
            if !(mean.is_finite() && mean.abs() <= MAX_TARGET) {
                return Err(ManifestError::Standardise {
                    key: "mean",
                    value: mean.to_string(),
                    allowed: "a finite number of magnitude at most 1e12, near the label's centre",
                });
            }
            if !(std.is_finite() && std > 0.0 && std <= MAX_TARGET) {
                return Err(ManifestError::Standardise {
                    key: "std",
                    value: std.to_string(),
                    allowed: "a positive number up to 1e12, near the label's spread",
                });
            }
            Ok(Task::Regression { mean, std })
        }
        "regression" => Err(ManifestError::ClassCount {
            found: n,
            wanted: "a regression task has none: its label is a number",
        }),
        "binary" if n == 2 => {
            let mut c = raw.classes.into_iter();
            let (negative, positive) = (c.next().unwrap_or_default(), c.next().unwrap_or_default());
            Ok(Task::Binary { negative, positive })
        }
        "binary" => Err(ManifestError::ClassCount {
            found: n,
            wanted: "a binary task has two: [negative, positive]",
        }),
        "multiclass" if (3..=MAX_CLASSES).contains(&n) => Ok(Task::Multiclass {
            classes: raw.classes,
        }),
        "multiclass" => Err(ManifestError::ClassCount {
            found: n,
            wanted: "a multiclass task has 3 to 1000 (two: use kind = \"binary\")",
        }),
        other => Err(ManifestError::TaskKind(other.to_string())),
    }
}

fn check_trainable(tensors: &[Trainable]) -> Result<(), ManifestError> {
    if tensors.is_empty() {
        return Err(ManifestError::NothingTrains);
    }
    if tensors.len() > MAX_TENSORS {
        return Err(ManifestError::TooManyTensors(tensors.len()));
    }
    let mut seen = std::collections::HashSet::new();
    let mut total = 0usize;
    for t in tensors {
        let printable =
            !t.name.is_empty() && t.name.len() <= 256 && t.name.chars().all(|c| !c.is_control());
        // `scaling.*` is where a checkpoint keeps its feature scaling.
        let reserved = t.name.starts_with("scaling.");
        if !printable || reserved || !seen.insert(t.name.as_str()) {
            return Err(ManifestError::TensorName(t.name.clone()));
        }
        if t.shape.is_empty() || t.shape.len() > 8 || t.shape.contains(&0) {
            return Err(ManifestError::Shape {
                name: t.name.clone(),
                shape: t.shape.clone(),
            });
        }
        let n = t
            .shape
            .iter()
            .try_fold(1usize, |a, d| a.checked_mul(*d))
            .ok_or(ManifestError::TooLarge)?;
        total = total.checked_add(n).ok_or(ManifestError::TooLarge)?;
        if total > MAX_PARAMETERS {
            return Err(ManifestError::TooLarge);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
architecture = "fedsilo.text-classifier"
[task]
kind = "binary"
classes = ["other", "great"]
[data]
text = ["review"]
label = "score"
[[trainable]]
name = "head.weight"
shape = [384, 1]
[[trainable]]
name = "head.bias"
shape = [1]
[[asset]]
name = "model.safetensors"
sha256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
[settings]
lora_rank = 8
"#;

    #[test]
    fn a_good_manifest_describes_its_layout() {
        let m = Manifest::parse(GOOD).unwrap();
        assert_eq!(m.task.class_of("great"), Some(1));
        assert_eq!(m.task.class_of("Great"), None);
        let d = m.described();
        assert_eq!(d.layout().len, 385);
        assert_eq!(d.manifest, Digest::of_bytes(GOOD.as_bytes()));
        assert_eq!(m.settings["lora_rank"].as_integer(), Some(8));
    }

    #[test]
    fn a_regression_task_reads_numbers_and_its_standardisation() {
        let text = GOOD.replacen(
            "kind = \"binary\"\nclasses = [\"other\", \"great\"]",
            "kind = \"regression\"\nmean = 4.2\nstd = 1.5",
            1,
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(
            m.task,
            Task::Regression {
                mean: 4.2,
                std: 1.5
            }
        );
        assert_eq!((m.task.outputs(), m.task.classes().len()), (1, 0));
        assert_eq!(m.task.value_of("3.5"), Some(3.5));
        for bad in ["great", "NaN", "inf", "1e13", ""] {
            assert_eq!(m.task.value_of(bad), None, "{bad}");
        }
        let plain = GOOD.replacen(
            "kind = \"binary\"\nclasses = [\"other\", \"great\"]",
            "kind = \"regression\"",
            1,
        );
        let m = Manifest::parse(&plain).unwrap();
        assert_eq!(
            m.task,
            Task::Regression {
                mean: 0.0,
                std: 1.0
            }
        );
        for (std, said) in [
            ("0.0", "task.std"),
            ("nan", "task.std"),
            ("-1.0", "task.std"),
        ] {
            let e = Manifest::parse(&text.replacen("std = 1.5", &format!("std = {std}"), 1))
                .unwrap_err()
                .to_string();
            assert!(e.contains(said), "{std}: {e}");
        }
        assert_eq!(Manifest::parse(GOOD).unwrap().task.value_of("1"), None);
    }

    fn broken(from: &str, to: &str) -> ManifestError {
        let text = GOOD.replacen(from, to, 1);
        assert_ne!(text, GOOD, "{from} not in the fixture");
        Manifest::parse(&text).unwrap_err()
    }

    #[test]
    fn every_mistake_is_named() {
        let cases: Vec<(&str, &str, &str)> = vec![
            ("\"binary\"", "\"ranking\"", "task.kind"),
            ("[\"other\", \"great\"]", "[\"great\"]", "two"),
            ("[\"other\", \"great\"]", "[\"great\", \"great\"]", "twice"),
            ("kind = \"binary\"", "kind = \"multiclass\"", "3 to 1000"),
            ("fedsilo.text-classifier", "../evil", "architecture"),
            ("shape = [384, 1]", "shape = [384, 0]", "head.weight"),
            ("shape = [1]", "shape = []", "head.bias"),
            (
                "name = \"head.bias\"",
                "name = \"head.weight\"",
                "head.weight",
            ),
            (
                "name = \"model.safetensors\"",
                "name = \"../model\"",
                "plain file name",
            ),
            ("sha256 = \"53aa", "sha256 = \"zz", "64 hex"),
            ("label = \"score\"", "label = \"\"", "data.label is empty"),
            (
                "label = \"score\"",
                "label = \"review\"",
                "also a text column",
            ),
            (
                "text = [\"review\"]",
                "text = [\"review\", \"review\"]",
                "twice",
            ),
            ("[settings]", "[setting]", "unknown field"),
            ("kind = \"binary\"", "kind = \"regression\"", "has none"),
            (
                "kind = \"binary\"",
                "kind = \"binary\"\nstd = 2.0",
                "only a regression",
            ),
            (
                "shape = [384, 1]",
                "shape = [4294967296, 4294967296]",
                "more than",
            ),
        ];
        for (from, to, said) in cases {
            let e = broken(from, to).to_string();
            assert!(e.contains(said), "{from} → {to}: {e}");
        }
    }
}
