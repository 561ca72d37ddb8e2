//! # One federated round, end to end
//!
//! [`run_round`] is the procedure the Coordinator runs for each round, off its mailbox so that
//! heartbeats keep flowing (DESIGN §3). It reads as its phases, one file each:
//!
//! 1. open — the Aggregator and any regional aggregators ([`regional`]) open the round; under
//!    `[secure_aggregation]` the cohort first exchanges keys and escrows its secrets
//!    ([`secure`]), and only the silos that took their shares are dispatched;
//! 2. collect ([`collect`]) — the base model goes to every silo in chunks, then `Train`;
//!    updates are fetched, checked and folded as silos finish, until every silo has answered,
//!    quorum + grace, the deadline, or quorum can no longer be reached; then the cohort is
//!    screened whole;
//! 3. combine ([`combine`]) — regional aggregates cross to this node, the masked sum is
//!    unmasked, the quorum verdict is taken, the aggregate made, DP noise added and the
//!    server optimiser stepped: the candidate. Below quorum the round is abandoned — never
//!    half-committed;
//! 4. judge ([`gate`]) — the silos score the candidate on their held-out splits and the
//!    policy's gate compares it with the current version.
//!
//! Committing (checkpoint, log, new version) is left to the Coordinator, the only actor that
//! advances the version.

pub mod collect;
pub mod combine;
pub mod context;
pub mod gate;
pub mod outcome;
pub mod regional;
pub mod secure;

pub use context::{BaseModel, RoundContext};
pub use outcome::{Attendance, RoundOutcome, NOT_COLLECTED};

use fedsilo_policies::admission::Expected;

use crate::actors::aggregator::AggregatorMessage;
use crate::protocol::SiloHandle;
use collect::Tally;
use gate::Clock;

/// Runs one round (see the module documentation). Never hangs: every wait is bounded by the
/// round deadline.
pub async fn run_round(ctx: RoundContext) -> RoundOutcome {
    // The coordinator recorded the round's start (journal, synced) before spawning this task.
    let mut clock = Clock::start(&ctx);
    let deadline = clock.started + ctx.policy.rounds.deadline();
    let unopened = open(&ctx).await;
    let mut tally = Tally::default();
    let (secure, dispatched) = match secure_open(&ctx, &mut tally, deadline).await {
        Ok(opened) => opened,
        Err(outcome) => return outcome,
    };
    clock.collecting = Some(std::time::Instant::now());
    collect::collect(&ctx, &dispatched, &unopened, &mut tally, deadline).await;
    if secure.is_none() {
        if let Err(e) = collect::screen(&ctx, &mut tally).await {
            return tally.abandoned(&ctx, format!("screening the cohort failed: {e}"));
        }
    }
    // Regional aggregates: only those combining enough silos cross to this node.
    clock.collected = Some(std::time::Instant::now());
    let parts = regional::parts(&ctx, &mut tally).await;
    match combine::combine(&ctx, secure, parts, &mut tally, deadline).await {
        Ok(combined) => {
            clock.combined = Some(std::time::Instant::now());
            gate::judge(&ctx, combined, tally, clock, deadline).await
        }
        Err(outcome) => outcome,
    }
}

/// Opens the round at the Aggregator (unless under secure aggregation, where it never sees an
/// update: the sum is made here) and at the regional aggregators; returns the aggregators
/// that could not open it.
async fn open(ctx: &RoundContext) -> Vec<String> {
    if ctx.policy.secure_aggregation.is_none() {
        let _ = ctx.aggregator.cast(AggregatorMessage::Begin {
            round: ctx.round,
            len: ctx.base.params.len(),
            aggregation: ctx.aggregation.clone(),
            policy: Box::new(ctx.policy.clone()),
            expected: Expected {
                round: ctx.round,
                base_version: ctx.base.version,
                base_digest: ctx.base.digest.hex(),
                len: ctx.base.params.len(),
            },
        });
    }
    regional::begin(ctx).await
}

/// Under secure aggregation: keys and escrowed secrets go round before anyone trains; the
/// session and the silos that took their shares (every cohort silo otherwise).
async fn secure_open(
    ctx: &RoundContext,
    tally: &mut Tally,
    deadline: std::time::Instant,
) -> Result<(Option<secure::Session>, Vec<SiloHandle>), RoundOutcome> {
    let Some(rules) = &ctx.policy.secure_aggregation else {
        return Ok((None, ctx.cohort.clone()));
    };
    match secure::open(ctx, rules, deadline).await {
        Ok((session, ready, lost)) => {
            for (silo, reason) in lost {
                tally.refuse(ctx, silo, reason, false);
            }
            Ok((Some(session), ready))
        }
        Err((reason, lost)) => {
            for (silo, why) in lost {
                tally.refuse(ctx, silo, why, false);
            }
            Err(tally.abandoned(ctx, reason.to_string()))
        }
    }
}
