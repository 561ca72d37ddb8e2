//! The policy model and its TOML loader.
//!
//! Every table denies unknown keys; every value is validated at load, alone and against the
//! others, and an error names the file, the line, the dotted key, the value and what is
//! allowed. A loaded [`Policy`] carries the digest of its source text, recorded with every
//! model version it governs.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::duration;
use crate::locate::Locator;
use crate::privacy::PrivacyRules;
use crate::secure_aggregation::SecureAggregationRules;
use crate::validation::ValidationRules;
use crate::PolicyError;

/// A federation's policy. Invariant: a `Policy` obtained from [`Policy::from_toml_str`] or
/// [`Policy::load`] has passed validation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// The regions of the consortium. Every region named elsewhere must be one of these; a
    /// silo whose certificate names another region is not eligible. Empty: any region, and no
    /// residency rules.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Who takes part in a round and how much each may weigh.
    #[serde(default)]
    pub participation: ParticipationRules,
    /// How long a round may take.
    #[serde(default)]
    pub rounds: RoundTiming,
    /// What an arriving update must look like.
    #[serde(default)]
    pub admission: AdmissionRules,
    /// Where each region's updates may be processed.
    #[serde(default)]
    pub residency: Option<Residency>,
    /// Silo-level differential privacy and its budget.
    #[serde(default)]
    pub privacy: Option<PrivacyRules>,
    /// The gate a candidate must pass to become current.
    #[serde(default)]
    pub validation: Option<ValidationRules>,
    /// Secure aggregation: the aggregator sees only the sum of the updates.
    #[serde(default)]
    pub secure_aggregation: Option<SecureAggregationRules>,
    /// The business metrics silos compute for each candidate, and the gate's rule on them.
    #[serde(default)]
    pub business: Option<crate::business::BusinessRules>,
    /// Whether a new version is deployed to the silos at once.
    #[serde(default)]
    pub deployment: Option<crate::deployment::DeploymentRules>,
    /// SHA-256 of the source text (hex), set by the loader.
    #[serde(skip)]
    pub digest: String,
    /// The source text, set by the loader (sent to regional aggregators, which parse it
    /// themselves).
    #[serde(skip)]
    pub source: String,
}

/// Participation rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipationRules {
    /// A round starts only with at least this many eligible silos (≥ 1).
    pub min_silos: usize,
    /// At most this many silos per round (≥ min_silos; default: no limit).
    #[serde(default)]
    pub max_silos: Option<usize>,
    /// A round commits only if at least this many updates were admitted (1 ≤ quorum ≤ min_silos).
    pub quorum: usize,
    /// Fraction of the eligible silos sampled each round, in (0, 1]; at least `min_silos`.
    #[serde(default = "one")]
    pub sample_fraction: f64,
    /// An update trained on fewer examples is refused (no tiny-cohort updates).
    #[serde(default)]
    pub min_examples: u64,
    /// No silo may carry more than this share of an aggregate's weight, in (0, 1]; weights
    /// above are capped and the rest renormalised. Default: half, or 1 / quorum if that is
    /// more ([`Policy::max_weight_share`]), so no single silo outweighs the rest of a round.
    #[serde(default)]
    pub max_weight_share: Option<f64>,
    /// Certificate roles that may train (default: `silo`).
    #[serde(default = "default_roles")]
    pub roles: Vec<String>,
    /// Regions whose silos may take part (default: all of `regions`).
    #[serde(default)]
    pub allowed_regions: Option<Vec<String>>,
    /// The oldest wire-protocol version a silo may speak.
    #[serde(default = "one_u32")]
    pub min_protocol_version: u32,
    /// The oldest silo software version (`MAJOR.MINOR.PATCH`) allowed.
    #[serde(default)]
    pub min_software_version: Option<String>,
    /// A silo whose last heartbeat answer is older than this is not healthy.
    #[serde(default = "default_heartbeat_age")]
    pub max_heartbeat_age_secs: f64,
    /// After a failed round (update refused, late or lost), a silo sits out this many rounds.
    #[serde(default)]
    pub cooldown_rounds: u64,
    /// Revoked nodes: never selected, whatever their certificate says.
    #[serde(default)]
    pub deny: Vec<String>,
}

fn one() -> f64 {
    1.0
}
fn one_u32() -> u32 {
    1
}
fn default_roles() -> Vec<String> {
    vec!["silo".into()]
}
fn default_heartbeat_age() -> f64 {
    15.0
}

