//! # Secure aggregation (Bonawitz et al. 2017) — building blocks
//!
//! [`quantize`] — updates as fixed-point values in Z_{2^b}, sized so that sums never wrap.
//! [`shamir`] — t-of-n secret sharing over GF(2^61 − 1), for the seeds and keys silos escrow
//! with each other so that dropouts can be recovered.
//! [`prg`] — masks expanded from 32-byte seeds by ChaCha20.
//! [`masking`] — self and pairwise masks, and unmasking with dropouts from recovered seeds.
//! [`keys`] — each silo's X25519 keys for a round, advertised signed with its certificate (a
//! substituted key is detected), the agreed seeds, and the AEAD the shares travel under.
//!
//! Still to come: the round protocol that moves advertisements, encrypted shares, masked
//! updates and unmasking shares through the coordinator, and its switch in the policy.

pub mod collector;
pub mod keys;
pub mod masking;
pub mod messages;
pub mod participant;
pub mod prg;
pub mod quantize;
pub mod shamir;
