//! Webhooks: the coordinator POSTs notices (a candidate awaiting approval, a version
//! committed, a round abandoned, a silo quarantined, the privacy budget nearly spent, …) to
//! configured URLs, signed with HMAC-SHA256 so the receiver can verify them, retried with
//! back-off; a failing receiver never blocks a round.
//!
//! ```toml
//! [[webhooks]]
//! url = "https://hooks.example.com/fedsilo"   # http:// or https://
//! secret_file = "webhook.secret"     # the HMAC key (the file's text, trimmed)
//! events = ["candidate_awaiting_approval", "version_committed"]   # default: every kind
//! max_attempts = 6                   # per notice (default 6)
//! first_retry_secs = 1.0             # doubles each retry (default 1)
//! max_retry_secs = 60.0              # longest wait between attempts (default 60)
//! timeout_secs = 10.0                # per attempt (default 10)
//! budget_warning = 0.8               # budget_nearly_spent at this share of a budget (default 0.8)
//! ca = "receiver-ca.pem"             # optional: trust this CA too for https://
//! ```
//!
//! Each POST carries the JSON body `{"id", "kind", "federation", "time_ms", "data"}` and the
//! headers `X-Fedsilo-Event`, `X-Fedsilo-Delivery` (the same on every retry),
//! `X-Fedsilo-Timestamp` and `X-Fedsilo-Signature: sha256=<hex HMAC of "timestamp.body">`.

pub mod delivery;
pub mod notice;
pub mod signature;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fedsilo_policies::duration;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};

use crate::audit::entry::now_ms;
use crate::events::EventLog;
use crate::http_client::{roots, HttpClient};
use crate::{Error, Result};
use delivery::{Delivery, DeliveryLog, Endpoint};
use notice::{NoticeKind, Noticer};

/// Notices an endpoint may have waiting before new ones are dropped (and logged as such).
const QUEUE: usize = 1024;

/// One `[[webhooks]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST.
    pub url: String,
    /// The file holding the HMAC key.
    pub secret_file: PathBuf,
    /// The kinds of notice to send (default: all).
    #[serde(default)]
    pub events: Option<Vec<NoticeKind>>,
    /// Attempts per notice.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// First wait between attempts, seconds.
    #[serde(default = "default_first_retry")]
    pub first_retry_secs: f64,
    /// Longest wait between attempts, seconds.
    #[serde(default = "default_max_retry")]
    pub max_retry_secs: f64,
    /// Per-attempt timeout, seconds.
    #[serde(default = "default_timeout")]
    pub timeout_secs: f64,
    /// `budget_nearly_spent` when a silo has spent this share of its ε budget.
    #[serde(default = "default_budget_warning")]
    pub budget_warning: f64,
    /// An extra CA (PEM) to trust for `https://` besides the public ones.
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn default_attempts() -> u32 {
    6
}
fn default_first_retry() -> f64 {
    1.0
}
fn default_max_retry() -> f64 {
    60.0
}
fn default_timeout() -> f64 {
    10.0
}
fn default_budget_warning() -> f64 {
    0.8
}

impl WebhookConfig {
    /// Resolves relative paths against `base`.
    pub fn resolve(&mut self, base: &Path) {
        if self.secret_file.is_relative() {
            self.secret_file = base.join(&self.secret_file);
        }
        if let Some(ca) = self.ca.as_mut().filter(|c| c.is_relative()) {
            *ca = base.join(&*ca);
        }
    }

    /// Checks values and reads the secret; errors name `webhooks[i]`.
    fn endpoint(&self, i: usize, origin: &str) -> Result<Endpoint> {
        let bad = |message: String| Error::Config {
            origin: origin.to_string(),
            message: format!("webhooks[{i}] ({}): {message}", delivery::shown(&self.url)),
        };
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(bad("url must start with http:// or https://".into()));
        }
        if self.max_attempts == 0 {
            return Err(bad("max_attempts must be at least 1".into()));
        }
        for (key, v) in [
            ("first_retry_secs", self.first_retry_secs),
            ("max_retry_secs", self.max_retry_secs),
            ("timeout_secs", self.timeout_secs),
        ] {
            if !duration::is_duration(v) {
                return Err(bad(format!("{key} = {v}: must be {}", duration::ALLOWED)));
            }
        }
        if !(self.budget_warning > 0.0 && self.budget_warning <= 1.0) {
            return Err(bad(format!(
                "budget_warning = {}: must be a share in (0, 1], e.g. 0.8",
                self.budget_warning
            )));
        }
        let secret = std::fs::read_to_string(&self.secret_file)
            .map_err(|e| bad(format!("secret_file {}: {e}", self.secret_file.display())))?;
        let secret = secret.trim();
        if secret.len() < 16 {
            return Err(bad(format!(
                "secret_file {}: the secret must be at least 16 characters",
                self.secret_file.display()
            )));
        }
        let timeout = duration::to_duration(self.timeout_secs);
        let client = HttpClient::with_roots(
            roots(true, self.ca.as_deref()).map_err(|e| bad(e.to_string()))?,
            timeout,
        );
        Ok(Endpoint {
            url: self.url.clone(),
            secret: secret.as_bytes().to_vec(),
            max_attempts: self.max_attempts,
            first_backoff: duration::to_duration(self.first_retry_secs),
            max_backoff: duration::to_duration(self.max_retry_secs),
            client,
        })
    }

    /// Whether this endpoint wants `kind`.
    fn wants(&self, kind: NoticeKind) -> bool {
        self.events.as_ref().is_none_or(|k| k.contains(&kind))
    }
}

