//! Unit tests of the coordinator's state machine, without processes or sockets: each builds
//! the state from a state directory in a temporary folder ([`recover`], as a start does),
//! feeds it what a round, an operator or a restart would, and checks the resulting phase and
//! the files — `CURRENT`, checkpoints, the audit journal, the registry, `rounds.jsonl`.

use ractor::ActorRef;

use super::fixture::*;
use super::governance::control;
use super::lifecycle;
use super::messages::{ControlError, ControlRequest, CoordinatorMessage};
use super::outcome::on_round;
use super::phase::{Hold, Phase};
use super::scaling;
use crate::decision::Kind;
use crate::registry::Status;
use crate::round::{Attendance, RoundOutcome};
use crate::status::RunState;
use crate::store::ModelStore;

#[tokio::test]
async fn a_fresh_state_directory_starts_before_scaling_with_nothing_current() {
    let mut f = Fixture::new();
    let s = f.start().await.unwrap();
    assert!(matches!(
        s.phase,
        Phase::Starting {
            agreeing: false,
            ..
        }
    ));
    assert_eq!(s.phase.run_state(&s.hold, false), RunState::Starting);
    assert_eq!((s.run.next_round, s.versions.next_version), (1, 1));
    assert_eq!(f.current(), None);
    assert!(f.journal().is_empty());
}

#[tokio::test]
async fn agreed_scaling_commits_version_0_and_makes_the_federation_ready() {
    let mut f = Fixture::new();
    let s = ready(&mut f).await;
    assert!(s.versions.scaling.is_some());
    assert_eq!(f.current(), Some(0));
    assert_eq!(f.journal(), ["committed"]);
    let v0 = meta(&s, 0).unwrap();
    assert_eq!((v0.status, v0.round), (Status::Committed, 0));
    assert_eq!(f.events("scaling_agreed").len(), 1);
}

#[tokio::test]
async fn scaling_without_enough_silos_backs_off_and_commits_nothing() {
    let mut f = Fixture::new();
    let mut s = f.start().await.unwrap();
    let mut failed = scaling_outcome();
    failed.scaling = None;
    failed.blocked = vec![("west".into(), "its schema differs".into())];
    scaling::on_done(&mut s, failed);
    assert!(matches!(
        s.phase,
        Phase::Starting {
            agreeing: false,
            retry_at: Some(_)
        }
    ));
    assert!(scaling::backing_off(&s.phase));
    assert_eq!(f.current(), None);
    assert!(f.journal().is_empty());
    assert_eq!(f.events("silo_blocked").len(), 1);
}

#[tokio::test]
async fn a_candidate_that_passes_the_gate_is_committed_and_made_current() {
    let mut f = Fixture::new();
    let s = committed(&mut f).await;
    assert!(matches!(s.phase, Phase::Ready));
    assert_eq!(s.versions.model.version, 1);
    assert_eq!(
        (s.run.next_round, s.run.committed, s.versions.next_version),
        (2, 1, 2)
    );
    assert_eq!(
        s.versions.baseline,
        metrics(0.8),
        "the gate compares with v1 now"
    );
    assert_eq!(s.run.last_eval, metrics(0.8), "the run's latest figures");
    assert_eq!(f.current(), Some(1));
    assert_eq!(f.journal(), ["committed", "committed"]);
    assert_eq!(meta(&s, 1).unwrap().status, Status::Committed);
    assert_eq!(f.rounds_logged(), [1]);
    assert_eq!(f.events("round_committed").len(), 1);
}

#[tokio::test]
async fn a_candidate_that_fails_the_gate_is_kept_as_rejected_and_the_current_version_stays() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, Some("AUC fell 0.05 at west"));
    on_round(&mut s, outcome).unwrap();
    assert!(matches!(s.phase, Phase::Ready));
    assert_eq!((s.versions.model.version, s.run.committed), (0, 0));
    assert_eq!(
        s.versions.next_version, 2,
        "the rejected candidate used number 1"
    );
    assert_eq!(f.current(), Some(0));
    assert_eq!(f.journal(), ["committed", "rejected"]);
    let v1 = meta(&s, 1).unwrap();
    assert_eq!(v1.status, Status::Rejected);
    assert!(v1.reason.contains("AUC fell"), "{}", v1.reason);
    assert!(ModelStore::open(&f.state_dir)
        .unwrap()
        .candidate_path(1)
        .exists());
    assert!(f.rounds_logged().is_empty());
}

