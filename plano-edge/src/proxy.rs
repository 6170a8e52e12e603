//! The ingress request path, one function, phases in order:
//!
//! 1. auth: `auth.api_keys` (401; two keys of one style 400) — first, so a client without
//!    a key learns nothing, not even which paths exist;
//! 2. route: only the chat APIs are forwarded (`forward::ROUTES`); anything else is 404;
//! 3. limits: a declared body over the listener's `max_body_bytes` is 413 at once, and the
//!    streamed body is cut at that size (413 too; broken framing 400); a chat `POST` whose
//!    content type cannot carry JSON is 415; then the client's key is removed;
//! 4. input filters: with `input_filters` on the listener, a POST body is read whole
//!    (still within `max_body_bytes`), run through the chain (`plano_common::filters`) and
//!    forwarded with its new length; a block or a closed failure answers here. Without
//!    filters the body streams through untouched;
//! 5. route to agents / prompt targets: on `agent` and `prompt` listeners the edge answers
//!    chat completions itself (`route.rs`, `agents.rs`, `prompt_targets.rs`) and goes on at
//!    8; everything else goes on to the egress;
//! 6. egress health: when the watcher says the egress is down, 503 at once, without a try;
//! 7. forward to `egress.url`, bodies streamed both ways (502 when the egress cannot be
//!    reached);
//! 8. respond, bounded by the listener `timeout`; with `output_filters`, a successful answer
//!    goes through the chain first, whole or event by event (`plano_common::filters::output`); the
//!    access log is written when the body ends (`body.rs`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use plano_common::errors::ApiShape;
use plano_common::filters::FilterCtx;
use plano_config::{Config, Listener};

use crate::access_log::{AccessRecord, ListenerMetrics};
use crate::auth;
use crate::body::{BoxError, Inner, ResponseBody};
use crate::error::EdgeError;
use crate::forward::{self, ClientInfo};
use crate::in_flight::InFlight;
use crate::state::Edge;
use crate::{agents, calls, prompt_targets, route};
use plano_common::filters::output::OutputChain;

/// A bound listener's identity; its settings are read from the current config.
pub struct ListenerInfo {
    pub name: String,
    pub addr: SocketAddr,
    /// The listener's request metrics (and its name in the access log).
    pub metrics: Arc<ListenerMetrics>,
}

/// One request's future, boxed once here: hyper keeps it in a box anyway, and a future
/// returned by value is copied whole each time it is moved into the next wrapper.
pub(crate) type Handling = Pin<Box<dyn Future<Output = Response<ResponseBody>> + Send>>;

pub(crate) fn handle(
    edge: Arc<Edge>,
    info: Arc<ListenerInfo>,
    peer: SocketAddr,
    https: bool,
    req: Request<plano_common::listen::RequestBody>,
) -> Handling {
    use tracing::Instrument;
    // The request's server span: parented to the client's `traceparent`, carried by the
    // access record so it ends with the response body.
    let span = plano_common::telemetry::server_span(
        "edge",
        forward::route_for(req.uri().path()).unwrap_or(""),
        &req,
        &plano_common::telemetry::SpanAttributes::of(edge.loaded.load().config.tracing.as_ref()),
    );
    Box::pin(handle_in_span(edge, info, peer, https, req, span.clone()).instrument(span))
}

