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

use crate::identity::signature::{self, CaCheck, SignatureError};
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
    pub fn verify(&self, ca: &CaCheck, round: u64) -> Result<(), KeyError> {
        if self.round != round {
            return Err(KeyError::WrongRound {
                silo: self.silo.clone(),
                theirs: self.round,
                ours: round,
            });
        }
        let id = Identity::from_cert_der(&self.certificate, "an advertisement's certificate")
            .map_err(|e| KeyError::Certificate(e.to_string()))?;
        if id.role != Role::Silo || id.name != self.silo {
            return Err(KeyError::WrongCertificate {
                silo: self.silo.clone(),
                name: id.name,
                role: id.role.to_string(),
            });
        }
        ca.issued(&self.certificate, std::time::SystemTime::now())
            .map_err(KeyError::NotIssued)?;
        signature::verify(&self.certificate, &self.signed_bytes(), &self.signature).map_err(
            |reason| KeyError::Substituted {
                silo: self.silo.clone(),
                reason,
            },
        )
    }
}

/// Why a key operation or an advertisement fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A local cryptographic operation failed (key generation, export, agreement, AEAD).
    #[error("{0}")]
    Crypto(&'static str),
    /// The advertisement is for another round.
    #[error("advertisement of {silo} is for round {theirs}, not {ours}")]
    WrongRound {
        /// Who advertised.
        silo: String,
        /// The round it names.
        theirs: u64,
        /// This round.
        ours: u64,
    },
    /// Its certificate cannot be read.
    #[error("{0}")]
    Certificate(String),
    /// Its certificate is another node's, or not a silo's.
    #[error("advertisement for `{silo}` carries the certificate of `{name}` (role {role})")]
    WrongCertificate {
        /// Who it claims to be.
        silo: String,
        /// Whose certificate it carries.
        name: String,
        /// That certificate's role.
        role: String,
    },
    /// Its certificate was not issued by the consortium CA, or is not valid now.
    #[error(transparent)]
    NotIssued(SignatureError),
    /// Its signature does not cover these keys.
    #[error("advertisement of {silo}: {reason}: the keys were substituted")]
    Substituted {
        /// Who advertised.
        silo: String,
        /// What the signature check said.
        reason: SignatureError,
    },
    /// This silo could not sign its own advertisement.
    #[error("signing the advertisement: {0}")]
    Signing(String),
    /// Sealed shares that do not authenticate.
    #[error("the encrypted shares do not authenticate: altered in transit")]
    Altered,
}

impl RoundKeys {
    /// Fresh key pairs.
    pub fn generate() -> Result<Self, KeyError> {
        let gen = || {
            PrivateKey::generate(&X25519)
                .map_err(|_| KeyError::Crypto("X25519 key generation failed"))
        };
        Ok(RoundKeys {
            c: gen()?,
            s: gen()?,
        })
    }

    /// This silo's advertisement for `round`, signed with `creds`.
    pub fn advertise(
        &self,
        creds: &NodeCredentials,
        round: u64,
    ) -> Result<Advertisement, KeyError> {
        let public = |k: &PrivateKey| {
            k.compute_public_key()
                .map(|p| p.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto("X25519 public key failed"))
        };
        let mut ad = Advertisement {
            round,
            silo: creds.identity().name.clone(),
            c_public: public(&self.c)?,
            s_public: public(&self.s)?,
            certificate: creds.cert_der().to_vec(),
            signature: Vec::new(),
        };
        let signer = creds
            .signer()
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        ad.signature = signer
            .sign(&ad.signed_bytes())
            .map_err(|e| KeyError::Signing(e.to_string()))?;
        Ok(ad)
    }

    /// The pairwise mask seed shared with the peer of `ad` (the same at both ends).
    pub fn mask_seed(&self, ad: &Advertisement) -> Result<[u8; 32], KeyError> {
        derive(&self.s, &ad.s_public, b"fedsilo-secagg-mask-seed")
    }

