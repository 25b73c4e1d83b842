//! The connections to the upstream: opened by hyper-rustls (HTTP/2 when ALPN offers it, else
//! HTTP/1.1), kept by each worker thread and reused.
//!
//! This replaces hyper-util's legacy `Client`, whose pool hashed its key with SipHash three
//! times per request and ran a checkout future and a spawned task per request, about a tenth
//! of a proxied request's instructions when it was measured (BENCHMARKS.md). The upstream is
//! one or a few origins, so a short list searched by comparison does the same job.
//!
//! What hyper-util's client did, and whether this pool does it:
//! - one shared HTTP/2 connection per origin, found by ALPN: yes;
//! - HTTP/1.1 connections reused, most recent first, and not after 90 s idle: yes, but idle
//!   ones are dropped only when the origin is next used, not by a timer;
//! - a request refused unsent by a reused connection sent again on a new one: yes;
//! - `Host` and origin-form request lines for HTTP/1.1: yes;
//! - connect timeout, TCP_NODELAY: yes, in the connector (`upstream::client`);
//! - requests racing to a new HTTP/2 origin share one connecting future: no, each may open
//!   one and the last is kept;
//! - more connections when an HTTP/2 peer's stream limit is reached: no, and neither did it;
//!   hyper queues the extra streams;
//! - proxies (`HTTPS_PROXY`), `Expect: 100-continue`, upgrades: no, none is needed.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::{Authority, Parts, Scheme};
use http::{HeaderValue, Request, Response, Uri, header};

use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::body::{BoxError, Pieces, UpstreamBody};
use crate::lock;

/// An HTTP/1.1 connection idle for longer is not reused: the server may have closed it
/// without our having noticed yet (hyper-util's pool used the same 90 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// Idle HTTP/1.1 connections kept per origin: after a burst of streams, the rest are closed.
const MAX_IDLE: usize = 64;

/// Why a request got no response.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made: TCP, its timeout, or TLS.
    Connect(BoxError),
    /// The connection failed before a response head arrived.
    Send(hyper::Error),
}

/// One worker's connections. Cloning shares them.
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Vec<Idle>>,
}

/// The connections of one origin.
struct Idle {
    scheme: Scheme,
    authority: Authority,
    /// The `Host` header for HTTP/1.1: the host, and the port unless it is the default.
    host: HeaderValue,
    /// Waiting for a request, the most recently used last.
    http1: Vec<(Instant, http1::SendRequest<Pieces>)>,
    /// Shared by every request while it is open.
    http2: Option<http2::SendRequest<Pieces>>,
}

enum Conn {
    Http1(http1::SendRequest<Pieces>),
    Http2(http2::SendRequest<Pieces>),
}

