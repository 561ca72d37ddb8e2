//! The consortium's certificate authority and the certificates of its nodes.
//!
//! `fedsilo certs init` makes a CA and one key + certificate per node (ECDSA P-256, via rcgen);
//! `fedsilo certs issue` adds nodes under an existing CA. The directory it writes is the set of
//! startup kits, one folder per node:
//!
//! ```text
//! OUT/ca.pem            the consortium CA certificate (public)
//! OUT/ca.key            the CA's private key (0600) — keep it offline in production
//! OUT/<node>/ca.pem     copy of the CA certificate
//! OUT/<node>/cert.pem   the node's certificate: CN and DNS SAN = name, URI SANs = role, region
//! OUT/<node>/key.pem    the node's private key (0600)
//! ```
//!
//! Invariants: an existing CA is never overwritten unless the caller asks (`force`); private
//! keys are created with mode 0600 before any byte is written.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{
    validate_name, Identity, IdentityError, Role, DEFAULT_REGION, REGION_URI_PREFIX,
    ROLE_URI_PREFIX,
};
use crate::{Error, Result};

/// A node to make a certificate for, parsed from `NAME[:REGION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// The identity the certificate will carry.
    pub identity: Identity,
}

impl NodeSpec {
    /// Parses `NAME[:REGION]` for a node of `role`.
    pub fn parse(role: Role, spec: &str) -> std::result::Result<Self, IdentityError> {
        let (name, region) = match spec.split_once(':') {
            Some((n, r)) => (n, r),
            None => (spec, DEFAULT_REGION),
        };
        validate_name("node name", name)?;
        validate_name("region", region)?;
        Ok(NodeSpec {
            identity: Identity {
                name: name.to_string(),
                role,
                region: region.to_string(),
            },
        })
    }
}

/// A loaded certificate authority that can issue node certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// A node's freshly issued certificate and key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// The certificate.
    pub cert_pem: String,
    /// The PKCS#8 private key.
    pub key_pem: String,
}

fn cert_err(origin: &str, e: impl std::fmt::Display) -> Error {
    Error::Certificate {
        origin: origin.to_string(),
        message: e.to_string(),
    }
}

impl CertificateAuthority {
    /// Makes a new CA named `consortium`, valid for `days`. Returns the CA and its key PEM.
    pub fn generate(consortium: &str, days: i64) -> Result<(Self, String)> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| cert_err("CA", e))?;
        let key_pem = key.serialize_pem();
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("{consortium} consortium CA"));
        dn.push(DnType::OrganizationName, consortium);
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::minutes(5);
        params.not_after = now + Duration::days(days);
        let cert = params.self_signed(&key).map_err(|e| cert_err("CA", e))?;
        Ok((
            CertificateAuthority {
                cert_pem: cert.pem(),
                issuer: Issuer::new(params, key),
            },
            key_pem,
        ))
    }

    /// Loads a CA from its certificate and key files.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self> {
        let cert_pem =
            fs::read_to_string(cert_path).map_err(|e| Error::io("reading", cert_path, e))?;
        let key_pem =
            fs::read_to_string(key_path).map_err(|e| Error::io("reading", key_path, e))?;
        let key = KeyPair::from_pem(&key_pem)
            .map_err(|e| cert_err(&key_path.display().to_string(), e))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|e| cert_err(&cert_path.display().to_string(), e))?;
        Ok(CertificateAuthority { cert_pem, issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Issues a certificate for `identity`, valid from `not_before` to `not_after`. Every node
    /// certificate may serve both ends of a TLS link (server and client auth).
    pub fn issue_with_validity(
        &self,
        identity: &Identity,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> Result<IssuedCert> {
        let origin = identity.name.as_str();
        let key =
            KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| cert_err(origin, e))?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.name.clone());
        params.distinguished_name = dn;
        let uri = |s: String| -> Result<SanType> {
            Ok(SanType::URI(s.try_into().map_err(|e| cert_err(origin, e))?))
        };
        params.subject_alt_names = vec![
            SanType::DnsName(
                identity
                    .name
                    .clone()
                    .try_into()
                    .map_err(|e| cert_err(origin, e))?,
            ),
            uri(format!("{ROLE_URI_PREFIX}{}", identity.role))?,
            uri(format!("{REGION_URI_PREFIX}{}", identity.region))?,
        ];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| cert_err(origin, e))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a certificate valid from now for `days`.
    pub fn issue(&self, identity: &Identity, days: i64) -> Result<IssuedCert> {
        let now = OffsetDateTime::now_utc();
        self.issue_with_validity(
            identity,
            now - Duration::minutes(5),
            now + Duration::days(days),
        )
    }

    /// Issues a certificate for `identity` and returns it as in-memory credentials (the
    /// consortium root included), for tools and tests that need a node without a kit on disk.
    pub fn credentials(
        &self,
        identity: &Identity,
        days: i64,
    ) -> Result<crate::tls::NodeCredentials> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let issued = self.issue(identity, days)?;
        let origin = format!("credentials for {}", identity.name);
        let bad = |what: &str, e: rustls::pki_types::pem::Error| Error::Certificate {
            origin: origin.clone(),
            message: format!("{what}: {e}"),
        };
        crate::tls::NodeCredentials::from_parts(
            vec![CertificateDer::from_pem_slice(self.cert_pem().as_bytes())
                .map_err(|e| bad("CA certificate", e))?],
            vec![CertificateDer::from_pem_slice(issued.cert_pem.as_bytes())
                .map_err(|e| bad("certificate", e))?],
            PrivateKeyDer::from_pem_slice(issued.key_pem.as_bytes())
                .map_err(|e| bad("private key", e))?,
            &origin,
        )
    }
}

