//! What can be wrong with a compression setting or a compressed chunk. A chunk comes from a
//! silo, so every malformation is named (the coordinator refuses the silo's update with it)
//! and none panics.

/// A compression scheme that is not one of the four.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("compression `{0}`: expected none, int8, int4 or top-k:F with F in (0, 1], e.g. top-k:0.1")]
pub struct UnknownScheme(pub String);

/// A compressed chunk that cannot be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChunkError {
    /// Quantised codes of a width other than 8 or 4 bits.
    #[error("{0}-bit codes; 8 or 4 expected")]
    Bits(u8),
    /// The chunk starts elsewhere than asked.
    #[error("a chunk at value {at}, value {asked} was asked for")]
    Offset {
        /// Where it starts.
        at: u64,
        /// Where it was asked to start.
        asked: u64,
    },
    /// No values asked.
    #[error("an empty chunk was asked for")]
    Empty,
    /// Not one scale per block.
    #[error("{got} scales for {blocks} blocks")]
    Scales {
        /// Scales sent.
        got: usize,
        /// Blocks covered.
        blocks: usize,
    },
    /// A scale that is negative or not finite.
    #[error("a block scale of {0}")]
    Scale(f32),
    /// Not the bytes the codes need.
    #[error("{got} bytes of codes for {len} values of {bits} bits")]
    Codes {
        /// Bytes sent.
        got: usize,
        /// Values.
        len: usize,
        /// Code width.
        bits: u8,
    },
    /// Padding bits set.
    #[error("the padding nibble after the last 4-bit code is not zero")]
    Padding,
    /// A code beyond the levels of its width.
    #[error("code {code} at value {at} is out of range")]
    Code {
        /// The code.
        code: i32,
        /// Its position in the update.
        at: usize,
    },
    /// Not one position per value.
    #[error("{positions} positions for {values} values")]
    Positions {
        /// Positions sent.
        positions: usize,
        /// Values sent.
        values: usize,
    },
    /// A position given twice.
    #[error("position {0} is given twice")]
    Repeated(u64),
    /// A position past the chunk.
    #[error("position {at} is past the chunk of {len} values")]
    Past {
        /// The position.
        at: u64,
        /// The chunk's length.
        len: usize,
    },
    /// A value that is not finite.
    #[error("a non-finite value ({value}) at position {at}")]
    NonFinite {
        /// The value.
        value: f32,
        /// Its position.
        at: u64,
    },
}
