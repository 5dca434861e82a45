//! `kubectl-datajob`, the kubectl plugin (`kubectl datajob ...`): cancel, get/list, describe
//! and logs of DataJobs, with kubectl's `-n`, `-A`, `--context` and `--kubeconfig`.
//!
//! Exit codes (a script can rely on them): [`exit::OK`] 0 success; [`exit::ERROR`] 1 an error
//! (API, permission, not found); 2 a usage error (clap); [`exit::OTHER_STATE`] 3 `cancel`: a
//! job ended, or had already ended, in a state other than `cancelled`; [`exit::TIMEOUT`] 4
//! `cancel --wait`: the timeout passed first.

mod cancel;
mod describe;
mod format;
mod get;
mod logs;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::api::JobState;

pub use format::{age, parse_duration, parse_states};

/// Exit codes of the plugin.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// An error: API server, permission, a job that does not exist.
    pub const ERROR: u8 = 1;
    /// `cancel`: a job ended (or had ended) in a state other than `cancelled`.
    pub const OTHER_STATE: u8 = 3;
    /// `cancel --wait`: the timeout passed before every job was cancelled.
    pub const TIMEOUT: u8 = 4;
}

/// `kubectl datajob`: everyday DataJob commands.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-datajob",
    bin_name = "kubectl datajob",
    version,
    about = "Cancel, list, describe and read the logs of DataJobs",
    after_help = "Exit codes: 0 success; 1 error (API, permission, not found); 2 usage; \
                  3 cancel: a job ended in a state other than cancelled; \
                  4 cancel --wait: timeout."
)]
pub struct Cli {
    /// Namespace (default: the kubeconfig context's namespace, else `default`).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// Every namespace (get/list only).
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path of the kubeconfig (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

/// The plugin's commands.
#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Request cancellation (spec.cancel: true) of one or more DataJobs.
    Cancel {
        /// DataJobs to cancel.
        #[arg(required = true)]
        names: Vec<String>,
        /// Why (recorded in status.cancellation and in events).
        #[arg(long)]
        reason: Option<String>,
        /// Wait until every job is cancelled; exit 3 if one ends otherwise, 4 on timeout.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits (e.g. 90s, 5m, 1h).
        #[arg(long, default_value = "5m", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// List DataJobs, or show the named ones (alias: list).
    #[command(visible_alias = "list")]
    Get {
        /// DataJobs to show (default: all of the namespace).
        names: Vec<String>,
        /// Only jobs in these states (comma-separated or repeated): pending, running,
        /// pending_cancellation, cancelled, completed, failed; `active` = not finished,
        /// `finished` = completed, cancelled or failed.
        #[arg(long, short = 's', value_parser = parse_states, action = clap::ArgAction::Append)]
        state: Vec<Vec<JobState>>,
        /// Output: table, wide, name, json.
        #[arg(long, short = 'o', default_value = "table", value_parser = ["table", "wide", "name", "json"])]
        output: String,
    },
    /// Show one DataJob: a timeline from status, conditions and events, its pods, its result
    /// or failures.
    Describe {
        /// The DataJob.
        name: String,
    },
    /// Print the logs of a DataJob's executor pods.
    Logs {
        /// The DataJob.
        name: String,
        /// Only pods of this role.
        #[arg(long, value_parser = ["driver", "worker"])]
        role: Option<String>,
        /// Lines from the end of each log.
        #[arg(long)]
        tail: Option<i64>,
    },
}

/// Where the commands act: a client and the namespace (None with `-A`).
pub struct Target {
    /// The client, for the kubeconfig and context asked for.
    pub client: Client,
    /// The namespace, or None for every namespace.
    pub namespace: Option<String>,
}

/// An error for the user: what failed, already worded.
#[derive(Debug)]
pub struct Failure(pub String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

async fn connect(cli: &Cli) -> Result<Target, Failure> {
    let options = KubeConfigOptions {
        context: cli.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &cli.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .map_err(|e| Failure(format!("cannot read kubeconfig {}: {e}", path.display())))?;
            Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| e.to_string())
        }
        None if cli.context.is_some() => Config::from_kubeconfig(&options)
            .await
            .map_err(|e| e.to_string()),
        None => Config::infer().await.map_err(|e| e.to_string()),
    }
    .map_err(|e| Failure(format!("cannot load the kubeconfig: {e}")))?;
    let namespace = if cli.all_namespaces {
        None
    } else {
        Some(
            cli.namespace
                .clone()
                .unwrap_or_else(|| config.default_namespace.clone()),
        )
    };
    let client = Client::try_from(config)
        .map_err(|e| Failure(format!("cannot create a Kubernetes client: {e}")))?;
    Ok(Target { client, namespace })
}

/// Runs the plugin with the parsed command line; returns the process exit code.
pub async fn run(cli: Cli) -> ExitCode {
    let target = match connect(&cli).await {
        Ok(target) => target,
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(exit::ERROR);
        }
    };
    if target.namespace.is_none() && !matches!(cli.command, Cmd::Get { .. }) {
        eprintln!("error: -A/--all-namespaces applies to get/list only; name a namespace with -n");
        return ExitCode::from(2);
    }
    let result = match cli.command {
        Cmd::Cancel {
            names,
            reason,
            wait,
            timeout,
        } => cancel::run(&target, &names, reason.as_deref(), wait.then_some(timeout)).await,
        Cmd::Get {
            names,
            state,
            output,
        } => {
            let states: Vec<JobState> = state.into_iter().flatten().collect();
            get::run(&target, &names, &states, &output).await
        }
        Cmd::Describe { name } => describe::run(&target, &name).await,
        Cmd::Logs { name, role, tail } => logs::run(&target, &name, role.as_deref(), tail).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Failure(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(exit::ERROR)
        }
    }
}

/// The namespace of a namespaced command (connect rejected -A for these).
fn namespace(target: &Target) -> &str {
    target.namespace.as_deref().unwrap_or("default")
}

/// Words an API error about the DataJob `name` for the user.
fn job_error(name: &str, namespace: &str, error: kube::Error) -> Failure {
    match error {
        kube::Error::Api(status) if status.code == 404 => {
            Failure(format!("datajob {name} not found in namespace {namespace}"))
        }
        kube::Error::Api(status) if status.code == 403 => Failure(format!(
            "forbidden: {} (cancelling needs write access to datajobs: the datajob-edit role)",
            status.message
        )),
        other => Failure(format!("datajob {namespace}/{name}: {other}")),
    }
}