    /// The key to encrypt shares for (or decrypt shares from) the peer of `ad`.
    pub fn share_key(&self, ad: &Advertisement) -> Result<[u8; 32], KeyError> {
        derive(&self.c, &ad.c_public, b"fedsilo-secagg-share-key")
    }

    /// The private half of the mask-agreement key, to escrow in Shamir shares: from it the
    /// unmasking server recomputes a dropped silo's pairwise seeds ([`mask_seed_from_secret`]).
    pub fn mask_secret(&self) -> Result<[u8; 32], KeyError> {
        let bin: Curve25519SeedBin = self
            .s
            .as_be_bytes()
            .map_err(|_| KeyError::Crypto("cannot export the X25519 mask key"))?;
        bin.as_ref()
            .try_into()
            .map_err(|_| KeyError::Crypto("the X25519 mask key is not 32 bytes"))
    }
}

/// The pairwise mask seed between the silo whose mask secret is `secret` (recovered from
/// shares) and the peer of `ad`: what [`RoundKeys::mask_seed`] gave both ends.
pub fn mask_seed_from_secret(secret: &[u8; 32], ad: &Advertisement) -> Result<[u8; 32], KeyError> {
    let key = PrivateKey::from_private_key(&X25519, secret)
        .map_err(|_| KeyError::Crypto("a recovered mask key is not an X25519 key"))?;
    derive(&key, &ad.s_public, b"fedsilo-secagg-mask-seed")
}

fn derive(mine: &PrivateKey, theirs: &[u8], label: &[u8]) -> Result<[u8; 32], KeyError> {
    agree(
        mine,
        UnparsedPublicKey::new(&X25519, theirs),
        KeyError::Crypto("X25519 agreement failed (a malformed public key)"),
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
pub fn seal(key: &[u8; 32], context: &[u8], plain: &[u8]) -> Result<Vec<u8>, KeyError> {
    let k = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| KeyError::Crypto("bad AEAD key"))?,
    );
    let mut out = plain.to_vec();
    k.seal_in_place_append_tag(nonce(context), Aad::from(context), &mut out)
        .map_err(|_| KeyError::Crypto("encryption failed"))?;
    Ok(out)
}

/// Decrypts what [`seal`] made; any change to the ciphertext or the context is an error.
pub fn open(key: &[u8; 32], context: &[u8], sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
    let k = LessSafeKey::new(
        UnboundKey::new(&CHACHA20_POLY1305, key).map_err(|_| KeyError::Crypto("bad AEAD key"))?,
    );
    let mut buf = sealed.to_vec();
    let plain = k
        .open_in_place(nonce(context), Aad::from(context), &mut buf)
        .map_err(|_| KeyError::Altered)?;
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
        assert!(
            matches!(&e, KeyError::Substituted { silo, reason: SignatureError::Mismatch } if silo == "bank-b"),
            "{e}"
        );
        assert!(e.to_string().contains("substituted"), "{e}");
        // Replayed into another round, or under another silo's name.
        assert_eq!(
            adb.verify(&check, 4),
            Err(KeyError::WrongRound {
                silo: "bank-b".into(),
                theirs: 3,
                ours: 4
            })
        );
        let mut renamed = adb.clone();
        renamed.silo = "bank-a".into();
        let e = renamed.verify(&check, 3).unwrap_err();
        assert!(e.to_string().contains("certificate of `bank-b`"), "{e}");
        // Signed under another consortium.
        let (other, _) = CertificateAuthority::generate("x", 30).unwrap();
        let c = kit(&other, "bank-c", Role::Silo);
        let adc = RoundKeys::generate().unwrap().advertise(&c, 3).unwrap();
        assert!(matches!(adc.verify(&check, 3), Err(KeyError::NotIssued(_))));
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
        assert_eq!(open(&key, ctx, &bad), Err(KeyError::Altered));
        assert!(open(&key, b"round 3: bank-c -> bank-b", &sealed).is_err());
        assert!(open(&[6u8; 32], ctx, &sealed).is_err());
    }
}