/// The webhooks, checked and ready to start: each configuration with its endpoint.
#[derive(Debug)]
pub struct Prepared(Vec<(WebhookConfig, Endpoint)>);

/// Checks every webhook and reads its secret and CA file (an error names the hook), without
/// starting anything.
pub fn prepare(configs: &[WebhookConfig], origin: &str) -> Result<Prepared> {
    configs
        .iter()
        .enumerate()
        .map(|(i, c)| Ok((c.clone(), c.endpoint(i, origin)?)))
        .collect::<Result<_>>()
        .map(Prepared)
}

/// The running webhook workers.
#[derive(Debug)]
pub struct Webhooks {
    /// Tells the router to pass on what the event stream still holds and close the queues.
    finish: Option<tokio::sync::oneshot::Sender<()>>,
    /// Tells the workers to give up and record what is left.
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Webhooks {
    /// At shutdown: lets the queued notices go out for up to `grace`; what is still undelivered
    /// then is recorded in `webhooks.jsonl` as `abandoned_at_shutdown`, with its body.
    pub async fn shutdown(mut self, grace: Duration) {
        if let Some(f) = self.finish.take() {
            let _ = f.send(());
        }
        let tasks = std::mem::take(&mut self.tasks);
        let mut all = std::pin::pin!(join_all(tasks));
        if tokio::time::timeout(grace, &mut all).await.is_err() {
            let _ = self.stop.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(5), &mut all).await;
        }
    }
}

/// Waits for every task.
async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Starts one delivery worker per webhook, fed from `events`; `federation` names the sender
/// in every body. Returns at once.
pub fn start(
    prepared: Prepared,
    events: &EventLog,
    federation: &str,
    state_dir: &Path,
) -> Webhooks {
    let (finish_tx, mut finish) = tokio::sync::oneshot::channel();
    let stop = tokio::sync::watch::Sender::new(false);
    let mut hooks = Webhooks {
        finish: Some(finish_tx),
        stop,
        tasks: vec![],
    };
    if prepared.0.is_empty() {
        return hooks;
    }
    let log = DeliveryLog::open(state_dir);
    let mut outlets = Vec::new();
    for (c, endpoint) in prepared.0 {
        let (tx, rx) = mpsc::channel(QUEUE);
        hooks.tasks.push(tokio::spawn(delivery::work(
            endpoint,
            rx,
            log.clone(),
            hooks.stop.subscribe(),
        )));
        let noticer = Noticer::new(c.budget_warning);
        outlets.push((c, tx, noticer));
    }
    let mut stream = events.subscribe();
    let federation = federation.to_string();
    hooks.tasks.push(tokio::spawn(async move {
        let mut seq: u64 = 0;
        let started = now_ms();
        let mut finishing = false;
        loop {
            let next = if finishing {
                // Only what the stream holds already, then the queues close.
                match stream.try_recv() {
                    Ok(e) => Ok(e),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Err(broadcast::error::RecvError::Lagged(n))
                    }
                    Err(_) => return,
                }
            } else {
                tokio::select! {
                    e = stream.recv() => e,
                    _ = &mut finish => {
                        finishing = true;
                        continue;
                    }
                }
            };
            let event = match next {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::error!("webhooks: fell {n} events behind; their notices are lost");
                    log.record(json!({"time_ms": now_ms(), "outcome": "lost", "events": n}));
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            for (config, tx, noticer) in outlets.iter_mut() {
                for notice in noticer.notices(&event) {
                    if !config.wants(notice.kind) {
                        continue;
                    }
                    seq += 1;
                    let id = format!("{federation}-{started}-{seq}");
                    let body = json!({
                        "id": id,
                        "kind": notice.kind.as_str(),
                        "federation": federation,
                        "time_ms": now_ms(),
                        "data": notice.data,
                    })
                    .to_string()
                    .into_bytes();
                    let kind = notice.kind;
                    let sent = tx.try_send(Delivery {
                        id: id.clone(),
                        notice,
                        body,
                    });
                    if let Err(e) = sent {
                        let why = match e {
                            mpsc::error::TrySendError::Full(_) => {
                                format!("{QUEUE} notices waiting already")
                            }
                            mpsc::error::TrySendError::Closed(_) => {
                                "its delivery worker stopped".to_string()
                            }
                        };
                        tracing::error!(
                            "webhook {}: {why}; {id} ({}) dropped",
                            delivery::shown(&config.url),
                            kind.as_str()
                        );
                        log.record(json!({
                            "time_ms": now_ms(), "url": delivery::shown(&config.url), "id": id,
                            "kind": kind.as_str(), "outcome": "dropped", "attempts": 0, "error": why,
                        }));
                    }
                }
            }
        }
    }));
    hooks
}