/// The request path. The phases only some listeners use (input filters, agents and prompt
/// targets, output filters) run in boxed futures of their own: theirs are kilobytes, and
/// inline they would make every request's future that size.
async fn handle_in_span(
    edge: Arc<Edge>,
    info: Arc<ListenerInfo>,
    peer: SocketAddr,
    https: bool,
    req: Request<plano_common::listen::RequestBody>,
    span: tracing::Span,
) -> Response<ResponseBody> {
    let started = Instant::now();
    let in_flight = InFlight::new(&edge.in_flight);
    let request_id = plano_common::request_id::ensure(req.headers());
    let loaded = edge.loaded.load_full();
    let config = &loaded.config;
    let path = req.uri().path().to_string();
    let shape = ApiShape::for_path(&path);
    let route = forward::route_for(&path);
    let mut record = AccessRecord {
        request_id: request_id.to_str().unwrap_or("-").to_string(),
        listener: info.metrics.clone(),
        method: req.method().clone(),
        path: plano_common::errors::bounded_path(&path).into_owned(),
        route: route.unwrap_or("other"),
        error: "-",
        status: 0,
        bytes_out: 0,
        started: std::time::Instant::now(),
        upstream: "-",
        completed: false,
        span,
    };
    let Settings {
        timeout,
        max_body,
        input_filters,
        output_filters,
    } = Settings::of(listener(config, &info.name), req.method());

    // 1. auth: first, so a client without a valid key learns nothing, not even which
    //    paths exist (401 before 404).
    let client_auth = || listener(config, &info.name).and_then(|l| l.auth.as_ref());
    if let Err(e) = auth::check(client_auth(), req.headers()) {
        return local(e, shape, record, &request_id, in_flight);
    }
    // 2. route
    let Some(route_template) = route else {
        let e = EdgeError::NoRoute {
            method: req.method().clone(),
            path: plano_common::errors::bounded_path(&path).into_owned(),
        };
        return local(e, shape, record, &request_id, in_flight);
    };
    // 3. limits and content type
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body) {
        let e = EdgeError::BodyTooLarge { limit: max_body };
        return local(e, shape, record, &request_id, in_flight);
    }
    if let Err(e) = check_content_type(req.method(), route_template, req.headers()) {
        return local(e, shape, record, &request_id, in_flight);
    }
    let (mut parts, body) = req.into_parts();
    if client_auth().is_some() {
        auth::strip(&mut parts.headers);
    }
    let body: Inner = crate::body::limited_request(body, max_body);
    // 4. input filters
    let body = if input_filters.is_empty() {
        body
    } else {
        let input = InputFilters {
            edge: &edge,
            config,
            ids: &input_filters,
            path: &path,
            request_id: &request_id,
            shape,
            max_body,
            deadline: (started, timeout),
        };
        match Box::pin(input.run(&mut parts.headers, body)).await {
            Ok(b) => b,
            Err((e, upstream)) => {
                record.upstream = upstream;
                return local(e, shape, record, &request_id, in_flight);
            }
        }
    };
    // Only a listener with output filters keeps the request headers past forwarding; it
    // also asks for an identity-encoded answer, since filters read the JSON.
    let output = (!output_filters.is_empty()).then(|| {
        parts.headers.remove(header::ACCEPT_ENCODING);
        OutputChain {
            runner: edge.filters.clone(),
            config: config.clone(),
            ids: output_filters,
            path: path.clone(),
            request_headers: parts.headers.clone(),
            request_id: request_id.clone(),
            shape,
        }
    });
    let finish = Finish {
        record,
        in_flight,
        request_id,
        shape,
        timeout,
        started,
        output,
        egress_wait: None,
    };
    // 5. agents / prompt targets
    let owner = listener(config, &info.name).and_then(|l| route::owner(l, config, route_template));
    if let Some(owner) = owner {
        let routed = Routing {
            edge: &edge,
            config,
            listener: &info.name,
            client: ClientInfo { peer, https },
            max_body,
            owner,
        };
        return Box::pin(routed.run(parts, body, finish)).await;
    }
    // 6. egress health
    // (The status is cloned only when it is down: its detail is a `String`.)
    let down = {
        let status = edge.egress.borrow();
        (!status.up).then(|| status.detail.clone())
    };
    if let Some(detail) = down {
        return finish.fail(EdgeError::EgressUnavailable(detail));
    }
    // 7. forward
    let upstream = match forward::upstream_request(
        Request::from_parts(parts, body),
        &loaded.egress,
        &finish.request_id,
        &ClientInfo { peer, https },
    ) {
        Ok(r) => r,
        Err(e) => return finish.fail(EdgeError::CannotForward(e.to_string())),
    };
    let mut finish = finish;
    finish.record.upstream = "egress";
    let mut upstream = upstream;
    plano_common::telemetry::inject_current(upstream.headers_mut());
    let remaining = timeout.saturating_sub(started.elapsed());
    let sent = Instant::now();
    let res = match tokio::time::timeout(remaining, edge.client.request(upstream)).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => {
            // The client's own body failing (over the limit, broken framing) is the
            // client's error, not the egress's.
            if let Some(client) = crate::body::client_body_error(&e, max_body) {
                return finish.fail(client);
            }
            let chain = plano_common::errors::error_chain(&e);
            tracing::warn!(listener = %info.name, error = %chain, "egress request failed");
            return finish.fail(EdgeError::EgressUnreachable);
        }
        Err(_) => return finish.fail(listener_timeout(timeout, "the model egress")),
    };
    // 8. respond
    finish.egress_wait = Some(sent.elapsed());
    let (parts, body) = res.into_parts();
    let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    let res = Response::from_parts(parts, body);
    if finish.output.is_none() {
        return finish.send(res);
    }
    Box::pin(finish.respond(res)).await
}

