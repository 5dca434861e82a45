//! DataJob and ComputePool fixtures, the driver's result, and what a test reads or does to a
//! job on the cluster: its state, its executor pods, a driver's exit, a cancellation, the
//! sequence of states it went through.

use datajob_operator::api::{ComputePool, DataJob, JobState};
use datajob_operator::executor;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::watcher::watch_object;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use super::watch::{STEP, eventually, wait_for};

/// The result JSON a materialize-view driver writes as its termination message (its 64-bit
/// snapshot id does not fit a double). hack/demo.sh reads the same file.
pub const MATERIALIZE_RESULT: &str = include_str!("materialize-result.json").trim_ascii_end();

/// The snapshot id inside [`MATERIALIZE_RESULT`].
pub const MATERIALIZE_SNAPSHOT_ID: u64 = 739_881_302_291_276_700;

/// A DataJob built field by field. It starts as a materialize-view job of dataset 6404 on data
/// plane `dp-e2e` with a 2 s grace period, no pool and no cluster type; each method sets one
/// field. `build()` (or `DataJob::from`) checks the manifest against the Rust type.
#[derive(Clone, Debug)]
pub struct DataJobBuilder {
    name: String,
    spec: Value,
}

/// Shorthand for [`DataJobBuilder::new`].
pub fn datajob(name: &str) -> DataJobBuilder {
    DataJobBuilder::new(name)
}

impl DataJobBuilder {
    pub fn new(name: &str) -> Self {
        DataJobBuilder {
            name: name.to_string(),
            spec: json!({
                "type": "materialize-view",
                "input": {
                    "nql": "SELECT * FROM company_data.\"6402\"",
                    "datasetId": 6404,
                    "statsEnabled": true,
                },
                "dataPlane": "dp-e2e",
                "executor": { "terminationGracePeriodSeconds": 2 },
            }),
        }
    }

    /// Sets the spec field at `path` (camelCase keys), making the objects on the way.
    fn set(mut self, path: &[&str], value: Value) -> Self {
        let (last, parents) = path.split_last().expect("a field path");
        let mut at = &mut self.spec;
        for key in parents {
            at = at
                .as_object_mut()
                .expect("an object on the path")
                .entry(*key)
                .or_insert_with(|| json!({}));
        }
        at.as_object_mut()
            .expect("an object on the path")
            .insert(last.to_string(), value);
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `spec.type`, e.g. `nql-forecast`.
    pub fn job_type(self, job_type: &str) -> Self {
        self.set(&["type"], json!(job_type))
    }

    pub fn nql(self, nql: &str) -> Self {
        self.set(&["input", "nql"], json!(nql))
    }

    /// `spec.input.datasetId`; `None` leaves it out (null).
    pub fn dataset_id(self, id: Option<i64>) -> Self {
        self.set(&["input", "datasetId"], json!(id))
    }

    pub fn stats_enabled(self, enabled: bool) -> Self {
        self.set(&["input", "statsEnabled"], json!(enabled))
    }

    pub fn data_plane(self, plane: &str) -> Self {
        self.set(&["dataPlane"], json!(plane))
    }

    pub fn pool(self, pool: &str) -> Self {
        self.set(&["computePool"], json!(pool))
    }

    /// `spec.clusterType`: `shared` or `dedicated`.
    pub fn cluster_type(self, cluster_type: &str) -> Self {
        self.set(&["clusterType"], json!(cluster_type))
    }

    pub fn workers(self, workers: i32) -> Self {
        self.set(&["executor", "workers"], json!(workers))
    }

    pub fn grace_period(self, seconds: i64) -> Self {
        self.set(
            &["executor", "terminationGracePeriodSeconds"],
            json!(seconds),
        )
    }

    /// `spec.executor.resources`, as Kubernetes writes them.
    pub fn resources(self, resources: Value) -> Self {
        self.set(&["executor", "resources"], resources)
    }

    /// Adds an environment variable to the executor.
    pub fn env(mut self, name: &str, value: &str) -> Self {
        let mut env = self.spec["executor"]["env"].take();
        if !env.is_array() {
            env = json!([]);
        }
        env.as_array_mut()
            .expect("env is a list")
            .push(json!({ "name": name, "value": value }));
        self.set(&["executor", "env"], env)
    }

    /// `spec.activeDeadlineSeconds`.
    pub fn deadline(self, seconds: i64) -> Self {
        self.set(&["activeDeadlineSeconds"], json!(seconds))
    }

    /// `spec.ttlSecondsAfterFinished`.
    pub fn ttl(self, seconds: i64) -> Self {
        self.set(&["ttlSecondsAfterFinished"], json!(seconds))
    }

    /// Created already cancelled, with `reason`.
    pub fn cancel(self, reason: &str) -> Self {
        self.set(&["cancel"], json!(true))
            .set(&["cancelReason"], json!(reason))
    }

    /// Merges `patch` into the spec (a JSON merge: objects merge key by key, `null` removes a
    /// field, anything else replaces).
    pub fn merged(mut self, patch: Value) -> Self {
        merge(&mut self.spec, patch);
        self
    }

    /// The manifest as JSON.
    pub fn json(&self) -> Value {
        json!({
            "apiVersion": "datajob.dev/v1alpha1",
            "kind": "DataJob",
            "metadata": { "name": self.name },
            "spec": self.spec,
        })
    }

    /// The DataJob; panics if the manifest does not fit the Rust type.
    pub fn build(&self) -> DataJob {
        serde_json::from_value(self.json())
            .unwrap_or_else(|e| panic!("DataJob {} does not fit the type: {e}", self.name))
    }
}

impl From<DataJobBuilder> for DataJob {
    fn from(builder: DataJobBuilder) -> DataJob {
        builder.build()
    }
}

/// JSON merge of `patch` into `base` (objects key by key, `null` removes, the rest replaces).
pub fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(base), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    base.remove(&key);
                } else {
                    merge(base.entry(key).or_insert(Value::Null), value);
                }
            }
        }
        (base, patch) => *base = patch,
    }
}

