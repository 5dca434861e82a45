//! The datajob-operator binary: flags and wiring only.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use clap::{Parser, Subcommand};
use datajob_operator::leader::{Fence, LeaderElector, Timing};
use datajob_operator::telemetry::{self, LogFormat, Metrics};
use datajob_operator::{api, client, controller, http, jobs_api, probe, reference, startup};
use tracing::{error, info};

/// How logging is configured, shown in `--help`.
const LOGGING_HELP: &str = "\
Logging:
  RUST_LOG   log filter (tracing-subscriber EnvFilter syntax), default `info`;
             e.g. RUST_LOG=datajob_operator=debug,kube=info
  NO_COLOR   set to any value for text logs without colour codes (text logs are plain
             anyway when stdout is not a terminal)

Every flag can also be set through the environment variable shown beside it.";

#[derive(Parser)]
#[command(
    name = "datajob-operator",
    version,
    about = "Runs and cancels DataJobs on Kubernetes",
    args_conflicts_with_subcommands = true,
    after_help = LOGGING_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Flags of `run`, also accepted without the subcommand.
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print the API reference (Markdown) generated from the CRDs.
    ApiReference,
    /// GET a URL and succeed on status 200 (the Helm chart's `helm test` runs it against
    /// /readyz).
    Probe {
        /// The URL, http:// only.
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 10)]
        timeout_seconds: u64,
    },
    /// Run the controller (the default).
    #[command(after_help = LOGGING_HELP)]
    Run(RunArgs),
    /// Serve the seed's Jobs REST API under /v1, acting with each caller's Bearer token.
    Api(ApiArgs),
}

#[derive(clap::Args)]
struct ApiArgs {
    /// Address to serve on (port 0 picks a free one).
    #[arg(long, env = "DATAJOB_API_HTTP_ADDR", default_value = "127.0.0.1:8443")]
    http_addr: SocketAddr,
    /// Namespace whose DataJobs are the jobs.
    #[arg(long, env = "DATAJOB_API_NAMESPACE", default_value = "default")]
    namespace: String,
    /// TLS certificate (PEM); serves HTTPS together with --tls-key.
    #[arg(long, env = "DATAJOB_API_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "DATAJOB_API_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// Longest ?wait= a request may ask for, in seconds.
    #[arg(long, env = "DATAJOB_API_MAX_WAIT_SECONDS", default_value_t = 60)]
    max_wait_seconds: u64,
    /// Log format.
    #[arg(long, value_enum, env = "DATAJOB_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "DATAJOB_NAMESPACE")]
    namespace: Option<String>,
    /// Only reconcile DataJobs of this data plane.
    #[arg(long, env = "DATAJOB_DATA_PLANE")]
    data_plane: Option<String>,
    /// Executor image when neither the job nor its pool sets one.
    #[arg(
        long,
        env = "DATAJOB_EXECUTOR_IMAGE",
        default_value = "ghcr.io/datajob-dev/datajob-executor:0.1.0"
    )]
    executor_image: String,
    /// An image prefix executor pods may use (repeatable, or comma-separated in the variable).
    /// With none, and no `allowedImages` in the job's pool, every image is allowed; otherwise
    /// a job whose image matches none fails with reason InvalidSpec.
    #[arg(
        long = "allowed-image-prefix",
        env = "DATAJOB_ALLOWED_IMAGE_PREFIXES",
        value_delimiter = ','
    )]
    allowed_image_prefixes: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, env = "DATAJOB_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    /// Reconciles running at once.
    #[arg(long, env = "DATAJOB_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Address of the /metrics, /healthz and /readyz endpoints (port 0 picks a free one).
    #[arg(long, env = "DATAJOB_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    http_addr: SocketAddr,
    /// This instance's name in events and in the leader Lease (default: host name and pid).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, env = "DATAJOB_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "DATAJOB_LEASE_NAME", default_value = "datajob-operator")]
    lease_name: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, env = "DATAJOB_LEASE_DURATION_SECONDS", default_value_t = 15)]
    lease_duration_seconds: u64,
    /// Seconds a clean shutdown may take after SIGTERM/SIGINT before the process exits anyway
    /// (for example when the API server is gone and requests hang).
    #[arg(long, env = "DATAJOB_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 10)]
    shutdown_timeout_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => print_crds(),
        Some(Command::ApiReference) => print_api_reference(),
        Some(Command::Probe {
            url,
            timeout_seconds,
        }) => match probe::probe(&url, Duration::from_secs(timeout_seconds)).await {
            Ok(body) => {
                println!("{url}: {body}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("probe failed: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Run(args)) => run(args).await,
        Some(Command::Api(args)) => serve_api(args).await,
        None => run(cli.run).await,
    }
}

fn print_api_reference() -> ExitCode {
    print!("{}", reference::markdown());
    ExitCode::SUCCESS
}

