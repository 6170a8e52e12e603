//! The command line both binaries share (README.md, docs/deployment.md) and the process
//! lifecycle around a component's `run`.
//!
//! Lifecycle: parse args → load the config (invalid: every problem on stderr, exit 78) →
//! `--check` runs the binary's own checks (files and credentials its start reads; a
//! failure exits 78), prints the summary and exits 0 → logging (with the OpenTelemetry layer when
//! `tracing:` or an OTLP endpoint variable asks for it) → log config warnings once → start
//! the Tokio runtime and the trace exporter → bind the admin port → spawn `run(ctx)` and
//! the reloader → wait for SIGTERM/SIGINT → report NOT_SERVING, trigger shutdown, give
//! `run` the grace period to drain → close the admin port → flush traces → drop the runtime
//! → write the buffered access-log lines (`logging::flush`) → exit 0.
//!
//! Readiness: `run` marks itself ready with [`Context::mark_serving`] once its listeners
//! are bound; only `run` knows when it can take traffic.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::logging::{self, LogFormat};
use crate::reload::Reloader;
use crate::runtime::{Component, Context, DEFAULT_GRACE};
use crate::telemetry::{Telemetry, TraceSettings};

/// `sysexits.h` EX_CONFIG: the configuration is invalid.
pub const EXIT_CONFIG: u8 = 78;
/// Start-up failed for another reason (admin port taken, runtime could not start…).
pub const EXIT_FAILURE: u8 = 1;

/// What a binary hands to [`main`]: its library's `run`.
pub type RunFn = fn(Context) -> BoxFuture<'static, anyhow::Result<()>>;

/// What a binary checks of a valid config beyond the loader's validation, for `--check`:
/// the files and credentials its start would read (TLS certificates, CA files, provider
/// credential files), with the same code its start runs, so `--check` fails where the
/// start would.
pub type CheckFn = fn(&plano_config::Config) -> anyhow::Result<()>;

/// A binary's two entry points into its library.
#[derive(Clone, Copy)]
pub struct Binary {
    pub check: CheckFn,
    pub run: RunFn,
}

#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Args {
    /// Config file. Default: ./plano_config.yaml if it exists, else ./config.yaml.
    #[arg(long, short = 'c', env = "PLANO_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Validate the config, print a summary and exit (0 valid, 78 invalid).
    #[arg(long)]
    pub check: bool,

    /// Log format: human-readable or one JSON object per line.
    #[arg(long, value_enum, default_value_t = LogFormat::Pretty, env = "PLANO_LOG_FORMAT", global = true)]
    pub log_format: LogFormat,

    /// Reload the config when the file changes (SIGHUP always reloads).
    #[arg(long)]
    pub watch: bool,

    /// How long in-flight requests (streams included) get to finish after SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    pub grace: Duration,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask a running instance's gRPC health service; exit 0 when SERVING, 1 otherwise
    /// (for Docker HEALTHCHECK).
    Health {
        /// Admin address (HOST:PORT). Default: the config's admin address for this binary.
        #[arg(long)]
        addr: Option<String>,
        /// Health service to ask about; default "" (the whole process).
        #[arg(long, default_value = "")]
        service: String,
    },
}

