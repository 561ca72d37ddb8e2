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

/// Why a silo gave no answer to a request of a round (its training, an evaluation, a
/// local-only baseline). Recorded per silo; the round goes on with the others.
#[derive(Debug, thiserror::Error)]
pub enum SiloFailure {
    /// The call failed: transport, timeout of a step, the silo's own error, or an unexpected
    /// answer.
    #[error(transparent)]
    Call(#[from] crate::Error),
    /// Its session closed, or the directory no longer knows it.
    #[error("left the federation mid-round ({0})")]
    Left(crate::Error),
    /// The whole exchange took longer than allowed.
    #[error("no {what} within {after:?}")]
    Timeout {
        /// What was awaited ("evaluation").
        what: &'static str,
        /// The limit.
        after: std::time::Duration,
    },
    /// The task making the call ended abnormally.
    #[error("the call failed: {0}")]
    Aborted(String),
    /// The coordinator's heartbeats found it silent.
    #[error("stopped answering heartbeats{0}")]
    Silent(&'static str),
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
