//! Early stopping and the best version of a run (`[validation] patience`, `keep_best`): after
//! each commit the run's weighted held-out scores are judged by the policy's rules
//! ([`fedsilo_policies::validation::ValidationRules::early_stop`]); a run whose validation
//! stopped improving ends at the next step, and at the end of a run the best version by
//! federated validation can be made current instead of the last — a rollback by the rule,
//! journalled like an operator's, so the audit trail says why the deployed model is not the
//! newest.

use super::state::CoordinatorState;
use crate::events::Event;

/// Who a rollback by `keep_best` is recorded as.
pub const KEEP_BEST: &str = "validation.keep_best";

/// After round `round` committed: whether validation stopped improving, said once.
pub fn after_commit(state: &mut CoordinatorState, round: u64) {
    let Some(rules) = state.run.round_policy.validation.as_ref() else {
        return;
    };
    let run = state.run.scores();
    let scores: Vec<f64> = run.iter().map(|s| s.1).collect();
    if let (Some(stop), false) = (rules.early_stop(&scores), state.run.stopped_early) {
        let (best_version, best_score) = run[stop.best];
        state.run.stopped_early = true;
        state.ledger.events.emit(Event::EarlyStopped {
            round,
            best_version,
            best_score,
            since: stop.since,
        });
    }
}

/// At the end of a run: with `keep_best`, the run's best version becomes current if it is not.
pub fn keep_best(state: &mut CoordinatorState) -> crate::Result<()> {
    let Some(rules) = state.run.round_policy.validation.as_ref() else {
        return Ok(());
    };
    if !rules.keep_best {
        return Ok(());
    }
    let run = state.run.scores();
    let scores: Vec<f64> = run.iter().map(|s| s.1).collect();
    let Some(best) = rules.best(&scores) else {
        return Ok(());
    };
    let (version, score) = run[best];
    let current = state.versions.model.version;
    if version == current {
        return Ok(());
    }
    let last = run
        .iter()
        .find(|s| s.0 == current)
        .map_or(String::new(), |s| format!("; v{current}: {:.4}", s.1));
    let reason = format!(
        "v{version} has this run's best example-weighted held-out score ({score:.4}{last})"
    );
    super::governance::make_earlier_current(state, version, KEEP_BEST, &reason)
}

#[cfg(test)]
mod tests {
    use fedsilo_policies::Policy;
    use ractor::ActorRef;

    use super::super::fixture::*;
    use super::super::lifecycle;
    use super::super::messages::CoordinatorMessage;
    use super::super::outcome::on_round;
    use super::super::state::CoordinatorState;
    use crate::round::RoundOutcome;

    fn rules(toml: &str) -> Policy {
        Policy::from_toml_str(
            &format!("[participation]\nmin_silos = 2\nquorum = 2\n\n[validation]\n{toml}"),
            "test",
        )
        .unwrap()
    }

    /// Commits one round whose version scores `auc` at every silo.
    fn commit(s: &mut CoordinatorState, auc: f64) {
        let round = dispatched(s);
        let mut outcome = candidate(s, round, 0.1, None);
        if let RoundOutcome::Candidate { summary, .. } = &mut outcome {
            summary.eval = metrics(auc);
        }
        on_round(s, outcome).unwrap();
    }

    #[tokio::test]
    async fn a_run_stops_once_validation_stops_improving_and_keeps_its_best_version() {
        let mut f = Fixture::new();
        let mut s = ready(&mut f).await;
        s.run.round_policy = rules("patience = 2\nkeep_best = true\n");
        for auc in [0.80, 0.85, 0.84] {
            commit(&mut s, auc);
            assert!(
                !s.run.stopped_early,
                "one version since the best is within patience"
            );
        }
        commit(&mut s, 0.83);
        assert!(s.run.stopped_early, "two versions without a better score");
        let stopped = f.events("early_stopped");
        assert_eq!(stopped.len(), 1);
        assert_eq!(
            (
                stopped[0]["best_version"].as_u64(),
                stopped[0]["since"].as_u64()
            ),
            (Some(2), Some(2))
        );
        assert_eq!(
            s.versions.model.version, 4,
            "the last version is current until the run ends"
        );
        // The local-only baseline trains as many rounds as the run ran, not as it asked for.
        assert_eq!(s.run.rounds_run(), Some(4));
        assert!(s.run.until() > 4);
        let me: ActorRef<CoordinatorMessage> = nobody().await;
        lifecycle::end_run(&mut s, &me);
        // The best version is current, on disk and in the journal, by the rule.
        assert_eq!((s.versions.model.version, f.current()), (2, Some(2)));
        assert_eq!(f.journal().last().map(String::as_str), Some("rolled_back"));
        let back = f.events("rolled_back");
        assert_eq!(
            (back[0]["to"].as_u64(), back[0]["by"].as_str()),
            (Some(2), Some(super::KEEP_BEST))
        );
        assert_eq!(
            s.run.last_eval,
            metrics(0.85),
            "the comparison's federated column is v2's"
        );
    }

