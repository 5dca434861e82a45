//! Failures around a job: executor pods lost, deadlines, TTL clean-up, an operator replica
//! dying while it leads, and results that outlive their pod.

use std::time::Duration;

use datajob_operator::api::{DataJob, JobState};
use datajob_operator::executor::RESULT_FINALIZER;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;

use crate::support::*;
use crate::{Env, cluster_namespace, env};

fn failure_reason(job: &DataJob) -> Option<String> {
    job.status
        .as_ref()?
        .failures
        .first()
        .map(|f| f.reason.clone())
}

#[tokio::test]
async fn executor_pod_deleted_by_someone_else_fails_the_job_as_executor_lost() {
    let env = env("e2e-lost").await;
    let job = env
        .create(datajob("fragile").cluster_type("dedicated").workers(1))
        .await;
    wait_state(&env.jobs, "fragile", JobState::Running).await;
    let pods = wait_pods_running(&env.pods, &job, 2).await;
    let worker = pods
        .iter()
        .find(|p| p.labels()["datajob.dev/role"] == "worker")
        .expect("worker");
    env.pods
        .delete(&worker.name_any(), &DeleteParams::default())
        .await
        .expect("delete worker");
    let failed = wait_state(&env.jobs, "fragile", JobState::Failed).await;
    assert_eq!(failure_reason(&failed).as_deref(), Some("ExecutorLost"));
    let message = &failed.status.expect("status").failures[0].message;
    assert!(message.contains(&worker.name_any()), "{message}");
    env.finish().await;
}

#[tokio::test]
async fn an_executor_pod_the_api_server_rejects_fails_the_job_with_its_reason() {
    let env = env("e2e-rejected").await;
    // Passes the CRD's bounds (requests <= limits are checked at the door) but not pod
    // validation: an extended resource needs a limit.
    let resources = json!({ "requests": { "example.com/gadget": "1" } });
    env.create(datajob("impossible").resources(resources)).await;
    let failed = wait_state(&env.jobs, "impossible", JobState::Failed).await;
    assert_eq!(failure_reason(&failed).as_deref(), Some("ExecutorRejected"));
    let message = &failed.status.expect("status").failures[0].message;
    assert!(
        message.contains("Limit must be set for non overcommitable resources"),
        "{message}"
    );
    env.finish().await;
}

#[tokio::test]
async fn running_past_the_deadline_fails_with_deadline_exceeded() {
    let env = env("e2e-deadline").await;
    env.create(datajob("slow").deadline(2)).await;
    wait_state(&env.jobs, "slow", JobState::Running).await;
    let failed = wait_state(&env.jobs, "slow", JobState::Failed).await;
    assert_eq!(failure_reason(&failed).as_deref(), Some("DeadlineExceeded"));
    env.finish().await;
}

#[tokio::test]
async fn finished_job_is_deleted_after_its_ttl() {
    let env = env("e2e-ttl").await;
    let job = env.create(datajob("short-lived").ttl(1)).await;
    let pods = wait_pods_running(&env.pods, &job, 1).await;
    exit_pod(&env.pods, &pods[0].name_any(), 0, MATERIALIZE_RESULT).await;
    wait_state(&env.jobs, "short-lived", JobState::Completed).await;
    wait_deleted(&env.jobs, "short-lived", STEP).await;
    env.finish().await;
}

fn holder(lease: &Lease) -> Option<String> {
    lease.spec.as_ref()?.holder_identity.clone()
}

#[tokio::test]
async fn a_standby_replica_takes_over_when_the_leader_dies() {
    let (client, ns) = cluster_namespace("e2e-leader").await;
    let name = ns.name().to_string();
    let replica = |instance: &str| {
        Operator::start_with(
            &format!("{name}-{instance}"),
            &[
                "--namespace",
                &name,
                "--leader-election",
                "--lease-namespace",
                &name,
                "--lease-name",
                "datajob-operator",
                "--lease-duration-seconds",
                "3",
                "--instance",
                instance,
            ],
        )
    };
    let mut a = replica("replica-a");
    let leases: Api<Lease> = Api::namespaced(client.clone(), &name);
    let first = wait_for(&leases, "datajob-operator", STEP, |l: &Lease| {
        holder(l).is_some()
    })
    .await;
    assert_eq!(holder(&first).as_deref(), Some("replica-a"));
    let mut b = replica("replica-b");
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), &name);
    jobs.create(&Default::default(), &datajob("before").build())
        .await
        .expect("create job");
    wait_state(&jobs, "before", JobState::Running).await;
    assert_eq!(
        holder(&leases.get("datajob-operator").await.expect("lease")).as_deref(),
        Some("replica-a"),
        "the standby does not take the lease while the leader renews it"
    );
    a.kill();
    let taken = wait_for(
        &leases,
        "datajob-operator",
        Duration::from_secs(30),
        |l: &Lease| holder(l).as_deref() == Some("replica-b"),
    )
    .await;
    assert!(taken.spec.and_then(|s| s.lease_transitions).unwrap_or(0) >= 1);
    jobs.create(&Default::default(), &datajob("after").build())
        .await
        .expect("create job");
    wait_state(&jobs, "after", JobState::Running).await;
    b.kill();
    ns.cleanup().await;
}

