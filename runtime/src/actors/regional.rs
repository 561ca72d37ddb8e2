//! The RegionalAggregator actor (in a `fedsilo aggregator` process): combines the updates of the
//! silos routed to its region, fetching each over its own session with the silo.
//!
//! For every update it is asked to collect it first re-checks residency with the silo's
//! *certificate* region (a routing mistake upstream cannot leak an update), then fetches it,
//! checks its digest, and hands it to a local [`AggregatorActor`] for the policy's admission
//! rules and the kernel. Every decision is appended to a receive log (`receive.jsonl`): round,
//! silo, region, digest, admitted or refused and why.

use crate::protocol::{ModelRef, TrainReport};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedsilo_policies::admission::Expected;
use fedsilo_policies::residency::may_process;
use fedsilo_policies::Policy;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use serde::Serialize;

use super::aggregator::{AggregatorActor, AggregatorMessage, Refusal};
use super::{ask, ask_within};
use crate::cluster::{PeerDirectory, TRAINER_GROUP};
use crate::identity::Identity;
use crate::kernels::{Aggregation, Kernel};
use crate::model::Digest;
use crate::protocol::regional::{RegionalMessage, RegionalRequest, RegionalResponse};
use crate::protocol::transfer::fetch_update;
use crate::protocol::{decode, encode, TrainerMessage};

/// Largest model a regional aggregator accepts, in values (1 GiB of f32).
const MAX_MODEL_VALUES: u64 = 1 << 28;

/// Start-up arguments.
#[derive(Debug)]
pub struct RegionalArgs {
    /// This aggregator's identity (its region is what residency is checked against).
    pub identity: Identity,
    /// Verified peers.
    pub directory: Arc<PeerDirectory>,
    /// Where the receive log goes.
    pub receive_log: PathBuf,
    /// Transfer chunk, values.
    pub chunk: usize,
}

/// The actor.
#[derive(Debug)]
pub struct RegionalAggregatorActor;

#[derive(Debug)]
struct OpenRound {
    round: u64,
    policy: Policy,
    len: usize,
    admitted: Vec<(String, f64)>,
    result: Option<Vec<f32>>,
}

/// Its state.
#[derive(Debug)]
pub struct RegionalState {
    args: RegionalArgs,
    local: ActorRef<AggregatorMessage>,
    open: Option<OpenRound>,
}

/// One line of the receive log.
#[derive(Debug, Serialize)]
struct Received<'a> {
    round: u64,
    silo: &'a str,
    region: &'a str,
    aggregator_region: &'a str,
    digest: String,
    admitted: bool,
    reason: &'a str,
}

