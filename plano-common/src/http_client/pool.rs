//! A pooled HTTP client whose HTTP/1 connections have no task of their own.
//!
//! hyper-util's legacy `Client` runs every connection in a spawned task, hands each
//! request to it over a channel (waking that task, and the caller's again for the
//! answer) and, for HTTP/1, spawns one more task per request to put the connection back
//! in the pool when the answer's body ends. Here an idle HTTP/1 connection is a hyper
//! [`http1::SendRequest`] and its [`http1::Connection`], kept together in the pool: a
//! request takes the pair and polls the `Connection` itself, inside the response future
//! and then inside the response body ([`Body`]), so the socket is read and written by the
//! task that waits for it. The pair goes back to the pool when the body has ended cleanly,
//! neither side said `connection: close` and the connection is still open; a body dropped
//! before its end, or any error, closes the connection.
//!
//! HTTPS connections that negotiate HTTP/2 by ALPN use hyper's multiplexed HTTP/2 client:
//! its connection runs in a task (one per connection, not per request) and one connection
//! per scheme and authority is shared by all requests.
//!
//! A pooled HTTP/1 connection the server closed while it was idle is noticed when it is
//! taken (its `Connection` finishes when polled) and dropped; a request that a reused
//! connection could not send at all (closed before the request was written) is sent again on
//! another connection, as the legacy client does. Idle connections are kept at most
//! `pool_idle_timeout` (checked when a connection is taken, and by a sweep every quarter
//! of `pool_idle_timeout` in one task per client, which closes expired ones) and at most
//! `pool_max_idle_per_host` per scheme and authority (the most recently used are kept).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection as _, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tower::ServiceExt;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Io = MaybeHttpsStream<TokioIo<TcpStream>>;
type Key = (Scheme, Authority);

/// A pooled HTTP(S) client sending bodies of type `B`. Cheap to clone (one pool).
pub struct Client<B: http_body::Body + 'static> {
    inner: Arc<Inner<B>>,
}

impl<B: http_body::Body + 'static> Clone for Client<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

struct Inner<B: http_body::Body + 'static> {
    connector: HttpsConnector<HttpConnector>,
    idle: Mutex<Table<Vec<Idle<B>>>>,
    h2: Mutex<Table<http2::SendRequest<B>>>,
    idle_timeout: Duration,
    max_idle: usize,
    sweeping: std::sync::atomic::AtomicBool,
}

struct Idle<B: http_body::Body + 'static> {
    conn: Box<H1<B>>,
    since: Instant,
}

/// One HTTP/1 connection: the sender and the connection future that drives the socket.
struct H1<B: http_body::Body + 'static> {
    tx: http1::SendRequest<B>,
    conn: Pin<Box<http1::Connection<Io, B>>>,
    key: Key,
    /// The `Host` of the requests sent on it, made once per connection from `key`
    /// (parsing the port and validating the value again cost ~800 instructions per request).
    host: Option<HeaderValue>,
    pool: Weak<Inner<B>>,
}

/// Why a request failed.
#[derive(Debug)]
pub struct Error {
    kind: Kind,
    source: BoxError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// The URI names no scheme or host.
    Uri,
    /// No connection could be made (TCP connect, connect timeout, TLS handshake).
    Connect,
    /// The request could not be sent or its answer not read.
    Request,
}

impl Error {
    /// No connection could be made (nothing was sent).
    pub fn is_connect(&self) -> bool {
        self.kind == Kind::Connect
    }

