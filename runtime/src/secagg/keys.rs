//! The keys of one secure-aggregation round, and why the coordinator cannot swap them.
//!
//! Each silo makes two X25519 key pairs per round: `c` to encrypt the shares it sends its
//! peers, `s` to agree the pairwise mask seeds. It advertises both public keys signed with its
//! certificate key; every peer checks the signature against the consortium CA and the silo's
//! name before using them, so the coordinator that relays advertisements cannot substitute its
//! own keys (the man-in-the-middle the signature step of Bonawitz et al. 2017 prevents).
//! Seeds and encryption keys are SHA-256 of the X25519 shared secret with a label.

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
use aws_lc_rs::agreement::{agree, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::encoding::{AsBigEndian, Curve25519SeedBin};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::identity::signature::{self, CaCheck};
use crate::identity::{Identity, Role};
use crate::tls::NodeCredentials;

/// A silo's two key pairs for one round (private halves never leave the silo).
pub struct RoundKeys {
    c: PrivateKey,
    s: PrivateKey,
}

impl std::fmt::Debug for RoundKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoundKeys(..)")
    }
}

/// What a silo advertises for a round: its two public keys, signed with its certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advertisement {
    /// The round.
    pub round: u64,
    /// The silo (its certificate name).
    pub silo: String,
    /// Public key for share encryption.
    pub c_public: Vec<u8>,
    /// Public key for mask agreement.
    pub s_public: Vec<u8>,
    /// The silo's certificate, DER.
    pub certificate: Vec<u8>,
    /// ECDSA signature over [`Advertisement::signed_bytes`].
    pub signature: Vec<u8>,
}

impl Advertisement {
    /// The bytes the signature covers: round, name and both keys, length-prefixed.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let mut b = b"fedsilo-secagg-advertisement-v1".to_vec();
        b.extend_from_slice(&self.round.to_le_bytes());
        for part in [self.silo.as_bytes(), &self.c_public, &self.s_public] {
            b.extend_from_slice(&(part.len() as u64).to_le_bytes());
            b.extend_from_slice(part);
        }
        b
    }

    /// Checks the advertisement: a certificate the consortium CA issued to silo `self.silo`,
    /// valid now, signing exactly these keys for this round.
    pub fn verify(&self, ca: &CaCheck, round: u64) -> Result<(), String> {
        if self.round != round {
            return Err(format!(
                "advertisement of {} is for round {}, not {round}",
                self.silo, self.round
            ));
        }
        let id = Identity::from_cert_der(&self.certificate, "an advertisement's certificate")
            .map_err(|e| e.to_string())?;
        if id.role != Role::Silo || id.name != self.silo {
            return Err(format!(
                "advertisement for `{}` carries the certificate of `{}` (role {})",
                self.silo, id.name, id.role
            ));
        }
        ca.issued(&self.certificate, std::time::SystemTime::now())
            .map_err(|e| e.to_string())?;
        signature::verify(&self.certificate, &self.signed_bytes(), &self.signature).map_err(|e| {
            format!(
                "advertisement of {}: {e}: the keys were substituted",
                self.silo
            )
        })
    }
}

impl RoundKeys {
    /// Fresh key pairs.
    pub fn generate() -> Result<Self, String> {
        let gen = || {
            PrivateKey::generate(&X25519).map_err(|_| "X25519 key generation failed".to_string())
        };
        Ok(RoundKeys {
            c: gen()?,
            s: gen()?,
        })
    }

    /// This silo's advertisement for `round`, signed with `creds`.
    pub fn advertise(&self, creds: &NodeCredentials, round: u64) -> Result<Advertisement, String> {
        let public = |k: &PrivateKey| {
            k.compute_public_key()
                .map(|p| p.as_ref().to_vec())
                .map_err(|_| "X25519 public key failed".to_string())
        };
        let mut ad = Advertisement {
            round,
            silo: creds.identity().name.clone(),
            c_public: public(&self.c)?,
            s_public: public(&self.s)?,
            certificate: creds.cert_der().to_vec(),
            signature: Vec::new(),
        };
        let signer = creds.signer().map_err(|e| e.to_string())?;
        ad.signature = signer.sign(&ad.signed_bytes()).map_err(|e| e.to_string())?;
        Ok(ad)
    }

    /// The pairwise mask seed shared with the peer of `ad` (the same at both ends).
    pub fn mask_seed(&self, ad: &Advertisement) -> Result<[u8; 32], String> {
        derive(&self.s, &ad.s_public, b"fedsilo-secagg-mask-seed")
    }

    /// The key to encrypt shares for (or decrypt shares from) the peer of `ad`.
    pub fn share_key(&self, ad: &Advertisement) -> Result<[u8; 32], String> {
        derive(&self.c, &ad.c_public, b"fedsilo-secagg-share-key")
    }

    /// The private half of the mask-agreement key, to escrow in Shamir shares: from it the
    /// unmasking server recomputes a dropped silo's pairwise seeds ([`mask_seed_from_secret`]).
    pub fn mask_secret(&self) -> Result<[u8; 32], String> {
        let bin: Curve25519SeedBin = self
            .s
            .as_be_bytes()
            .map_err(|_| "cannot export the X25519 mask key".to_string())?;
        bin.as_ref()
            .try_into()
            .map_err(|_| "the X25519 mask key is not 32 bytes".to_string())
    }
}

