//! The server's side of one secure-aggregation round: it relays advertisements and encrypted
//! shares it cannot read, sums masked updates it cannot read, and — once the survivors reveal
//! enough shares — removes the masks from the sum, never from a single update.
//!
//! The sets of Bonawitz et al. 2017: U1 advertised keys, U2 escrowed shares, U3 sent a masked
//! update. Every step needs at least t silos; with fewer the round is abandoned with the reason.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::{mask_seed_from_secret, Advertisement, KeyError};
use super::masking::{remove_masks, MaskError};
use super::messages::{RelayedShares, RevealedShare, SealedShares, Secret};
use super::quantize::{QuantizeError, Quantizer};
use super::shamir::{combine, Share};

/// Why the collector refuses a step of the protocol.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CollectError {
    /// An advertisement for another round.
    #[error("{silo} advertised keys for round {theirs}, this is round {ours}")]
    WrongRound {
        /// Who advertised.
        silo: String,
        /// The round it names.
        theirs: u64,
        /// This round.
        ours: u64,
    },
    /// Fewer than t silos took a step: nothing can be unmasked.
    #[error("secure aggregation: only {got} silo(s) {what}, the threshold is {threshold}: the round is abandoned, no update can be unmasked")]
    BelowThreshold {
        /// How many did.
        got: usize,
        /// What they did.
        what: &'static str,
        /// t.
        threshold: usize,
    },
    /// Shares from a silo that did not advertise, or a second time.
    #[error("unexpected shares from {0}")]
    UnexpectedShares(String),
    /// Shares not addressed to exactly the other advertisers.
    #[error("{from} sent shares for {sent}; one for each of {expected} was expected")]
    WrongRecipients {
        /// Who sent them.
        from: String,
        /// For whom.
        sent: String,
        /// For whom they should have been.
        expected: String,
    },
    /// A masked update from a silo that escrowed nothing.
    #[error("{0} did not escrow its secrets this round")]
    NotEscrowed(String),
    /// A second masked update, or one after collection closed.
    #[error("a second masked update from {0}")]
    SecondUpdate(String),
    /// A weight that is not a positive number.
    #[error("{silo}'s weight {weight} is not a positive number")]
    BadWeight {
        /// The silo.
        silo: String,
        /// Its weight.
        weight: f64,
    },
    /// A masked update that is not ring values of the model's size.
    #[error("{silo}'s masked update: {source}")]
    Masked {
        /// The silo.
        silo: String,
        /// What is wrong with it.
        source: QuantizeError,
    },
    /// Unmasking shares before collection closed.
    #[error("shares revealed before collection closed")]
    RevealedEarly,
    /// Unmasking shares from a non-survivor, or a second time.
    #[error("unexpected unmasking shares from {0}")]
    UnexpectedReveal(String),
    /// A share the unmasking did not ask for.
    #[error("{from} revealed a share the unmasking did not ask for ({secret} of {of})")]
    UnaskedShare {
        /// Who revealed it.
        from: String,
        /// Which secret.
        secret: String,
        /// Whose.
        of: String,
    },
    /// `finish` before `unmasking`.
    #[error("unmasking was never planned")]
    NotPlanned,
    /// A secret that its shares do not recover.
    #[error("recovering {of}'s {secret}: {reason}")]
    Recovery {
        /// Whose secret.
        of: String,
        /// Which.
        secret: String,
        /// Why not.
        reason: String,
    },
    /// A survivor without an advertisement.
    #[error("no advertisement of {0}")]
    NoAdvertisement(String),
    /// A key operation failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The masks cannot be removed.
    #[error(transparent)]
    Mask(#[from] MaskError),
}

/// Server state for one round.
#[derive(Debug)]
pub struct Collector {
    round: u64,
    threshold: usize,
    q: Quantizer,
    ads: BTreeMap<String, Advertisement>,
    index: BTreeMap<String, u32>,
    inbox: BTreeMap<String, Vec<RelayedShares>>,
    shared: BTreeSet<String>,
    sum: Vec<u64>,
    weights: BTreeMap<String, f64>,
    plan: Option<(BTreeSet<String>, BTreeSet<String>)>,
    revealed: BTreeMap<(String, Secret), Vec<Share>>,
    revealers: BTreeSet<String>,
}