    fn request(e: hyper::Error) -> Self {
        Self {
            kind: Kind::Request,
            source: Box::new(e),
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.kind {
            Kind::Uri => "client error (invalid URI)",
            Kind::Connect => "client error (Connect)",
            Kind::Request => "client error (SendRequest)",
        })
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl<B> Client<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    pub(super) fn new(
        connector: HttpsConnector<HttpConnector>,
        idle_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                connector,
                idle: Mutex::new(Table::default()),
                h2: Mutex::new(Table::default()),
                idle_timeout,
                max_idle,
                sweeping: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// Send `req` (absolute URI) and wait for the answer's head; the body streams from
    /// the connection as it is read.
    pub async fn request(&self, mut req: Request<B>) -> Result<Response<Body>, Error> {
        let uri = req.uri().clone();
        let key = match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) => (s.clone(), a.clone()),
            _ => {
                return Err(Error {
                    kind: Kind::Uri,
                    source: format!("no scheme or host in {uri}").into(),
                });
            }
        };
        loop {
            if let Some(mut tx) = self.inner.h2_for(&key) {
                *req.uri_mut() = uri.clone();
                match Box::pin(tx.try_send_request(req)).await {
                    Ok(res) => return Ok(res.map(Body::h2)),
                    Err(mut e) => match e.take_message() {
                        // The shared connection closed before it took the request.
                        Some(back) => {
                            self.inner.forget_h2(&key);
                            req = back;
                            continue;
                        }
                        None => return Err(Error::request(e.into_error())),
                    },
                }
            }
            let (conn, reused) = match self.inner.take_idle(&key).await {
                Some(c) => (c, true),
                // Boxed: the connect future (TCP, TLS handshake) is large and rarely
                // needed; inline, it made every request's future bigger to move.
                None => match Box::pin(self.connect(&key, &uri)).await? {
                    Fresh::H1(c) => (c, false),
                    Fresh::H2(mut tx) => {
                        self.inner.h2_lock().insert(key.clone(), tx.clone());
                        *req.uri_mut() = uri.clone();
                        // A new connection: whatever fails is the request's error.
                        return Box::pin(tx.send_request(req))
                            .await
                            .map(|res| res.map(Body::h2))
                            .map_err(Error::request);
                    }
                },
            };
            origin_form(&mut req, &uri, conn.host.as_ref());
            match send_h1(conn, req).await {
                Ok(res) => return Ok(res),
                Err((e, Some(back))) if reused => {
                    tracing::debug!(error = %e, "pooled connection closed before the request was sent; sending it on another");
                    req = back;
                }
                Err((e, _)) => return Err(Error::request(e)),
            }
        }
    }

    async fn connect(&self, key: &Key, uri: &Uri) -> Result<Fresh<B>, Error> {
        let connect = |source: BoxError| Error {
            kind: Kind::Connect,
            source,
        };
        let dest = Uri::builder()
            .scheme(key.0.clone())
            .authority(key.1.clone())
            .path_and_query("/")
            .build()
            .unwrap_or_else(|_| uri.clone());
        let io = self
            .inner
            .connector
            .clone()
            .oneshot(dest)
            .await
            .map_err(connect)?;
        if io.connected().is_negotiated_h2() {
            let (tx, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| connect(Box::new(e)))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream HTTP/2 connection ended");
                }
            });
            return Ok(Fresh::H2(tx));
        }
        let (tx, conn) = http1::handshake(io)
            .await
            .map_err(|e| connect(Box::new(e)))?;
        Ok(Fresh::H1(Box::new(H1 {
            tx,
            conn: Box::pin(conn),
            key: key.clone(),
            host: host_header(&key.0, &key.1),
            pool: Arc::downgrade(&self.inner),
        })))
    }
}

/// Values by scheme and authority: a list searched in order, as a client talks to few
/// hosts (hashing an `Authority` hashes it byte by byte, lowercased, on every lookup).
struct Table<V>(Vec<(Key, V)>);

