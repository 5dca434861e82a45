//! What the real-node tests need besides tests/support: the real node's coordinates (from
//! `hack/real-node.sh env`), ComputePools and DataJobs that target it, `kubectl logs -f`
//! followers, a recorder of pod states, and the operator installed by Helm.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use datajob_operator::api::ComputePool;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::support::helm::helm;
use crate::support::{DataJobBuilder, STEP, compute_pool, datajob, kubectl};

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

/// A ComputePool that targets the real node; deleted when dropped.
pub struct Pool {
    client: Client,
    pub name: String,
}

impl Pool {
    pub async fn create(client: &Client, name: &str, cluster_type: &str) -> Pool {
        let (node_selector, tolerations) = placement();
        let pool = compute_pool(
            name,
            json!({
                "clusterType": cluster_type,
                "maxConcurrentJobs": 0,
                "nodeSelector": node_selector,
                "tolerations": tolerations,
            }),
        );
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

/// A DataJob on data plane `real` and `pool`, running `image` (the reference executor, whose
/// knobs the caller adds with `.env(...)`).
pub fn job(name: &str, pool: &str, image: &str) -> DataJobBuilder {
    datajob(name)
        .data_plane("real")
        .pool(pool)
        .merged(json!({ "executor": { "image": image } }))
}

fn log_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("real-node-logs");
    std::fs::create_dir_all(&dir).expect("log folder");
    dir
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
        // A stream lasts as long as the container: no request timeout.
        let child = kubectl()
            .args(["--request-timeout=0", "logs", "-f", "-n", namespace, pod])
            .args(["-c", "executor"])
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
        let _ = helm(&["uninstall", &self.name, "--namespace", &self.name, "--wait"]);
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
    // The pod asks for `image`. (Its status may name another tag of the same image: two tags
    // of one digest are one image to containerd, which reports one of its names.)
    assert_eq!(
        spec.containers[0].image.as_deref(),
        Some(image),
        "the pod runs {image}"
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
