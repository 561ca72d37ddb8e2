//! # Compressed updates
//!
//! A silo may send its update compressed, as the federation's `[plan] compression` asks:
//!
//! - [`stochastic`] — 8- or 4-bit codes per value, one scale per block of values, stochastic
//!   rounding (unbiased: the expected decoding is the value);
//! - [`top_k`] — only the k largest values by magnitude, with error feedback: what a round
//!   leaves out is added to the silo's next update (what it sent is assumed delivered).
//!
//! The coordinator decodes each chunk as it arrives, in its streaming path, and checks the
//! result against the digest the silo reported, which is the digest of the *decoded* update.

mod error;
pub mod stochastic;
pub mod top_k;

use serde::{Deserialize, Serialize};

pub use error::{ChunkError, UnknownScheme};

/// How updates are compressed, fixed per federation.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub enum Compression {
    /// Plain `f32` values.
    #[default]
    None,
    /// 8-bit stochastic quantisation.
    Int8,
    /// 4-bit stochastic quantisation.
    Int4,
    /// The largest `fraction` of values by magnitude, with error feedback.
    TopK {
        /// Share of the values sent, in (0, 1].
        fraction: f64,
    },
}

impl Compression {
    /// Parses `none`, `int8`, `int4` or `top-k:F` (F in (0, 1]).
    pub fn parse(s: &str) -> Result<Self, UnknownScheme> {
        match s {
            "none" => Ok(Compression::None),
            "int8" => Ok(Compression::Int8),
            "int4" => Ok(Compression::Int4),
            _ => match s.strip_prefix("top-k:").map(str::parse::<f64>) {
                Some(Ok(f)) if f > 0.0 && f <= 1.0 => Ok(Compression::TopK { fraction: f }),
                _ => Err(UnknownScheme(s.to_string())),
            },
        }
    }

    /// Its name as [`Compression::parse`] takes it.
    pub fn describe(&self) -> String {
        match self {
            Compression::None => "none".into(),
            Compression::Int8 => "int8".into(),
            Compression::Int4 => "int4".into(),
            Compression::TopK { fraction } => format!("top-k:{fraction}"),
        }
    }
}

/// One chunk of a compressed update, as it travels: the values `offset..offset + len`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CompressedChunk {
    /// Stochastically quantised codes ([`stochastic`]).
    Quantized(stochastic::Quantized),
    /// The chunk's kept values ([`top_k`]).
    Sparse(top_k::Sparse),
}

impl CompressedChunk {
    /// The chunk decoded into the `len` values from `offset`; a malformed chunk is an error
    /// naming what is wrong.
    pub fn decode(&self, offset: u64, len: usize) -> Result<Vec<f32>, ChunkError> {
        match self {
            CompressedChunk::Quantized(q) => q.decode(offset, len),
            CompressedChunk::Sparse(s) => s.decode(offset, len),
        }
    }
}

/// A compressed update as the silo keeps it, to serve in chunks.
#[derive(Debug, Clone, PartialEq)]
pub enum Encoded {
    /// Stochastically quantised.
    Quantized(stochastic::QuantizedUpdate),
    /// Top-k.
    Sparse(top_k::SparseUpdate),
}

impl Encoded {
    /// The update the coordinator will decode.
    pub fn decode(&self) -> Vec<f32> {
        match self {
            Encoded::Quantized(q) => q.decode(),
            Encoded::Sparse(s) => s.decode(),
        }
    }

    /// The values `offset..offset + len` as they travel (`None`: out of range).
    pub fn chunk(&self, offset: usize, len: usize) -> Option<CompressedChunk> {
        match self {
            Encoded::Quantized(q) => q.chunk(offset, len).map(CompressedChunk::Quantized),
            Encoded::Sparse(s) => s.chunk(offset, len).map(CompressedChunk::Sparse),
        }
    }
}

/// Compresses `update` as `scheme` asks (`None` for [`Compression::None`]); top-k goes through
/// the silo's error `feedback`, quantisation draws its rounding from `rng`.
pub fn compress<R: rand::Rng + ?Sized>(
    update: &[f32],
    scheme: Compression,
    feedback: &mut top_k::ErrorFeedback,
    rng: &mut R,
) -> Option<Encoded> {
    match scheme {
        Compression::None => None,
        Compression::Int8 => Some(Encoded::Quantized(stochastic::quantize(update, 8, rng))),
        Compression::Int4 => Some(Encoded::Quantized(stochastic::quantize(update, 4, rng))),
        Compression::TopK { fraction } => {
            Some(Encoded::Sparse(feedback.compress(update, fraction)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_parse_and_mistakes_say_what_is_allowed() {
        assert_eq!(Compression::parse("int8"), Ok(Compression::Int8));
        assert_eq!(
            Compression::parse("top-k:0.1"),
            Ok(Compression::TopK { fraction: 0.1 })
        );
        for bad in ["int16", "top-k:0", "top-k:1.5", "top-k:x", "topk:0.1"] {
            assert_eq!(Compression::parse(bad), Err(UnknownScheme(bad.into())));
        }
        for s in ["none", "int8", "int4", "top-k:0.25"] {
            assert_eq!(Compression::parse(s).unwrap().describe(), s);
        }
    }
}