#[tokio::test]
async fn a_candidate_under_require_approval_waits_and_no_round_is_logged() {
    let mut f = Fixture::new();
    let s = awaiting(&mut f).await;
    assert_eq!(s.phase.run_state(&s.hold, true), RunState::AwaitingApproval);
    assert_eq!(s.versions.model.version, 0);
    assert_eq!(f.current(), Some(0));
    assert_eq!(f.journal(), ["committed", "awaiting_approval"]);
    assert_eq!(meta(&s, 1).unwrap().status, Status::AwaitingApproval);
    assert!(f.rounds_logged().is_empty());
    // No round by hand while it waits.
    let mut s = s;
    control(&mut s, pause()).unwrap();
    let Err(ControlError::Conflict(why)) =
        control(&mut s, ControlRequest::StartRound { by: "alice".into() })
    else {
        panic!("a round was started while a candidate awaited");
    };
    assert!(why.contains("v1 awaits approval"), "{why}");
}

#[tokio::test]
async fn approving_commits_the_waiting_candidate() {
    let mut f = Fixture::new();
    let mut s = awaiting(&mut f).await;
    let answer = control(&mut s, decide(Kind::Approve, 1)).unwrap();
    assert_eq!(answer, "v1 approved; it is current");
    assert!(matches!(s.phase, Phase::Ready));
    assert_eq!((s.versions.model.version, s.run.committed), (1, 1));
    assert_eq!(f.current(), Some(1));
    assert_eq!(
        f.journal(),
        [
            "committed",
            "awaiting_approval",
            "decision_applied",
            "approved",
            "committed"
        ]
    );
    let v1 = meta(&s, 1).unwrap();
    assert_eq!(
        (v1.status, v1.decided_by.as_str()),
        (Status::Committed, "alice")
    );
    assert_eq!(f.rounds_logged(), [1]);
    assert_eq!(f.events("round_committed").len(), 1);
}

#[tokio::test]
async fn rejecting_keeps_the_candidate_as_rejected_and_the_current_version() {
    let mut f = Fixture::new();
    let mut s = awaiting(&mut f).await;
    let answer = control(&mut s, decide(Kind::Reject, 1)).unwrap();
    assert_eq!(answer, "v1 rejected; v0 stays current");
    assert!(matches!(s.phase, Phase::Ready));
    assert_eq!(f.current(), Some(0));
    assert_eq!(
        f.journal(),
        [
            "committed",
            "awaiting_approval",
            "decision_applied",
            "rejected"
        ]
    );
    let v1 = meta(&s, 1).unwrap();
    assert_eq!(v1.status, Status::Rejected);
    assert!(v1.reason.starts_with("rejected by alice"), "{}", v1.reason);
}

#[tokio::test]
async fn a_decision_on_another_version_than_the_waiting_one_changes_nothing() {
    let mut f = Fixture::new();
    let mut s = awaiting(&mut f).await;
    let before = f.journal();
    let Err(ControlError::Conflict(why)) = control(&mut s, decide(Kind::Approve, 7)) else {
        panic!("approved a version that was not waiting");
    };
    assert!(
        why.contains("version 7 is not awaiting approval (v1 is)"),
        "{why}"
    );
    assert!(s.phase.awaiting().is_some());
    assert_eq!(f.journal(), before);
}

#[tokio::test]
async fn rolling_back_makes_an_earlier_committed_version_current_again() {
    let mut f = Fixture::new();
    let mut s = committed(&mut f).await;
    let answer = control(&mut s, decide(Kind::Rollback, 0)).unwrap();
    assert!(answer.starts_with("rolled back from v1 to v0"), "{answer}");
    assert_eq!(s.versions.model.version, 0);
    // Version 0's values were let go at the first commit; they are rebuilt to compare.
    assert!(s.versions.initial.is_empty());
    assert_eq!(
        s.versions.model.params,
        s.versions.initial_values(&s.settings).unwrap()
    );
    assert_eq!(f.current(), Some(0));
    assert_eq!(
        f.journal(),
        ["committed", "committed", "decision_applied", "rolled_back"]
    );
    // The next candidate still gets a new number.
    assert_eq!(s.versions.next_version, 2);
}

#[tokio::test]
async fn a_rollback_is_refused_during_a_round_and_to_a_version_never_committed() {
    let mut f = Fixture::new();
    let mut s = committed(&mut f).await;
    dispatched(&mut s);
    let Err(ControlError::Conflict(why)) = control(&mut s, decide(Kind::Rollback, 0)) else {
        panic!("rolled back during a round");
    };
    assert!(why.contains("round 2 is in flight"), "{why}");
    s.phase = Phase::Ready;
    let Err(ControlError::Conflict(why)) = control(&mut s, decide(Kind::Rollback, 5)) else {
        panic!("rolled back to a version never committed");
    };
    assert!(why.contains("never committed"), "{why}");
    let Err(ControlError::Conflict(why)) = control(&mut s, decide(Kind::Rollback, 1)) else {
        panic!("rolled back to the current version");
    };
    assert!(why.contains("already current"), "{why}");
    assert_eq!(f.current(), Some(1));
    assert_eq!(f.journal(), ["committed", "committed"]);
}

