//! Delivering notices to one endpoint: a queue of its own, worked through in order, each
//! notice retried with exponential back-off until it is accepted (2xx) or its attempts run out.
//! The federation only ever puts a notice in the queue without waiting: a slow, failing or dead
//! receiver delays its own notices, never a round. Every outcome is a line of
//! `<state_dir>/webhooks.jsonl`.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::Method;
use serde_json::json;
use tokio::sync::mpsc;

use super::notice::Notice;
use super::signature::{sign, DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use crate::audit::entry::now_ms;
use crate::http_client::{Failure, HttpClient};

/// How an endpoint is reached and retried.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Where to POST.
    pub url: String,
    /// The HMAC key.
    pub secret: Vec<u8>,
    /// Attempts per notice (at least 1).
    pub max_attempts: u32,
    /// Wait before the first retry; doubles each retry, up to `max_backoff`.
    pub first_backoff: Duration,
    /// The longest wait between attempts.
    pub max_backoff: Duration,
    /// The client (its timeout bounds each attempt).
    pub client: HttpClient,
}

/// One notice, ready to send.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Unique per notice; the same on every attempt (receivers de-duplicate on it).
    pub id: String,
    /// The notice.
    pub notice: Notice,
    /// The JSON body.
    pub body: Vec<u8>,
}

/// Where delivery outcomes are recorded.
#[derive(Debug, Clone)]
pub struct DeliveryLog(Arc<Mutex<Option<File>>>);

impl DeliveryLog {
    /// Appends to `<state_dir>/webhooks.jsonl` (if it cannot be opened, outcomes go to the log
    /// only).
    pub fn open(state_dir: &Path) -> Self {
        let path = state_dir.join("webhooks.jsonl");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| tracing::error!("webhooks: cannot open {}: {e}", path.display()))
            .ok();
        Self(Arc::new(Mutex::new(file)))
    }

    /// Records what became of delivery `d` to `url`: `what`'s fields beside the time, URL,
    /// id and kind.
    pub fn outcome(&self, url: &str, d: &Delivery, what: serde_json::Value) {
        let mut line = json!({
            "time_ms": now_ms(),
            "url": url,
            "id": d.id,
            "kind": d.notice.kind.as_str(),
        });
        if let (Some(l), serde_json::Value::Object(w)) = (line.as_object_mut(), what) {
            l.extend(w);
        }
        self.record(line);
    }

    /// Records one line.
    pub fn record(&self, line: serde_json::Value) {
        let mut file = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = file.as_mut() {
            if let Err(e) = writeln!(f, "{line}").and_then(|_| f.flush()) {
                tracing::error!("webhooks: cannot append to webhooks.jsonl: {e}");
            }
        }
    }
}

/// The URL as logs show it: scheme, host and port only (path, query and user info may carry
/// a receiver's own secret, as Slack's and Teams' hook URLs do).
pub(crate) fn shown(url: &str) -> String {
    match url.parse::<hyper::Uri>() {
        Ok(u) => format!(
            "{}://{}{}/…",
            u.scheme_str().unwrap_or("?"),
            u.host().unwrap_or("?"),
            u.port_u16().map_or(String::new(), |p| format!(":{p}"))
        ),
        Err(_) => "(unparsable URL)".into(),
    }
}

/// Whether an answer with this status is worth another attempt (server trouble, rate limits,
/// timeouts), rather than a refusal that another attempt would meet again.
fn retryable(status: u16) -> bool {
    status >= 500 || status == 429 || status == 408
}

