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
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
    serve_shared(tcp, Arc::new(Shared::new(opts)), handshake, stop, handler).await;
}

async fn serve_shared<T, H, Fut, B>(
    tcp: TcpListener,
    shared: Arc<Shared>,
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
    let handshake = Arc::new(handshake);
    let handler = Arc::new(handler);
    let builders = Arc::new(builders());
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
            builders.clone(),
            handler.clone(),
            stop.clone(),
        ));
    }
    drop(tcp);
    tracing::info!(listener = %shared.opts.listener, "stopped accepting; draining");
    tasks.close();
    tasks.wait().await;
}

/// hyper's two server builders with our limits; which one serves a connection is decided by
/// its first bytes (the HTTP/2 preface or not), as `hyper_util`'s auto builder would, but
/// here so that an HTTP/1 connection can be taken back from hyper between requests.
struct Builders {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

fn builders() -> Builders {
    let mut h1 = http1::Builder::new();
    h1.timer(TokioTimer::new())
        // Ours (see the module comment) replaces hyper's 30 s default.
        .header_read_timeout(None)
        .max_buf_size(MAX_HEADER_BYTES);
    let mut h2 = http2::Builder::new(TokioExecutor::new());
    h2.timer(TokioTimer::new())
        .keep_alive_interval(Duration::from_secs(30))
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    Builders { h1, h2 }
}

fn is_out_of_files(e: &io::Error) -> bool {
    // EMFILE / ENFILE on Linux and macOS.
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// What every HTTP/2 client sends first (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// The most a parked connection reads when its client speaks again: most request heads fit,
/// so hyper parses them without another read.
const WAKE_READ: usize = 4096;

/// The future hyper serves each request with. Boxed per request: hyper's HTTP/1 connection
/// keeps a box the size of this future for its whole life, and the handlers' futures are
/// kilobytes.
type Answer<B> = Pin<Box<dyn Future<Output = Result<Response<Tracked<B>>, Infallible>> + Send>>;

#[allow(clippy::too_many_arguments, reason = "one call site, spelled out")]
async fn connection<T, H, Fut, B>(
    stream: TcpStream,
    peer: SocketAddr,
    conn: Arc<Conn>,
    shared: Arc<Shared>,
    handshake: Arc<T>,
    builders: Arc<Builders>,
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
    let mut io = Watched {
        // hyper's own bodiless 400/414/431 get the API's error body (h1_errors.rs).
        inner: crate::h1_errors::ErrorBodies::new(io),
        conn: conn.clone(),
    };
    let body_idle = opts.body_idle_timeout;
    let svc_conn = conn.clone();
    let mut service = service_fn(move |req: Request<Incoming>| -> Answer<B> {
        let guard = svc_conn.request_started(&req);
        let conn = svc_conn.clone();
        let req = req.map(|b| RequestBody::new(b, body_idle, conn));
        let response = handler(req, peer);
        Box::pin(async move {
            let res = response.await;
            if has_token(res.headers(), "close") {
                guard.conn.times().reusable = false;
            }
            Ok::<_, Infallible>(res.map(|inner| Tracked {
                inner,
                guard: Some(guard),
            }))
        })
    });

    // Nothing of hyper's exists until the client's first bytes arrive; they tell HTTP/2
    // (its preface) from HTTP/1.
    let Some(mut prefix) = next_bytes(&mut io, &conn, &shared, &stop).await else {
        return;
    };
    while prefix.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(&prefix) {
        let Some(more) = next_bytes(&mut io, &conn, &shared, &stop).await else {
            return;
        };
        prefix = concat(prefix, more);
    }
    if prefix.starts_with(H2_PREFACE) {
        conn.times().h2 = true;
        let mut served = Box::pin(
            builders
                .h2
                .serve_connection(TokioIo::new(Prefixed::new(prefix, io)), service),
        );
        drive(&mut served, &conn, &shared, &stop, &peer).await;
        return;
    }

    // HTTP/1: hyper serves requests until an exchange ends cleanly with the connection kept
    // alive; then it hands the socket back (and frees its buffers) while the client is quiet.
    loop {
        conn.times().after_answer = AfterAnswer::Busy;
        let mut served = H1 {
            conn: builders
                .h1
                .serve_connection(TokioIo::new(Prefixed::new(prefix, io)), service),
            parking: false,
        };
        if drive(&mut served, &conn, &shared, &stop, &peer).await == Ended::Closed {
            return;
        }
        let parts = served.conn.into_parts();
        service = parts.service;
        let (rest, inner) = parts.io.into_inner().into_parts();
        io = inner;
        // Bytes hyper read past the last request, then any it never took from the prefix.
        // (An empty `Bytes` cut from a buffer still holds that buffer: hyper's 8 KiB read
        // buffer would stay with every parked connection.)
        prefix = concat(parts.read_buf, rest);
        if prefix.is_empty() {
            conn.times().parked = true;
            let next = next_bytes(&mut io, &conn, &shared, &stop).await;
            conn.times().parked = false;
            match next {
                Some(bytes) => prefix = bytes,
                None => return,
            }
        }
    }
}

/// `first` then `then`, as one `Bytes`. An empty side is dropped rather than kept: an empty
/// `Bytes` cut from a buffer still holds that buffer.
fn concat(first: Bytes, then: Bytes) -> Bytes {
    match (first.is_empty(), then.is_empty()) {
        (true, true) => Bytes::new(),
        (false, true) => first,
        (true, false) => then,
        (false, false) => {
            let mut joined = Vec::with_capacity(first.len() + then.len());
            joined.extend_from_slice(&first);
            joined.extend_from_slice(&then);
            Bytes::from(joined)
        }
    }
}

/// The client's next bytes, waiting without a buffer (the read lands on the stack and only
/// what arrived is kept). `None`: the client closed, the read failed, or the connection is to
/// close (its header-read or keep-alive timeout, shed, shutdown).
async fn next_bytes<I: AsyncRead + Unpin>(
    io: &mut I,
    conn: &Conn,
    shared: &Shared,
    stop: &CancellationToken,
) -> Option<Bytes> {
    loop {
        let deadline = conn.deadline(&shared.opts);
        tokio::select! {
            read = std::future::poll_fn(|cx| poll_read_some(io, cx)) => {
                return match read {
                    Ok(bytes) if !bytes.is_empty() => Some(bytes),
                    _ => None,
                };
            }
            _ = conn.shed.notified() => {
                shared.closed("shed");
                return None;
            }
            _ = stop.cancelled() => return None,
            _ = sleep_until(deadline.map(|d| d.0)) => {
                if let Some((at, reason)) = conn.deadline(&shared.opts)
                    && at <= Instant::now()
                {
                    shared.closed(reason);
                    return None;
                }
            }
        }
    }
}

fn poll_read_some<I: AsyncRead + Unpin>(
    io: &mut I,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Bytes>> {
    let mut buf = [const { std::mem::MaybeUninit::<u8>::uninit() }; WAKE_READ];
    let mut read = ReadBuf::uninit(&mut buf);
    match Pin::new(io).poll_read(cx, &mut read) {
        Poll::Ready(Ok(())) => Poll::Ready(Ok(Bytes::copy_from_slice(read.filled()))),
        Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
        Poll::Pending => Poll::Pending,
    }
}

/// One hyper connection as [`drive`] sees it.
trait Served {
    fn poll_served(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>>;
    /// Stop after the requests in flight (HTTP/2: GOAWAY; HTTP/1: no keep-alive).
    fn shutdown(&mut self);
    /// Stop after the current exchange and keep the socket open (HTTP/1 only).
    fn park(&mut self) -> bool {
        false
    }
}

struct H1<I, S: hyper::service::HttpService<Incoming>> {
    conn: http1::Connection<I, S>,
    /// Asked to hand the socket back: polled without shutting it down.
    parking: bool,
}

impl<I, S, B> Served for H1<I, S>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B> + Unpin,
    S::Future: Unpin,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn poll_served(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        if self.parking {
            self.conn.poll_without_shutdown(cx)
        } else {
            Pin::new(&mut self.conn).poll(cx)
        }
    }

    fn shutdown(&mut self) {
        Pin::new(&mut self.conn).graceful_shutdown();
    }

    fn park(&mut self) -> bool {
        Pin::new(&mut self.conn).graceful_shutdown();
        self.parking = true;
        true
    }
}

impl<I, S, B> Served for Pin<Box<http2::Connection<I, S, TokioExecutor>>>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin,
    S: hyper::service::HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    B: Body + 'static,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn poll_served(&mut self, cx: &mut Context<'_>) -> Poll<hyper::Result<()>> {
        self.as_mut().poll(cx)
    }

    fn shutdown(&mut self) {
        self.as_mut().graceful_shutdown();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Ended {
    Closed,
    /// HTTP/1 handed the socket back between requests.
    Parked,
}

/// Serve one hyper connection under the listener's timeouts, shedding and drain.
///
/// One timer serves the connection's deadlines and its parking, re-armed only when it
/// fires: a request starting or ending does not wake this loop (that cost two extra polls
/// of the whole connection and a timer re-registration per request). It is armed no later
/// than the current deadline and no later than `recheck` from now; every deadline a later
/// state change can create is at least `recheck` after that change, so none is missed, and
/// an HTTP/1 connection idle in hyper is parked within `PARK_AFTER` to `2 × PARK_AFTER` of
/// its last answer. A connection that keeps sending requests is never parked, so a busy
/// connection pays nothing for it.
async fn drive(
    served: &mut impl Served,
    conn: &Conn,
    shared: &Shared,
    stop: &CancellationToken,
    peer: &SocketAddr,
) -> Ended {
    let opts = &shared.opts;
    let recheck = opts
        .header_read_timeout
        .min(opts.keepalive_timeout)
        .min(PARK_AFTER)
        .max(MIN_RECHECK);
    let timer = tokio::time::sleep_until(next_check(conn, opts, recheck));
    tokio::pin!(timer);
    let mut closing = false;
    let mut parking = false;
    let mut hard_stop = false;
    loop {
        tokio::select! {
            done = std::future::poll_fn(|cx| served.poll_served(cx)) => {
                return match done {
                    Ok(()) if parking && !closing => Ended::Parked,
                    Ok(()) => Ended::Closed,
                    Err(e) => {
                        tracing::debug!(listener = %opts.listener, %peer, error = %e, "connection ended with an error");
                        Ended::Closed
                    }
                };
            }
            _ = conn.shed.notified(), if !closing => {
                shared.closed("shed");
                served.shutdown();
                closing = true;
                hard_stop = true;
                timer.as_mut().reset(Instant::now() + CLOSE_GRACE);
            }
            _ = stop.cancelled(), if !closing => {
                served.shutdown();
                closing = true;
            }
            _ = timer.as_mut(), if !closing || hard_stop => {
                if closing {
                    return Ended::Closed;
                }
                let now = Instant::now();
                match conn.deadline(opts) {
                    Some((at, reason)) if at <= now && !parking => {
                        shared.closed(reason);
                        served.shutdown();
                        closing = true;
                        hard_stop = true;
                        timer.as_mut().reset(now + CLOSE_GRACE);
                    }
                    _ => {
                        if !parking && conn.parkable(now) {
                            parking = served.park();
                        }
                        timer.as_mut().reset(next_check(conn, opts, recheck));
                    }
                }
            }
        }
    }
}

/// How long an HTTP/1 connection sits idle in hyper (its buffers held) before it is parked.
const PARK_AFTER: Duration = Duration::from_secs(1);

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

/// Whether a `Connection` header (any of them) lists `token`.
fn has_token(headers: &http::HeaderMap, token: &str) -> bool {
    headers.get_all(http::header::CONNECTION).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// What hyper did after an HTTP/1 answer was sent: only a connection hyper kept alive reads
/// again after flushing the answer (one it is closing flushes and stops; reads before the
/// flush are its end-of-file checks mid-exchange).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterAnswer {
    /// A request in flight, or its answer was cut short.
    Busy,
    /// The answer's body was sent to its end.
    Answered,
    /// ... and hyper flushed the connection.
    Flushed,
    /// ... and then waited for the next request head: the connection is idle in hyper.
    Reading,
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
    /// HTTP/1, the current or last exchange: the client wants the connection kept alive and
    /// nothing since said otherwise (a `Connection: close` answer, an answer cut short).
    reusable: bool,
    /// HTTP/1, the current or last exchange: the request body was read to its end.
    body_done: bool,
    /// HTTP/1: how far hyper got after the last answer.
    after_answer: AfterAnswer,
    /// HTTP/1: hyper has handed the socket back; waiting for the client's next request.
    parked: bool,
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
                reusable: false,
                body_done: false,
                after_answer: AfterAnswer::Busy,
                parked: false,
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

    fn request_started(self: &Arc<Self>, req: &Request<Incoming>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let mut t = self.times();
        t.served += 1;
        t.h2 = req.version() == http::Version::HTTP_2;
        t.head_started = None;
        t.reusable = keeps_alive(req);
        t.body_done = req.body().is_end_stream();
        t.after_answer = AfterAnswer::Busy;
        drop(t);
        InFlight {
            conn: self.clone(),
            complete: AtomicBool::new(false),
        }
    }

    /// HTTP/1 with no request in flight, at least [`PARK_AFTER`] after an exchange that
    /// ended cleanly with the connection kept alive, and no byte of a next request yet:
    /// hyper can hand the socket back.
    fn parkable(&self, now: Instant) -> bool {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return false;
        }
        let t = self.times();
        t.served > 0
            && !t.h2
            && t.reusable
            && t.body_done
            && t.after_answer == AfterAnswer::Reading
            && t.head_started.is_none()
            && now.saturating_duration_since(t.idle_since) >= PARK_AFTER
    }

    /// The connection's reader was polled (`got_bytes`: and data arrived).
    fn read_polled(&self, got_bytes: bool) {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut t = self.times();
        if t.h2 {
            return;
        }
        if got_bytes && t.served > 0 && t.head_started.is_none() {
            t.head_started = Some(Instant::now());
        }
        if t.after_answer == AfterAnswer::Flushed {
            t.after_answer = AfterAnswer::Reading;
        }
    }

    /// The connection was flushed.
    fn flushed(&self) {
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return;
        }
        let mut t = self.times();
        if t.after_answer == AfterAnswer::Answered {
            t.after_answer = AfterAnswer::Flushed;
        }
    }
}

/// Whether an HTTP/1 request leaves its connection open for the next one (HTTP/1.1 unless
/// `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`).
fn keeps_alive(req: &Request<Incoming>) -> bool {
    if req.method() == http::Method::CONNECT {
        return false;
    }
    let h = req.headers();
    // hyper closes after a request framed both ways (RFC 9112 §6.1).
    if h.contains_key(http::header::TRANSFER_ENCODING)
        && h.contains_key(http::header::CONTENT_LENGTH)
    {
        return false;
    }
    match req.version() {
        http::Version::HTTP_11 => !has_token(h, "close"),
        http::Version::HTTP_10 => has_token(h, "keep-alive"),
        _ => false,
    }
}

/// A request in flight on its connection: from the head being read until the response
/// body has been sent (or dropped).
struct InFlight {
    conn: Arc<Conn>,
    /// The response body was sent to its end.
    complete: AtomicBool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut t = self.conn.times();
        t.idle_since = Instant::now();
        if self.complete.load(Ordering::SeqCst) {
            t.after_answer = AfterAnswer::Answered;
        } else {
            t.reusable = false;
        }
        drop(t);
        self.conn.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

// ------------------------------------------------------------------ bodies and IO

/// A request body that fails when the client sends nothing for `body_idle_timeout`.
pub struct RequestBody {
    inner: Incoming,
    timeout: Duration,
    idle: Option<Pin<Box<Sleep>>>,
    armed: bool,
    conn: Arc<Conn>,
}

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no request body data for {0:?}")]
pub struct BodyIdleTimeout(pub Duration);

impl RequestBody {
    fn new(inner: Incoming, timeout: Duration, conn: Arc<Conn>) -> Self {
        RequestBody {
            inner,
            timeout,
            idle: None,
            armed: false,
            conn,
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
            if frame.is_none() || this.inner.is_end_stream() {
                this.conn.times().body_done = true;
            }
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
        if let Poll::Ready(None) = polled
            && let Some(guard) = this.guard.take()
        {
            guard.complete.store(true, Ordering::SeqCst);
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        // hyper does not poll a body that says it is at its end (an empty one): that counts
        // as sent to the end.
        let end = self.inner.is_end_stream();
        if end && let Some(guard) = &self.guard {
            guard.complete.store(true, Ordering::SeqCst);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The connection's byte stream, noting when a new HTTP/1 request head starts arriving and
/// when hyper flushes and reads between requests.
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
        this.conn
            .read_polled(matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before);
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
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        if matches!(polled, Poll::Ready(Ok(()))) {
            this.conn.flushed();
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The connection's byte stream with bytes already read from it put back in front.
struct Prefixed<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Prefixed<I> {
    fn new(prefix: Bytes, inner: I) -> Self {
        Prefixed { prefix, inner }
    }

    /// What is left of the prefix, and the stream.
    fn into_parts(self) -> (Bytes, I) {
        (self.prefix, self.inner)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            if this.prefix.is_empty() {
                // Let go of the buffer the prefix was cut from.
                this.prefix = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Prefixed<I> {
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

#[cfg(test)]
mod tests {
    use http_body_util::Full;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn options() -> ListenOptions {
        ListenOptions {
            component: "egress",
            listener: "test".into(),
            max_connections: 16,
            header_read_timeout: Duration::from_secs(30),
            body_idle_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(30),
        }
    }

    /// A listener answering `ok <path> <body length>`, and its shared state.
    async fn start() -> (SocketAddr, Arc<Shared>, CancellationToken) {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let shared = Arc::new(Shared::new(options()));
        let stop = CancellationToken::new();
        let handler = |req: Request<RequestBody>, _peer| async move {
            let path = req.uri().path().to_string();
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .map(|b| b.to_bytes().len())
                .unwrap_or(usize::MAX);
            Response::new(Full::new(Bytes::from(format!("ok {path} {body}"))))
        };
        tokio::spawn(serve_shared(
            tcp,
            shared.clone(),
            Plain,
            stop.clone(),
            handler,
        ));
        (addr, shared, stop)
    }

    fn parked(shared: &Shared) -> usize {
        shared.conns().values().filter(|c| c.times().parked).count()
    }

    /// Waits (bounded) until the listener has `n` parked connections.
    async fn until_parked(shared: &Shared, n: usize) {
        for _ in 0..500 {
            if parked(shared) == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{} connections parked, expected {n}", parked(shared));
    }

    /// Reads until `count` complete answers (each ends with its `ok …` body) have arrived.
    async fn answers(conn: &mut TcpStream, count: usize) -> String {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while String::from_utf8_lossy(&got)
            .matches("HTTP/1.1 200")
            .count()
            < count
            || !String::from_utf8_lossy(&got).ends_with(|c: char| c.is_ascii_digit())
        {
            let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf))
                .await
                .expect("no answer within 10 s")
                .unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(got).unwrap()
    }

    #[tokio::test]
    async fn idle_http1_connections_are_handed_back_by_hyper_and_served_again() {
        let (addr, shared, stop) = start().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        for i in 0..3 {
            conn.write_all(format!("GET /{i} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let a = answers(&mut conn, 1).await;
            assert!(a.ends_with(&format!("ok /{i} 0")), "{a}");
            assert!(!a.to_ascii_lowercase().contains("connection: close"), "{a}");
            until_parked(&shared, 1).await;
        }
        // A body read to its end, then two pipelined requests in one write.
        conn.write_all(b"POST /b HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello")
            .await
            .unwrap();
        assert!(answers(&mut conn, 1).await.ends_with("ok /b 5"));
        until_parked(&shared, 1).await;
        conn.write_all(b"GET /p1 HTTP/1.1\r\nhost: x\r\n\r\nGET /p2 HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let a = answers(&mut conn, 2).await;
        assert!(a.contains("ok /p1 0") && a.ends_with("ok /p2 0"), "{a}");
        until_parked(&shared, 1).await;
        stop.cancel();
    }

    #[tokio::test]
    async fn a_request_asking_to_close_is_answered_and_closed_not_parked() {
        let (addr, shared, stop) = start().await;
        let mut conn = TcpStream::connect(addr).await.unwrap();
        conn.write_all(b"GET /c HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut out))
            .await
            .expect("the connection stayed open")
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        assert!(out.ends_with("ok /c 0"), "{out}");
        assert_eq!(parked(&shared), 0);
        stop.cancel();
    }
}
