//! What the real-node tests need besides tests/common: the real node's coordinates (from
//! `hack/real-node.sh env`), the CRDs, a local operator process, ComputePools that target the
//! real node, DataJob manifests, `kubectl logs -f` followers and a recorder of pod states.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datajob_operator::api::{ComputePool, DataJob};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

use crate::common::wait_established;

/// How long a test waits for one expected change on the real node.
pub const STEP: Duration = Duration::from_secs(120);

/// Node label and taint of the real node (hack/real-node.sh).
pub const NODE_KIND: &str = "datajob.dev/node-kind";

const HINT: &str = "start the real node: `hack/cluster.sh up && hack/real-node.sh up`, then \
    `eval \"$(hack/cluster.sh env)\" && eval \"$(hack/real-node.sh env)\"` (hack/test.sh does all of it)";

/// The real-node tests share one node: they run one at a time.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The real node and the project's images on it, from `hack/real-node.sh env`.
pub struct RealNode {
    pub node: String,
    pub ctr: PathBuf,
    pub containerd_address: String,
    pub operator_image: String,
    pub executor_image: String,
}

fn env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{name} is not set: these tests need the real node; {HINT}"))
}

impl RealNode {
    pub fn from_env() -> RealNode {
        RealNode {
            node: env("DATAJOB_REAL_NODE"),
            ctr: PathBuf::from(env("DATAJOB_CTR")),
            containerd_address: env("DATAJOB_CONTAINERD_ADDRESS"),
            operator_image: env("DATAJOB_OPERATOR_IMAGE"),
            executor_image: env("DATAJOB_EXECUTOR_IMAGE"),
        }
    }

    /// Runs `ctr` against the node's containerd (namespace k8s.io); panics on failure.
    pub fn ctr(&self, args: &[&str]) -> String {
        let out = Command::new(&self.ctr)
            .args([
                "--address",
                &self.containerd_address,
                "--namespace",
                "k8s.io",
            ])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.ctr.display()));
        assert!(
            out.status.success(),
            "ctr {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Node selector and toleration that put a pod on the real node (and only there).
pub fn placement() -> (Value, Value) {
    (
        json!({ NODE_KIND: "real" }),
        json!([{ "key": NODE_KIND, "operator": "Equal", "value": "real", "effect": "NoSchedule" }]),
    )
}

/// Server-side applies the CRDs of this tree and waits until they are served.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [DataJob::crd(), ComputePool::crd()] {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("datajob-real-node-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot apply CRD {name}: {e}"));
        wait_established(client, &name, STEP).await;
    }
}

/// A ComputePool that targets the real node; deleted when dropped.
pub struct Pool {
    client: Client,
    pub name: String,
}

impl Pool {
    pub async fn create(client: &Client, name: &str, cluster_type: &str) -> Pool {
        let (node_selector, tolerations) = placement();
        let pool: ComputePool = serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1",
            "kind": "ComputePool",
            "metadata": { "name": name },
            "spec": {
                "clusterType": cluster_type,
                "maxConcurrentJobs": 0,
                "nodeSelector": node_selector,
                "tolerations": tolerations,
            }
        }))
        .expect("pool manifest");
        Api::<ComputePool>::all(client.clone())
            .create(&PostParams::default(), &pool)
            .await
            .unwrap_or_else(|e| panic!("cannot create ComputePool {name}: {e}"));
        Pool {
            client: client.clone(),
            name: name.to_string(),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let api = Api::<ComputePool>::all(self.client.clone());
        let name = self.name.clone();
        // Best effort, without blocking the test's runtime.
        tokio::spawn(async move {
            let _ = api.delete(&name, &DeleteParams::default()).await;
        });
    }
}

/// A DataJob manifest on `pool` running `image` with the reference executor's knobs `knobs`.
pub fn job(
    name: &str,
    job_type: &str,
    nql: &str,
    pool: &str,
    image: &str,
    knobs: &[(&str, &str)],
    extra_executor: Value,
) -> DataJob {
    let mut executor = json!({
        "image": image,
        "env": knobs.iter().map(|(k, v)| json!({ "name": k, "value": v })).collect::<Vec<_>>(),
    });
    if let (Some(target), Some(extra)) = (executor.as_object_mut(), extra_executor.as_object()) {
        target.extend(extra.clone());
    }
    let mut input = json!({ "nql": nql });
    if job_type == "materialize-view" {
        input["datasetId"] = json!(6404);
    }
    serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1",
        "kind": "DataJob",
        "metadata": { "name": name },
        "spec": {
            "type": job_type,
            "dataPlane": "real",
            "computePool": pool,
            "input": input,
            "executor": executor,
        }
    }))
    .expect("DataJob manifest")
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-node-logs");
    std::fs::create_dir_all(&dir).expect("log folder");
    dir
}

/// The operator binary of this build, watching one namespace; killed when dropped.
pub struct Operator {
    child: Child,
}

