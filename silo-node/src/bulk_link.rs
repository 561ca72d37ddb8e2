//! The silo's bulk link to the coordinator (`fedsilo::bulk`): models arrive and updates leave
//! there, as raw frames, instead of in chunks through the trainer actor's mailbox.
//!
//! The link is an adapter, not a second trainer: a model that arrives (its digest checked by
//! the bulk plane) is handed to the trainer actor whole, as one local message, and an update is
//! the trainer's own buffer, shared. So the trainer's rules — which models it keeps and pins,
//! that a securely aggregated update never leaves unmasked, that a compressed one leaves
//! compressed — hold on both planes.
//!
//! The link is dialled again each time the cluster link to the coordinator comes up: a
//! coordinator that restarted (or vanished without closing anything) gets a fresh link at once.

use std::sync::Arc;
use std::time::Duration;

use fedsilo::bulk::answer::{AnswerLimits, Holder, HolderRefusal};
use fedsilo::bulk::dial::keep_dialled;
use fedsilo::cluster::PeerEvent;
use fedsilo::identity::Role;
use fedsilo::protocol::{ModelRef, TrainerMessage};
use fedsilo::tls::NodeCredentials;
use ractor::ActorRef;
use tokio::sync::broadcast::error::RecvError;

/// Time each frame of a transfer has to arrive.
const FRAME_LIMIT: Duration = Duration::from_secs(60);

/// The trainer actor, as the bulk plane sees it.
pub struct TrainerHolder(pub ActorRef<TrainerMessage>);

fn gone() -> HolderRefusal {
    HolderRefusal::Refused("the silo's trainer is not running".into())
}

impl Holder for TrainerHolder {
    async fn store(&self, model: ModelRef, values: Vec<f32>) -> Result<(), HolderRefusal> {
        ractor::call!(self.0, |reply| TrainerMessage::Store {
            model,
            values,
            reply
        })
        .map_err(|_| gone())?
    }

    async fn update(&self, round: u64) -> Result<Arc<Vec<f32>>, HolderRefusal> {
        ractor::call!(self.0, |reply| TrainerMessage::TakeUpdate { round, reply })
            .map_err(|_| gone())?
    }
}

/// Keeps a bulk link to the coordinator `name` at `addr` for `trainer`: dialled once the node's
/// cluster link to a coordinator is bound (`events`: the node's directory, subscribed before
/// that link is dialled), and afresh each time it is bound again, until the task is aborted.
pub async fn keep(
    credentials: NodeCredentials,
    mut events: tokio::sync::broadcast::Receiver<PeerEvent>,
    addr: String,
    name: String,
    trainer: ActorRef<TrainerMessage>,
    max_pause: Duration,
) {
    let holder = Arc::new(TrainerHolder(trainer));
    let limits = AnswerLimits {
        frame: FRAME_LIMIT,
        max_values: crate::trainer::MAX_MODEL_VALUES,
    };
    if !coordinator_bound(&mut events).await {
        return;
    }
    loop {
        let dial = keep_dialled(
            credentials.clone(),
            addr.clone(),
            name.clone(),
            holder.clone(),
            limits,
            max_pause,
        );
        tokio::select! {
            _ = dial => return,
            again = coordinator_bound(&mut events) => if !again { return },
        }
    }
}

/// Waits until a cluster link to a coordinator is bound; `false` if the directory closed.
async fn coordinator_bound(events: &mut tokio::sync::broadcast::Receiver<PeerEvent>) -> bool {
    loop {
        match events.recv().await {
            Ok(PeerEvent::Bound { identity, .. }) if identity.role == Role::Coordinator => {
                return true
            }
            // Events were missed: one of them may have been the binding; dialling is harmless.
            Err(RecvError::Lagged(_)) => return true,
            Ok(_) => {}
            Err(RecvError::Closed) => return false,
        }
    }
}
