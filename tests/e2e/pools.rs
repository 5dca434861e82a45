//! Compute pools: jobs wait for a pool that does not exist yet, limited pools admit first come
//! first served, and pool status counts active and queued jobs.

use datajob_operator::api::{ComputePool, DataJob, JobState};
use kube::api::Api;
use serde_json::json;

use crate::support::*;
use crate::{cluster_namespace, create_pool, delete_pool, env, events_for};

fn reconciling_reason(job: &DataJob) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Reconciling" && c.is_true())
        .map(|c| c.reason.clone())
}

#[tokio::test]
async fn job_naming_a_missing_pool_waits_then_starts_when_the_pool_appears() {
    let mut env = env("e2e-late-pool").await;
    let pool = env.pool_name("late");
    let job = env.create(datajob("early").pool(&pool)).await;
    let waiting = wait_for(&env.jobs, "early", STEP, |j: &DataJob| {
        reconciling_reason(j).as_deref() == Some("WaitingForComputePool")
    })
    .await;
    assert_eq!(state(&waiting), "pending");
    let message = &waiting.status.as_ref().expect("status").conditions[0].message;
    assert!(message.contains(&pool), "{message}");
    assert!(job_pods(&env.pods, &job).await.is_empty());
    let events = events_for(&env.client, env.ns.name(), "early").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("WaitingForComputePool")
                && e.type_.as_deref() == Some("Warning")),
        "a Warning event tells the user the pool is missing"
    );
    create_pool(
        &env.client,
        &compute_pool(&pool, json!({ "clusterType": "shared" })),
    )
    .await;
    wait_state(&env.jobs, "early", JobState::Running).await;
    env.finish().await;
}

#[tokio::test]
async fn limited_pool_admits_first_come_first_served_and_reports_counts() {
    let (client, ns) = cluster_namespace("e2e-limit").await;
    // An all-namespaces instance (it writes pool status) limited to a data plane of its own.
    let plane = ns.name().to_string();
    let _operator = Operator::start_with(ns.name(), &["--data-plane", &plane]);
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let pods = Api::namespaced(client.clone(), ns.name());
    let pools: Api<ComputePool> = Api::all(client.clone());
    let pool = format!("limited-{}", ns.name());
    create_pool(
        &client,
        &compute_pool(&pool, json!({ "maxConcurrentJobs": 2 })),
    )
    .await;
    let names = ["q-0", "q-1", "q-2", "q-3"];
    for name in names {
        jobs.create(
            &Default::default(),
            &datajob(name).pool(&pool).data_plane(&plane).build(),
        )
        .await
        .expect("create job");
    }
    wait_state(&jobs, "q-0", JobState::Running).await;
    wait_state(&jobs, "q-1", JobState::Running).await;
    for name in ["q-2", "q-3"] {
        let queued = wait_for(&jobs, name, STEP, |j: &DataJob| {
            reconciling_reason(j).as_deref() == Some("Queued")
        })
        .await;
        assert!(
            queued.status.and_then(|s| s.executor).is_none(),
            "{name} holds no executor"
        );
    }
    wait_for(&pools, &pool, STEP, |p: &ComputePool| {
        p.status
            .as_ref()
            .is_some_and(|s| s.active_jobs == 2 && s.queued_jobs == 2)
    })
    .await;
    // q-0 finishes: the first queued job (q-2) takes its slot, q-3 keeps waiting.
    let first = jobs.get("q-0").await.expect("q-0");
    let driver = job_pods(&pods, &first).await;
    exit_pod(
        &pods,
        &kube::ResourceExt::name_any(&driver[0]),
        0,
        MATERIALIZE_RESULT,
    )
    .await;
    wait_state(&jobs, "q-0", JobState::Completed).await;
    wait_state(&jobs, "q-2", JobState::Running).await;
    let last = jobs.get("q-3").await.expect("q-3");
    assert_eq!(state(&last), "pending");
    assert!(last.status.and_then(|s| s.executor).is_none());
    wait_for(&pools, &pool, STEP, |p: &ComputePool| {
        p.status
            .as_ref()
            .is_some_and(|s| s.active_jobs == 2 && s.queued_jobs == 1)
    })
    .await;
    // Cancelling a queued job needs no teardown.
    cancel(&jobs, "q-3", "not needed").await;
    wait_state(&jobs, "q-3", JobState::Cancelled).await;
    ns.cleanup().await;
    delete_pool(&client, &pool).await;
}

#[tokio::test]
async fn a_namespaced_operator_queues_by_arrival_and_starts_the_next_job_when_a_slot_frees() {
    // A namespaced instance runs no pool status controller: nothing but the freed slot itself
    // can start the next job before its resync (300 s, beyond this test's waits).
    let mut env = env("e2e-arrival").await;
    let pool = env
        .own_pool("one-slot", json!({ "maxConcurrentJobs": 1 }))
        .await;
    // The jobs must reach the operator through its watch, not its first list (a list has no
    // order within a second; its jobs are ranked by name).
    let operator = &env.operator;
    eventually("the operator's caches to sync", STEP, async || {
        operator.logged("caches synced; ready").then_some(())
    })
    .await;
    // Created one after the other, most likely within one second, against the names' order.
    let names = ["c-z", "c-y", "c-x"];
    for name in names {
        env.create(datajob(name).pool(&pool)).await;
    }
    wait_state(&env.jobs, "c-z", JobState::Running).await;
    let mut arrivals = Vec::new();
    for name in ["c-y", "c-x"] {
        let queued = wait_for(&env.jobs, name, STEP, |j: &DataJob| {
            reconciling_reason(j).as_deref() == Some("Queued")
        })
        .await;
        arrivals.push(queued.status.and_then(|s| s.arrived_at).map(|t| t.0));
    }
    let first = env.jobs.get("c-z").await.expect("c-z");
    let first_arrival = first
        .status
        .as_ref()
        .and_then(|s| s.arrived_at.clone())
        .map(|t| t.0);
    assert!(
        first_arrival.is_some() && arrivals.iter().all(Option::is_some),
        "the watch delivered every job, so each records its arrival"
    );
    assert!(
        first_arrival < arrivals[0] && arrivals[0] < arrivals[1],
        "arrivals follow creation order: {first_arrival:?} {arrivals:?}"
    );
    let driver = job_pods(&env.pods, &first).await;
    exit_pod(
        &env.pods,
        &kube::ResourceExt::name_any(&driver[0]),
        0,
        MATERIALIZE_RESULT,
    )
    .await;
    wait_state(&env.jobs, "c-z", JobState::Completed).await;
    // c-y came before c-x (whose name sorts first) and takes the slot at once.
    wait_state(&env.jobs, "c-y", JobState::Running).await;
    let last = env.jobs.get("c-x").await.expect("c-x");
    assert_eq!(state(&last), "pending");
    assert!(last.status.and_then(|s| s.executor).is_none());
    cancel(&env.jobs, "c-x", "not needed").await;
    wait_state(&env.jobs, "c-x", JobState::Cancelled).await;
    env.finish().await;
}