impl Default for ParticipationRules {
    fn default() -> Self {
        Self {
            min_silos: 2,
            max_silos: None,
            quorum: 2,
            sample_fraction: 1.0,
            min_examples: 0,
            max_weight_share: None,
            roles: default_roles(),
            allowed_regions: None,
            min_protocol_version: 1,
            min_software_version: None,
            max_heartbeat_age_secs: default_heartbeat_age(),
            cooldown_rounds: 0,
            deny: Vec::new(),
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

impl RoundTiming {
    /// The deadline as a `Duration` (validated at load; never panics).
    pub fn deadline(&self) -> std::time::Duration {
        duration::to_duration(self.deadline_secs)
    }
    /// The grace period as a `Duration` (validated at load; never panics).
    pub fn grace(&self) -> std::time::Duration {
        duration::to_duration(self.grace_secs)
    }
}

impl Default for RoundTiming {
    fn default() -> Self {
        Self {
            deadline_secs: 120.0,
            grace_secs: 5.0,
        }
    }
}

/// How anomalous an update looks.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Anomaly {
    /// Robust z-score of the update's L2 norm within the round's cohort — (norm − median) /
    /// (1.4826 · MAD) over every update collected — refused above `threshold`.
    NormZscore {
        /// Largest z-score admitted (> 0).
        threshold: f64,
    },
    /// Cosine similarity to the coordinate-wise median of the round's cohort; refused below
    /// `threshold`.
    Cosine {
        /// Smallest similarity admitted, in [-1, 1].
        threshold: f64,
    },
}

/// Quarantine of repeat offenders.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quarantine {
    /// Rejections that trigger quarantine (≥ 1)...
    pub after: u32,
    /// ...within this many rounds (≥ 1)...
    pub window: u64,
    /// ...keep the silo out for this many rounds (≥ 1).
    pub rounds: u64,
}

/// Admission rules.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmissionRules {
    /// Largest L2 norm admitted (> 0; default: no bound).
    #[serde(default)]
    pub max_update_norm: Option<f64>,
    /// Anomaly score and threshold (default: none).
    #[serde(default)]
    pub anomaly: Option<Anomaly>,
    /// An update whose norm is more than this many times the cohort's median norm is refused
    /// (≥ 1; `0` turns the rule off, which is logged). Default: [`DEFAULT_MAX_NORM_RATIO`]
    /// wherever the coordinator sees individual updates (not under `[secure_aggregation]` or
    /// `[privacy]`, where clipping bounds every update).
    #[serde(default)]
    pub max_norm_ratio: Option<f64>,
    /// Quarantine (default: none).
    #[serde(default)]
    pub quarantine: Option<Quarantine>,
}

/// The default of `admission.max_norm_ratio`: a scaled update from one silo of four is refused,
/// while honest non-IID silos (norms differing by their data and steps) stay well within it.
pub const DEFAULT_MAX_NORM_RATIO: f64 = 4.0;

/// The default of `participation.max_weight_share` (with a quorum of at least 2): no silo
/// carries more than half of an aggregate, however many examples it claims.
pub const DEFAULT_MAX_WEIGHT_SHARE: f64 = 0.5;

/// Residency: where each region's updates may be processed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Residency {
    /// For each region, the regions whose aggregators may process its silos' updates.
    pub allowed: BTreeMap<String, Vec<String>>,
    /// A regional aggregate crosses to the global aggregator only if it combines at least this
    /// many silos (≥ 1).
    #[serde(default = "default_min_regional")]
    pub min_regional_silos: usize,
}

fn default_min_regional() -> usize {
    2
}

impl Policy {
    /// The largest share of an aggregate's weight one silo may carry: the configured
    /// `participation.max_weight_share`, else [`DEFAULT_MAX_WEIGHT_SHARE`] or 1 / quorum,
    /// whichever is more (with fewer updates than that the shares could not add up to 1).
    pub fn max_weight_share(&self) -> f64 {
        let p = &self.participation;
        p.max_weight_share
            .unwrap_or_else(|| DEFAULT_MAX_WEIGHT_SHARE.max(1.0 / p.quorum.max(1) as f64))
    }

    /// The cohort norm-ratio bound in force, if any ([`AdmissionRules::max_norm_ratio`]).
    pub fn max_norm_ratio(&self) -> Option<f64> {
        match self.admission.max_norm_ratio {
            Some(0.0) => None,
            Some(r) => Some(r),
            None if self.secure_aggregation.is_some() || self.privacy.is_some() => None,
            None => Some(DEFAULT_MAX_NORM_RATIO),
        }
    }

    /// What an operator should know about this policy's protections: a default turned off.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.admission.max_norm_ratio == Some(0.0) {
            w.push("admission.max_norm_ratio = 0: updates are not bounded relative to the cohort; one silo can scale its update to steer the model".to_string());
        }
        w
    }

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
        let mut policy: Policy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
            origin: origin.to_string(),
            message: e.to_string(),
        })?;
        policy.validate(&Locator::new(text, origin))?;
        policy.digest = hex::encode(Sha256::digest(text.as_bytes()));
        policy.source = text.to_string();
        Ok(policy)
    }

    /// The weight of an update trained on `examples` examples when it is combined: its example
    /// count, or 1 under silo-level DP, where every silo counts once so that one silo moves the
    /// sum by at most `privacy.clip_norm`.
    pub fn update_weight(&self, examples: f64) -> f64 {
        if self.privacy.is_some() {
            1.0
        } else {
            examples
        }
    }
}

/// Parses `MAJOR.MINOR.PATCH` (a pre-release or build suffix is ignored).
pub fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let core = v.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u64>());
    let out = (it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?);
    it.next().is_none().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"regions = ["eu", "us"]

