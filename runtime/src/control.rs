//! Steering a running federation from outside the coordinator: the admin API and the
//! platform team's own actors (a drift monitor, say) pause and resume it, start a round by hand,
//! and approve or reject a candidate, all through a [`FederationControl`].

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::watch;

use crate::actors::coordinator::CoordinatorMessage;
use crate::status::FederationStatus;

/// What is asked of the coordinator. `by` names who asked (an operator certificate, an API
/// token, an actor) and goes into the audit journal.
#[derive(Debug, Clone, PartialEq)]
pub enum ControlRequest {
    /// Start no new round until resumed (a round in flight finishes). Survives a restart.
    Pause {
        /// Who.
        by: String,
        /// Why.
        reason: String,
    },
    /// Start rounds again.
    Resume {
        /// Who.
        by: String,
    },
    /// While paused: start one round now (the federation stays paused afterwards).
    StartRound {
        /// Who.
        by: String,
    },
    /// Approve or reject the candidate awaiting approval, or roll back to an earlier
    /// committed version (not while a round is in flight).
    Decide {
        /// What.
        kind: crate::decision::Kind,
        /// The candidate the caller reviewed, or the version to make current again.
        version: u64,
        /// Why (recorded).
        reason: String,
        /// Who.
        by: String,
        /// Their certificate (DER, hex), when they authenticated with one.
        certificate: String,
    },
}

/// Why a request was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The federation's state does not allow it now (nothing awaits approval, a round is in
    /// flight, ...). The message says what the state is.
    #[error("{0}")]
    Conflict(String),
    /// The coordinator could not carry it out (its journal or registry failed); it stops, and
    /// a restart reconciles its state with the journal.
    #[error("{0}")]
    Failed(String),
    /// The coordinator did not answer (it stopped, or is stuck).
    #[error("the coordinator is not answering: {0}")]
    Unavailable(String),
}

/// How long a control request may wait for the coordinator.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// A handle on the running coordinator: its published status and its control requests.
#[derive(Debug, Clone)]
pub struct FederationControl {
    coordinator: ActorRef<CoordinatorMessage>,
    status: watch::Receiver<FederationStatus>,
}

impl FederationControl {
    /// A handle on `coordinator`, which publishes its status into `status`.
    pub fn new(
        coordinator: ActorRef<CoordinatorMessage>,
        status: watch::Receiver<FederationStatus>,
    ) -> Self {
        Self {
            coordinator,
            status,
        }
    }

    /// The latest status the coordinator published.
    pub fn status(&self) -> FederationStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change.
    pub fn watch(&self) -> watch::Receiver<FederationStatus> {
        self.status.clone()
    }

    /// Asks the coordinator; `Ok` carries what it did, in words.
    pub async fn request(&self, request: ControlRequest) -> Result<String, ControlError> {
        match self
            .coordinator
            .call(
                |reply| CoordinatorMessage::Control(request, reply),
                Some(ANSWER_TIMEOUT),
            )
            .await
        {
            Ok(CallResult::Success(answer)) => answer,
            Ok(CallResult::Timeout) => Err(ControlError::Unavailable(format!(
                "no answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            ))),
            Ok(CallResult::SenderError) => Err(ControlError::Unavailable(
                "it stopped before answering".into(),
            )),
            Err(e) => Err(ControlError::Unavailable(e.to_string())),
        }
    }

    /// Pauses the federation.
    pub async fn pause(&self, by: &str, reason: &str) -> Result<String, ControlError> {
        self.request(ControlRequest::Pause {
            by: by.into(),
            reason: reason.into(),
        })
        .await
    }

    /// Resumes it.
    pub async fn resume(&self, by: &str) -> Result<String, ControlError> {
        self.request(ControlRequest::Resume { by: by.into() }).await
    }
}
