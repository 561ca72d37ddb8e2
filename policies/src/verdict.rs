//! The answer of every rule: allowed or not, and why.

/// The outcome of evaluating a rule. `reasons` is never empty when `allow` is false.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the action may go ahead.
    pub allow: bool,
    /// Human-readable reasons, one per rule that spoke.
    pub reasons: Vec<String>,
}

impl Verdict {
    /// An allowing verdict with one reason.
    pub fn allow(reason: impl Into<String>) -> Self {
        Self {
            allow: true,
            reasons: vec![reason.into()],
        }
    }

    /// A refusing verdict with one reason.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            allow: false,
            reasons: vec![reason.into()],
        }
    }
}
