//! The ComputePool status controller: records how many of a pool's jobs hold executors and
//! wait for a slot ([`crate::domain::pool::pool_status`]), with a Ready condition. It reads the
//! jobs of a pool from the DataJob cache's index (no list of its own, no scan of every job) and
//! is triggered by the shared pool and job watches (debounced; a job's removal is a watch event
//! too).

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tracing::warn;

use super::datajob::Stores;
use super::datajob::observe::now;
use super::kube_util::{self, Guard, backoff};
use crate::api::{ComputePool, DataJob};
use crate::domain::pool::{POOL_RESYNC, pool_status};

/// Errors of one pool reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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
    stores: Stores,
}

/// Runs the pool status controller until a shutdown signal. `jobs` and `pools` are the shared
/// watches' changes.
pub async fn run(
    client: Client,
    stores: Stores,
    jobs: impl Stream<Item = Arc<DataJob>> + Send + 'static,
    pools: impl Stream<Item = Arc<ComputePool>> + Send + 'static,
) {
    let pool_store = stores.pools.clone();
    let context = Arc::new(Context { client, stores });
    Controller::for_shared_stream(pools, pool_store)
        .with_config(controller::Config::default().debounce(Duration::from_millis(500)))
        .watches_shared_stream(jobs, |job: Arc<DataJob>| {
            job.spec.compute_pool.as_deref().map(ObjectRef::new)
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|_| async {})
        .await;
}

async fn reconcile(pool: Arc<ComputePool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let jobs = ctx.stores.jobs_in_pool(&pool.name_any());
    let status = pool_status(&pool, &jobs, Time(now()));
    // pool_status keeps the Ready condition's transition time, so an unchanged pool compares equal.
    if pool.status.as_ref() != Some(&status) {
        let api = Api::<ComputePool>::all(ctx.client.clone());
        kube_util::apply_status(&api, &*pool, &status, Guard::None)
            .await
            .map_err(|source| Error::WriteStatus {
                pool: pool.name_any(),
                source,
            })?;
    }
    Ok(Action::requeue(POOL_RESYNC))
}

fn error_policy(pool: Arc<ComputePool>, error: &Error, _: Arc<Context>) -> Action {
    warn!(pool = %pool.name_any(), %error, "pool reconcile failed");
    Action::requeue(backoff(2))
}
