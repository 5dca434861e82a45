//! Observe: turns the cluster's objects (the DataJob, its executor pods, its pool and the other
//! jobs of the pool) into the plain [`Observation`] that `decide` works on. Reads come from the
//! controller's caches; [`live_pods`] asks the API server directly when a decision depends on
//! pods being gone.

use std::collections::HashSet;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use super::decide::{Observation, ObservedPod, PodPhase, PoolView, Termination};
use super::error::Error;
use crate::api::{ComputePool, DataJob, JobState};
use crate::executor::{self, CONTAINER_NAME, LABEL_JOB_UID, Role};

/// The current time, truncated to whole seconds (the precision status times are stored with).
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Converts one executor pod.
pub fn observe_pod(pod: &Pod) -> ObservedPod {
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        _ => PodPhase::Pending,
    };
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER_NAME).or(cs.first()));
    let state = container.and_then(|c| c.state.as_ref());
    let termination = state
        .and_then(|s| s.terminated.as_ref())
        .map(|t| Termination {
            exit_code: t.exit_code,
            message: t.message.clone().unwrap_or_default(),
        });
    let started_at = state
        .and_then(|s| s.running.as_ref().and_then(|r| r.started_at.clone()))
        .or_else(|| state.and_then(|s| s.terminated.as_ref().and_then(|t| t.started_at.clone())))
        .map(|t| t.0);
    ObservedPod {
        name: pod.name_any(),
        role: pod
            .labels()
            .get(executor::LABEL_ROLE)
            .and_then(|r| Role::from_label(r)),
        phase,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        reason: status.and_then(|s| s.reason.clone()),
        message: status.and_then(|s| s.message.clone()),
        termination,
        started_at,
    }
}

/// The job's executor pods from the pod cache, sorted by name. Pod names are deterministic, so
/// this looks up the recorded executor's slots by name (not a scan of every cached pod); a
/// decision that needs to know that no pod at all is left confirms it with [`live_pods`].
pub fn cached_pods(pods: &Store<Pod>, job: &DataJob) -> Vec<ObservedPod> {
    let (Some(uid), Some(namespace)) = (job.uid(), job.namespace()) else {
        return Vec::new();
    };
    let Some(status) = &job.status else {
        return Vec::new();
    };
    let Some(executor) = &status.executor else {
        return Vec::new();
    };
    let cluster_type = status.cluster_type.unwrap_or_default();
    let workers = super::decide::workers(&job.spec);
    let mut observed: Vec<ObservedPod> = executor::pod_slots(executor, cluster_type, workers)
        .iter()
        .filter_map(|slot| pods.get(&ObjectRef::new(&slot.name).within(&namespace)))
        .filter(|p| p.labels().get(LABEL_JOB_UID) == Some(&uid))
        .map(|p| observe_pod(&p))
        .collect();
    observed.sort_by(|a, b| a.name.cmp(&b.name));
    observed
}

/// The job's executor pods read from the API server (a consistent read, not a cache).
pub async fn live_pods(pods: &Api<Pod>, job: &DataJob) -> Result<Vec<ObservedPod>, Error> {
    let uid = job.uid().unwrap_or_default();
    let list = pods
        .list(&ListParams::default().labels(&executor::job_pods_selector(&uid)))
        .await
        .map_err(|source| Error::ListPods {
            job: object_key(job),
            source,
        })?;
    let mut observed: Vec<ObservedPod> = list.items.iter().map(observe_pod).collect();
    observed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(observed)
}

/// Whether a job holds a slot in its pool: it has an executor and has not finished.
pub fn holds_slot(job: &DataJob) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| s.executor.is_some() && !s.state.is_some_and(JobState::is_terminal))
}

/// Whether a job waits for a slot: pending with no executor yet and not cancelled.
pub fn awaits_slot(job: &DataJob) -> bool {
    !job.spec.cancel
        && job.metadata.deletion_timestamp.is_none()
        && job.status.as_ref().is_none_or(|s| {
            s.executor.is_none() && s.state.is_none_or(|st| st == JobState::Pending)
        })
}

/// The pool's jobs in admission order: first come (creation time), first served.
pub fn queue_order(jobs: &mut [Arc<DataJob>]) {
    jobs.sort_by(|a, b| {
        let key = |j: &DataJob| {
            (
                j.metadata.creation_timestamp.clone().map(|t| t.0),
                j.namespace().unwrap_or_default(),
                j.name_any(),
            )
        };
        key(a).cmp(&key(b))
    });
}