#[tokio::test]
async fn a_rollback_to_a_modified_checkpoint_is_refused() {
    let mut f = Fixture::new();
    let mut s = committed(&mut f).await;
    let path = s.ledger.store.model_path(0);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let Err(ControlError::Conflict(why)) = control(&mut s, decide(Kind::Rollback, 0)) else {
        panic!("rolled back to a modified file");
    };
    assert!(why.contains("the file was modified"), "{why}");
    assert_eq!(s.versions.model.version, 1);
}

#[tokio::test]
async fn a_rollback_withdraws_a_candidate_built_on_the_version_left() {
    let mut f = Fixture::new();
    let mut s = committed(&mut f).await;
    s.run.round_policy = approval_policy();
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.25, None);
    on_round(&mut s, outcome).unwrap();
    assert_eq!(s.phase.awaiting().map(|a| a.meta.version), Some(2));
    control(&mut s, decide(Kind::Rollback, 0)).unwrap();
    assert!(matches!(s.phase, Phase::Ready));
    let v2 = meta(&s, 2).unwrap();
    assert_eq!(v2.status, Status::Rejected);
    assert!(
        v2.reason.starts_with("withdrawn: alice rolled back to v0"),
        "{}",
        v2.reason
    );
    assert_eq!(f.current(), Some(0));
}

#[tokio::test]
async fn pause_and_resume_are_journaled_and_each_refused_twice() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    assert_eq!(
        control(&mut s, pause()).unwrap(),
        "paused; no new round starts until resumed"
    );
    assert!(!s.hold.may_dispatch());
    assert_eq!(s.phase.run_state(&s.hold, true), RunState::Paused);
    let Err(ControlError::Conflict(why)) = control(&mut s, pause()) else {
        panic!("paused twice");
    };
    assert!(why.contains("already paused by alice"), "{why}");
    control(&mut s, ControlRequest::Resume { by: "bob".into() }).unwrap();
    assert_eq!(s.hold, Hold::Running);
    assert!(matches!(
        control(&mut s, ControlRequest::Resume { by: "bob".into() }),
        Err(ControlError::Conflict(_))
    ));
    assert_eq!(f.journal(), ["committed", "paused", "resumed"]);
}

#[tokio::test]
async fn pausing_during_a_round_lets_it_finish() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    let round = dispatched(&mut s);
    let answer = control(&mut s, pause()).unwrap();
    assert_eq!(
        answer,
        "paused; round 1 in flight finishes, no new round starts"
    );
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    assert_eq!(f.current(), Some(1), "the round in flight committed");
    assert_eq!(s.phase.run_state(&s.hold, true), RunState::Paused);
}

#[tokio::test]
async fn a_round_by_hand_needs_a_pause_and_is_asked_for_once() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    let step = || ControlRequest::StartRound { by: "alice".into() };
    assert!(matches!(
        control(&mut s, step()),
        Err(ControlError::Conflict(_))
    ));
    control(&mut s, pause()).unwrap();
    assert!(control(&mut s, step())
        .unwrap()
        .starts_with("round 1 starts"));
    assert!(s.hold.may_dispatch());
    let Err(ControlError::Conflict(why)) = control(&mut s, step()) else {
        panic!("asked twice");
    };
    assert!(why.contains("already requested"), "{why}");
    assert_eq!(f.events("round_requested").len(), 1);
}

#[tokio::test]
async fn a_pause_survives_a_restart() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    control(&mut s, pause()).unwrap();
    drop(s);
    let s = f.start().await.unwrap();
    assert_eq!(s.hold.pause().map(|p| p.by.as_str()), Some("alice"));
    assert!(!s.hold.may_dispatch());
    assert_eq!(s.phase.run_state(&s.hold, true), RunState::Paused);
}

#[tokio::test]
async fn a_round_lost_with_quorum_is_abandoned_and_its_failures_start_a_cool_down() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    let round = dispatched(&mut s);
    let attendance = Attendance {
        missing: vec![
            (
                "west".into(),
                "left the federation mid-round (session closed)".into(),
            ),
            ("midwest".into(), crate::round::NOT_COLLECTED.into()),
        ],
        refused: vec![],
    };
    let outcome = RoundOutcome::Abandoned {
        round,
        reason: "quorum not reached: 1 of 3".into(),
        attendance,
    };
    on_round(&mut s, outcome).unwrap();
    assert!(matches!(s.phase, Phase::Ready));
    assert_eq!(s.run.next_round, 2);
    assert_eq!(s.members.failures.get("west"), Some(&1));
    assert_eq!(
        s.members.failures.get("midwest"),
        None,
        "not collected is not a failure"
    );
    assert_eq!(f.current(), Some(0));
    assert_eq!(f.journal(), ["committed", "abandoned"]);
    assert_eq!(f.events("round_abandoned").len(), 1);
}

