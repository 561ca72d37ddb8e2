//! The Policy actor: hosts a [`Policy`] and answers with the verdicts of its pure rules
//! (`fedsilo_policies`), logging each one. It decides nothing the rules do not say.
//!
//! A policy change takes effect at a round boundary, never mid-round: the coordinator asks
//! [`PolicyMessage::Refresh`] before forming each cohort, the actor re-reads its file if it
//! changed, and each round runs on the snapshot it took at its start. An invalid new file is
//! refused with its error and the current policy stays.

use fedsilo_policies::participation::{self, Candidate, Selection};
use fedsilo_policies::{Policy, Verdict};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use crate::compatibility::{self, Configured};

/// Messages of the Policy actor.
#[derive(Debug)]
pub enum PolicyMessage {
    /// Choose a round's cohort among the candidates.
    SelectCohort {
        /// Round number (for the log).
        round: u64,
        /// The silos the coordinator knows.
        candidates: Vec<Candidate>,
        /// The selection with reasons.
        reply: RpcReplyPort<Selection>,
    },
    /// Whether `received` updates out of `selected` may be committed.
    Quorum {
        /// Round number (for the log).
        round: u64,
        /// Updates admitted.
        received: usize,
        /// Cohort size.
        selected: usize,
        /// The verdict.
        reply: RpcReplyPort<Verdict>,
    },
    /// A copy of the policy in force (timings, thresholds).
    Snapshot(RpcReplyPort<Policy>),
    /// Re-read the policy file if it changed since it was loaded.
    Refresh(RpcReplyPort<Reload>),
}

/// What [`PolicyMessage::Refresh`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Reload {
    /// No file, or the file is unchanged.
    Unchanged,
    /// A new, valid policy is in force (its digest).
    Changed(String),
    /// The file changed but is invalid; the previous policy stays.
    Refused(String),
}

/// Where the policy came from, so it can be re-read.
#[derive(Debug, Clone)]
pub struct PolicySource {
    /// The policy file, if any.
    pub path: Option<std::path::PathBuf>,
    /// The federation's configuration: a new policy it cannot carry is refused
    /// ([`crate::compatibility`]).
    pub configured: Option<Configured>,
}

/// The actor's state.
#[derive(Debug)]
pub struct PolicyState {
    policy: Policy,
    source: PolicySource,
    last_text_digest: String,
}

impl ractor::Message for PolicyMessage {}

/// The Policy actor.
#[derive(Debug)]
pub struct PolicyActor;

impl Actor for PolicyActor {
    type Msg = PolicyMessage;
    type State = PolicyState;
    type Arguments = (Policy, PolicySource);

    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        (policy, source): (Policy, PolicySource),
    ) -> Result<PolicyState, ActorProcessingErr> {
        let last_text_digest = policy.digest.clone();
        Ok(PolicyState {
            policy,
            source,
            last_text_digest,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut PolicyState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            PolicyMessage::SelectCohort {
                round,
                candidates,
                reply,
            } => {
                let s = participation::select_cohort(&state.policy, &candidates, round);
                tracing::info!(round, allow = s.verdict.allow, reasons = ?s.verdict.reasons, excluded = ?s.excluded, "policy: cohort");
                let _ = reply.send(s);
            }
            PolicyMessage::Quorum {
                round,
                received,
                selected,
                reply,
            } => {
                let v = participation::quorum_verdict(&state.policy, received, selected);
                tracing::info!(round, allow = v.allow, reasons = ?v.reasons, "policy: quorum");
                let _ = reply.send(v);
            }
            PolicyMessage::Snapshot(reply) => {
                let _ = reply.send(state.policy.clone());
            }
            PolicyMessage::Refresh(reply) => {
                let _ = reply.send(refresh(state));
            }
        }
        Ok(())
    }
}