/// Entry point for a binary: `plano_common::cli::main(Component::Egress, Binary { check, run })`.
pub fn main(component: Component, binary: Binary) -> ExitCode {
    // The binary's own name in `--help` and `--version` (the derive would say plano-common).
    let name = service_name(component);
    let matches = Args::command()
        .name(name)
        .bin_name(name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(match component {
            Component::Edge => "Plano's inbound proxy: TLS, client auth, filters, routing to agents and prompt targets",
            Component::Egress => "Plano's model proxy: one OpenAI-compatible endpoint in front of many LLM providers",
        })
        .get_matches();
    match Args::from_arg_matches(&matches) {
        Ok(args) => main_with(component, args, binary),
        Err(e) => e.exit(),
    }
}

/// [`main`] with already parsed arguments.
pub fn main_with(component: Component, args: Args, binary: Binary) -> ExitCode {
    if let Some(Command::Health { addr, service }) = &args.command {
        logging::init(args.log_format);
        return health_command(
            component,
            args.config.clone(),
            addr.clone(),
            service.clone(),
        );
    }

    let path = args
        .config
        .clone()
        .unwrap_or_else(plano_config::default_config_path);
    let config = match plano_config::load_file(&path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{}: {errors}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.check {
        if let Err(e) = (binary.check)(&config) {
            eprintln!("{}: {e:#}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
        print_summary(&path, &config.summary());
        for w in &config.warnings {
            eprintln!("warning: {w}");
        }
        return ExitCode::SUCCESS;
    }
    // Tracing settings are read once, at start (a reload does not change them).
    let telemetry = TraceSettings::resolve(config.tracing.as_ref(), &TraceSettings::process_env)
        .map(|settings| Telemetry::new(service_name(component), &settings));
    logging::init_with(args.log_format, telemetry.as_ref());
    for w in &config.warnings {
        tracing::warn!(warning = %w, "config");
    }
    // Connection caps, not the kernel's descriptor limit, decide when to refuse clients.
    match crate::listen::raise_file_limit() {
        Ok((before, after)) => tracing::info!(before, after, "open-files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
    }
    // Transparent huge pages off unless MIMALLOC_ALLOW_THP turns them on (memory.rs).
    match crate::memory::apply_thp_setting() {
        Ok(crate::memory::Thp::Off) => tracing::info!(
            "transparent huge pages off for this process (MIMALLOC_ALLOW_THP=1 allows them)"
        ),
        Ok(crate::memory::Thp::Allowed) => {
            tracing::info!("transparent huge pages allowed (MIMALLOC_ALLOW_THP)");
        }
        Err(e) => tracing::warn!(error = %e, "cannot turn transparent huge pages off"),
    }

    if let Err(e) = crate::logging::sink::check_env() {
        eprintln!("{}: {e}", crate::logging::sink::FLUSH_ENV);
        return ExitCode::from(EXIT_CONFIG);
    }
    let workers = match Workers::from_env(std::env::var("PLANO_WORKERS").ok().as_deref()) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("PLANO_WORKERS: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let collect = match crate::memory::Collect::from_env(
        std::env::var(crate::memory::COLLECT_ENV).ok().as_deref(),
    ) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{}: {e}", crate::memory::COLLECT_ENV);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let threads = workers.threads(available_cpus());
    let runtime = match build_runtime(component, threads, collect) {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    tracing::info!(
        workers = threads,
        runtime = if threads == 1 {
            "current_thread"
        } else {
            "multi_thread"
        },
        collect_on_park = collect == crate::memory::Collect::OnPark,
        "async runtime"
    );
    let code = runtime.block_on(async {
        if let Some(t) = &telemetry
            && let Err(e) = t.start()
        {
            tracing::error!(
                error = format!("{e:#}"),
                "cannot set up trace export; traces are not exported"
            );
        }
        let code = serve(component, path, config, &args, binary.run, stop_signal).await;
        if let Some(t) = &telemetry {
            t.shutdown(TRACE_FLUSH_TIMEOUT).await;
        }
        code
    });
    // Connections still open log their access lines as the runtime drops them; then write
    // every buffered line (logging.rs) before the process exits.
    drop(runtime);
    logging::flush();
    ExitCode::from(code)
}

/// The `PLANO_WORKERS` setting: how many threads run requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workers {
    /// One per CPU the process may use (affinity mask and cgroup CPU quota).
    Auto,
    /// Exactly this many (at least 1).
    Fixed(usize),
}

impl Workers {
    /// Parses `PLANO_WORKERS`: unset, empty or `auto`, or a positive number.
    pub fn from_env(value: Option<&str>) -> Result<Workers, String> {
        match value.map(str::trim) {
            None | Some("") => Ok(Workers::Auto),
            Some(v) if v.eq_ignore_ascii_case("auto") => Ok(Workers::Auto),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(Workers::Fixed(n)),
                _ => Err(format!(
                    "{v:?} is not a number of threads (a whole number from 1, or `auto`)"
                )),
            },
        }
    }

    /// The number of worker threads given the CPUs available.
    pub fn threads(self, cpus: usize) -> usize {
        match self {
            Workers::Auto => cpus.max(1),
            Workers::Fixed(n) => n,
        }
    }
}

/// CPUs this process may run on (affinity mask, cgroup quota), 1 when unknown.
pub fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The async runtime for `threads` worker threads. One thread: a current-thread runtime
/// (everything on the main thread, no work-stealing queues or cross-thread wake-ups;
/// measured in BENCHMARKS.md, "Lane R"). More: Tokio's multi-thread runtime with that many
/// workers. Blocking work (`spawn_blocking`) has its own pool either way.
///
/// With [`Collect::OnPark`](crate::memory::Collect) a thread that runs requests hands its
/// freed memory back to the OS when it parks (at most once a second, `memory.rs`). Only the
/// threads that run tasks park: the blocking pool's threads need no hook, they exit after
/// 10 s without work and mimalloc collects a thread's heap when it exits.
pub fn build_runtime(
    component: Component,
    threads: usize,
    collect: crate::memory::Collect,
) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    if collect == crate::memory::Collect::OnPark {
        builder.on_thread_park(crate::memory::on_park);
    }
    builder.enable_all().thread_name(component.name()).build()
}

/// How long the last spans get to reach the collector at exit.
const TRACE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The OpenTelemetry `service.name` of a binary.
pub fn service_name(component: Component) -> &'static str {
    match component {
        Component::Edge => "plano-edge",
        Component::Egress => "plano-egress",
    }
}

#[allow(
    clippy::print_stdout,
    reason = "`--check` output is the command's result"
)]
fn print_summary(path: &std::path::Path, summary: &str) {
    println!("{}: configuration is valid", path.display());
    println!("{summary}");
}

