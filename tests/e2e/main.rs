//! End-to-end tests of the operator on the real local control plane (`hack/cluster.sh`): each
//! test has its own namespace and its own operator process, and synchronises on watches of the
//! objects, never on sleeps.

mod leadership;
mod pools;
mod resilience;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use datajob_operator::api::{ComputePool, DataJob, JobState};
use datajob_operator::executor::{LABEL_JOB_UID, LABEL_ROLE};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use support::*;

struct Env {
    client: Client,
    ns: TestNamespace,
    jobs: Api<DataJob>,
    pods: Api<Pod>,
    operator: Operator,
    /// ComputePools (cluster-scoped) named by [`Env::pool_name`], deleted by [`Env::finish`].
    pools: Vec<String>,
}

/// A client, the CRDs installed, and a fresh namespace.
async fn cluster_namespace(prefix: &str) -> (Client, TestNamespace) {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    (client, ns)
}

/// A fresh namespace with an operator process watching it.
async fn env(prefix: &str) -> Env {
    let (client, ns) = cluster_namespace(prefix).await;
    let operator = Operator::start(ns.name());
    Env {
        jobs: Api::namespaced(client.clone(), ns.name()),
        pods: Api::namespaced(client.clone(), ns.name()),
        client,
        ns,
        operator,
        pools: Vec::new(),
    }
}

impl Env {
    async fn create(&self, job: impl Into<DataJob>) -> DataJob {
        let job = job.into();
        self.jobs
            .create(&PostParams::default(), &job)
            .await
            .unwrap_or_else(|e| panic!("cannot create DataJob {}: {e}", job.name_any()))
    }

    /// Creates the job, waits until it runs with `pods` running executor pods, cancels it with
    /// `reason`, and waits for pending_cancellation. Returns the job as created and as then.
    async fn cancel_while_running(
        &self,
        job: DataJobBuilder,
        pods: usize,
        reason: &str,
    ) -> (DataJob, DataJob) {
        let name = job.name().to_string();
        let job = self.create(job).await;
        wait_state(&self.jobs, &name, JobState::Running).await;
        wait_pods_running(&self.pods, &job, pods).await;
        cancel(&self.jobs, &name, reason).await;
        let pending = wait_state(&self.jobs, &name, JobState::PendingCancellation).await;
        (job, pending)
    }

    /// A ComputePool name of this test's own (`<prefix>-<namespace>`), deleted by `finish`.
    fn pool_name(&mut self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", self.ns.name());
        self.pools.push(name.clone());
        name
    }

    /// Creates a ComputePool of this test's own with `spec`, deleted by `finish`.
    async fn own_pool(&mut self, prefix: &str, spec: serde_json::Value) -> String {
        let name = self.pool_name(prefix);
        create_pool(&self.client, &compute_pool(&name, spec)).await;
        name
    }

    async fn finish(self) {
        drop(self.operator);
        self.ns.cleanup().await;
        for pool in &self.pools {
            delete_pool(&self.client, pool).await;
        }
    }
}

async fn create_pool(client: &Client, pool: &ComputePool) {
    Api::<ComputePool>::all(client.clone())
        .create(&PostParams::default(), pool)
        .await
        .unwrap_or_else(|e| panic!("cannot create ComputePool {}: {e}", pool.name_any()));
}