/// Writes `contents` to `path`; a private file is created with mode 0600 before any byte is
/// written. Existing files are replaced only when `replace` is set.
pub fn write_file(path: &Path, contents: &str, private: bool, replace: bool) -> Result<()> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true);
    if replace {
        opts.create(true).truncate(true);
    } else {
        opts.create_new(true);
    }
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| Error::io("creating", path, e))?;
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(|e| Error::io("setting permissions on", path, e))?;
    }
    f.write_all(contents.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io("writing", path, e))
}

/// Writes one node's startup kit (`ca.pem`, `cert.pem`, `key.pem`) under `out/<name>/`.
pub fn write_node_kit(
    out: &Path,
    ca: &CertificateAuthority,
    spec: &NodeSpec,
    days: i64,
    replace: bool,
) -> Result<PathBuf> {
    let dir = out.join(&spec.identity.name);
    fs::create_dir_all(&dir).map_err(|e| Error::io("creating", &dir, e))?;
    let issued = ca.issue(&spec.identity, days)?;
    write_file(&dir.join("ca.pem"), ca.cert_pem(), false, replace)?;
    write_file(&dir.join("cert.pem"), &issued.cert_pem, false, replace)?;
    write_file(&dir.join("key.pem"), &issued.key_pem, true, replace)?;
    Ok(dir)
}

/// `fedsilo certs init`: makes a CA in `out` and a kit for each node. Refuses to touch an
/// existing `out/ca.pem` unless `force`.
pub fn init(
    out: &Path,
    consortium: &str,
    nodes: &[NodeSpec],
    days: i64,
    force: bool,
) -> Result<Vec<PathBuf>> {
    check_unique(nodes)?;
    let ca_path = out.join("ca.pem");
    if ca_path.exists() && !force {
        return Err(Error::Config {
            origin: ca_path.display().to_string(),
            message: "a consortium CA already exists here; it is never overwritten silently. \
                      Use `fedsilo certs issue` to add nodes under it, or pass --force to replace it \
                      (every certificate it issued stops working)"
                .into(),
        });
    }
    fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    let (ca, key_pem) = CertificateAuthority::generate(consortium, days)?;
    write_file(&ca_path, ca.cert_pem(), false, force)?;
    write_file(&out.join("ca.key"), &key_pem, true, force)?;
    nodes
        .iter()
        .map(|n| write_node_kit(out, &ca, n, days, force))
        .collect()
}

/// `fedsilo certs issue`: adds node kits under the CA in `out`. An existing node kit is replaced
/// only with `force`.
pub fn issue(out: &Path, nodes: &[NodeSpec], days: i64, force: bool) -> Result<Vec<PathBuf>> {
    check_unique(nodes)?;
    let ca = CertificateAuthority::load(&out.join("ca.pem"), &out.join("ca.key"))?;
    nodes
        .iter()
        .map(|n| write_node_kit(out, &ca, n, days, force))
        .collect()
}

fn check_unique(nodes: &[NodeSpec]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for n in nodes {
        if !seen.insert(n.identity.name.as_str()) {
            return Err(Error::Config {
                origin: "certs".into(),
                message: format!("node name `{}` is given twice", n.identity.name),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_spec_parses_region() {
        let s = NodeSpec::parse(Role::Silo, "bank-a:eu-west").unwrap();
        assert_eq!(s.identity.region, "eu-west");
        let s = NodeSpec::parse(Role::Silo, "bank-b").unwrap();
        assert_eq!(s.identity.region, DEFAULT_REGION);
        assert!(NodeSpec::parse(Role::Silo, "Bank:eu").is_err());
    }

    #[test]
    fn issued_certificate_carries_identity() {
        let (ca, _) = CertificateAuthority::generate("t", 1).unwrap();
        let id = Identity {
            name: "bank-a".into(),
            role: Role::Silo,
            region: "eu-west".into(),
        };
        let issued = ca.issue(&id, 1).unwrap();
        let der = rustls_pemfile_like(&issued.cert_pem);
        assert_eq!(Identity::from_cert_der(&der, "t").unwrap(), id);
    }

    fn rustls_pemfile_like(pem: &str) -> Vec<u8> {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
            .unwrap()
            .to_vec()
    }

    #[test]
    fn init_writes_private_keys_0600_and_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec![
            NodeSpec::parse(Role::Coordinator, "coordinator").unwrap(),
            NodeSpec::parse(Role::Silo, "a:eu").unwrap(),
        ];
        init(dir.path(), "t", &nodes, 1, false).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for p in ["ca.key", "a/key.pem", "coordinator/key.pem"] {
                let mode = fs::metadata(dir.path().join(p))
                    .unwrap()
                    .permissions()
                    .mode();
                assert_eq!(mode & 0o777, 0o600, "{p}");
            }
        }
        let before = fs::read(dir.path().join("ca.pem")).unwrap();
        let err = init(dir.path(), "t", &nodes, 1, false).unwrap_err();
        assert!(err.to_string().contains("never overwritten"), "{err}");
        assert_eq!(before, fs::read(dir.path().join("ca.pem")).unwrap());
        // Adding a node under the existing CA works.
        issue(
            dir.path(),
            &[NodeSpec::parse(Role::Silo, "b").unwrap()],
            1,
            false,
        )
        .unwrap();
        assert!(dir.path().join("b/cert.pem").exists());
    }

    #[test]
    fn duplicate_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = vec![
            NodeSpec::parse(Role::Silo, "a").unwrap(),
            NodeSpec::parse(Role::Silo, "a:eu").unwrap(),
        ];
        assert!(init(dir.path(), "t", &nodes, 1, false).is_err());
    }
}
