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
#[error("{method} {url}: {message}")]
pub struct HttpError {
    /// The method.
    pub method: String,
    /// The URL.
    pub url: String,
    /// What went wrong.
    pub message: String,
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
        let fail = |message: String| HttpError {
            method: method.to_string(),
            url: url.to_string(),
            message,
        };
        let uri: Uri = url.parse().map_err(|e| fail(format!("not a URL: {e}")))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(fail(format!(
                    "unsupported scheme {:?}: use http:// or https://",
                    other.unwrap_or("")
                )))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| fail("the URL names no host".into()))?
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
            .map_err(|e| fail(format!("cannot build the request: {e}")))?;
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
            if https {
                let config = self
                    .tls
                    .clone()
                    .ok_or("https:// needs TLS settings (a CA or a kit)")?;
                let name = self.server_name.clone().unwrap_or_else(|| host.clone());
                let name = ServerName::try_from(name.clone())
                    .map_err(|e| format!("server name {name:?}: {e}"))?;
                let tls = tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS handshake failed: {e}"))?;
                round_trip(tls, request).await
            } else {
                round_trip(tcp, request).await
            }
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(message)) => Err(fail(message)),
            Err(_) => Err(fail(format!(
                "no answer within {:.1} s",
                self.timeout.as_secs_f64()
            ))),
        }
    }
}

/// One request over `io`, then the connection is dropped.
async fn round_trip<T>(io: T, request: Request<Full<Bytes>>) -> Result<Response, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(connection);
    let answer = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer failed: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Response { status, body })
    }
    .await;
    driver.abort();
    answer
}
