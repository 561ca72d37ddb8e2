//! Masking and unmasking (Bonawitz et al. 2017, §4): silo i sends
//!
//! ```text
//! y_i = x_i + PRG(b_i) + Σ_{j > i} PRG(s_ij) − Σ_{j < i} PRG(s_ij)      (in Z_{2^b})
//! ```
//!
//! where b_i is its self-mask seed and s_ij = s_ji the seed it agreed with silo j. Summed over
//! all silos the pairwise masks cancel. When silos drop out after the masks were agreed, the
//! server removes, for each survivor, its self mask (from b_i, recovered from shares) and, for
//! each dropped silo d, the pairwise masks d shared with the survivors (from d's seeds,
//! recovered from shares of d's key) — never both for the same silo.

use std::collections::BTreeMap;

use super::prg::apply_all;
use super::quantize::Quantizer;

/// What silo `me` knows when it masks: its self seed and one seed per peer.
#[derive(Debug, Clone)]
pub struct MaskSeeds {
    /// Its index.
    pub me: u32,
    /// b_i.
    pub self_seed: [u8; 32],
    /// s_ij per peer index j.
    pub pairwise: BTreeMap<u32, [u8; 32]>,
}

/// Masks encoded update `x` (already quantised).
pub fn mask_update(q: &Quantizer, x: Vec<u64>, seeds: &MaskSeeds) -> Vec<u64> {
    let mut y = x;
    let masks: Vec<([u8; 32], bool)> = std::iter::once((seeds.self_seed, false))
        .chain(seeds.pairwise.iter().map(|(j, s)| (*s, *j < seeds.me)))
        .collect();
    apply_all(&masks, q.bits(), &mut y);
    y
}

/// Why masks cannot be removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskError {
    /// A silo would have both its self mask and its pairwise masks revealed.
    #[error("silo {0} is both a survivor and dropped: its self mask and its pairwise masks must never both be revealed")]
    BothRevealed(u32),
    /// A pairwise seed was not recovered.
    #[error("no recovered seed between dropped silo {dropped} and survivor {survivor}")]
    MissingSeed {
        /// The dropped silo.
        dropped: u32,
        /// The survivor.
        survivor: u32,
    },
}

