//! A silo's side of one secure-aggregation round (Bonawitz et al. 2017, semi-honest, with
//! signed keys):
//!
//! 1. [`Participant::new`] — fresh X25519 keys, advertised signed with the silo's certificate;
//! 2. [`Participant::share`] — checks every peer's advertisement against the consortium CA,
//!    agrees a mask seed with each, picks a self-mask seed, and escrows t-of-n Shamir shares of
//!    that seed and of its mask key with the peers, each encrypted to its peer;
//! 3. [`Participant::receive`] — takes the shares the peers escrowed with it; the peers who
//!    sent shares are the ones it masks with;
//! 4. [`Participant::mask`] — weighs, clips and quantises its update, adds its masks;
//! 5. [`Participant::reveal`] — gives the server, for each survivor, its share of the self-mask
//!    seed and, for each silo that dropped, its share of the mask key; never both for one silo,
//!    and only once per round.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::{open, seal, Advertisement, KeyError, RoundKeys};
use super::masking::{mask_update, MaskSeeds};
use super::messages::{
    minimum_threshold, share_context, Escrow, RelayedShares, RevealedShare, RingSpec, SealedShares,
    Secret,
};
use super::quantize::{pack, QuantizeError, Quantizer};
use super::shamir::{split, ShamirError};
use crate::identity::signature::CaCheck;
use crate::privacy::noise::secure_rng;
use crate::tls::NodeCredentials;

