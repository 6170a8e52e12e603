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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Request, Response, header};
use http_body_util::BodyExt;
use plano_common::errors::ApiShape;
use plano_common::filters::FilterCtx;
use plano_config::{Config, Listener};

use crate::access_log::AccessRecord;
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
}

pub(crate) async fn handle(
    edge: Arc<Edge>,
    info: Arc<ListenerInfo>,
    peer: SocketAddr,
    https: bool,
    req: Request<plano_common::listen::RequestBody>,
) -> Response<ResponseBody> {
    use tracing::Instrument;
    // The request's server span: parented to the client's `traceparent`, carried by the
    // access record so it ends with the response body.
    let span = plano_common::telemetry::server_span(
        "edge",
        forward::route_for(req.uri().path()).unwrap_or(""),
        &req,
        &plano_common::telemetry::SpanAttributes::of(edge.config.load().tracing.as_ref()),
    );
    handle_in_span(edge, info, peer, https, req, span.clone())
        .instrument(span)
        .await
}

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
    let config = edge.config.load_full();
    let path = req.uri().path().to_string();
    let shape = ApiShape::for_path(&path);
    let route = forward::route_for(&path);
    let mut record = AccessRecord {
        request_id: request_id.to_str().unwrap_or("-").to_string(),
        listener: info.name.clone(),
        method: req.method().clone(),
        path: crate::access_log::bounded_path(&path).into_owned(),
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
    } = Settings::of(listener(&config, &info.name), req.method());

    // 1. auth: first, so a client without a valid key learns nothing, not even which
    //    paths exist (401 before 404).
    let client_auth = || listener(&config, &info.name).and_then(|l| l.auth.as_ref());
    if let Err(e) = auth::check(client_auth(), req.headers()) {
        return local(e, shape, record, &request_id, in_flight);
    }
    // 2. route
    let Some(route_template) = route else {
        let e = EdgeError::NoRoute {
            method: req.method().clone(),
            path: crate::access_log::bounded_path(&path).into_owned(),
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
        let bytes = match crate::body::read_request(body, max_body).await {
            Ok(b) => b,
            Err(e) => return local(e, shape, record, &request_id, in_flight),
        };
        let ctx = FilterCtx {
            path: &path,
            headers: &parts.headers,
            request_id: &request_id,
        };
        let chain = edge.filters.run_input(&config, &input_filters, &ctx, bytes);
        let remaining = timeout.saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, chain).await {
            Ok(Ok(new)) => {
                parts.headers.remove(header::TRANSFER_ENCODING);
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(new.len()));
                ResponseBody::full(new)
            }
            Ok(Err(e)) => {
                record.upstream = "filter";
                let e = EdgeError::Filter(e.to_api_error(shape));
                return local(e, shape, record, &request_id, in_flight);
            }
            Err(_) => {
                let e = listener_timeout(timeout, "the input filters");
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
    // 5. agents / prompt targets
    let owner = listener(&config, &info.name)
        .zip(route)
        .and_then(|(l, route)| route::owner(l, &config, route));
    if let Some(owner) = owner {
        let remaining = timeout.saturating_sub(started.elapsed());
        let read = tokio::time::timeout(remaining, crate::body::read_request(body, max_body));
        let parsed = match read.await {
            Ok(Ok(bytes)) => calls::parse_request_json(&bytes),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(listener_timeout(timeout, "the request body")),
        };
        let body = match parsed {
            Ok(b) => b,
            Err(e) => return local(e, shape, record, &request_id, in_flight),
        };
        let Some(l) = listener(&config, &info.name) else {
            return local(
                EdgeError::ListenerRemoved,
                shape,
                record,
                &request_id,
                in_flight,
            );
        };
        let ctx = route::RouteCtx {
            edge: &edge,
            config: &config,
            listener: l,
            request_id: &request_id,
            headers: &parts.headers,
            uri: &parts.uri,
            client: &ClientInfo { peer, https },
            deadline: route::deadline(started, timeout),
            body,
        };
        let routed = match owner {
            route::Owner::Agents => agents::handle(ctx).await,
            route::Owner::PromptTargets => prompt_targets::handle(ctx).await,
        };
        record.upstream = routed.upstream;
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
        return finish.respond(routed.response).await;
    }
    // 6. egress health
    let status = edge.egress.borrow().clone();
    if !status.up {
        let e = EdgeError::EgressUnavailable(status.detail);
        return local(e, shape, record, &request_id, in_flight);
    }
    // 7. forward
    let upstream = match forward::upstream_request(
        Request::from_parts(parts, body),
        &config.egress.url,
        &request_id,
        &ClientInfo { peer, https },
    ) {
        Ok(r) => r,
        Err(e) => {
            let e = EdgeError::CannotForward(e.to_string());
            return local(e, shape, record, &request_id, in_flight);
        }
    };
    record.upstream = "egress";
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
                return local(client, shape, record, &request_id, in_flight);
            }
            let chain = plano_common::errors::error_chain(&e);
            tracing::warn!(listener = %info.name, error = %chain, "egress request failed");
            return local(
                EdgeError::EgressUnreachable,
                shape,
                record,
                &request_id,
                in_flight,
            );
        }
        Err(_) => {
            let e = listener_timeout(timeout, "the model egress");
            return local(e, shape, record, &request_id, in_flight);
        }
    };
    // 8. respond
    let waited = sent.elapsed();
    let (parts, body) = res.into_parts();
    let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    let finish = Finish {
        record,
        in_flight,
        request_id,
        shape,
        timeout,
        started,
        output,
        egress_wait: Some(waited),
    };
    finish.respond(Response::from_parts(parts, body)).await
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
    /// Output filters on a successful answer, then the body bounded by the listener timeout.
    async fn respond(self, res: Response<Inner>) -> Response<ResponseBody> {
        let Finish {
            mut record,
            in_flight,
            request_id,
            shape,
            timeout,
            started,
            output,
            egress_wait,
        } = self;
        let (mut parts, mut body) = res.into_parts();
        forward::strip_hop_by_hop(&mut parts.headers);
        record.status = parts.status.as_u16();
        parts.headers.insert("x-request-id", request_id.clone());
        if let Some(chain) = output
            && parts.status.is_success()
        {
            let remaining = timeout.saturating_sub(started.elapsed());
            body = match tokio::time::timeout(remaining, chain.apply(&mut parts.headers, body))
                .await
            {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    return local(EdgeError::Filter(e), shape, record, &request_id, in_flight);
                }
                Err(_) => {
                    let e = listener_timeout(timeout, "the output filters");
                    return local(e, shape, record, &request_id, in_flight);
                }
            };
        }
        if let Some(waited) = egress_wait {
            let own = started.elapsed().saturating_sub(waited);
            metrics::histogram!(plano_common::metrics::OVERHEAD_SECONDS, "component" => "edge")
                .record(own.as_secs_f64());
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
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (kind, sub) = essence.split_once('/').unwrap_or((essence.as_str(), ""));
    let refused = matches!(
        kind,
        "multipart" | "image" | "audio" | "video" | "font" | "model"
    ) || matches!(
        essence.as_str(),
        "application/xml" | "text/xml" | "text/html"
    ) || (kind == "application" && sub.ends_with("+xml"));
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
