//! How the coordinator side holds a silo during a round: its certificate name, its session,
//! its trainer actor — and [`until_silent`], which resolves when the coordinator's heartbeats
//! find it silent (a frozen peer never closes its session, so every wait on a silo races it).

use std::collections::BTreeSet;

use ractor::ActorRef;
use ractor_cluster::NodeId;
use tokio::sync::watch;

use super::TrainerMessage;

/// A silo in a cohort: its certificate name, session and trainer actor.
#[derive(Debug, Clone)]
pub struct SiloHandle {
    /// Name from its verified certificate.
    pub name: String,
    /// ractor_cluster node id of its session.
    pub node_id: NodeId,
    /// Its trainer actor (remote).
    pub actor: ActorRef<TrainerMessage>,
}

/// Resolves once `name` is in the set of silos whose heartbeats have stopped (never, if the
/// sender is gone).
pub async fn until_silent(mut silent: watch::Receiver<BTreeSet<String>>, name: &str) {
    loop {
        if silent.borrow_and_update().contains(name) {
            return;
        }
        if silent.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
