//! Revoked certificates: the consortium CA's certificate revocation list (`crl.pem`, written by
//! `fedsilo certs revoke`), read into the serial numbers it names.
//!
//! The coordinator and the regional aggregators enforce it twice: at the TLS handshake (rustls
//! checks the list's signature against the consortium CA and refuses a revoked certificate
//! with the alert `certificate_revoked`), and on the sessions already open (a link whose
//! certificate the list names is closed when the file changes; see
//! [`crate::cluster::revocation`]). A file holds exactly one list: before a list is used, the
//! node checks it with rustls against the consortium CA, which verifies its signature. Serials are compared as unsigned integers, whatever
//! leading zeros their encodings carry.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateRevocationListDer;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Why a revocation list cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RevocationError {
    /// The file cannot be read.
    #[error("{}: {reason}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A certificate's serial cannot be read.
    #[error("not a valid X.509 certificate: {0}")]
    Certificate(String),
}

/// A certificate's serial number, as an unsigned big-endian integer without leading zeros.
pub fn serial_of(cert_der: &[u8]) -> Result<Vec<u8>, RevocationError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|e| RevocationError::Certificate(e.to_string()))?;
    Ok(unsigned(cert.raw_serial()))
}

fn unsigned(raw: &[u8]) -> Vec<u8> {
    let first = raw.iter().position(|b| *b != 0).unwrap_or(raw.len());
    raw[first..].to_vec()
}

/// A parsed revocation list: its DER (for rustls) and the serials it names.
#[derive(Debug, Clone, Default)]
pub struct RevocationList {
    /// The lists, DER, as rustls takes them.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// The revoked serials.
    pub serials: BTreeSet<Vec<u8>>,
}

impl RevocationList {
    /// Reads the PEM file at `path` (one or more lists).
    pub fn load(path: &Path) -> Result<Self, RevocationError> {
        let bad = |reason: String| RevocationError::File {
            path: path.to_path_buf(),
            reason,
        };
        let bytes = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
        Self::from_pem(&bytes).map_err(bad)
    }

    /// Reads PEM text holding one or more lists.
    pub fn from_pem(bytes: &[u8]) -> Result<Self, String> {
        let mut list = RevocationList::default();
        for crl in CertificateRevocationListDer::pem_slice_iter(bytes) {
            let crl = crl.map_err(|e| format!("not a PEM revocation list: {e}"))?;
            let (_, parsed) = x509_parser::parse_x509_crl(crl.as_ref())
                .map_err(|e| format!("not a valid revocation list: {e}"))?;
            for r in parsed.iter_revoked_certificates() {
                list.serials.insert(unsigned(r.raw_serial()));
            }
            list.crls
                .push(CertificateRevocationListDer::from(crl.as_ref().to_vec()));
        }
        match list.crls.len() {
            0 => Err("no revocation list in the file (fedsilo certs revoke writes one)".into()),
            // One list: rustls checks its signature against the CA when the node starts with
            // it, so no serial is taken from a list nobody signed.
            1 => Ok(list),
            n => Err(format!(
                "{n} revocation lists in the file; it must hold the CA's one list (fedsilo certs revoke writes it)"
            )),
        }
    }

    /// Whether the certificate `cert_der` is revoked (one whose serial cannot be read is).
    pub fn revokes(&self, cert_der: &[u8]) -> bool {
        serial_of(cert_der).map_or(true, |s| self.serials.contains(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::CertificateAuthority;

    #[test]
    fn a_file_holds_exactly_the_cas_one_list() {
        let (ca, _) = CertificateAuthority::generate("t", 1).unwrap();
        let (other, _) = CertificateAuthority::generate("x", 1).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let mine = ca.revocation_list(&[(vec![7], now)], 1).unwrap();
        let list = RevocationList::from_pem(mine.as_bytes()).unwrap();
        assert!(list.serials.contains(&vec![7]));
        // A second list appended (another CA's, naming other serials): the file is refused.
        let forged = other.revocation_list(&[(vec![8], now)], 1).unwrap();
        let e = RevocationList::from_pem(format!("{mine}{forged}").as_bytes()).unwrap_err();
        assert!(e.contains("2 revocation lists"), "{e}");
        assert!(RevocationList::from_pem(b"")
            .unwrap_err()
            .contains("no revocation list"));
    }
}
