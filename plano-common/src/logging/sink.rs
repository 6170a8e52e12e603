//! Where log lines go: stderr, with access-log lines batched.
//!
//! Every line but an access-log line (target [`ACCESS_TARGET`]) is written at once, as
//! before. Access-log lines are appended to a buffer that a thread writes out when it holds
//! [`FLUSH_AT`] bytes or [`Sink::interval`] after its first line (default
//! [`DEFAULT_FLUSH_INTERVAL`]), so one `write(2)` carries many lines — nginx's
//! `access_log … buffer= flush=`. Any other line first writes out the access lines before it,
//! so the order of lines on stderr is the order they were logged. [`flush`] writes what is
//! left; the binaries call it when they stop (after the runtime, whose connections log as
//! they close, is gone) and the panic hook calls it.
//!
//! A request never waits for stderr: appending takes a lock that is never held across a
//! write. When stderr does not keep up (a stalled pipe, a blocked terminal) and the buffer
//! reaches [`MAX_BUFFERED`], further access lines are dropped and counted
//! (`plano_access_log_lines_dropped_total`, and a warning once the buffer is written).

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

use super::ACCESS_TARGET;

/// Bytes of access lines that make the flusher write at once (about 250 lines).
pub const FLUSH_AT: usize = 64 * 1024;
/// Bytes of access lines held while stderr does not keep up; lines beyond are dropped.
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;
/// How long an access line waits at most before it is written (without `PLANO_ACCESS_LOG_FLUSH_MS`).
pub const DEFAULT_FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// The environment variable that sets the interval in milliseconds; `0` writes every access
/// line at once (no buffering).
pub const FLUSH_ENV: &str = "PLANO_ACCESS_LOG_FLUSH_MS";

/// The output of the lines: stderr in the binaries, a shared buffer in tests.
pub type Output = Box<dyn Write + Send>;

pub struct Sink {
    /// Access lines not yet written.
    pending: Mutex<Vec<u8>>,
    /// Wakes the flusher: the buffer got its first line, or reached [`FLUSH_AT`].
    wake: Condvar,
    /// The output and a spare buffer, held while writing: writes happen one at a time, in
    /// the order their lines were taken from `pending`.
    out: Mutex<(Output, Vec<u8>)>,
    /// None: every line is written at once.
    interval: Option<Duration>,
    dropped: AtomicU64,
}

impl Sink {
    pub fn new(output: Output, interval: Option<Duration>) -> Self {
        Self {
            pending: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            out: Mutex::new((output, Vec::new())),
            interval,
            dropped: AtomicU64::new(0),
        }
    }

    /// The flush interval from [`FLUSH_ENV`] (`0` = none); unset: the default. A value that
    /// is not a number also gives the default here: the binaries refuse to start with one
    /// ([`check_env`], exit 78), after logging is set up.
    pub fn interval_from_env() -> Option<Duration> {
        parse_interval(std::env::var(FLUSH_ENV).ok().as_deref())
            .unwrap_or(Some(DEFAULT_FLUSH_INTERVAL))
    }

    pub fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn pending(&self) -> MutexGuard<'_, Vec<u8>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Buffer one access line (never waits for the output).
    fn push(&self, line: &[u8]) {
        let mut pending = self.pending();
        let before = pending.len();
        if before + line.len() > MAX_BUFFERED {
            drop(pending);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(crate::metrics::ACCESS_LOG_LINES_DROPPED_TOTAL).increment(1);
            return;
        }
        pending.extend_from_slice(line);
        let after = pending.len();
        drop(pending);
        // The flusher waits for the first line, then for the buffer to fill: wake it only
        // then (a notify is a futex call), not for every line.
        if before == 0 || (before < FLUSH_AT && after >= FLUSH_AT) {
            self.wake.notify_one();
        }
    }

    /// Write the buffered access lines, then `line` (any other line), now.
    fn write_through(&self, line: &[u8]) {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let (output, spare) = &mut *out;
        {
            let mut pending = self.pending();
            if !pending.is_empty() {
                std::mem::swap(&mut *pending, spare);
            }
        }
        if spare.is_empty() {
            let _ = output.write_all(line);
        } else {
            spare.extend_from_slice(line);
            let _ = output.write_all(spare);
            spare.clear();
        }
        let _ = output.flush();
    }

    /// Write every buffered access line now.
    pub fn flush(&self) {
        self.write_through(&[]);
    }

    /// [`Sink::flush`] unless another thread is writing (the panic hook: never wait on a
    /// lock that a panicking writer may hold).
    fn try_flush(&self) {
        if let Ok(mut out) = self.out.try_lock() {
            let (output, spare) = &mut *out;
            if let Ok(mut pending) = self.pending.try_lock() {
                std::mem::swap(&mut *pending, spare);
            }
            let _ = output.write_all(spare);
            spare.clear();
            let _ = output.flush();
        }
    }

