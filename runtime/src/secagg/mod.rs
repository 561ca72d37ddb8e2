//! # Secure aggregation (Bonawitz et al. 2017)
//!
//! With `[secure_aggregation]` in the policy the coordinator learns the sum of a round's
//! updates and nothing about any one of them. A round goes: keys advertised, signed
//! ([`keys`]) → secrets escrowed t-of-n with the peers, encrypted ([`shamir`]) → local training
//! → masked updates summed ([`quantize`], [`prg`], [`masking`]) → survivors reveal the shares
//! that remove the masks, from the sum only.
//!
//! The silo's side is [`participant`], the server's [`collector`]; the round
//! (`crate::round::secure`) moves their [`messages`] over the cluster, and [`requirements`] is
//! what the policy asks of the aggregation settings.

pub mod collector;
pub mod keys;
pub mod masking;
pub mod messages;
pub mod participant;
pub mod prg;
pub mod quantize;
pub mod requirements;
pub mod shamir;
