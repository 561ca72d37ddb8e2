//! Unit tests of training runs as jobs on a serving coordinator, without processes or sockets:
//! the book of runs as a start rebuilds it from the journal, runs starting one at a time,
//! ending, being cancelled around a round in flight, and what a coordinator that does not serve
//! refuses.

use ractor::ActorRef;

use super::fixture::*;
use super::governance::control;
use super::jobs;
use super::lifecycle;
use super::messages::{ControlError, ControlRequest, CoordinatorMessage, RunRequest};
use super::outcome::on_round;
use super::phase::Phase;
use super::scaling;
use crate::runs::{RunPlan, RunSettings, RunStatus};
use crate::status::RunState;

fn submit(rounds: u64) -> ControlRequest {
    with(rounds, RunSettings::default())
}

fn with(rounds: u64, settings: RunSettings) -> ControlRequest {
    ControlRequest::Run(RunRequest::Submit {
        plan: RunPlan {
            rounds,
            settings,
            policy: Default::default(),
            key: None,
        },
        by: "token n8n".into(),
    })
}

fn cancel(run: u64) -> ControlRequest {
    ControlRequest::Run(RunRequest::Cancel {
        run,
        by: "alice".into(),
        reason: "wrong data".into(),
    })
}

/// A serving coordinator whose first queued run started, with feature scaling agreed.
async fn running(f: &mut Fixture) -> super::state::CoordinatorState {
    let mut s = f.start().await.unwrap();
    jobs::start_next(&mut s).unwrap();
    scaling::on_done(&mut s, scaling_outcome());
    s
}

fn status(s: &super::state::CoordinatorState, id: u64) -> RunStatus {
    s.runs.get(id).unwrap().status.clone()
}

#[tokio::test]
async fn a_new_federation_queues_the_federation_files_run_and_a_restart_resumes_it() {
    let mut f = Fixture::serving(2);
    let mut s = f.start().await.unwrap();
    assert_eq!(status(&s, 1), RunStatus::Queued);
    assert_eq!(s.runs.get(1).unwrap().submitted_by, jobs::FEDERATION_FILE);
    assert!(matches!(s.phase, Phase::Idle));
    assert_eq!(s.phase.run_state(&s.hold, false), RunState::Idle);
    assert!(jobs::start_next(&mut s).unwrap());
    assert_eq!(status(&s, 1), RunStatus::Running { first_round: 1 });
    assert!(matches!(s.phase, Phase::Starting { .. }));
    assert_eq!(s.run.until(), 2);
    assert_eq!(f.journal(), ["run_submitted", "run_started"]);
    scaling::on_done(&mut s, scaling_outcome());
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    drop(s);
    // Killed here: the restart resumes run 1, with what it committed, and queues nothing new.
    let s = f.start().await.unwrap();
    assert_eq!(status(&s, 1), RunStatus::Running { first_round: 1 });
    assert_eq!(s.run.id(), Some(1));
    assert_eq!((s.run.committed, s.run.next_round), (1, 2));
    assert_eq!(s.runs.all().count(), 1);
    assert!(!matches!(s.phase, Phase::Idle));
}

#[tokio::test]
async fn a_run_ends_the_coordinator_idles_and_the_next_run_takes_the_next_rounds() {
    let mut f = Fixture::serving(1);
    let mut s = running(&mut f).await;
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    let me: ActorRef<CoordinatorMessage> = nobody().await;
    // The run's one round is done: what the scheduler does next.
    assert!(s.run.next_round > s.run.until());
    lifecycle::end_run(&mut s, &me);
    assert!(!s.phase.finished(), "a serving coordinator does not stop");
    assert!(matches!(s.phase, Phase::Idle));
    assert_eq!(
        status(&s, 1),
        RunStatus::Finished {
            first_round: 1,
            committed: 1
        }
    );
    assert_eq!(f.events("run_ended")[0]["outcome"], "finished");
    // The version and its round record name the run that made them.
    assert_eq!(meta(&s, 1).and_then(|m| m.run), Some(1));
    assert_eq!(f.events("round_committed")[0]["run"], 1);
    assert!(!jobs::start_next(&mut s).unwrap(), "nothing queued: idle");
    let answer = control(&mut s, submit(3)).unwrap();
    assert!(answer.starts_with("run 2 queued"), "{answer}");
    assert!(jobs::start_next(&mut s).unwrap());
    assert_eq!(status(&s, 2), RunStatus::Running { first_round: 2 });
    assert_eq!(s.run.until(), 4);
    assert_eq!(s.run.committed, 0);
    assert!(matches!(s.phase, Phase::Ready));
}