impl Collector {
    /// A round summing updates of `len` values in `q`'s ring, unmaskable by `threshold` silos.
    pub fn new(round: u64, threshold: usize, q: Quantizer, len: usize) -> Self {
        Collector {
            round,
            threshold,
            q,
            ads: BTreeMap::new(),
            index: BTreeMap::new(),
            inbox: BTreeMap::new(),
            shared: BTreeSet::new(),
            sum: vec![0; len],
            weights: BTreeMap::new(),
            plan: None,
            revealed: BTreeMap::new(),
            revealers: BTreeSet::new(),
        }
    }

    /// The threshold t.
    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Takes the advertisements that arrived (U1). Fewer than t: the round cannot go on.
    pub fn advertised(&mut self, ads: Vec<Advertisement>) -> Result<(), CollectError> {
        for ad in ads {
            if ad.round != self.round {
                return Err(CollectError::WrongRound {
                    silo: ad.silo,
                    theirs: ad.round,
                    ours: self.round,
                });
            }
            self.ads.insert(ad.silo.clone(), ad);
        }
        self.index = self
            .ads
            .keys()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        self.at_least(self.ads.len(), "advertised keys")
    }

    /// The advertisements to relay to every silo of U1.
    pub fn advertisements(&self) -> Vec<Advertisement> {
        self.ads.values().cloned().collect()
    }

    /// Takes `from`'s encrypted shares: exactly one for every other silo of U1.
    pub fn shared(&mut self, from: &str, sealed: Vec<SealedShares>) -> Result<(), CollectError> {
        if !self.ads.contains_key(from) || self.shared.contains(from) {
            return Err(CollectError::UnexpectedShares(from.to_string()));
        }
        let to: BTreeSet<&str> = sealed.iter().map(|s| s.to.as_str()).collect();
        let want: BTreeSet<&str> = self
            .ads
            .keys()
            .map(String::as_str)
            .filter(|s| *s != from)
            .collect();
        if to != want || sealed.len() != want.len() {
            return Err(CollectError::WrongRecipients {
                from: from.to_string(),
                sent: format!("{to:?}"),
                expected: format!("{want:?}"),
            });
        }
        for s in sealed {
            self.inbox.entry(s.to).or_default().push(RelayedShares {
                from: from.to_string(),
                ciphertext: s.ciphertext,
            });
        }
        self.shared.insert(from.to_string());
        Ok(())
    }

    /// After the sharing step: at least t silos (U2) must have escrowed their secrets.
    pub fn sharing_closed(&mut self) -> Result<(), CollectError> {
        // Shares from silos that advertised but did not escrow are never relayed.
        self.at_least(self.shared.len(), "escrowed their secrets")
    }

