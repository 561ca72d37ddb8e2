//! Refused and replaced cluster links, as federation events.

use std::sync::Arc;
use std::time::Duration;

use crate::events::{Event, EventLog};

/// Turns the directory's refusals of consortium certificates, and its replacements of dead
/// links, into federation events: what an operator must see (a member's certificate used to
/// claim another's name, a copied kit). At most one refusal event per identity per 10 s, so a
/// reconnect loop cannot flood `events.jsonl`; every refusal is logged and counted anyway.
pub async fn announce_link_refusals(
    directory: Arc<crate::cluster::PeerDirectory>,
    events: Arc<EventLog>,
) {
    use crate::cluster::PeerEvent;
    use tokio::sync::broadcast::error::RecvError;
    let mut rx = directory.subscribe();
    let mut last: std::collections::HashMap<String, std::time::Instant> = Default::default();
    loop {
        match rx.recv().await {
            Ok(PeerEvent::Refused {
                peer_addr,
                identity: Some(identity),
                reason,
            }) => {
                let now = std::time::Instant::now();
                let recent = last
                    .get(&identity.name)
                    .is_some_and(|t| now.duration_since(*t) < Duration::from_secs(10));
                if !recent {
                    last.insert(identity.name.clone(), now);
                    events.emit(Event::LinkRefused {
                        peer: peer_addr,
                        certificate: identity.to_string(),
                        reason,
                    });
                }
            }
            Ok(PeerEvent::Replaced {
                identity,
                silent_for,
                ..
            }) => events.emit(Event::LinkReplaced {
                node: identity.name,
                silent_secs: silent_for.as_secs_f64(),
            }),
            Ok(_) | Err(RecvError::Lagged(_)) => {}
            Err(RecvError::Closed) => return,
        }
    }
}