impl Pool {
    pub fn new(connector: HttpsConnector<HttpConnector>) -> Pool {
        Pool(Arc::new(Inner {
            connector,
            idle: Mutex::new(Vec::new()),
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
                None
            } else {
                self.checkout(scheme, authority)
            };
            let reused = pooled.is_some();
            let (conn, host) = match pooled {
                Some(pooled) => pooled,
                None => (self.connect(&uri, scheme, authority).await).map_err(Failure::Connect)?,
            };
            let sent = match conn {
                Conn::Http2(mut sender) => {
                    *request.uri_mut() = uri.clone();
                    sender
                        .try_send_request(request)
                        .await
                        .map(|response| response.map(|body| UpstreamBody::new(body, None)))
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
                    _ => return Err(Failure::Send(error.into_error())),
                },
            }
        }
    }

    /// A ready connection to the origin, if one is open, and the origin's `Host` header.
    fn checkout(&self, scheme: &Scheme, authority: &Authority) -> Option<(Conn, HeaderValue)> {
        let mut idle = lock(&self.0.idle);
        let origin = idle.iter_mut().find(|o| o.is(scheme, authority))?;
        if let Some(sender) = &origin.http2 {
            if !sender.is_closed() {
                return Some((Conn::Http2(sender.clone()), origin.host.clone()));
            }
            origin.http2 = None;
        }
        while let Some((since, sender)) = origin.http1.pop() {
            if sender.is_ready() && since.elapsed() < IDLE_TIMEOUT {
                return Some((Conn::Http1(sender), origin.host.clone()));
            }
        }
        None
    }

    /// Opens a connection; an HTTP/2 one is kept for every later request to the origin.
    async fn connect(
        &self,
        uri: &Uri,
        scheme: &Scheme,
        authority: &Authority,
    ) -> Result<(Conn, HeaderValue), BoxError> {
        let io = self.0.connector.clone().call(uri.clone()).await?;
        let http2 = io.connected().is_negotiated_h2();
        let conn = if http2 {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await?;
            tokio::spawn(connection);
            Conn::Http2(sender)
        } else {
            let (sender, connection) = http1::handshake(io).await?;
            tokio::spawn(connection);
            Conn::Http1(sender)
        };
        let mut idle = lock(&self.0.idle);
        let origin = match idle.iter().position(|o| o.is(scheme, authority)) {
            Some(at) => &mut idle[at],
            None => {
                idle.push(Idle::new(scheme, authority)?);
                idle.last_mut().expect("just pushed")
            }
        };
        if let Conn::Http2(sender) = &conn {
            origin.http2 = Some(sender.clone());
        }
        Ok((conn, origin.host.clone()))
    }

    fn give_back(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        sender: http1::SendRequest<Pieces>,
    ) {
        let mut idle = lock(&self.0.idle);
        if let Some(origin) = idle.iter_mut().find(|o| o.is(scheme, authority)) {
            origin
                .http1
                .retain(|(since, _)| since.elapsed() < IDLE_TIMEOUT);
            if origin.http1.len() < MAX_IDLE {
                origin.http1.push((Instant::now(), sender));
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
            http2: None,
        })
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http::{HeaderMap, Version};
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;

    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::{Body, Frame, Incoming};

    use super::*;
    use crate::upstream::client_with;

    /// A response body whose chunks the test sends one at a time.
    struct Chunks(mpsc::Receiver<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            self.0.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b))))
        }
    }

    /// What the fake saw of one request, and the sender of its response body.
    struct Seen {
        version: Version,
        uri: Uri,
        headers: HeaderMap,
        chunks: mpsc::Sender<Bytes>,
    }

    /// A fake Vertex on loopback, over TLS with ALPN (`h2` offered) or over plain HTTP/1.1.
    /// Returns its port, its requests and the number of connections it accepted.
    async fn fake(tls: bool) -> (u16, mpsc::UnboundedReceiver<Seen>, Arc<AtomicUsize>) {
        let acceptor = tls.then(|| {
            let key = PrivateKeyDer::from_pem_slice(include_bytes!("../../tests/tls/leaf.key"));
            let mut config = rustls::ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(
                    vec![pem(include_bytes!("../../tests/tls/leaf.pem"))],
                    key.unwrap(),
                )
                .unwrap();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen, requests) = mpsc::unbounded_channel();
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let seen = seen.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let (chunks, body) = mpsc::channel(1);
                    let close = request.uri().path() == "/close";
                    let _ = seen.send(Seen {
                        version: request.version(),
                        uri: request.uri().clone(),
                        headers: request.headers().clone(),
                        chunks,
                    });
                    let mut response = Response::new(Chunks(body));
                    if close {
                        let close = HeaderValue::from_static("close");
                        response.headers_mut().insert(header::CONNECTION, close);
                    }
                    async move { Ok::<_, std::convert::Infallible>(response) }
                });
                match &acceptor {
                    Some(acceptor) => {
                        let tls = acceptor.accept(tcp).await.unwrap();
                        tokio::spawn(
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(TokioIo::new(tls), service),
                        );
                    }
                    None => {
                        tokio::spawn(
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), service),
                        );
                    }
                }
            }
        });
        (port, requests, accepted)
    }

    fn pem(bytes: &[u8]) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(bytes).unwrap()
    }

    async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), f)
            .await
            .unwrap_or_else(|_| panic!("{what} did not happen"))
    }

    fn post(url: String) -> Request<Pieces> {
        Request::post(url)
            .header(header::AUTHORIZATION, "Bearer google")
            .body(Pieces::new([Bytes::from_static(b"{}")]))
            .unwrap()
    }

    /// Sends chunks one at a time and checks each arrives before the next exists: nothing on
    /// the way buffers.
    async fn relay(chunks: &mpsc::Sender<Bytes>, body: &mut UpstreamBody) {
        for n in 1..=3 {
            let chunk = Bytes::from(format!("data: {n}\n\n"));
            chunks.send(chunk.clone()).await.unwrap();
            let frame = within("a chunk", body.frame()).await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), chunk);
        }
    }

    fn plain_client() -> Pool {
        crate::upstream::client(Duration::from_secs(5), &[])
    }

    /// Production reaches Vertex over TLS, with HTTP/2 when ALPN offers it: the path the
    /// plain-HTTP fakes of the integration tests cannot take.
    #[tokio::test]
    async fn vertex_over_tls_gets_http2_streams_unbuffered_and_cancels() {
        crate::install_crypto_provider();
        let (port, mut requests, accepted) = fake(true).await;
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(pem(include_bytes!("../../tests/tls/ca.pem")))
            .unwrap();
        let tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = client_with(Duration::from_secs(5), tls);
        let url = format!("https://localhost:{port}/v1/chat");

        let response = within("the response head", client.send(post(url.clone())))
            .await
            .unwrap();
        assert_eq!(response.version(), Version::HTTP_2);
        let seen = requests.recv().await.unwrap();
        assert_eq!(seen.version, Version::HTTP_2);
        assert_eq!(seen.uri, url.as_str());
        assert_eq!(seen.headers[header::AUTHORIZATION], "Bearer google");
        let mut body = response.into_body();
        relay(&seen.chunks, &mut body).await;
        // A client that leaves resets the stream, and the fake's body is dropped.
        drop(body);
        within("the upstream stream to be cancelled", seen.chunks.closed()).await;

        // The next request is another stream on the same connection.
        let _second = within("a second response", client.send(post(url)))
            .await
            .unwrap();
        assert_eq!(requests.recv().await.unwrap().version, Version::HTTP_2);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn http1_connections_are_reused_and_a_cut_one_is_closed() {
        let (port, mut requests, accepted) = fake(false).await;
        let client = plain_client();
        let url = format!("http://127.0.0.1:{port}/v1/chat?x=1");

        // A request line in origin form, with the Host header.
        let response = within("a response", client.send(post(url.clone())))
            .await
            .unwrap();
        let seen = requests.recv().await.unwrap();
        assert_eq!(seen.version, Version::HTTP_11);
        assert_eq!(seen.uri, "/v1/chat?x=1");
        assert_eq!(
            seen.headers[header::HOST],
            format!("127.0.0.1:{port}").as_str()
        );
        let mut body = response.into_body();
        relay(&seen.chunks, &mut body).await;
        drop(seen.chunks);
        assert!(within("the end", body.frame()).await.is_none());

        // Read to the end, the connection carries the next request.
        let response = within("a response", client.send(post(url.clone())))
            .await
            .unwrap();
        let seen = requests.recv().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 1);

        // Dropped mid-body, it is closed: Vertex sees the client leave, and the next request
        // gets a new connection.
        let mut body = response.into_body();
        relay(&seen.chunks, &mut body).await;
        drop(body);
        within("the upstream request to be cancelled", seen.chunks.closed()).await;
        let _third = within("a response", client.send(post(url))).await.unwrap();
        requests.recv().await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_used_again() {
        let (port, mut requests, accepted) = fake(false).await;
        let client = plain_client();
        // The fake answers `connection: close` to this path, and closes after the response.
        let url = format!("http://127.0.0.1:{port}/close");
        for n in 1..=3 {
            let response = within("a response", client.send(post(url.clone())))
                .await
                .unwrap();
            drop(requests.recv().await.unwrap().chunks);
            let mut body = response.into_body();
            assert!(within("the end", body.frame()).await.is_none());
            assert_eq!(accepted.load(Ordering::SeqCst), n);
        }
    }
}
