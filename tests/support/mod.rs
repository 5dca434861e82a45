//! What the tests and the benchmark share: clients of the real local control plane
//! (`hack/cluster.sh up`; see docs/control-plane.md), the CRDs, a namespace per test, watches
//! that wait for a condition, the operator process, and DataJob fixtures.
//!
//! Used by every file in tests/ (`mod support;`, or `#[path = "../support/mod.rs"]` from a
//! folder) and by benches/scale.rs (`#[path = "../tests/support/mod.rs"]`). It imports only
//! `datajob_operator::api` and `datajob_operator::executor`, the crate's stable surface.
//!
//! Environment (printed by `hack/cluster.sh env`, exported by `hack/test.sh`):
//! - `KUBECONFIG`: the admin kubeconfig (client certificate in `system:masters`). Required.
//! - `DATAJOB_KUBECONFIG_ALICE`, `DATAJOB_KUBECONFIG_BOB`: kubeconfigs of the non-admin users
//!   `alice` and `bob` (client certificates bound to no role). Required by [`user_client`].
//! - `DATAJOB_KUBECTL` (optional): the kubectl to run; default `kubectl` from `PATH`.
//!
//! A test never skips: without a reachable cluster every helper panics with a message that says
//! how to start one.
//!
//! - here: [`admin_client`], [`user_client`], [`install_crds`], [`TestNamespace`], [`kubectl`];
//! - [`watch`]: [`wait_for`], [`wait_deleted`], [`wait_established`], [`eventually`];
//! - [`operator`]: [`Operator`], the operator binary as a child process;
//! - [`datajob`]: [`DataJobBuilder`], [`MATERIALIZE_RESULT`], and the job's states and pods;
//! - [`helm`]: the helm binary, the chart.
#![allow(dead_code)] // each test binary uses a subset

/// Whether an `Option<&Vec<_>>` of Kubernetes conditions (of any kind: node, pod, job, CRD)
/// holds one of type `$type` with status "True".
#[allow(unused_macros)]
macro_rules! condition_is_true {
    ($conditions:expr, $type:expr) => {
        $conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == $type && c.status == "True"))
    };
}
#[allow(unused_imports)]
pub(crate) use condition_is_true;

pub mod datajob;
pub mod helm;
pub mod operator;
pub mod watch;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datajob_operator::api::{ComputePool, DataJob};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config, CustomResourceExt, ResourceExt};

// One `use support::*` brings everything; a test binary that needs only part of it would warn.
#[allow(unused_imports)]
pub use {datajob::*, operator::Operator, watch::*};

const START_HINT: &str = "start the local control plane first: \
    `hack/cluster.sh up && eval \"$(hack/cluster.sh env)\"` (or run everything with `hack/test.sh`)";

/// How long a client may take to reach the API server before the test fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Label put on every namespace made by [`TestNamespace`], to find leftovers.
pub const TEST_NAMESPACE_LABEL: &str = "datajob.dev/test-namespace";

/// A client with the admin identity of `$KUBECONFIG`. Panics, with how to start a cluster, if
/// `KUBECONFIG` is unset or the API server does not answer.
pub async fn admin_client() -> Client {
    let path = std::env::var("KUBECONFIG").unwrap_or_default();
    if path.is_empty() {
        panic!("KUBECONFIG is not set: these tests need a real cluster; {START_HINT}");
    }
    let config = Config::from_kubeconfig(&KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot load KUBECONFIG={path}: {e}; {START_HINT}"));
    connect(config, &format!("admin (KUBECONFIG={path})")).await
}

/// A client acting as the non-admin user `user` (`alice` or `bob`), from the kubeconfig named by
/// `DATAJOB_KUBECONFIG_<USER>`. These users hold no role unless a test binds one.
pub async fn user_client(user: &str) -> Client {
    let var = format!("DATAJOB_KUBECONFIG_{}", user.to_uppercase());
    let path = std::env::var(&var).unwrap_or_default();
    if path.is_empty() {
        panic!("{var} is not set (kubeconfig of user {user}); {START_HINT}");
    }
    let kubeconfig = Kubeconfig::read_from(&path)
        .unwrap_or_else(|e| panic!("cannot read {var}={path}: {e}; {START_HINT}"));
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cannot load {var}={path}: {e}"));
    connect(config, &format!("user {user} ({var}={path})")).await
}

async fn connect(config: Config, who: &str) -> Client {
    let url = config.cluster_url.clone();
    let client =
        Client::try_from(config).unwrap_or_else(|e| panic!("cannot build a client for {who}: {e}"));
    match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => client,
        Ok(Err(e)) => panic!("the API server at {url} did not answer {who}: {e}; {START_HINT}"),
        Err(_) => panic!(
            "the API server at {url} did not answer {who} within {CONNECT_TIMEOUT:?}; {START_HINT}"
        ),
    }
}