/// Why a silo refuses a step of secure aggregation (the coordinator hears the reason).
#[derive(Debug, thiserror::Error)]
pub enum ParticipateError {
    /// A step that needs the key list before it came.
    #[error("round {0}: no key list was received yet")]
    NoKeyList(u64),
    /// A second key list.
    #[error("round {0}: the shares were already made; a second key list is refused")]
    SecondKeyList(u64),
    /// The shares or the ring are needed and were not delivered.
    #[error("round {0}: no shares were delivered yet")]
    NotDelivered(u64),
    /// A second delivery.
    #[error("round {0}: shares were already delivered")]
    SecondDelivery(u64),
    /// Two advertisements under one name.
    #[error("two advertisements for {0}")]
    TwoAdvertisements(String),
    /// This silo's own advertisement is missing or changed.
    #[error("the key list does not carry {0}'s own advertisement unchanged")]
    OwnAdvertisement(String),
    /// A threshold a minority could unmask with, or above the cohort.
    #[error("threshold {threshold} for {n} silos: must be between {min} and {n}, or a minority could unmask a single silo")]
    Threshold {
        /// Asked.
        threshold: usize,
        /// Silos advertised.
        n: usize,
        /// The least allowed.
        min: usize,
    },
    /// The ring is too small for the cohort.
    #[error("the ring is sized for {ring} silos, {advertised} advertised")]
    RingTooSmall {
        /// Silos the ring holds.
        ring: u32,
        /// Silos advertised.
        advertised: usize,
    },
    /// Shares from a silo without keys.
    #[error("shares from {0}, who advertised no keys")]
    UnknownSender(String),
    /// Shares from itself or twice from one peer.
    #[error("unexpected or repeated shares from {0}")]
    RepeatedShares(String),
    /// Shares that do not decrypt.
    #[error("shares from {from}: {source}")]
    Undecryptable {
        /// The peer.
        from: String,
        /// Why.
        source: KeyError,
    },
    /// Shares that decrypt to something else.
    #[error("shares from {from}: malformed ({reason})")]
    Malformed {
        /// The peer.
        from: String,
        /// The decoder's message.
        reason: String,
    },
    /// Shares for another point.
    #[error("shares from {0} are not at this silo's point")]
    WrongPoint(String),
    /// Too few peers shared to ever unmask.
    #[error("only {held} peers shared their secrets, threshold {threshold}: the round cannot be unmasked")]
    TooFewShares {
        /// Peers that shared.
        held: usize,
        /// The threshold.
        threshold: usize,
    },
    /// A weight outside (0, 1].
    #[error("weight {0}: must be in (0, 1]")]
    Weight(f64),
    /// A second masking with another weight.
    #[error("the update was masked with weight {before}; a second masking with {now} would reveal the difference")]
    Remask {
        /// The first weight.
        before: f64,
        /// The one asked now.
        now: f64,
    },
    /// The update is not finite.
    #[error("the update has a non-finite value ({value}) at index {index}: refusing to mask it")]
    NonFinite {
        /// Where.
        index: usize,
        /// What.
        value: f32,
    },
    /// Unmasking asked again with other lists.
    #[error("unmasking was already answered with other survivors: refusing to reveal both masks of a silo")]
    SecondReveal,
    /// A silo named survivor and dropped.
    #[error("{0} is named both a survivor and dropped: its self mask and its key must never both be revealed")]
    Both(String),
    /// This silo is not among the survivors.
    #[error("{0} is not among the survivors it is asked to unmask")]
    NotSurvivor(String),
    /// Too few survivors.
    #[error("{survivors} survivors, threshold {threshold}: too few to unmask")]
    TooFewSurvivors {
        /// Survivors named.
        survivors: usize,
        /// The threshold.
        threshold: usize,
    },
    /// A silo whose secrets this one does not hold.
    #[error("{of} did not share its secrets with {me}")]
    NotHeld {
        /// The silo.
        of: String,
        /// This silo.
        me: String,
    },
    /// Encoding the shares failed.
    #[error("encoding shares: {0}")]
    Encode(String),
    /// A key operation failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Splitting a secret failed.
    #[error(transparent)]
    Shamir(#[from] ShamirError),
    /// The ring is unusable.
    #[error(transparent)]
    Ring(#[from] QuantizeError),
}

/// What the silo agreed once the advertisements were checked.
struct Agreed {
    threshold: usize,
    /// The checked advertisements (U1).
    ads: BTreeMap<String, Advertisement>,
    /// Every advertised silo (U1), with its index (position in name order).
    index: BTreeMap<String, u32>,
    /// Seed agreed with each peer.
    pair_seeds: BTreeMap<String, [u8; 32]>,
    self_seed: [u8; 32],
    /// Shares held for each silo that shared (its own included), once received.
    held: BTreeMap<String, Escrow>,
    /// The ring, once received.
    quantizer: Option<Quantizer>,
    /// The weight and the masked update, packed as it travels.
    masked: Option<(f64, Vec<u8>)>,
    revealed: Option<(Vec<String>, Vec<String>)>,
}

/// One silo's state for one round.
pub struct Participant {
    round: u64,
    me: String,
    keys: RoundKeys,
    advertisement: Advertisement,
    agreed: Option<Agreed>,
}

impl std::fmt::Debug for Participant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Participant({} in round {})", self.me, self.round)
    }
}

impl Participant {
    /// Fresh keys for `round`, and their advertisement signed with `creds`.
    pub fn new(round: u64, creds: &NodeCredentials) -> Result<Self, ParticipateError> {
        let keys = RoundKeys::generate()?;
        let advertisement = keys.advertise(creds, round)?;
        Ok(Participant {
            round,
            me: creds.identity().name.clone(),
            keys,
            advertisement,
            agreed: None,
        })
    }

    /// The round.
    pub fn round(&self) -> u64 {
        self.round
    }

    /// The ring width, once the shares (and the ring) were delivered.
    pub fn bits(&self) -> Result<u32, ParticipateError> {
        self.agreed
            .as_ref()
            .and_then(|a| a.quantizer)
            .map(|q| q.bits())
            .ok_or(ParticipateError::NotDelivered(self.round))
    }

    /// What to advertise.
    pub fn advertisement(&self) -> &Advertisement {
        &self.advertisement
    }

