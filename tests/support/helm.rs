//! Helm, as the tests run it: `$HELM`, else `helm` from `PATH` (`eval "$(hack/cluster.sh env)"`
//! puts the cluster's helm there).

use std::path::PathBuf;
use std::process::{Command, Output};

/// The chart of this tree.
pub const CHART: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/charts/datajob-operator");

/// The helm binary: `$HELM`, else `helm` from `PATH`. Panics with how to get one.
pub fn helm_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("HELM").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "HELM={} is not a file; point HELM at a helm v3 binary",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .map(|dir| dir.join("helm"))
        .find(|candidate| candidate.is_file());
    on_path.unwrap_or_else(|| {
        panic!(
            "helm not found: set HELM=/path/to/helm or put helm on PATH \
             (`eval \"$(hack/cluster.sh env)\"` does; hack/cluster.sh up builds it into \
             ~/.cache/datajob-operator/bin/helm-*/helm)"
        )
    })
}

/// Runs helm with `args`.
pub fn helm(args: &[&str]) -> Output {
    let helm = helm_binary();
    Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", helm.display()))
}

/// Runs helm and returns its stdout; panics with its output on failure.
pub fn helm_ok(args: &[&str]) -> String {
    let out = helm(args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "helm {} failed ({}):\n{stdout}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The path of a probe's HTTP GET, if it has one (what a rendered chart's probes ask).
pub fn http_get_path(probe: &Option<k8s_openapi::api::core::v1::Probe>) -> Option<String> {
    probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .and_then(|h| h.path.clone())
}

/// Installs the chart's teardown-finalizer admission policy of release `release`, with `sets`
/// (`key=value`): rendered as `helm install` renders it on this cluster, which serves
/// MutatingAdmissionPolicy, and server-side applied. Returns the rendered policy (to delete).
pub async fn apply_finalizer_policy(client: &kube::Client, release: &str, sets: &[&str]) -> String {
    let version = client
        .apiserver_version()
        .await
        .expect("the API server's version")
        .git_version;
    let mut args = vec![
        "template",
        release,
        CHART,
        "--kube-version",
        &version,
        "--api-versions",
        "admissionregistration.k8s.io/v1/MutatingAdmissionPolicy",
        "--show-only",
        "templates/finalizer-policy.yaml",
    ];
    for set in sets {
        args.extend(["--set", set]);
    }
    let policy = helm_ok(&args);
    super::kubectl_with_input(&["apply", "--server-side", "-f", "-"], &policy);
    policy
}
