//! Deployment orders as the state machine takes them (no processes, no sockets): an
//! operator's, the policy's `auto_deploy` on a commit and on an approval, a rollback's, and
//! their survival across a restart.

use fedsilo_policies::Policy;

use super::fixture::*;
use super::governance::control;
use super::messages::{ControlError, ControlRequest};
use super::outcome::on_round;
use crate::decision::Kind;
use crate::deploy::Target;

fn deploy(version: u64, target: Target) -> ControlRequest {
    ControlRequest::Deploy {
        version,
        target,
        by: "alice".into(),
        reason: "CHG-1".into(),
    }
}

/// The book's orders as (version, who, target).
fn orders(s: &super::state::CoordinatorState) -> Vec<(u64, String, Target)> {
    s.deployments
        .book
        .all()
        .iter()
        .map(|d| (d.version, d.by.clone(), d.target.clone()))
        .collect()
}

fn auto_policy(approval: bool) -> Policy {
    Policy::from_toml_str(
        &format!(
            "[participation]\nmin_silos = 2\nquorum = 2\n[validation]\nrequire_approval = {approval}\n[deployment]\nauto_deploy = true\n"
        ),
        "test",
    )
    .unwrap()
}

#[tokio::test]
async fn an_order_is_journaled_and_the_book_is_rebuilt_after_a_restart() {
    let mut f = Fixture::new();
    let mut s = committed(&mut f).await;
    let answer = control(&mut s, deploy(1, Target::All)).unwrap();
    assert!(
        answer.starts_with("deployment 1: v1 to every silo"),
        "{answer}"
    );
    let silos = Target::Silos {
        silos: vec!["west".into()],
    };
    let answer = control(&mut s, deploy(0, silos.clone())).unwrap();
    assert!(answer.starts_with("deployment 2: v0 to west"), "{answer}");
    assert_eq!(
        f.journal(),
        ["committed", "committed", "deployed", "deployed"]
    );
    assert_eq!(f.events("deployment_ordered").len(), 2);
    let book = s.deployments.book.clone();
    drop(s);
    let s = f.start().await.unwrap();
    assert_eq!(s.deployments.book, book);
    assert_eq!(
        s.deployments.book.desired("west", "eu").map(|d| d.version),
        Some(0)
    );
    assert_eq!(
        s.deployments.book.desired("east", "eu").map(|d| d.version),
        Some(1)
    );
}

#[tokio::test]
async fn a_version_never_committed_or_a_target_that_cannot_exist_is_refused() {
    let mut f = Fixture::new();
    let mut s = committed(&mut f).await;
    let refused = |s: &mut super::state::CoordinatorState, r| match control(s, r) {
        Err(ControlError::Conflict(why)) => why,
        other => panic!("not refused: {other:?}"),
    };
    let why = refused(&mut s, deploy(7, Target::All));
    assert!(why.contains("v7 was never committed"), "{why}");
    let why = refused(&mut s, deploy(1, Target::Silos { silos: vec![] }));
    assert!(why.contains("at least one silo"), "{why}");
    let bad = Target::Silos {
        silos: vec!["../etc".into()],
    };
    let why = refused(&mut s, deploy(1, bad));
    assert!(why.contains("../etc"), "{why}");
    s.run.round_policy = Policy::from_toml_str("regions = [\"eu\", \"us\"]\n", "test").unwrap();
    let why = refused(
        &mut s,
        deploy(
            1,
            Target::Region {
                region: "apac".into(),
            },
        ),
    );
    assert!(why.contains("not one of the policy's regions"), "{why}");
    // A modified checkpoint is refused before anything is journaled.
    let path = s.ledger.store.model_path(1);
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, bytes).unwrap();
    let why = refused(&mut s, deploy(1, Target::All));
    assert!(why.contains("the file was modified"), "{why}");
    assert_eq!(f.journal(), ["committed", "committed"]);
    assert!(s.deployments.book.all().is_empty());
}

#[tokio::test]
async fn auto_deploy_orders_every_version_that_becomes_current() {
    // On a commit.
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    s.run.round_policy = auto_policy(false);
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    assert_eq!(orders(&s), [(1, "policy auto_deploy".into(), Target::All)]);
    // A rejected candidate is not deployed.
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, Some("worse"));
    on_round(&mut s, outcome).unwrap();
    assert_eq!(s.deployments.book.all().len(), 1);

    // On an approval, not before.
    let mut f = Fixture::new();
    let mut s = ready(&mut f).await;
    s.run.round_policy = auto_policy(true);
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    assert!(s.deployments.book.all().is_empty());
    control(&mut s, decide(Kind::Approve, 1)).unwrap();
    assert_eq!(orders(&s), [(1, "policy auto_deploy".into(), Target::All)]);
}

#[tokio::test]
async fn a_rollback_orders_the_version_rolled_back_to_where_a_later_one_was_deployed() {
    let mut f = Fixture::new();
    let mut s = committed(&mut f).await;
    // Nothing deployed: a rollback orders nothing.
    control(&mut s, decide(Kind::Rollback, 0)).unwrap();
    assert!(s.deployments.book.all().is_empty());
    let round = dispatched(&mut s);
    let outcome = candidate(&s, round, 0.5, None);
    on_round(&mut s, outcome).unwrap();
    let v = s.versions.model.version;
    let eu = Target::Region {
        region: "eu".into(),
    };
    control(&mut s, deploy(0, Target::All)).unwrap();
    control(&mut s, deploy(v, eu.clone())).unwrap();
    control(&mut s, decide(Kind::Rollback, 0)).unwrap();
    let last = orders(&s).pop().unwrap();
    assert_eq!(last, (0, "alice".into(), eu));
    assert_eq!(s.deployments.book.all().len(), 3);
    let reason = &s.deployments.book.all()[2].reason;
    assert!(reason.starts_with("rollback to v0"), "{reason}");
}
