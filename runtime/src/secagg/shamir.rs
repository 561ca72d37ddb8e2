//! Shamir's t-of-n secret sharing over the prime field GF(p), p = 2^61 − 1.
//!
//! A 32-byte secret (a mask seed or a private key) is cut into five 7-byte limbs, each below p,
//! and each limb is shared with its own random polynomial of degree t − 1 (coefficients from
//! the OS-seeded generator). Any t shares give the secret back; t − 1 reveal nothing about it.

use rand::Rng;
use thiserror::Error;

/// The field's prime, 2^61 − 1.
pub const P: u64 = (1 << 61) - 1;
const LIMBS: usize = 5;
const LIMB_BYTES: usize = 7;

/// One share: the evaluation point x (1..=n) and the five limb values.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Share {
    /// The point (the holder's index, from 1).
    pub x: u64,
    /// The polynomial values at x, one per limb.
    pub y: [u64; LIMBS],
}

/// Why a secret cannot be shared or recovered.
#[derive(Debug, Error, PartialEq)]
pub enum ShamirError {
    /// t must be in 1..=n, and n below p.
    #[error("secret sharing: threshold {t} of {n} holders; need 1 ≤ t ≤ n")]
    Threshold {
        /// The threshold.
        t: usize,
        /// The holders.
        n: usize,
    },
    /// Fewer shares than the threshold.
    #[error("secret sharing: {got} share(s), the threshold is {t}")]
    TooFew {
        /// Shares given.
        got: usize,
        /// The threshold.
        t: usize,
    },
    /// Two shares at one point, or a point 0, or a value outside the field.
    #[error("secret sharing: malformed shares ({0})")]
    Malformed(String),
}

fn add(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P {
        s - P
    } else {
        s
    }
}

fn sub(a: u64, b: u64) -> u64 {
    if a >= b {
        a - b
    } else {
        a + P - b
    }
}

fn mul(a: u64, b: u64) -> u64 {
    ((a as u128 * b as u128) % P as u128) as u64
}

fn pow(mut b: u64, mut e: u64) -> u64 {
    let mut r = 1;
    while e > 0 {
        if e & 1 == 1 {
            r = mul(r, b);
        }
        b = mul(b, b);
        e >>= 1;
    }
    r
}

fn inv(a: u64) -> u64 {
    pow(a, P - 2)
}

fn limbs(secret: &[u8; 32]) -> [u64; LIMBS] {
    let mut padded = [0u8; LIMBS * LIMB_BYTES];
    padded[..32].copy_from_slice(secret);
    let mut out = [0u64; LIMBS];
    for (i, l) in out.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b[..LIMB_BYTES].copy_from_slice(&padded[i * LIMB_BYTES..(i + 1) * LIMB_BYTES]);
        *l = u64::from_le_bytes(b);
    }
    out
}

fn unlimbs(l: &[u64; LIMBS]) -> Result<[u8; 32], ShamirError> {
    let mut padded = [0u8; LIMBS * LIMB_BYTES];
    for (i, v) in l.iter().enumerate() {
        let b = v.to_le_bytes();
        if b[LIMB_BYTES] != 0 {
            return Err(ShamirError::Malformed("a limb does not fit 7 bytes".into()));
        }
        padded[i * LIMB_BYTES..(i + 1) * LIMB_BYTES].copy_from_slice(&b[..LIMB_BYTES]);
    }
    if padded[32..].iter().any(|b| *b != 0) {
        return Err(ShamirError::Malformed("the padding is not zero".into()));
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(&padded[..32]);
    Ok(out)
}

/// Splits `secret` into `n` shares, any `t` of which recover it. Pass an unpredictable `rng`
/// ([`crate::privacy::noise::secure_rng`]): the coefficients are what hides the secret.
pub fn split<R: Rng + ?Sized>(
    secret: &[u8; 32],
    t: usize,
    n: usize,
    rng: &mut R,
) -> Result<Vec<Share>, ShamirError> {
    if t == 0 || t > n || n as u64 >= P {
        return Err(ShamirError::Threshold { t, n });
    }
    let s = limbs(secret);
    // coefficients[limb][k], k = 0 is the secret limb.
    let coeffs: Vec<Vec<u64>> = s
        .iter()
        .map(|c0| {
            std::iter::once(*c0)
                .chain((1..t).map(|_| rng.random_range(0..P)))
                .collect()
        })
        .collect();
    Ok((1..=n as u64)
        .map(|x| {
            let mut y = [0u64; LIMBS];
            for (l, c) in coeffs.iter().enumerate() {
                // Horner.
                y[l] = c.iter().rev().fold(0, |acc, a| add(mul(acc, x), *a));
            }
            Share { x, y }
        })
        .collect())
}

/// Recovers the secret from at least `t` shares (Lagrange interpolation at 0).
pub fn combine(shares: &[Share], t: usize) -> Result<[u8; 32], ShamirError> {
    if shares.len() < t || t == 0 {
        return Err(ShamirError::TooFew {
            got: shares.len(),
            t,
        });
    }
    let used = &shares[..t];
    for (i, a) in used.iter().enumerate() {
        if a.x == 0 || a.x >= P || a.y.iter().any(|v| *v >= P) {
            return Err(ShamirError::Malformed(format!("share at x = {}", a.x)));
        }
        if used[..i].iter().any(|b| b.x == a.x) {
            return Err(ShamirError::Malformed(format!("two shares at x = {}", a.x)));
        }
    }
    let mut out = [0u64; LIMBS];
    for (j, sj) in used.iter().enumerate() {
        // Lagrange basis at 0: Π_{m≠j} x_m / (x_m − x_j).
        let (mut num, mut den) = (1u64, 1u64);
        for (m, sm) in used.iter().enumerate() {
            if m != j {
                num = mul(num, sm.x);
                den = mul(den, sub(sm.x, sj.x));
            }
        }
        let basis = mul(num, inv(den));
        for (o, y) in out.iter_mut().zip(&sj.y) {
            *o = add(*o, mul(*y, basis));
        }
    }
    unlimbs(&out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn any_t_shares_recover_the_secret_and_fewer_do_not() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut secret = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rng, &mut secret);
        let shares = split(&secret, 4, 6, &mut rng).unwrap();
        assert_eq!(shares.len(), 6);
        // Every 4-subset of the 6.
        for mask in 0u32..64 {
            if mask.count_ones() != 4 {
                continue;
            }
            let pick: Vec<Share> = (0..6)
                .filter(|i| mask & (1 << i) != 0)
                .map(|i| shares[i].clone())
                .collect();
            assert_eq!(combine(&pick, 4).unwrap(), secret, "subset {mask:b}");
        }
        assert_eq!(
            combine(&shares[..3], 4),
            Err(ShamirError::TooFew { got: 3, t: 4 })
        );
        // Three shares used as if the threshold were three interpolate something else.
        assert_ne!(combine(&shares[..3], 3).ok(), Some(secret));
        let mut dup = shares[..4].to_vec();
        dup[1] = dup[0].clone();
        assert!(matches!(combine(&dup, 4), Err(ShamirError::Malformed(_))));
        assert_eq!(
            split(&secret, 7, 6, &mut rng).unwrap_err(),
            ShamirError::Threshold { t: 7, n: 6 }
        );
    }

    #[test]
    fn field_arithmetic_is_that_of_gf_p() {
        assert_eq!(mul(P - 1, P - 1), 1);
        for a in [1u64, 2, 12345, P - 2] {
            assert_eq!(mul(a, inv(a)), 1);
        }
        assert_eq!(sub(0, 1), P - 1);
        assert_eq!(add(P - 1, 1), 0);
    }
}
