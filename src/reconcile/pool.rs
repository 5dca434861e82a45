//! The ComputePool status controller: counts the pool's jobs that hold executors (active) and
//! that wait for a slot (queued), and records them with a Ready condition. A pool is reconciled
//! when it changes and when any DataJob naming it changes (debounced), and it reads the pool's
//! jobs with a field selector on `spec.computePool`, so the counts cover every namespace.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde_json::json;
use tracing::warn;

use super::error::backoff;
use super::observe::{awaits_slot, holds_slot};
use crate::OPERATOR_NAME;
use crate::api::{ComputePool, ComputePoolStatus, Condition, DataJob, condition};

/// Errors of one pool reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing the pool's jobs failed.
    #[error("failed to list DataJobs of compute pool {pool}: {source}")]
    ListJobs {
        /// The pool.
        pool: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the pool's status failed.
    #[error("failed to write status of compute pool {pool}: {source}")]
    WriteStatus {
        /// The pool.
        pool: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
}

struct Context {
    client: Client,
}

/// The status of a pool with the given jobs (pure).
pub fn pool_status(pool: &ComputePool, jobs: &[DataJob], now: Time) -> ComputePoolStatus {
    let active = jobs.iter().filter(|j| holds_slot(j)).count();
    let queued = jobs
        .iter()
        .filter(|j| awaits_slot(j) && !holds_slot(j))
        .count();
    let previous = pool.status.clone().unwrap_or_default();
    let max = pool.spec.max_concurrent_jobs;
    let message = if max > 0 {
        format!("{active} of at most {max} job(s) hold executors; {queued} queued")
    } else {
        format!("{active} job(s) hold executors; no limit")
    };
    let last_transition_time = condition::find(&previous.conditions, "Ready")
        .filter(|c| c.is_true())
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(now);
    ComputePoolStatus {
        active_jobs: i32::try_from(active).unwrap_or(i32::MAX),
        queued_jobs: i32::try_from(queued).unwrap_or(i32::MAX),
        observed_generation: pool.metadata.generation,
        conditions: vec![Condition {
            type_: "Ready".to_string(),
            status: "True".to_string(),
            reason: "Accepting".to_string(),
            message,
            last_transition_time,
            observed_generation: pool.metadata.generation,
        }],
    }
}

async fn reconcile(pool: Arc<ComputePool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let name = pool.name_any();
    let jobs = Api::<DataJob>::all(ctx.client.clone())
        .list(&ListParams::default().fields(&format!("spec.computePool={name}")))
        .await
        .map_err(|source| Error::ListJobs {
            pool: name.clone(),
            source,
        })?
        .items;
    let now = Time(super::observe::now());
    let status = pool_status(&pool, &jobs, now);
    // pool_status keeps the Ready condition's transition time, so an unchanged pool compares equal.
    let unchanged = pool.status.as_ref() == Some(&status);
    if !unchanged {
        let patch = json!({
            "apiVersion": ComputePool::api_version(&()),
            "kind": ComputePool::kind(&()),
            "metadata": { "name": name },
            "status": status,
        });
        Api::<ComputePool>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(OPERATOR_NAME).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| Error::WriteStatus { pool: name, source })?;
    }
    Ok(Action::requeue(Duration::from_secs(300)))
}

fn error_policy(pool: Arc<ComputePool>, error: &Error, _: Arc<Context>) -> Action {
    warn!(pool = %pool.name_any(), %error, "pool reconcile failed");
    Action::requeue(backoff(2))
}

/// Runs the pool status controller until a shutdown signal.
pub async fn run(client: Client) {
    let pools: Api<ComputePool> = Api::all(client.clone());
    let jobs: Api<DataJob> = Api::all(client.clone());
    Controller::new(pools, watcher::Config::default())
        .with_config(
            kube::runtime::controller::Config::default().debounce(Duration::from_millis(500)),
        )
        .watches(
            jobs,
            watcher::Config::default().any_semantic(),
            |job: DataJob| job.spec.compute_pool.map(|pool| ObjectRef::new(&pool)),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, Arc::new(Context { client }))
        .for_each(|_| async {})
        .await;
}