async fn delete_pool(client: &Client, name: &str) {
    let _ = Api::<ComputePool>::all(client.clone())
        .delete(name, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn shared_job_runs_to_completed_with_the_drivers_result() {
    let env = env("e2e-shared").await;
    // Executor pods must pass the "restricted" Pod Security Standard.
    let restricted = json!({ "metadata": { "labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
    }}});
    Api::<Namespace>::all(env.client.clone())
        .patch(
            env.ns.name(),
            &PatchParams::default(),
            &Patch::Merge(&restricted),
        )
        .await
        .expect("label the namespace restricted");
    let log = StateLog::start(&env.client, env.ns.name(), "report");
    let job = env.create(datajob("report").cluster_type("shared")).await;
    wait_state(&env.jobs, "report", JobState::Running).await;
    let pods = wait_pods_running(&env.pods, &job, 1).await;
    let driver = &pods[0];
    let labels = driver.labels();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "datajob-operator");
    assert_eq!(labels[LABEL_ROLE], "driver");
    assert_eq!(labels["datajob.dev/cluster-type"], "shared");
    assert_eq!(labels["datajob.dev/data-plane"], "dp-e2e");
    assert_eq!(labels[LABEL_JOB_UID], job.uid().expect("uid"));
    assert_eq!(driver.owner_references()[0].uid, job.uid().expect("uid"));
    let spec = driver.spec.as_ref().expect("pod spec");
    assert_eq!(spec.termination_grace_period_seconds, Some(2));
    let container = &spec.containers[0];
    let env_names: BTreeSet<&str> = container
        .env
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    for var in [
        "DATAJOB_ID",
        "DATAJOB_TYPE",
        "DATAJOB_NQL",
        "DATAJOB_COMPILED_SQL",
        "DATAJOB_DATASET_ID",
        "DATAJOB_STATS_ENABLED",
        "DATAJOB_DATA_PLANE",
        "DATAJOB_COMPUTE_POOL",
        "DATAJOB_CLUSTER_TYPE",
        "DATAJOB_ROLE",
    ] {
        assert!(env_names.contains(var), "{var} missing from {env_names:?}");
    }
    let security = container
        .security_context
        .as_ref()
        .expect("security context");
    assert_eq!(security.allow_privilege_escalation, Some(false));

    exit_pod(&env.pods, &driver.name_any(), 0, MATERIALIZE_RESULT).await;
    let done = wait_state(&env.jobs, "report", JobState::Completed).await;
    let status = done.status.expect("status");
    let result = status.result.expect("result recorded");
    assert_eq!(result.snapshot_id, Some(739_881_302_291_276_700));
    assert_eq!(result.dataset_id, Some(6404));
    assert_eq!(
        result.recalculation_id.as_deref(),
        Some("abf9a2ec-426b-4751-bd16-fcb435061925")
    );
    assert!(status.completed_at.is_some());
    assert_eq!(status.job_id, job.uid());
    // The exact 64-bit id as the API server stores it, through kubectl.
    let out = kubectl()
        .args(["get", "dj", "report", "-n", env.ns.name(), "-o"])
        .arg("jsonpath={.status.result.snapshotId}")
        .output()
        .expect("kubectl runs");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "739881302291276700");
    log.expect_states("shared job", &["pending", "running", "completed"])
        .await;
    env.finish().await;
}

#[tokio::test]
async fn dedicated_job_gets_driver_and_workers_on_its_pools_nodes_and_completes() {
    let mut env = env("e2e-dedicated").await;
    let pool = env
        .own_pool(
            "dedicated",
            json!({ "clusterType": "dedicated", "nodeSelector": { "datajob.dev/node-group": "b" } }),
        )
        .await;
    let log = StateLog::start(&env.client, env.ns.name(), "forecast");
    let job = env
        .create(
            datajob("forecast")
                .job_type("nql-forecast")
                .pool(&pool)
                .workers(2),
        )
        .await;
    wait_state(&env.jobs, "forecast", JobState::Running).await;
    let pods = wait_pods_running(&env.pods, &job, 3).await;
    for pod in &pods {
        let node = node_of(&env.client, pod).await;
        let node_name = node.name_any();
        assert_eq!(node.labels()["datajob.dev/node-group"], "b", "{node_name}");
        assert!(
            pod.spec
                .as_ref()
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .is_some(),
            "dedicated pods keep other jobs off their nodes"
        );
    }
    // No other DataJob's running pod (of any namespace) shares a node with this executor.
    let my_nodes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.spec.as_ref().and_then(|s| s.node_name.clone()))
        .collect();
    let all_executors = Api::<Pod>::all(env.client.clone())
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=datajob-operator"))
        .await
        .expect("list executor pods");
    for other in &all_executors.items {
        // Finished pods (kept for their logs) hold no resources, and the scheduler ignores them.
        let phase = other.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) {
            continue;
        }
        let node = other.spec.as_ref().and_then(|s| s.node_name.clone());
        if node.as_ref().is_some_and(|n| my_nodes.contains(n)) {
            assert_eq!(
                other.labels()[LABEL_JOB_UID],
                job.uid().expect("uid"),
                "pod {} of another job shares node {node:?}",
                other.name_any()
            );
        }
    }
    let roles: Vec<&str> = pods
        .iter()
        .map(|p| p.labels()[LABEL_ROLE].as_str())
        .collect();
    assert_eq!(roles.iter().filter(|r| **r == "worker").count(), 2);
    let status = env
        .jobs
        .get("forecast")
        .await
        .expect("job")
        .status
        .expect("status");
    assert_eq!(status.cluster_type.map(|c| c.as_str()), Some("dedicated"));

    let driver = pods
        .iter()
        .find(|p| p.labels()[LABEL_ROLE] == "driver")
        .expect("driver");
    exit_pod(
        &env.pods,
        &driver.name_any(),
        0,
        r#"{"forecast": {"horizonDays": 7, "values": [1.5, 2.25]}}"#,
    )
    .await;
    let done = wait_state(&env.jobs, "forecast", JobState::Completed).await;
    let forecast = done
        .status
        .and_then(|s| s.result)
        .and_then(|r| r.forecast)
        .expect("forecast");
    assert_eq!(forecast["horizonDays"], 7);
    // Workers still running are released once the job completed.
    wait_pods_gone(&env.pods, &job, |p| p.labels()[LABEL_ROLE] == "worker").await;
    log.expect_states("dedicated job", &["pending", "running", "completed"])
        .await;
    env.finish().await;
}

