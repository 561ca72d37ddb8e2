//! What travels in a secure-aggregation round besides the advertisements: the ring, the
//! encrypted Shamir shares (relayed by the coordinator, which cannot read them), and the
//! shares survivors reveal for unmasking.

use serde::{Deserialize, Serialize};

use super::shamir::Share;

/// The fixed-point ring the round sums in, fixed before any silo trains.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RingSpec {
    /// Ring width b: values live in Z_{2^b}.
    pub bits: u32,
    /// Each value of a weighted update is clipped to [−range, range].
    pub range: f64,
    /// The most silos summed (the cohort), so the sum never wraps.
    pub max_silos: u32,
}

/// A silo's shares for one peer, encrypted to that peer (ChaCha20-Poly1305 under the key their
/// advertised X25519 keys agree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShares {
    /// The peer they are for.
    pub to: String,
    /// The encrypted [`Escrow`].
    pub ciphertext: Vec<u8>,
}

/// Shares relayed to a silo: who sent them, still encrypted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayedShares {
    /// The silo whose secrets they are shares of.
    pub from: String,
    /// The encrypted [`Escrow`].
    pub ciphertext: Vec<u8>,
}

/// What a silo escrows with each peer: one share of its self-mask seed, one of its mask key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    /// A share of the self-mask seed b_i.
    pub self_mask: Share,
    /// A share of the private X25519 key the pairwise masks were agreed with.
    pub mask_key: Share,
}

/// Which of a silo's escrowed secrets a revealed share belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Secret {
    /// The self-mask seed: revealed for silos whose masked update arrived.
    SelfMask,
    /// The mask key: revealed for silos that dropped out after sharing.
    MaskKey,
}

/// One share a survivor reveals for unmasking.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevealedShare {
    /// Whose secret.
    pub of: String,
    /// Which secret.
    pub secret: Secret,
    /// The share.
    pub share: Share,
}

/// The AEAD context of the shares `from` sends `to` in `round` (authenticated, and unique per
/// key, so it also makes the nonce).
pub fn share_context(round: u64, from: &str, to: &str) -> Vec<u8> {
    format!("fedsilo-secagg-shares round {round}: {from} -> {to}").into_bytes()
}

pub use fedsilo_policies::secure_aggregation::minimum_threshold;
