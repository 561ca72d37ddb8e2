//! The declared schema of a federation's tabular data (TOML).
//!
//! ```toml
//! [target]
//! column = "churn"
//! positive = "yes"
//! negative = ["no"]        # every other label value; anything else in the file is an error
//!
//! [[feature]]
//! column = "total_day_minutes"
//! kind = "numeric"
//!
//! [[feature]]
//! column = "international_plan"
//! kind = "categorical"
//! levels = ["no", "yes"]
//! ```
//!
//! Numeric features become one standardised column each; a categorical feature becomes one
//! one-hot column per declared level (an unseen level encodes as all zeros). Every silo and the
//! coordinator must use the same schema: its [`Schema::digest`] is compared when the federation
//! agrees on feature scaling.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::Digest;
use crate::{Error, Result};

/// The prediction target: a binary label. Both classes are declared: a label value is never
/// guessed (a `Yes` where the schema says `yes` is an error, not a 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Column name in the CSV header.
    pub column: String,
    /// The value that means "positive" (label 1).
    pub positive: String,
    /// The values that mean "negative" (label 0). Required.
    #[serde(default)]
    pub negative: Vec<String>,
}

/// What a label cell says, by [`Target::label`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Label {
    /// The positive value: 1.
    Positive,
    /// A negative value: 0.
    Negative,
    /// Empty: the row has no label.
    Missing,
    /// A value the schema does not declare.
    Unknown,
}

impl Target {
    /// Reads a (trimmed) label cell; exact, case-sensitive.
    pub fn label(&self, cell: &str) -> Label {
        if cell.is_empty() {
            Label::Missing
        } else if cell == self.positive {
            Label::Positive
        } else if self.negative.iter().any(|n| n == cell) {
            Label::Negative
        } else {
            Label::Unknown
        }
    }

    /// The declared values, for error messages: `positive "yes"; negative "no"`.
    pub fn allowed(&self) -> String {
        let neg: Vec<String> = self.negative.iter().map(|n| format!("{n:?}")).collect();
        format!("positive {:?}; negative {}", self.positive, neg.join(", "))
    }
}

/// How a feature is encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum FeatureKind {
    /// A number; empty cells are missing and encode as the federation mean (0 after scaling).
    Numeric,
    /// One of the declared levels, one-hot encoded.
    Categorical {
        /// The levels, in column order.
        levels: Vec<String>,
    },
}

/// One input feature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawFeature")]
pub struct Feature {
    /// Column name in the CSV header.
    pub column: String,
    /// Encoding.
    #[serde(flatten)]
    pub kind: FeatureKind,
}

/// A `[[feature]]` table as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFeature {
    column: String,
    kind: String,
    levels: Option<Vec<String>>,
}

/// A `[[feature]]` table that does not describe a feature.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeatureError {
    /// Levels on a numeric feature.
    #[error("feature `{0}`: `levels` is only for kind = \"categorical\"")]
    LevelsOnNumeric(String),
    /// A categorical feature without levels.
    #[error("feature `{0}`: kind = \"categorical\" needs `levels = [...]`")]
    NoLevels(String),
    /// Neither numeric nor categorical.
    #[error("feature `{column}`: unknown kind `{kind}` (allowed: numeric, categorical)")]
    UnknownKind {
        /// The column.
        column: String,
        /// The kind written.
        kind: String,
    },
}

impl TryFrom<RawFeature> for Feature {
    type Error = FeatureError;
    fn try_from(r: RawFeature) -> std::result::Result<Self, FeatureError> {
        let kind = match (r.kind.as_str(), r.levels) {
            ("numeric", None) => FeatureKind::Numeric,
            ("numeric", Some(_)) => return Err(FeatureError::LevelsOnNumeric(r.column)),
            ("categorical", Some(levels)) => FeatureKind::Categorical { levels },
            ("categorical", None) => return Err(FeatureError::NoLevels(r.column)),
            (other, _) => {
                return Err(FeatureError::UnknownKind {
                    kind: other.to_string(),
                    column: r.column,
                })
            }
        };
        Ok(Feature {
            column: r.column,
            kind,
        })
    }
}

/// A dataset schema. Invariant (after [`Schema::from_toml_str`]): at least one feature, column
/// names unique, categorical features have at least one level and no duplicate levels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schema {
    /// The label.
    pub target: Target,
    /// The inputs, in encoding order.
    #[serde(rename = "feature")]
    pub features: Vec<Feature>,
}