/// Phase 4, on a listener with `input_filters`: the request body read whole (within
/// `max_body_bytes`), run through the chain and forwarded with its new length.
struct InputFilters<'a> {
    edge: &'a Edge,
    config: &'a Config,
    ids: &'a [String],
    path: &'a str,
    request_id: &'a HeaderValue,
    shape: ApiShape,
    max_body: usize,
    /// When the request arrived, and the listener timeout.
    deadline: (Instant, std::time::Duration),
}

impl InputFilters<'_> {
    /// The filtered body, or the answer's error and the access log's `upstream` for it.
    async fn run(
        self,
        headers: &mut http::HeaderMap,
        body: Inner,
    ) -> Result<Inner, (EdgeError, &'static str)> {
        let bytes = crate::body::read_request(body, self.max_body)
            .await
            .map_err(|e| (e, "-"))?;
        let ctx = FilterCtx {
            path: self.path,
            headers,
            request_id: self.request_id,
        };
        let chain = self
            .edge
            .filters
            .run_input(self.config, self.ids, &ctx, bytes);
        let (started, timeout) = self.deadline;
        let remaining = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, chain).await {
            Ok(Ok(new)) => {
                headers.remove(header::TRANSFER_ENCODING);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(new.len()));
                Ok(ResponseBody::full(new))
            }
            Ok(Err(e)) => Err((EdgeError::Filter(e.to_api_error(self.shape)), "filter")),
            Err(_) => Err((listener_timeout(timeout, "the input filters"), "-")),
        }
    }
}

/// Phase 5, on `agent` and `prompt` listeners: the edge answers a chat request itself.
struct Routing<'a> {
    edge: &'a Edge,
    config: &'a Config,
    listener: &'a str,
    client: ClientInfo,
    max_body: usize,
    owner: route::Owner,
}

impl Routing<'_> {
    async fn run(
        self,
        parts: http::request::Parts,
        body: Inner,
        mut finish: Finish,
    ) -> Response<ResponseBody> {
        let (started, timeout) = (finish.started, finish.timeout);
        let remaining = timeout.saturating_sub(started.elapsed());
        let read = tokio::time::timeout(remaining, crate::body::read_request(body, self.max_body));
        let parsed = match read.await {
            Ok(Ok(bytes)) => calls::parse_request_json(&bytes),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(listener_timeout(timeout, "the request body")),
        };
        let body = match parsed {
            Ok(b) => b,
            Err(e) => return finish.fail(e),
        };
        let Some(l) = listener(self.config, self.listener) else {
            return finish.fail(EdgeError::ListenerRemoved);
        };
        let ctx = route::RouteCtx {
            edge: self.edge,
            config: self.config,
            listener: l,
            request_id: &finish.request_id,
            headers: &parts.headers,
            uri: &parts.uri,
            client: &self.client,
            deadline: route::deadline(started, timeout),
            body,
        };
        let routed = match self.owner {
            route::Owner::Agents => Box::pin(agents::handle(ctx)).await,
            route::Owner::PromptTargets => Box::pin(prompt_targets::handle(ctx)).await,
        };
        finish.record.upstream = routed.upstream;
        finish.respond(routed.response).await
    }
}

