//! Transparent huge pages: off for the process unless `MIMALLOC_ALLOW_THP` turns them on.
//!
//! The binaries' allocator (mimalloc v3) asks for huge pages on its arenas
//! (`madvise(MADV_HUGEPAGE)`, its `allow_thp` option, on by default), and a kernel whose THP
//! mode is `always` gives them without asking. Either way RSS grows and stays in 2 MiB steps:
//! measured on the egress (BENCHMARKS.md "Memory"), 10,000 idle keep-alive connections took
//! ~132 MiB with huge pages and ~80 MiB without; after 1,000 streams the kernel's
//! `khugepaged` kept collapsing the freed, sparse ranges back into huge pages, so RSS *rose*
//! while the process was idle. What huge pages bought in CPU per request was within the
//! machine's noise (`bench/thp.sh`). So the default is off, for the whole process, with
//! `prctl(PR_SET_THP_DISABLE)` — which covers mimalloc's `madvise` and a THP mode of
//! `always` alike, and is what mimalloc itself does when `MIMALLOC_ALLOW_THP=0`.
//!
//! `MIMALLOC_ALLOW_THP=1` (or `true`, `on`, `yes`) leaves the process as the kernel and
//! mimalloc would have it (mimalloc then `madvise`s its arenas again): the previous default,
//! for a deployment that measured a gain from huge pages.

/// What to do about transparent huge pages, from `MIMALLOC_ALLOW_THP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Thp {
    /// Disable them for the process (the default).
    Off,
    /// Leave them to the kernel's mode and mimalloc's `allow_thp` option.
    Allowed,
}

impl Thp {
    /// Reads `MIMALLOC_ALLOW_THP` as mimalloc does: `1`, `true`, `on`, `yes` (any case) or
    /// another positive number allow huge pages; unset, `0` or anything else does not.
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
