//! Revocation on a listening node (the coordinator, a regional aggregator): the consortium
//! CA's revocation list, watched.
//!
//! With a list configured (`network.crl`, `fedsilo aggregator --crl`), every accepted link's
//! TLS handshake runs under a configuration that refuses the certificates it names, with the
//! alert `certificate_revoked` (a silo that receives it stops with one message instead of
//! retrying). The file is read again when it changes — checked every [`WATCH_EVERY`] — and then
//! new handshakes use the new list and every open link whose certificate it names is closed:
//! a silo revoked while linked is dropped within a second, well inside one heartbeat. A list
//! that cannot be used at start stops the node; one that breaks later is reported and the
//! last good list stays in force (a half-written file never opens the door).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio_rustls::TlsAcceptor;

use super::PeerDirectory;
use crate::identity::revocation::{serial_of, RevocationList};
use crate::tls::NodeCredentials;
use crate::{Error, Result};

/// How often the list's file is looked at.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// The acceptor in force and the links to close when the list changes.
pub struct Revocations {
    credentials: NodeCredentials,
    path: Option<PathBuf>,
    state: Mutex<State>,
    /// The labels of open links a new list revoked, for links the directory does not hold
    /// (the bulk data plane's).
    revoked: tokio::sync::broadcast::Sender<String>,
}

struct State {
    /// The file's modification time and length when it was read.
    stamp: Option<(SystemTime, u64)>,
    list: Arc<RevocationList>,
    acceptor: TlsAcceptor,
    /// The serial of each open accepted link's certificate, by link label.
    links: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for Revocations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Revocations")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Revocations {
    /// The acceptor of `credentials`, refusing what the list at `path` revokes (none: no list).
    /// A list that cannot be read, is not the consortium CA's, or revokes this node is an error.
    pub fn new(credentials: NodeCredentials, path: Option<PathBuf>) -> Result<Self> {
        // Stamped before reading: a change made while it is read is read again.
        let stamp = path.as_deref().and_then(stamp);
        let (list, config) = match &path {
            None => (RevocationList::default(), credentials.server_config()?),
            Some(p) => {
                let list = RevocationList::load(p).map_err(|e| Error::Config {
                    origin: "the certificate revocation list".into(),
                    message: e.to_string(),
                })?;
                let config = credentials
                    .server_config_revoking(&list.crls)
                    .map_err(|e| Error::Config {
                        origin: p.display().to_string(),
                        message: e.to_string(),
                    })?;
                (list, config)
            }
        };
        Ok(Revocations {
            credentials,
            state: Mutex::new(State {
                stamp,
                list: Arc::new(list),
                acceptor: TlsAcceptor::from(config),
                links: BTreeMap::new(),
            }),
            path,
            revoked: tokio::sync::broadcast::channel(64).0,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The acceptor for the next handshake.
    pub fn acceptor(&self) -> TlsAcceptor {
        self.lock().acceptor.clone()
    }

    /// Notes the certificate of the accepted link `label` (until [`Revocations::forget`]).
    /// `false`: the list in force revokes it (the handshake raced a change of the list).
    pub fn track(&self, label: &str, cert_der: &[u8]) -> bool {
        let serial = serial_of(cert_der).unwrap_or_default();
        let mut s = self.lock();
        if s.list.serials.contains(&serial) {
            return false;
        }
        s.links.insert(label.to_string(), serial);
        true
    }

    /// The labels of open links revoked from now on.
    pub fn revoked(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.revoked.subscribe()
    }

    /// Whether the link `label` is still tracked (not yet revoked or gone).
    pub fn is_tracked(&self, label: &str) -> bool {
        self.lock().links.contains_key(label)
    }

    /// The link `label` is gone.
    pub fn forget(&self, label: &str) {
        self.lock().links.remove(label);
    }

    /// Reads the list again if its file changed; returns the labels of the open links it now
    /// revokes. A list that cannot be used is reported and the last good one stays.
    pub fn refresh(&self) -> Vec<String> {
        let Some(path) = &self.path else {
            return Vec::new();
        };
        let now = stamp(path);
        if now == self.lock().stamp {
            return Vec::new();
        }
        let loaded = RevocationList::load(path)
            .map_err(|e| e.to_string())
            .and_then(|list| {
                self.credentials
                    .server_config_revoking(&list.crls)
                    .map(|c| (list, c))
                    .map_err(|e| e.to_string())
            });
        let mut s = self.lock();
        s.stamp = now;
        match loaded {
            Err(e) => {
                tracing::error!(
                    path = %path.display(),
                    "the new certificate revocation list cannot be used; the last one stays in force: {e}"
                );
                Vec::new()
            }
            Ok((list, config)) => {
                tracing::info!(
                    path = %path.display(),
                    revoked = list.serials.len(),
                    "certificate revocation list read"
                );
                s.acceptor = TlsAcceptor::from(config);
                let revoked: Vec<String> = s
                    .links
                    .iter()
                    .filter(|(_, serial)| list.serials.contains(*serial))
                    .map(|(l, _)| l.clone())
                    .collect();
                s.list = Arc::new(list);
                revoked
            }
        }
    }
}

/// Watches the list until the task is aborted: each change closes the links it revokes.
pub async fn watch(revocations: Arc<Revocations>, directory: Arc<PeerDirectory>) {
    loop {
        tokio::time::sleep(WATCH_EVERY).await;
        for label in revocations.refresh() {
            tracing::warn!(peer = %label, "closing a link: its certificate was revoked");
            directory.refused(
                &label,
                None,
                "certificate revoked (certificate revocation list)",
            );
            directory.close(&label, "certificate revoked");
            let _ = revocations.revoked.send(label.clone());
            revocations.forget(&label);
        }
    }
}