#[tokio::test]
async fn failing_driver_fails_the_job_with_its_reason() {
    let env = env("e2e-fail").await;
    let log = StateLog::start(&env.client, env.ns.name(), "broken");
    let job = env.create(datajob("broken")).await;
    let pods = wait_pods_running(&env.pods, &job, 1).await;
    exit_pod(
        &env.pods,
        &pods[0].name_any(),
        3,
        r#"{"reason": "QueryError", "message": "table company_data.6402 not found"}"#,
    )
    .await;
    let failed = wait_state(&env.jobs, "broken", JobState::Failed).await;
    let status = failed.status.expect("status");
    assert_eq!(status.failures.len(), 1);
    assert_eq!(status.failures[0].reason, "DriverFailed");
    assert!(status.failures[0].message.contains("QueryError"));
    assert!(
        status.failures[0]
            .message
            .contains("table company_data.6402 not found")
    );
    let failed_condition = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed")
        .expect("Failed condition");
    assert_eq!(failed_condition.status, "True");
    log.expect_states("failing job", &["pending", "running", "failed"])
        .await;
    env.finish().await;
}

#[tokio::test]
async fn cancel_from_pending_tears_down_then_records_cancelled() {
    let mut env = env("e2e-cancel-pending").await;
    // A pool whose node selector matches no node keeps the executor pod unscheduled, so the
    // job stays pending with a pod.
    let pool = env
        .own_pool(
            "nowhere",
            json!({ "nodeSelector": { "datajob.dev/node-group": "none" } }),
        )
        .await;
    let log = StateLog::start(&env.client, env.ns.name(), "stuck");
    let job = env.create(datajob("stuck").pool(&pool)).await;
    eventually("an executor pod to be created", STEP, async || {
        (!job_pods(&env.pods, &job).await.is_empty()).then_some(())
    })
    .await;
    assert_eq!(state(&env.jobs.get("stuck").await.expect("job")), "pending");
    cancel(&env.jobs, "stuck", "wrong dataset").await;
    let cancelled = wait_state(&env.jobs, "stuck", JobState::Cancelled).await;
    let status = cancelled.status.expect("status");
    let cancellation = status.cancellation.expect("cancellation recorded");
    assert_eq!(cancellation.reason.as_deref(), Some("wrong dataset"));
    assert!(status.completed_at.is_some());
    assert_eq!(status.active_executors, Some(0));
    let seen = log
        .expect_states(
            "cancel from pending",
            &["pending", "pending_cancellation", "cancelled"],
        )
        .await;
    assert_eq!(seen.pods_when_cancelled, Some(0));
    env.finish().await;
}