impl Operator {
    /// Logs to `<CARGO_TARGET_TMPDIR>/real-node-logs/operator-<namespace>.log`.
    pub fn start(namespace: &str, executor_image: &str) -> Operator {
        let log = log_dir().join(format!("operator-{namespace}.log"));
        let file = File::create(&log).expect("operator log");
        let child = Command::new(env!("CARGO_BIN_EXE_datajob-operator"))
            .args([
                "--namespace",
                namespace,
                "--executor-image",
                executor_image,
                "--http-addr",
                "127.0.0.1:0",
                "--log-format",
                "text",
            ])
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .spawn()
            .expect("start the operator");
        Operator { child }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `kubectl logs -f` of one pod's executor container, into a file; stopped when dropped.
pub struct Logs {
    child: Child,
    path: PathBuf,
    what: String,
}

impl Logs {
    /// Follows the logs of `pod` (which must have started) until its container exits.
    pub fn follow(namespace: &str, pod: &str) -> Logs {
        let path = log_dir().join(format!("{namespace}-{pod}.log"));
        let file = File::create(&path).expect("log file");
        let program = std::env::var("DATAJOB_KUBECTL").unwrap_or_else(|_| "kubectl".to_string());
        let child = Command::new(program)
            .args(["logs", "-f", "-n", namespace, pod, "-c", "executor"])
            .stdout(file.try_clone().expect("log handle"))
            .stderr(file)
            .stdin(Stdio::null())
            .spawn()
            .expect("kubectl logs -f");
        Logs {
            child,
            path,
            what: format!("{namespace}/{pod}"),
        }
    }

    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// Waits until the log holds a line containing `needle`; returns the whole log.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "the log of {} has no {needle:?} after {timeout:?}:\n{text}",
                self.what
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until `kubectl logs -f` ends (the container exited); returns the whole log.
    pub async fn wait_closed(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        while self
            .child
            .try_wait()
            .expect("kubectl logs status")
            .is_none()
        {
            assert!(
                Instant::now() < deadline,
                "the log stream of {} is still open after {timeout:?}:\n{}",
                self.what,
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.text()
    }
}

impl Drop for Logs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The last state seen of every pod of a namespace, kept even after the pod is deleted (so the
/// exit code a terminating container reported stays readable).
pub struct PodRecorder {
    seen: Arc<Mutex<BTreeMap<String, Pod>>>,
    task: tokio::task::JoinHandle<()>,
}

impl PodRecorder {
    pub fn start(client: &Client, namespace: &str) -> PodRecorder {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut events = Box::pin(watcher(api, watcher::Config::default()));
                while let Some(event) = events.next().await {
                    let pods = match event {
                        Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                            vec![pod]
                        }
                        _ => continue,
                    };
                    let mut seen = seen.lock().expect("recorder lock");
                    for pod in pods {
                        seen.insert(pod.name_any(), pod);
                    }
                }
            }
        });
        PodRecorder { seen, task }
    }

    /// The executor container's exit code, once a terminated state was seen.
    pub fn exit_code(&self, pod: &str) -> Option<i32> {
        let seen = self.seen.lock().expect("recorder lock");
        seen.get(pod)?
            .status
            .as_ref()?
            .container_statuses
            .as_ref()?
            .iter()
            .find(|c| c.name == "executor")?
            .state
            .as_ref()?
            .terminated
            .as_ref()
            .map(|t| t.exit_code)
    }

    /// Waits until the executor container of `pod` was seen terminated; returns its exit code.
    pub async fn wait_exit_code(&self, pod: &str, timeout: Duration) -> i32 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(code) = self.exit_code(pod) {
                return code;
            }
            assert!(
                Instant::now() < deadline,
                "no terminated state of {pod} seen within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PodRecorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The node a pod runs on and whether its executor container has started, from a pod.
pub fn started_on(pod: &Pod) -> Option<(String, bool)> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let started = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == "executor"))
        .is_some_and(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
    Some((node, started))
}

/// Runs helm (`$HELM`, else `helm` from `PATH`) and returns its stdout; panics on failure.
pub fn helm(args: &[&str]) -> String {
    let program = std::env::var("HELM")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "helm".to_string());
    let out = Command::new(&program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (put helm on PATH or set HELM): {e}"));
    assert!(
        out.status.success(),
        "helm {} failed ({}):\n{}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A Helm release named like its namespace; uninstalled when dropped (its cluster-scoped
/// roles go with it).
pub struct Release {
    name: String,
}

impl Release {
    pub fn new(namespace: &str) -> Release {
        Release {
            name: namespace.to_string(),
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        let program = std::env::var("HELM").unwrap_or_else(|_| "helm".to_string());
        let _ = Command::new(program)
            .args(["uninstall", &self.name, "--namespace", &self.name, "--wait"])
            .output();
    }
}

/// The one running, not terminating pod of the operator Deployment `fullname`.
pub async fn operator_pod(client: &Client, namespace: &str, fullname: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let selector = "app.kubernetes.io/component=operator";
    let deadline = Instant::now() + STEP;
    loop {
        let list = pods
            .list(&kube::api::ListParams::default().labels(selector))
            .await
            .expect("list operator pods");
        let live: Vec<Pod> = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter(|p| p.name_any().starts_with(fullname))
            .collect();
        if live.len() == 1 {
            return live.into_iter().next().expect("one pod");
        }
        assert!(
            Instant::now() < deadline,
            "expected one live operator pod, found {}",
            live.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Asserts that the operator pod runs `image` on `node`, ready through its probe, as 65532.
pub fn assert_ready_on(pod: &Pod, node: &str, image: &str) {
    let spec = pod.spec.as_ref().expect("spec");
    assert_eq!(
        spec.node_name.as_deref(),
        Some(node),
        "the operator runs on the real node"
    );
    let status = pod.status.as_ref().expect("status");
    let container = status
        .container_statuses
        .as_ref()
        .and_then(|cs| cs.first())
        .expect("container status");
    assert!(container.ready, "the readiness probe passed: {container:?}");
    assert!(
        container
            .state
            .as_ref()
            .is_some_and(|s| s.running.is_some()),
        "running: {container:?}"
    );
    assert!(
        container.image == image || container.image.ends_with(&format!("/{image}")),
        "runs {image}, not {}",
        container.image
    );
    // A real kubelet started it from the local image: the image id is a content digest.
    assert!(
        container.image_id.contains("sha256:"),
        "image id {}",
        container.image_id
    );
    let probe = spec.containers[0]
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("an httpGet readiness probe");
    assert_eq!(probe.path.as_deref(), Some("/readyz"));
}