/// A Node that no kubelet (and no kwok) serves, Ready when created, labelled so that only a
/// pool's node selector picks it: its pods never run and, once deleted, stay Terminating.
fn unserved_node(name: &str) -> Node {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": { "name": name, "labels": { "datajob.dev/test-node": name } },
        "status": {
            "allocatable": { "cpu": "16", "memory": "64Gi", "pods": "110" },
            "capacity": { "cpu": "16", "memory": "64Gi", "pods": "110" },
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "KubeletReady",
                "lastHeartbeatTime": jiff::Timestamp::now().to_string(),
                "lastTransitionTime": jiff::Timestamp::now().to_string(),
            }],
        },
    }))
    .expect("a Node")
}

/// Creates a lost node and a pool that picks only it, starts a job there and returns the
/// job and its executor pod once it is bound to that node.
async fn stranded_job(env: &mut Env, node_name: &str) -> (DataJob, Pod) {
    let nodes: Api<Node> = Api::all(env.client.clone());
    nodes
        .create(&PostParams::default(), &unserved_node(node_name))
        .await
        .expect("create the node");
    let selector = json!({ "datajob.dev/test-node": node_name });
    let pool = env
        .own_pool("stuck", json!({ "nodeSelector": selector }))
        .await;
    let job = env.create(datajob("stranded").pool(&pool)).await;
    let pod = eventually(
        "the executor pod to be bound to the lost node",
        STEP,
        async || {
            job_pods(&env.pods, &job)
                .await
                .into_iter()
                .find(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node_name))
        },
    )
    .await;
    (job, pod)
}

/// Waits until the job shows `Stalled=True`/`TeardownStuck` naming the pod and the node, with
/// a Warning event; returns the job as then.
async fn wait_teardown_stuck(env: &Env, pod: &Pod, node_name: &str) -> DataJob {
    let stuck = wait_for(&env.jobs, "stranded", STEP, |j: &DataJob| {
        j.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Stalled" && c.status == "True" && c.reason == "TeardownStuck")
        })
    })
    .await;
    let status = stuck.status.as_ref().expect("status");
    let stalled = status.conditions.iter().find(|c| c.type_ == "Stalled");
    let message = &stalled.expect("Stalled").message;
    assert!(
        message.contains(&pod.name_any()) && message.contains(node_name),
        "{message}"
    );
    let events = events_for(&env.client, env.ns.name(), "stranded").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("TeardownStuck")
                && e.type_.as_deref() == Some("Warning")),
        "{events:?}"
    );
    stuck
}

/// Deleting a job whose pod sits on a lost node: `kubectl delete` waits on the finalizer, and
/// the job shows why (Stalled, TeardownStuck naming pod and node, a Warning event); once the
/// Node is deleted the operator force-deletes the pod and the job is gone.
#[tokio::test]
async fn a_deleted_job_whose_teardown_is_stuck_shows_why_then_goes_when_the_node_is_gone() {
    let mut env = env("e2e-stuck-delete").await;
    let node_name = format!("lost-{}", env.ns.name());
    let (job, pod) = stranded_job(&mut env, &node_name).await;
    env.jobs
        .delete("stranded", &DeleteParams::default())
        .await
        .expect("delete the job");
    let stuck = wait_teardown_stuck(&env, &pod, &node_name).await;
    assert!(stuck.metadata.deletion_timestamp.is_some());
    assert_eq!(
        stuck.status.and_then(|s| s.state),
        Some(JobState::Pending),
        "a deletion changes no state (the pod never ran)"
    );
    Api::<Node>::all(env.client.clone())
        .delete(&node_name, &DeleteParams::default())
        .await
        .expect("delete the node");
    wait_deleted(&env.jobs, "stranded", STEP).await;
    assert!(job_pods(&env.pods, &job).await.is_empty());
    env.finish().await;
}