#[tokio::test]
async fn cancel_from_running_waits_for_graceful_pod_termination() {
    let env = env("e2e-cancel-running").await;
    let log = StateLog::start(&env.client, env.ns.name(), "long");
    let long = datajob("long")
        .cluster_type("dedicated")
        .workers(1)
        .grace_period(3);
    let (job, pending) = env.cancel_while_running(long, 2, "superseded").await;
    let requested = pending
        .status
        .as_ref()
        .and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "CancellationRequested")
        })
        .expect("CancellationRequested condition");
    assert_eq!(requested.status, "True");
    // What users run: kubectl wait on the state.
    let waited = kubectl()
        .args(["wait", "-n", env.ns.name(), "--timeout=90s"])
        .arg("--for=jsonpath={.status.state}=cancelled")
        .arg("dj/long")
        .output()
        .expect("kubectl runs");
    assert!(
        waited.status.success(),
        "kubectl wait failed: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(job_pods(&env.pods, &job).await.is_empty());
    let seen = log
        .expect_states(
            "cancel from running",
            &["pending", "running", "pending_cancellation", "cancelled"],
        )
        .await;
    assert_eq!(seen.pods_when_cancelled, Some(0));
    let reasons: BTreeSet<String> = events_for(&env.client, env.ns.name(), "long")
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    for reason in ["Pending", "Running", "CancellationRequested", "Cancelled"] {
        assert!(reasons.contains(reason), "no {reason} event in {reasons:?}");
    }
    env.finish().await;
}

#[tokio::test]
async fn cancel_of_completed_job_is_a_no_op_with_an_event() {
    let env = env("e2e-cancel-done").await;
    let job = env.create(datajob("done")).await;
    let pods = wait_pods_running(&env.pods, &job, 1).await;
    exit_pod(&env.pods, &pods[0].name_any(), 0, MATERIALIZE_RESULT).await;
    let completed = wait_state(&env.jobs, "done", JobState::Completed).await;
    let before = completed.status.clone().expect("status");
    cancel(&env.jobs, "done", "too late").await;
    let generation = env.jobs.get("done").await.expect("job").metadata.generation;
    let after = wait_for(&env.jobs, "done", STEP, |j: &DataJob| {
        j.status.as_ref().and_then(|s| s.observed_generation) == generation
    })
    .await;
    let status = after.status.expect("status");
    assert_eq!(status.state, Some(JobState::Completed));
    assert_eq!(status.result, before.result);
    assert_eq!(status.completed_at, before.completed_at);
    assert!(status.cancellation.is_none());
    eventually("a CancellationIgnored event", STEP, async || {
        let events = events_for(&env.client, env.ns.name(), "done").await;
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("CancellationIgnored"))
            .then_some(())
    })
    .await;
    env.finish().await;
}

#[tokio::test]
async fn withdrawing_a_cancel_or_changing_an_immutable_field_is_rejected() {
    let env = env("e2e-cel").await;
    env.create(datajob("fixed")).await;
    cancel(&env.jobs, "fixed", "stop").await;
    let withdraw = env
        .jobs
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "cancel": false } })),
        )
        .await
        .expect_err("withdrawing a cancel is rejected");
    assert!(
        withdraw
            .to_string()
            .contains("cancellation cannot be withdrawn; delete the DataJob instead"),
        "{withdraw}"
    );
    let out = kubectl()
        .args([
            "patch",
            "dj",
            "fixed",
            "-n",
            env.ns.name(),
            "--type",
            "merge",
            "-p",
        ])
        .arg(r#"{"spec":{"input":{"nql":"SELECT 2","datasetId":6404}}}"#)
        .output()
        .expect("kubectl runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("spec.input is immutable; create a new DataJob instead"),
        "{stderr}"
    );
    let missing = env
        .jobs
        .create(
            &PostParams::default(),
            &datajob("no-dataset").dataset_id(None).build(),
        )
        .await
        .expect_err("materialize-view without datasetId is rejected");
    assert!(
        missing
            .to_string()
            .contains("spec.input.datasetId is required for materialize-view jobs"),
        "{missing}"
    );
    let bad_plane = env
        .jobs
        .create(
            &PostParams::default(),
            &datajob("bad-plane").data_plane("Not_A_Label").build(),
        )
        .await
        .expect_err("a dataPlane that is not a DNS label is rejected");
    assert!(bad_plane.to_string().contains("dataPlane"), "{bad_plane}");
    let reserved = env
        .jobs
        .create(
            &PostParams::default(),
            &datajob("reserved-env").env("DATAJOB_ID", "forged").build(),
        )
        .await
        .expect_err("DATAJOB_* variables are the operator's");
    assert!(
        reserved
            .to_string()
            .contains("spec.executor.env cannot set DATAJOB_* variables"),
        "{reserved}"
    );
    // cancelReason may still change after the request.
    env.jobs
        .patch(
            "fixed",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "cancelReason": "stop, really" } })),
        )
        .await
        .expect("cancelReason stays mutable");
    env.finish().await;
}

