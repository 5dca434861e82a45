//! Start-up and shutdown helpers of the operator binary: the check that the CRDs are
//! installed, the HTTP endpoints and readiness, the instance name, and the shutdown signal with
//! its bounded grace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use tracing::{error, info, warn};

/// The resources of `datajob.dev/v1alpha1` the operator needs, with their CRD names.
const REQUIRED: [(&str, &str); 2] = [
    ("datajobs", "datajobs.datajob.dev"),
    ("computepools", "computepools.datajob.dev"),
];

/// What a user types to install the CRDs.
pub const INSTALL_CRDS_HINT: &str = "install them with `datajob-operator crd | kubectl apply \
    --server-side -f -` (or `kubectl apply --server-side -f crds/` from the repository, or the \
    Helm chart with crds.enabled=true)";

/// Checks through discovery that the API server serves DataJobs and ComputePools. Errs with a
/// message naming each missing CRD and how to install it. When the API server cannot be asked
/// (unreachable, no permission), it warns and lets the controller start: its watches report
/// and retry that condition themselves.
pub async fn check_crds(client: &Client) -> Result<(), String> {
    let group_version = format!("{}/v1alpha1", crate::api::GROUP);
    let served: Vec<String> = match client.list_api_group_resources(&group_version).await {
        Ok(list) => list.resources.into_iter().map(|r| r.name).collect(),
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(error) => {
            warn!(%error, "cannot check that the CRDs are installed; starting anyway");
            return Ok(());
        }
    };
    missing_crds_message(&served).map_or(Ok(()), Err)
}

/// The error message for the CRDs missing from `served` (resource names of
/// `datajob.dev/v1alpha1`), or None when none is missing.
pub fn missing_crds_message(served: &[String]) -> Option<String> {
    let missing: Vec<&str> = REQUIRED
        .iter()
        .filter(|(plural, _)| !served.iter().any(|s| s == plural))
        .map(|(_, crd)| *crd)
        .collect();
    if missing.is_empty() {
        return None;
    }
    let what = if missing.len() == 1 {
        format!(
            "the CustomResourceDefinition {} is not installed",
            missing[0]
        )
    } else {
        format!(
            "the CustomResourceDefinitions {} are not installed",
            missing.join(" and ")
        )
    };
    Some(format!("{what}; {INSTALL_CRDS_HINT}"))
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Turns readiness on once every cache has listed its objects.
pub async fn mark_ready(caches: crate::controller::Caches, ready: Arc<AtomicBool>) {
    caches.wait_synced().await;
    info!("caches synced; ready");
    ready.store(true, Ordering::Release);
}

/// Serves /metrics, /healthz and /readyz in the background; false when the address cannot be
/// bound.
pub async fn serve_endpoints(addr: SocketAddr, health: crate::http::Health) -> bool {
    let server = match crate::http::serve(addr, health).await {
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

/// On the first SIGTERM or SIGINT, gives the clean shutdown `grace` and then exits the process:
/// with the API server gone, watches, in-flight reconciles and the Lease release could
/// otherwise wait far longer than the pod's termination grace period.
pub fn exit_after_grace_on_signal(grace: Duration) {
    tokio::spawn(async move {
        shutdown_signal().await;
        info!(grace_seconds = grace.as_secs(), "shutting down");
        tokio::time::sleep(grace).await;
        error!(
            grace_seconds = grace.as_secs(),
            "clean shutdown did not finish in time; exiting"
        );
        std::process::exit(1);
    });
}

/// Host name and process id, when no instance name is given.
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "datajob-operator".to_string());
    format!("{host}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_each_missing_crd_and_the_install_command() {
        let message = missing_crds_message(&[]).expect("both missing");
        assert!(message.contains("datajobs.datajob.dev and computepools.datajob.dev"));
        assert!(message.contains("datajob-operator crd | kubectl apply --server-side -f -"));
        let message = missing_crds_message(&["datajobs".into()]).expect("one missing");
        assert!(
            message.starts_with(
                "the CustomResourceDefinition computepools.datajob.dev is not installed"
            )
        );
        assert_eq!(
            missing_crds_message(&["datajobs".into(), "computepools".into()]),
            None
        );
    }
}