    /// The shares relayed to `to`: those of every silo of U2 (but itself).
    pub fn relayed_to(&self, to: &str) -> Vec<RelayedShares> {
        self.inbox
            .get(to)
            .map(|v| {
                v.iter()
                    .filter(|r| self.shared.contains(&r.from))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Adds `silo`'s masked update (weighed `weight` by its silo), packed as it travels, to
    /// the sum.
    pub fn fold(&mut self, silo: &str, packed: &[u8], weight: f64) -> Result<(), CollectError> {
        if !self.shared.contains(silo) {
            return Err(CollectError::NotEscrowed(silo.to_string()));
        }
        if self.plan.is_some() || self.weights.contains_key(silo) {
            return Err(CollectError::SecondUpdate(silo.to_string()));
        }
        if !(weight.is_finite() && weight > 0.0) {
            return Err(CollectError::BadWeight {
                silo: silo.to_string(),
                weight,
            });
        }
        self.q
            .add_packed(&mut self.sum, packed)
            .map_err(|source| CollectError::Masked {
                silo: silo.to_string(),
                source,
            })?;
        self.weights.insert(silo.to_string(), weight);
        Ok(())
    }

    /// Closes collection: the survivors (U3, whose masked updates are in the sum) and the silos
    /// that escrowed secrets but sent nothing. Fewer than t survivors: the round is abandoned.
    pub fn unmasking(&mut self) -> Result<(Vec<String>, Vec<String>), CollectError> {
        self.at_least(self.weights.len(), "sent masked updates")?;
        let survivors: BTreeSet<String> = self.weights.keys().cloned().collect();
        let dropped: BTreeSet<String> = self.shared.difference(&survivors).cloned().collect();
        let out = (
            survivors.iter().cloned().collect(),
            dropped.iter().cloned().collect(),
        );
        self.plan = Some((survivors, dropped));
        Ok(out)
    }

    /// Takes the shares survivor `from` revealed; each must be one the plan asks for, at
    /// `from`'s point.
    pub fn revealed(&mut self, from: &str, shares: Vec<RevealedShare>) -> Result<(), CollectError> {
        let Some((survivors, dropped)) = &self.plan else {
            return Err(CollectError::RevealedEarly);
        };
        if !survivors.contains(from) || !self.revealers.insert(from.to_string()) {
            return Err(CollectError::UnexpectedReveal(from.to_string()));
        }
        let x = self.index.get(from).map_or(0, |i| *i as u64 + 1);
        for r in &shares {
            let asked = match r.secret {
                Secret::SelfMask => survivors.contains(&r.of),
                Secret::MaskKey => dropped.contains(&r.of),
            };
            if !asked || r.share.x != x {
                return Err(CollectError::UnaskedShare {
                    from: from.to_string(),
                    secret: format!("{:?}", r.secret),
                    of: r.of.clone(),
                });
            }
        }
        for r in shares {
            self.revealed
                .entry((r.of, r.secret))
                .or_default()
                .push(r.share);
        }
        Ok(())
    }

    /// The weighted mean of the survivors' updates, Σ wᵢxᵢ / Σ wᵢ (each wᵢxᵢ clipped to the
    /// range and quantised).
    pub fn finish(mut self) -> Result<Vec<f32>, CollectError> {
        let Some((survivors, dropped)) = self.plan.take() else {
            return Err(CollectError::NotPlanned);
        };
        self.at_least(self.revealers.len(), "revealed their unmasking shares")?;
        let mut recover = |of: &String, secret: Secret| -> Result<[u8; 32], CollectError> {
            let shares = self
                .revealed
                .remove(&(of.clone(), secret))
                .unwrap_or_default();
            combine(&shares, self.threshold).map_err(|e| CollectError::Recovery {
                of: of.clone(),
                secret: format!("{secret:?}"),
                reason: e.to_string(),
            })
        };
        let idx = |s: &String| self.index.get(s).copied().unwrap_or(u32::MAX);
        let mut self_seeds = BTreeMap::new();
        for s in &survivors {
            self_seeds.insert(idx(s), recover(s, Secret::SelfMask)?);
        }
        let mut pair = BTreeMap::new();
        for d in &dropped {
            let secret = recover(d, Secret::MaskKey)?;
            let mut seeds = BTreeMap::new();
            for s in &survivors {
                let ad = self
                    .ads
                    .get(s)
                    .ok_or_else(|| CollectError::NoAdvertisement(s.clone()))?;
                seeds.insert(idx(s), mask_seed_from_secret(&secret, ad)?);
            }
            pair.insert(idx(d), seeds);
        }
        remove_masks(&self.q, &mut self.sum, &self_seeds, &pair)?;
        let total: f64 = self.weights.values().sum();
        Ok(self.q.decode_mean(&self.sum, survivors.len(), total))
    }

    fn at_least(&self, got: usize, what: &'static str) -> Result<(), CollectError> {
        if got < self.threshold {
            Err(CollectError::BelowThreshold {
                got,
                what,
                threshold: self.threshold,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;
    use crate::identity::signature::tests::kit;
    use crate::identity::signature::CaCheck;
    use crate::identity::Role;
    use crate::secagg::keys::RoundKeys;
    use crate::secagg::messages::RingSpec;
    use crate::secagg::participant::{Participant, ParticipateError};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    const RING: RingSpec = RingSpec {
        bits: 32,
        range: 1.0,
        max_silos: 6,
    };

    struct Silos {
        ca: CaCheck,
        parts: Vec<Participant>,
        updates: Vec<Vec<f32>>,
        weights: Vec<f64>,
    }

    fn silos(n: usize, len: usize) -> Silos {
        let (ca, _) = CertificateAuthority::generate("c", 30).unwrap();
        let mut rng = ChaCha20Rng::seed_from_u64(17);
        let kits: Vec<_> = (0..n)
            .map(|i| kit(&ca, &format!("bank-{i}"), Role::Silo))
            .collect();
        Silos {
            ca: CaCheck::new(kits[0].roots()),
            parts: kits
                .iter()
                .map(|k| Participant::new(5, k).unwrap())
                .collect(),
            updates: (0..n)
                .map(|_| (0..len).map(|_| rng.random_range(-0.5..0.5)).collect())
                .collect(),
            weights: (0..n).map(|i| (i + 1) as f64 / n as f64).collect(),
        }
    }

    /// Runs a round of `s` in which the silos in `gone` stop answering right after escrowing
    /// their shares. `Ok`: the unmasked mean, and the exact quantised mean it must equal.
    fn round(
        s: &mut Silos,
        t: usize,
        gone: &[usize],
    ) -> Result<(Vec<f32>, Vec<f32>), Box<dyn std::error::Error>> {
        let len = s.updates[0].len();
        let q = Quantizer::new(RING.bits, RING.range, RING.max_silos as usize).unwrap();
        let mut c = Collector::new(5, t, q, len);
        c.advertised(s.parts.iter().map(|p| p.advertisement().clone()).collect())?;
        let ads = c.advertisements();
        for p in s.parts.iter_mut() {
            let name = p.advertisement().silo.clone();
            let sealed = p.share(&s.ca, t, &ads)?;
            c.shared(&name, sealed)?;
        }
        c.sharing_closed()?;
        for (i, p) in s.parts.iter_mut().enumerate() {
            if gone.contains(&i) {
                continue;
            }
            p.receive(RING, &c.relayed_to(&format!("bank-{i}")))?;
            let masked = p.mask(&s.updates[i], s.weights[i])?.to_vec();
            c.fold(&format!("bank-{i}"), &masked, s.weights[i])?;
        }
        let (survivors, dropped) = c.unmasking()?;
        for (i, p) in s.parts.iter_mut().enumerate() {
            if !gone.contains(&i) {
                c.revealed(&format!("bank-{i}"), p.reveal(&survivors, &dropped)?)?;
            }
        }
        let mean = c.finish()?;
        // The plain computation: the same quantised, weighted values summed without masks.
        let mut sum = vec![0u64; len];
        let mut total = 0.0;
        for i in (0..s.parts.len()).filter(|i| !gone.contains(i)) {
            q.add_into(&mut sum, &q.encode_scaled(&s.updates[i], s.weights[i]));
            total += s.weights[i];
        }
        let want = q.decode_mean(&sum, s.parts.len() - gone.len(), total);
        Ok((mean, want))
    }

    #[test]
    fn six_silos_threshold_four_survive_two_dropouts_and_abandon_at_three() {
        for gone in [vec![], vec![3], vec![0, 5]] {
            let mut s = silos(6, 2000);
            let (got, want) = round(&mut s, 4, &gone).unwrap();
            assert_eq!(got, want, "dropped after sharing: {gone:?}");
            // And it is the weighted mean to within the quantisation error.
            let total: f64 = (0..6)
                .filter(|i| !gone.contains(i))
                .map(|i| s.weights[i])
                .sum();
            for (k, g) in got.iter().enumerate().step_by(97) {
                let plain: f64 = (0..6)
                    .filter(|i| !gone.contains(i))
                    .map(|i| s.updates[i][k] as f64 * s.weights[i])
                    .sum::<f64>()
                    / total;
                assert!((*g as f64 - plain).abs() < 1e-5, "{g} vs {plain}");
            }
        }
        let mut s = silos(6, 100);
        let e = round(&mut s, 4, &[1, 2, 4]).unwrap_err().to_string();
        assert!(
            e.contains("only 3 silo(s) sent masked updates, the threshold is 4"),
            "{e}"
        );
    }

    #[test]
    fn a_substituted_key_is_detected_by_every_honest_silo() {
        let mut s = silos(3, 10);
        let mut ads: Vec<Advertisement> =
            s.parts.iter().map(|p| p.advertisement().clone()).collect();
        let evil = RoundKeys::generate().unwrap();
        let (ca, _) = CertificateAuthority::generate("evil", 30).unwrap();
        ads[1].s_public = evil
            .advertise(&kit(&ca, "bank-1", Role::Silo), 5)
            .unwrap()
            .s_public;
        let e = s.parts[0].share(&s.ca, 2, &ads).unwrap_err();
        assert!(matches!(e, ParticipateError::Key(_)), "{e}");
        let e = e.to_string();
        assert!(e.contains("bank-1") && e.contains("substituted"), "{e}");
    }

    #[test]
    fn silos_refuse_a_low_threshold_and_never_reveal_both_masks_of_a_silo() {
        let mut s = silos(4, 10);
        let ads: Vec<Advertisement> = s.parts.iter().map(|p| p.advertisement().clone()).collect();
        let e = s.parts[0].share(&s.ca, 2, &ads).unwrap_err();
        assert!(
            matches!(
                e,
                ParticipateError::Threshold {
                    threshold: 2,
                    n: 4,
                    min: 3
                }
            ),
            "{e}"
        );
        let q = Quantizer::new(32, 1.0, 6).unwrap();
        let mut c = Collector::new(5, 3, q, 10);
        c.advertised(ads.clone()).unwrap();
        for p in s.parts.iter_mut() {
            let name = p.advertisement().silo.clone();
            let sealed = p.share(&s.ca, 3, &ads).unwrap();
            c.shared(&name, sealed).unwrap();
        }
        let p = &mut s.parts[0];
        p.receive(RING, &c.relayed_to("bank-0")).unwrap();
        let names = |v: &[usize]| v.iter().map(|i| format!("bank-{i}")).collect::<Vec<_>>();
        let e = p.reveal(&names(&[0, 1, 2]), &names(&[2, 3])).unwrap_err();
        assert!(
            matches!(e, ParticipateError::Both(ref s) if s == "bank-2"),
            "{e}"
        );
        p.reveal(&names(&[0, 1, 2]), &names(&[3])).unwrap();
        // Asked again with bank-3 now a survivor and bank-2 dropped: refused.
        let e = p.reveal(&names(&[0, 1, 3]), &names(&[2])).unwrap_err();
        assert!(matches!(e, ParticipateError::SecondReveal), "{e}");
        // A tampered relayed share does not decrypt.
        let mut relayed = c.relayed_to("bank-1");
        relayed[0].ciphertext[3] ^= 1;
        let e = s.parts[1].receive(RING, &relayed).unwrap_err();
        assert!(matches!(e, ParticipateError::Undecryptable { .. }), "{e}");
        assert!(e.to_string().contains("altered"), "{e}");
    }

    #[test]
    fn the_server_refuses_shares_it_did_not_ask_for() {
        let mut s = silos(3, 10);
        let q = Quantizer::new(32, 1.0, 6).unwrap();
        let mut c = Collector::new(5, 2, q, 10);
        c.advertised(s.parts.iter().map(|p| p.advertisement().clone()).collect())
            .unwrap();
        let ads = c.advertisements();
        for p in s.parts.iter_mut() {
            let name = p.advertisement().silo.clone();
            let mut sealed = p.share(&s.ca, 2, &ads).unwrap();
            // Leaving a peer out is refused, and nothing of it is kept.
            let last = sealed.pop().unwrap();
            let e = c.shared(&name, sealed.clone()).unwrap_err();
            assert!(matches!(e, CollectError::WrongRecipients { .. }), "{e}");
            sealed.push(last);
            c.shared(&name, sealed).unwrap();
        }
        // Sharing twice is refused.
        assert_eq!(
            c.shared("bank-0", vec![]),
            Err(CollectError::UnexpectedShares("bank-0".into()))
        );
        for (i, p) in s.parts.iter_mut().enumerate().take(2) {
            p.receive(RING, &c.relayed_to(&format!("bank-{i}")))
                .unwrap();
            let m = p.mask(&s.updates[i], 1.0).unwrap().to_vec();
            assert!(matches!(
                c.fold(&format!("bank-{i}"), &m[4..], 1.0),
                Err(CollectError::Masked {
                    source: QuantizeError::Packed { .. },
                    ..
                })
            ));
            c.fold(&format!("bank-{i}"), &m, 1.0).unwrap();
            assert!(matches!(
                p.mask(&s.updates[i], 0.5),
                Err(ParticipateError::Remask { .. })
            ));
        }
        let (survivors, dropped) = c.unmasking().unwrap();
        assert_eq!(dropped, vec!["bank-2".to_string()]);
        let mut shares = s.parts[0].reveal(&survivors, &dropped).unwrap();
        shares[0].secret = Secret::MaskKey;
        let e = c.revealed("bank-0", shares).unwrap_err();
        assert!(matches!(e, CollectError::UnaskedShare { .. }), "{e}");
    }
}