impl<V> Default for Table<V> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<V> Table<V> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn position(&self, key: &Key) -> Option<usize> {
        self.0
            .iter()
            .position(|(k, _)| k.1 == key.1 && k.0 == key.0)
    }

    fn get(&self, key: &Key) -> Option<&V> {
        self.position(key).map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, key: &Key) -> Option<&mut V> {
        self.position(key).map(|i| &mut self.0[i].1)
    }

    fn insert(&mut self, key: Key, value: V) {
        match self.position(&key) {
            Some(i) => self.0[i].1 = value,
            None => self.0.push((key, value)),
        }
    }

    fn remove(&mut self, key: &Key) {
        if let Some(i) = self.position(key) {
            self.0.swap_remove(i);
        }
    }

    fn entry(&mut self, key: &Key) -> &mut V
    where
        V: Default,
    {
        let i = match self.position(key) {
            Some(i) => i,
            None => {
                self.0.push((key.clone(), V::default()));
                self.0.len() - 1
            }
        };
        &mut self.0[i].1
    }

    fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        self.0.retain_mut(|(_, v)| keep(v));
    }

    #[cfg(test)]
    fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }
}

enum Fresh<B: http_body::Body + 'static> {
    H1(Box<H1<B>>),
    H2(http2::SendRequest<B>),
}

impl<B: http_body::Body + 'static> Inner<B> {
    fn h2_lock(&self) -> std::sync::MutexGuard<'_, Table<http2::SendRequest<B>>> {
        self.h2.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn idle_lock(&self) -> std::sync::MutexGuard<'_, Table<Vec<Idle<B>>>> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn h2_for(&self, key: &Key) -> Option<http2::SendRequest<B>> {
        let mut map = self.h2_lock();
        if map.is_empty() {
            return None;
        }
        match map.get(key) {
            Some(tx) if !tx.is_closed() => Some(tx.clone()),
            Some(_) => {
                map.remove(key);
                None
            }
            None => None,
        }
    }

    fn forget_h2(&self, key: &Key) {
        let mut map = self.h2_lock();
        if map.get(key).is_some_and(http2::SendRequest::is_closed) {
            map.remove(key);
        }
    }
}

impl<B> Inner<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The most recently returned open connection to `key`, ready to send.
    async fn take_idle(&self, key: &Key) -> Option<Box<H1<B>>> {
        loop {
            let mut conn = {
                let mut map = self.idle_lock();
                let list = map.get_mut(key)?;
                let now = Instant::now();
                // The oldest are first: drop the expired ones.
                let expired = list
                    .iter()
                    .take_while(|i| now.saturating_duration_since(i.since) >= self.idle_timeout)
                    .count();
                list.drain(..expired);
                list.pop()?.conn
            };
            if conn.ready().await {
                return Some(conn);
            }
        }
    }

    fn put(self: &Arc<Self>, conn: Box<H1<B>>) {
        if conn.tx.is_closed() || self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        {
            let mut map = self.idle_lock();
            let list = map.entry(&conn.key);
            if list.len() >= self.max_idle {
                list.remove(0);
            }
            list.push(Idle { conn, since: now });
        }
        self.start_sweeping();
    }

    /// One task per client drops idle connections past their time (the legacy client
    /// does the same with its idle interval).
    fn start_sweeping(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.sweeping.load(Ordering::Relaxed) || self.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.sweeping.store(false, Ordering::Release);
            return;
        };
        let weak = Arc::downgrade(self);
        // A connection is closed at most a quarter of the timeout after it expires.
        let every = (self.idle_timeout / 4).max(Duration::from_millis(100));
        runtime.spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                let now = Instant::now();
                let mut map = inner.idle_lock();
                map.retain(|list| {
                    list.retain(|i| now.saturating_duration_since(i.since) < inner.idle_timeout);
                    !list.is_empty()
                });
            }
        });
    }
}

impl<B> H1<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Poll the connection once (reading a close the server sent while it was idle):
    /// `true` if it takes a request now. An idle connection does after one poll; one that
    /// has closed, or is still busy with an earlier exchange (say, a request body the
    /// server answered before reading), is not waited for.
    async fn ready(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            if self.conn.as_mut().poll(cx).is_ready() {
                return Poll::Ready(false);
            }
            Poll::Ready(matches!(self.tx.poll_ready(cx), Poll::Ready(Ok(()))))
        })
        .await
    }
}

