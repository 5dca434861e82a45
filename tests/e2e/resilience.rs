//! Failures around a job: executor pods lost, deadlines, TTL clean-up, and an operator replica
//! dying while it leads.

use std::time::Duration;

use datajob_operator::api::{DataJob, JobState};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams};
use serde_json::json;

use crate::support::*;
use crate::{cluster_namespace, env};

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
