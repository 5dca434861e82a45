//! Shared fixture for the tests that run against the real local control plane
//! (`hack/cluster.sh up`; see docs/control-plane.md).
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
//! API: [`admin_client`], [`user_client`], [`TestNamespace`], [`wait_for`], [`wait_deleted`],
//! [`wait_established`], [`kubectl`].
#![allow(dead_code)] // each test binary uses a subset

use std::fmt::Debug;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher::watch_object;
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;

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

/// Watches the object `name` of `api` until `cond` holds for it, and returns it. Panics after
/// `timeout`, showing the last state seen (or that the object did not exist).
pub async fn wait_for<K, F>(api: &Api<K>, name: &str, timeout: Duration, cond: F) -> K
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
    F: Fn(&K) -> bool,
{
    match watch_until(api, name, timeout, |obj: Option<&K>| obj.is_some_and(&cond)).await {
        Ok(obj) => obj.expect("condition holds only for an existing object"),
        Err(last) => panic!(
            "timed out after {timeout:?} waiting for {} {name} to meet the condition; last seen: {last}",
            K::kind(&Default::default())
        ),
    }
}

/// Watches the object `name` of `api` until it does not exist. Panics after `timeout`, showing
/// the last state seen.
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, timeout: Duration)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    K::DynamicType: Default,
{
    if let Err(last) = watch_until(api, name, timeout, |obj: Option<&K>| obj.is_none()).await {
        panic!(
            "timed out after {timeout:?} waiting for {} {name} to be deleted; last seen: {last}",
            K::kind(&Default::default())
        );
    }
}

/// Ok(the object) once `done` holds, Err(description of the last state) on timeout.
async fn watch_until<K, D>(
    api: &Api<K>,
    name: &str,
    timeout: Duration,
    done: D,
) -> Result<Option<K>, String>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    D: Fn(Option<&K>) -> bool,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut stream = Box::pin(watch_object(api.clone(), name));
    let mut last = String::from("nothing (no answer from the watch yet)");
    loop {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => return Err(last),
            Ok(None) => return Err(format!("the watch ended; before that: {last}")),
            Ok(Some(Ok(obj))) => {
                if done(obj.as_ref()) {
                    return Ok(obj);
                }
                last = match &obj {
                    Some(o) => format!("{o:#?}"),
                    None => "the object does not exist".to_string(),
                };
            }
            Ok(Some(Err(e))) => {
                last = format!("watch error: {e}; before that: {last}");
                // The watcher restarts by itself; do not spin on a persistent error.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Waits until the CustomResourceDefinition `name` is Established (its API is served).
pub async fn wait_established(client: &Client, name: &str, timeout: Duration) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    wait_for(&crds, name, timeout, |crd: &CustomResourceDefinition| {
        crd.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    })
    .await;
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