/// The server's unmasking. `sum` is the ring sum of the survivors' masked updates;
/// `self_seeds` holds each survivor's self seed (its keys are the survivors), `dropped[d][i]`
/// the seed s_di between dropped silo d and survivor i. Leaves the plain sum of the survivors'
/// encodings in `sum`.
pub fn remove_masks(
    q: &Quantizer,
    sum: &mut [u64],
    self_seeds: &BTreeMap<u32, [u8; 32]>,
    dropped: &BTreeMap<u32, BTreeMap<u32, [u8; 32]>>,
) -> Result<(), MaskError> {
    if let Some(both) = dropped.keys().find(|d| self_seeds.contains_key(d)) {
        return Err(MaskError::BothRevealed(*both));
    }
    let mut masks: Vec<([u8; 32], bool)> = self_seeds.values().map(|b| (*b, true)).collect();
    // Survivor i added +PRG(s_id) if d > i, −PRG(s_id) if d < i: undo it.
    for (d, seeds) in dropped {
        for i in self_seeds.keys() {
            let s = seeds.get(i).ok_or(MaskError::MissingSeed {
                dropped: *d,
                survivor: *i,
            })?;
            masks.push((*s, d > i));
        }
    }
    apply_all(&masks, q.bits(), sum);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secagg::shamir::{combine, split};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    /// Six silos with t = 4: the pairwise seeds and self seeds, each shared 4-of-6.
    struct Setup {
        q: Quantizer,
        x: BTreeMap<u32, Vec<u64>>,
        seeds: BTreeMap<u32, MaskSeeds>,
    }

    fn setup(n: u32, len: usize) -> Setup {
        let mut rng = ChaCha20Rng::seed_from_u64(6);
        let q = Quantizer::new(32, 1.0, n as usize).unwrap();
        let mut pair: BTreeMap<(u32, u32), [u8; 32]> = BTreeMap::new();
        for i in 0..n {
            for j in i + 1..n {
                pair.insert((i, j), rng.random());
            }
        }
        let seeds = (0..n)
            .map(|i| {
                let pairwise = (0..n)
                    .filter(|j| *j != i)
                    .map(|j| (j, pair[&(i.min(j), i.max(j))]))
                    .collect();
                (
                    i,
                    MaskSeeds {
                        me: i,
                        self_seed: rng.random(),
                        pairwise,
                    },
                )
            })
            .collect();
        let x = (0..n)
            .map(|i| {
                let v: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
                (i, q.encode(&v))
            })
            .collect();
        Setup { q, x, seeds }
    }

    /// Runs the round with `drop` silos gone after masking was agreed; seeds are recovered
    /// from t-of-n Shamir shares held by the survivors. `None`: fewer than t survivors.
    fn round(s: &Setup, drop: &[u32], t: usize) -> Option<(Vec<u64>, Vec<u64>)> {
        let n = s.seeds.len();
        let mut rng = ChaCha20Rng::seed_from_u64(9);
        let survivors: Vec<u32> = (0..n as u32).filter(|i| !drop.contains(i)).collect();
        let len = s.x[&0].len();
        let masked: BTreeMap<u32, Vec<u64>> = survivors
            .iter()
            .map(|i| (*i, mask_update(&s.q, s.x[i].clone(), &s.seeds[i])))
            .collect();
        // Each silo shared its self seed and each pairwise seed t-of-n; survivors reveal the
        // shares the server asks for.
        let recover = |secret: &[u8; 32], rng: &mut ChaCha20Rng| -> Option<[u8; 32]> {
            let shares = split(secret, t, n, rng).ok()?;
            let held: Vec<_> = shares
                .into_iter()
                .filter(|sh| survivors.contains(&(sh.x as u32 - 1)))
                .collect();
            combine(&held, t).ok()
        };
        let mut self_seeds = BTreeMap::new();
        for i in &survivors {
            self_seeds.insert(*i, recover(&s.seeds[i].self_seed, &mut rng)?);
        }
        let mut dropped = BTreeMap::new();
        for d in drop {
            let mut per = BTreeMap::new();
            for i in &survivors {
                per.insert(*i, recover(&s.seeds[d].pairwise[i], &mut rng)?);
            }
            dropped.insert(*d, per);
        }
        let mut got = vec![0u64; len];
        for y in masked.values() {
            s.q.add_into(&mut got, y);
        }
        remove_masks(&s.q, &mut got, &self_seeds, &dropped).ok()?;
        let mut want = vec![0u64; len];
        for i in &survivors {
            s.q.add_into(&mut want, &s.x[i]);
        }
        Some((got, want))
    }

    #[test]
    fn the_unmasked_sum_equals_the_plain_sum_exactly_with_up_to_n_minus_t_dropouts() {
        let s = setup(6, 1000);
        for drop in [vec![], vec![2], vec![0, 5]] {
            let (got, want) = round(&s, &drop, 4).expect("enough survivors");
            assert_eq!(got, want, "dropped {drop:?}");
        }
        // Three dropped: three survivors hold fewer than t = 4 shares; nothing is recovered.
        assert!(round(&s, &[1, 2, 3], 4).is_none());
    }

    #[test]
    fn a_silo_cannot_be_both_unmasked_and_dropped() {
        let s = setup(3, 10);
        let mut sum = mask_update(&s.q, s.x[&0].clone(), &s.seeds[&0]);
        let selfs = [(0, s.seeds[&0].self_seed)].into_iter().collect();
        let dropped = [(0, BTreeMap::new())].into_iter().collect();
        let e = remove_masks(&s.q, &mut sum, &selfs, &dropped).unwrap_err();
        assert!(matches!(e, MaskError::BothRevealed(_)), "{e}");
    }
}
