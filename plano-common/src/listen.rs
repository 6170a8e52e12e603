//! Serving one listener's client connections, shared by both binaries: accept, a connection
//! cap that sheds idle connections before refusing new ones, header-read / body-idle /
//! keep-alive timeouts, HTTP/1.1 and HTTP/2 (auto-detected, or ALPN behind TLS), and a drain
//! on shutdown. Why each limit has its default: docs/hardening.md.
//!
//! The timeouts are kept here rather than in hyper because hyper's HTTP/1 header timer also
//! runs while a keep-alive connection is idle (so it cannot differ from the keep-alive
//! timeout) and the protocol detection before it has no timer at all: a connection that
//! sends nothing, or half the HTTP/2 preface, would otherwise hold its slot forever.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{CONNECTIONS_CLOSED_TOTAL, CONNECTIONS_OPEN, CONNECTIONS_REJECTED_TOTAL};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest request head (HTTP/1 line + headers; HTTP/2 header list) accepted; beyond it
/// HTTP/1 answers 431 and HTTP/2 refuses the stream.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Concurrent HTTP/2 streams per connection.
pub const MAX_CONCURRENT_STREAMS: u32 = 200;
/// Descriptors kept out of the default connection cap (upstream pools, files, admin).
const FILE_RESERVE: u64 = 1024;
/// How long a connection we decided to close (timeout, shed) may take to say goodbye
/// (HTTP/2 GOAWAY) before its socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// One listener's limits, fixed when it starts serving.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// `edge` or `egress` (metric label).
    pub component: &'static str,
    /// The listener's configured name (metric label, logs).
    pub listener: String,
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub body_idle_timeout: Duration,
    pub keepalive_timeout: Duration,
}

impl ListenOptions {
    /// The options of a configured listener; an unset `connections.max` is derived from the
    /// process's open-files limit ([`default_max_connections`]).
    pub fn new(component: &'static str, listener: &plano_config::Listener) -> Self {
        let c = &listener.connections;
        ListenOptions {
            component,
            listener: listener.name.clone(),
            max_connections: c.max.unwrap_or_else(default_max_connections),
            header_read_timeout: c.header_read_timeout,
            body_idle_timeout: c.body_idle_timeout,
            keepalive_timeout: c.keepalive_timeout,
        }
    }
}

/// Half the descriptors above a reserve of 1,024 (each client connection may need an
/// upstream one), at least 256.
pub fn default_max_connections() -> usize {
    let soft = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map(|(soft, _)| soft)
        .unwrap_or(1024);
    let n = (soft.saturating_sub(FILE_RESERVE) / 2).max(256);
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// Raise the soft open-files limit to the hard limit (both binaries do this at start, so
/// the connection caps, not the kernel, decide when to refuse). Returns (before, after).
pub fn raise_file_limit() -> io::Result<(u64, u64)> {
    let (before, _) = rlimit::getrlimit(rlimit::Resource::NOFILE)?;
    let after = rlimit::increase_nofile_limit(u64::MAX)?;
    Ok((before, after))
}

/// What turns an accepted TCP stream into the byte stream HTTP is served on (TLS, or
/// nothing). `None`: nothing to serve (failed handshake, or answered during it).
pub trait Handshake: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<Self::Io>> + Send;
}

/// Plain TCP.
pub struct Plain;

impl Handshake for Plain {
    type Io = TcpStream;
    fn handshake(
        &self,
        tcp: TcpStream,
        _peer: SocketAddr,
    ) -> impl Future<Output = Option<TcpStream>> + Send {
        std::future::ready(Some(tcp))
    }
}

/// Accept and serve `tcp` until `stop`, then let open connections finish their requests
/// (the caller bounds that drain).
pub async fn serve<T, H, Fut, B>(
    tcp: TcpListener,
    opts: ListenOptions,
    handshake: T,
    stop: CancellationToken,
    handler: H,
) where
    T: Handshake,
    H: Fn(Request<RequestBody>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let shared = Arc::new(Shared::new(opts));
    let handshake = Arc::new(handshake);
    let handler = Arc::new(handler);
    let builder = Arc::new(builder());
    let tasks = TaskTracker::new();
    shared.publish_open(0);
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors: free an idle connection's so the next client gets in.
                if is_out_of_files(&e) {
                    shared.shed_one();
                }
                shared.warn_rarely(&format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if !shared.admit() {
            metrics::counter!(CONNECTIONS_REJECTED_TOTAL, "component" => shared.opts.component, "listener" => shared.opts.listener.clone()).increment(1);
            shared.warn_rarely(
                "connection cap reached and no idle connection to shed: refusing new connections",
            );
            drop(stream);
            continue;
        }
        let conn = shared.register();
        tasks.spawn(connection(
            stream,
            peer,
            conn,
            shared.clone(),
            handshake.clone(),
            builder.clone(),
            handler.clone(),
            stop.clone(),
        ));
    }
    drop(tcp);
    tracing::info!(listener = %shared.opts.listener, "stopped accepting; draining");
    tasks.close();
    tasks.wait().await;
}

fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        // Ours (see the module comment) replaces hyper's 30 s default.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES);
    b.http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    b
}

fn is_out_of_files(e: &io::Error) -> bool {
    // EMFILE / ENFILE on Linux and macOS.
    matches!(e.raw_os_error(), Some(23 | 24))
}

#[allow(clippy::too_many_arguments, reason = "one call site, spelled out")]
async fn connection<T, H, Fut, B>(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    handshake: Arc<T>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    handler: Arc<H>,
    stop: CancellationToken,
) where
    T: Handshake,
    H: Fn(Request<RequestBody>, SocketAddr) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let _registered = Registered {
        shared: shared.clone(),
        conn: conn.clone(),
    };
    let opts = &shared.opts;
    let _ = stream.set_nodelay(true);
    // The handshake counts against the header-read timeout and can be shed.
    let io = tokio::select! {
        io = handshake.handshake(stream, peer) => match io {
            Some(io) => io,
            None => return,
        },
        _ = tokio::time::sleep(opts.header_read_timeout) => {
            shared.closed("header_timeout");
            return;
        }
        _ = conn.shed.notified() => {
            shared.closed("shed");
            return;
        }
        _ = stop.cancelled() => return,
    };
    let io = Watched {
        // hyper's own bodiless 400/414/431 get the API's error body (h1_errors.rs).
        inner: crate::h1_errors::ErrorBodies::new(io),
        conn: conn.clone(),
    };
    let body_idle = opts.body_idle_timeout;
    let svc_conn = conn.clone();
    let service = service_fn(move |req: Request<Incoming>| {
        let guard = svc_conn.request_started(req.version() == http::Version::HTTP_2);
        let req = req.map(|b| RequestBody::new(b, body_idle));
        let response = handler(req, peer);
        async move {
            let res = response.await;
            Ok::<_, Infallible>(res.map(|inner| Tracked {
                inner,
                guard: Some(guard),
            }))
        }
    });
    let served = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    // One timer for the connection's deadlines, re-armed only when it fires: a request
    // starting or ending does not wake this loop (that cost two extra polls of the whole
    // connection and a timer re-registration per request). It is armed no later than the
    // current deadline and no later than `recheck` from now; every deadline a later state
    // change can create is at least `recheck` after that change, so none is missed.
    let recheck = opts
        .header_read_timeout
        .min(opts.keepalive_timeout)
        .max(MIN_RECHECK);
    let timer = tokio::time::sleep_until(next_check(&conn, opts, recheck));
    tokio::pin!(timer);
    let mut closing = false;
    let mut hard_stop = false;
    loop {
        tokio::select! {
            done = served.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(listener = %opts.listener, %peer, error = %e, "connection ended with an error");
                }
                break;
            }
            _ = conn.shed.notified(), if !closing => {
                shared.closed("shed");
                served.as_mut().graceful_shutdown();
                closing = true;
                hard_stop = true;
                timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            _ = stop.cancelled(), if !closing => {
                served.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = timer.as_mut(), if !closing || hard_stop => {
                if closing {
                    break;
                }
                match conn.deadline(opts) {
                    Some((at, reason)) if at <= Instant::now() => {
                        shared.closed(reason);
                        served.as_mut().graceful_shutdown();
                        closing = true;
                        hard_stop = true;
                        timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
                    }
                    _ => timer.as_mut().reset(next_check(&conn, opts, recheck)),
                }
            }
        }
    }
}

/// The shortest re-check interval of a connection's timer (guards against a busy loop
/// should a timeout ever be zero).
const MIN_RECHECK: Duration = Duration::from_millis(10);

/// When the connection's timer next fires: its deadline, but no later than `recheck` from
/// now (a request in flight has no deadline; one may start or end before then).
fn next_check(conn: &Conn, opts: &ListenOptions, recheck: Duration) -> Instant {
    let soon = Instant::now() + recheck;
    match conn.deadline(opts) {
        Some((at, _)) => at.min(soon),
        None => soon,
    }
}

// ------------------------------------------------------------------ listener state

struct Shared {
    opts: ListenOptions,
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Connections told to close to make room, not yet gone.
    shedding: AtomicUsize,
    last_warn: Mutex<Option<Instant>>,
}