    #[tokio::test]
    async fn without_the_rules_a_run_goes_on_and_its_last_version_stays() {
        let mut f = Fixture::new();
        let mut s = ready(&mut f).await;
        s.run.round_policy = rules("max_auc_drop = 0.5\n");
        for auc in [0.85, 0.80, 0.79, 0.78] {
            commit(&mut s, auc);
        }
        assert!(!s.run.stopped_early && f.events("early_stopped").is_empty());
        let me: ActorRef<CoordinatorMessage> = nobody().await;
        lifecycle::end_run(&mut s, &me);
        assert_eq!((s.versions.model.version, f.current()), (4, Some(4)));
        assert!(f.events("rolled_back").is_empty());
        // keep_best alone, with the last version the best: nothing to roll back.
        let mut f = Fixture::new();
        let mut s = ready(&mut f).await;
        s.run.round_policy = rules("keep_best = true\n");
        for auc in [0.80, 0.81] {
            commit(&mut s, auc);
        }
        lifecycle::end_run(&mut s, &me);
        assert_eq!(f.current(), Some(2));
        assert!(f.events("rolled_back").is_empty());
    }

    #[tokio::test]
    async fn an_operators_rollback_is_not_undone_by_keep_best_and_a_restart_keeps_the_count() {
        use super::super::governance::control;
        use crate::decision::Kind;
        let mut f = Fixture::new();
        let mut s = ready(&mut f).await;
        s.run.round_policy = rules("patience = 3\nkeep_best = true\n");
        for auc in [0.80, 0.90, 0.85] {
            commit(&mut s, auc);
        }
        // v2 scored best, but the operator rolled back to v1 (v2 misbehaved in the field).
        control(&mut s, decide(Kind::Rollback, 1)).unwrap();
        assert_eq!(
            s.run.scores().len(),
            1,
            "v2 and v3 are no longer the run's line"
        );
        commit(&mut s, 0.82);
        let me: ActorRef<CoordinatorMessage> = nobody().await;
        // The run's line is v1 (0.80), v4 (0.82): its best is the last; v2 stays retired.
        assert_eq!(
            s.run.scores().iter().map(|v| v.0).collect::<Vec<_>>(),
            [1, 4]
        );
        drop(s);
        // A restart rebuilds the line from the registry, following the current version's
        // parents within the run.
        let mut s = f.start().await.unwrap();
        s.run.round_policy = rules("patience = 3\nkeep_best = true\n");
        assert_eq!(
            s.run.scores().iter().map(|v| v.0).collect::<Vec<_>>(),
            [1, 4]
        );
        lifecycle::end_run(&mut s, &me);
        assert_eq!(f.current(), Some(4));
    }

    #[tokio::test]
    async fn a_silo_that_skips_an_evaluation_cannot_make_that_version_the_best() {
        let mut f = Fixture::new();
        let mut s = ready(&mut f).await;
        // Two silos score v1; only the high-scoring one scores v2 (the other skipped it).
        let round = dispatched(&mut s);
        let mut outcome = candidate(&s, round, 0.1, None);
        let both = |a: f64, b: f64| {
            let mut m = metrics(a);
            let mut other = m.values().next().unwrap().clone();
            other.auc = Some(b);
            m.insert("z-low".into(), other);
            m
        };
        if let RoundOutcome::Candidate { summary, .. } = &mut outcome {
            summary.eval = both(0.90, 0.60);
        }
        on_round(&mut s, outcome).unwrap();
        commit(&mut s, 0.85);
        // Over the silos that scored both, v1 (0.90) beats v2 (0.85); v2's own weighted
        // score (0.85) is above v1's (0.75), which alone would have made it the best.
        let scores = s.run.scores();
        assert_eq!(scores.len(), 2);
        assert!(scores[0].1 > scores[1].1, "{scores:?}");
    }
}