#[tokio::test]
async fn cancelling_the_running_run_lets_the_round_in_flight_finish() {
    let mut f = Fixture::serving(5);
    let mut s = running(&mut f).await;
    control(&mut s, submit(2)).unwrap();
    let round = dispatched(&mut s);
    let answer = control(&mut s, cancel(1)).unwrap();
    assert!(answer.contains("when round 1 is over"), "{answer}");
    assert!(matches!(status(&s, 1), RunStatus::Cancelling { .. }));
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    assert_eq!(
        s.versions.model.version, 1,
        "the round in flight was judged"
    );
    let me: ActorRef<CoordinatorMessage> = nobody().await;
    lifecycle::end_run(&mut s, &me);
    assert_eq!(
        status(&s, 1),
        RunStatus::Cancelled {
            by: "alice".into(),
            reason: "wrong data".into(),
            committed: 1
        }
    );
    // The queued run starts next, and can be cancelled before it does.
    control(&mut s, submit(1)).unwrap();
    control(&mut s, cancel(3)).unwrap();
    assert!(jobs::start_next(&mut s).unwrap());
    assert_eq!(s.run.id(), Some(2));
    assert!(matches!(status(&s, 3), RunStatus::Cancelled { .. }));
    // Over is over; unknown is unknown.
    match control(&mut s, cancel(1)) {
        Err(ControlError::Conflict(m)) => assert!(m.contains("is cancelled"), "{m}"),
        other => panic!("{other:?}"),
    }
    match control(&mut s, cancel(9)) {
        Err(ControlError::NotFound(m)) => assert!(m.contains("no run 9"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(f.journal().contains(&"run_cancelled".to_string()));
}

#[tokio::test]
async fn a_coordinator_that_does_not_serve_refuses_runs_and_has_one() {
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    assert_eq!((s.run.id(), s.run.until()), (None, 10));
    match control(&mut s, submit(1)) {
        Err(ControlError::Conflict(m)) => assert!(m.contains("federation.serve"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(s.runs.is_empty());
}

#[tokio::test]
async fn an_idle_coordinator_refuses_a_round_by_hand_and_bad_plans() {
    let mut f = Fixture::serving(0);
    let mut s = f.start().await.unwrap();
    assert!(s.runs.is_empty(), "rounds = 0: no first run");
    control(&mut s, pause()).unwrap();
    match control(&mut s, ControlRequest::StartRound { by: "alice".into() }) {
        Err(ControlError::Conflict(m)) => assert!(m.contains("no training run is active"), "{m}"),
        other => panic!("{other:?}"),
    }
    for rounds in [0, crate::runs::MAX_RUN_ROUNDS + 1] {
        assert!(matches!(
            control(&mut s, submit(rounds)),
            Err(ControlError::Conflict(_))
        ));
    }
}

#[tokio::test]
async fn a_schedule_submits_when_due_never_two_at_once_and_catches_up_once() {
    let mut f = Fixture::serving(0);
    let mut s = f.start().await.unwrap();
    s.settings.schedule = Some(
        crate::retraining::RetrainSchedule::parse(&crate::retraining::ScheduleSection {
            every_secs: Some(60.0),
            cron: None,
            rounds: 2,
        })
        .unwrap(),
    );
    let since = 1_000_000;
    assert_eq!(
        jobs::submit_due(&mut s, since, since + 59_999).unwrap(),
        None
    );
    assert_eq!(
        jobs::submit_due(&mut s, since, since + 60_000).unwrap(),
        Some(1)
    );
    let r = s.runs.get(1).unwrap();
    assert_eq!(
        (r.submitted_by.as_str(), r.plan.rounds),
        ("federation schedule", 2)
    );
    // Still queued, then running: the next occurrence waits for it.
    assert_eq!(
        jobs::submit_due(&mut s, since, since + 500_000).unwrap(),
        None
    );
    jobs::start_next(&mut s).unwrap();
    assert_eq!(
        jobs::submit_due(&mut s, since, since + 500_000).unwrap(),
        None
    );
    jobs::close(&mut s, None).unwrap();
    // Over: one run for the missed occurrences, counted from the last submission.
    assert_eq!(
        jobs::submit_due(&mut s, since, since + 500_000).unwrap(),
        Some(2)
    );
    assert_eq!(
        jobs::submit_due(&mut s, since, since + 500_001).unwrap(),
        None
    );
    // A restart reads the last scheduled submission back from the journal.
    drop(s);
    let s = f.start().await.unwrap();
    assert_eq!(s.runs.last_by("federation schedule").map(|r| r.id), Some(2));
    assert!(s.runs.get(2).unwrap().submitted_ms > 0);
}

#[tokio::test]
async fn a_runs_own_settings_train_its_rounds_and_bad_ones_are_refused_by_name() {
    let mut f = Fixture::serving(1);
    let mut s = f.start().await.unwrap();
    let own = RunSettings {
        epochs: Some(3),
        learning_rate: Some(0.01),
        ..Default::default()
    };
    control(&mut s, with(2, own.clone())).unwrap();
    jobs::start_next(&mut s).unwrap();
    // Run 1 (the federation file's) trains with the file's plan.
    let file = s.run.training(&s.settings);
    assert_eq!((file.epochs, file.learning_rate), (1, 0.1));
    jobs::close(&mut s, None).unwrap();
    jobs::start_next(&mut s).unwrap();
    let t = s.run.training(&s.settings);
    assert_eq!((t.epochs, t.learning_rate, t.batch_size), (3, 0.01, 8));
    // The settings survive a restart.
    drop(s);
    let mut s = f.start().await.unwrap();
    assert_eq!(s.runs.get(2).unwrap().plan.settings, own);
    assert_eq!(s.run.training(&s.settings).epochs, 3);
    for (bad, key) in [
        (
            RunSettings {
                epochs: Some(0),
                ..Default::default()
            },
            "epochs = 0",
        ),
        (
            RunSettings {
                epochs: Some(1001),
                ..Default::default()
            },
            "epochs = 1001",
        ),
        (
            RunSettings {
                batch_size: Some(0),
                ..Default::default()
            },
            "batch_size = 0",
        ),
        (
            RunSettings {
                learning_rate: Some(f32::NAN),
                ..Default::default()
            },
            "learning_rate = NaN",
        ),
        (
            RunSettings {
                prox_mu: Some(-1.0),
                ..Default::default()
            },
            "prox_mu = -1",
        ),
    ] {
        match control(&mut s, with(1, bad)) {
            Err(ControlError::Conflict(m)) => assert!(m.contains(key), "{key}: {m}"),
            other => panic!("{key}: {other:?}"),
        }
    }
    s.settings.compare_local = true;
    match control(&mut s, with(20_000, RunSettings::default())) {
        Err(ControlError::Conflict(m)) => assert!(m.contains("compare_local"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_federation_that_trained_before_serving_waits_for_a_submission() {
    let mut f = Fixture::new();
    committed(&mut f).await;
    f.serve = Some(5);
    let s = f.start().await.unwrap();
    assert!(s.runs.is_empty(), "no run of `rounds` more by itself");
    assert!(matches!(s.phase, Phase::Idle));
}

#[tokio::test]
async fn cancelling_a_run_whose_candidate_awaits_approval_ends_it_and_keeps_the_candidate() {
    let mut f = Fixture::serving(3);
    let mut s = running(&mut f).await;
    s.run.round_policy = approval_policy();
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    assert!(s.phase.awaiting().is_some());
    let answer = control(&mut s, cancel(1)).unwrap();
    assert!(answer.contains("v1 still awaits"), "{answer}");
    assert!(matches!(status(&s, 1), RunStatus::Cancelled { .. }));
    assert!(s.run.job.is_none());
    assert_eq!(s.phase.awaiting().map(|a| a.meta.version), Some(1));
    // The decision is still taken, after the run.
    control(&mut s, decide(crate::decision::Kind::Approve, 1)).unwrap();
    assert_eq!(s.versions.model.version, 1);
}

#[tokio::test]
async fn a_round_asked_for_by_hand_does_not_outlive_its_run() {
    let mut f = Fixture::serving(3);
    let mut s = running(&mut f).await;
    control(&mut s, pause()).unwrap();
    control(&mut s, ControlRequest::StartRound { by: "alice".into() }).unwrap();
    assert!(s.hold.may_dispatch());
    control(&mut s, cancel(1)).unwrap();
    let me: ActorRef<CoordinatorMessage> = nobody().await;
    lifecycle::end_run(&mut s, &me);
    assert!(
        !s.hold.may_dispatch(),
        "the next run would start a round while paused"
    );
}

#[tokio::test]
async fn a_retried_submission_with_its_key_finds_its_run_even_after_a_restart() {
    let mut f = Fixture::serving(0);
    let mut s = f.start().await.unwrap();
    let keyed = |rounds: u64, key: &str| {
        ControlRequest::Run(RunRequest::Submit {
            plan: RunPlan {
                rounds,
                settings: RunSettings::default(),
                policy: Default::default(),
                key: Some(key.into()),
            },
            by: "token n8n".into(),
        })
    };
    let first = control(&mut s, keyed(3, "CHG-1234")).unwrap();
    assert!(first.starts_with("run 1 queued"), "{first}");
    let again = control(&mut s, keyed(3, "CHG-1234")).unwrap();
    assert!(
        again.starts_with("run 1 was submitted with this key"),
        "{again}"
    );
    assert_eq!(s.runs.all().count(), 1);
    match control(&mut s, keyed(4, "CHG-1234")) {
        Err(ControlError::Conflict(m)) => assert!(m.contains("was used for run 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    for bad in ["", "has space", &"k".repeat(129)] {
        assert!(matches!(
            control(&mut s, keyed(1, bad)),
            Err(ControlError::Conflict(_))
        ));
    }
    drop(s);
    let mut s = f.start().await.unwrap();
    let again = control(&mut s, keyed(3, "CHG-1234")).unwrap();
    assert!(again.starts_with("run 1 was submitted"), "{again}");
    assert_eq!(s.runs.all().count(), 1);
}

#[tokio::test]
async fn a_runs_own_policy_is_journaled_applies_to_its_rounds_alone_and_survives_a_restart() {
    let mut f = Fixture::serving(0);
    let mut s = f.start().await.unwrap();
    let strict = crate::runs::PolicyOverrides {
        require_approval: true,
        max_auc_drop: Some(0.01),
        max_silo_auc_drop: None,
    };
    let request = ControlRequest::Run(RunRequest::Submit {
        plan: RunPlan {
            rounds: 1,
            settings: RunSettings::default(),
            policy: strict.clone(),
            key: None,
        },
        by: "alice".into(),
    });
    control(&mut s, request).unwrap();
    let fed = fedsilo_policies::Policy::default();
    // Between runs: the federation's policy.
    assert_eq!(s.run.policy(&fed), fed);
    assert!(jobs::start_next(&mut s).unwrap());
    let judged = s.run.policy(&fed).validation.unwrap();
    assert_eq!(
        (judged.require_approval, judged.max_auc_drop),
        (true, Some(0.01))
    );
    // An out-of-range value is refused by name, before anything is journaled.
    let bad = ControlRequest::Run(RunRequest::Submit {
        plan: RunPlan {
            rounds: 1,
            settings: RunSettings::default(),
            policy: crate::runs::PolicyOverrides {
                max_silo_auc_drop: Some(2.0),
                ..Default::default()
            },
            key: None,
        },
        by: "alice".into(),
    });
    let Err(ControlError::Conflict(why)) = control(&mut s, bad) else {
        panic!("an AUC drop of 2 was queued");
    };
    assert!(why.contains("max_silo_auc_drop = 2"), "{why}");
    drop(s);
    // Restarted: the running run resumes with its own policy.
    let s = f.start().await.unwrap();
    let judged = s.run.policy(&fed).validation.unwrap();
    assert_eq!(
        (judged.require_approval, judged.max_auc_drop),
        (true, Some(0.01))
    );
    assert_eq!(s.runs.get(1).unwrap().plan.policy, strict);
}
