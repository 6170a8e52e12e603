//! The allocator's memory: transparent huge pages (off by default) and handing freed memory
//! back to the OS when a worker thread goes idle.
//!
//! ## Transparent huge pages
//!
//! Off for the process unless `MIMALLOC_ALLOW_THP` turns them on.
//!
//! With huge pages the binaries' RSS grows and stays in 2 MiB steps: measured on the egress
//! (BENCHMARKS.md "Memory"), 10,000 idle keep-alive connections took ~132 MiB with them and
//! ~80 MiB without; after 1,000 streams the kernel's `khugepaged` kept collapsing the freed,
//! sparse ranges back into huge pages, so RSS *rose* while the process was idle. What they
//! bought in CPU per request was within the machine's noise (`bench/thp.sh`). So they are off,
//! in two parts: the binaries build mimalloc with its `no_thp` feature (it never
//! `madvise(MADV_HUGEPAGE)`s its arenas, so a kernel whose THP mode is `madvise` gives it none,
//! from the first allocation on), and at start this sets `prctl(PR_SET_THP_DISABLE)` for the
//! process, which also covers a THP mode of `always` (mimalloc does the same itself with
//! `MIMALLOC_ALLOW_THP=0`). A flag set at start, not before the first allocation: under
//! `always`, what was touched before it may already be in huge pages (a few MiB at most).
//!
//! `MIMALLOC_ALLOW_THP=1` (or `true`, `on`, `yes`) skips the `prctl`: the process then gets
//! huge pages where the kernel's mode is `always` (not under `madvise`, as mimalloc no longer
//! asks for them). For a deployment that measured a gain from them on its own hardware.
//!
//! ## Collecting on park (`PLANO_ALLOC_COLLECT`)
//!
//! mimalloc hands a thread's freed pages back to the OS only when that thread allocates
//! again (or collects). After a burst (1,000 streams), the Tokio workers that served it park
//! with their freed pages still mapped: the egress stayed ~35 MiB above idle for minutes
//! (BENCHMARKS.md "Memory"). So the runtime's `on_thread_park` hook ([`on_park`], installed by
//! `cli::build_runtime`) calls `mi_collect(false)` for the parking thread, at most once per
//! [`COLLECT_INTERVAL`] per thread: the throttle is one read of the monotonic clock per park
//! (vDSO, no system call), so a busy worker that parks thousands of times a second collects
//! once a second. `mi_collect(false)` frees the thread's empty pages and purges what the
//! arenas have had free for longer than mimalloc's purge delay; `true` would also walk the
//! full pages and purge at once (more work per call, for no measured gain: BENCHMARKS.md).
//!
//! `PLANO_ALLOC_COLLECT=0` (or `off`, `false`, `no`) does not install the hook; unset, `1`,
//! `on`, `true`, `yes` install it; anything else stops the binary at start (exit 78).
//!
//! The collection is the workspace's only `unsafe` code (the FFI call in [`collect_now`]; the
//! lint is `deny`, not `forbid`, for that one `allow`, and `tests/unsafe_guard.rs` fails on
//! any other). Built with the `system-allocator` feature (heap profilers; the binaries'
//! feature of the same name turns it on here) nothing calls mimalloc: [`collect_now`] is a
//! no-op there.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// What to do about transparent huge pages, from `MIMALLOC_ALLOW_THP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thp {
    /// Disable them for the process (the default).
    Off,
    /// Leave them to the kernel's THP mode.
    Allowed,
}

impl Thp {
    /// Reads `MIMALLOC_ALLOW_THP`: `1`, `true`, `on`, `yes` (any case) or another positive
    /// number allow huge pages; unset, `0` or anything else (a typo included) does not.
    pub fn from_env(value: Option<&str>) -> Thp {
        let Some(v) = value.map(str::trim) else {
            return Thp::Off;
        };
        let on = ["1", "true", "on", "yes"]
            .iter()
            .any(|w| v.eq_ignore_ascii_case(w))
            || v.parse::<u64>().is_ok_and(|n| n > 0);
        if on { Thp::Allowed } else { Thp::Off }
    }
}

/// Applies `MIMALLOC_ALLOW_THP` to this process (see the module's documentation) and says
/// what it did, for the start-up log. An error means huge pages stay as the kernel has them.
pub fn apply_thp_setting() -> std::io::Result<Thp> {
    let thp = Thp::from_env(std::env::var("MIMALLOC_ALLOW_THP").ok().as_deref());
    if thp == Thp::Off {
        disable_thp()?;
    }
    Ok(thp)
}

#[cfg(target_os = "linux")]
fn disable_thp() -> std::io::Result<()> {
    rustix::thread::disable_transparent_huge_pages(true).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn disable_thp() -> std::io::Result<()> {
    Ok(())
}

/// The environment variable that turns the collection on park off.
pub const COLLECT_ENV: &str = "PLANO_ALLOC_COLLECT";

/// At most one collection per worker thread in this interval.
pub const COLLECT_INTERVAL: Duration = Duration::from_secs(1);

/// Whether idle worker threads hand their freed memory back ([`COLLECT_ENV`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    /// `mi_collect(false)` when a worker parks, at most once per [`COLLECT_INTERVAL`] (default).
    OnPark,
    /// Never: freed memory stays with the thread until it allocates again.
    Off,
}