/// Cancelling a job whose pod sits on a lost node: the teardown is shown stuck (Stalled,
/// TeardownStuck naming pod and node, a Warning event) after the grace period and the margin;
/// once the Node is deleted the operator force-deletes the pod and the job ends cancelled.
#[tokio::test]
async fn a_teardown_stuck_on_a_lost_node_is_shown_then_force_deleted_when_the_node_is_gone() {
    let mut env = env("e2e-stuck").await;
    let node_name = format!("lost-{}", env.ns.name());
    let nodes: Api<Node> = Api::all(env.client.clone());
    let (_, pod) = stranded_job(&mut env, &node_name).await;
    cancel(&env.jobs, "stranded", "node lost").await;
    let stuck = wait_teardown_stuck(&env, &pod, &node_name).await;
    assert_eq!(
        stuck.status.and_then(|s| s.state),
        Some(JobState::PendingCancellation)
    );
    // The pod garbage collector would remove it only 40 s after the node is gone; the
    // operator looks every 10 s.
    nodes
        .delete(&node_name, &DeleteParams::default())
        .await
        .expect("delete the node");
    wait_state(&env.jobs, "stranded", JobState::Cancelled).await;
    let events = events_for(&env.client, env.ns.name(), "stranded").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("PodForceDeleted")
                && e.note
                    .as_deref()
                    .is_some_and(|n| n.contains("no longer exists"))),
        "the operator force-deleted the pod: {events:?}"
    );
    env.finish().await;
}

fn holds_result(pod: &Pod) -> bool {
    pod.finalizers().iter().any(|f| f == RESULT_FINALIZER)
}

/// Results are never lost: while the operator is down, the driver writes its result and exits,
/// and its pod is deleted. The result finalizer keeps the pod (Terminating, its termination
/// message readable); the restarted operator records `completed` with the result, then removes
/// the finalizer and the pod goes.
#[tokio::test]
async fn a_result_survives_its_pod_being_deleted_while_the_operator_is_down() {
    let mut env = env("e2e-result").await;
    let job = env.create(datajob("precious")).await;
    wait_state(&env.jobs, "precious", JobState::Running).await;
    let pods = wait_pods_running(&env.pods, &job, 1).await;
    let driver = pods[0].name_any();
    assert!(holds_result(&pods[0]), "{:?}", pods[0].metadata.finalizers);
    env.operator.kill();
    exit_pod(&env.pods, &driver, 0, MATERIALIZE_RESULT).await;
    wait_for(&env.pods, &driver, STEP, |p: &Pod| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Succeeded")
    })
    .await;
    // A finished pod is deleted at once (grace period 0): only the finalizer keeps it.
    let deleted = env
        .pods
        .delete(&driver, &DeleteParams::default())
        .await
        .expect("delete the driver pod");
    let held = deleted.left().expect("the pod is kept, not removed");
    assert!(held.metadata.deletion_timestamp.is_some() && holds_result(&held));
    env.operator.restart();
    let completed = wait_state(&env.jobs, "precious", JobState::Completed).await;
    let status = completed.status.expect("status");
    assert!(status.failures.is_empty(), "{:?}", status.failures);
    let result =
        serde_json::to_value(status.result.expect("the result is recorded")).expect("result json");
    assert_eq!(
        result["snapshotId"].as_u64(),
        Some(MATERIALIZE_SNAPSHOT_ID),
        "{result}"
    );
    wait_deleted(&env.pods, &driver, STEP).await;
    env.finish().await;
}

/// A pod whose DataJob is gone (its teardown finalizer removed by hand while the operator was
/// down) does not leak: the operator removes its result finalizer when it starts.
#[tokio::test]
async fn a_driver_pod_whose_datajob_is_gone_is_released() {
    let mut env = env("e2e-orphan").await;
    let job = env.create(datajob("abandoned").grace_period(1)).await;
    wait_state(&env.jobs, "abandoned", JobState::Running).await;
    let driver = wait_pods_running(&env.pods, &job, 1).await[0].name_any();
    env.operator.kill();
    let unfinalize = json!({ "metadata": { "finalizers": null } });
    env.jobs
        .patch(
            "abandoned",
            &PatchParams::default(),
            &Patch::Merge(&unfinalize),
        )
        .await
        .expect("remove the DataJob's finalizer by hand");
    env.jobs
        .delete("abandoned", &DeleteParams::background())
        .await
        .expect("delete the DataJob");
    wait_deleted(&env.jobs, "abandoned", STEP).await;
    // Garbage collection deletes the pod; its container is stopped after the grace period.
    let stuck = wait_for(&env.pods, &driver, STEP, |p: &Pod| {
        p.metadata.deletion_timestamp.is_some()
            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    })
    .await;
    assert!(holds_result(&stuck));
    env.operator.restart();
    wait_deleted(&env.pods, &driver, STEP).await;
    let released = "released an executor pod whose DataJob is gone";
    eventually(released, STEP, async || {
        env.operator.logged(released).then_some(())
    })
    .await;
    env.finish().await;
}
