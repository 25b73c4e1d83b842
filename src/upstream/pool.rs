//! The connections to the upstream: opened by hyper-rustls (HTTP/2 when ALPN offers it, else
//! HTTP/1.1), kept by each worker thread and reused.
//!
//! Ours rather than hyper-util's legacy `Client`, which costs more per request for what a
//! proxy to one or a few origins needs (BENCHMARKS.md has the figures): a short list searched
//! by comparison does the job.
//!
//! What hyper-util's client did, and whether this pool does it:
//! - one shared HTTP/2 connection per origin, found by ALPN: yes;
//! - HTTP/1.1 connections reused, most recent first, and not after 90 s idle: yes, but idle
//!   ones are dropped only when the origin is next used, not by a timer;
//! - a request refused unsent by a reused connection sent again on a new one: yes;
//! - `Host` and origin-form request lines for HTTP/1.1: yes;
//! - connect timeout, TCP_NODELAY: yes, in the connector (`upstream::connect`);
//! - requests racing to a new HTTP/2 origin share one connecting future: no, each may open
//!   one and the last is kept;
//! - more connections when an HTTP/2 peer's stream limit is reached: yes, up to
//!   `MAX_UPSTREAM_CONNECTIONS` per origin (hyper-util's did not: hyper queues the extra
//!   streams on the one connection, silently);
//! - proxies (`HTTPS_PROXY`), `Expect: 100-continue`, upgrades: no, none is needed.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, Parts, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};

use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;
use tower_service::Service;

use crate::body::{BoxError, Pieces, UpstreamBody};

mod multiplexed;

use crate::lock;
pub use multiplexed::Queued;
use multiplexed::{Http2, OpenStream};

/// An HTTP/1.1 connection idle for longer is not reused: the server may have closed it
/// without our having noticed yet (hyper-util's pool used the same 90 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle HTTP/1.1 connections kept per origin: after a burst of streams, the rest are closed.
const MAX_IDLE: usize = 64;

/// Why a request got no response, and whether the upstream can have seen it.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made: TCP, its timeout, or TLS. Nothing was sent.
    Connect(BoxError),
    /// The connection failed before the request was handed to it: nothing was sent.
    Unsent(hyper::Error),
    /// The connection failed after the request was handed to it, before a response head
    /// arrived: the upstream may have read it whole and begun work on it.
    Sent(hyper::Error),
}

/// One worker's connections. Cloning shares them.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Vec<Idle>>,
    /// `MAX_UPSTREAM_CONNECTIONS`: HTTP/2 connections per origin.
    max_http2: usize,
}

/// The connections of one origin.
struct Idle {
    scheme: Scheme,
    authority: Authority,
    /// The `Host` header for HTTP/1.1: the host, and the port unless it is the default.
    host: HeaderValue,
    /// Waiting for a request, the most recently used last.
    http1: Vec<(Instant, http1::SendRequest<Pieces>)>,
    /// Shared by requests up to the peer's stream limit each.
    http2: Vec<Http2>,
    /// Connections being opened ahead of any request (`preconnect`); a request that finds
    /// the origin with none open waits for them rather than open one more.
    preconnecting: usize,
    preconnected: Arc<Notify>,
}

/// What `checkout` found for a request.
enum Checkout {
    Ready(Conn, HeaderValue),
    /// The connection being opened at startup, to wait for, then check out again.
    Wait(Pin<Box<OwnedNotified>>),
    Connect,
}

enum Conn {
    Http1(http1::SendRequest<Pieces>),
    Http2 {
        sender: http2::SendRequest<Pieces>,
        stream: OpenStream,
        settled: Arc<AtomicBool>,
        queued: bool,
    },
}

