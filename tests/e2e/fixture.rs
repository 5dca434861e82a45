//! What every end-to-end test needs besides the cluster: the CRDs installed, an operator
//! process watching the test's namespace, DataJob manifests, a recorder of the state sequence,
//! and the kwok annotations that make a driver exit.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use datajob_operator::api::{ComputePool, DataJob, JobState};
use datajob_operator::executor;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher::watch_object;
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

use crate::common::{wait_established, wait_for};

/// The result JSON a materialize-view driver writes (64-bit snapshot id).
pub const MATERIALIZE_RESULT: &str = r#"{"datasetId": 6404, "snapshotId": 739881302291276700, "recalculationId": "abf9a2ec-426b-4751-bd16-fcb435061925"}"#;

/// How long a test waits for one expected change.
pub const STEP: Duration = Duration::from_secs(90);

/// Installs (server-side applies) the CRDs and waits until they are established.
pub async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [DataJob::crd(), ComputePool::crd()] {
        let name = crd.name_any();
        crds.patch(
            &name,
            &PatchParams::apply("datajob-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot apply CRD {name}: {e}"));
        wait_established(client, &name, STEP).await;
    }
}

/// A running operator process; killed (SIGKILL) when dropped.
pub struct Operator {
    child: Child,
    log_name: String,
    args: Vec<String>,
    starts: u32,
}

impl Operator {
    /// Starts the operator binary watching `namespace`.
    pub fn start(namespace: &str) -> Self {
        Operator::start_with(namespace, &["--namespace", namespace])
    }

    /// Starts the operator binary with `args` (besides the common ones), logging to
    /// `<CARGO_TARGET_TMPDIR>/e2e-logs/<log_name>.<n>.log`.
    pub fn start_with(log_name: &str, args: &[&str]) -> Self {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let mut operator = Operator {
            child: spawn(log_name, 0, &args),
            log_name: log_name.to_string(),
            args,
            starts: 1,
        };
        operator.check_alive();
        operator
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (by pid, with the system's `kill`) and waits up to `timeout` for the
    /// process to exit; returns its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "could not send SIGTERM");
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the operator") {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the operator did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The log file of the current process.
    pub fn log(&self) -> PathBuf {
        log_path(&self.log_name, self.starts - 1)
    }

    /// The process id of the current process.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().expect("wait for the operator")
    }

    /// Starts a new process after [`Operator::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.child = spawn(&self.log_name, self.starts, &self.args);
        self.starts += 1;
        self.check_alive();
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "the operator exited at once ({status}); see {}",
                log_path(&self.log_name, self.starts - 1).display()
            );
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

fn log_path(log_name: &str, start: u32) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("e2e-logs")
        .join(format!("{log_name}.{start}.log"))
}

fn spawn(log_name: &str, start: u32, args: &[String]) -> Child {
    let path = log_path(log_name, start);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("log folder");
    }
    let log = File::create(&path).expect("operator log file");
    let err = log.try_clone().expect("operator log file");
    Command::new(env!("CARGO_BIN_EXE_datajob-operator"))
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--executor-image",
            "registry.example/datajob-executor:e2e",
            "--log-format",
            "json",
        ])
        .args(args)
        .env("RUST_LOG", "info,datajob_operator=debug")
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("the operator binary starts")
}

/// A DataJob manifest: a shared materialize-view job with a 2 s grace period, with `extra`
/// merged into its spec.
pub fn datajob(name: &str, extra_spec: Value) -> DataJob {
    let mut spec = json!({
        "type": "materialize-view",
        "input": { "nql": "SELECT * FROM company_data.\"6402\"", "datasetId": 6404, "statsEnabled": true },
        "dataPlane": "dp-e2e",
        "executor": { "terminationGracePeriodSeconds": 2 },
    });
    merge(&mut spec, extra_spec);
    serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1",
        "kind": "DataJob",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("valid DataJob manifest")
}

/// A ComputePool manifest with `spec`.
pub fn compute_pool(name: &str, spec: Value) -> ComputePool {
    serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1",
        "kind": "ComputePool",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("valid ComputePool manifest")
}