    /// Checks the relayed advertisements and escrows this silo's secrets with the peers.
    pub fn share(
        &mut self,
        ca: &CaCheck,
        threshold: usize,
        advertisements: &[Advertisement],
    ) -> Result<Vec<SealedShares>, ParticipateError> {
        if self.agreed.is_some() {
            return Err(ParticipateError::SecondKeyList(self.round));
        }
        let mut ads: BTreeMap<String, &Advertisement> = BTreeMap::new();
        for ad in advertisements {
            ad.verify(ca, self.round)?;
            if ads.insert(ad.silo.clone(), ad).is_some() {
                return Err(ParticipateError::TwoAdvertisements(ad.silo.clone()));
            }
        }
        if ads.get(&self.me) != Some(&&self.advertisement) {
            return Err(ParticipateError::OwnAdvertisement(self.me.clone()));
        }
        let n = ads.len();
        if threshold < minimum_threshold(n) || threshold > n {
            return Err(ParticipateError::Threshold {
                threshold,
                n,
                min: minimum_threshold(n),
            });
        }
        let index: BTreeMap<String, u32> = ads
            .keys()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let mut rng = secure_rng();
        let self_seed: [u8; 32] = rand::Rng::random(&mut rng);
        let self_shares = split(&self_seed, threshold, n, &mut rng)?;
        let key_shares = split(&self.keys.mask_secret()?, threshold, n, &mut rng)?;
        let mut pair_seeds = BTreeMap::new();
        let mut held = BTreeMap::new();
        let mut sealed = Vec::new();
        for ((peer, ad), (s, k)) in ads.iter().zip(self_shares.into_iter().zip(key_shares)) {
            let escrow = Escrow {
                self_mask: s,
                mask_key: k,
            };
            if *peer == self.me {
                held.insert(self.me.clone(), escrow);
                continue;
            }
            pair_seeds.insert(peer.clone(), self.keys.mask_seed(ad)?);
            let plain = bincode::serde::encode_to_vec(&escrow, bincode::config::standard())
                .map_err(|e| ParticipateError::Encode(e.to_string()))?;
            let key = self.keys.share_key(ad)?;
            sealed.push(SealedShares {
                to: peer.clone(),
                ciphertext: seal(&key, &share_context(self.round, &self.me, peer), &plain)?,
            });
        }
        self.agreed = Some(Agreed {
            threshold,
            ads: ads.into_iter().map(|(k, v)| (k, v.clone())).collect(),
            index,
            pair_seeds,
            self_seed,
            held,
            quantizer: None,
            masked: None,
            revealed: None,
        });
        Ok(sealed)
    }

    /// Takes the shares peers escrowed with this silo, and the ring to sum in. The peers that
    /// sent shares are the ones this silo masks with.
    pub fn receive(
        &mut self,
        ring: RingSpec,
        shares: &[RelayedShares],
    ) -> Result<(), ParticipateError> {
        let (round, me, keys) = (self.round, self.me.clone(), &self.keys);
        let a = self
            .agreed
            .as_mut()
            .ok_or(ParticipateError::NoKeyList(round))?;
        if a.quantizer.is_some() {
            return Err(ParticipateError::SecondDelivery(round));
        }
        let q = Quantizer::new(ring.bits, ring.range, ring.max_silos as usize)?;
        if (ring.max_silos as usize) < a.index.len() {
            return Err(ParticipateError::RingTooSmall {
                ring: ring.max_silos,
                advertised: a.index.len(),
            });
        }
        let my_x = a.index[&me] as u64 + 1;
        let mut held = BTreeMap::new();
        for r in shares {
            let Some(ad) = a.ads.get(&r.from) else {
                return Err(ParticipateError::UnknownSender(r.from.clone()));
            };
            if r.from == me || held.contains_key(&r.from) {
                return Err(ParticipateError::RepeatedShares(r.from.clone()));
            }
            let key = keys.share_key(ad)?;
            let plain = open(&key, &share_context(round, &r.from, &me), &r.ciphertext).map_err(
                |source| ParticipateError::Undecryptable {
                    from: r.from.clone(),
                    source,
                },
            )?;
            let (escrow, _): (Escrow, usize) =
                bincode::serde::decode_from_slice(&plain, bincode::config::standard()).map_err(
                    |e| ParticipateError::Malformed {
                        from: r.from.clone(),
                        reason: e.to_string(),
                    },
                )?;
            if escrow.self_mask.x != my_x || escrow.mask_key.x != my_x {
                return Err(ParticipateError::WrongPoint(r.from.clone()));
            }
            held.insert(r.from.clone(), escrow);
        }
        if held.len() + 1 < a.threshold {
            return Err(ParticipateError::TooFewShares {
                held: held.len(),
                threshold: a.threshold,
            });
        }
        a.held.extend(held);
        a.quantizer = Some(q);
        Ok(())
    }

