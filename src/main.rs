//! The datajob-operator binary: flags and wiring only.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use datajob_operator::leader::{Fence, LeaderElector, Timing};
use datajob_operator::telemetry::{self, LogFormat, Metrics};
use datajob_operator::{api, client, controller, http};
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
        default_value = "ghcr.io/datajob-dev/executor:0.1.0"
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
    let instance = args.instance.clone().unwrap_or_else(default_identity);
    // Writes of the controllers go through the fence; the elector's own client is not fenced.
    let fence = if args.leader_election {
        Fence::closed()
    } else {
        Fence::open()
    };
    let Some((client, election_client)) = clients(&instance, &fence).await else {
        return ExitCode::FAILURE;
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
    tokio::spawn(mark_ready(caches.clone(), ready));
    metrics.set_leader(elector.is_none());
    if let Some(elector) = &elector {
        info!(lease = %args.lease_name, identity = %instance, "waiting for leadership");
        tokio::select! {
            () = elector.acquire(|_| {}) => metrics.set_leader(true),
            () = shutdown_signal() => return ExitCode::SUCCESS,
        }
    }
    info!(namespace = ?config.namespace, data_plane = ?config.data_plane, "starting the DataJob controller");
    let controllers = controller::run(client, config, metrics.clone(), caches, undecodable);
    match &elector {
        None => controllers.await,
        Some(elector) => {
            tokio::select! {
                () = controllers => {
                    elector.release().await;
                    metrics.set_leader(false);
                }
                lost = elector.keep() => {
                    error!(error = %lost, "stopped leading; exiting so that a fresh process stands by");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    info!("controller stopped");
    ExitCode::SUCCESS
}

/// The controllers' client (writes fenced by `fence`) and the leader elector's (not fenced),
/// both with this instance's user agent; None (logged) when no configuration is found.
async fn clients(instance: &str, fence: &Fence) -> Option<(kube::Client, kube::Client)> {
    let config = match kube::Config::infer().await {
        Ok(config) => config,
        Err(e) => {
            error!(error = %e, "failed to load a Kubernetes client configuration (kubeconfig or in-cluster)");
            return None;
        }
    };
    let clients = client::build(config.clone(), instance, Some(fence.clone()))
        .and_then(|fenced| Ok((fenced, client::build(config, instance, None)?)));
    clients
        .inspect_err(|e| error!(error = %e, "failed to build a Kubernetes client"))
        .ok()
}

/// Turns readiness on once every cache has listed its objects.
async fn mark_ready(caches: controller::Caches, ready: Arc<AtomicBool>) {
    caches.wait_synced().await;
    info!("caches synced; ready");
    ready.store(true, Ordering::Release);
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
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