/// Decides whether `job` may take a slot of `pool` now. `admitted_in_flight` holds uids the
/// operator admitted whose status the cache may not show yet; they count as holders.
pub fn admit(
    job: &DataJob,
    pool: &ComputePool,
    jobs: &[Arc<DataJob>],
    admitted_in_flight: &HashSet<String>,
) -> bool {
    let max = pool.spec.max_concurrent_jobs;
    let already_admitted = job
        .uid()
        .is_some_and(|uid| admitted_in_flight.contains(&uid));
    if max <= 0 || holds_slot(job) || already_admitted {
        return true;
    }
    let pool_name = pool.name_any();
    let in_pool: Vec<&Arc<DataJob>> = jobs
        .iter()
        .filter(|j| j.spec.compute_pool.as_deref() == Some(pool_name.as_str()))
        .collect();
    let holders = in_pool
        .iter()
        .filter(|j| holds_slot(j) || j.uid().is_some_and(|uid| admitted_in_flight.contains(&uid)))
        .count();
    let mut waiting: Vec<Arc<DataJob>> = in_pool
        .iter()
        .filter(|j| awaits_slot(j) && !j.uid().is_some_and(|uid| admitted_in_flight.contains(&uid)))
        .map(|j| Arc::clone(j))
        .collect();
    queue_order(&mut waiting);
    let rank = waiting
        .iter()
        .position(|j| j.uid() == job.uid())
        .unwrap_or(waiting.len());
    let free = usize::try_from(max).unwrap_or(0).saturating_sub(holders);
    rank < free
}

/// The pool view of a job, given the pool (if it exists) and whether the job is admitted.
pub fn pool_view(job: &DataJob, pool: Option<&ComputePool>, admitted: bool) -> PoolView {
    match (&job.spec.compute_pool, pool) {
        (None, _) => PoolView::NotRequested,
        (Some(name), None) => PoolView::Missing { name: name.clone() },
        (Some(name), Some(pool)) => PoolView::Present {
            name: name.clone(),
            cluster_type: pool.spec.cluster_type,
            admitted,
            max_concurrent_jobs: pool.spec.max_concurrent_jobs,
        },
    }
}

/// Builds the observation of one job.
pub fn observation(
    job: &DataJob,
    pods: Vec<ObservedPod>,
    pool: PoolView,
    now: Timestamp,
) -> Observation {
    Observation {
        now,
        name: job.name_any(),
        uid: job.uid().unwrap_or_default(),
        generation: job.meta().generation.unwrap_or(0),
        spec: job.spec.clone(),
        status: job.status.clone().unwrap_or_default(),
        pods,
        pool,
        rejection: None,
    }
}

/// `namespace/name` of an object, for messages.
pub fn object_key<K: Resource>(obj: &K) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or(""),
        obj.meta().name.as_deref().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use kube::api::ObjectMeta;
    use serde_json::json;

    use super::*;
    use crate::api::{ComputePool, DataJob};

    fn pool(max: i32) -> ComputePool {
        serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "ComputePool",
            "metadata": { "name": "p" },
            "spec": { "maxConcurrentJobs": max },
        }))
        .expect("pool")
    }

    fn job(name: &str, created: i64, executor: bool) -> Arc<DataJob> {
        let mut job: DataJob = serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
            "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}") },
            "spec": { "type": "nql-forecast", "input": { "nql": "x" }, "dataPlane": "dp", "computePool": "p" },
            "status": { "state": if executor { "running" } else { "pending" } },
        }))
        .expect("job");
        job.metadata = ObjectMeta {
            creation_timestamp: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                jiff::Timestamp::from_second(created).expect("time"),
            )),
            ..job.metadata
        };
        if executor && let Some(status) = job.status.as_mut() {
            status.executor = Some(format!("dj-{name}"));
        }
        Arc::new(job)
    }

    #[test]
    fn the_oldest_waiting_jobs_take_the_free_slots() {
        let jobs = vec![job("a", 1, true), job("b", 3, false), job("c", 2, false)];
        let none = HashSet::new();
        assert!(admit(&jobs[2], &pool(2), &jobs, &none), "c is older than b");
        assert!(!admit(&jobs[1], &pool(2), &jobs, &none));
        assert!(admit(&jobs[1], &pool(3), &jobs, &none));
        assert!(admit(&jobs[1], &pool(0), &jobs, &none), "0 means unlimited");
    }

    #[test]
    fn admissions_not_yet_in_the_cache_count_and_stay_admitted() {
        let jobs = vec![job("a", 1, false), job("b", 2, false), job("c", 3, false)];
        let in_flight: HashSet<String> = ["uid-a".to_string(), "uid-b".to_string()].into();
        assert!(admit(&jobs[0], &pool(2), &jobs, &in_flight));
        assert!(admit(&jobs[1], &pool(2), &jobs, &in_flight));
        assert!(
            !admit(&jobs[2], &pool(2), &jobs, &in_flight),
            "both slots are taken"
        );
    }
}
