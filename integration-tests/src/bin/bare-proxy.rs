//! The floor under the egress: Plano's listener (`plano_common::listen`) and upstream pool
//! (`PooledClient`) with nothing between them — no parsing, selection, limits, metrics or
//! logs. `bench/floor.sh` runs it in bench/run.sh's setup, so the distance from the egress to
//! this floor is what Plano's own request path costs, and the distance from this floor to
//! nginx is what the shared plumbing (hyper, tokio, the pool) costs. Not a product: it
//! forwards every request, whatever its path, to one upstream.
//!
//!   bare-proxy --listen 127.0.0.1:12001 --upstream http://127.0.0.1:8080

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use plano_common::http_client::{HttpClientBuilder, PooledBody, PooledClient};
use plano_common::listen::{self, ListenOptions, Plain, RequestBody};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Upstream origin (`http://host:port`); the client's path is appended.
    #[arg(long)]
    upstream: String,
    /// Worker threads (1: tokio's current-thread runtime, as the binaries on one core).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

type Answer = Either<PooledBody, Full<Bytes>>;

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The runtime the binaries build, with their default (idle workers collect).
    let runtime = plano_common::cli::build_runtime(
        plano_common::runtime::Component::Egress,
        args.threads,
        plano_common::memory::Collect::OnPark,
    )?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client: PooledClient<Full<Bytes>> =
        HttpClientBuilder::new(Duration::from_secs(5)).build_pooled()?;
    let upstream: &'static str = Box::leak(args.upstream.trim_end_matches('/').into());
    let tcp = tokio::net::TcpListener::bind(args.listen).await?;
    let opts = ListenOptions {
        component: "egress",
        listener: "bare".into(),
        max_connections: 10_000,
        header_read_timeout: Duration::from_secs(30),
        body_idle_timeout: Duration::from_secs(30),
        keepalive_timeout: Duration::from_secs(60),
    };
    let handler = move |req: Request<RequestBody>, _peer: SocketAddr| {
        let client = client.clone();
        async move { forward(&client, upstream, req).await }
    };
    listen::serve(tcp, opts, Plain, CancellationToken::new(), handler).await;
    Ok(())
}

async fn forward(
    client: &PooledClient<Full<Bytes>>,
    upstream: &str,
    req: Request<RequestBody>,
) -> Response<Answer> {
    let (parts, body) = req.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return refuse(StatusCode::BAD_REQUEST);
    };
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Ok(uri) = format!("{upstream}{path}").parse::<http::Uri>() else {
        return refuse(StatusCode::BAD_REQUEST);
    };
    let mut up = Request::new(Full::new(body));
    *up.method_mut() = parts.method;
    *up.uri_mut() = uri;
    *up.headers_mut() = parts.headers;
    up.headers_mut().remove(header::HOST);
    up.headers_mut().remove(header::CONNECTION);
    match client.request(up).await {
        Ok(res) => res.map(Either::Left),
        Err(_) => refuse(StatusCode::BAD_GATEWAY),
    }
}

fn refuse(status: StatusCode) -> Response<Answer> {
    let mut res = Response::new(Either::Right(Full::new(Bytes::new())));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    res
}
