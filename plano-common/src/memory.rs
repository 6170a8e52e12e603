//! Transparent huge pages: off for the process unless `MIMALLOC_ALLOW_THP` turns them on.
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
}
