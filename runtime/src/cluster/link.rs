//! Keeping an outgoing link up: connect, wait until it closes, reconnect with back-off.

use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::{ClusterNode, PeerEvent};
use crate::identity::Role;
use crate::{Error, Result};

/// How a kept link ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkEnd {
    /// The peer went away and `once` was asked.
    PeerGone,
}

/// Keeps a verified link from `node` to the node `name` (which must hold a certificate of
/// `role`) at `addr`: connects, waits until the session closes, and reconnects with exponential
/// back-off up to `max_backoff`. With `once`, returns when an established link closes. A peer
/// presenting another role, or a certificate refused for good ([`Error::TlsRefused`]: another
/// CA, another name, expired), is an error (a configuration mistake, not a transient fault).
pub async fn keep_linked(
    node: &ClusterNode,
    addr: &str,
    name: &str,
    role: Role,
    once: bool,
    max_backoff: Duration,
) -> Result<LinkEnd> {
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut events = node.directory().subscribe();
        match node.connect(addr, name, Duration::from_secs(15)).await {
            Ok(id) if id.role != role => {
                return Err(Error::Cluster(format!(
                    "{} at {addr} presents a certificate of role {}, expected {role}",
                    id.name, id.role
                )))
            }
            Ok(id) => {
                tracing::info!(peer = %id, "linked over mTLS");
                println!(
                    "{} linked to {} {} at {addr}",
                    node.identity().name,
                    role,
                    id.name
                );
                backoff = Duration::from_millis(200);
                loop {
                    match events.recv().await {
                        Ok(PeerEvent::Disconnected {
                            identity: Some(i), ..
                        }) if i.name == id.name => break,
                        // Events were lost (a flood of refusals, say): ask the directory.
                        Err(RecvError::Lagged(_))
                            if !node
                                .directory()
                                .bound_peers()
                                .iter()
                                .any(|(_, i)| i.name == id.name) =>
                        {
                            break
                        }
                        Ok(_) | Err(RecvError::Lagged(_)) => {}
                        Err(RecvError::Closed) => break,
                    }
                }
                tracing::warn!(peer = %id, "link closed");
                if once {
                    return Ok(LinkEnd::PeerGone);
                }
            }
            // A certificate refused for good: say so once and stop.
            Err(e @ Error::TlsRefused { .. }) => return Err(e),
            Err(e) => {
                tracing::warn!("cannot link to {name} at {addr}: {e}; retrying in {backoff:?}")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(max_backoff);
    }
}
