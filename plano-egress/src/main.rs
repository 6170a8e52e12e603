//! `plano-egress`: see `plano-egress --help`. Everything lives in the libraries so tests
//! can run the same code in-process.

use std::process::ExitCode;

use plano_common::Component;
use plano_common::cli::{self, Binary};

// glibc's allocator spent about a fifth of the egress's CPU under load (malloc_consolidate
// and friends, measured with perf); mimalloc is the allocator of the binaries only, so the
// libraries and tests keep the system one.
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    cli::main(
        Component::Egress,
        Binary {
            check: plano_egress::check,
            run: |ctx| Box::pin(plano_egress::run(ctx)),
        },
    )
}
