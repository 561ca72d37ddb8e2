//! Deployment, the coordinator's side ([`crate::deploy`]): orders — an operator's, the
//! policy's `auto_deploy`, a rollback's — checked, journaled and kept in the book; and each
//! silo sent the version due to it whenever a heartbeat shows it holds another.
//!
//! Delivery happens only while no round is in flight (so that a deployment's transfer never
//! competes with a round's for the silo's attention) and one silo at a time per silo: a
//! [`deliver`] task sends the signed note, the values if the silo lacks them, and the note
//! again, then reports back with [`CoordinatorMessage::Delivered`]. A silo that refuses an
//! order (no deployment directory, another model, a full disk) is asked again for it only a
//! minute later; one cut off in
//! transit is asked again at the next heartbeat; an offline silo gets the version due to it
//! when it returns, because its heartbeat tells.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;

use super::messages::{ControlError, CoordinatorMessage};
use super::phase::Phase;
use super::state::CoordinatorState;
use crate::audit::entry::now_ms;
use crate::audit::Record;
use crate::bulk::route::{put_model, Route};
use crate::bulk::BulkLinks;
use crate::deploy::{Deployment, DeploymentBook, DeploymentNote, SignedNote, Target};
use crate::events::Event;
use crate::identity::validate_name;
use crate::model::Digest;
use crate::protocol::trainer_message::call_bytes;
use crate::protocol::{decode, encode, ModelRef, Request, Response, TrainerMessage};
use crate::tls::NodeCredentials;

/// The deployments: the book of orders, the key notes are signed with, and the note and values
/// of the order being delivered (read and signed once, not for each silo).
pub struct Deployments {
    /// Every order.
    pub book: DeploymentBook,
    /// The coordinator's certificate and key.
    signer: NodeCredentials,
    /// The last order prepared for delivery.
    prepared: Option<Arc<Prepared>>,
    /// The last order that could not be prepared (reported once, not at every heartbeat).
    unprepared: Option<u64>,
}

/// An order ready to deliver.
struct Prepared {
    id: u64,
    note: SignedNote,
    model: ModelRef,
    values: Arc<Vec<f32>>,
}

impl Deployments {
    /// The deployments of the journal's `book`, signed with `signer`'s key.
    pub fn new(book: DeploymentBook, signer: NodeCredentials) -> Self {
        Deployments {
            book,
            signer,
            prepared: None,
            unprepared: None,
        }
    }
}

/// How long a silo that refused an order is left alone before it is asked again.
const ASK_AGAIN_AFTER: Duration = Duration::from_secs(60);

/// How a delivery ended.
#[derive(Debug)]
pub enum Delivery {
    /// The silo has it on disk.
    Done(ModelRef),
    /// The silo refused it, with its reason: not asked again for this order.
    Refused(String),
    /// The session failed or timed out: asked again at the next heartbeat.
    Transit(String),
}

/// Orders `version` deployed to `target` (checked, journaled, in the book). Returns the
/// order's id.
pub fn order(
    state: &mut CoordinatorState,
    version: u64,
    target: Target,
    by: &str,
    reason: &str,
) -> Result<u64, ControlError> {
    check_target(state, &target)?;
    if !state.ledger.committed_sha.contains_key(&version) {
        return Err(ControlError::Conflict(format!(
            "v{version} was never committed: only a committed (or approved) version can be deployed (`fedsilo models list` shows them)"
        )));
    }
    let ckpt = state
        .ledger
        .load_committed(version)
        .map_err(|e| ControlError::Conflict(format!("v{version} cannot be deployed: {e}")))?;
    let digest = Digest::of_f32(&ckpt.params).hex();
    let id = state.deployments.book.next_id();
    let (_, at_ms) = state
        .ledger
        .journal
        .record_synced_at(Record::Deployed {
            deployment: id,
            version,
            digest: digest.clone(),
            target: target.clone(),
            by: by.to_string(),
            reason: reason.to_string(),
        })
        .map_err(|e| ControlError::Failed(format!("cannot record it in the audit journal: {e}")))?;
    state.ledger.events.emit(Event::DeploymentOrdered {
        deployment: id,
        version,
        target: target.describe(),
        by: by.to_string(),
    });
    let d = Deployment {
        id,
        version,
        digest,
        target,
        by: by.to_string(),
        reason: reason.to_string(),
        at_ms,
    };
    state.deployments.book.record(d.clone());
    // Signed now, from the checkpoint just read: deliveries need not read it again.
    if let Err(e) = seal(state, d, ckpt) {
        tracing::warn!(deployment = id, "cannot sign the deployment yet: {e}");
    }
    Ok(id)
}