    /// The flusher's loop: wait for a first line, then until the buffer fills or the
    /// interval is over, then write.
    fn run_flusher(&self, interval: Duration) {
        loop {
            let mut pending = self.pending();
            while pending.is_empty() {
                pending = self
                    .wake
                    .wait(pending)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let deadline = Instant::now() + interval;
            while pending.len() < FLUSH_AT {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                pending = self
                    .wake
                    .wait_timeout(pending, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            drop(pending);
            self.flush();
            let dropped = self.dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                tracing::warn!(
                    dropped,
                    "access log lines dropped: stderr did not keep up (plano_access_log_lines_dropped_total)"
                );
            }
        }
    }
}

/// The interval a [`FLUSH_ENV`] value asks for: unset is the default, `0` none (every line
/// at once), otherwise whole milliseconds.
fn parse_interval(value: Option<&str>) -> Result<Option<Duration>, String> {
    let Some(v) = value else {
        return Ok(Some(DEFAULT_FLUSH_INTERVAL));
    };
    match v.trim().parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(ms) => Ok(Some(Duration::from_millis(ms))),
        Err(_) => Err(format!(
            "{v:?} is not a whole number of milliseconds (0 writes every access line at once)"
        )),
    }
}

/// Checks [`FLUSH_ENV`] as the binaries start: a typo must not silently give the default.
pub fn check_env() -> Result<(), String> {
    parse_interval(std::env::var(FLUSH_ENV).ok().as_deref()).map(|_| ())
}

/// The binaries' sink (stderr), created by the first [`global`] call, with its flusher
/// thread when buffering is on.
static GLOBAL: OnceLock<Sink> = OnceLock::new();

/// The process's sink on stderr. Starts the flusher thread the first time; if the thread
/// cannot start, access lines are written at once.
pub fn global() -> &'static Sink {
    GLOBAL.get_or_init(|| {
        let mut interval = Sink::interval_from_env();
        if let Some(every) = interval {
            let started = std::thread::Builder::new()
                .name("plano-log-flush".into())
                .spawn(move || {
                    // The thread starts after `GLOBAL` is set (it needs the lock that
                    // `get_or_init` holds), so this wait is short.
                    let sink = loop {
                        if let Some(s) = GLOBAL.get() {
                            break s;
                        }
                        std::thread::sleep(Duration::from_millis(1));
                    };
                    sink.run_flusher(every);
                });
            if started.is_err() {
                interval = None;
            }
        }
        Sink::new(Box::new(std::io::stderr()), interval)
    })
}

/// Write every buffered access line of the process's sink (when it stops). Lines logged
/// after this are still written (the next flush, or at once for other lines).
pub fn flush() {
    if let Some(sink) = GLOBAL.get() {
        sink.flush();
    }
}

/// Install a panic hook that writes the buffered access lines before the panic message.
pub(super) fn flush_on_panic() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(sink) = GLOBAL.get() {
            sink.try_flush();
        }
        previous(info)
    }));
}

/// The `fmt` layer's writer: access lines buffered, others written at once.
#[derive(Clone, Copy)]
pub struct SinkWriter<'a> {
    sink: &'a Sink,
    buffered: bool,
}

/// [`MakeWriter`] over a [`Sink`].
#[derive(Clone, Copy)]
pub struct MakeSinkWriter(pub &'static Sink);

impl<'a> MakeWriter<'a> for MakeSinkWriter {
    type Writer = SinkWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter {
            sink: self.0,
            buffered: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        SinkWriter {
            sink: self.0,
            buffered: self.0.interval.is_some() && meta.target() == ACCESS_TARGET,
        }
    }
}

impl Write for SinkWriter<'_> {
    /// The `fmt` layer writes each line with one `write_all`: take it whole.
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.buffered {
            self.sink.push(buf);
        } else {
            self.sink.write_through(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flush_interval_is_whole_milliseconds_or_refused() {
        assert_eq!(parse_interval(None), Ok(Some(DEFAULT_FLUSH_INTERVAL)));
        assert_eq!(parse_interval(Some("0")), Ok(None));
        assert_eq!(
            parse_interval(Some(" 250 ")),
            Ok(Some(Duration::from_millis(250)))
        );
        for bad in ["", "100ms", "-1", "1.5", "fast"] {
            assert!(parse_interval(Some(bad)).is_err(), "{bad:?}");
        }
    }
    use std::sync::Arc;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn leaked(out: &Shared, interval: Option<Duration>) -> &'static Sink {
        Box::leak(Box::new(Sink::new(Box::new(out.clone()), interval)))
    }

    fn write(make: &MakeSinkWriter, buffered: bool, line: &str) {
        let mut w = SinkWriter {
            sink: make.0,
            buffered,
        };
        w.write_all(line.as_bytes()).unwrap();
    }

    #[test]
    fn access_lines_wait_for_a_flush_other_lines_take_them_along_in_order() {
        let out = Shared::default();
        let make = MakeSinkWriter(leaked(&out, Some(Duration::from_secs(3600))));
        write(&make, true, "a1\n");
        write(&make, true, "a2\n");
        assert_eq!(out.text(), "", "access lines are buffered");
        write(&make, false, "other\n");
        assert_eq!(out.text(), "a1\na2\nother\n");
        write(&make, true, "a3\n");
        assert_eq!(out.text(), "a1\na2\nother\n");
        make.0.flush();
        assert_eq!(out.text(), "a1\na2\nother\na3\n");
    }

    #[test]
    fn the_flusher_writes_within_its_interval() {
        let out = Shared::default();
        let sink = leaked(&out, Some(Duration::from_millis(5)));
        std::thread::spawn(move || sink.run_flusher(Duration::from_millis(5)));
        let make = MakeSinkWriter(sink);
        write(&make, true, "late\n");
        // Not a timed assertion: wait (bounded) for the line to appear at all.
        let deadline = Instant::now() + Duration::from_secs(30);
        while out.text().is_empty() {
            assert!(Instant::now() < deadline, "the flusher never wrote");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(out.text(), "late\n");
    }

    #[test]
    fn a_full_buffer_drops_and_counts_instead_of_waiting() {
        let out = Shared::default();
        let sink = leaked(&out, Some(Duration::from_secs(3600)));
        let make = MakeSinkWriter(sink);
        let line = format!("{}\n", "x".repeat(1023));
        for _ in 0..(MAX_BUFFERED / 1024 + 10) {
            write(&make, true, &line);
        }
        assert_eq!(sink.dropped.load(Ordering::Relaxed), 10);
        sink.flush();
        assert_eq!(out.text().len(), MAX_BUFFERED);
    }
}