fn refresh(state: &mut PolicyState) -> Reload {
    let Some(path) = &state.source.path else {
        return Reload::Unchanged;
    };
    let loaded = Policy::load(path).map_err(|e| e.to_string()).and_then(|p| {
        let checked = match &state.source.configured {
            Some(c) => compatibility::check(c, &p),
            None => Ok(()),
        };
        checked
            .and_then(|()| compatibility::check_change(&state.policy, &p))
            .map(|()| p)
            .map_err(|e| format!("{}: {e}", path.display()))
    });
    match loaded {
        Ok(p) if p.digest == state.policy.digest => Reload::Unchanged,
        Ok(p) => {
            tracing::info!(
                digest = p.digest,
                "policy changed; in force from this round"
            );
            state.last_text_digest = p.digest.clone();
            let d = p.digest.clone();
            state.policy = p;
            Reload::Changed(d)
        }
        Err(e) => {
            // Report a broken file once per distinct error, not every round.
            let seen = format!("error:{e}");
            if seen == state.last_text_digest {
                Reload::Unchanged
            } else {
                state.last_text_digest = seen;
                Reload::Refused(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actors::ask;
    use crate::compression::Compression;
    use crate::kernels::{Aggregation, Kernel};

    fn configured(aggregation: Aggregation) -> Option<Configured> {
        Some(Configured {
            aggregation,
            lora: false,
            compression: Compression::None,
        })
    }

    #[tokio::test]
    async fn a_new_policy_whose_privacy_cannot_apply_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let plain = "[participation]\nmin_silos = 2\nquorum = 2\n";
        std::fs::write(&path, plain).unwrap();
        let policy = Policy::load(&path).unwrap();
        let aggregation = Aggregation {
            kernel: Kernel::TrimmedMean { trim: 0.2 },
            ..Aggregation::default()
        };
        let (actor, handle) = Actor::spawn(
            None,
            PolicyActor,
            (
                policy.clone(),
                PolicySource {
                    path: Some(path.clone()),
                    configured: configured(aggregation),
                },
            ),
        )
        .await
        .unwrap();
        let with_dp = format!(
            "{plain}[privacy]\nmode = \"central\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\n"
        );
        std::fs::write(&path, with_dp).unwrap();
        match ask(&actor, "policy", PolicyMessage::Refresh).await.unwrap() {
            Reload::Refused(e) => {
                assert!(
                    e.contains("policy.toml") && e.contains("kernel = \"mean\""),
                    "{e}"
                )
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        // The policy in force is the old one.
        let now = ask(&actor, "policy", PolicyMessage::Snapshot)
            .await
            .unwrap();
        assert_eq!(now.digest, policy.digest);
        // Once under DP, a federation keeps it: removing [privacy] is refused.
        let dp = format!(
            "{plain}[privacy]\nmode = \"central\"\nclip_norm = 1.0\nnoise_multiplier = 1.0\n"
        );
        std::fs::write(&path, &dp).unwrap();
        let (actor2, handle2) = Actor::spawn(
            None,
            PolicyActor,
            (
                Policy::load(&path).unwrap(),
                PolicySource {
                    path: Some(path.clone()),
                    configured: configured(Aggregation::default()),
                },
            ),
        )
        .await
        .unwrap();
        std::fs::write(&path, plain).unwrap();
        match ask(&actor2, "policy", PolicyMessage::Refresh)
            .await
            .unwrap()
        {
            Reload::Refused(e) => assert!(e.contains("removes [privacy]"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        std::fs::write(&path, dp.replace("central", "distributed")).unwrap();
        match ask(&actor2, "policy", PolicyMessage::Refresh)
            .await
            .unwrap()
        {
            Reload::Refused(e) => assert!(e.contains("changes privacy.mode"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        actor2.stop(None);
        handle2.await.unwrap();
        actor.stop(None);
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn a_reload_cannot_add_a_robust_kernel_to_or_remove_secure_aggregation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let plain = "[participation]\nmin_silos = 2\nquorum = 2\n";
        let secure = format!("{plain}[secure_aggregation]\n");
        let spawn = |text: &str, kernel: Kernel| {
            std::fs::write(&path, text).unwrap();
            let policy = Policy::load(&path).unwrap();
            let source = PolicySource {
                path: Some(path.clone()),
                configured: configured(Aggregation {
                    kernel,
                    ..Aggregation::default()
                }),
            };
            Actor::spawn(None, PolicyActor, (policy, source))
        };
        // A federation with a robust kernel cannot switch secure aggregation on.
        let (actor, handle) = spawn(plain, Kernel::Median).await.unwrap();
        std::fs::write(&path, &secure).unwrap();
        match ask(&actor, "policy", PolicyMessage::Refresh).await.unwrap() {
            Reload::Refused(e) => assert!(e.contains("`median`"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        actor.stop(None);
        handle.await.unwrap();
        // A securely aggregated one cannot switch it off.
        let (actor, handle) = spawn(&secure, Kernel::Mean).await.unwrap();
        std::fs::write(&path, plain).unwrap();
        match ask(&actor, "policy", PolicyMessage::Refresh).await.unwrap() {
            Reload::Refused(e) => assert!(e.contains("removes [secure_aggregation]"), "{e}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        actor.stop(None);
        handle.await.unwrap();
    }

    /// The rules the start checks hold at every reload too: a new policy the configuration
    /// cannot carry is refused and the one in force stays.
    #[tokio::test]
    async fn a_reload_is_held_to_every_rule_the_start_checks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("policy.toml");
        let plain = "[participation]\nmin_silos = 2\nquorum = 2\n";
        let residency = format!(
            "regions = [\"eu\", \"us\"]\n{plain}[residency.allowed]\neu = [\"eu\"]\nus = [\"us\"]\n"
        );
        let cases = [
            (
                Configured {
                    aggregation: Aggregation::default(),
                    lora: false,
                    compression: Compression::TopK { fraction: 0.1 },
                },
                format!("{plain}[secure_aggregation]\n"),
                "cannot apply under [secure_aggregation]",
            ),
            (
                Configured {
                    aggregation: Aggregation::default(),
                    lora: true,
                    compression: Compression::None,
                },
                residency.clone(),
                "[plan.lora] with [residency]",
            ),
            (
                Configured {
                    aggregation: Aggregation {
                        kernel: Kernel::Custom { name: "mine" },
                        ..Aggregation::default()
                    },
                    lora: false,
                    compression: Compression::None,
                },
                residency,
                "custom kernel `mine` with [residency]",
            ),
        ];
        for (configured, new, expect) in cases {
            std::fs::write(&path, plain).unwrap();
            let policy = Policy::load(&path).unwrap();
            let source = PolicySource {
                path: Some(path.clone()),
                configured: Some(configured),
            };
            let (actor, handle) = Actor::spawn(None, PolicyActor, (policy.clone(), source))
                .await
                .unwrap();
            std::fs::write(&path, new).unwrap();
            match ask(&actor, "policy", PolicyMessage::Refresh).await.unwrap() {
                Reload::Refused(e) => assert!(e.contains(expect), "{e}"),
                other => panic!("{expect}: expected a refusal, got {other:?}"),
            }
            let now = ask(&actor, "policy", PolicyMessage::Snapshot)
                .await
                .unwrap();
            assert_eq!(now.digest, policy.digest, "{expect}: the old policy stays");
            actor.stop(None);
            handle.await.unwrap();
        }
    }
}
