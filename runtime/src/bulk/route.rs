//! Which plane a transfer takes: the silo's bulk link when it has one, the control plane's
//! chunked transfers ([`crate::protocol::transfer`]) otherwise — and when the silo says an
//! update leaves another way (compressed), or the link was lost between transfers. A transfer
//! that fails midway on the bulk link fails, as a control-plane transfer would: repeating a
//! slow transfer on the slower plane would only make a late silo later.

use std::time::Duration;

use ractor::ActorRef;

use super::links::BulkLink;
use super::{BulkError, BulkLinks};
use crate::model::spill::{SpillWriter, Spilled};
use crate::model::Digest;
use crate::protocol::transfer;
use crate::protocol::{call, ModelRef, Request, Response, SiloHandle, TrainerMessage};
use crate::{Error, Result};

/// Where a silo's transfers go: its trainer actor, and its bulk link if it has one.
#[derive(Debug, Clone)]
pub struct Route<'a> {
    /// The silo's trainer.
    pub trainer: &'a ActorRef<TrainerMessage>,
    /// The silo's name (its certificate's).
    pub peer: &'a str,
    /// Its bulk link.
    pub bulk: Option<BulkLink>,
}

impl<'a> Route<'a> {
    /// The route to `silo`, through its link in `links` if it has one.
    pub fn to(silo: &'a SiloHandle, links: &BulkLinks) -> Self {
        Self::of(&silo.actor, &silo.name, links)
    }

    /// The route to the trainer `trainer` of the silo `peer`.
    pub fn of(trainer: &'a ActorRef<TrainerMessage>, peer: &'a str, links: &BulkLinks) -> Self {
        Self {
            trainer,
            peer,
            bulk: links.link(peer),
        }
    }

    /// The control plane only.
    pub fn control(trainer: &'a ActorRef<TrainerMessage>, peer: &'a str) -> Self {
        Self {
            trainer,
            peer,
            bulk: None,
        }
    }

    fn error(&self, e: BulkError) -> Error {
        match e {
            // The connection died (a silo killed or cut off): the peer is gone, as a closed
            // session says on the control plane.
            BulkError::Io(_) => Error::PeerGone {
                peer: self.peer.to_string(),
            },
            e => Error::Protocol {
                peer: self.peer.to_string(),
                message: e.to_string(),
            },
        }
    }
}

/// Sends `params` as `model` to the silo (`chunk`: values per control-plane chunk; `timeout`:
/// per chunk or frame).
pub async fn put_model(
    route: &Route<'_>,
    model: ModelRef,
    params: &[f32],
    chunk: usize,
    timeout: Duration,
) -> Result<()> {
    if let Some(link) = &route.bulk {
        match link.put_model(model, params, timeout).await {
            Ok(()) => return Ok(()),
            Err(BulkError::Closed | BulkError::Busy) => {}
            Err(e) => return Err(route.error(e)),
        }
    }
    transfer::put_model(route.trainer, model, params, chunk, timeout, route.peer).await
}

/// Makes sure the silo holds `model`: asks, and sends it only if it does not.
pub async fn ensure_model(
    route: &Route<'_>,
    model: ModelRef,
    params: &[f32],
    chunk: usize,
    timeout: Duration,
) -> Result<()> {
    match call(
        route.trainer,
        &Request::Holds { model },
        timeout,
        route.peer,
    )
    .await?
    {
        Response::Holds { held: true } => Ok(()),
        Response::Holds { held: false } => put_model(route, model, params, chunk, timeout).await,
        other => Err(transfer::unexpected(route.peer, "Holds", &other)),
    }
}

/// Fetches the silo's update of `len` values for `round` into a spilled file in `dir`, never
/// holding it whole in memory when it comes over the bulk link. Returns it with the SHA-256 of
/// its bytes.
pub async fn fetch_update_spilled(
    route: &Route<'_>,
    round: u64,
    len: usize,
    chunk: usize,
    timeout: Duration,
    dir: &std::path::Path,
) -> Result<(Spilled, Digest)> {
    let spill_error = |e: std::io::Error| Error::Io {
        action: "spilling an update to",
        path: dir.to_path_buf(),
        source: e,
    };
    if let Some(link) = &route.bulk {
        let mut w = SpillWriter::create(dir).map_err(spill_error)?;
        match link
            .fetch_update_with(round, len, timeout, |v| w.push(v))
            .await
        {
            Ok(digest) => return Ok((w.finish().map_err(spill_error)?, digest)),
            Err(BulkError::Closed | BulkError::Busy | BulkError::AskControl(_)) => {}
            Err(BulkError::Sink(e)) => return Err(spill_error(e)),
            Err(e) => return Err(route.error(e)),
        }
    }
    let values =
        transfer::fetch_update(route.trainer, round, len, chunk, timeout, route.peer).await?;
    let digest = Digest::of_f32(&values);
    let mut w = SpillWriter::create(dir).map_err(spill_error)?;
    w.push(&values).map_err(spill_error)?;
    Ok((w.finish().map_err(spill_error)?, digest))
}

/// Fetches the silo's update of `len` values for `round`. With the SHA-256 of its bytes when
/// it came over the bulk link (computed as it arrived); `None` when it came over the control
/// plane.
pub async fn fetch_update(
    route: &Route<'_>,
    round: u64,
    len: usize,
    chunk: usize,
    timeout: Duration,
) -> Result<(Vec<f32>, Option<Digest>)> {
    if let Some(link) = &route.bulk {
        match link.fetch_update(round, len, timeout).await {
            Ok((values, digest)) => return Ok((values, Some(digest))),
            Err(BulkError::Closed | BulkError::Busy | BulkError::AskControl(_)) => {}
            Err(e) => return Err(route.error(e)),
        }
    }
    transfer::fetch_update(route.trainer, round, len, chunk, timeout, route.peer)
        .await
        .map(|u| (u, None))
}
