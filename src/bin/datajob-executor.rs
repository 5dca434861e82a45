//! `datajob-executor`: the reference executor image's program (see
//! `datajob_operator::reference_executor` and docs/executor.md).

use std::process::ExitCode;

const HELP: &str = "\
datajob-executor: the reference executor of datajob-operator.

It reads its job from the DATAJOB_* environment the operator sets, logs to stdout, writes its
result or failure JSON to the termination-message path and exits; on SIGTERM it stops and exits
143. Knobs (through spec.executor.env): EXECUTOR_WORK_SECONDS, EXECUTOR_OUTCOME (succeed|fail),
EXECUTOR_RESULT, EXECUTOR_SNAPSHOT_ID, EXECUTOR_FAILURE_REASON, EXECUTOR_FAILURE_MESSAGE,
EXECUTOR_EXIT_CODE, EXECUTOR_SHUTDOWN_SECONDS, EXECUTOR_TERMINATION_MESSAGE_PATH.
See docs/executor.md.";

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        None => {}
        Some("--version" | "-V") => {
            println!("datajob-executor {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Some("--help" | "-h") => {
            println!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Some(other) => {
            eprintln!("unexpected argument {other:?}; it takes none\n\n{HELP}");
            return ExitCode::from(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    ExitCode::from(runtime.block_on(datajob_operator::reference_executor::run_with_process_env()))
}
