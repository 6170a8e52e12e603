//! `plano-egress`: see `plano-egress --help`. Everything lives in the libraries so tests
//! can run the same code in-process.

use std::process::ExitCode;

use plano_common::{Component, cli};

fn main() -> ExitCode {
    cli::main(Component::Egress, |ctx| Box::pin(plano_egress::run(ctx)))
}
