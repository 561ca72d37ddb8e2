//! TLS 1.3 with mutual authentication, rooted in the consortium CA.
//!
//! [`NodeCredentials`] holds what a node needs for every link: the CA to verify peers against,
//! its own certificate chain and key, and its own [`Identity`] (read from its certificate).
//! Both configurations it makes accept TLS 1.3 only and require the peer to present a
//! certificate issued by the consortium CA and currently valid; a client also checks that the
//! server's certificate names the node it meant to reach.

use std::path::Path;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::identity::Identity;
use crate::{Error, Result};

/// Installs aws-lc-rs as the process-wide rustls provider. Idempotent; call once at start-up
/// (ractor_cluster builds rustls with aws-lc-rs, and a second provider would make
/// `ClientConfig::builder()` panic).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A server configuration no client can complete a handshake with (it has no certificate to
/// present). For ractor_cluster's own listener, which every `NodeServer` runs: fedsilo accepts
/// links only through its own listener, so that one must be sealed.
pub fn sealed_server_config() -> Result<Arc<ServerConfig>> {
    #[derive(Debug)]
    struct NoCertificate;
    impl rustls::server::ResolvesServerCert for NoCertificate {
        fn resolve(
            &self,
            _: rustls::server::ClientHello<'_>,
        ) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }
    let config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Cluster(format!("TLS 1.3: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
    Ok(Arc::new(config))
}

/// A node's TLS credentials. Invariant: `identity` is the identity of `chain[0]`.
#[derive(Debug, Clone)]
pub struct NodeCredentials {
    roots: Arc<RootCertStore>,
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    identity: Identity,
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io("reading", path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Certificate {
            origin: path.display().to_string(),
            message: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(Error::Certificate {
            origin: path.display().to_string(),
            message: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

/// The ALPN protocol name of a link of the bulk data plane (`crate::bulk`), accepted on a
/// cluster listener beside its ractor_cluster links (`crate::cluster::handoff`).
pub const BULK_ALPN: &[u8] = b"fedsilo-bulk/1";

impl NodeCredentials {
    /// Loads a node kit directory (`ca.pem`, `cert.pem`, `key.pem`, as `fedsilo certs` writes).
    pub fn load_kit(dir: &Path) -> Result<Self> {
        Self::load(
            &dir.join("ca.pem"),
            &dir.join("cert.pem"),
            &dir.join("key.pem"),
        )
    }

    /// Loads credentials from three PEM files.
    pub fn load(ca: &Path, cert: &Path, key: &Path) -> Result<Self> {
        let ca_certs = read_certs(ca)?;
        let chain = read_certs(cert)?;
        let key_bytes = std::fs::read(key).map_err(|e| Error::io("reading", key, e))?;
        let key_der =
            PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| Error::Certificate {
                origin: key.display().to_string(),
                message: format!("not a PEM private key: {e}"),
            })?;
        Self::from_parts(ca_certs, chain, key_der, &cert.display().to_string())
    }

    /// Builds credentials from DER parts; `origin` names them in errors.
    pub fn from_parts(
        ca_certs: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        origin: &str,
    ) -> Result<Self> {
        let mut roots = RootCertStore::empty();
        for c in ca_certs {
            roots.add(c).map_err(|e| Error::Certificate {
                origin: origin.to_string(),
                message: format!("CA certificate rejected: {e}"),
            })?;
        }
        let first = chain.first().ok_or_else(|| Error::Certificate {
            origin: origin.to_string(),
            message: "empty certificate chain".into(),
        })?;
        let identity = Identity::from_cert_der(first, origin)?;
        Ok(Self {
            roots: Arc::new(roots),
            chain,
            key: Arc::new(key),
            identity,
        })
    }

    /// This node's identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// This node's certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        self.chain[0].as_ref()
    }

    /// This node's private key as a signer (ECDSA P-256 with SHA-256, as `fedsilo certs` makes).
    pub fn signer(&self) -> Result<Box<dyn rustls::sign::Signer>> {
        let key = rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&self.key).map_err(|e| {
            Error::Certificate {
                origin: self.identity.name.clone(),
                message: format!("the key cannot sign: {e}"),
            }
        })?;
        key.choose_scheme(&[rustls::SignatureScheme::ECDSA_NISTP256_SHA256])
            .ok_or_else(|| Error::Certificate {
                origin: self.identity.name.clone(),
                message: "the key is not an ECDSA P-256 key".into(),
            })
    }

    /// The consortium CA's certificates this node trusts.
    pub fn roots(&self) -> Arc<RootCertStore> {
        self.roots.clone()
    }

    /// A server configuration: TLS 1.3 only, client certificate required and verified against
    /// the consortium CA.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>> {
        self.server_config_with(false, &[])
    }

    /// [`NodeCredentials::server_config`] that also refuses the certificates the CA's
    /// revocation lists `crls` name (rustls checks each list's signature; a client certificate
    /// no list covers is refused too). A list that is not the consortium CA's, or that revokes
    /// this node's own certificate, is an error here rather than a refusal of every peer.
    pub fn server_config_revoking(
        &self,
        crls: &[rustls::pki_types::CertificateRevocationListDer<'static>],
    ) -> Result<Arc<ServerConfig>> {
        let config = self.server_config_with(false, crls)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider())
            .with_crls(crls.iter().cloned())
            .only_check_end_entity_revocation()
            .build()
            .map_err(|e| Error::Cluster(format!("client verifier: {e}")))?;
        let now = rustls::pki_types::UnixTime::now();
        verifier
            .verify_client_cert(&self.chain[0], &self.chain[1..], now)
            .map_err(|e| Error::Certificate {
                origin: self.identity.name.clone(),
                message: format!(
                    "the revocation list does not fit this node's consortium CA, or revokes this node itself: {e}"
                ),
            })?;
        Ok(config)
    }

    /// The admin API's server configuration: TLS 1.3 only, HTTP/1.1; a client certificate is
    /// optional (automation tools authenticate with a bearer token instead) but, when one is
    /// presented, it must verify against the consortium CA.
    pub fn admin_server_config(&self) -> Result<Arc<ServerConfig>> {
        let mut config = Arc::unwrap_or_clone(self.server_config_with(true, &[])?);
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn server_config_with(
        &self,
        certificate_optional: bool,
        crls: &[rustls::pki_types::CertificateRevocationListDer<'static>],
    ) -> Result<Arc<ServerConfig>> {
        let builder = WebPkiClientVerifier::builder_with_provider(self.roots.clone(), provider());
        let builder = if crls.is_empty() {
            builder
        } else {
            builder
                .with_crls(crls.iter().cloned())
                .only_check_end_entity_revocation()
        };
        let builder = if certificate_optional {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        let verifier = builder
            .build()
            .map_err(|e| Error::Cluster(format!("client verifier: {e}")))?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Cluster(format!("TLS 1.3: {e}")))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Certificate {
                origin: self.identity.name.clone(),
                message: format!("key does not fit certificate: {e}"),
            })?;
        let mut config = config;
        // A client may ask for the bulk data plane; one that asks for nothing is a cluster link.
        config.alpn_protocols = vec![BULK_ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// [`NodeCredentials::client_config`] for a link of the bulk data plane: it asks for
    /// [`BULK_ALPN`].
    pub fn bulk_client_config(&self) -> Result<Arc<ClientConfig>> {
        let mut config = Arc::unwrap_or_clone(self.client_config()?);
        config.alpn_protocols = vec![BULK_ALPN.to_vec()];
        Ok(Arc::new(config))
    }

    /// A client configuration: TLS 1.3 only, presenting this node's certificate, verifying the
    /// server against the consortium CA.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let verifier = WebPkiServerVerifier::builder_with_provider(self.roots.clone(), provider())
            .build()
            .map_err(|e| Error::Cluster(format!("server verifier: {e}")))?;
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| Error::Cluster(format!("TLS 1.3: {e}")))?
            .with_webpki_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| Error::Certificate {
                origin: self.identity.name.clone(),
                message: format!("key does not fit certificate: {e}"),
            })?;
        Ok(Arc::new(config))
    }
}
