//! The rules a policy file's values must keep, table by table — ranges, references between
//! tables (regions named in `[residency]` must be declared), and what one table rules out in
//! another (`[secure_aggregation]` and `[privacy]` forbid admission rules on a single update).
//! [`Policy::load`](crate::Policy::load) runs them after parsing; each refusal names the file,
//! line, key, value and what is allowed ([`Locator`]).

use std::collections::BTreeSet;

use crate::duration::{self, is_duration, MAX_ROUND_COUNT};
use crate::locate::Locator;
use crate::policy::{parse_version, Anomaly, Policy};
use crate::privacy::NoiseMode;
use crate::PolicyError;

impl Policy {
    /// The regions this policy knows (`regions`), as a set.
    fn known_regions(&self) -> BTreeSet<&str> {
        self.regions.iter().map(String::as_str).collect()
    }

    /// Every rule on the file's values, table by table, in the order the tables are documented;
    /// the first broken one is the error.
    pub(crate) fn validate(&self, at: &Locator) -> Result<(), PolicyError> {
        self.validate_regions(at)?;
        self.validate_participation(at)?;
        self.validate_rounds(at)?;
        self.validate_admission(at)?;
        self.validate_residency(at)?;
        if let Some(v) = &self.validation {
            v.validate(at)?;
        }
        if let Some(b) = &self.business {
            b.validate(at)?;
        }
        self.validate_secure_aggregation(at)?;
        self.validate_privacy(at)
    }

    /// `regions`: each once, each a certificate label.
    fn validate_regions(&self, at: &Locator) -> Result<(), PolicyError> {
        if let Some(dup) = duplicate(&self.regions) {
            return Err(at.invalid(&["regions"], &format!("{:?}", dup), "each region once"));
        }
        for r in &self.regions {
            if !is_label(r) {
                return Err(at.invalid(
                    &["regions"],
                    &format!("{r:?}"),
                    "region names of a-z, 0-9 and '-' (as in certificates)",
                ));
            }
        }
        Ok(())
    }

    /// `[participation]`.
    fn validate_participation(&self, at: &Locator) -> Result<(), PolicyError> {
        let p = &self.participation;
        if p.min_silos == 0 {
            return Err(at.invalid(&["participation", "min_silos"], "0", "at least 1"));
        }
        if let Some(max) = p.max_silos {
            if max < p.min_silos {
                return Err(at.invalid(
                    &["participation", "max_silos"],
                    &max.to_string(),
                    &format!("at least participation.min_silos ({})", p.min_silos),
                ));
            }
        }
        if p.quorum == 0 || p.quorum > p.min_silos {
            return Err(at.invalid(
                &["participation", "quorum"],
                &p.quorum.to_string(),
                &format!("between 1 and participation.min_silos ({}): a round must be able to commit with the silos it starts with", p.min_silos),
            ));
        }
        if !(p.sample_fraction > 0.0 && p.sample_fraction <= 1.0) {
            return Err(at.invalid(
                &["participation", "sample_fraction"],
                &p.sample_fraction.to_string(),
                "a fraction in (0, 1]",
            ));
        }
        let share = p.max_weight_share.unwrap_or(1.0);
        if !(share > 0.0 && share <= 1.0) {
            return Err(at.invalid(
                &["participation", "max_weight_share"],
                &share.to_string(),
                "a share in (0, 1]",
            ));
        }
        if share * (p.quorum as f64) < 1.0 - 1e-12 {
            return Err(at.invalid(
                &["participation", "max_weight_share"],
                &share.to_string(),
                &format!(
                    "at least 1 / participation.quorum ({:.4}): with {} updates the shares could not add up to 1",
                    1.0 / p.quorum as f64,
                    p.quorum
                ),
            ));
        }
        for r in &p.roles {
            if !["silo", "aggregator", "coordinator"].contains(&r.as_str()) {
                return Err(at.invalid(
                    &["participation", "roles"],
                    &format!("{r:?}"),
                    "silo, aggregator or coordinator",
                ));
            }
        }
        if p.roles.is_empty() {
            return Err(at.invalid(
                &["participation", "roles"],
                "[]",
                "at least one role (usually [\"silo\"])",
            ));
        }
        if let Some(allowed) = &p.allowed_regions {
            self.check_regions(at, &["participation", "allowed_regions"], allowed)?;
        }
        if p.min_protocol_version == 0 {
            return Err(at.invalid(
                &["participation", "min_protocol_version"],
                "0",
                "a protocol version, at least 1",
            ));
        }
        if let Some(v) = &p.min_software_version {
            if parse_version(v).is_none() {
                return Err(at.invalid(
                    &["participation", "min_software_version"],
                    &format!("{v:?}"),
                    "a version MAJOR.MINOR.PATCH, e.g. \"0.1.0\"",
                ));
            }
        }
        if !is_duration(p.max_heartbeat_age_secs) {
            return Err(at.invalid(
                &["participation", "max_heartbeat_age_secs"],
                &p.max_heartbeat_age_secs.to_string(),
                duration::ALLOWED,
            ));
        }
        if p.cooldown_rounds > MAX_ROUND_COUNT {
            return Err(at.invalid(
                &["participation", "cooldown_rounds"],
                &p.cooldown_rounds.to_string(),
                &format!("at most {MAX_ROUND_COUNT} rounds"),
            ));
        }
        if let Some(dup) = duplicate(&p.deny) {
            return Err(at.invalid(
                &["participation", "deny"],
                &format!("{dup:?}"),
                "each node once",
            ));
        }
        Ok(())
    }