/// Creates the DataJob `job`, makes its driver write [`MATERIALIZE_RESULT`] and exit 0, and
/// waits until the job completed.
pub async fn run_to_completion(jobs: &Api<DataJob>, pods: &Api<Pod>, job: &DataJob) -> DataJob {
    let name = job.name_any();
    let created = jobs
        .create(&kube::api::PostParams::default(), job)
        .await
        .unwrap_or_else(|e| panic!("cannot create DataJob {name}: {e}"));
    let running = wait_pods_running(pods, &created, 1).await;
    exit_pod(pods, &running[0].name_any(), 0, MATERIALIZE_RESULT).await;
    wait_state(jobs, &name, JobState::Completed).await
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
    let what = format!("{count} running executor pods of {}", job.name_any());
    eventually(what, STEP, async || {
        let found = job_pods(pods, job).await;
        let running = found
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
            .count();
        (found.len() == count && running == count).then_some(found)
    })
    .await
}

/// The kwok annotations that make a running pod's containers exit with `code` and `message`
/// (hack/kwok/pod-exit.yaml).
pub fn exit_annotations(code: i32, message: &str) -> Value {
    json!({
        "sim.datajob.dev/exit-code": code.to_string(),
        "sim.datajob.dev/message": message,
    })
}

/// Merges `annotations` into the pod's.
pub async fn annotate_pod(pods: &Api<Pod>, name: &str, annotations: Value) {
    let patch = json!({ "metadata": { "annotations": annotations } });
    pods.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("cannot annotate pod {name}: {e}"));
}

/// Makes the pod's container exit (kwok's annotation-driven termination stage).
pub async fn exit_pod(pods: &Api<Pod>, name: &str, code: i32, message: &str) {
    annotate_pod(pods, name, exit_annotations(code, message)).await;
}

/// The node a scheduled pod runs on.
pub async fn node_of(client: &Client, pod: &Pod) -> Node {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_else(|| panic!("pod {} is not scheduled", pod.name_any()));
    Api::<Node>::all(client.clone())
        .get(&name)
        .await
        .unwrap_or_else(|e| panic!("node {name} of pod {}: {e}", pod.name_any()))
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
    pub async fn stop_after(self, last: JobState) -> Seen {
        self.stop_after_state(last.as_str()).await
    }

    /// Waits until the log has recorded the last of `expected`, prints what it saw (labelled
    /// `what`), asserts that the job went through exactly `expected`, and returns it.
    pub async fn expect_states(self, what: &str, expected: &[&str]) -> Seen {
        let last = expected.last().expect("at least one state");
        let seen = self.stop_after_state(last).await;
        println!("{what} states: {:?}", seen.states);
        assert_eq!(seen.states, states(expected), "{what}");
        seen
    }

    async fn stop_after_state(mut self, last: &str) -> Seen {
        let reached = tokio::time::timeout(
            STEP,
            self.seen
                .wait_for(|s| s.states.last().map(String::as_str) == Some(last)),
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

/// The states as owned strings, to compare with [`Seen::states`].
pub fn states(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// Polls until `pods` of a job matching `keep` are all gone.
pub async fn wait_pods_gone(pods: &Api<Pod>, job: &DataJob, keep: impl Fn(&Pod) -> bool) {
    let what = format!("executor pods of {} to be released", job.name_any());
    eventually(what, STEP, async || {
        let left = job_pods(pods, job).await;
        (!left.iter().any(&keep)).then_some(())
    })
    .await
}

/// The events (events.k8s.io) about the object named `name` in `namespace`.
pub async fn events_for(client: &Client, namespace: &str, name: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect()
}
