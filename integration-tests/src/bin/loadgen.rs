//! `loadgen`: the benchmark's load generator, so direct, egress and nginx runs are measured
//! by the same client.
//!
//! - `--mode rate`: open loop at `--rate` requests/s for `--seconds`; latency is measured
//!   from each request's *scheduled* start, so a stall is not hidden (no coordinated
//!   omission).
//! - `--mode max`: closed loop with `--concurrency` workers; reports throughput.
//! - `--mode ttft`: streaming requests with `--concurrency` workers; reports time to the
//!   first SSE event and to the end.
//!
//! Prints one JSON object on stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Mutex;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long, default_value = "rate")]
    mode: String,
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// PEM CA to trust for https:// URLs.
    #[arg(long)]
    ca: Option<std::path::PathBuf>,
    /// Request body shape: `chat` (OpenAI chat completions) or `messages` (Anthropic).
    #[arg(long, default_value = "chat")]
    api: String,
    /// The `model` the request body names.
    #[arg(long, default_value = "gpt-4o-mini")]
    model: String,
    /// Extra request header, `name: value` (repeatable).
    #[arg(long = "header")]
    headers: Vec<String>,
}

type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

fn connector(
    ca: Option<&std::path::Path>,
) -> anyhow::Result<hyper_rustls::HttpsConnector<HttpConnector>> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca {
        for cert in rustls_pemfile::certs(&mut std::fs::read(path)?.as_slice()) {
            roots.add(cert?)?;
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http))
}

fn body(api: &str, model: &str, stream: bool) -> Bytes {
    let mut body = serde_json::json!({
        "model": model,
        "stream": stream,
        "messages": [{"role": "user", "content": "Say hello in one short sentence, please."}]
    });
    if api == "messages" {
        body["max_tokens"] = serde_json::json!(256);
    }
    Bytes::from(body.to_string())
}

/// One request; returns (time to first body byte, total time) on a 200.
async fn one(
    client: &HttpClient,
    url: &str,
    headers: &[(String, String)],
    payload: Bytes,
    start: Instant,
) -> Option<(Duration, Duration)> {
    let mut req = http::Request::post(url).header("content-type", "application/json");
    for (name, value) in headers {
        req = req.header(name.as_str(), value.as_str());
    }
    let req = req.body(Full::new(payload)).ok()?;
    let res = client.request(req).await.ok()?;
    if res.status() != 200 {
        return None;
    }
    let mut body = res.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        if first.is_none() && frame.data_ref().is_some_and(|d| !d.is_empty()) {
            first = Some(start.elapsed());
        }
    }
    Some((first.unwrap_or_else(|| start.elapsed()), start.elapsed()))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1e3
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector(args.ca.as_deref())?);
    let url: Arc<str> = args.url.clone().into();
    let whole = body(&args.api, &args.model, false);
    let streamed = body(&args.api, &args.model, true);
    let headers: Arc<[(String, String)]> = args
        .headers
        .iter()
        .map(|h| match h.split_once(':') {
            Some((n, v)) => Ok((n.trim().to_string(), v.trim().to_string())),
            None => Err(anyhow::anyhow!("--header {h:?}: expected `name: value`")),
        })
        .collect::<anyhow::Result<Vec<_>>>()?
        .into();
    let lat = Arc::new(Mutex::new(Vec::<(Duration, Duration)>::new()));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let run_for = Duration::from_secs(args.seconds);
    let began = Instant::now();
    match args.mode.as_str() {
        "rate" => {
            let interval = Duration::from_secs_f64(1.0 / args.rate as f64);
            let total = args.rate * args.seconds;
            let mut handles = Vec::with_capacity(total as usize);
            for i in 0..total {
                let scheduled = began + interval.mul_f64(i as f64);
                tokio::time::sleep_until(scheduled.into()).await;
                let (client, url, lat, errors, payload, headers) = (
                    client.clone(),
                    url.clone(),
                    lat.clone(),
                    errors.clone(),
                    whole.clone(),
                    headers.clone(),
                );
                handles.push(tokio::spawn(async move {
                    match one(&client, &url, &headers, payload, scheduled).await {
                        Some(t) => lat.lock().await.push(t),
                        None => {
                            errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }));
            }
            for h in handles {
                let _ = h.await;
            }
        }
        "max" | "ttft" => {
            let stream = args.mode == "ttft";
            let mut workers = Vec::new();
            for _ in 0..args.concurrency {
                let (client, url, lat, errors, headers) = (
                    client.clone(),
                    url.clone(),
                    lat.clone(),
                    errors.clone(),
                    headers.clone(),
                );
                let payload = if stream {
                    streamed.clone()
                } else {
                    whole.clone()
                };
                workers.push(tokio::spawn(async move {
                    let mut mine = Vec::new();
                    while began.elapsed() < run_for {
                        match one(&client, &url, &headers, payload.clone(), Instant::now()).await {
                            Some(t) => mine.push(t),
                            None => {
                                errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                        }
                    }
                    lat.lock().await.extend(mine);
                }));
            }
            for w in workers {
                let _ = w.await;
            }
        }
        other => anyhow::bail!("unknown mode {other}"),
    }
    let elapsed = began.elapsed().as_secs_f64();
    let samples = lat.lock().await;
    let mut first: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut total: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    first.sort();
    total.sort();
    let out = serde_json::json!({
        "mode": args.mode,
        "ok": samples.len(),
        "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
        "rps": samples.len() as f64 / elapsed,
        "p50_ms": pct(&total, 0.5),
        "p99_ms": pct(&total, 0.99),
        "max_ms": pct(&total, 1.0),
        "first_p50_ms": pct(&first, 0.5),
        "first_p99_ms": pct(&first, 0.99),
    });
    let mut stdout = std::io::stdout().lock();
    std::io::Write::write_all(&mut stdout, format!("{out}\n").as_bytes())?;
    Ok(())
}