/// What the last phase needs to send an upstream answer (egress, agent, or the edge's own
/// answer on a routed listener) to the client.
struct Finish {
    record: AccessRecord,
    in_flight: InFlight,
    request_id: HeaderValue,
    shape: ApiShape,
    timeout: std::time::Duration,
    started: Instant,
    output: Option<OutputChain>,
    /// How long the egress took to answer with its head, when the request went there:
    /// the edge's own time (`plano_overhead_seconds{component="edge"}`) is the rest.
    egress_wait: Option<std::time::Duration>,
}

impl Finish {
    /// Output filters on a successful answer (when the listener has them), then
    /// [`Finish::send`].
    async fn respond(mut self, res: Response<Inner>) -> Response<ResponseBody> {
        let (mut parts, mut body) = res.into_parts();
        self.head(&mut parts);
        if let Some(chain) = self.output.take()
            && parts.status.is_success()
        {
            let remaining = self.timeout.saturating_sub(self.started.elapsed());
            let apply = Box::pin(chain.apply(&mut parts.headers, body));
            body = match tokio::time::timeout(remaining, apply).await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return self.fail(EdgeError::Filter(e)),
                Err(_) => {
                    let e = listener_timeout(self.timeout, "the output filters");
                    return self.fail(e);
                }
            };
        }
        self.body(parts, body)
    }

    /// The answer as it is (no output filters), its body bounded by the listener timeout.
    fn send(mut self, res: Response<Inner>) -> Response<ResponseBody> {
        let (mut parts, body) = res.into_parts();
        self.head(&mut parts);
        self.body(parts, body)
    }

    /// Hop-by-hop headers out, the request id in, the status noted for the access log.
    fn head(&mut self, parts: &mut http::response::Parts) {
        forward::strip_hop_by_hop(&mut parts.headers);
        self.record.status = parts.status.as_u16();
        parts.headers.insert(
            plano_common::request_id::X_REQUEST_ID,
            self.request_id.clone(),
        );
    }

    fn body(self, parts: http::response::Parts, body: Inner) -> Response<ResponseBody> {
        let Finish {
            record,
            in_flight,
            timeout,
            started,
            egress_wait,
            ..
        } = self;
        if let Some(waited) = egress_wait {
            let own = started.elapsed().saturating_sub(waited);
            static OVERHEAD: std::sync::LazyLock<metrics::Histogram> = std::sync::LazyLock::new(
                || metrics::histogram!(plano_common::metrics::OVERHEAD_SECONDS, "component" => "edge"),
            );
            OVERHEAD.record(own.as_secs_f64());
        }
        let deadline = tokio::time::sleep(timeout.saturating_sub(started.elapsed()));
        let streaming = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
        let route = record.route;
        let mut body = ResponseBody::new(body, Some(deadline), record, in_flight);
        if streaming {
            body = body.with_timeout_event(crate::error::stream_timeout_event(route, timeout));
        }
        Response::from_parts(parts, body)
    }

    /// The edge's own error answer instead.
    fn fail(self, e: EdgeError) -> Response<ResponseBody> {
        local(e, self.shape, self.record, &self.request_id, self.in_flight)
    }
}

fn listener<'c>(config: &'c Config, name: &str) -> Option<&'c Listener> {
    config.inbound_listeners().find(|l| l.name == name)
}

/// The listener settings a request uses, owned: a `&Listener` held across the filter
/// awaits trips rustc's `Send` inference for the connection future ("not general
/// enough"). Empty filter lists do not allocate.
struct Settings {
    timeout: std::time::Duration,
    max_body: usize,
    input_filters: Vec<String>,
    output_filters: Vec<String>,
}