impl RegionalState {
    fn log(&self, r: &Received<'_>) {
        let line = serde_json::to_string(r).unwrap_or_default();
        let res = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.args.receive_log)
            .and_then(|mut f| writeln!(f, "{line}").and_then(|_| f.sync_data()));
        if let Err(e) = res {
            tracing::error!("cannot append to {}: {e}", self.args.receive_log.display());
        }
    }

    fn trainer_of(&self, silo: &str) -> Option<(ActorRef<TrainerMessage>, Identity)> {
        ractor::pg::get_members(&TRAINER_GROUP.to_string())
            .into_iter()
            .find_map(|cell| {
                let id = cell.get_id();
                if id.is_local() {
                    return None;
                }
                let identity = self.args.directory.identity_of(id.node())?;
                (identity.name == silo).then(|| (ActorRef::<TrainerMessage>::from(cell), identity))
            })
    }

    async fn handle(&mut self, req: RegionalRequest) -> RegionalResponse {
        match req {
            RegionalRequest::Begin {
                round,
                base,
                len,
                policy,
                kernel,
                clip_norm,
            } => self.begin(round, base, len, &policy, kernel, clip_norm),
            RegionalRequest::Collect {
                round,
                silo,
                report,
                timeout_ms,
            } => self.collect(round, silo, report, timeout_ms).await,
            RegionalRequest::Finish { round } => self.finish(round).await,
            RegionalRequest::Fetch { round, offset, len } => self.fetch(round, offset, len),
        }
    }

    /// Opens round `round` (whatever was open before is dropped).
    fn begin(
        &mut self,
        round: u64,
        base: ModelRef,
        len: u64,
        policy: &str,
        kernel: KernelParams,
        clip_norm: Option<f64>,
    ) -> RegionalResponse {
        let err = |message: String| RegionalResponse::Error { message };
        // Whatever happens below, nothing of an earlier round (or attempt) survives.
        self.open = None;
        if len == 0 || len > MAX_MODEL_VALUES {
            return err(format!(
                "model of {len} values is outside 1..={MAX_MODEL_VALUES}"
            ));
        }
        let policy = match Policy::from_toml_str(policy, "policy from the coordinator") {
            Ok(p) => p,
            Err(e) => return err(format!("cannot use the coordinator's policy: {e}")),
        };
        let kernel = match Kernel::parse(&kernel.0, kernel.1, kernel.2, kernel.3) {
            Ok(k) => k,
            Err(e) => return err(format!("kernel: {e}")),
        };
        let expected = Expected {
            round,
            base_version: base.version,
            base_digest: base.digest.hex(),
            len: len as usize,
        };
        let aggregation = Aggregation {
            kernel,
            clip_norm,
            server_optimizer: None,
            server_optimizer_unset: false,
        };
        let _ = self.local.cast(AggregatorMessage::Begin {
            round,
            len: len as usize,
            aggregation,
            policy: Box::new(policy.clone()),
            expected,
        });
        self.open = Some(OpenRound {
            round,
            policy,
            len: len as usize,
            admitted: vec![],
            result: None,
        });
        RegionalResponse::Begun
    }

    /// Fetches `silo`'s update over this node's own session with it, if the policy lets this
    /// region process it, and folds it.
    async fn collect(
        &mut self,
        round: u64,
        silo: String,
        report: TrainReport,
        timeout_ms: u64,
    ) -> RegionalResponse {
        let err = |message: String| RegionalResponse::Error { message };
        let Some(open) = self.open.as_ref().filter(|o| o.round == round) else {
            return err(format!("no round {round} open here"));
        };
        let (policy, len) = (open.policy.clone(), open.len);
        let my_region = self.args.identity.region.clone();
        let Some((trainer, identity)) = self.trainer_of(&silo) else {
            return RegionalResponse::Refused {
                reason: format!(
                    "silo {silo} is not linked to aggregator {}",
                    self.args.identity.name
                ),
            };
        };
        let digest = report.update_digest.hex();
        let verdict = may_process(&policy, &identity.region, &my_region);
        if !verdict.allow {
            let reason = format!("residency: {}", verdict.reasons.join("; "));
            self.log(&Received {
                round,
                silo: &silo,
                region: &identity.region,
                aggregator_region: &my_region,
                digest,
                admitted: false,
                reason: &reason,
            });
            tracing::warn!(silo, reason, "refused a misrouted update");
            return RegionalResponse::Refused { reason };
        }
        let timeout = Duration::from_millis(timeout_ms.max(1));
        let fetched = tokio::time::timeout(
            timeout,
            fetch_update(&trainer, round, len, self.args.chunk, timeout, &silo),
        )
        .await;
        let update = match fetched {
            Ok(Ok(u)) => u,
            Ok(Err(e)) => return err(format!("fetching the update of {silo} failed: {e}")),
            Err(_) => return err(format!("the update of {silo} could not be fetched in time")),
        };
        let outcome = if Digest::of_f32(&update) != report.update_digest {
            Err(Refusal {
                reason: "update does not match the digest the silo reported".into(),
                by_policy: true,
            })
        } else {
            let claimed = (report.round, report.base.version, report.base.digest.hex());
            let weight = report.examples as f64;
            match ask(&self.local, "aggregator", |reply| AggregatorMessage::Fold {
                round,
                silo: silo.clone(),
                update: crate::actors::update_values::Values::Memory(update),
                weight,
                claimed,
                reply,
            })
            .await
            {
                Ok(r) => r,
                Err(e) => Err(Refusal {
                    reason: e.to_string(),
                    by_policy: false,
                }),
            }
        };
        let (admitted, reason) = match &outcome {
            Ok(()) => (true, "admitted".to_string()),
            Err(r) => (false, r.reason.clone()),
        };
        self.log(&Received {
            round,
            silo: &silo,
            region: &identity.region,
            aggregator_region: &my_region,
            digest,
            admitted,
            reason: &reason,
        });
        match outcome {
            Ok(()) => {
                if let Some(o) = self.open.as_mut() {
                    o.admitted.push((silo, report.examples as f64));
                }
                RegionalResponse::Collected
            }
            Err(r) => RegionalResponse::Refused { reason: r.reason },
        }
    }

    /// Closes round `round`: the region's cohort screened whole, then combined.
    async fn finish(&mut self, round: u64) -> RegionalResponse {
        let err = |message: String| RegionalResponse::Error { message };
        let Some(open) = self.open.as_mut().filter(|o| o.round == round) else {
            return err(format!("no round {round} open here"));
        };
        if open.admitted.is_empty() {
            return err("no update was admitted here this round".into());
        }
        let local = self.local.clone();
        // The region's cohort, screened whole (the same verdicts whatever the arrival
        // order); what it refuses is not combined, and the summary leaves it out.
        let screened = match ask_within(&local, "aggregator", Duration::from_secs(600), |reply| {
            AggregatorMessage::Screen { round, reply }
        })
        .await
        {
            Ok(s) => s,
            Err(e) => return err(format!("screening the cohort failed: {e}")),
        };
        for (silo, reason) in &screened {
            tracing::info!(
                round,
                silo,
                "refused by the regional cohort screen: {reason}"
            );
        }
        open.admitted
            .retain(|(s, _)| !screened.iter().any(|(r, _)| r == s));
        if open.admitted.is_empty() {
            return err("every update was refused by the cohort screen".into());
        }
        match ask_within(&local, "aggregator", Duration::from_secs(600), |reply| {
            AggregatorMessage::Finish { round, reply }
        })
        .await
        {
            Ok(Ok(a)) => {
                let digest = Digest::of_f32(&a.values);
                open.result = Some(a.values);
                // A selecting kernel (Krum family, Bulyan) keeps only some updates: the
                // aggregate speaks for those alone.
                let kept: Vec<&(String, f64)> = match &a.selected {
                    Some(sel) => open
                        .admitted
                        .iter()
                        .filter(|(s, _)| sel.contains(s))
                        .collect(),
                    None => open.admitted.iter().collect(),
                };
                RegionalResponse::Summary {
                    silos: kept.iter().map(|(s, _)| s.clone()).collect(),
                    weight: kept.iter().map(|(_, w)| w).sum(),
                    digest,
                }
            }
            Ok(Err(e)) => err(format!("aggregation failed: {e}")),
            Err(e) => err(e.to_string()),
        }
    }

    /// A chunk of round `round`'s aggregate.
    fn fetch(&self, round: u64, offset: u64, len: u64) -> RegionalResponse {
        let err = |message: String| RegionalResponse::Error { message };
        match self
            .open
            .as_ref()
            .filter(|o| o.round == round)
            .and_then(|o| o.result.as_ref())
        {
            None => err(format!("no aggregate for round {round} here")),
            Some(v) => {
                let end = offset.saturating_add(len);
                if end > v.len() as u64 {
                    err(format!(
                        "asked for values {offset}..{end} of an aggregate of {}",
                        v.len()
                    ))
                } else {
                    RegionalResponse::Chunk {
                        values: v[offset as usize..end as usize].to_vec(),
                    }
                }
            }
        }
    }
}

/// A kernel as the coordinator names it: name, trim, byzantine, keep.
type KernelParams = (String, Option<f64>, Option<usize>, Option<usize>);

impl Actor for RegionalAggregatorActor {
    type Msg = RegionalMessage;
    type State = RegionalState;
    type Arguments = RegionalArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: RegionalArgs,
    ) -> Result<RegionalState, ActorProcessingErr> {
        let (local, _) = Actor::spawn_linked(None, AggregatorActor, (), myself.get_cell()).await?;
        Ok(RegionalState {
            args,
            local,
            open: None,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut RegionalState,
    ) -> Result<(), ActorProcessingErr> {
        let RegionalMessage::Rpc { frame, reply } = msg;
        let response = match decode::<RegionalRequest>(&frame, "coordinator") {
            Ok(req) => state.handle(req).await,
            Err(e) => RegionalResponse::Error {
                message: e.to_string(),
            },
        };
        let _ = reply.send(encode(&response));
        Ok(())
    }
}
