//! The policy model and its TOML loader.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::PolicyError;

/// A federation's policy. Invariant: a `Policy` obtained from [`Policy::from_toml_str`] or
/// [`Policy::load`] has passed [`Policy::validate`].
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Who takes part in a round and how many must report.
    #[serde(default)]
    pub participation: ParticipationRules,
    /// How long a round may take.
    #[serde(default)]
    pub rounds: RoundTiming,
}

/// Participation rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipationRules {
    /// A round starts only with at least this many eligible silos (≥ 1).
    pub min_silos: usize,
    /// A round commits only if at least this many updates arrived in time
    /// (1 ≤ quorum ≤ min_silos).
    pub quorum: usize,
}

impl Default for ParticipationRules {
    fn default() -> Self {
        Self {
            min_silos: 2,
            quorum: 2,
        }
    }
}

/// Round timing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundTiming {
    /// Seconds from dispatch after which no update is accepted (> 0).
    pub deadline_secs: f64,
    /// Once quorum is reached, how many more seconds to wait for the rest (≥ 0, < deadline).
    pub grace_secs: f64,
}

impl Default for RoundTiming {
    fn default() -> Self {
        Self {
            deadline_secs: 120.0,
            grace_secs: 5.0,
        }
    }
}

impl Policy {
    /// Reads and validates a policy file.
    pub fn load(path: &Path) -> Result<Self, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates a policy; `origin` names the source in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Self, PolicyError> {
        let policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        policy.validate(origin)?;
        Ok(policy)
    }

    /// Checks every value against what is allowed and against each other.
    pub fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        let invalid = |key: &str, value: String, allowed: &str| PolicyError::Invalid {
            origin: origin.to_string(),
            key: key.to_string(),
            value,
            allowed: allowed.to_string(),
        };
        let p = &self.participation;
        if p.min_silos == 0 {
            return Err(invalid(
                "participation.min_silos",
                "0".into(),
                "must be at least 1",
            ));
        }
        if p.quorum == 0 || p.quorum > p.min_silos {
            return Err(invalid(
                "participation.quorum",
                p.quorum.to_string(),
                &format!(
                    "must be between 1 and participation.min_silos ({})",
                    p.min_silos
                ),
            ));
        }
        let r = &self.rounds;
        if !(r.deadline_secs.is_finite() && r.deadline_secs > 0.0) {
            return Err(invalid(
                "rounds.deadline_secs",
                r.deadline_secs.to_string(),
                "must be a positive number of seconds",
            ));
        }
        if !(r.grace_secs.is_finite() && r.grace_secs >= 0.0 && r.grace_secs < r.deadline_secs) {
            return Err(invalid(
                "rounds.grace_secs",
                r.grace_secs.to_string(),
                &format!(
                    "must be ≥ 0 and below rounds.deadline_secs ({})",
                    r.deadline_secs
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_a_full_policy() {
        let p = Policy::from_toml_str(
            "[participation]\nmin_silos = 4\nquorum = 3\n[rounds]\ndeadline_secs = 30\ngrace_secs = 1.5\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(p.participation.quorum, 3);
        assert_eq!(p.rounds.grace_secs, 1.5);
    }

    #[test]
    fn empty_document_gives_defaults() {
        assert_eq!(Policy::from_toml_str("", "t").unwrap(), Policy::default());
    }

    #[test]
    fn typo_names_line_and_key() {
        let err = Policy::from_toml_str("[participation]\nmin_silo = 4\nquorum = 3\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("p.toml"), "{err}");
        assert!(err.contains("min_silo"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn wrong_type_is_an_error() {
        let err = Policy::from_toml_str(
            "[participation]\nmin_silos = \"four\"\nquorum = 3\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("min_silos"), "{err}");
    }

    #[test]
    fn quorum_above_min_silos_is_a_contradiction() {
        let err = Policy::from_toml_str("[participation]\nmin_silos = 2\nquorum = 3\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("participation.quorum"), "{err}");
        assert!(err.contains("= 3"), "{err}");
    }

    #[test]
    fn grace_must_be_below_deadline() {
        let err = Policy::from_toml_str("[rounds]\ndeadline_secs = 5\ngrace_secs = 5\n", "p.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("rounds.grace_secs"), "{err}");
    }
}