[participation]
min_silos = 4
quorum = 3
max_weight_share = 0.5

[rounds]
deadline_secs = 30
grace_secs = 1.5

[residency.allowed]
eu = ["eu"]
us = ["us", "eu"]
"#;

    #[test]
    fn loads_a_good_policy_and_digests_its_text() {
        let p = Policy::from_toml_str(GOOD, "t.toml").unwrap();
        assert_eq!(p.participation.quorum, 3);
        assert_eq!(p.digest.len(), 64);
        let q = Policy::from_toml_str(&GOOD.replace("30", "31"), "t.toml").unwrap();
        assert_ne!(p.digest, q.digest);
    }

    #[test]
    fn empty_document_gives_defaults() {
        let p = Policy::from_toml_str("", "t").unwrap();
        assert_eq!(p.participation, ParticipationRules::default());
    }

    /// Each mistake, with the fragments its message must contain.
    #[test]
    fn mistakes_are_named_with_file_line_key_value_and_what_is_allowed() {
        let cases: Vec<(String, Vec<&str>)> = vec![
            (
                GOOD.replace("min_silos = 4", "min_silo = 4"),
                vec!["p.toml", "line 4", "min_silo"],
            ),
            (
                GOOD.replace("min_silos = 4", "min_silos = \"four\""),
                vec!["line 4", "min_silos"],
            ),
            (
                GOOD.replace("[participation]", "[participaton]"),
                vec!["participaton"],
            ),
            (
                GOOD.replace("quorum = 3", "quorum = 5"),
                vec!["p.toml:5", "participation.quorum", "= 5", "min_silos (4)"],
            ),
            (
                GOOD.replace("min_silos = 4", "min_silos = 0"),
                vec!["p.toml:4", "participation.min_silos", "at least 1"],
            ),
            (
                GOOD.replace("quorum = 3", "quorum = 3\nmax_silos = 2"),
                vec!["participation.max_silos", "= 2"],
            ),
            (
                GOOD.replace("quorum = 3", "quorum = 3\nsample_fraction = 1.5"),
                vec!["participation.sample_fraction", "1.5", "(0, 1]"],
            ),
            (
                GOOD.replace("max_weight_share = 0.5", "max_weight_share = 0.2"),
                vec![
                    "p.toml:6",
                    "max_weight_share",
                    "0.2",
                    "1 / participation.quorum",
                ],
            ),
            (
                GOOD.replace("eu = [\"eu\"]", "eu = []"),
                vec!["residency.allowed.eu", "allowed nowhere"],
            ),
            (
                GOOD.replace("eu = [\"eu\"]\n", ""),
                vec!["residency.allowed", "no entry for \"eu\""],
            ),
            (
                GOOD.replace("us = [\"us\", \"eu\"]", "us = [\"us\", \"asia\"]"),
                vec!["residency.allowed.us", "\"asia\"", "declared regions"],
            ),
            (
                GOOD.replace(
                    "quorum = 3",
                    "quorum = 3\nallowed_regions = [\"eu\", \"mars\"]",
                ),
                vec!["participation.allowed_regions", "\"mars\""],
            ),
            (
                GOOD.replace("quorum = 3", "quorum = 3\nroles = [\"trainer\"]"),
                vec![
                    "participation.roles",
                    "\"trainer\"",
                    "silo, aggregator or coordinator",
                ],
            ),
            (
                GOOD.replace("quorum = 3", "quorum = 3\nmin_software_version = \"1.2\""),
                vec!["min_software_version", "MAJOR.MINOR.PATCH"],
            ),
            (
                GOOD.replace("grace_secs = 1.5", "grace_secs = 30"),
                vec![
                    "p.toml:10",
                    "rounds.grace_secs",
                    "below rounds.deadline_secs",
                ],
            ),
            (
                format!("{GOOD}[admission]\nanomaly = {{ kind = \"zscore\", threshold = 3 }}\n"),
                vec!["zscore", "norm-zscore"],
            ),
            (
                format!("{GOOD}[admission]\nanomaly = {{ kind = \"cosine\", threshold = 2.0 }}\n"),
                vec!["admission.anomaly.threshold", "[-1, 1]"],
            ),
            (
                format!(
                    "{GOOD}[admission]\nquarantine = {{ after = 4, window = 3, rounds = 2 }}\n"
                ),
                vec!["admission.quarantine.after", "window (3)"],
            ),
            (
                GOOD.replace(
                    "regions = [\"eu\", \"us\"]",
                    "regions = [\"eu\", \"us\", \"eu\"]",
                ),
                vec!["regions", "each region once"],
            ),
            (
                GOOD.replace("regions = [\"eu\", \"us\"]", ""),
                vec!["residency", "regions"],
            ),
        ];
        assert!(cases.len() >= 10);
        for (text, want) in cases {
            let err = Policy::from_toml_str(&text, "p.toml")
                .unwrap_err()
                .to_string();
            for w in &want {
                assert!(err.contains(w), "message {err:?} lacks {w:?}");
            }
        }
    }
}
