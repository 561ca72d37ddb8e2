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
//!
//! The same file describes a CSV for a text model: `kind = "text"` marks a free-text column, and
//! a target may list its classes instead (`classes = ["billing", "outage", "other"]`, class 0
//! first; two classes are a binary target, the second positive). `fedsilo-model text --schema`
//! writes a text model's manifest from it. The built-in MLP ignores text columns and predicts a
//! binary target ([`Schema::for_mlp`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::Digest;
use crate::{Error, Result};

/// The prediction target: a binary label (`positive` and `negative`), or classes. Every class
/// is declared: a label value is never guessed (a `Yes` where the schema says `yes` is an
/// error, not a 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// Column name in the CSV header.
    pub column: String,
    /// The value that means "positive" (label 1); empty with `classes`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub positive: String,
    /// The values that mean "negative" (label 0); empty with `classes`.
    #[serde(default)]
    pub negative: Vec<String>,
    /// The label values, class 0 first (instead of `positive` and `negative`; two classes are
    /// binary, the second positive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

/// The most classes a target may declare.
pub const MAX_CLASSES: usize = 1000;

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
        if let [negative, positive] = self.classes.as_slice() {
            return match cell {
                "" => Label::Missing,
                c if c == positive => Label::Positive,
                c if c == negative => Label::Negative,
                _ => Label::Unknown,
            };
        }
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

    /// The class values, class 0 first: `classes`, or a binary target's one negative value and
    /// its positive one. `None` for a binary target with several negative values (they cannot
    /// be one class name).
    pub fn classes(&self) -> Option<Vec<&str>> {
        match (self.classes.is_empty(), self.negative.as_slice()) {
            (false, _) => Some(self.classes.iter().map(String::as_str).collect()),
            (true, [negative]) => Some(vec![negative, &self.positive]),
            (true, _) => None,
        }
    }

    /// The declared values, for error messages: `positive "yes"; negative "no"`.
    pub fn allowed(&self) -> String {
        if !self.classes.is_empty() {
            let c: Vec<String> = self.classes.iter().map(|c| format!("{c:?}")).collect();
            return format!("classes {}", c.join(", "));
        }
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
    /// Free text, for a text model (joined with the other text columns by a space); the
    /// built-in MLP ignores it.
    Text,
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
    /// Levels on a numeric or text feature.
    #[error("feature `{0}`: `levels` is only for kind = \"categorical\"")]
    LevelsOnNumeric(String),
    /// A categorical feature without levels.
    #[error("feature `{0}`: kind = \"categorical\" needs `levels = [...]`")]
    NoLevels(String),
    /// Neither numeric nor categorical.
    #[error("feature `{column}`: unknown kind `{kind}` (allowed: numeric, categorical, text)")]
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
            ("numeric" | "text", Some(_)) => return Err(FeatureError::LevelsOnNumeric(r.column)),
            ("text", None) => FeatureKind::Text,
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

/// Why the built-in MLP cannot train on a schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotForMlp {
    /// More than two classes.
    #[error("target `{column}` has {classes} classes; the built-in MLP predicts a binary target (a text model takes several: fedsilo-model text --schema)")]
    Multiclass {
        /// The target column.
        column: String,
        /// How many classes.
        classes: usize,
    },
    /// No numeric or categorical feature.
    #[error("every feature is text; the built-in MLP reads numeric and categorical features (prepare a text model: fedsilo-model text --schema)")]
    OnlyText,
}

