//! Start-up and shutdown helpers of the operator binary: the check that the CRDs are
//! installed, and the shutdown signal.

use kube::Client;
use tracing::warn;

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