/// Whether `target` names silos that can exist: valid names, a region of the policy's.
fn check_target(state: &CoordinatorState, target: &Target) -> Result<(), ControlError> {
    let bad = |m: String| ControlError::Conflict(m);
    match target {
        Target::All => Ok(()),
        Target::Silos { silos } if silos.is_empty() => {
            Err(bad("name at least one silo to deploy to".into()))
        }
        Target::Silos { silos } => {
            for s in silos {
                validate_name("silo", s).map_err(|e| bad(e.to_string()))?;
            }
            Ok(())
        }
        Target::Region { region } => {
            validate_name("region", region).map_err(|e| bad(e.to_string()))?;
            let regions = &state.run.round_policy.regions;
            if !regions.is_empty() && !regions.contains(region) {
                return Err(bad(format!(
                    "region {region} is not one of the policy's regions ({})",
                    regions.join(", ")
                )));
            }
            Ok(())
        }
    }
}

/// After `version` became current by a commit or an approval: deployed to every silo if the
/// policy says `auto_deploy`.
pub fn on_current(state: &mut CoordinatorState, version: u64) -> crate::Result<()> {
    let auto = fedsilo_policies::deployment::DeploymentRules::auto(
        state.run.round_policy.deployment.as_ref(),
    );
    if !auto {
        return Ok(());
    }
    let reason = format!("v{version} became current");
    order_or_fail(state, version, Target::All, "policy auto_deploy", &reason)
}

/// After a rollback to `to`: `to` deployed wherever a later version is in force.
pub fn on_rollback(
    state: &mut CoordinatorState,
    to: u64,
    by: &str,
    why: &str,
) -> crate::Result<()> {
    let reason = format!("rollback to v{to}: {why}");
    for target in state.deployments.book.after_rollback(to) {
        order_or_fail(state, to, target, by, &reason)?;
    }
    Ok(())
}

/// An order the coordinator gives itself; a journal failure is the caller's to stop on.
fn order_or_fail(
    state: &mut CoordinatorState,
    version: u64,
    target: Target,
    by: &str,
    reason: &str,
) -> crate::Result<()> {
    match order(state, version, target, by, reason) {
        Ok(_) => Ok(()),
        Err(ControlError::Failed(m)) => Err(crate::Error::Config {
            origin: "deployment".into(),
            message: m,
        }),
        Err(e) => {
            tracing::warn!("v{version} not deployed: {e}");
            Ok(())
        }
    }
}

/// Whether deliveries may start now: not while a round or the comparison transfers models,
/// nor after the end.
fn may_deliver(phase: &Phase) -> bool {
    !matches!(
        phase,
        Phase::Round { .. } | Phase::Comparing | Phase::Finished { .. }
    )
}

/// Starts a delivery to every silo whose heartbeat shows another version than the one due to
/// it (and that did not refuse that order).
pub fn deliver_due(state: &mut CoordinatorState, myself: &ActorRef<CoordinatorMessage>) {
    if !may_deliver(&state.phase) || state.deployments.book.all().is_empty() {
        return;
    }
    let timeout = state.settings.heartbeat_timeout * 4;
    let chunk = state.settings.chunk;
    let due: Vec<(String, u64)> = state
        .members
        .silos
        .iter()
        .filter(|(_, e)| {
            e.schema == super::membership::SchemaCheck::Passed
                && e.healthy
                && e.blocked.is_none()
                && !e.deploying
        })
        .filter_map(|(name, e)| {
            let d = state.deployments.book.desired(name, &e.region)?;
            let holds = e
                .deployed
                .is_some_and(|m| m.version == d.version && m.digest.hex() == d.digest);
            let refused = e
                .deploy_refused
                .as_ref()
                .is_some_and(|(id, _, at)| *id == d.id && at.elapsed() < ASK_AGAIN_AFTER);
            (!holds && !refused).then(|| (name.clone(), d.id))
        })
        .collect();
    for (silo, id) in due {
        let prepared = match prepare(state, id) {
            Ok(p) => p,
            Err(e) => {
                if state.deployments.unprepared.replace(id) != Some(id) {
                    tracing::error!(deployment = id, "cannot prepare the deployment: {e}");
                }
                return;
            }
        };
        let Some(e) = state.members.silos.get_mut(&silo) else {
            continue;
        };
        e.deploying = true;
        let (actor, node_id, me) = (e.handle.actor.clone(), e.handle.node_id, myself.clone());
        let bulk = state.links.bulk.clone();
        tokio::spawn(async move {
            let result = deliver(&actor, &silo, &bulk, &prepared, chunk, timeout).await;
            let _ = me.cast(CoordinatorMessage::Delivered {
                silo,
                node_id,
                deployment: prepared.id,
                result,
            });
        });
    }
}

/// Order `id`'s note, signed, and its values (read and signed once per order).
fn prepare(state: &mut CoordinatorState, id: u64) -> crate::Result<Arc<Prepared>> {
    if let Some(p) = state.deployments.prepared.as_ref().filter(|p| p.id == id) {
        return Ok(p.clone());
    }
    let Some(d) = state
        .deployments
        .book
        .all()
        .iter()
        .find(|d| d.id == id)
        .cloned()
    else {
        return Err(crate::Error::Config {
            origin: "deployment".into(),
            message: format!("order {id} is not in the book"),
        });
    };
    let ckpt = state.ledger.load_committed(d.version)?;
    seal(state, d, ckpt)
}

