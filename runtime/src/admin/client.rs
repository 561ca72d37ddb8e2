//! A client of the admin API (the `fedsilo admin` commands and the tests use it).

use std::path::Path;
use std::time::Duration;

use hyper::Method;
use serde_json::Value;

use crate::http_client::{roots, HttpClient, HttpError, Response};
use crate::tls::NodeCredentials;

/// How long one call may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Refuses a base URL that would send credentials in the clear.
fn https_only(base: &str) -> crate::Result<()> {
    if base.starts_with("https://") {
        Ok(())
    } else {
        Err(crate::Error::Config {
            origin: base.to_string(),
            message: "the admin API is served over https:// only (a token sent over http:// would travel in the clear)".into(),
        })
    }
}

/// A client of one coordinator's admin API.
#[derive(Debug, Clone)]
pub struct AdminClient {
    http: HttpClient,
    base: String,
    token: Option<String>,
}

impl AdminClient {
    /// Authenticating with a certificate kit (mutual TLS); the server is verified against the
    /// kit's CA and must be named `server_name` in its certificate (the coordinator's name).
    pub fn with_kit(base: &str, kit: &NodeCredentials, server_name: &str) -> crate::Result<Self> {
        https_only(base)?;
        Ok(Self {
            http: HttpClient::with_tls(kit.client_config()?, TIMEOUT)
                .server_name(Some(server_name.to_string())),
            base: base.trim_end_matches('/').to_string(),
            token: None,
        })
    }

    /// Authenticating with a bearer token (`None`: no credentials at all); the server is
    /// verified against the CA in `ca`.
    pub fn with_token(
        base: &str,
        ca: &Path,
        token: Option<String>,
        server_name: &str,
    ) -> crate::Result<Self> {
        https_only(base)?;
        Ok(Self {
            http: HttpClient::with_roots(roots(false, Some(ca))?, TIMEOUT)
                .server_name(Some(server_name.to_string())),
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    /// Adds a bearer token to a certificate client (the token decides the scope).
    pub fn token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// `method path` with an optional JSON body.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, HttpError> {
        let mut headers = vec![("accept", "application/json".to_string())];
        if let Some(t) = &self.token {
            headers.push(("authorization", format!("Bearer {t}")));
        }
        let body = match body {
            Some(b) => {
                headers.push(("content-type", "application/json".to_string()));
                b.to_string().into_bytes()
            }
            None => vec![],
        };
        self.http
            .send(method, &format!("{}{path}", self.base), &headers, body)
            .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Response, HttpError> {
        self.call(Method::GET, path, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> Result<Response, HttpError> {
        self.call(Method::POST, path, Some(body)).await
    }
}
