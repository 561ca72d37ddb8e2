//! Signatures made with a node's certificate key, and the consortium CA's check that a
//! certificate is one it issued: what the audit journal, operators' decision files and secure
//! aggregation's key advertisements are verified with. A silo checks with it too, so it lives
//! with the identities rather than in the journal.
//!
//! Signatures are ECDSA P-256 with SHA-256 (ASN.1 DER), over the exact bytes of an entry's
//! body; they are checked against the public key of the certificate the journal names for its
//! signer.

use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rustls::crypto::aws_lc_rs::default_provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, SignatureScheme};
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a signature or a certificate does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The CA file cannot be used.
    #[error("{path}: {reason}")]
    CaFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate was not issued by the consortium CA, or was not valid at the time.
    #[error(
        "the signer's certificate was not issued by the consortium CA, or was not valid then: {0}"
    )]
    NotIssued(String),
    /// The certificate is not X.509.
    #[error("the signer's certificate is not valid X.509: {0}")]
    NotX509(String),
    /// The crypto provider cannot check ECDSA P-256 (a build problem).
    #[error("no ECDSA P-256 verifier in the crypto provider")]
    NoVerifier,
    /// The signature does not match.
    #[error("the signature does not match the entry and the signer's key")]
    Mismatch,
}

/// The consortium CA, to check that a signer's certificate was issued by it.
#[derive(Debug, Clone)]
pub struct CaCheck {
    roots: Arc<RootCertStore>,
}

impl CaCheck {
    /// Trusts the certificates of `roots`.
    pub fn new(roots: Arc<RootCertStore>) -> Self {
        CaCheck { roots }
    }

    /// Loads the CA certificate(s) from a PEM file (a kit's `ca.pem`).
    pub fn load(path: &Path) -> Result<Self, SignatureError> {
        let bad = |reason: String| SignatureError::CaFile {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        let mut roots = RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(&bytes) {
            let c = c.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
            roots
                .add(c)
                .map_err(|e| bad(format!("CA certificate rejected: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad("no certificate in the file".into()));
        }
        Ok(CaCheck {
            roots: Arc::new(roots),
        })
    }

    /// Whether `cert` (DER) was issued by this CA and was valid at `at`.
    pub fn issued(&self, cert: &[u8], at: SystemTime) -> Result<(), SignatureError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(
            self.roots.clone(),
            Arc::new(default_provider()),
        )
        .build()
        .map_err(|e| SignatureError::NotIssued(format!("certificate verifier: {e}")))?;
        let at = UnixTime::since_unix_epoch(at.duration_since(UNIX_EPOCH).unwrap_or_default());
        verifier
            .verify_client_cert(&CertificateDer::from(cert.to_vec()), &[], at)
            .map(|_| ())
            .map_err(|e| SignatureError::NotIssued(e.to_string()))
    }
}

/// Checks `sig` over `message` against the public key of `cert_der`. `Err` says why not.
pub fn verify(cert_der: &[u8], message: &[u8], sig: &[u8]) -> Result<(), SignatureError> {
    let (_, cert) =
        X509Certificate::from_der(cert_der).map_err(|e| SignatureError::NotX509(e.to_string()))?;
    let public_key = cert.public_key().subject_public_key.data.as_ref();
    let provider = default_provider();
    let algs = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == SignatureScheme::ECDSA_NISTP256_SHA256)
        .map(|(_, algs)| *algs)
        .ok_or(SignatureError::NoVerifier)?;
    if algs
        .iter()
        .any(|a| a.verify_signature(public_key, message, sig).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;
    use crate::identity::{Identity, Role};
    use crate::tls::NodeCredentials;

    /// A kit for `name` of `role`, issued by `ca`.
    pub fn kit(ca: &CertificateAuthority, name: &str, role: Role) -> NodeCredentials {
        crate::tls::install_crypto_provider();
        let id = Identity {
            name: name.into(),
            role,
            region: "eu".into(),
        };
        ca.credentials(&id, 30).unwrap()
    }

    /// A coordinator kit under a consortium CA of its own.
    pub fn credentials(name: &str) -> NodeCredentials {
        let (ca, _) = CertificateAuthority::generate("test", 30).unwrap();
        kit(&ca, name, Role::Coordinator)
    }

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let (a, b) = (credentials("coord-a"), credentials("coord-b"));
        let sig = a.signer().unwrap().sign(b"entry").unwrap();
        assert!(verify(a.cert_der(), b"entry", &sig).is_ok());
        assert!(verify(a.cert_der(), b"entrY", &sig).is_err());
        assert!(verify(b.cert_der(), b"entry", &sig).is_err());
        assert!(matches!(
            verify(b"junk", b"entry", &sig),
            Err(SignatureError::NotX509(_))
        ));
        assert_eq!(
            verify(a.cert_der(), b"entrY", &sig),
            Err(SignatureError::Mismatch)
        );
        // Issued by its own CA, not by the other's.
        let now = std::time::SystemTime::now();
        assert!(CaCheck::new(a.roots()).issued(a.cert_der(), now).is_ok());
        assert!(CaCheck::new(b.roots()).issued(a.cert_der(), now).is_err());
    }
}
