//! The signature on a webhook delivery: HMAC-SHA256 over `"{timestamp}.{body}"` with the
//! endpoint's shared secret, sent as `X-Fedsilo-Signature: sha256=<hex>` beside
//! `X-Fedsilo-Timestamp: <unix seconds>`. A receiver recomputes it over the exact bytes it
//! received and refuses old timestamps (replays).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-fedsilo-signature";
/// The header carrying the signing time, Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-fedsilo-timestamp";
/// The header naming the notice kind.
pub const EVENT_HEADER: &str = "x-fedsilo-event";
/// The header carrying the delivery id (the same on every retry of one notice).
pub const DELIVERY_HEADER: &str = "x-fedsilo-delivery";

fn mac(secret: &[u8], timestamp: u64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts every key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `X-Fedsilo-Signature` value for `body` signed at `timestamp`.
pub fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// Whether `header` is the signature of `body` at `timestamp` (constant-time comparison).
pub fn verify(secret: &[u8], timestamp: u64, body: &[u8], header: &str) -> bool {
    let Some(tag) = header
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok())
    else {
        return false;
    };
    mac(secret, timestamp, body).verify_slice(&tag).is_ok()
}

/// [`verify`], and the timestamp is within `max_age_secs` of `now_secs` either way (an old
/// notice sent again is a replay).
pub fn verify_fresh(
    secret: &[u8],
    timestamp: u64,
    body: &[u8],
    header: &str,
    now_secs: u64,
    max_age_secs: u64,
) -> bool {
    now_secs.abs_diff(timestamp) <= max_age_secs && verify(secret, timestamp, body, header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let s = sign(b"k", 1700000000, b"{\"a\":1}");
        assert!(verify(b"k", 1700000000, b"{\"a\":1}", &s));
        assert!(!verify(b"k", 1700000001, b"{\"a\":1}", &s), "timestamp");
        assert!(!verify(b"k", 1700000000, b"{\"a\":2}", &s), "body");
        assert!(!verify(b"other", 1700000000, b"{\"a\":1}", &s), "secret");
        assert!(!verify(b"k", 1700000000, b"{\"a\":1}", "sha256=zz"));
        assert!(verify_fresh(
            b"k",
            1700000000,
            b"{\"a\":1}",
            &s,
            1700000100,
            300
        ));
        assert!(
            !verify_fresh(b"k", 1700000000, b"{\"a\":1}", &s, 1700000400, 300),
            "replayed"
        );
        // RFC 4231 test case 2, to pin the construction to standard HMAC-SHA256.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        m.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(m.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
