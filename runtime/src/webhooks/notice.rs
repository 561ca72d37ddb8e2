//! What a webhook receiver is told: the federation events that need someone's attention,
//! picked out of the event stream.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::events::Event;

/// A kind of notice (`events = [...]` in a webhook's configuration selects them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A candidate passed the gate and waits for an operator's approval.
    CandidateAwaitingApproval,
    /// A version became current (committed by a round, or approved).
    VersionCommitted,
    /// A round's candidate failed validation or was rejected by an operator.
    RoundRejected,
    /// A round ended without a candidate.
    RoundAbandoned,
    /// A silo was quarantined after repeated refusals.
    SiloQuarantined,
    /// A silo has spent at least the warning share of its privacy budget.
    BudgetNearlySpent,
    /// The privacy budget leaves too few silos for another round.
    BudgetExhausted,
    /// The federation was paused.
    FederationPaused,
    /// The federation was resumed.
    FederationResumed,
    /// The run ended.
    FederationFinished,
    /// A training run ended (finished, failed or cancelled) while the coordinator serves on.
    RunEnded,
    /// A member of the roster is missing.
    MemberMissing,
}

impl NoticeKind {
    /// Every kind.
    pub const ALL: [NoticeKind; 12] = [
        NoticeKind::CandidateAwaitingApproval,
        NoticeKind::VersionCommitted,
        NoticeKind::RoundRejected,
        NoticeKind::RoundAbandoned,
        NoticeKind::SiloQuarantined,
        NoticeKind::BudgetNearlySpent,
        NoticeKind::BudgetExhausted,
        NoticeKind::FederationPaused,
        NoticeKind::FederationResumed,
        NoticeKind::FederationFinished,
        NoticeKind::RunEnded,
        NoticeKind::MemberMissing,
    ];

    /// The snake_case name (the `X-Fedsilo-Event` header).
    pub fn as_str(self) -> &'static str {
        match self {
            NoticeKind::CandidateAwaitingApproval => "candidate_awaiting_approval",
            NoticeKind::VersionCommitted => "version_committed",
            NoticeKind::RoundRejected => "round_rejected",
            NoticeKind::RoundAbandoned => "round_abandoned",
            NoticeKind::SiloQuarantined => "silo_quarantined",
            NoticeKind::BudgetNearlySpent => "budget_nearly_spent",
            NoticeKind::BudgetExhausted => "budget_exhausted",
            NoticeKind::FederationPaused => "federation_paused",
            NoticeKind::FederationResumed => "federation_resumed",
            NoticeKind::FederationFinished => "federation_finished",
            NoticeKind::RunEnded => "run_ended",
            NoticeKind::MemberMissing => "member_missing",
        }
    }
}

/// A notice: its kind and what the receiver needs to act on it.
#[derive(Debug, Clone, PartialEq)]
pub struct Notice {
    /// The kind.
    pub kind: NoticeKind,
    /// Its data (the event's fields, as in `events.jsonl`).
    pub data: Value,
}

/// Turns events into notices; remembers whether the budget warning was given.
#[derive(Debug)]
pub struct Noticer {
    /// Warn when a silo has spent this share of its budget.
    budget_warning: f64,
    warned: bool,
}

impl Noticer {
    /// Warns about the budget once the largest share spent reaches `budget_warning`.
    pub fn new(budget_warning: f64) -> Self {
        Self {
            budget_warning,
            warned: false,
        }
    }

    /// The notices `event` gives rise to.
    pub fn notices(&mut self, event: &Event) -> Vec<Notice> {
        let data = || serde_json::to_value(event).unwrap_or(Value::Null);
        let one = |kind| vec![Notice { kind, data: data() }];
        match event {
            Event::AwaitingApproval { .. } => one(NoticeKind::CandidateAwaitingApproval),
            // An approved candidate's `round_committed` follows its `approved`: one notice, with
            // the round's summary, either way.
            Event::RoundCommitted(_) => one(NoticeKind::VersionCommitted),
            // The budget is charged when a round is dispatched.
            Event::RoundStarted {
                round,
                privacy: Some(p),
                ..
            } => match p.budget_used {
                Some(used) if used >= self.budget_warning && !self.warned => {
                    self.warned = true;
                    vec![Notice {
                        kind: NoticeKind::BudgetNearlySpent,
                        data: json!({
                            "round": round,
                            "budget_used": used,
                            "warning_at": self.budget_warning,
                            "epsilon": p.epsilon,
                            "delta": p.delta,
                        }),
                    }]
                }
                _ => vec![],
            },
            Event::RoundRejected { .. } => one(NoticeKind::RoundRejected),
            Event::RoundAbandoned { .. } => one(NoticeKind::RoundAbandoned),
            Event::SiloQuarantined { .. } => one(NoticeKind::SiloQuarantined),
            Event::BudgetExhausted { .. } => one(NoticeKind::BudgetExhausted),
            Event::FederationPaused { .. } => one(NoticeKind::FederationPaused),
            Event::FederationResumed { .. } => one(NoticeKind::FederationResumed),
            Event::Finished { .. } => one(NoticeKind::FederationFinished),
            Event::RunEnded { .. } => one(NoticeKind::RunEnded),
            Event::MemberMissing { .. } => one(NoticeKind::MemberMissing),
            _ => vec![],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_serde_name() {
        for k in NoticeKind::ALL {
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
    }

    #[test]
    fn the_budget_warning_is_given_once_when_the_share_spent_crosses_it() {
        let started = |used: f64| Event::RoundStarted {
            round: 1,
            base_version: 0,
            cohort: vec![],
            excluded: vec![],
            privacy: Some(crate::privacy::budget::RoundSpend {
                mode: "central".into(),
                noise_multiplier: 1.0,
                round_epsilon: 1.0,
                epsilon: used * 10.0,
                delta: 1e-5,
                silos: Default::default(),
                budget_used: Some(used),
            }),
        };
        let mut n = Noticer::new(0.8);
        assert!(n.notices(&started(0.5)).is_empty());
        let warn = n.notices(&started(0.85));
        assert_eq!(warn.len(), 1);
        assert_eq!(warn[0].kind, NoticeKind::BudgetNearlySpent);
        assert_eq!(warn[0].data["budget_used"], 0.85);
        assert!(n.notices(&started(0.9)).is_empty(), "once");
    }

    #[test]
    fn quiet_events_give_no_notice_and_loud_ones_keep_their_fields() {
        let mut n = Noticer::new(0.8);
        assert!(n.notices(&Event::SiloLeft { silo: "a".into() }).is_empty());
        let got = n.notices(&Event::RoundAbandoned {
            round: 3,
            reason: "quorum".into(),
        });
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].kind, NoticeKind::RoundAbandoned);
        assert_eq!(got[0].data["round"], 3);
        assert_eq!(got[0].data["reason"], "quorum");
    }
}
