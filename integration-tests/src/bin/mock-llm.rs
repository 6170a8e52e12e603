//! `mock-llm`: a local zero-key LLM provider for the quick start, benchmarks and SDK tests.
//! Answers in each provider's own API: `POST …/chat/completions` (OpenAI), `…/messages`
//! (Anthropic), `…/responses` (OpenAI Responses), `…/model/{id}/converse[-stream]`
//! (Bedrock). See `integration_tests::mock` for what it answers.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use integration_tests::mock::{MockOptions, MockProvider};

#[derive(Parser)]
#[command(about = "A zero-key mock LLM provider (OpenAI, Anthropic, Responses, Bedrock APIs)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:11434")]
    listen: SocketAddr,
    /// Shorthand for `--listen 127.0.0.1:PORT`.
    #[arg(long, conflicts_with = "listen")]
    port: Option<u16>,
    /// Delay before each answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Approximate size of a non-streaming plain chat completion, in bytes.
    #[arg(long, default_value_t = 1024)]
    body_bytes: usize,
    /// Filler chunks (`tok0 ` …) after the reply in a streaming plain chat completion.
    #[arg(long, default_value_t = 5)]
    chunks: usize,
    /// Delay between streamed chunks, in milliseconds.
    #[arg(long, default_value_t = 0)]
    chunk_delay_ms: u64,
    /// Reject requests without an auth header, and Anthropic requests without
    /// `anthropic-version` or `max_tokens`, as the real APIs do.
    #[arg(long)]
    strict: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let workers = std::env::var("MOCK_WORKERS")
        .ok()
        .and_then(|w| w.parse().ok())
        .unwrap_or(1);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(async {
            let options = MockOptions {
                delay: Duration::from_millis(args.delay_ms),
                body_bytes: args.body_bytes,
                chunks: args.chunks,
                chunk_delay: Duration::from_millis(args.chunk_delay_ms),
                strict: args.strict,
                record: false,
            };
            let listen = args
                .port
                .map_or(args.listen, |p| SocketAddr::from(([127, 0, 0, 1], p)));
            let mock = MockProvider::start_on(listen, options).await?;
            eprintln!("mock-llm listening on {}", mock.url());
            tokio::signal::ctrl_c().await?;
            Ok(())
        })
}
