//! A dialled link's ear for the peer's verdict on our certificate.
//!
//! In TLS 1.3 the client finishes its handshake before the server has checked the client's
//! certificate: a server that refuses it — revoked, another CA, expired — says so with an
//! alert that arrives on the client's first read, by then inside ractor_cluster's session,
//! which only sees the link close. [`RefusalWatch`] sits under the session and keeps that
//! alert, so that [`super::ClusterNode::connect`] reports "refused for good" (and the silo
//! stops with one message) instead of "closed before authentication" (and retrying).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The reason kept, shared with the dialler.
pub type Verdict = Arc<Mutex<Option<String>>>;

/// A stream that keeps the first read error `classify` calls permanent.
pub struct RefusalWatch<S> {
    inner: S,
    verdict: Verdict,
    classify: fn(&std::io::Error) -> Option<String>,
}

impl<S> RefusalWatch<S> {
    /// Watches `inner`; a read error `classify` names lands in `verdict`.
    pub fn new(
        inner: S,
        verdict: Verdict,
        classify: fn(&std::io::Error) -> Option<String>,
    ) -> Self {
        RefusalWatch {
            inner,
            verdict,
            classify,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RefusalWatch<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Err(e)) = &r {
            if let Some(reason) = (self.classify)(e) {
                let mut v = self.verdict.lock().unwrap_or_else(|p| p.into_inner());
                v.get_or_insert(reason);
            }
        }
        r
    }
}

super::auth_frames::write_through!(RefusalWatch);