/// A `classes = [...]` target: no `positive` or `negative` beside it; 2 to [`MAX_CLASSES`]
/// distinct, non-empty values without surrounding spaces.
fn check_classes(t: &Target) -> std::result::Result<(), String> {
    if !t.positive.is_empty() || !t.negative.is_empty() {
        return Err("[target] has `classes` and `positive`/`negative`: write one or the other (classes for several, positive and negative for a binary target)".into());
    }
    if !(2..=MAX_CLASSES).contains(&t.classes.len()) {
        return Err(format!(
            "[target] classes has {} values: at least 2, at most {MAX_CLASSES}",
            t.classes.len()
        ));
    }
    for c in &t.classes {
        if c.trim().is_empty() || c.trim() != c {
            return Err(format!(
                "[target] class {c:?}: must be non-empty, without surrounding spaces"
            ));
        }
    }
    let uniq: std::collections::HashSet<_> = t.classes.iter().collect();
    if uniq.len() != t.classes.len() {
        return Err("[target] classes repeats a value".into());
    }
    Ok(())
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
        if !t.classes.is_empty() {
            check_classes(t).map_err(bad)?;
        } else if t.positive.is_empty() {
            return Err(bad("[target] needs `positive` and `negative` (a binary target) or `classes` (class 0 first)".into()));
        } else if t.positive.trim().is_empty() || t.positive.trim() != t.positive {
            return Err(bad(format!(
                "[target] positive = {:?}: must be a non-empty value without surrounding spaces",
                t.positive
            )));
        }
        if t.classes.is_empty() && t.negative.is_empty() {
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

    /// Width of the built-in MLP's encoded feature vector (text columns take none).
    pub fn encoded_width(&self) -> usize {
        self.features
            .iter()
            .map(|f| match &f.kind {
                FeatureKind::Numeric => 1,
                FeatureKind::Categorical { levels } => levels.len(),
                FeatureKind::Text => 0,
            })
            .sum()
    }

    /// Number of categorical features.
    pub fn categorical_count(&self) -> usize {
        self.features
            .iter()
            .filter(|f| matches!(f.kind, FeatureKind::Categorical { .. }))
            .count()
    }

    /// The text columns, in declaration order.
    pub fn text_columns(&self) -> Vec<&str> {
        self.features
            .iter()
            .filter(|f| f.kind == FeatureKind::Text)
            .map(|f| f.column.as_str())
            .collect()
    }

    /// Whether the built-in MLP can train on this schema: a binary target and at least one
    /// numeric or categorical feature (text columns are ignored).
    pub fn for_mlp(&self) -> std::result::Result<(), NotForMlp> {
        if self.target.classes.len() > 2 {
            return Err(NotForMlp::Multiclass {
                column: self.target.column.clone(),
                classes: self.target.classes.len(),
            });
        }
        if self.encoded_width() == 0 {
            return Err(NotForMlp::OnlyText);
        }
        Ok(())
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

    /// One description for tabular and text CSVs: text columns and a class list, checked;
    /// the MLP ignores text and refuses several classes; old schemas keep their digest.
    #[test]
    fn text_columns_and_class_lists_describe_a_text_models_data() {
        let text = S.to_string() + "[[feature]]\ncolumn = \"note\"\nkind = \"text\"\n";
        let s = Schema::from_toml_str(&text, "s").unwrap();
        assert_eq!(s.text_columns(), vec!["note"]);
        assert_eq!(
            (s.encoded_width(), s.numeric_count(), s.categorical_count()),
            (4, 1, 1)
        );
        assert_eq!(s.for_mlp(), Ok(()));
        assert_eq!(s.target.classes(), Some(vec!["no", "yes"]));
        // A schema without the new keys has the digest it always had: none is written.
        let plain = Schema::from_toml_str(S, "s").unwrap();
        let json = serde_json::to_string(&plain).unwrap();
        assert!(
            !json.contains("classes") && !json.contains("text"),
            "{json}"
        );
        // Classes instead of positive and negative.
        let target = "[target]\ncolumn = \"y\"\npositive = \"yes\"\nnegative = [\"no\"]\n";
        let listed = |classes: &str| {
            text.replace(
                target,
                &format!("[target]\ncolumn = \"y\"\nclasses = {classes}\n"),
            )
        };
        let three = Schema::from_toml_str(&listed(r#"["a", "b", "c"]"#), "s").unwrap();
        assert_eq!(three.target.classes(), Some(vec!["a", "b", "c"]));
        assert_eq!(three.target.allowed(), "classes \"a\", \"b\", \"c\"");
        let e = three.for_mlp().unwrap_err().to_string();
        assert!(e.contains("3 classes") && e.contains("binary"), "{e}");
        // Two classes are binary, the second positive, for the MLP too.
        let two = Schema::from_toml_str(&listed(r#"["other", "great"]"#), "s").unwrap();
        assert_eq!(two.for_mlp(), Ok(()));
        assert_eq!(two.target.label("great"), Label::Positive);
        assert_eq!(two.target.label("other"), Label::Negative);
        assert_eq!(two.target.label(""), Label::Missing);
        assert_eq!(two.target.label("Great"), Label::Unknown);
        for (bad, said) in [
            (r#"["a"]"#, "at least 2"),
            (r#"["a", "a"]"#, "repeats"),
            (r#"["a", " b"]"#, "surrounding spaces"),
        ] {
            let e = Schema::from_toml_str(&listed(bad), "s")
                .unwrap_err()
                .to_string();
            assert!(e.contains(said), "{bad}: {e}");
        }
        let both = text.replace(
            "negative = [\"no\"]\n",
            "negative = [\"no\"]\nclasses = [\"no\", \"yes\"]\n",
        );
        let e = Schema::from_toml_str(&both, "s").unwrap_err().to_string();
        assert!(e.contains("one or the other"), "{e}");
        let neither = text.replace("positive = \"yes\"\nnegative = [\"no\"]\n", "");
        let e = Schema::from_toml_str(&neither, "s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("or `classes`"), "{e}");
        // Levels belong to categorical features only; only text leaves the MLP nothing.
        let e = Schema::from_toml_str(
            &text.replace("kind = \"text\"", "kind = \"text\"\nlevels = [\"x\"]"),
            "s",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("levels"), "{e}");
        let only_text = format!("{target}[[feature]]\ncolumn = \"note\"\nkind = \"text\"\n");
        let e = Schema::from_toml_str(&only_text, "s")
            .unwrap()
            .for_mlp()
            .unwrap_err();
        assert_eq!(e, NotForMlp::OnlyText);
    }
}