#[tokio::test]
async fn a_candidate_refused_by_validation_is_journaled_without_a_version() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    let round = dispatched(&mut s);
    let outcome = RoundOutcome::Rejected {
        round,
        reason: "validator: no answer".into(),
        attendance: Attendance::default(),
    };
    on_round(&mut s, outcome).unwrap();
    assert_eq!(f.journal(), ["committed", "rejected"]);
    assert_eq!(meta(&s, 1), None);
    assert_eq!(s.versions.next_version, 1, "no version number was used");
}

#[tokio::test]
async fn a_restart_resumes_the_committed_version_and_numbers() {
    let mut f = Fixture::new();
    let s = committed(&mut f).await;
    let params = s.versions.model.params.clone();
    drop(s);
    let s = f.start().await.unwrap();
    assert!(matches!(s.phase, Phase::Ready));
    assert_eq!(s.versions.model.version, 1);
    assert_eq!(s.versions.model.params, params);
    assert_eq!((s.run.next_round, s.versions.next_version), (2, 2));
    assert_eq!(s.versions.baseline, metrics(0.8));
    assert!(
        s.run.last_eval.is_empty(),
        "a new run has made nothing current yet"
    );
    assert_eq!(f.events("resumed").len(), 1);
}

#[tokio::test]
async fn a_round_open_at_a_crash_is_abandoned_at_the_next_start_and_its_number_not_reused() {
    let mut f = Fixture::new();
    let s = ready(&mut f).await;
    s.ledger
        .journal
        .record_synced(crate::audit::Record::RoundStarted {
            round: 1,
            base_version: 0,
            base_digest: s.versions.model.digest.hex(),
            cohort: vec!["northeast".into()],
            excluded: vec![],
        })
        .unwrap();
    drop(s);
    let s = f.start().await.unwrap();
    assert_eq!(s.run.next_round, 2);
    assert_eq!(f.journal(), ["committed", "round_started", "abandoned"]);
    let abandoned = f.events("round_abandoned");
    assert!(abandoned[0]["reason"]
        .as_str()
        .unwrap()
        .contains("restarted"));
}

#[tokio::test]
async fn a_candidate_waits_across_a_restart_and_can_then_be_approved() {
    let mut f = Fixture::new();
    drop(awaiting(&mut f).await);
    let mut s = f.start().await.unwrap();
    let a = s.phase.awaiting().expect("the candidate no longer waits");
    assert!(
        a.summary.is_none(),
        "the summary is rebuilt from the registry"
    );
    control(&mut s, decide(Kind::Approve, 1)).unwrap();
    assert_eq!(f.current(), Some(1));
    assert_eq!(f.rounds_logged(), [1]);
}

#[tokio::test]
async fn a_waiting_candidate_modified_while_stopped_stops_the_start() {
    let mut f = Fixture::new();
    let s = awaiting(&mut f).await;
    let path = s.ledger.store.candidate_path(1);
    drop(s);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let Err(e) = f.start().await else {
        panic!("started on a modified candidate");
    };
    assert!(
        e.to_string()
            .contains("differs from the one the audit journal recorded"),
        "{e}"
    );
}

#[tokio::test]
async fn finishing_during_a_round_abandons_it() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    dispatched(&mut s);
    let me: ActorRef<CoordinatorMessage> = nobody().await;
    lifecycle::finish(
        &mut s,
        &me,
        Some("cannot record it in the audit journal".into()),
    );
    assert!(s.phase.finished());
    assert_eq!(f.journal(), ["committed", "abandoned"]);
    assert_eq!(f.events("round_abandoned").len(), 1);
}

#[tokio::test]
async fn finishing_reports_the_result_once_and_refuses_everything_after() {
    let mut f = Fixture::new();
    let mut s = committed(&mut f).await;
    let me: ActorRef<CoordinatorMessage> = nobody().await;
    lifecycle::finish(&mut s, &me, Some("cannot commit: disk full".into()));
    lifecycle::finish(&mut s, &me, None);
    assert_eq!(
        s.phase.error().map(String::as_str),
        Some("cannot commit: disk full")
    );
    assert_eq!(s.phase.run_state(&s.hold, true), RunState::Finished);
    let mut done = f.done.take().unwrap();
    let r = done.recv().await.unwrap();
    assert_eq!((r.rounds_committed, r.version), (1, 1));
    assert!(done.try_recv().is_err(), "the result went out twice");
    assert_eq!(f.events("finished").len(), 1);
}
