//! Scheduled retraining: the federation file's `[schedule]` submits a training run at a fixed
//! interval (`every_secs`) or at the times of a cron expression (`cron`, five fields, UTC —
//! `"0 2 * * *"` is nightly at 02:00), for a serving coordinator ([`crate::runs`]).
//!
//! Pure time arithmetic, no clock: [`RetrainSchedule::due`] says whether a run is due now,
//! given when the schedule last submitted one (from the journal, so a restart neither repeats
//! nor loses an occurrence: one missed while the coordinator was down is submitted when it
//! starts, once). Cron parsing is the `croner` crate's.

use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;

/// Who submits a scheduled run (recorded in the journal). Its space keeps it apart from every
/// operator's name (`[a-z0-9-]`) and token (`token NAME`).
pub const SCHEDULE: &str = "federation schedule";

/// `[schedule]` in the federation file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// A run every this many seconds.
    #[serde(default)]
    pub every_secs: Option<f64>,
    /// A run at each time of this cron expression (minute hour day month weekday, UTC).
    #[serde(default)]
    pub cron: Option<String>,
    /// Rounds of each scheduled run.
    pub rounds: u64,
}

/// When runs are due.
#[derive(Debug, Clone)]
pub enum Cadence {
    /// Every this many milliseconds after the last one.
    Every(u64),
    /// At each time of a cron expression, in UTC.
    Cron(Box<croner::Cron>),
}

/// A parsed, checked schedule.
#[derive(Debug, Clone)]
pub struct RetrainSchedule {
    /// When.
    pub cadence: Cadence,
    /// Rounds of each run.
    pub rounds: u64,
}

/// Why a `[schedule]` table cannot be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScheduleError {
    /// Neither or both of `every_secs` and `cron`.
    #[error("`[schedule]` needs exactly one of `every_secs` and `cron`")]
    OneOf,
    /// `every_secs` out of range.
    #[error("`schedule.every_secs` = {0}: must be between 1 and 31,622,400 (a year)")]
    Every(f64),
    /// A cron expression that does not parse.
    #[error("`schedule.cron` = {expr:?}: {reason} (five fields: minute hour day month weekday, UTC, e.g. \"0 2 * * *\")")]
    Cron {
        /// The expression.
        expr: String,
        /// The parser's reason.
        reason: String,
    },
    /// `rounds` out of range.
    #[error("`schedule.rounds` = {0}: must be between 1 and {max}", max = crate::runs::MAX_RUN_ROUNDS)]
    Rounds(u64),
}

const YEAR_SECS: f64 = 31_622_400.0;

impl RetrainSchedule {
    /// Checks and parses a `[schedule]` table.
    pub fn parse(s: &ScheduleSection) -> Result<Self, ScheduleError> {
        if s.rounds == 0 || s.rounds > crate::runs::MAX_RUN_ROUNDS {
            return Err(ScheduleError::Rounds(s.rounds));
        }
        let cadence = match (&s.every_secs, &s.cron) {
            (Some(e), None) => {
                if !(e.is_finite() && (1.0..=YEAR_SECS).contains(e)) {
                    return Err(ScheduleError::Every(*e));
                }
                Cadence::Every((e * 1000.0) as u64)
            }
            (None, Some(expr)) => {
                let cron = croner::Cron::from_str(expr).map_err(|e| ScheduleError::Cron {
                    expr: expr.clone(),
                    reason: e.to_string(),
                })?;
                // A pattern that never fires (31 February) would never submit a run.
                if cron.find_next_occurrence(&Utc::now(), false).is_err() {
                    return Err(ScheduleError::Cron {
                        expr: expr.clone(),
                        reason: "it never fires".into(),
                    });
                }
                Cadence::Cron(Box::new(cron))
            }
            _ => return Err(ScheduleError::OneOf),
        };
        Ok(RetrainSchedule {
            cadence,
            rounds: s.rounds,
        })
    }

    /// The first time after `after_ms` (ms since the Unix epoch) a run is due; `None` if the
    /// schedule never fires again.
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match &self.cadence {
            Cadence::Every(ms) => after_ms.checked_add(*ms),
            Cadence::Cron(cron) => {
                let after: DateTime<Utc> = Utc.timestamp_millis_opt(after_ms as i64).single()?;
                let next = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }

    /// Whether a run is due at `now_ms`, the schedule's last run having been submitted at
    /// `last_ms` (or, if it never submitted one, the coordinator having started then).
    pub fn due(&self, last_ms: u64, now_ms: u64) -> bool {
        self.next_after(last_ms).is_some_and(|t| t <= now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(every: Option<f64>, cron: Option<&str>, rounds: u64) -> ScheduleSection {
        ScheduleSection {
            every_secs: every,
            cron: cron.map(str::to_string),
            rounds,
        }
    }

    /// 2026-12-07 01:59:30 UTC, in ms.
    const BEFORE_TWO: u64 = 1_796_608_770_000;

    #[test]
    fn an_interval_is_due_that_long_after_the_last_run() {
        let s = RetrainSchedule::parse(&section(Some(3600.0), None, 5)).unwrap();
        assert!(!s.due(1_000, 1_000 + 3_599_999));
        assert!(s.due(1_000, 1_000 + 3_600_000));
        assert_eq!(s.rounds, 5);
    }

    #[test]
    fn a_nightly_cron_is_due_at_two_and_not_before() {
        let s = RetrainSchedule::parse(&section(None, Some("0 2 * * *"), 20)).unwrap();
        let two = BEFORE_TWO + 30_000;
        assert_eq!(s.next_after(BEFORE_TWO), Some(two));
        assert!(!s.due(BEFORE_TWO, two - 1));
        assert!(s.due(BEFORE_TWO, two));
        // Submitted at two: the next is a day later; a coordinator down for two days submits
        // once when it comes back (due), and then waits for the next night.
        assert_eq!(s.next_after(two), Some(two + 86_400_000));
        assert!(s.due(two, two + 2 * 86_400_000 + 5));
    }

    #[test]
    fn bad_tables_are_refused_with_the_key() {
        let e = |s: ScheduleSection| RetrainSchedule::parse(&s).unwrap_err().to_string();
        assert!(e(section(None, None, 1)).contains("exactly one"));
        assert!(e(section(Some(60.0), Some("* * * * *"), 1)).contains("exactly one"));
        assert!(e(section(Some(0.0), None, 1)).contains("every_secs"));
        assert!(e(section(Some(f64::NAN), None, 1)).contains("every_secs"));
        assert!(e(section(None, Some("0 25 * * *"), 1)).contains("schedule.cron"));
        assert!(e(section(None, Some("0 0 31 2 *"), 1)).contains("never fires"));
        assert!(e(section(Some(60.0), None, 0)).contains("schedule.rounds"));
    }
}
