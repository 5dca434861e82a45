//! `kubectl-datajob`, the kubectl plugin: `kubectl datajob cancel|get|list|describe|logs`.
//! Install with `cargo install --path .` (kubectl finds `kubectl-datajob` on PATH).

use std::process::ExitCode;

use clap::Parser;
use datajob_operator::plugin::{Cli, run};

#[tokio::main]
async fn main() -> ExitCode {
    run(Cli::parse()).await
}
