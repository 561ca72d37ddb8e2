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

use rustls::pki_types::pem::PemObject;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
    PKCS_ECDSA_P256_SHA256,
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
        let cert = node_params(identity, not_before, not_after)?
            .signed_by(&key, &self.issuer)
            .map_err(|e| cert_err(origin, e))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// `fedsilo certs sign`: a certificate for `identity`, valid for `days`, over the public key
    /// of the certificate signing request `csr_pem` (made by `fedsilo certs request` on the
    /// node's machine: its private key never comes here). The request's self-signature must
    /// verify, its key must be ECDSA P-256 (the consortium's signatures are), and the identity
    /// it asks for must be `identity` — the CA decides who a node is, and refuses to sign a
    /// request that claims someone else.
    pub fn sign_request(&self, csr_pem: &str, identity: &Identity, days: i64) -> Result<String> {
        let origin = format!("the certificate request for {}", identity.name);
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| cert_err(&origin, format!("not a valid signing request: {e}")))?;
        if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(cert_err(
                &origin,
                "its key is not ECDSA P-256; make the request with `fedsilo certs request`",
            ));
        }
        let asked = requested_identity(&csr.params);
        if asked.as_ref() != Some(identity) {
            return Err(cert_err(
                &origin,
                format!(
                    "it asks for {}, not {identity}: check who sent it",
                    asked.map_or("no fedsilo identity".to_string(), |a| a.to_string())
                ),
            ));
        }
        let now = OffsetDateTime::now_utc();
        let cert = node_params(
            identity,
            now - Duration::minutes(5),
            now + Duration::days(days),
        )?
        .signed_by(&csr.public_key, &self.issuer)
        .map_err(|e| cert_err(&origin, e))?;
        Ok(cert.pem())
    }

    /// A certificate revocation list of `revoked` (serial, when revoked), number `number`,
    /// signed by this CA, PEM: what `fedsilo certs revoke` writes and the coordinator and the
    /// aggregators enforce.
    pub fn revocation_list(
        &self,
        revoked: &[(Vec<u8>, OffsetDateTime)],
        number: u64,
    ) -> Result<String> {
        let now = OffsetDateTime::now_utc();
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(5),
            next_update: now + Duration::days(3650),
            crl_number: SerialNumber::from(number.to_be_bytes().to_vec()),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|(serial, at)| RevokedCertParams {
                    serial_number: SerialNumber::from_slice(serial),
                    revocation_time: *at,
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        params
            .signed_by(&self.issuer)
            .and_then(|crl| crl.pem())
            .map_err(|e| cert_err("the revocation list", e))
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

/// `fedsilo certs request`: a new key for `identity` and a certificate signing request for it,
/// both PEM: (request, key). The key stays on the machine that made it.
pub fn request(identity: &Identity) -> Result<(String, String)> {
    let origin = identity.name.as_str();
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| cert_err(origin, e))?;
    let now = OffsetDateTime::now_utc();
    let full = node_params(identity, now, now)?;
    // A request carries who it asks to be; the CA sets the rest when it signs.
    let mut params = CertificateParams::default();
    params.distinguished_name = full.distinguished_name;
    params.subject_alt_names = full.subject_alt_names;
    let csr = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(|e| cert_err(origin, e))?;
    Ok((csr, key.serialize_pem()))
}

/// The identity a signing request asks for: its common name, and the role and region of its
/// URI subject-alternative names.
fn requested_identity(params: &CertificateParams) -> Option<Identity> {
    let name = dn_text(params.distinguished_name.get(&DnType::CommonName)?)?;
    let mut role = None;
    let mut region = None;
    for san in &params.subject_alt_names {
        if let SanType::URI(u) = san {
            let u = u.as_str();
            if let Some(r) = u.strip_prefix(ROLE_URI_PREFIX) {
                role = r.parse::<Role>().ok();
            } else if let Some(r) = u.strip_prefix(REGION_URI_PREFIX) {
                region = Some(r.to_string());
            }
        }
    }
    Some(Identity {
        name,
        role: role?,
        region: region?,
    })
}

fn dn_text(v: &rcgen::DnValue) -> Option<String> {
    match v {
        rcgen::DnValue::Utf8String(s) => Some(s.clone()),
        rcgen::DnValue::PrintableString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The parameters of a node certificate for `identity` (the same whether the CA makes the key
/// or signs a request): CN and DNS SAN the name, URI SANs the role and region, server and
/// client auth.
fn node_params(
    identity: &Identity,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> Result<CertificateParams> {
    let origin = identity.name.as_str();
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
    Ok(params)
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

/// `fedsilo certs request`: makes `dir/key.pem` (0600) and `dir/request.csr` for `identity` on
/// the node's own machine; the request goes to the consortium CA, the key never leaves. An
/// existing key is never replaced. Returns the request's path.
pub fn write_request(dir: &Path, identity: &Identity) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let key = dir.join("key.pem");
    if key.exists() {
        return Err(Error::Config {
            origin: key.display().to_string(),
            message: "a private key is here already; it is never replaced (use another --out, or remove it if it is not in use)".into(),
        });
    }
    let (csr, key_pem) = request(identity)?;
    write_file(&key, &key_pem, true, false)?;
    let path = dir.join("request.csr");
    write_file(&path, &csr, false, true)?;
    Ok(path)
}

/// `fedsilo certs sign`: the CA in `ca_dir` signs the request at `csr` for `identity`, and
/// writes the node's `cert.pem` and `ca.pem` into `out` (beside the key its node kept).
pub fn sign(
    ca_dir: &Path,
    csr: &Path,
    identity: &Identity,
    days: i64,
    out: &Path,
) -> Result<PathBuf> {
    let ca = CertificateAuthority::load(&ca_dir.join("ca.pem"), &ca_dir.join("ca.key"))?;
    let text = fs::read_to_string(csr).map_err(|e| Error::io("reading", csr, e))?;
    let cert = ca.sign_request(&text, identity, days)?;
    fs::create_dir_all(out).map_err(|e| Error::io("creating", out, e))?;
    write_file(&out.join("cert.pem"), &cert, false, true)?;
    write_file(&out.join("ca.pem"), ca.cert_pem(), false, true)?;
    Ok(out.join("cert.pem"))
}

/// One revoked certificate, as `revoked.json` keeps it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RevokedEntry {
    /// Its serial, hex.
    pub serial: String,
    /// Whose it was, if known.
    pub name: String,
    /// Why.
    pub reason: String,
    /// When, seconds since the Unix epoch.
    pub at: i64,
}

/// `fedsilo certs revoke`: adds the certificate at `cert` (or the serial `serial`, hex) to the
/// CA's `revoked.json` and writes the CA-signed `crl.pem` of every revoked serial, both in
/// `ca_dir`. Revoking a serial twice changes nothing. Returns the list's path and the entry.
pub fn revoke(
    ca_dir: &Path,
    cert: Option<&Path>,
    serial: Option<&str>,
    reason: &str,
) -> Result<(PathBuf, RevokedEntry)> {
    let bad = |origin: String, message: String| Error::Config { origin, message };
    let (serial, name) = match (cert, serial) {
        (Some(path), None) => {
            let pem = fs::read(path).map_err(|e| Error::io("reading", path, e))?;
            let der = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
                .next()
                .ok_or_else(|| {
                    bad(
                        path.display().to_string(),
                        "no PEM certificate in it".into(),
                    )
                })?
                .map_err(|e| bad(path.display().to_string(), e.to_string()))?;
            let serial = crate::identity::revocation::serial_of(&der)
                .map_err(|e| bad(path.display().to_string(), e.to_string()))?;
            let name = Identity::from_cert_der(&der, &path.display().to_string())
                .map(|i| i.to_string())
                .unwrap_or_default();
            (serial, name)
        }
        (None, Some(hex)) => {
            let cleaned: String = hex.chars().filter(|c| *c != ':').collect();
            let bytes = ::hex::decode(&cleaned)
                .map_err(|e| bad("--serial".into(), format!("{hex}: not hex: {e}")))?;
            let first = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
            if first == bytes.len() || bytes.len() - first > 20 {
                return Err(bad(
                    "--serial".into(),
                    format!("{hex}: a serial is 1 to 20 bytes, not zero"),
                ));
            }
            (bytes[first..].to_vec(), String::new())
        }
        _ => {
            return Err(bad(
                "certs revoke".into(),
                "give --cert FILE or --serial HEX".into(),
            ))
        }
    };
    let ca = CertificateAuthority::load(&ca_dir.join("ca.pem"), &ca_dir.join("ca.key"))?;
    let book_path = ca_dir.join("revoked.json");
    let mut book: Vec<RevokedEntry> = match fs::read(&book_path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| bad(book_path.display().to_string(), e.to_string()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(Error::io("reading", &book_path, e)),
    };
    let hex_serial = ::hex::encode(&serial);
    let entry = match book.iter().find(|e| e.serial == hex_serial) {
        Some(e) => e.clone(),
        None => {
            let e = RevokedEntry {
                serial: hex_serial,
                name,
                reason: reason.to_string(),
                at: OffsetDateTime::now_utc().unix_timestamp(),
            };
            book.push(e.clone());
            e
        }
    };
    let revoked = book
        .iter()
        .map(|e| {
            let at =
                OffsetDateTime::from_unix_timestamp(e.at).unwrap_or(OffsetDateTime::UNIX_EPOCH);
            ::hex::decode(&e.serial)
                .map(|s| (s, at))
                .map_err(|err| bad(book_path.display().to_string(), err.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    let crl = ca.revocation_list(&revoked, book.len() as u64)?;
    let json = serde_json::to_string_pretty(&book)
        .map_err(|e| bad(book_path.display().to_string(), e.to_string()))?;
    crate::model::checkpoint::write_atomic(&book_path, json.as_bytes())?;
    let crl_path = ca_dir.join("crl.pem");
    crate::model::checkpoint::write_atomic(&crl_path, crl.as_bytes())?;
    Ok((crl_path, entry))
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

    fn who(name: &str, role: Role, region: &str) -> Identity {
        Identity {
            name: name.into(),
            role,
            region: region.into(),
        }
    }

    #[test]
    fn a_node_enrols_with_its_own_key_and_the_ca_decides_who_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let ca_dir = dir.path().join("ca");
        init(&ca_dir, "t", &[], 30, false).unwrap();
        let bank = who("bank-c", Role::Silo, "eu");
        // On the bank's machine: a key that never leaves, and a request.
        let kit = dir.path().join("bank-c");
        let csr = write_request(&kit, &bank).unwrap();
        let key_before = fs::read(kit.join("key.pem")).unwrap();
        // A second request would replace the key: refused.
        let e = write_request(&kit, &bank).unwrap_err().to_string();
        assert!(e.contains("never replaced"), "{e}");
        // At the CA: signed for exactly what it asks.
        sign(&ca_dir, &csr, &bank, 30, &kit).unwrap();
        let creds = crate::tls::NodeCredentials::load_kit(&kit).unwrap();
        assert_eq!(creds.identity(), &bank);
        assert_eq!(fs::read(kit.join("key.pem")).unwrap(), key_before);
        // A request for someone else, or another role or region, is refused by name.
        for other in [
            who("bank-a", Role::Silo, "eu"),
            who("bank-c", Role::Coordinator, "eu"),
            who("bank-c", Role::Silo, "us"),
        ] {
            let e = sign(&ca_dir, &csr, &other, 30, &dir.path().join("x"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("it asks for bank-c"), "{e}");
        }
        // A request whose bytes were changed fails its self-signature.
        let text = fs::read_to_string(&csr).unwrap();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        let mid = lines.len() / 2;
        lines[mid] = lines[mid].chars().rev().collect();
        let tampered = dir.path().join("tampered.csr");
        fs::write(&tampered, lines.join("\n")).unwrap();
        let e = sign(&ca_dir, &tampered, &bank, 30, &dir.path().join("y"));
        assert!(e.is_err());
    }

    #[test]
    fn revoking_lists_the_serial_in_a_crl_signed_by_the_ca() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = [
            NodeSpec::parse(Role::Silo, "bank-a").unwrap(),
            NodeSpec::parse(Role::Silo, "bank-b").unwrap(),
        ];
        init(dir.path(), "t", &nodes, 30, false).unwrap();
        let cert = dir.path().join("bank-a").join("cert.pem");
        let (crl, entry) = revoke(dir.path(), Some(&cert), None, "left the consortium").unwrap();
        assert!(entry.name.starts_with("bank-a"), "{entry:?}");
        let list = crate::identity::revocation::RevocationList::load(&crl).unwrap();
        let der = |name: &str| {
            let pem = fs::read(dir.path().join(name).join("cert.pem")).unwrap();
            rustls::pki_types::CertificateDer::from_pem_slice(&pem).unwrap()
        };
        assert!(list.revokes(&der("bank-a")));
        assert!(!list.revokes(&der("bank-b")));
        // Again: nothing changes; by serial: the same entry.
        let (_, again) = revoke(dir.path(), None, Some(&entry.serial), "").unwrap();
        assert_eq!(again, entry);
        let book: Vec<RevokedEntry> =
            serde_json::from_slice(&fs::read(dir.path().join("revoked.json")).unwrap()).unwrap();
        assert_eq!(book.len(), 1);
        // The CA's own node accepts the list; it refuses the revoked certificate.
        let coordinator =
            crate::tls::NodeCredentials::load_kit(&dir.path().join("bank-b")).unwrap();
        coordinator.server_config_revoking(&list.crls).unwrap();
        // A serial that is not hex, or zero, is refused.
        for bad in ["zz", "00"] {
            assert!(revoke(dir.path(), None, Some(bad), "").is_err(), "{bad}");
        }
    }
}
