//! The kube glue around the pure core (`crate::domain`): caches every replica keeps, and the
//! controllers a leader runs on them.
//!
//! ```text
//! caches (DataJobs, ComputePools: guarded decoding; executor pods: stripped)
//!   -> datajob: observe -> domain::decide -> apply -> DataJob status, pods, events
//!   -> pool:    domain::pool::pool_status           -> ComputePool status
//!   -> undecodable objects: Warning event, Stalled/InvalidSpec, teardown on deletion
//!   -> executor pods whose DataJob is gone: their result finalizer removed
//! ```
//!
//! [`caches`] run from start-up (readiness), [`datajob`] reconciles DataJobs, [`pool`] writes
//! ComputePool status (only in an instance that watches every namespace, since a namespaced
//! one cannot see a whole pool), [`result_finalizer`] removes the driver pods' result finalizer
//! (and releases orphaned pods), [`events`] publishes Kubernetes Events (keeping none), and
//! [`kube_util`] holds what both need from the API server.

pub mod caches;
pub mod datajob;
pub mod events;
pub mod index;
pub mod kube_util;
pub mod pool;
pub mod result_finalizer;
pub mod undecodable;

use std::sync::Arc;

use futures::channel::mpsc::UnboundedReceiver;
use futures::{StreamExt, future};
use kube::Client;

use crate::telemetry::Metrics;
pub use caches::Caches;
pub use datajob::{Config, FINALIZER, Stores};
use undecodable::Undecodable;

/// Runs the controllers on `caches` until a shutdown signal; `undecodable` is what the caches
/// could not decode (see [`Caches::start`]).
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    caches: Caches,
    undecodable: UnboundedReceiver<Undecodable>,
) {
    // Decide from complete caches only: before the pod and pool caches listed their objects,
    // a job would see its pods or its pool missing (a spurious WaitingForComputePool, a live
    // pod check for every running job).
    caches.wait_synced().await;
    let stores = caches.stores();
    metrics.count_jobs_with(crate::telemetry::count_jobs_in(stores.jobs.clone()));
    let pool_status = config
        .namespace
        .is_none()
        .then(|| (caches.jobs.subscribe(), caches.pools.subscribe()));
    let instance = config.instance.clone();
    // The DataJob cache is complete: a job missing from it is worth a GET.
    let orphans = result_finalizer::release_orphans(
        client.clone(),
        stores.clone(),
        caches.pods.subscribe(),
        caches.jobs.subscribe(),
    );
    let (context, wake) = datajob::Context::new(client.clone(), config, metrics, stores.clone());
    let triggers = datajob::Triggers {
        jobs: caches.jobs.subscribe().boxed(),
        pods: caches.pods.subscribe().boxed(),
        pools: caches.pools.subscribe().boxed(),
        wake,
    };
    let job_controller = datajob::run(context, triggers);
    let pool_controller =
        pool_status.map(|(jobs, pools)| pool::run(client.clone(), stores, jobs, pools));
    let controllers = async move {
        match pool_controller {
            Some(pool_controller) => {
                future::join(job_controller, pool_controller).await;
            }
            None => job_controller.await,
        }
    };
    tokio::select! {
        () = controllers => {}
        () = undecodable::run(client, instance, undecodable) => {}
        () = orphans => {}
    }
}