fn merge(base: &mut Value, extra: Value) {
    match (base, extra) {
        (Value::Object(base), Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// The state of a job, as a string ("" before the first reconcile).
pub fn state(job: &DataJob) -> String {
    job.status
        .as_ref()
        .and_then(|s| s.state)
        .map(|s| s.as_str().to_string())
        .unwrap_or_default()
}

/// Waits until the job is in `expected`.
pub async fn wait_state(jobs: &Api<DataJob>, name: &str, expected: JobState) -> DataJob {
    wait_for(jobs, name, STEP, |job| state(job) == expected.as_str()).await
}

/// The executor pods of a job, read from the API server.
pub async fn job_pods(pods: &Api<Pod>, job: &DataJob) -> Vec<Pod> {
    let uid = job.uid().expect("stored job has a uid");
    pods.list(&ListParams::default().labels(&executor::job_pods_selector(&uid)))
        .await
        .expect("list executor pods")
        .items
}

/// Waits until the job has `count` executor pods, all Running.
pub async fn wait_pods_running(pods: &Api<Pod>, job: &DataJob, count: usize) -> Vec<Pod> {
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let found = job_pods(pods, job).await;
        let running = found
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        if found.len() == count && running == count {
            return found;
        }
        if tokio::time::Instant::now() > deadline {
            panic!(
                "timed out waiting for {count} running executor pods of {}; have {} ({running} running)",
                job.name_any(),
                found.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Makes the pod's container exit (kwok's annotation-driven termination stage).
pub async fn exit_pod(pods: &Api<Pod>, name: &str, code: i32, message: &str) {
    let patch = json!({ "metadata": { "annotations": {
        "sim.datajob.dev/exit-code": code.to_string(),
        "sim.datajob.dev/message": message,
    }}});
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("cannot annotate pod {name} to exit: {e}"));
}

/// Requests cancellation the way a user does: a merge patch of spec.cancel.
pub async fn cancel(jobs: &Api<DataJob>, name: &str, reason: &str) {
    let patch = json!({ "spec": { "cancel": true, "cancelReason": reason } });
    jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("cannot cancel DataJob {name}: {e}"));
}

/// What a [`StateLog`] saw.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Every distinct consecutive state, in order.
    pub states: Vec<String>,
    /// Executor pods that existed when `cancelled` was first seen.
    pub pods_when_cancelled: Option<usize>,
}

/// Records the state sequence of one job from a watch, and counts its pods (with a fresh
/// list) the moment `cancelled` is first seen.
pub struct StateLog {
    seen: tokio::sync::watch::Receiver<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl StateLog {
    /// Starts watching job `name` (start it before creating the job to see every state).
    pub fn start(client: &Client, namespace: &str, name: &str) -> Self {
        let jobs: Api<DataJob> = Api::namespaced(client.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let (record, seen) = tokio::sync::watch::channel(Seen::default());
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let mut stream = Box::pin(watch_object(jobs, &name));
            while let Some(event) = stream.next().await {
                let Ok(Some(job)) = event else { continue };
                let current = state(&job);
                if current.is_empty() || record.borrow().states.last() == Some(&current) {
                    continue;
                }
                let pods_now = if current == JobState::Cancelled.as_str() {
                    Some(job_pods(&pods, &job).await.len())
                } else {
                    None
                };
                record.send_modify(|s| {
                    s.states.push(current);
                    if s.pods_when_cancelled.is_none() {
                        s.pods_when_cancelled = pods_now;
                    }
                });
            }
        });
        StateLog { seen, task }
    }

    /// Waits until the log has recorded `last` as its latest state, stops watching and
    /// returns what was seen.
    pub async fn stop_after(mut self, last: JobState) -> Seen {
        let reached = tokio::time::timeout(
            STEP,
            self.seen
                .wait_for(|s| s.states.last().map(String::as_str) == Some(last.as_str())),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        let seen = self.seen.borrow().clone();
        self.task.abort();
        assert!(
            reached,
            "the state log never recorded {last}; it saw {:?}",
            seen.states
        );
        seen
    }
}