    /// The masked update, packed ([`pack`]): `update` × `weight`, each value clipped to the ring's range,
    /// quantised, plus the self mask and the pairwise masks with every peer that shared. The
    /// same weight gives the same masked update (it may be fetched again); another is refused.
    pub fn mask(&mut self, update: &[f32], weight: f64) -> Result<&[u8], ParticipateError> {
        let (name, round) = (self.me.clone(), self.round);
        let a = self.agreed_mut()?;
        let Some(q) = a.quantizer else {
            return Err(ParticipateError::NotDelivered(round));
        };
        if !(weight.is_finite() && weight > 0.0 && weight <= 1.0) {
            return Err(ParticipateError::Weight(weight));
        }
        if let Some((w, _)) = &a.masked {
            if *w != weight {
                return Err(ParticipateError::Remask {
                    before: *w,
                    now: weight,
                });
            }
        } else {
            // Checked once, when the update is first masked (later chunks reuse it).
            if let Some(i) = update.iter().position(|v| !v.is_finite()) {
                return Err(ParticipateError::NonFinite {
                    index: i,
                    value: update[i],
                });
            }
            let me = a.index[&name];
            let seeds = MaskSeeds {
                me,
                self_seed: a.self_seed,
                pairwise: a
                    .pair_seeds
                    .iter()
                    .filter(|(peer, _)| a.held.contains_key(*peer))
                    .map(|(peer, s)| (a.index[peer], *s))
                    .collect(),
            };
            let masked = mask_update(&q, q.encode_scaled(update, weight), &seeds);
            a.masked = Some((weight, pack(&masked, q.bits())));
        }
        Ok(a.masked.as_ref().map(|(_, m)| m.as_slice()).unwrap_or(&[]))
    }

    /// The shares for unmasking: self-mask shares of `survivors`, mask-key shares of
    /// `dropped`. Refused when the lists overlap, name silos that did not share, leave fewer
    /// than t survivors, or differ from an earlier request in this round.
    pub fn reveal(
        &mut self,
        survivors: &[String],
        dropped: &[String],
    ) -> Result<Vec<RevealedShare>, ParticipateError> {
        let me = self.me.clone();
        let a = self.agreed_mut()?;
        let asked = (survivors.to_vec(), dropped.to_vec());
        if let Some(before) = &a.revealed {
            if *before != asked {
                return Err(ParticipateError::SecondReveal);
            }
        }
        let s: BTreeSet<&String> = survivors.iter().collect();
        let d: BTreeSet<&String> = dropped.iter().collect();
        if let Some(both) = s.intersection(&d).next() {
            return Err(ParticipateError::Both((*both).clone()));
        }
        if !s.contains(&me) {
            return Err(ParticipateError::NotSurvivor(me));
        }
        if s.len() < a.threshold {
            return Err(ParticipateError::TooFewSurvivors {
                survivors: s.len(),
                threshold: a.threshold,
            });
        }
        let mut out = Vec::new();
        for (names, secret) in [(&s, Secret::SelfMask), (&d, Secret::MaskKey)] {
            for of in names.iter() {
                let e = a.held.get(*of).ok_or_else(|| ParticipateError::NotHeld {
                    of: (*of).clone(),
                    me: me.clone(),
                })?;
                out.push(RevealedShare {
                    of: (*of).clone(),
                    secret,
                    share: match secret {
                        Secret::SelfMask => e.self_mask.clone(),
                        Secret::MaskKey => e.mask_key.clone(),
                    },
                });
            }
        }
        a.revealed = Some(asked);
        Ok(out)
    }

    fn agreed_mut(&mut self) -> Result<&mut Agreed, ParticipateError> {
        let round = self.round;
        self.agreed
            .as_mut()
            .ok_or(ParticipateError::NoKeyList(round))
    }
}
