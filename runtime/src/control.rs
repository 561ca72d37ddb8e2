//! Steering a running federation from outside the coordinator: the admin API and the
//! platform team's own actors (a drift monitor, say) pause and resume it, start a round by hand,
//! and approve or reject a candidate, all through a [`FederationControl`].

use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::ActorRef;
use tokio::sync::watch;

use crate::coordinator::CoordinatorMessage;
pub use crate::coordinator::{ControlError, ControlRequest, RunRequest};
use crate::status::FederationStatus;

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

    /// Queues a training run of `plan` (a serving coordinator); its id and the answer in
    /// words.
    pub async fn submit_run(
        &self,
        plan: crate::runs::RunPlan,
        by: &str,
    ) -> Result<(u64, String), ControlError> {
        let answer = self
            .request(ControlRequest::Run(RunRequest::Submit {
                plan,
                by: by.into(),
            }))
            .await?;
        // The coordinator answers "run <id> queued …" or "run <id> was submitted …".
        let id = answer
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| ControlError::Failed(format!("unexpected answer: {answer}")))?;
        Ok((id, answer))
    }

    /// Orders `version` deployed to `target`. Returns the order's id and what was done.
    pub async fn deploy(
        &self,
        version: u64,
        target: crate::deploy::Target,
        by: &str,
        reason: &str,
    ) -> Result<(u64, String), ControlError> {
        let answer = self
            .request(ControlRequest::Deploy {
                version,
                target,
                by: by.into(),
                reason: reason.into(),
            })
            .await?;
        // The coordinator answers "deployment <id>: …".
        let id = answer
            .split_whitespace()
            .nth(1)
            .and_then(|w| w.trim_end_matches(':').parse().ok())
            .ok_or_else(|| ControlError::Failed(format!("unexpected answer: {answer}")))?;
        Ok((id, answer))
    }

    /// Resumes it.
    pub async fn resume(&self, by: &str) -> Result<String, ControlError> {
        self.request(ControlRequest::Resume { by: by.into() }).await
    }
}
