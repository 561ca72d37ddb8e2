//! Content digests of parameter vectors.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// SHA-256 of a byte sequence; for parameters, of their little-endian `f32` bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Digest of parameters (little-endian f32 bytes).
    pub fn of_f32(values: &[f32]) -> Self {
        let mut h = Sha256::new();
        if cfg!(target_endian = "little") {
            // The values' bytes as they are in memory: no copy.
            h.update(bytemuck::cast_slice::<f32, u8>(values));
        } else {
            for chunk in values.chunks(4096) {
                let buf: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
                h.update(&buf);
            }
        }
        Digest(h.finalize().into())
    }

    /// Digest of raw bytes.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Digest(Sha256::digest(bytes).into())
    }

    /// The digest written as 64 hex digits (`None`: anything else).
    pub fn from_hex(text: &str) -> Option<Self> {
        let bytes = hex::decode(text).ok()?;
        Some(Digest(bytes.try_into().ok()?))
    }

    /// Lower-case hex.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, for tables and logs.
    pub fn short(&self) -> String {
        self.hex()[..12].to_string()
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn f32_digest_is_digest_of_le_bytes() {
        let v = [1.0f32, -2.5, 3.25];
        let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(Digest::of_f32(&v), Digest::of_bytes(&bytes));
        assert_ne!(Digest::of_f32(&v), Digest::of_f32(&[1.0, -2.5, 3.0]));
        // Longer than any chunking, with values whose bytes differ in every position.
        let long: Vec<f32> = (0..10_007).map(|i| i as f32 * 1.000_1 - 5000.0).collect();
        let bytes: Vec<u8> = long.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(Digest::of_f32(&long), Digest::of_bytes(&bytes));
    }
}