type Sent<B> = Result<Response<Body>, (hyper::Error, Option<Request<B>>)>;

/// Send on `conn`, polling the connection while the answer's head is awaited. `Err` with
/// the request when it was not written at all.
async fn send_h1<B>(mut conn: Box<H1<B>>, req: Request<B>) -> Sent<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let mut reusable = !says_close(req.headers()) && req.version() == Version::HTTP_11;
    let mut answer = std::pin::pin!(conn.tx.try_send_request(req));
    let mut open = true;
    let sent = std::future::poll_fn(|cx| {
        if open && conn.conn.as_mut().poll(cx).is_ready() {
            // Closed (or failed): whatever it had not answered is failed when it is
            // dropped, with the request given back if it was never written.
            open = false;
        }
        if !open {
            return Poll::Ready(None);
        }
        answer.as_mut().poll(cx).map(Some)
    })
    .await;
    let (sent, conn) = match sent {
        Some(sent) => (sent, Some(conn)),
        None => {
            drop(conn);
            (answer.await, None)
        }
    };
    let res = sent.map_err(|mut e| {
        let back = e.take_message();
        (e.into_error(), back)
    })?;
    reusable = reusable && !says_close(res.headers()) && res.version() == Version::HTTP_11;
    let lease = match conn {
        Some(conn) if http_body::Body::is_end_stream(res.body()) => {
            if reusable {
                release(conn);
            }
            None
        }
        // Also when it will not be reused: reading the body drives the connection.
        Some(conn) => Some(conn as Box<dyn Lease>),
        None => None,
    };
    Ok(res.map(|inner| Body {
        inner,
        lease,
        reusable,
    }))
}

fn says_close(headers: &HeaderMap) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
    })
}

/// The request as an HTTP/1 origin-form request with a `Host` header (unless it has one):
/// `host` is the connection's ([`host_header`]).
fn origin_form<B>(req: &mut Request<B>, uri: &Uri, host: Option<&HeaderValue>) {
    if let Some(host) = host
        && !req.headers().contains_key(http::header::HOST)
    {
        req.headers_mut().insert(http::header::HOST, host.clone());
    }
    let path = match uri.path_and_query() {
        Some(p) if p.as_str() != "/" => Uri::from(p.clone()),
        _ => Uri::default(),
    };
    *req.uri_mut() = path;
}

/// The `Host` header for requests to `authority` over `scheme`: the authority without a
/// port that is the scheme's default one.
fn host_header(scheme: &Scheme, authority: &Authority) -> Option<HeaderValue> {
    let default_port = match scheme.as_str() {
        "https" => Some(443),
        "http" => Some(80),
        _ => None,
    };
    let host = if authority.port_u16().is_some() && authority.port_u16() == default_port {
        authority.host()
    } else {
        authority.as_str()
    };
    HeaderValue::from_str(host).ok()
}

fn release<B>(conn: Box<H1<B>>)
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    if let Some(pool) = conn.pool.upgrade() {
        pool.put(conn);
    }
}

/// A leased HTTP/1 connection, seen from the body (which does not know `B`).
trait Lease: Send {
    /// Drive the connection (write the rest of the request, read the answer).
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// The answer has ended cleanly: back to the pool.
    fn release(self: Box<Self>);
}

impl<B> Lease for H1<B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn poll_conn(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.conn.as_mut().poll(cx).map(|_| ())
    }

    fn release(self: Box<Self>) {
        release(self);
    }
}

/// An answer's body. For HTTP/1, reading it also drives the connection it comes from.
pub struct Body {
    inner: Incoming,
    lease: Option<Box<dyn Lease>>,
    reusable: bool,
}

impl Body {
    fn h2(inner: Incoming) -> Self {
        Self {
            inner,
            lease: None,
            reusable: false,
        }
    }