/// Everything after the config is loaded, with the stop signals as a parameter so tests
/// can drive the lifecycle without sending signals to themselves. `signals` is called once
/// for the first stop request and once more during the drain (a second signal cuts it
/// short). Returns the process exit code.
pub async fn serve<S, F>(
    component: Component,
    path: PathBuf,
    config: plano_config::Config,
    args: &Args,
    run: RunFn,
    signals: S,
) -> u8
where
    S: Fn() -> F,
    F: Future<Output = &'static str>,
{
    let admin_addr = admin_address(component, &config);
    let (ctx, control) = Context::new(component, config, args.grace);

    // The admin port outlives the drain: probes and scrapes keep getting answers
    // (NOT_SERVING) until `run` has finished.
    let admin_stop = CancellationToken::new();
    let admin = match crate::admin::bind_with(
        admin_addr,
        ctx.health.clone(),
        ctx.metrics.clone(),
        admin_stop.clone(),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(addr = %admin_addr, error = %e, "cannot bind the admin port");
            return EXIT_FAILURE;
        }
    };

    let reloader = Reloader::new(path, plano_config::load_file, control.config);
    reloader.spawn(args.watch, control.shutdown.clone());

    tracing::info!(
        component = component.name(),
        version = env!("CARGO_PKG_VERSION"),
        "starting"
    );
    let mut task = tokio::spawn(run(ctx.clone()));

    let code = tokio::select! {
        signal = signals() => {
            tracing::info!(signal, grace = ?ctx.shutdown.grace(), "shutting down: draining in-flight requests");
            ctx.mark_not_serving();
            control.shutdown.trigger();
            tokio::select! {
                result = &mut task => finished(result),
                _ = tokio::time::sleep(ctx.shutdown.grace()) => {
                    tracing::warn!(grace = ?ctx.shutdown.grace(), "grace period over: abandoning requests still in flight");
                    task.abort();
                    0
                }
                signal = signals() => {
                    tracing::warn!(signal, "second signal: stopping without waiting for in-flight requests");
                    task.abort();
                    0
                }
            }
        }
        result = &mut task => {
            // `run` ended without being asked to: an error exits non-zero.
            ctx.mark_not_serving();
            control.shutdown.trigger();
            finished(result)
        }
    };

    admin_stop.cancel();
    admin.stopped().await;
    tracing::info!(component = component.name(), code, "stopped");
    code
}

fn finished(result: Result<anyhow::Result<()>, tokio::task::JoinError>) -> u8 {
    match result {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            tracing::error!(error = format!("{e:#}"), "stopped with an error");
            EXIT_FAILURE
        }
        Err(e) => {
            tracing::error!(error = %e, "the server task failed");
            EXIT_FAILURE
        }
    }
}

fn admin_address(component: Component, config: &plano_config::Config) -> SocketAddr {
    match component {
        Component::Edge => config.admin.edge,
        Component::Egress => config.admin.egress,
    }
}

