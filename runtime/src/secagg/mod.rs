//! # Secure aggregation (Bonawitz et al. 2017) — building blocks
//!
//! [`quantize`] — updates as fixed-point values in Z_{2^b}, sized so that sums never wrap.
//! [`shamir`] — t-of-n secret sharing over GF(2^61 − 1), for the seeds and keys silos escrow
//! with each other so that dropouts can be recovered.
//! [`prg`] — masks expanded from 32-byte seeds by ChaCha20.
//! [`masking`] — self and pairwise masks, and unmasking with dropouts from recovered seeds.
//!
//! Still to come: the agreement of the pairwise seeds (X25519 keys signed with the silos'
//! certificates), the encrypted share exchange through the coordinator, and the round protocol.

pub mod masking;
pub mod prg;
pub mod quantize;
pub mod shamir;