impl Settings {
    fn of(listener: Option<&Listener>, method: &http::Method) -> Self {
        let Some(l) = listener else {
            return Settings {
                timeout: std::time::Duration::from_secs(30),
                max_body: 10 * 1024 * 1024,
                input_filters: Vec::new(),
                output_filters: Vec::new(),
            };
        };
        // Filters apply to the chat APIs (POST); `GET /v1/models` has no body to guard.
        let filtered = method == http::Method::POST;
        Settings {
            timeout: l.timeout,
            max_body: l.max_body_bytes,
            input_filters: if filtered {
                l.input_filters.clone()
            } else {
                Vec::new()
            },
            output_filters: if filtered {
                l.output_filters.clone()
            } else {
                Vec::new()
            },
        }
    }
}

fn listener_timeout(limit: std::time::Duration, waiting_on: &'static str) -> EdgeError {
    EdgeError::Timeout { waiting_on, limit }
}

/// `POST` bodies of the chat APIs are JSON. A content type that cannot carry JSON (a form
/// upload, XML, media) is refused with 415 instead of failing later as "invalid JSON".
/// No content type, `application/json`, any `+json`, `text/plain`, and
/// `application/x-www-form-urlencoded` (what `curl -d` sends unless told otherwise) pass:
/// clients in the wild send those with JSON bodies.
fn check_content_type(
    method: &http::Method,
    route: &str,
    headers: &http::HeaderMap,
) -> Result<(), EdgeError> {
    if method != http::Method::POST || route == "/v1/models" {
        return Ok(());
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("");
    // Compared without case and without a lowercased copy: most requests say
    // `application/json`, which this decides at once.
    let essence = text.split(';').next().unwrap_or("").trim();
    let (kind, sub) = essence.split_once('/').unwrap_or((essence, ""));
    let is = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    let refused = !is(essence, "application/json")
        && (["multipart", "image", "audio", "video", "font", "model"]
            .iter()
            .any(|k| is(kind, k))
            || ["application/xml", "text/xml", "text/html"]
                .iter()
                .any(|e| is(essence, e))
            || (is(kind, "application")
                && sub.len() >= 4
                && sub
                    .get(sub.len() - 4..)
                    .is_some_and(|tail| is(tail, "+xml"))));
    if refused {
        let shown: String = text.chars().take(64).collect();
        return Err(EdgeError::UnsupportedMediaType(shown));
    }
    Ok(())
}

/// An answer the edge gives itself (error bodies in the client's API shape).
fn local(
    err: EdgeError,
    shape: ApiShape,
    mut record: AccessRecord,
    request_id: &HeaderValue,
    in_flight: InFlight,
) -> Response<ResponseBody> {
    let status = err.status();
    record.status = status.as_u16();
    record.error = err.reason();
    let mut res = Response::new(ResponseBody::new(
        ResponseBody::full(err.body(shape)),
        None,
        record,
        in_flight,
    ));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut().insert("x-request-id", request_id.clone());
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_that_cannot_carry_json_are_refused_in_any_case() {
        let post = http::Method::POST;
        let check = |ct: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            check_content_type(&post, "/v1/chat/completions", &h).is_ok()
        };
        for ok in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/vnd.api+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "",
            "application/xm",
        ] {
            assert!(check(ok), "{ok}");
        }
        for refused in [
            "multipart/form-data; boundary=x",
            "Image/PNG",
            "audio/ogg",
            "video/mp4",
            "font/woff",
            "model/gltf+json",
            "application/xml",
            "TEXT/XML",
            " text/html ; charset=utf-8",
            "application/atom+XML",
        ] {
            assert!(!check(refused), "{refused}");
        }
        let mut h = http::HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
        assert!(check_content_type(&http::Method::GET, "/v1/chat/completions", &h).is_ok());
        assert!(check_content_type(&post, "/v1/models", &h).is_ok());
    }
}