impl Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>, max_http2: usize) -> Pool {
        Pool(Arc::new(Inner {
            connector,
            idle: Mutex::new(Vec::new()),
            max_http2,
        }))
    }

    /// Sends `request`, whose URI is absolute, on a pooled connection or a new one. A request
    /// that a pooled connection refused before sending any of it (the server had just closed
    /// it) is sent again on a new connection.
    pub async fn send(
        &self,
        mut request: Request<Pieces>,
    ) -> Result<Response<UpstreamBody>, Failure> {
        let uri = request.uri().clone();
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return Err(Failure::Connect("the upstream URL has no origin".into()));
        };
        let mut fresh = false;
        loop {
            let pooled = if fresh {
                Checkout::Connect
            } else {
                self.checkout(scheme, authority)
            };
            let reused = matches!(pooled, Checkout::Ready(..));
            let (conn, host) = match pooled {
                Checkout::Ready(conn, host) => (conn, host),
                Checkout::Wait(preconnected) => {
                    // At most the connect timeout, which bounds the connection being opened.
                    preconnected.await;
                    continue;
                }
                Checkout::Connect => {
                    (self.connect(&uri, scheme, authority).await).map_err(Failure::Connect)?
                }
            };
            let sent = match conn {
                Conn::Http2 {
                    mut sender,
                    stream,
                    settled,
                    queued,
                } => {
                    *request.uri_mut() = uri.clone();
                    let sent = sender.try_send_request(request).await;
                    sent.map(|mut response| {
                        settled.store(true, Ordering::Release);
                        if queued {
                            response.extensions_mut().insert(Queued);
                        }
                        // The stream stays counted until the body ends or is dropped.
                        let on_end = Box::new(move || drop(stream));
                        response.map(|body| UpstreamBody::new(body, Some(on_end)))
                    })
                }
                Conn::Http1(mut sender) => {
                    *request.uri_mut() = origin_form(&uri);
                    request.headers_mut().insert(header::HOST, host);
                    let sent = sender.try_send_request(request).await;
                    sent.map(|response| {
                        let ticket = Ticket {
                            pool: self.clone(),
                            scheme: scheme.clone(),
                            authority: authority.clone(),
                            sender,
                        };
                        let on_end = Box::new(move || ticket.give_back());
                        response.map(|body| UpstreamBody::new(body, Some(on_end)))
                    })
                }
            };
            match sent {
                Ok(response) => return Ok(response),
                Err(mut error) => match error.take_message() {
                    Some(unsent) if reused => {
                        fresh = true;
                        request = unsent;
                    }
                    Some(_) => return Err(Failure::Unsent(error.into_error())),
                    None => return Err(Failure::Sent(error.into_error())),
                },
            }
        }
    }

    /// Opens a connection to `uri`'s origin before any request needs it, so that the first
    /// request after a cold start does not pay the TCP, TLS and HTTP/2 handshakes.
    pub async fn preconnect(&self, uri: &Uri) {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return;
        };
        let preconnected = {
            let mut idle = lock(&self.0.idle);
            let Ok(origin) = Idle::find_or_add(&mut idle, scheme, authority) else {
                return;
            };
            origin.preconnecting += 1;
            origin.preconnected.clone()
        };
        let connected = self.connect(uri, scheme, authority).await;
        if let Ok((Conn::Http1(sender), _)) = connected {
            self.give_back(scheme, authority, sender);
        }
        // An HTTP/2 connection is kept by `connect`; a failure is the first request's to
        // report, when it tries again.
        if let Some(origin) = lock(&self.0.idle)
            .iter_mut()
            .find(|o| o.is(scheme, authority))
        {
            origin.preconnecting -= 1;
        }
        preconnected.notify_waiters();
    }

    /// A ready connection to the origin and its `Host` header, else what to do instead.
    fn checkout(&self, scheme: &Scheme, authority: &Authority) -> Checkout {
        let mut idle = lock(&self.0.idle);
        let Some(origin) = idle.iter_mut().find(|o| o.is(scheme, authority)) else {
            return Checkout::Connect;
        };
        origin.http2.retain(|conn| !conn.sender.is_closed());
        if !origin.http2.is_empty() {
            if let Some(conn) = origin.http2.iter().find(|conn| conn.has_room()) {
                return Checkout::Ready(conn.stream(false), origin.host.clone());
            }
            if origin.http2.len() < self.0.max_http2 {
                return Checkout::Connect;
            }
            // At the cap, the least busy connection takes it, and hyper queues the stream
            // until one ends there: said in the log line, never silent.
            return match origin
                .http2
                .iter()
                .min_by_key(|c| c.open.load(Ordering::Acquire))
            {
                Some(conn) => Checkout::Ready(conn.stream(true), origin.host.clone()),
                None => Checkout::Connect,
            };
        }
        while let Some((since, sender)) = origin.http1.pop() {
            if sender.is_ready() && since.elapsed() < IDLE_TIMEOUT {
                return Checkout::Ready(Conn::Http1(sender), origin.host.clone());
            }
        }
        if origin.preconnecting > 0 {
            // Nothing open, but a connection is being opened ahead of requests: wait for it
            // rather than open one more. Registered under the lock, so its end cannot come
            // unseen.
            let mut preconnected = Box::pin(origin.preconnected.clone().notified_owned());
            preconnected.as_mut().enable();
            return Checkout::Wait(preconnected);
        }
        Checkout::Connect
    }

    /// Opens a connection; an HTTP/2 one is kept for later requests to the origin.
    async fn connect(
        &self,
        uri: &Uri,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<(Conn, HeaderValue), BoxError> {
        let io = self.0.connector.clone().call(uri.clone()).await?;
        let connection = if io.connected().is_negotiated_h2() {
            Http2::handshake(io).await?
        } else {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(connection);
            return self
                .register(scheme, authority, None)
                .map(|host| (Conn::Http1(sender), host));
        };
        let conn = connection.stream(false);
        let host = self.register(scheme, authority, Some(connection))?;
        Ok((conn, host))
    }

    /// Makes sure the origin is known, keeps `http2` for later requests, and returns the
    /// origin's `Host` header.
    fn register(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        http2: Option<Http2>,
    ) -> Result<HeaderValue, BoxError> {
        let mut idle = lock(&self.0.idle);
        let origin = Idle::find_or_add(&mut idle, scheme, authority)?;
        origin.http2.extend(http2);
        Ok(origin.host.clone())
    }

    fn give_back(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        sender: http1::SendRequest<Pieces>,
    ) {
        let mut idle = lock(&self.0.idle);
        if let Some(origin) = idle.iter_mut().find(|o| o.is(scheme, authority)) {
            let now = Instant::now();
            (origin.http1).retain(|(since, _)| now.duration_since(*since) < IDLE_TIMEOUT);
            if origin.http1.len() < MAX_IDLE {
                origin.http1.push((now, sender));
            }
        }
    }
}