    fn end(&mut self) {
        if let Some(lease) = self.lease.take()
            && self.reusable
        {
            lease.release();
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Body").finish_non_exhaustive()
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(lease) = &mut this.lease
            && lease.poll_conn(cx).is_ready()
        {
            // Closed: what it read is in the body's channel; never reused.
            this.lease = None;
        }
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        match &frame {
            None => this.end(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.end(),
            Some(Ok(_)) => {}
            Some(Err(_)) => this.lease = None,
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::http_client::HttpClientBuilder;

    fn client() -> Client<Full<Bytes>> {
        HttpClientBuilder::new(Duration::from_secs(2))
            .build_pooled()
            .unwrap()
    }

    fn get(port: u16, path: &str) -> Request<Full<Bytes>> {
        Request::get(format!("http://127.0.0.1:{port}{path}"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    }

    /// A hyper HTTP/1 server answering `/big` with 1 MiB, `/close` with `connection:
    /// close`, anything else with `ok`; counts the connections it accepted.
    async fn server() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        let mut res = http::Response::builder();
                        let body = match req.uri().path() {
                            "/big" => Bytes::from(vec![b'x'; 1 << 20]),
                            "/close" => {
                                res = res.header("connection", "close");
                                Bytes::from_static(b"bye")
                            }
                            _ => Bytes::from_static(b"ok"),
                        };
                        res.body(Full::new(body))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        (port, accepted)
    }

    async fn text(res: Response<Body>) -> String {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    fn idle_count<B: http_body::Body + 'static>(c: &Client<B>) -> usize {
        c.inner.idle_lock().values().map(Vec::len).sum()
    }

    #[test]
    fn the_host_drops_only_the_default_port_and_a_client_host_is_kept() {
        let host = |uri: &str| {
            let uri: Uri = uri.parse().unwrap();
            host_header(uri.scheme().unwrap(), uri.authority().unwrap())
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(host("http://a.example:80/x").as_deref(), Some("a.example"));
        assert_eq!(
            host("https://a.example:443/x").as_deref(),
            Some("a.example")
        );
        assert_eq!(host("https://a.example/x").as_deref(), Some("a.example"));
        assert_eq!(
            host("http://a.example:443/").as_deref(),
            Some("a.example:443")
        );
        assert_eq!(
            host("http://127.0.0.1:8080").as_deref(),
            Some("127.0.0.1:8080")
        );

        let uri: Uri = "http://127.0.0.1:8080/v1/chat?x=1".parse().unwrap();
        let made = host_header(uri.scheme().unwrap(), uri.authority().unwrap());
        let mut req = Request::get(uri.clone()).body(()).unwrap();
        origin_form(&mut req, &uri, made.as_ref());
        assert_eq!(req.uri(), "/v1/chat?x=1");
        assert_eq!(req.headers()["host"], "127.0.0.1:8080");
        let mut req = Request::get(uri.clone())
            .header("host", "chosen.example")
            .body(())
            .unwrap();
        origin_form(&mut req, &uri, made.as_ref());
        assert_eq!(req.headers()["host"], "chosen.example");
        let root: Uri = "http://127.0.0.1:8080".parse().unwrap();
        let mut req = Request::get(root.clone()).body(()).unwrap();
        origin_form(&mut req, &root, made.as_ref());
        assert_eq!(req.uri(), "/");
    }

    #[tokio::test]
    async fn one_connection_serves_requests_one_after_another() {
        let (port, accepted) = server().await;
        let c = client();
        for _ in 0..5 {
            let res = c.request(get(port, "/")).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(text(res).await, "ok");
            assert_eq!(idle_count(&c), 1);
        }
        // A body of many frames, read to its end, also gives the connection back.
        let res = c.request(get(port, "/big")).await.unwrap();
        assert_eq!(text(res).await.len(), 1 << 20);
        assert_eq!(
            c.request(get(port, "/")).await.map(|r| r.status()).unwrap(),
            200
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_and_all_are_pooled() {
        let (port, accepted) = server().await;
        let c = client();
        let (a, b) = tokio::join!(c.request(get(port, "/")), c.request(get(port, "/")));
        let (a, b) = (a.unwrap(), b.unwrap());
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(text(a).await, "ok");
        assert_eq!(text(b).await, "ok");
        assert_eq!(idle_count(&c), 2);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_does_not_return_the_connection() {
        let (port, accepted) = server().await;
        let c = client();
        let res = c.request(get(port, "/big")).await.unwrap();
        let mut body = res.into_body();
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        drop(body);
        assert_eq!(idle_count(&c), 0);
        let res = c.request(get(port, "/")).await.unwrap();
        assert_eq!(text(res).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn connection_close_from_either_side_is_not_pooled() {
        let (port, accepted) = server().await;
        let c = client();
        let res = c.request(get(port, "/close")).await.unwrap();
        assert_eq!(text(res).await, "bye");
        assert_eq!(idle_count(&c), 0);
        let mut req = get(port, "/");
        req.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        assert_eq!(text(c.request(req).await.unwrap()).await, "ok");
        assert_eq!(idle_count(&c), 0);
        assert_eq!(text(c.request(get(port, "/")).await.unwrap()).await, "ok");
        assert_eq!(idle_count(&c), 1);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// A server that answers one request per connection with keep-alive, then closes the
    /// connection (as a provider whose idle timeout is shorter than ours does).
    #[tokio::test]
    async fn a_connection_the_server_closed_while_idle_is_not_reused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel();
        let (close_tx, mut close_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        tokio::spawn(async move {
            let mut n = 0;
            while let Ok((mut tcp, _)) = listener.accept().await {
                n += 1;
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    let k = tcp.read(&mut buf).await.unwrap();
                    assert!(k > 0);
                    seen.extend_from_slice(&buf[..k]);
                }
                let body = format!("conn{n}");
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                tcp.write_all(head.as_bytes()).await.unwrap();
                // Idle until the test has the connection back in its pool.
                close_rx.recv().await;
                drop(tcp);
                let _ = closed_tx.send(n);
            }
        });
        let c = client();
        assert_eq!(
            text(c.request(get(port, "/")).await.unwrap()).await,
            "conn1"
        );
        assert_eq!(idle_count(&c), 1);
        close_tx.send(()).unwrap();
        assert_eq!(closed_rx.recv().await, Some(1));
        // Let the runtime read the socket's events (the close) before the next request.
        tokio::task::yield_now().await;
        assert_eq!(
            text(c.request(get(port, "/")).await.unwrap()).await,
            "conn2"
        );
        assert_eq!(idle_count(&c), 1);
        close_tx.send(()).unwrap();
        assert_eq!(closed_rx.recv().await, Some(2));
        tokio::task::yield_now().await;
        assert_eq!(
            text(c.request(get(port, "/")).await.unwrap()).await,
            "conn3"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connections_expire_and_are_capped_per_host() {
        let (port, accepted) = server().await;
        let c: Client<Full<Bytes>> = HttpClientBuilder::new(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(2)
            .build_pooled()
            .unwrap();
        let (a, b, d) = tokio::join!(
            c.request(get(port, "/")),
            c.request(get(port, "/")),
            c.request(get(port, "/"))
        );
        for r in [a, b, d] {
            assert_eq!(text(r.unwrap()).await, "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert_eq!(idle_count(&c), 2);
        tokio::time::sleep(Duration::from_secs(91)).await;
        tokio::task::yield_now().await;
        // The sweep has run: nothing idle is older than the timeout.
        assert_eq!(idle_count(&c), 0);
        assert_eq!(text(c.request(get(port, "/")).await.unwrap()).await, "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn unreachable_hosts_are_connect_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let e = client().request(get(port, "/")).await.unwrap_err();
        assert!(e.is_connect(), "{e:?}");
        let e = client()
            .request(Request::new(Full::new(Bytes::new())))
            .await
            .unwrap_err();
        assert!(!e.is_connect(), "{e:?}");
    }
}
