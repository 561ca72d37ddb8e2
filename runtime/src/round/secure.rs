//! The coordinator's side of a securely aggregated round, over the network: it relays keys
//! and encrypted shares between the cohort's silos, fetches masked updates, and asks the
//! survivors for the shares that unmask their sum ([`crate::secagg`] has the cryptography and
//! the protocol's steps). The [`Collector`] holds the state; this
//! module only moves messages, every call bounded by the round deadline and dropped at once
//! when the silo's heartbeats stop.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fedsilo_policies::participation::capped_shares;
use fedsilo_policies::secure_aggregation::SecureAggregationRules;
use tokio::task::JoinSet;

use super::context::RoundContext;
use crate::protocol::{
    call, until_silent, Request, Response, SiloFailure, SiloHandle, TrainReport,
};
use crate::secagg::collector::{CollectError, Collector};
use crate::secagg::messages::RingSpec;
use crate::secagg::quantize::{packed_width, QuantizeError, Quantizer};

/// A round's secure aggregation once the keys and shares went round.
#[derive(Debug)]
pub struct Session {
    collector: Collector,
    ring: RingSpec,
    silos: BTreeMap<String, SiloHandle>,
}

/// What went wrong with secure aggregation: for one silo (it is lost to the round) or for the
/// round (it is abandoned).
#[derive(Debug, thiserror::Error)]
pub enum SecureError {
    /// The silo did not answer a step.
    #[error("secure aggregation ({step}): {source}")]
    Silo {
        /// The step.
        step: &'static str,
        /// Why.
        source: SiloFailure,
    },
    /// The silo answered a step with something else.
    #[error("secure aggregation ({step}): answered {kind}")]
    Unexpected {
        /// The step.
        step: &'static str,
        /// What it answered.
        kind: &'static str,
    },
    /// The silo advertised keys under another name.
    #[error("secure aggregation: advertised keys under the name {0}")]
    OtherName(String),
    /// The silo sent a chunk of masked values of the wrong size.
    #[error("sent {got} bytes of masked values, {want} values of {width} bytes were asked for")]
    ChunkSize {
        /// Bytes sent.
        got: usize,
        /// Values asked for.
        want: usize,
        /// Bytes per value.
        width: usize,
    },
    /// The silo's admitted report has no escrowed secrets behind it.
    #[error("secure aggregation: did not escrow its secrets")]
    NotEscrowed,
    /// Fetching the masked update failed.
    #[error(transparent)]
    Fetch(SiloFailure),
    /// The masked update could not be had.
    #[error("secure aggregation (masked update): {0}")]
    Masked(Box<SecureError>),
    /// The cohort is smaller than the threshold.
    #[error("secure aggregation: {n} silo(s) dispatched, the threshold is {t}: the sum could never be unmasked")]
    BelowThreshold {
        /// Silos dispatched.
        n: usize,
        /// The threshold.
        t: usize,
    },
    /// Too few silos are ready after the exchange.
    #[error("secure aggregation: only {ready} silo(s) took their shares, the threshold is {t}: the round is abandoned")]
    TooFewReady {
        /// Silos ready.
        ready: usize,
        /// The threshold.
        t: usize,
    },
    /// The ring cannot hold the cohort's sum.
    #[error(transparent)]
    Ring(#[from] QuantizeError),
    /// The collector refused a step.
    #[error(transparent)]
    Collect(#[from] CollectError),
    /// Unmasking panicked.
    #[error("secure aggregation: unmasking failed: {0}")]
    Panicked(String),
}

fn silo(step: &'static str) -> impl Fn(SiloFailure) -> SecureError {
    move |source| SecureError::Silo { step, source }
}

/// Silos lost along the way, with the reason.
pub type Lost = Vec<(String, String)>;

/// Sends `request(silo)` to every silo at once; each answer (or why there is none) as it comes.
async fn ask_all(
    ctx: &RoundContext,
    silos: &[SiloHandle],
    deadline: Instant,
    request: impl Fn(&SiloHandle) -> Request,
) -> Vec<(SiloHandle, Result<Response, SiloFailure>)> {
    let mut jobs = JoinSet::new();
    let mut by_task = BTreeMap::new();
    for s in silos {
        let (req, silo, silent) = (request(s), s.clone(), ctx.unhealthy.clone());
        let task = jobs.spawn(async move {
            let left = deadline.saturating_duration_since(Instant::now());
            let r = tokio::select! {
                r = call(&silo.actor, &req, left, &silo.name) => r.map_err(SiloFailure::Call),
                _ = until_silent(silent, &silo.name) => Err(SiloFailure::Silent(" during secure aggregation")),
            };
            (silo, r)
        });
        by_task.insert(task.id(), s.clone());
    }
    let mut out = Vec::new();
    while let Some(j) = jobs.join_next_with_id().await {
        match j {
            Ok((_, r)) => out.push(r),
            // Every silo gets an answer, even if its call failed in an unexpected way.
            Err(e) => {
                if let Some(s) = by_task.remove(&e.id()) {
                    out.push((s, Err(SiloFailure::Aborted(e.to_string()))));
                }
            }
        }
    }
    out
}

/// When a step of the key exchange must be over: a sixth of the round's deadline (at least
/// five seconds), so that a silo that never answers leaves time to train.
fn step_deadline(ctx: &RoundContext, round_deadline: Instant) -> Instant {
    let budget = (ctx.policy.rounds.deadline() / 6).max(Duration::from_secs(5));
    round_deadline.min(Instant::now() + budget)
}

fn unexpected(step: &'static str, got: &Response) -> SecureError {
    SecureError::Unexpected {
        step,
        kind: got.kind(),
    }
}

/// Steps 1–3: keys advertised and relayed, secrets escrowed, shares delivered. Returns the
/// session, the silos ready to train, and those lost (with why). `Err`: the round cannot be
/// securely aggregated (fewer than t silos left, or a ring too small for the cohort) and is
/// abandoned before anyone trains; the silos lost so far come with the reason.
pub async fn open(
    ctx: &RoundContext,
    rules: &SecureAggregationRules,
    deadline: Instant,
) -> Result<(Session, Vec<SiloHandle>, Lost), (SecureError, Lost)> {
    let mut lost = Lost::new();
    match open_steps(ctx, rules, deadline, &mut lost).await {
        Ok((session, ready)) => Ok((session, ready, lost)),
        Err(reason) => Err((reason, lost)),
    }
}

async fn open_steps(
    ctx: &RoundContext,
    rules: &SecureAggregationRules,
    deadline: Instant,
    lost: &mut Lost,
) -> Result<(Session, Vec<SiloHandle>), SecureError> {
    let n = ctx.cohort.len();
    let t = rules.threshold_for(n);
    if t > n {
        return Err(SecureError::BelowThreshold { n, t });
    }
    let q = Quantizer::new(rules.bits, rules.range, n)?;
    let ring = RingSpec {
        bits: rules.bits,
        range: rules.range,
        max_silos: n as u32,
    };
    let round = ctx.round;
    let mut collector = Collector::new(round, t, q, ctx.base.params.len());
    // 1. Keys.
    let mut ads = Vec::new();
    let mut advertised = Vec::new();
    let step = step_deadline(ctx, deadline);
    for (s, r) in ask_all(ctx, &ctx.cohort, step, |_| Request::SecAggAdvertise {
        round,
    })
    .await
    {
        match r {
            Ok(Response::SecAggAdvertised(ad)) if ad.silo == s.name => {
                ads.push(ad);
                advertised.push(s);
            }
            Ok(Response::SecAggAdvertised(ad)) => {
                lost.push((s.name.clone(), SecureError::OtherName(ad.silo).to_string()))
            }
            Ok(other) => lost.push((s.name.clone(), unexpected("keys", &other).to_string())),
            Err(e) => lost.push((s.name.clone(), silo("keys")(e).to_string())),
        }
    }
    collector.advertised(ads)?;
    // 2. Escrow.
    let list = collector.advertisements();
    let mut sharers = Vec::new();
    let step = step_deadline(ctx, deadline);
    for (s, r) in ask_all(ctx, &advertised, step, |_| Request::SecAggShare {
        round,
        threshold: t as u32,
        advertisements: list.clone(),
    })
    .await
    {
        let r = match r {
            Ok(Response::SecAggShares(v)) => collector.shared(&s.name, v).map_err(Into::into),
            Ok(other) => Err(unexpected("escrow", &other)),
            Err(e) => Err(silo("escrow")(e)),
        };
        match r {
            Ok(()) => sharers.push(s),
            Err(e) => lost.push((s.name.clone(), e.to_string())),
        }
    }
    collector.sharing_closed()?;
    // 3. Delivery: each silo gets the shares escrowed with it, and the ring.
    let mut ready = Vec::new();
    let inbox: BTreeMap<String, _> = sharers
        .iter()
        .map(|s| (s.name.clone(), collector.relayed_to(&s.name)))
        .collect();
    let step = step_deadline(ctx, deadline);
    for (s, r) in ask_all(ctx, &sharers, step, |s| Request::SecAggDeliver {
        round,
        ring,
        shares: inbox.get(&s.name).cloned().unwrap_or_default(),
    })
    .await
    {
        match r {
            Ok(Response::SecAggReady) => ready.push(s),
            Ok(other) => lost.push((s.name.clone(), unexpected("delivery", &other).to_string())),
            Err(e) => lost.push((s.name.clone(), silo("delivery")(e).to_string())),
        }
    }
    if ready.len() < t {
        return Err(SecureError::TooFewReady {
            ready: ready.len(),
            t,
        });
    }
    // Keep the cohort's order for dispatch.
    ready.sort_by_key(|s| ctx.cohort.iter().position(|c| c.name == s.name));
    let silos = sharers.into_iter().map(|s| (s.name.clone(), s)).collect();
    Ok((
        Session {
            collector,
            ring,
            silos,
        },
        ready,
    ))
}

impl Session {
    /// The threshold t.
    pub fn threshold(&self) -> usize {
        self.collector.threshold()
    }

    /// Step 4: fetches the masked updates of the silos whose reports were admitted, each
    /// weighed by its share of the round (capped by `participation.max_weight_share`, as in the
    /// plain path) over the largest share, so every weight is in (0, 1], and adds them to the
    /// sum. Returns the silos whose masked update could not be had.
    pub async fn collect(
        &mut self,
        ctx: &RoundContext,
        admitted: &[(String, TrainReport)],
        deadline: Instant,
    ) -> Lost {
        let raw: Vec<f64> = admitted
            .iter()
            .map(|(_, r)| ctx.policy.update_weight(r.examples as f64))
            .collect();
        let cap = ctx.policy.max_weight_share();
        let shares = if cap < 1.0 {
            capped_shares(&raw, cap)
        } else {
            raw
        };
        let weights: BTreeMap<&String, f64> = admitted.iter().map(|(s, _)| s).zip(shares).collect();
        let top = weights.values().cloned().fold(0.0, f64::max);
        let (len, bits, chunk) = (ctx.base.params.len(), self.ring.bits, ctx.chunk.max(1));
        let mut jobs = JoinSet::new();
        let mut by_task = BTreeMap::new();
        let mut lost = Lost::new();
        for (name, w) in &weights {
            let Some(s) = self.silos.get(*name).cloned() else {
                lost.push(((*name).clone(), SecureError::NotEscrowed.to_string()));
                continue;
            };
            let (weight, round, silent) = (w / top, ctx.round, ctx.unhealthy.clone());
            let silo = s.name.clone();
            let task = jobs.spawn(async move {
                let fetch = async {
                    let width = packed_width(bits);
                    let mut packed = Vec::with_capacity(len * width);
                    while packed.len() < len * width {
                        let offset = packed.len() / width;
                        let want = chunk.min(len - offset);
                        let req = Request::FetchMasked {
                            round,
                            weight,
                            offset: offset as u64,
                            len: want as u64,
                        };
                        let left = deadline.saturating_duration_since(Instant::now());
                        match call(&s.actor, &req, left, &s.name).await.map_err(|e| SecureError::Fetch(e.into()))? {
                            Response::MaskedChunk { bytes } if bytes.len() == want * width => {
                                packed.extend_from_slice(&bytes);
                            }
                            Response::MaskedChunk { bytes } => {
                                return Err(SecureError::ChunkSize { got: bytes.len(), want, width });
                            }
                            other => return Err(unexpected("masked update", &other)),
                        }
                    }
                    Ok(packed)
                };
                let r = tokio::select! {
                    r = fetch => r,
                    _ = until_silent(silent, &s.name) => Err(SecureError::Fetch(SiloFailure::Silent(" while its masked update was fetched"))),
                };
                (s.name.clone(), weight, r)
            });
            by_task.insert(task.id(), silo);
        }
        while let Some(j) = jobs.join_next_with_id().await {
            let (name, weight, r) = match j {
                Ok((_, got)) => got,
                Err(e) => match by_task.remove(&e.id()) {
                    Some(name) => (
                        name,
                        0.0,
                        Err(SecureError::Fetch(SiloFailure::Aborted(e.to_string()))),
                    ),
                    None => continue,
                },
            };
            match r.and_then(|v| self.collector.fold(&name, &v, weight).map_err(Into::into)) {
                Ok(()) => {}
                Err(e) => lost.push((name, SecureError::Masked(Box::new(e)).to_string())),
            }
        }
        lost
    }

    /// Step 5: asks the survivors for the shares that remove the masks, and unmasks the sum.
    /// Returns the weighted mean of the survivors' updates. `Err`: fewer
    /// than t survivors, or fewer than t answered; the round is abandoned.
    pub async fn unmask(
        mut self,
        ctx: &RoundContext,
        deadline: Instant,
    ) -> Result<Vec<f32>, SecureError> {
        let (survivors, dropped) = self.collector.unmasking()?;
        let asked: Vec<SiloHandle> = survivors
            .iter()
            .filter_map(|s| self.silos.get(s).cloned())
            .collect();
        let round = ctx.round;
        for (s, r) in ask_all(ctx, &asked, deadline, |_| Request::SecAggUnmask {
            round,
            survivors: survivors.clone(),
            dropped: dropped.clone(),
        })
        .await
        {
            let r = match r {
                Ok(Response::SecAggRevealed(v)) => {
                    self.collector.revealed(&s.name, v).map_err(Into::into)
                }
                Ok(other) => Err(unexpected("unmasking", &other)),
                Err(e) => Err(silo("unmasking")(e)),
            };
            if let Err(e) = r {
                tracing::warn!(
                    silo = s.name,
                    "secure aggregation: no unmasking shares: {e}"
                );
            }
        }
        let collector = self.collector;
        tokio::task::spawn_blocking(move || collector.finish())
            .await
            .map_err(|e| SecureError::Panicked(e.to_string()))?
            .map_err(Into::into)
    }
}