impl Idle {
    fn new(scheme: &Scheme, authority: &Authority) -> Result<Idle, BoxError> {
        let default_port = if *scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        Ok(Idle {
            scheme: scheme.clone(),
            authority: authority.clone(),
            host: HeaderValue::from_str(&host)?,
            http1: Vec::new(),
            http2: Vec::new(),
            preconnecting: 0,
            preconnected: Arc::default(),
        })
    }

    fn find_or_add<'a>(
        idle: &'a mut Vec<Idle>,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<&'a mut Idle, BoxError> {
        match idle.iter().position(|o| o.is(scheme, authority)) {
            Some(at) => Ok(&mut idle[at]),
            None => {
                idle.push(Idle::new(scheme, authority)?);
                Ok(idle.last_mut().expect("just pushed"))
            }
        }
    }

    fn is(&self, scheme: &Scheme, authority: &Authority) -> bool {
        self.scheme == *scheme && self.authority == *authority
    }
}

/// The path and query alone, as an HTTP/1.1 request line has it.
fn origin_form(uri: &Uri) -> Uri {
    let mut parts = Parts::default();
    parts.path_and_query = uri.path_and_query().cloned();
    Uri::from_parts(parts).unwrap_or_default()
}

/// An HTTP/1.1 connection lent to one request, returned when its response has been read to
/// the end (`UpstreamBody`'s end hook). Dropped with the body before that, it closes the
/// connection, which is how the upstream learns that the client left.
struct Ticket {
    pool: Pool,
    scheme: Scheme,
    authority: Authority,
    sender: http1::SendRequest<Pieces>,
}

impl Ticket {
    fn give_back(self) {
        let Ticket {
            pool,
            scheme,
            authority,
            mut sender,
        } = self;
        if sender.is_ready() {
            pool.give_back(&scheme, &authority, sender);
        } else if !sender.is_closed() {
            // The connection task has not yet seen the end of the response.
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.give_back(&scheme, &authority, sender);
                }
            });
        }
    }
}
