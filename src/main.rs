//! The datajob-operator binary: flags and wiring only.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use datajob_operator::leader::LeaderElector;
use datajob_operator::telemetry::{self, LogFormat, Metrics};
use datajob_operator::{api, controller, http};
use tracing::{error, info};

#[derive(Parser)]
#[command(
    name = "datajob-operator",
    version,
    about = "Runs and cancels DataJobs on Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Run the controller (the default).
    Run,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, global = true, env = "DATAJOB_NAMESPACE")]
    namespace: Option<String>,
    /// Only reconcile DataJobs of this data plane.
    #[arg(long, global = true, env = "DATAJOB_DATA_PLANE")]
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
    #[arg(
        long,
        global = true,
        value_enum,
        env = "DATAJOB_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Reconciles running at once.
    #[arg(long, global = true, env = "DATAJOB_CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    /// Address of the /metrics, /healthz and /readyz endpoints (port 0 picks a free one).
    #[arg(
        long,
        global = true,
        env = "DATAJOB_HTTP_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    http_addr: SocketAddr,
    /// This instance's name in events and in the leader Lease (default: host name and pid).
    #[arg(long, global = true, env = "POD_NAME")]
    instance: Option<String>,
    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, global = true, env = "DATAJOB_LEADER_ELECTION")]
    leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, global = true, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, global = true, default_value = "datajob-operator")]
    lease_name: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, global = true, default_value_t = 15)]
    lease_duration_seconds: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Crd) => print_crds(),
        Some(Command::Run) | None => run(cli.run).await,
    }
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
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(e) => {
            error!(error = %e, "failed to build a Kubernetes client (kubeconfig or in-cluster config)");
            return ExitCode::FAILURE;
        }
    };
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let health = http::Health {
        ready: ready.clone(),
        metrics: metrics.clone(),
    };
    if !serve_endpoints(args.http_addr, health).await {
        return ExitCode::FAILURE;
    }
    let instance = args.instance.clone().unwrap_or_else(default_identity);
    let elector = leader_elector(&args, &client, &instance);
    let config = controller::Config {
        namespace: args.namespace,
        data_plane: args.data_plane,
        executor_image: args.executor_image,
        concurrency: args.concurrency,
        instance: Some(instance.clone()),
        allowed_image_prefixes: args.allowed_image_prefixes,
    };
    if let Some(elector) = &elector {
        info!(lease = %args.lease_name, identity = %instance, "waiting for leadership");
        tokio::select! {
            () = elector.acquire() => {}
            _ = tokio::signal::ctrl_c() => return ExitCode::SUCCESS,
        }
    }
    info!(namespace = ?config.namespace, data_plane = ?config.data_plane, "starting the DataJob controller");
    let controllers = controller::run(client, config, metrics, move || {
        ready.store(true, Ordering::Relaxed)
    });
    match &elector {
        None => controllers.await,
        Some(elector) => {
            tokio::select! {
                () = controllers => elector.release().await,
                lost = elector.keep() => {
                    error!(error = %lost, "stopping: another replica may lead now");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    info!("controller stopped");
    ExitCode::SUCCESS
}

/// The candidate in the leader election, when `--leader-election` asks for one.
fn leader_elector(args: &RunArgs, client: &kube::Client, instance: &str) -> Option<LeaderElector> {
    args.leader_election.then(|| {
        LeaderElector::new(
            client.clone(),
            &args.lease_namespace,
            &args.lease_name,
            instance,
            Duration::from_secs(args.lease_duration_seconds.max(3)),
        )
    })
}

/// Serves /metrics, /healthz and /readyz in the background; false when the address cannot be
/// bound.
async fn serve_endpoints(addr: SocketAddr, health: http::Health) -> bool {
    let server = match http::serve(addr, health).await {
        Ok((addr, server)) => {
            info!(%addr, "serving /metrics, /healthz and /readyz");
            server
        }
        Err(e) => {
            error!(%addr, error = %e, "failed to bind the HTTP endpoints");
            return false;
        }
    };
    tokio::spawn(async move {
        if let Err(e) = server.await {
            error!(error = %e, "HTTP endpoints stopped");
        }
    });
    true
}

/// Host name and process id, when no instance name is given.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "datajob-operator".to_string());
    format!("{host}-{}", std::process::id())
}
