//! The ingress request path, one function, phases in order:
//!
//! 1. route: only the chat APIs are forwarded (`forward::ROUTES`); anything else is 404;
//! 2. limits: a declared body over the listener's `max_body_bytes` is 413 at once, and the
//!    streamed body is cut at that size;
//! 3. auth: `auth.api_keys` (401), then the client's key is removed;
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
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use plano_common::errors::{ApiError, ApiShape};
use plano_common::filters::{FilterCtx, FilterRunner};
use plano_common::peer::PeerStatus;
use plano_config::{Config, Listener};
use tokio::sync::watch;

use crate::access_log::AccessRecord;
use crate::body::{BoxError, Inner, ResponseBody};
use crate::forward::{self, ClientInfo};
use crate::listener::InFlight;
use crate::{agents, calls, prompt_targets, route};
use crate::{auth, forward::Client};
use plano_common::filters::output::OutputChain;

/// What every request on every listener shares.
pub struct Edge {
    pub config: ArcSwap<Config>,
    pub client: Client,
    /// Filter chains (HTTP client and MCP sessions shared by every listener and agent).
    pub filters: Arc<FilterRunner>,
    pub egress: watch::Receiver<PeerStatus>,
    pub in_flight: Arc<AtomicUsize>,
    /// Clients for prompt-target endpoints (by connect timeout).
    pub endpoint_clients: crate::calls::ClientCache,
}

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
        path: path.clone(),
        route: route.unwrap_or("other"),
        status: 0,
        bytes_out: 0,
        started: std::time::Instant::now(),
        upstream: "-",
        completed: false,
    };
    let Settings {
        timeout,
        max_body,
        input_filters,
        output_filters,
    } = Settings::of(listener(&config, &info.name), req.method());

    // 1. route
    if route.is_none() {
        let e = ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {} {path}", req.method()),
        )
        .with_shape(shape);
        return local(e, record, &request_id, in_flight);
    }
    // 2. limits
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max_body) {
        let e = ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("request body is larger than the limit of {max_body} bytes"),
        )
        .with_shape(shape);
        return local(e, record, &request_id, in_flight);
    }
    // 3. auth
    let client_auth = || listener(&config, &info.name).and_then(|l| l.auth.as_ref());
    if let Err(e) = auth::check(client_auth(), req.headers(), shape) {
        return local(e, record, &request_id, in_flight);
    }
    let (mut parts, body) = req.into_parts();
    if client_auth().is_some() {
        auth::strip(&mut parts.headers);
    }
    let body: Inner = http_body_util::Limited::new(body, max_body)
        .map_err(|e| -> BoxError { e })
        .boxed_unsync();
    // 4. input filters
    let body = if input_filters.is_empty() {
        body
    } else {
        let bytes = match crate::body::read_request(body, max_body, shape).await {
            Ok(b) => b,
            Err(e) => return local(e, record, &request_id, in_flight),
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
                return local(e.to_api_error(shape), record, &request_id, in_flight);
            }
            Err(_) => {
                let e = listener_timeout(timeout, "the input filters").with_shape(shape);
                return local(e, record, &request_id, in_flight);
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
        let read =
            tokio::time::timeout(remaining, crate::body::read_request(body, max_body, shape));
        let parsed = match read.await {
            Ok(Ok(bytes)) => calls::parse_request_json(&bytes),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(listener_timeout(timeout, "the request body")),
        };
        let body = match parsed {
            Ok(b) => b,
            Err(e) => return local(e.with_shape(shape), record, &request_id, in_flight),
        };
        let Some(l) = listener(&config, &info.name) else {
            return local(listener_gone(), record, &request_id, in_flight);
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
        };
        return finish.respond(routed.response).await;
    }
    // 6. egress health
    let status = edge.egress.borrow().clone();
    if !status.up {
        let e = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "egress_unavailable",
            format!(
                "the model egress is not available ({}); try again shortly",
                status.detail
            ),
        )
        .with_shape(shape);
        return local(e, record, &request_id, in_flight);
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
            let e = ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("cannot forward this request: {e}"),
            )
            .with_shape(shape);
            return local(e, record, &request_id, in_flight);
        }
    };
    record.upstream = "egress";
    let remaining = timeout.saturating_sub(started.elapsed());
    let res = match tokio::time::timeout(remaining, edge.client.request(upstream)).await {
        Ok(Ok(res)) => res,
        Ok(Err(e)) => {
            tracing::warn!(listener = %info.name, error = %e, "egress request failed");
            let e = ApiError::new(
                StatusCode::BAD_GATEWAY,
                "egress_unreachable",
                "the model egress could not be reached",
            )
            .with_shape(shape);
            return local(e, record, &request_id, in_flight);
        }
        Err(_) => {
            let e = listener_timeout(timeout, "the model egress").with_shape(shape);
            return local(e, record, &request_id, in_flight);
        }
    };
    // 8. respond
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
                Ok(Err(e)) => return local(e, record, &request_id, in_flight),
                Err(_) => {
                    let e = listener_timeout(timeout, "the output filters").with_shape(shape);
                    return local(e, record, &request_id, in_flight);
                }
            };
        }
        let deadline = tokio::time::sleep(timeout.saturating_sub(started.elapsed()));
        Response::from_parts(
            parts,
            ResponseBody::new(body, Some(deadline), record, in_flight),
        )
    }
}

/// A reload removed the listener while its request was being read.
fn listener_gone() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "listener_removed",
        "this listener was removed by a configuration reload",
    )
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

fn listener_timeout(timeout: std::time::Duration, waiting_on: &str) -> ApiError {
    ApiError::new(
        StatusCode::GATEWAY_TIMEOUT,
        "timeout",
        format!("no answer from {waiting_on} within the listener timeout of {timeout:?}"),
    )
}

/// An answer the edge gives itself (error bodies in the client's API shape).
fn local(
    err: ApiError,
    mut record: AccessRecord,
    request_id: &HeaderValue,
    in_flight: InFlight,
) -> Response<ResponseBody> {
    let status = err.status;
    record.status = status.as_u16();
    let mut res = Response::new(ResponseBody::new(
        ResponseBody::full(err.body()),
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