impl Schema {
    /// Reads a schema file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates a schema; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self> {
        let bad = |message: String| Error::Data {
            origin: origin.to_string(),
            message,
        };
        let s: Schema = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let t = &s.target;
        if t.positive.trim().is_empty() || t.positive.trim() != t.positive {
            return Err(bad(format!(
                "[target] positive = {:?}: must be a non-empty value without surrounding spaces",
                t.positive
            )));
        }
        if t.negative.is_empty() {
            return Err(bad(format!(
                "[target] needs `negative = [...]`, the label values that mean 0 (fedsilo never \
                 guesses labels): e.g. positive = {:?}, negative = [\"no\"]",
                t.positive
            )));
        }
        for n in &t.negative {
            if n.trim().is_empty() || n.trim() != n {
                return Err(bad(format!(
                    "[target] negative value {n:?}: must be non-empty, without surrounding spaces"
                )));
            }
            if *n == t.positive {
                return Err(bad(format!(
                    "[target] {n:?} is both the positive value and a negative one"
                )));
            }
        }
        if t.negative
            .iter()
            .collect::<std::collections::HashSet<_>>()
            .len()
            != t.negative.len()
        {
            return Err(bad("[target] negative repeats a value".into()));
        }
        if s.features.is_empty() {
            return Err(bad("no [[feature]] declared".into()));
        }
        let mut seen = std::collections::HashSet::new();
        seen.insert(s.target.column.as_str());
        for f in &s.features {
            if !seen.insert(f.column.as_str()) {
                return Err(bad(format!("column `{}` is declared twice", f.column)));
            }
            if let FeatureKind::Categorical { levels } = &f.kind {
                if levels.is_empty() {
                    return Err(bad(format!(
                        "categorical feature `{}` has no levels",
                        f.column
                    )));
                }
                let uniq: std::collections::HashSet<_> = levels.iter().collect();
                if uniq.len() != levels.len() {
                    return Err(bad(format!(
                        "categorical feature `{}` repeats a level",
                        f.column
                    )));
                }
            }
        }
        Ok(s)
    }

    /// Width of the encoded feature vector.
    pub fn encoded_width(&self) -> usize {
        self.features
            .iter()
            .map(|f| match &f.kind {
                FeatureKind::Numeric => 1,
                FeatureKind::Categorical { levels } => levels.len(),
            })
            .sum()
    }

    /// Number of numeric features (the length of the scaling vectors).
    pub fn numeric_count(&self) -> usize {
        self.features
            .iter()
            .filter(|f| f.kind == FeatureKind::Numeric)
            .count()
    }

    /// Digest of the canonical form; equal schemas have equal digests.
    pub fn digest(&self) -> Digest {
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        Digest::of_bytes(&canonical)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = r#"
[target]
column = "y"
positive = "yes"
negative = ["no"]
[[feature]]
column = "a"
kind = "numeric"
[[feature]]
column = "b"
kind = "categorical"
levels = ["x", "y", "z"]
"#;

    #[test]
    fn widths() {
        let s = Schema::from_toml_str(S, "s").unwrap();
        assert_eq!(s.encoded_width(), 4);
        assert_eq!(s.numeric_count(), 1);
    }

    #[test]
    fn unknown_kind_and_duplicates_are_errors() {
        let e = Schema::from_toml_str(&S.replace("\"numeric\"", "\"numerik\""), "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml"), "{e}");
        let e = Schema::from_toml_str(&S.replace("column = \"b\"", "column = \"a\""), "s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("declared twice"), "{e}");
    }

    #[test]
    fn both_classes_are_declared_and_read_exactly() {
        let e = Schema::from_toml_str(&S.replace("negative = [\"no\"]\n", ""), "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.toml") && e.contains("negative"), "{e}");
        let e = Schema::from_toml_str(&S.replace("[\"no\"]", "[\"yes\"]"), "s")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("both the positive value and a negative one"),
            "{e}"
        );
        let t = Schema::from_toml_str(S, "s").unwrap().target;
        assert_eq!(t.label("yes"), Label::Positive);
        assert_eq!(t.label("no"), Label::Negative);
        assert_eq!(t.label(""), Label::Missing);
        assert_eq!(t.label("Yes"), Label::Unknown);
        assert_eq!(t.label("1"), Label::Unknown);
        assert_eq!(t.allowed(), "positive \"yes\"; negative \"no\"");
    }
}