/// Order `d`'s note, signed, and the values of its checkpoint `ckpt`, kept for delivery.
fn seal(
    state: &mut CoordinatorState,
    d: Deployment,
    ckpt: crate::model::checkpoint::Checkpoint,
) -> crate::Result<Arc<Prepared>> {
    let id = d.id;
    let digest = Digest::of_f32(&ckpt.params);
    let note = DeploymentNote {
        deployment: id,
        version: d.version,
        digest,
        values: ckpt.params.len() as u64,
        spec: ckpt.spec,
        scaling: ckpt.scaling,
        ordered_by: d.by,
        signed_ms: now_ms(),
        target: d.target,
    };
    let signed =
        SignedNote::sign(&note, &state.deployments.signer).map_err(|e| crate::Error::Config {
            origin: "deployment".into(),
            message: e.to_string(),
        })?;
    let p = Arc::new(Prepared {
        id,
        note: signed,
        model: ModelRef {
            version: d.version,
            digest,
        },
        values: Arc::new(ckpt.params),
    });
    state.deployments.prepared = Some(p.clone());
    Ok(p)
}

/// Delivers `p` to one silo: the note; the values if it lacks them; the note again.
async fn deliver(
    actor: &ActorRef<TrainerMessage>,
    silo: &str,
    bulk: &BulkLinks,
    p: &Prepared,
    chunk: usize,
    timeout: Duration,
) -> Delivery {
    // The silo's refusal (`Response::Error`) is an answer here, not a failed call.
    let ask = || async {
        let request = Request::Deploy {
            note: p.note.clone(),
        };
        let bytes = call_bytes(actor, encode(&request), timeout, silo, |frame, reply| {
            TrainerMessage::Rpc { frame, reply }
        })
        .await?;
        decode::<Response>(&bytes, silo)
    };
    let answer = |r: crate::Result<Response>, sent: bool| match r {
        Ok(Response::Deployed { model }) if model == p.model => Ok(Delivery::Done(model)),
        Ok(Response::Deployed { model }) => Ok(Delivery::Refused(format!(
            "it deployed v{} ({}) instead",
            model.version,
            model.digest.short()
        ))),
        Ok(Response::Holds { held: false }) if !sent => Err(()),
        Ok(Response::Holds { held: false }) => Ok(Delivery::Refused(
            "it asked for the values again after receiving them".into(),
        )),
        Ok(Response::Error { message }) => Ok(Delivery::Refused(message)),
        Ok(other) => Ok(Delivery::Refused(format!("it answered {}", other.kind()))),
        Err(e) => Ok(Delivery::Transit(e.to_string())),
    };
    if let Ok(done) = answer(ask().await, false) {
        return done;
    }
    let route = Route::of(actor, silo, bulk);
    if let Err(e) = put_model(&route, p.model, &p.values, chunk, timeout).await {
        return Delivery::Transit(format!("sending the values: {e}"));
    }
    answer(ask().await, true).unwrap_or_else(|()| Delivery::Transit("no answer".into()))
}

/// A delivery to `silo`'s session `node_id` ended.
pub fn on_delivered(
    state: &mut CoordinatorState,
    silo: String,
    node_id: u64,
    deployment: u64,
    result: Delivery,
) {
    let Some(e) = state.members.silos.get_mut(&silo) else {
        return;
    };
    if e.handle.node_id != node_id {
        return;
    }
    e.deploying = false;
    e.settled_after = state.members.ping_seq;
    let version = state
        .deployments
        .book
        .all()
        .iter()
        .find(|d| d.id == deployment)
        .map_or(0, |d| d.version);
    match result {
        Delivery::Done(model) => {
            e.deployed = Some(model);
            state.ledger.events.emit(Event::SiloDeployed {
                silo,
                version: model.version,
                deployment: Some(deployment),
            });
        }
        Delivery::Refused(reason) => {
            e.deploy_refused = Some((deployment, reason.clone(), std::time::Instant::now()));
            state.ledger.events.emit(Event::DeploymentRefused {
                silo,
                version,
                deployment: Some(deployment),
                reason,
            });
        }
        Delivery::Transit(why) => {
            tracing::warn!(
                silo,
                deployment,
                "deployment cut off, will try again: {why}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_wait_for_the_round_and_stop_at_the_end() {
        assert!(may_deliver(&Phase::Ready));
        assert!(may_deliver(&Phase::Idle));
        assert!(may_deliver(&Phase::Starting {
            agreeing: false,
            retry_at: None
        }));
        assert!(!may_deliver(&Phase::Round {
            round: 3,
            task: None
        }));
        assert!(!may_deliver(&Phase::Comparing));
        assert!(!may_deliver(&Phase::Finished { error: None }));
    }
}