    /// `[rounds]`.
    fn validate_rounds(&self, at: &Locator) -> Result<(), PolicyError> {
        let r = &self.rounds;
        if !is_duration(r.deadline_secs) {
            return Err(at.invalid(
                &["rounds", "deadline_secs"],
                &r.deadline_secs.to_string(),
                duration::ALLOWED,
            ));
        }
        if !(r.grace_secs.is_finite() && r.grace_secs >= 0.0 && r.grace_secs < r.deadline_secs) {
            return Err(at.invalid(
                &["rounds", "grace_secs"],
                &r.grace_secs.to_string(),
                &format!("≥ 0 and below rounds.deadline_secs ({})", r.deadline_secs),
            ));
        }
        Ok(())
    }

    /// `[admission]`.
    fn validate_admission(&self, at: &Locator) -> Result<(), PolicyError> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        let a = &self.admission;
        if let Some(n) = a.max_update_norm {
            if !positive(n) {
                return Err(at.invalid(
                    &["admission", "max_update_norm"],
                    &n.to_string(),
                    "a positive number",
                ));
            }
        }
        if let Some(r) = a.max_norm_ratio {
            if !(r == 0.0 || (r.is_finite() && r >= 1.0)) {
                return Err(at.invalid(
                    &["admission", "max_norm_ratio"],
                    &r.to_string(),
                    "a ratio of at least 1 (e.g. 4), or 0 to turn the rule off",
                ));
            }
        }
        match a.anomaly {
            Some(Anomaly::NormZscore { threshold }) if !positive(threshold) => {
                return Err(at.invalid(
                    &["admission", "anomaly", "threshold"],
                    &threshold.to_string(),
                    "a positive z-score, e.g. 3",
                ))
            }
            Some(Anomaly::Cosine { threshold }) if !(-1.0..=1.0).contains(&threshold) => {
                return Err(at.invalid(
                    &["admission", "anomaly", "threshold"],
                    &threshold.to_string(),
                    "a cosine similarity in [-1, 1]",
                ))
            }
            _ => {}
        }
        if let Some(q) = a.quarantine {
            for (key, v) in [
                ("after", q.after as u64),
                ("window", q.window),
                ("rounds", q.rounds),
            ] {
                if v == 0 || v > MAX_ROUND_COUNT {
                    return Err(at.invalid(
                        &["admission", "quarantine", key],
                        &v.to_string(),
                        &format!("between 1 and {MAX_ROUND_COUNT}"),
                    ));
                }
            }
            if q.after as u64 > q.window {
                return Err(at.invalid(
                    &["admission", "quarantine", "after"],
                    &q.after.to_string(),
                    &format!(
                        "at most admission.quarantine.window ({}): at most one rejection per round",
                        q.window
                    ),
                ));
            }
        }
        Ok(())
    }

    /// `[residency]`, against `regions`.
    fn validate_residency(&self, at: &Locator) -> Result<(), PolicyError> {
        if let Some(res) = &self.residency {
            if self.regions.is_empty() {
                return Err(at.invalid(
                    &["residency"],
                    "[residency]",
                    "a list of `regions` to check it against",
                ));
            }
            for (from, to) in &res.allowed {
                self.check_regions(at, &["residency", "allowed"], std::slice::from_ref(from))?;
                self.check_regions(at, &["residency", "allowed", from], to)?;
                if to.is_empty() {
                    return Err(at.invalid(
                        &["residency", "allowed", from],
                        "[]",
                        "at least one region: a region allowed nowhere could never take part",
                    ));
                }
            }
            if let Some(missing) = self.regions.iter().find(|r| !res.allowed.contains_key(*r)) {
                return Err(at.invalid(
                    &["residency", "allowed"],
                    &format!("(no entry for {missing:?})"),
                    &format!(
                        "an entry for every region: where may {missing:?} updates be processed?"
                    ),
                ));
            }
            if res.min_regional_silos == 0 {
                return Err(at.invalid(&["residency", "min_regional_silos"], "0", "at least 1"));
            }
        }
        Ok(())
    }

    /// `[secure_aggregation]`, and what it rules out elsewhere (rules on individual updates, regional aggregation, central DP).
    fn validate_secure_aggregation(&self, at: &Locator) -> Result<(), PolicyError> {
        let a = &self.admission;
        if let Some(sa) = &self.secure_aggregation {
            sa.validate(at, self.participation.max_silos)?;
            // The aggregator holds only masked updates: nothing may need one in the clear.
            let individual = "no rule on an individual update with [secure_aggregation]: the aggregator only ever sees the sum";
            if let Some(n) = a.max_update_norm {
                return Err(at.invalid(
                    &["admission", "max_update_norm"],
                    &n.to_string(),
                    individual,
                ));
            }
            if a.anomaly.is_some() {
                return Err(at.invalid(&["admission", "anomaly"], "(set)", individual));
            }
            if let Some(r) = a.max_norm_ratio.filter(|r| *r > 0.0) {
                return Err(at.invalid(
                    &["admission", "max_norm_ratio"],
                    &r.to_string(),
                    individual,
                ));
            }
            if self.residency.is_some() {
                return Err(at.invalid(
                    &["residency"],
                    "[residency]",
                    "no regional aggregation with [secure_aggregation]: a regional aggregate would need the region's updates unmasked",
                ));
            }
            if let Some(dp) = self
                .privacy
                .as_ref()
                .filter(|dp| dp.mode == NoiseMode::Central)
            {
                return Err(at.invalid(
                    &["privacy", "mode"],
                    &format!("\"{}\"", dp.mode.as_str()),
                    "\"distributed\" with [secure_aggregation]: the aggregator cannot clip updates it never sees, so the silos clip and add the noise",
                ));
            }
        }
        Ok(())
    }

    /// `[privacy]`, and the admission rules it rules out.
    fn validate_privacy(&self, at: &Locator) -> Result<(), PolicyError> {
        let a = &self.admission;
        if let Some(dp) = &self.privacy {
            dp.validate(at)?;
            // Refusing an update for its norm or direction makes who takes part depend on
            // the raw update, which the noise does not cover.
            if let Some(n) = a.max_update_norm {
                return Err(at.invalid(
                    &["admission", "max_update_norm"],
                    &n.to_string(),
                    "no norm bound with [privacy]: refusing by the raw update's norm leaks it outside the DP guarantee (privacy.clip_norm already bounds every update)",
                ));
            }
            if a.anomaly.is_some() {
                return Err(at.invalid(
                    &["admission", "anomaly"],
                    "(set)",
                    "no anomaly rule with [privacy]: refusing by the raw update leaks it outside the DP guarantee",
                ));
            }
            if let Some(r) = a.max_norm_ratio.filter(|r| *r > 0.0) {
                return Err(at.invalid(
                    &["admission", "max_norm_ratio"],
                    &r.to_string(),
                    "no norm rule with [privacy]: privacy.clip_norm already bounds every update",
                ));
            }
        }
        Ok(())
    }

    fn check_regions(
        &self,
        at: &Locator,
        key: &[&str],
        regions: &[String],
    ) -> Result<(), PolicyError> {
        let known = self.known_regions();
        if known.is_empty() {
            return Ok(());
        }
        for r in regions {
            if !known.contains(r.as_str()) {
                return Err(at.invalid(
                    key,
                    &format!("{r:?}"),
                    &format!("one of the declared regions {:?}", self.regions),
                ));
            }
        }
        Ok(())
    }
}

fn duplicate(v: &[String]) -> Option<&String> {
    let mut seen = BTreeSet::new();
    v.iter().find(|x| !seen.insert(x.as_str()))
}

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
