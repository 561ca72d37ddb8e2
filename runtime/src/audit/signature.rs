//! Signing journal entries with the coordinator's certificate key, and checking them.
//!
//! Signatures are ECDSA P-256 with SHA-256 (ASN.1 DER), over the exact bytes of an entry's
//! body; they are checked against the public key of the certificate the journal names for its
//! signer.

use rustls::crypto::aws_lc_rs::default_provider;
use rustls::SignatureScheme;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Checks `sig` over `message` against the public key of `cert_der`. `Err` says why not.
pub fn verify(cert_der: &[u8], message: &[u8], sig: &[u8]) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| format!("the signer's certificate is not valid X.509: {e}"))?;
    let public_key = cert.public_key().subject_public_key.data.as_ref();
    let provider = default_provider();
    let algs = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(scheme, _)| *scheme == SignatureScheme::ECDSA_NISTP256_SHA256)
        .map(|(_, algs)| *algs)
        .ok_or("no ECDSA P-256 verifier in the crypto provider")?;
    if algs
        .iter()
        .any(|a| a.verify_signature(public_key, message, sig).is_ok())
    {
        Ok(())
    } else {
        Err("the signature does not match the entry and the signer's key".into())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;
    use crate::identity::{Identity, Role};
    use crate::tls::NodeCredentials;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    pub fn credentials(name: &str) -> NodeCredentials {
        crate::tls::install_crypto_provider();
        let (ca, _) = CertificateAuthority::generate("test", 30).unwrap();
        let id = Identity {
            name: name.into(),
            role: Role::Coordinator,
            region: "eu".into(),
        };
        let issued = ca.issue(&id, 30).unwrap();
        NodeCredentials::from_parts(
            vec![CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap()],
            vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes()).unwrap(),
            name,
        )
        .unwrap()
    }

    #[test]
    fn a_signature_verifies_only_for_its_message_and_key() {
        let (a, b) = (credentials("coord-a"), credentials("coord-b"));
        let sig = a.signer().unwrap().sign(b"entry").unwrap();
        assert!(verify(a.cert_der(), b"entry", &sig).is_ok());
        assert!(verify(a.cert_der(), b"entrY", &sig).is_err());
        assert!(verify(b.cert_der(), b"entry", &sig).is_err());
        assert!(verify(b"junk", b"entry", &sig)
            .unwrap_err()
            .contains("X.509"));
        // Issued by its own CA, not by the other's.
        assert!(a
            .verify_issued(a.cert_der(), std::time::SystemTime::now())
            .is_ok());
        assert!(b
            .verify_issued(a.cert_der(), std::time::SystemTime::now())
            .is_err());
    }
}
