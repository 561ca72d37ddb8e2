//! A small HTTP/1.1 client (hyper): one request per connection, over TCP or TLS (rustls),
//! bounded by a timeout. The admin CLI, webhook deliveries and the tests use it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};

/// The largest response body read (larger ones are an error).
const MAX_BODY: usize = 16 << 20;

/// Why a request failed (no answer; an answer of any status is a [`Response`]).
#[derive(Debug, thiserror::Error)]
#[error("{method} {url}: {failure}")]
pub struct HttpError {
    /// The method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// What went wrong.
    pub failure: Failure,
}

/// What went wrong with a request, step by step.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The URL does not parse.
    #[error("not a URL: {0}")]
    NotAUrl(hyper::http::uri::InvalidUri),
    /// Neither http nor https.
    #[error("unsupported scheme {0:?}: use http:// or https://")]
    Scheme(String),
    /// No host in the URL.
    #[error("the URL names no host")]
    NoHost,
    /// The request cannot be built (e.g. a header value with a newline).
    #[error("cannot build the request: {0}")]
    Build(hyper::http::Error),
    /// No connection.
    #[error("cannot connect to {host}:{port}: {source}")]
    Connect {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// The cause.
        source: std::io::Error,
    },
    /// https without TLS settings.
    #[error("https:// needs TLS settings (a CA or a kit)")]
    NoTls,
    /// The name to verify is not a server name.
    #[error("server name {name:?}: {reason}")]
    ServerName {
        /// The name.
        name: String,
        /// Why it is not one.
        reason: String,
    },
    /// The TLS handshake failed (e.g. the certificate does not verify).
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    /// The HTTP handshake failed.
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    /// Sending the request failed.
    #[error("request failed: {0}")]
    Request(hyper::Error),
    /// Reading the answer failed, or it is over the size limit.
    #[error("reading the answer failed: {0}")]
    Body(String),
    /// No answer in time.
    #[error("no answer within {0:.1} s")]
    Timeout(f64),
}

/// An answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A client: plain HTTP always, HTTPS with the TLS configuration it was given.
#[derive(Debug, Clone)]
pub struct HttpClient {
    tls: Option<Arc<ClientConfig>>,
    server_name: Option<String>,
    timeout: Duration,
}

/// Trust anchors: the public web's (Mozilla's, as webpki-roots ships them) or none, plus the
/// certificates of `extra` (a PEM file), if given.
pub fn roots(public: bool, extra: Option<&Path>) -> crate::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    if public {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = extra {
        let bytes = std::fs::read(path).map_err(|e| crate::Error::io("reading", path, e))?;
        let origin = path.display().to_string();
        let mut any = false;
        for cert in CertificateDer::pem_slice_iter(&bytes) {
            let cert = cert.map_err(|e| crate::Error::Certificate {
                origin: origin.clone(),
                message: format!("not a PEM certificate file: {e}"),
            })?;
            roots.add(cert).map_err(|e| crate::Error::Certificate {
                origin: origin.clone(),
                message: format!("CA certificate rejected: {e}"),
            })?;
            any = true;
        }
        if !any {
            return Err(crate::Error::Certificate {
                origin,
                message: "no certificate in file".into(),
            });
        }
    }
    Ok(roots)
}

impl HttpClient {
    /// Plain HTTP only.
    pub fn plain(timeout: Duration) -> Self {
        Self {
            tls: None,
            server_name: None,
            timeout,
        }
    }

    /// HTTP and HTTPS, verifying servers against `roots`, without a client certificate.
    pub fn with_roots(roots: RootCertStore, timeout: Duration) -> Self {
        let config = ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
        Self {
            // The provider's safe defaults always exist.
            tls: config.ok().map(Arc::new),
            server_name: None,
            timeout,
        }
    }

    /// HTTP and HTTPS with a ready TLS configuration (e.g. a node's mutual-TLS one).
    pub fn with_tls(config: Arc<ClientConfig>, timeout: Duration) -> Self {
        Self {
            tls: Some(config),
            server_name: None,
            timeout,
        }
    }

    /// Verify the server's certificate against this name instead of the URL's host (a
    /// consortium certificate names its node, e.g. `coordinator`, not an address).
    pub fn server_name(mut self, name: Option<String>) -> Self {
        self.server_name = name;
        self
    }

    /// Sends one request and reads the whole answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> Result<Response, HttpError> {
        let fail = |failure: Failure| HttpError {
            method: method.to_string(),
            url: url.to_string(),
            failure,
        };
        let uri: Uri = url.parse().map_err(|e| fail(Failure::NotAUrl(e)))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(fail(Failure::Scheme(other.unwrap_or("").to_string()))),
        };
        let host = uri
            .host()
            .ok_or_else(|| fail(Failure::NoHost))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = uri
            .authority()
            .map_or_else(|| host.clone(), |a| a.to_string());
        let mut request = Request::builder()
            .method(method.clone())
            .uri(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(hyper::header::HOST, authority)
            .header(hyper::header::USER_AGENT, "fedsilo");
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(Failure::Build(e)))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|source| Failure::Connect {
                    host: host.clone(),
                    port,
                    source,
                })?;
            if https {
                let config = self.tls.clone().ok_or(Failure::NoTls)?;
                let name = self.server_name.clone().unwrap_or_else(|| host.clone());
                let name = ServerName::try_from(name.clone()).map_err(|e| Failure::ServerName {
                    name,
                    reason: e.to_string(),
                })?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(Failure::Tls)?;
                round_trip(tls, request).await
            } else {
                round_trip(tcp, request).await
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(failure)) => Err(fail(failure)),
            Err(_) => Err(fail(Failure::Timeout(self.timeout.as_secs_f64()))),
        }
    }
}

/// One request over `io`, then the connection is dropped.
async fn round_trip<T>(io: T, request: Request<Full<Bytes>>) -> Result<Response, Failure>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(Failure::Handshake)?;
    let driver = tokio::spawn(connection);
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(Failure::Request)?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| Failure::Body(e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok(Response { status, body })
    }
    .await;
    driver.abort();
    answer
}