impl Collect {
    /// Parses [`COLLECT_ENV`]: unset, empty, `1`, `on`, `true`, `yes` collect; `0`, `off`,
    /// `false`, `no` do not (any case); anything else is an error (the binaries exit 78).
    pub fn from_env(value: Option<&str>) -> Result<Collect, String> {
        let v = value.map_or("", str::trim);
        let is = |words: &[&str]| words.iter().any(|w| v.eq_ignore_ascii_case(w));
        if v.is_empty() || is(&["1", "on", "true", "yes"]) {
            Ok(Collect::OnPark)
        } else if is(&["0", "off", "false", "no"]) {
            Ok(Collect::Off)
        } else {
            Err(format!(
                "{v:?} is neither on (1, on, true, yes) nor off (0, off, false, no)"
            ))
        }
    }
}

thread_local! {
    /// When this thread last collected.
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
    /// How many times this thread collected (for tests: the hook is installed and runs).
    static COLLECTIONS: Cell<u64> = const { Cell::new(0) };
}

/// The runtime's `on_thread_park` hook: collects this thread's freed memory unless it did
/// less than [`COLLECT_INTERVAL`] ago.
pub fn on_park() {
    let now = Instant::now();
    let due = LAST_COLLECT.with(|last| {
        let due = last
            .get()
            .is_none_or(|t| now.saturating_duration_since(t) >= COLLECT_INTERVAL);
        if due {
            last.set(Some(now));
        }
        due
    });
    if due {
        collect_now();
        COLLECTIONS.with(|c| c.set(c.get().wrapping_add(1)));
    }
}

/// How many times [`on_park`] collected on the calling thread.
pub fn thread_collections() -> u64 {
    COLLECTIONS.with(Cell::get)
}

/// Frees the calling thread's empty mimalloc pages and purges expired free arena memory.
#[cfg(not(feature = "system-allocator"))]
#[allow(
    unsafe_code,
    reason = "the one FFI call to mimalloc's mi_collect (ARCHITECTURE.md, \"unsafe\")"
)]
pub fn collect_now() {
    // SAFETY: `mi_collect(bool)` takes a plain bool and has no preconditions: no pointer
    // in, none out, callable at any time from any thread (also one that never allocated
    // with mimalloc: it then returns at once). It is thread-safe: it walks only the calling
    // thread's own heap (pages no other thread frees from, except through mimalloc's atomic
    // thread-free lists) and the shared arenas, which mimalloc synchronises itself. It does
    // not free blocks still in use, so no Rust reference can dangle.
    unsafe { libmimalloc_sys::mi_collect(false) }
}

/// The `system-allocator` build: mimalloc is not the allocator, nothing to collect.
#[cfg(feature = "system-allocator")]
pub fn collect_now() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_pages_are_off_unless_the_variable_turns_them_on() {
        assert_eq!(Thp::from_env(None), Thp::Off);
        for off in ["0", "", "false", "off", "no", "banana", "-1"] {
            assert_eq!(Thp::from_env(Some(off)), Thp::Off, "{off:?}");
        }
        for on in ["1", "true", "ON", "Yes", " 1 ", "2"] {
            assert_eq!(Thp::from_env(Some(on)), Thp::Allowed, "{on:?}");
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn disabling_sets_the_process_flag() {
        // The flag is per process and only ever set by this test binary's processes here.
        disable_thp().expect("prctl(PR_SET_THP_DISABLE)");
        assert!(rustix::thread::transparent_huge_pages_are_disabled().expect("prctl"));
    }

    #[test]
    fn plano_alloc_collect_is_on_unless_turned_off_and_refuses_typos() {
        for on in [
            None,
            Some(""),
            Some("1"),
            Some(" ON "),
            Some("true"),
            Some("Yes"),
        ] {
            assert_eq!(Collect::from_env(on), Ok(Collect::OnPark), "{on:?}");
        }
        for off in ["0", "off", "FALSE", "no", " 0 "] {
            assert_eq!(Collect::from_env(Some(off)), Ok(Collect::Off), "{off:?}");
        }
        for bad in ["2", "-1", "of", "banana"] {
            assert!(Collect::from_env(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_thread_collects_at_its_first_park_then_at_most_once_per_interval() {
        // A fresh thread: its first park collects, the next ones within the interval do not.
        std::thread::spawn(|| {
            assert_eq!(thread_collections(), 0);
            on_park();
            assert_eq!(thread_collections(), 1);
            for _ in 0..1000 {
                on_park();
            }
            assert_eq!(thread_collections(), 1);
            // Once the interval has passed, the next park collects again.
            LAST_COLLECT.with(|l| l.set(Instant::now().checked_sub(COLLECT_INTERVAL)));
            on_park();
            assert_eq!(thread_collections(), 2);
        })
        .join()
        .expect("thread");
    }
}
