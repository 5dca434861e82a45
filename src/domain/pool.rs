//! ComputePool status: how many of the pool's jobs hold executors (active) and wait for a slot
//! (queued), counted with the admission's [`PoolQueue`], and the pool's Ready condition.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use super::admission::PoolQueue;
use super::conditions::condition;
use super::model::{ConditionType, Reason};
use crate::api::{ComputePool, ComputePoolStatus, DataJob, condition as api_condition};

/// How often a pool's status is recomputed when nothing triggers it.
pub const POOL_RESYNC: Duration = Duration::from_secs(300);

/// The status of `pool` given the jobs the operator sees. The Ready condition keeps its
/// transition time, so an unchanged pool yields an equal status.
pub fn pool_status(pool: &ComputePool, jobs: &[Arc<DataJob>], now: Time) -> ComputePoolStatus {
    let queue = PoolQueue::new(&pool.name_any(), jobs, &HashSet::new());
    let (active, queued) = (queue.holders(), queue.waiting());
    let max = pool.spec.max_concurrent_jobs;
    let message = if max > 0 {
        format!("{active} of at most {max} job(s) hold executors; {queued} queued")
    } else {
        format!("{active} job(s) hold executors; no limit")
    };
    let previous = pool.status.clone().unwrap_or_default();
    let since = api_condition::find(&previous.conditions, ConditionType::Ready.as_str())
        .filter(|c| c.is_true())
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    let generation = pool.metadata.generation;
    ComputePoolStatus {
        active_jobs: i32::try_from(active).unwrap_or(i32::MAX),
        queued_jobs: i32::try_from(queued).unwrap_or(i32::MAX),
        observed_generation: generation,
        conditions: vec![condition(
            ConditionType::Ready,
            true,
            Reason::Accepting,
            message,
            since,
            generation,
        )],
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job(name: &str, status: serde_json::Value) -> Arc<DataJob> {
        Arc::new(
            serde_json::from_value(json!({
                "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
                "metadata": { "name": name, "namespace": "ns", "uid": name },
                "spec": { "type": "nql-forecast", "input": { "nql": "x" }, "dataPlane": "dp",
                          "computePool": "p" },
                "status": status,
            }))
            .expect("job"),
        )
    }

    #[test]
    fn counts_active_and_queued_jobs_and_an_unchanged_pool_compares_equal() {
        let mut pool: ComputePool = serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "ComputePool",
            "metadata": { "name": "p", "generation": 3 },
            "spec": { "maxConcurrentJobs": 1 },
        }))
        .expect("pool");
        let jobs = [
            job("a", json!({ "state": "running", "executor": "dj-a" })),
            job("b", json!({ "state": "pending" })),
            job("c", json!({ "state": "completed", "executor": "dj-c" })),
        ];
        let first = Time(jiff::Timestamp::from_second(1).expect("time"));
        let status = pool_status(&pool, &jobs, first.clone());
        assert_eq!((status.active_jobs, status.queued_jobs), (1, 1));
        assert_eq!(status.conditions[0].reason, "Accepting");
        pool.status = Some(status.clone());
        let later = Time(jiff::Timestamp::from_second(99).expect("time"));
        assert_eq!(pool_status(&pool, &jobs, later), status);
    }
}