/// A namespace of its own for one test, named `<prefix>-<unique suffix>`.
///
/// Call [`TestNamespace::cleanup`] at the end of the test; a panicking test leaks its namespace
/// (labelled [`TEST_NAMESPACE_LABEL`]), which `hack/cluster.sh down` removes with the cluster.
pub struct TestNamespace {
    client: Client,
    name: String,
}

impl TestNamespace {
    /// Creates the namespace and waits until its `default` ServiceAccount exists (the API server
    /// rejects pods in a namespace whose service account the controller manager has not made
    /// yet).
    pub async fn new(client: &Client, prefix: &str) -> Self {
        let name = format!("{}-{}", prefix.trim_end_matches('-'), unique_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { TEST_NAMESPACE_LABEL: "true" } }
        }))
        .expect("namespace manifest");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        wait_for(&sa, "default", Duration::from_secs(30), |_| true).await;
        TestNamespace {
            client: client.clone(),
            name,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts deleting the namespace (its objects go with it); does not wait for it to be gone.
    pub async fn cleanup(self) {
        let api = Api::<Namespace>::all(self.client.clone());
        if let Err(e) = api.delete(&self.name, &DeleteParams::default()).await {
            eprintln!("warning: could not delete namespace {}: {e}", self.name);
        }
    }
}

/// A suffix unique across tests, test binaries and runs: time, process id and a counter, in
/// base 36.
fn unique_suffix() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let mixed = nanos
        ^ (u64::from(std::process::id()) << 40)
        ^ (u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)) << 20);
    let mut n = mixed % 36u64.pow(8);
    let mut out = Vec::with_capacity(8);
    for _ in 0..8 {
        out.push(b"0123456789abcdefghijklmnopqrstuvwxyz"[(n % 36) as usize]);
        n /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

/// Whether the API server answered 403 Forbidden.
pub fn is_forbidden<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// A `kubectl` command for the admin identity: `$DATAJOB_KUBECTL` or `kubectl` from `PATH`
/// (`hack/cluster.sh env` puts the kubectl of the cluster's release first), with `KUBECONFIG`
/// inherited.
pub fn kubectl() -> std::process::Command {
    let program = std::env::var("DATAJOB_KUBECTL")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "kubectl".to_string());
    let mut cmd = std::process::Command::new(program);
    cmd.arg("--request-timeout=30s");
    cmd
}

/// Runs `kubectl args` (see [`kubectl`]) with `input` on stdin and returns its stdout; panics
/// with its stderr on failure.
pub fn kubectl_with_input(args: &[&str], input: &str) -> String {
    let mut child = kubectl()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
        .expect("write kubectl's stdin");
    let out = child.wait_with_output().expect("kubectl's output");
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Installs (server-side applies) the DataJob and ComputePool CRDs, generated from the Rust
/// types, and waits until both are established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [DataJob::crd(), ComputePool::crd()] {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("datajob-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot apply CRD {name}: {e}"));
        wait_established(client, &name, STEP).await;
    }
}

/// Labels `namespace` so the API server admits only pods of the "restricted" Pod Security
/// Standard (the chart's operator pod and every executor pod must pass it).
pub async fn enforce_restricted(client: &Client, namespace: &str) {
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "metadata": { "labels": {
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            }}})),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot label namespace {namespace} restricted: {e}"));
}
