//! Admission to a limited compute pool: which jobs hold a slot, which wait for one, the order
//! they wait in, and the one [`admit`] decision. The DataJob controller admits with it; the
//! ComputePool status counts the same [`PoolQueue`].

use std::collections::HashSet;
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::{ComputePool, DataJob, JobState};

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

/// Whether an admission the operator made is still in flight (the job was admitted but the
/// cache does not show it holding a slot yet); once not, the admission is forgotten.
pub fn still_in_flight(job: &DataJob) -> bool {
    !holds_slot(job) && awaits_slot(job)
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

/// The jobs of one pool: how many hold a slot and who waits, in queue order. Admissions in
/// flight count as holders, not as waiting.
pub struct PoolQueue {
    holders: usize,
    waiting: Vec<Arc<DataJob>>,
}

impl PoolQueue {
    /// The queue of pool `pool` among `jobs`.
    pub fn new(pool: &str, jobs: &[Arc<DataJob>], in_flight: &HashSet<String>) -> Self {
        let is_in_flight = |j: &DataJob| j.uid().is_some_and(|uid| in_flight.contains(&uid));
        let in_pool = jobs
            .iter()
            .filter(|j| j.spec.compute_pool.as_deref() == Some(pool));
        let holders = in_pool
            .clone()
            .filter(|j| holds_slot(j) || is_in_flight(j))
            .count();
        let mut waiting: Vec<Arc<DataJob>> = in_pool
            .filter(|j| awaits_slot(j) && !is_in_flight(j))
            .cloned()
            .collect();
        queue_order(&mut waiting);
        PoolQueue { holders, waiting }
    }

    /// Jobs holding a slot.
    pub fn holders(&self) -> usize {
        self.holders
    }

    /// Jobs waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The job's place in the queue (0 is next); the end of the queue when it is not in it.
    fn rank(&self, job: &DataJob) -> usize {
        self.waiting
            .iter()
            .position(|j| j.uid() == job.uid())
            .unwrap_or(self.waiting.len())
    }
}

/// The admission, when the queue does not matter: the pool is unlimited or the job already
/// holds a slot (admitted), or the job is not a recorded pending job waiting for a slot (not
/// admitted; a job still being initialized does not compete yet). None when the job competes.
pub fn settled(job: &DataJob, pool: &ComputePool) -> Option<bool> {
    if pool.spec.max_concurrent_jobs <= 0 || holds_slot(job) {
        return Some(true);
    }
    let pending = job.status.as_ref().and_then(|s| s.state) == Some(JobState::Pending);
    if !pending || !awaits_slot(job) {
        return Some(false);
    }
    None
}

/// Decides whether `job` may take a slot of `pool` now. `in_flight` holds uids the operator
/// admitted whose status the cache may not show yet; they count as holders and stay admitted.
pub fn admit(
    job: &DataJob,
    pool: &ComputePool,
    jobs: &[Arc<DataJob>],
    in_flight: &HashSet<String>,
) -> bool {
    if let Some(admitted) = settled(job, pool) {
        return admitted;
    }
    if job.uid().is_some_and(|uid| in_flight.contains(&uid)) {
        return true;
    }
    let queue = PoolQueue::new(&pool.name_any(), jobs, in_flight);
    let max = usize::try_from(pool.spec.max_concurrent_jobs).unwrap_or(0);
    queue.rank(job) < max.saturating_sub(queue.holders())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
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
        job.metadata.creation_timestamp =
            Some(Time(jiff::Timestamp::from_second(created).expect("time")));
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

    #[test]
    fn the_queue_counts_holders_and_waiting_jobs_of_its_pool_only() {
        let mut other = (*job("x", 1, false)).clone();
        other.spec.compute_pool = Some("elsewhere".to_string());
        let jobs = vec![job("a", 1, true), job("b", 2, false), Arc::new(other)];
        let queue = PoolQueue::new("p", &jobs, &HashSet::new());
        assert_eq!((queue.holders(), queue.waiting()), (1, 1));
    }
}