fn print_crds() -> ExitCode {
    match api::crds_yaml() {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("failed to render the CRDs: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: RunArgs) -> ExitCode {
    telemetry::init_logging(args.log_format);
    let instance = args
        .instance
        .clone()
        .unwrap_or_else(startup::default_identity);
    // Writes of the controllers go through the fence; the elector's own client is not fenced.
    let fence = if args.leader_election {
        Fence::closed()
    } else {
        Fence::open()
    };
    let Some((client, election_client)) = client::clients(&instance, &fence).await else {
        return ExitCode::FAILURE;
    };
    let metrics = Arc::new(Metrics::default());
    startup::exit_after_grace_on_signal(Duration::from_secs(args.shutdown_timeout_seconds));
    if let Err(missing) = startup::check_crds(&client).await {
        error!("{missing}");
        return ExitCode::FAILURE;
    }
    let ready = Arc::new(AtomicBool::new(false));
    let health = http::Health {
        ready: ready.clone(),
        metrics: metrics.clone(),
    };
    if !startup::serve_endpoints(args.http_addr, health).await {
        return ExitCode::FAILURE;
    }
    let elector = leader_elector(&args, election_client, &instance, fence);
    let config = controller::Config {
        namespace: args.namespace,
        data_plane: args.data_plane,
        executor_image: args.executor_image,
        concurrency: args.concurrency,
        instance: Some(instance.clone()),
        allowed_image_prefixes: args.allowed_image_prefixes,
    };
    // Every replica keeps its caches, leader or not: ready means "this process can serve".
    let (caches, undecodable) = controller::Caches::start(&client, &config);
    tokio::spawn(startup::mark_ready(caches.clone(), ready));
    if let Some(elector) = &elector {
        info!(lease = %args.lease_name, identity = %instance, "waiting for leadership");
        tokio::select! {
            () = elector.acquire(|_| {}) => metrics.set_leader(true),
            () = startup::shutdown_signal() => return ExitCode::SUCCESS,
        }
    } else {
        metrics.set_leader(true);
    }
    info!(namespace = ?config.namespace, data_plane = ?config.data_plane, "starting the DataJob controller");
    let controllers = controller::run(client, config, metrics.clone(), caches, undecodable);
    lead(elector.as_ref(), controllers, &metrics).await
}

/// Runs `controllers` until a shutdown signal, or, with leader election, until leadership is
/// lost (then the process exits non-zero, and its restart stands by).
async fn lead(
    elector: Option<&LeaderElector>,
    controllers: impl Future<Output = ()>,
    metrics: &Metrics,
) -> ExitCode {
    match elector {
        None => controllers.await,
        Some(elector) => {
            tokio::select! {
                () = controllers => {
                    elector.release().await;
                    metrics.set_leader(false);
                }
                lost = elector.keep() => {
                    metrics.set_leader(false);
                    error!(error = %lost, "stopped leading; exiting so that a fresh process stands by");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    info!("controller stopped");
    ExitCode::SUCCESS
}

/// The candidate in the leader election, when `--leader-election` asks for one.
fn leader_elector(
    args: &RunArgs,
    client: kube::Client,
    instance: &str,
    fence: Fence,
) -> Option<LeaderElector> {
    args.leader_election.then(|| {
        LeaderElector::new(
            client,
            &args.lease_namespace,
            &args.lease_name,
            instance,
            Timing::for_lease_duration(Duration::from_secs(args.lease_duration_seconds)),
            fence,
        )
    })
}

/// Serves the Jobs REST API until SIGTERM/SIGINT.
async fn serve_api(args: ApiArgs) -> ExitCode {
    telemetry::init_logging(args.log_format);
    let tls = args
        .tls_cert
        .zip(args.tls_key)
        .map(|(cert, key)| jobs_api::TlsFiles { cert, key });
    let max_wait = Duration::from_secs(args.max_wait_seconds);
    match jobs_api::run(args.http_addr, args.namespace, max_wait, tls).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn api_takes_its_own_flags_and_run_still_works_without_a_subcommand() {
        let cli = Cli::try_parse_from([
            "datajob-operator",
            "api",
            "--namespace",
            "team-a",
            "--http-addr",
            "0.0.0.0:8080",
        ])
        .expect("api flags parse");
        let Some(Command::Api(args)) = cli.command else {
            panic!("expected the api subcommand");
        };
        assert_eq!(args.namespace, "team-a");
        assert!(args.tls_cert.is_none());
        let cli = Cli::try_parse_from(["datajob-operator", "--namespace", "team-a"])
            .expect("run flags parse");
        assert!(cli.command.is_none());
        assert_eq!(cli.run.namespace.as_deref(), Some("team-a"));
        assert!(
            Cli::try_parse_from(["datajob-operator", "api", "--tls-cert", "c.pem"]).is_err(),
            "a certificate needs its key"
        );
    }
}
