//! Frame encoding: magic, version, bincode body.

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// The wire protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 8;
const MAGIC: &[u8; 4] = b"FSLO";
const HEADER: usize = 6;
/// Largest body a frame may decode to.
pub const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_BODY_BYTES>()
}

/// Encodes a message as a versioned frame.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
    // Encoding our own types into a Vec cannot fail except by exceeding the size limit, which
    // the chunked transfers keep far away; report it rather than panic.
    match bincode::serde::encode_into_std_write(msg, &mut out, config()) {
        Ok(_) => out,
        Err(e) => {
            tracing::error!("cannot encode frame: {e}");
            out.truncate(HEADER);
            out
        }
    }
}

/// Decodes a frame from `peer` (named in errors). Checks magic, version, and that the body is
/// consumed exactly.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], peer: &str) -> Result<T> {
    let err = |message: String| Error::Protocol {
        peer: peer.to_string(),
        message,
    };
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(err(format!(
            "not a fedsilo frame ({} bytes, bad magic)",
            bytes.len()
        )));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version != PROTOCOL_VERSION {
        return Err(err(format!(
            "incompatible wire protocol: peer speaks version {version}, this node speaks version {PROTOCOL_VERSION}"
        )));
    }
    let (msg, used) = bincode::serde::decode_from_slice::<T, _>(&bytes[HEADER..], config())
        .map_err(|e| err(format!("malformed frame body: {e}")))?;
    if used != bytes.len() - HEADER {
        return Err(err(format!(
            "malformed frame: {} trailing bytes",
            bytes.len() - HEADER - used
        )));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Request, Response};
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let r = Request::Ping { seq: 7 };
        let back: Request = decode(&encode(&r), "p").unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn other_version_names_both() {
        let mut f = encode(&Request::Ping { seq: 1 });
        f[4] = 9;
        let e = decode::<Request>(&f, "silo-a").unwrap_err().to_string();
        assert!(
            e.contains("version 9")
                && e.contains(&format!("version {PROTOCOL_VERSION}"))
                && e.contains("silo-a"),
            "{e}"
        );
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut f = encode(&Request::Ping { seq: 1 });
        f.push(0);
        assert!(decode::<Request>(&f, "p").is_err());
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            f.extend_from_slice(&body);
            let _ = decode::<Request>(&f, "p");
            let _ = decode::<Response>(&f, "p");
            let _ = decode::<Response>(&body, "p");
        }
    }
}
