//! The silo's side of secure aggregation, step by step ([`fedsilo::secagg::participant`]):
//! keys advertised once per round, shares checked against the consortium CA, the masked update
//! served in chunks, and the shares revealed for unmasking.

use fedsilo::identity::signature::CaCheck;
use fedsilo::protocol::{Request, Response};
use fedsilo::secagg::participant::Participant;
use fedsilo::secagg::quantize::packed_width;

use super::refusal::Refusal;
use super::state::{err, TrainerState};

impl TrainerState {
    /// The secure-aggregation state of `round`.
    pub(super) fn participant(&mut self, round: u64) -> Result<&mut Participant, Refusal> {
        self.secagg
            .as_mut()
            .filter(|p| p.round() == round)
            .ok_or(Refusal::NoKeys(round))
    }

    /// Answers the secure-aggregation steps (see [`fedsilo::secagg::participant`]).
    pub(super) fn secure_aggregation(&mut self, request: Request) -> Response {
        let result = match request {
            Request::SecAggAdvertise { round } => match &self.args.credentials {
                None => Err(Refusal::NoCredentials),
                Some(_) if self.last_keyed.is_some_and(|r| round <= r) => {
                    Err(Refusal::KeyedTwice {
                        round,
                        last: self.last_keyed.unwrap_or_default(),
                    })
                }
                Some(creds) => Participant::new(round, creds)
                    .map_err(Refusal::from)
                    .map(|p| {
                        let ad = p.advertisement().clone();
                        self.secagg = Some(p);
                        self.last_keyed = Some(round);
                        Response::SecAggAdvertised(ad)
                    }),
            },
            Request::SecAggShare {
                round,
                threshold,
                advertisements,
            } => {
                let ca = self
                    .args
                    .credentials
                    .as_ref()
                    .map(|c| CaCheck::new(c.roots()));
                self.participant(round).and_then(|p| {
                    let ca = ca.ok_or(Refusal::NoRoot)?;
                    Ok(p.share(&ca, threshold as usize, &advertisements)
                        .map(Response::SecAggShares)?)
                })
            }
            Request::SecAggDeliver {
                round,
                ring,
                shares,
            } => {
                self.args.faults.after_sharing(round, &self.args.name);
                self.participant(round)
                    .and_then(|p| Ok(p.receive(ring, &shares)?))
                    .map(|_| Response::SecAggReady)
            }
            Request::FetchMasked {
                round,
                weight,
                offset,
                len,
            } => match self.update.take() {
                Some((r, u)) if r == round => {
                    let out = self.participant(round).and_then(|p| {
                        let width = packed_width(p.bits()?) as u64;
                        let masked = p.mask(&u, weight)?;
                        let end = offset.saturating_add(len);
                        if end.saturating_mul(width) > masked.len() as u64 {
                            return Err(Refusal::Range {
                                start: offset,
                                end,
                                what: "a masked update",
                                len: masked.len() as u64 / width,
                            });
                        }
                        Ok(Response::MaskedChunk {
                            bytes: masked[(offset * width) as usize..(end * width) as usize]
                                .to_vec(),
                        })
                    });
                    self.update = Some((r, u));
                    out
                }
                other => {
                    self.update = other;
                    Err(Refusal::NoUpdate(round))
                }
            },
            Request::SecAggUnmask {
                round,
                survivors,
                dropped,
            } => self
                .participant(round)
                .and_then(|p| Ok(p.reveal(&survivors, &dropped)?))
                .map(Response::SecAggRevealed),
            other => Err(Refusal::NotSecureAggregation(other.kind())),
        };
        result.unwrap_or_else(err)
    }
}