impl Shared {
    fn new(opts: ListenOptions) -> Self {
        Shared {
            opts,
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            shedding: AtomicUsize::new(0),
            last_warn: Mutex::new(None),
        }
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for one more connection, shedding the longest-idle one at the cap.
    fn admit(&self) -> bool {
        let open = self.conns().len();
        let leaving = self.shedding.load(Ordering::SeqCst);
        open.saturating_sub(leaving) < self.opts.max_connections || self.shed_one()
    }

    /// Tell the connection idle the longest (no request in flight) to close. False when
    /// every connection is busy.
    fn shed_one(&self) -> bool {
        let conns = self.conns();
        let mut victim: Option<(Instant, &Arc<Conn>)> = None;
        for c in conns.values() {
            if c.in_flight.load(Ordering::SeqCst) > 0 {
                continue;
            }
            let t = c.times();
            if t.shedding {
                continue;
            }
            if victim.is_none_or(|(since, _)| t.idle_since < since) {
                victim = Some((t.idle_since, c));
            }
        }
        let Some((_, c)) = victim else { return false };
        c.times().shedding = true;
        self.shedding.fetch_add(1, Ordering::SeqCst);
        c.shed.notify_one();
        true
    }

    fn register(&self) -> Arc<Conn> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(id));
        let n = {
            let mut conns = self.conns();
            conns.insert(id, conn.clone());
            conns.len()
        };
        self.publish_open(n);
        conn
    }

    fn unregister(&self, conn: &Conn) {
        let n = {
            let mut conns = self.conns();
            conns.remove(&conn.id);
            conns.len()
        };
        if conn.times().shedding {
            self.shedding.fetch_sub(1, Ordering::SeqCst);
        }
        self.publish_open(n);
    }

    fn publish_open(&self, n: usize) {
        metrics::gauge!(CONNECTIONS_OPEN, "component" => self.opts.component, "listener" => self.opts.listener.clone()).set(n as f64);
    }

    fn closed(&self, reason: &'static str) {
        metrics::counter!(CONNECTIONS_CLOSED_TOTAL, "component" => self.opts.component, "listener" => self.opts.listener.clone(), "reason" => reason).increment(1);
    }

    /// A warning at most every 10 s: a flood must not turn into a log flood.
    fn warn_rarely(&self, what: &str) {
        let mut last = self.last_warn.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if last.is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10)) {
            *last = Some(now);
            tracing::warn!(listener = %self.opts.listener, max_connections = self.opts.max_connections, "{what}");
        }
    }
}

/// Removes its connection from the listener when the connection task ends, however it ends.
struct Registered {
    shared: Arc<Shared>,
    conn: Arc<Conn>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.shared.unregister(&self.conn);
    }
}

struct Conn {
    id: u64,
    in_flight: AtomicUsize,
    times: Mutex<Times>,
    /// Close now: the listener needs the slot.
    shed: Notify,
}

struct Times {
    accepted: Instant,
    /// When the last request ended (or the connection was accepted).
    idle_since: Instant,
    /// HTTP/1: first bytes of the next request head arrived while idle.
    head_started: Option<Instant>,
    served: u64,
    h2: bool,
    shedding: bool,
}

impl Conn {
    fn new(id: u64) -> Self {
        let now = Instant::now();
        Conn {
            id,
            in_flight: AtomicUsize::new(0),
            times: Mutex::new(Times {
                accepted: now,
                idle_since: now,
                head_started: None,
                served: 0,
                h2: false,
                shedding: false,
            }),
            shed: Notify::new(),
        }
    }

    fn times(&self) -> MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// When this connection is to be closed and why; `None` while a request is in flight
    /// (a request is bounded by its listener `timeout` and the body-idle timeout instead).
    fn deadline(&self, o: &ListenOptions) -> Option<(Instant, &'static str)> {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return None;
        }
        let t = self.times();
        Some(if t.served == 0 {
            (t.accepted + o.header_read_timeout, "header_timeout")
        } else if let Some(started) = t.head_started {
            (started + o.header_read_timeout, "header_timeout")
        } else {
            (t.idle_since + o.keepalive_timeout, "idle_timeout")
        })
    }

    fn request_started(self: &Arc<Self>, h2: bool) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut t = self.times();
        t.served += 1;
        t.h2 = h2;
        t.head_started = None;
        drop(t);
        InFlight(self.clone())
    }

    fn bytes_read(&self) {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut t = self.times();
        if t.served > 0 && !t.h2 && t.head_started.is_none() {
            t.head_started = Some(Instant::now());
        }
    }
}

/// A request in flight on its connection: from the head being read until the response
/// body has been sent (or dropped).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.times().idle_since = Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------ bodies and IO

/// A request body that fails when the client sends nothing for `body_idle_timeout`.
pub struct RequestBody {
    inner: Incoming,
    timeout: Duration,
    idle: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

impl RequestBody {
    fn new(inner: Incoming, timeout: Duration) -> Self {
        RequestBody {
            inner,
            timeout,
            idle: None,
            armed: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        // The clock starts when the reader waits, not when the request arrived: a handler
        // may do other work (auth, filters) before it reads the body.
        let deadline = Instant::now() + this.timeout;
        let sleep = this
            .idle
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !this.armed {
            sleep.as_mut().reset(deadline);
            this.armed = true;
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyIdleTimeout(this.timeout))))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted as in flight until it is sent.
    struct Tracked<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
    }
}

impl<B> Body for Tracked<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.guard.take();
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's byte stream, noting when a new HTTP/1 request head starts arriving.
struct Watched<I> {
    inner: I,
    conn: Arc<Conn>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.conn.bytes_read();
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