/// The pairwise mask seed between the silo whose mask secret is `secret` (recovered from
/// shares) and the peer of `ad`: what [`RoundKeys::mask_seed`] gave both ends.
pub fn mask_seed_from_secret(secret: &[u8; 32], ad: &Advertisement) -> Result<[u8; 32], String> {
    let key = PrivateKey::from_private_key(&X25519, secret)
        .map_err(|_| "a recovered mask key is not an X25519 key".to_string())?;
    derive(&key, &ad.s_public, b"fedsilo-secagg-mask-seed")
}

fn derive(mine: &PrivateKey, theirs: &[u8], label: &[u8]) -> Result<[u8; 32], String> {
    agree(
        mine,
        UnparsedPublicKey::new(&X25519, theirs),
        "X25519 agreement failed (a malformed public key)".to_string(),
        |secret| {
            let mut h = Sha256::new();
            h.update(label);
            h.update(secret);
            Ok(h.finalize().into())
        },
    )
}

/// Encrypts `plain` (a silo's shares for one peer) under `key`; `context` (round, from, to) is
/// authenticated and makes the nonce unique per key.
pub fn seal(key: &[u8; 32], context: &[u8], plain: &[u8]) -> Result<Vec<u8>, String> {
    let k = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| "bad AEAD key".to_string())?,
    );
    let mut out = plain.to_vec();
    k.seal_in_place_append_tag(nonce(context), Aad::from(context), &mut out)
        .map_err(|_| "encryption failed".to_string())?;
    Ok(out)
}

/// Decrypts what [`seal`] made; any change to the ciphertext or the context is an error.
pub fn open(key: &[u8; 32], context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, String> {
    let k = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| "bad AEAD key".to_string())?,
    );
    let mut buf = sealed.to_vec();
    let plain = k
        .open_in_place(nonce(context), Aad::from(context), &mut buf)
        .map_err(|_| "the encrypted shares do not authenticate: altered in transit".to_string())?;
    Ok(plain.to_vec())
}

fn nonce(context: &[u8]) -> Nonce {
    let d = Sha256::digest(context);
    let mut n = [0u8; 12];
    n.copy_from_slice(&d[..12]);
    Nonce::assume_unique_for_key(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;
    use crate::identity::signature::tests::kit;

    #[test]
    fn peers_agree_the_same_seeds_and_a_substituted_key_is_detected() {
        let (ca, _) = CertificateAuthority::generate("c", 30).unwrap();
        let (a, b) = (
            kit(&ca, "bank-a", Role::Silo),
            kit(&ca, "bank-b", Role::Silo),
        );
        let check = CaCheck::new(a.roots());
        let (ka, kb) = (
            RoundKeys::generate().unwrap(),
            RoundKeys::generate().unwrap(),
        );
        let (ada, adb) = (ka.advertise(&a, 3).unwrap(), kb.advertise(&b, 3).unwrap());
        ada.verify(&check, 3).unwrap();
        adb.verify(&check, 3).unwrap();
        assert_eq!(ka.mask_seed(&adb).unwrap(), kb.mask_seed(&ada).unwrap());
        assert_eq!(ka.share_key(&adb).unwrap(), kb.share_key(&ada).unwrap());
        assert_ne!(ka.mask_seed(&adb).unwrap(), ka.share_key(&adb).unwrap());
        // The server, given bank-a's escrowed mask secret, finds the same seed.
        let secret = ka.mask_secret().unwrap();
        assert_eq!(
            mask_seed_from_secret(&secret, &adb).unwrap(),
            kb.mask_seed(&ada).unwrap()
        );
        // The coordinator swaps bank-b's mask key for one of its own.
        let evil = RoundKeys::generate().unwrap();
        let mut forged = adb.clone();
        forged.s_public = evil.advertise(&b, 3).unwrap().s_public;
        let e = forged.verify(&check, 3).unwrap_err();
        assert!(e.contains("substituted"), "{e}");
        // Replayed into another round, or under another silo's name.
        assert!(adb.verify(&check, 4).unwrap_err().contains("round 3"));
        let mut renamed = adb.clone();
        renamed.silo = "bank-a".into();
        assert!(renamed
            .verify(&check, 3)
            .unwrap_err()
            .contains("certificate of `bank-b`"));
        // Signed under another consortium.
        let (other, _) = CertificateAuthority::generate("x", 30).unwrap();
        let c = kit(&other, "bank-c", Role::Silo);
        let adc = RoundKeys::generate().unwrap().advertise(&c, 3).unwrap();
        assert!(adc.verify(&check, 3).is_err());
    }

    #[test]
    fn shares_travel_encrypted_and_any_change_is_refused() {
        let key = [5u8; 32];
        let ctx = b"round 3: bank-a -> bank-b";
        let sealed = seal(&key, ctx, b"shares").unwrap();
        assert_ne!(&sealed[..6], b"shares");
        assert_eq!(open(&key, ctx, &sealed).unwrap(), b"shares");
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert!(open(&key, ctx, &bad).unwrap_err().contains("altered"));
        assert!(open(&key, b"round 3: bank-c -> bank-b", &sealed).is_err());
        assert!(open(&[6u8; 32], ctx, &sealed).is_err());
    }
}