/// Resolves with the signal's name on SIGTERM or SIGINT.
pub async fn stop_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            },
            _ => {
                tracing::warn!("cannot listen for SIGTERM/SIGINT; only Ctrl-C stops the process");
                let _ = tokio::signal::ctrl_c().await;
                "Ctrl-C"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

/// `plano-<component> health`: one gRPC Check against the admin port.
fn health_command(
    component: Component,
    config: Option<PathBuf>,
    addr: Option<String>,
    service: String,
) -> ExitCode {
    let addr = match addr {
        Some(a) => a,
        None => {
            let path = config.unwrap_or_else(plano_config::default_config_path);
            match plano_config::load_file(&path) {
                Ok(c) => admin_address(component, &c).to_string(),
                Err(errors) => {
                    eprintln!(
                        "cannot find the admin address: pass --addr, or fix {}: {errors}",
                        path.display()
                    );
                    return ExitCode::from(EXIT_FAILURE);
                }
            }
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match runtime.block_on(check_health(&addr, &service)) {
        Ok(status) if status == "SERVING" => ExitCode::SUCCESS,
        Ok(status) => {
            eprintln!("{addr}: service {service:?} is {status}");
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("{addr}: health check failed: {e:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// gRPC `Check` of `service` at `addr` (`HOST:PORT` or a URL); returns the status name.
pub async fn check_health(addr: &str, service: &str) -> anyhow::Result<String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;

    const TIMEOUT: Duration = Duration::from_secs(3);
    let url = if addr.contains("://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    let channel = tonic::transport::Endpoint::from_shared(url)?
        .connect_timeout(TIMEOUT)
        .timeout(TIMEOUT)
        .connect()
        .await?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_string(),
        })
        .await?;
    let status =
        ServingStatus::try_from(response.into_inner().status).unwrap_or(ServingStatus::Unknown);
    Ok(status.as_str_name().to_string())
}

impl Default for Args {
    fn default() -> Self {
        Self {
            config: None,
            check: false,
            log_format: LogFormat::Pretty,
            watch: false,
            grace: DEFAULT_GRACE,
            command: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::Collect;
    use crate::test_support::bare_config;
    use clap::CommandFactory;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::time::Instant;

    fn config_on_port_0() -> plano_config::Config {
        let mut c = bare_config();
        c.admin.edge = "127.0.0.1:0".parse().unwrap();
        c.admin.egress = "127.0.0.1:0".parse().unwrap();
        c
    }

    fn stubborn(ctx: Context) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.mark_serving();
            std::future::pending().await
        })
    }

    fn polite(ctx: Context) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            ctx.mark_serving();
            ctx.shutdown.requested().await;
            Ok(())
        })
    }

    fn failing(_ctx: Context) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async { anyhow::bail!("listener address already in use") })
    }

    /// Stop signals arriving at the given (paused-clock) delays; later calls never fire.
    fn signals_after(delays: &'static [u64]) -> impl Fn() -> BoxFuture<'static, &'static str> {
        let calls = Arc::new(AtomicUsize::new(0));
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                match delays.get(n) {
                    Some(secs) => {
                        tokio::time::sleep(Duration::from_secs(*secs)).await;
                        "TEST"
                    }
                    None => std::future::pending().await,
                }
            })
        }
    }

    fn args(grace_secs: u64) -> Args {
        Args {
            grace: Duration::from_secs(grace_secs),
            ..Args::default()
        }
    }

    async fn serve_with(run: RunFn, grace: u64, delays: &'static [u64]) -> (u8, Duration) {
        let start = Instant::now();
        let code = serve(
            Component::Egress,
            "/nonexistent/plano.yaml".into(),
            config_on_port_0(),
            &args(grace),
            run,
            signals_after(delays),
        )
        .await;
        (code, start.elapsed())
    }

    #[tokio::test(start_paused = true)]
    async fn a_polite_run_stops_at_once_with_exit_0() {
        let (code, took) = serve_with(polite, 30, &[1]).await;
        assert_eq!(code, 0);
        assert!(took < Duration::from_secs(30), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_run_that_ignores_shutdown_is_abandoned_after_the_grace_period() {
        let (code, took) = serve_with(stubborn, 10, &[1]).await;
        assert_eq!(code, 0);
        assert!(took >= Duration::from_secs(11), "{took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_cuts_the_drain_short() {
        let (code, took) = serve_with(stubborn, 600, &[1, 2]).await;
        assert_eq!(code, 0);
        assert!(took < Duration::from_secs(600), "{took:?}");
    }

    #[tokio::test]
    async fn a_run_that_fails_exits_non_zero() {
        let (code, _) = serve_with(failing, 30, &[]).await;
        assert_eq!(code, EXIT_FAILURE);
    }

    #[tokio::test]
    async fn a_taken_admin_port_exits_non_zero() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut config = config_on_port_0();
        config.admin.egress = taken.local_addr().unwrap();
        let code = serve(
            Component::Egress,
            "/nonexistent/plano.yaml".into(),
            config,
            &args(1),
            polite,
            signals_after(&[]),
        )
        .await;
        assert_eq!(code, EXIT_FAILURE);
    }

    #[test]
    fn plano_workers_is_auto_or_a_positive_number() {
        assert_eq!(Workers::from_env(None), Ok(Workers::Auto));
        assert_eq!(Workers::from_env(Some("")), Ok(Workers::Auto));
        assert_eq!(Workers::from_env(Some("AUTO")), Ok(Workers::Auto));
        assert_eq!(Workers::from_env(Some(" 4 ")), Ok(Workers::Fixed(4)));
        assert!(Workers::from_env(Some("0")).is_err());
        assert!(Workers::from_env(Some("-1")).is_err());
        assert!(Workers::from_env(Some("two")).is_err());
        assert_eq!(Workers::Auto.threads(1), 1);
        assert_eq!(Workers::Auto.threads(8), 8);
        assert_eq!(Workers::Auto.threads(0), 1);
        assert_eq!(Workers::Fixed(3).threads(1), 3);
    }

    #[test]
    fn one_worker_is_a_current_thread_runtime_more_is_multi_thread() {
        use tokio::runtime::RuntimeFlavor;
        let one = build_runtime(Component::Egress, 1, Collect::OnPark).unwrap();
        assert_eq!(one.handle().runtime_flavor(), RuntimeFlavor::CurrentThread);
        // Spawned tasks and timers run on it while `block_on` drives it.
        let got = one.block_on(async {
            let t = tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                7
            });
            t.await.unwrap()
        });
        assert_eq!(got, 7);
        let two = build_runtime(Component::Edge, 2, Collect::Off).unwrap();
        assert_eq!(two.handle().runtime_flavor(), RuntimeFlavor::MultiThread);
        assert_eq!(two.metrics().num_workers(), 2);
    }

    /// The runtime's threads collect when they park (the hook is installed), and do not
    /// with `PLANO_ALLOC_COLLECT=0`. Counts are per thread, so tests running alongside
    /// cannot make this pass.
    #[test]
    fn the_runtime_threads_collect_when_they_park_unless_turned_off() {
        use crate::memory::thread_collections;
        // One worker: a current-thread runtime parks the thread that calls `block_on`.
        let one = std::thread::spawn(|| {
            let rt = build_runtime(Component::Egress, 1, Collect::OnPark).unwrap();
            rt.block_on(async { tokio::time::sleep(Duration::from_millis(20)).await });
            thread_collections()
        });
        assert!(
            one.join().unwrap() >= 1,
            "the current-thread runtime did not collect"
        );

        // Several: a worker that has parked once has collected. Each check runs on some
        // worker after a sleep (which parks them all); bounded, not timed: at most 200 tries.
        let two = build_runtime(Component::Edge, 2, Collect::OnPark).unwrap();
        let collected = two.block_on(async {
            for _ in 0..200 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                let n = tokio::spawn(async { thread_collections() }).await.unwrap();
                if n >= 1 {
                    return true;
                }
            }
            false
        });
        assert!(collected, "no worker of the multi-thread runtime collected");

        let off = build_runtime(Component::Edge, 2, Collect::Off).unwrap();
        let counts = off.block_on(async {
            let mut counts = Vec::new();
            for _ in 0..20 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                counts.push(tokio::spawn(async { thread_collections() }).await.unwrap());
            }
            counts
        });
        assert!(
            counts.iter().all(|n| *n == 0),
            "collected while off: {counts:?}"
        );
    }

    #[test]
    fn args_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_flags() {
        let a = Args::try_parse_from([
            "plano-egress",
            "--config",
            "x.yaml",
            "--check",
            "--log-format",
            "json",
            "--watch",
            "--grace",
            "5s",
        ])
        .unwrap();
        assert_eq!(a.config, Some(PathBuf::from("x.yaml")));
        assert!(a.check && a.watch);
        assert_eq!(a.log_format, LogFormat::Json);
        assert_eq!(a.grace, Duration::from_secs(5));

        let h = Args::try_parse_from(["plano-edge", "health", "--addr", "127.0.0.1:9901"]).unwrap();
        assert!(matches!(
            h.command,
            Some(Command::Health { addr: Some(ref a), ref service }) if a == "127.0.0.1:9901" && service.is_empty()
        ));
        assert!(Args::try_parse_from(["plano-edge", "--grace", "soon"]).is_err());
        assert!(Args::try_parse_from(["plano-edge", "--log-format", "xml"]).is_err());
    }
}
