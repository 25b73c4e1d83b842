//! HTTP/2 connections to the upstream: their streams, the peer's limit on them, and
//! flow-control windows that stalled readers cannot use up.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::Uri;
use hyper::client::conn::http2;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::Conn;
use crate::body::{BoxError, Pieces};
use crate::lock;

type Io = <HttpsConnector<HttpConnector> as Service<Uri>>::Response;

/// An HTTP/2 stream's flow-control window. The connection's is as large as all the streams'
/// together, so that clients that stop reading (each stream holding a full window unread)
/// can never use up the connection's and stall the other streams on it. A stream's window
/// also bounds what a stalled reader leaves buffered here.
const STREAM_WINDOW: u32 = 256 * 1024;
const STREAMS_PER_WINDOW: u32 = 100;

/// Marks a response that had to wait for a free stream: every connection to its origin was
/// at the peer's stream limit, and no more could be opened. The request's log line says so.
#[derive(Debug, Clone, Copy)]
pub struct Queued;

/// An HTTP/2 connection and what is known of its streams.
pub(super) struct Http2 {
    pub(super) sender: http2::SendRequest<Pieces>,
    /// The connection's task, shared with `Watched`, which runs it, for reading the peer's
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` as it is now (it may change). Both sides are on the
    /// worker's one thread, so the lock is never contended.
    connection: Arc<Mutex<H2Connection>>,
    /// A response head has come on it, so its limit is the peer's: SETTINGS is the first
    /// frame a server sends. Until then it carries one stream, and concurrent requests open
    /// connections of their own (up to the cap) rather than queue on an unknown limit.
    settled: Arc<AtomicBool>,
    /// Streams open on it: from the send to the end, or drop, of the response body.
    pub(super) open: Arc<AtomicUsize>,
}

impl Http2 {
    pub(super) fn has_room(&self) -> bool {
        let limit = match self.settled.load(Ordering::Acquire) {
            true => lock(&self.connection).current_max_send_streams(),
            false => 1,
        };
        self.open.load(Ordering::Acquire) < limit
    }

    pub(super) fn stream(&self, queued: bool) -> Conn {
        self.open.fetch_add(1, Ordering::AcqRel);
        Conn::Http2 {
            sender: self.sender.clone(),
            stream: OpenStream(self.open.clone()),
            settled: self.settled.clone(),
            queued,
        }
    }
}

/// One open stream of an HTTP/2 connection, counted until it drops.
pub(super) struct OpenStream(Arc<AtomicUsize>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Http2 {
    /// Starts HTTP/2 on a connection ALPN chose it for, and runs its task.
    pub(super) async fn handshake(io: Io) -> Result<Http2, BoxError> {
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(STREAM_WINDOW * STREAMS_PER_WINDOW)
            .handshake(io)
            .await?;
        let connection = Arc::new(Mutex::new(connection));
        tokio::spawn(Watched(connection.clone()));
        Ok(Http2 {
            sender,
            connection,
            settled: Arc::default(),
            open: Arc::default(),
        })
    }
}

type H2Connection = http2::Connection<Io, Pieces, TokioExecutor>;

/// Runs an HTTP/2 connection's task that the pool also reads from.
struct Watched(Arc<Mutex<H2Connection>>);

impl Future for Watched {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut *lock(&self.0)).poll(cx).map(|_| ())
    }
}