#[tokio::test]
async fn deleting_a_running_job_removes_its_pods_before_the_object() {
    let env = env("e2e-delete").await;
    let job = env.create(datajob("doomed").grace_period(3)).await;
    wait_state(&env.jobs, "doomed", JobState::Running).await;
    wait_pods_running(&env.pods, &job, 1).await;
    env.jobs
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete DataJob");
    // The finalizer keeps the job while its pod terminates gracefully.
    let terminating = env
        .jobs
        .get("doomed")
        .await
        .expect("still present during teardown");
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert!(
        terminating
            .finalizers()
            .iter()
            .any(|f| f == "datajob.dev/teardown")
    );
    wait_deleted(&env.jobs, "doomed", STEP).await;
    assert!(
        job_pods(&env.pods, &job).await.is_empty(),
        "pods outlived their DataJob"
    );
    env.finish().await;
}

#[tokio::test]
async fn operator_killed_during_teardown_still_ends_cancelled_without_leaks() {
    let mut env = env("e2e-kill").await;
    let log = StateLog::start(&env.client, env.ns.name(), "victim");
    let victim = datajob("victim")
        .cluster_type("dedicated")
        .workers(2)
        .grace_period(4);
    let (job, _) = env.cancel_while_running(victim, 3, "kill test").await;
    let pods = job_pods(&env.pods, &job).await;
    assert!(
        !pods.is_empty(),
        "pods are still terminating when the operator dies"
    );
    env.operator.kill();
    env.operator.restart();
    wait_state(&env.jobs, "victim", JobState::Cancelled).await;
    assert!(job_pods(&env.pods, &job).await.is_empty());
    let seen = log
        .expect_states(
            "killed-operator",
            &["pending", "running", "pending_cancellation", "cancelled"],
        )
        .await;
    assert_eq!(seen.pods_when_cancelled, Some(0));
    env.finish().await;
}

#[tokio::test]
async fn sigterm_shuts_the_operator_down_cleanly() {
    let mut env = env("e2e-sigterm").await;
    env.create(datajob("steady")).await;
    wait_state(&env.jobs, "steady", JobState::Running).await;
    let status = env.operator.terminate(STEP);
    assert!(
        status.success(),
        "the operator exited with {status} on SIGTERM"
    );
    env.finish().await;
}

#[tokio::test]
async fn fifty_jobs_cancelled_at_once_all_end_cancelled_with_no_pods_left() {
    let env = env("e2e-fifty").await;
    let names: Vec<String> = (0..50).map(|i| format!("bulk-{i:02}")).collect();
    for name in &names {
        env.create(datajob(name).grace_period(1)).await;
    }
    for name in &names {
        wait_for(&env.jobs, name, STEP, |j: &DataJob| {
            j.status.as_ref().is_some_and(|s| s.executor.is_some())
        })
        .await;
    }
    let cancels = names
        .iter()
        .map(|name| cancel(&env.jobs, name, "bulk cancel"));
    futures::future::join_all(cancels).await;
    for name in &names {
        let job = wait_for(&env.jobs, name, Duration::from_secs(180), |j: &DataJob| {
            state(j) == "cancelled"
        })
        .await;
        assert!(
            job.status
                .as_ref()
                .and_then(|s| s.cancellation.as_ref())
                .is_some(),
            "{name} recorded its cancellation"
        );
    }
    let left = env
        .pods
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=datajob-operator"))
        .await
        .expect("list pods")
        .items;
    assert!(left.is_empty(), "{} executor pods left", left.len());
    env.finish().await;
}
