//! The ingress request path, one function, phases in order:
//!
//! 1. route: only the chat APIs are forwarded (`forward::ROUTES`); anything else is 404;
//! 2. limits: a declared body over the listener's `max_body_bytes` is 413 at once, and the
//!    streamed body is cut at that size;
//! 3. auth: `auth.api_keys` (401), then the client's key is removed;
//! 4. route to agents / prompt targets: on `agent` and `prompt` listeners the edge answers
//!    chat completions itself (`route.rs`); everything else goes on to the egress;
//! 5. egress health: when the watcher says the egress is down, 503 at once, without a try;
//! 6. forward to `egress.url`, bodies streamed both ways (502 when the egress cannot be
//!    reached);
//! 7. respond, bounded by the listener `timeout`; the access log is written when the body
//!    ends (`body.rs`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use plano_common::errors::{ApiError, ApiShape};
use plano_common::peer::PeerStatus;
use plano_config::{Config, Listener};
use tokio::sync::watch;

use crate::access_log::AccessRecord;
use crate::body::{BoxError, Inner, ResponseBody};
use crate::forward::{self, ClientInfo};
use crate::listener::InFlight;
use crate::{agents, calls, prompt_targets, route};
use crate::{auth, forward::Client};

/// What every request on every listener shares.
pub struct Edge {
    pub config: ArcSwap<Config>,
    pub client: Client,
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
    req: Request<Incoming>,
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
    let listener: Option<&Listener> = config.inbound_listeners().find(|l| l.name == info.name);
    let (timeout, max_body, client_auth) = listener.map_or(
        (std::time::Duration::from_secs(30), 10 * 1024 * 1024, None),
        |l| (l.timeout, l.max_body_bytes, l.auth.as_ref()),
    );

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
    if let Err(e) = auth::check(client_auth, req.headers(), shape) {
        return local(e, record, &request_id, in_flight);
    }
    let (mut parts, body) = req.into_parts();
    if client_auth.is_some() {
        auth::strip(&mut parts.headers);
    }
    // 4. agents / prompt targets
    if let (Some(l), Some(route)) = (listener, route)
        && let Some(owner) = route::owner(l, &config, route)
    {
        let deadline = tokio::time::Instant::from_std(started) + timeout;
        let body = match calls::read_request_json(
            body,
            max_body,
            timeout.saturating_sub(started.elapsed()),
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return local(e.with_shape(shape), record, &request_id, in_flight),
        };
        let ctx = route::RouteCtx {
            edge: &edge,
            config: &config,
            listener: l,
            request_id: &request_id,
            headers: &parts.headers,
            uri: &parts.uri,
            client: &ClientInfo { peer, https },
            deadline,
            body,
        };
        let routed = match owner {
            route::Owner::Agents => agents::handle(ctx).await,
            route::Owner::PromptTargets => prompt_targets::handle(ctx).await,
        };
        record.upstream = routed.upstream;
        return respond(
            routed.response,
            record,
            &request_id,
            in_flight,
            timeout,
            started,
        );
    }
    // 5. egress health
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
    // 6. forward
    let body: Inner = http_body_util::Limited::new(body, max_body)
        .map_err(|e| -> BoxError { e })
        .boxed_unsync();
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
            let e = ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "timeout",
                format!(
                    "no answer from the model egress within the listener timeout of {timeout:?}"
                ),
            )
            .with_shape(shape);
            return local(e, record, &request_id, in_flight);
        }
    };
    // 7. respond
    let (parts, body) = res.into_parts();
    let body = body.map_err(|e| -> BoxError { Box::new(e) }).boxed_unsync();
    respond(
        Response::from_parts(parts, body),
        record,
        &request_id,
        in_flight,
        timeout,
        started,
    )
}

/// An upstream answer on its way to the client, its body bounded by the listener timeout.
fn respond(
    res: Response<Inner>,
    mut record: AccessRecord,
    request_id: &HeaderValue,
    in_flight: InFlight,
    timeout: std::time::Duration,
    started: Instant,
) -> Response<ResponseBody> {
    let (mut parts, body) = res.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    record.status = parts.status.as_u16();
    parts.headers.insert("x-request-id", request_id.clone());
    let deadline = tokio::time::sleep(timeout.saturating_sub(started.elapsed()));
    Response::from_parts(
        parts,
        ResponseBody::new(body, Some(deadline), record, in_flight),
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