/// Why an attempt did not deliver. Never shows the URL: its path may be the receiver's secret.
#[derive(Debug, thiserror::Error)]
enum Undelivered {
    /// The receiver answered with a status other than 2xx.
    #[error("answered {status}: {body}")]
    Answered {
        /// The status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// No answer.
    #[error(transparent)]
    NoAnswer(Failure),
}

/// Sends one delivery, with retries. Returns the attempts made and the outcome.
async fn deliver(endpoint: &Endpoint, d: &Delivery) -> (u32, Result<u16, Undelivered>) {
    let mut wait = endpoint.first_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        let timestamp = now_ms() / 1000;
        let headers = [
            ("content-type", "application/json".to_string()),
            (EVENT_HEADER, d.notice.kind.as_str().to_string()),
            (DELIVERY_HEADER, d.id.clone()),
            (TIMESTAMP_HEADER, timestamp.to_string()),
            (SIGNATURE_HEADER, sign(&endpoint.secret, timestamp, &d.body)),
        ];
        let outcome = endpoint
            .client
            .send(Method::POST, &endpoint.url, &headers, d.body.clone())
            .await;
        let (again, result) = match outcome {
            Ok(r) if (200..300).contains(&r.status) => return (attempt, Ok(r.status)),
            Ok(r) => (
                retryable(r.status),
                Err(Undelivered::Answered {
                    status: r.status,
                    body: r.text().chars().take(200).collect(),
                }),
            ),
            Err(e) => (true, Err(Undelivered::NoAnswer(e.failure))),
        };
        if !again || attempt >= endpoint.max_attempts {
            return (attempt, result);
        }
        tracing::info!(
            "webhook {}: {} attempt {attempt} failed ({}); retrying in {:.1} s",
            shown(&endpoint.url),
            d.id,
            result
                .as_ref()
                .err()
                .map_or(String::new(), |e| e.to_string()),
            wait.as_secs_f64()
        );
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(endpoint.max_backoff);
    }
}

/// Records a notice that was never delivered because the coordinator stopped first.
fn abandoned(log: &DeliveryLog, url: &str, d: &Delivery) {
    tracing::warn!(
        "webhook {url}: {} ({}) not delivered: the coordinator stopped",
        d.id,
        d.notice.kind.as_str()
    );
    log.outcome(
        url,
        d,
        json!({
            "outcome": "abandoned_at_shutdown",
            "body": String::from_utf8_lossy(&d.body),
        }),
    );
}

/// Works through `queue` until it closes, or until `stop` is set: then what is left (the
/// delivery under way included) is recorded as abandoned, with its body, for a replay.
pub async fn work(
    endpoint: Endpoint,
    mut queue: mpsc::Receiver<Delivery>,
    log: DeliveryLog,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let url = shown(&endpoint.url);
    loop {
        let d = tokio::select! {
            d = queue.recv() => match d {
                Some(d) => d,
                None => return,
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let (attempts, result) = tokio::select! {
            r = deliver(&endpoint, &d) => r,
            _ = stop.wait_for(|s| *s) => {
                abandoned(&log, &url, &d);
                break;
            }
        };
        let url = url.as_str();
        match &result {
            Ok(_) => tracing::debug!("webhook {url}: {} delivered", d.id),
            Err(e) => tracing::warn!(
                "webhook {url}: {} ({}) not delivered after {attempts} attempt(s): {e}",
                d.id,
                d.notice.kind.as_str()
            ),
        }
        log.outcome(
            url,
            &d,
            json!({
                "outcome": if result.is_ok() { "delivered" } else { "failed" },
                "attempts": attempts,
                "status": result.as_ref().ok(),
                "error": result.as_ref().err().map(|e| e.to_string()),
            }),
        );
    }
    while let Ok(d) = queue.try_recv() {
        abandoned(&log, &url, &d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_trouble_is_retried_and_refusals_are_not() {
        for s in [500, 502, 503, 429, 408] {
            assert!(retryable(s), "{s}");
        }
        for s in [400, 401, 403, 404, 410] {
            assert!(!retryable(s), "{s}");
        }
        assert_eq!(shown("https://h/x?token=abc"), "https://h/…");
        assert_eq!(
            shown("https://user:pw@hooks.slack.com:8443/services/T0/B0/SECRET"),
            "https://hooks.slack.com:8443/…"
        );
    }
}
