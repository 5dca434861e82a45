//! The kube glue around the pure core (`crate::domain`): one watch per kind, shared by two
//! controllers.
//!
//! ```text
//! watches (DataJobs, ComputePools: shared reflectors; executor pods)
//!   -> datajob: observe -> domain::decide -> apply -> DataJob status, pods, events
//!   -> pool:    domain::pool::pool_status           -> ComputePool status
//! ```
//!
//! [`datajob`] reconciles DataJobs, [`pool`] writes ComputePool status (only in an instance
//! that watches every namespace, since a namespaced one cannot see a whole pool), and
//! [`kube_util`] holds what both need from the API server.

pub mod datajob;
pub mod kube_util;
pub mod pool;
pub mod undecodable;

use std::sync::Arc;

use futures::channel::mpsc::UnboundedSender;
use futures::{Stream, StreamExt, future};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::api::ObjectMeta;
use kube::core::DeserializeGuard;
use kube::runtime::reflector;
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::executor;
use crate::telemetry::Metrics;
pub use datajob::{Config, FINALIZER, Stores};

/// How many changes a shared watch buffers for each controller that follows it.
const SHARED_BUFFER: usize = 1024;

/// Runs the controllers until a shutdown signal. `ready` is called once the caches are synced.
pub async fn run(
    client: Client,
    config: Config,
    metrics: Arc<Metrics>,
    ready: impl FnOnce() + Send + 'static,
) {
    let (jobs, job_writer) = reflector::store_shared(SHARED_BUFFER);
    let (pools, pool_writer) = reflector::store_shared(SHARED_BUFFER);
    let (pods, pod_writer) = reflector::store();
    let stores = Stores { jobs, pods, pools };
    metrics.count_jobs_with(crate::telemetry::count_jobs_in(stores.jobs.clone()));
    tokio::spawn(signal_ready(stores.clone(), ready));
    // Subscribe before the watches start; a subscriber nobody reads would stall its watch.
    let pool_status = config
        .namespace
        .is_none()
        .then(|| (subscribe(&job_writer), subscribe(&pool_writer)));
    let (job_changes, pool_changes) = (subscribe(&job_writer), subscribe(&pool_writer));
    let pod_changes = pod_changes(&client, &config, pod_writer);
    let (report, reports) = futures::channel::mpsc::unbounded();
    let watches = future::join3(
        feed(
            scoped_api(&client, &config),
            job_watch(&config),
            job_writer,
            report.clone(),
            undecodable::job_stand_in,
        ),
        feed(
            Api::all(client.clone()),
            Default::default(),
            pool_writer,
            report,
            undecodable::pool_stand_in,
        ),
        undecodable::run(client.clone(), config.instance.clone(), reports),
    );
    let (context, wakeups) = datajob::Context::new(client.clone(), config, metrics, stores.clone());
    let triggers = datajob::Triggers {
        jobs: job_changes.boxed(),
        pods: pod_changes.boxed(),
        pools: pool_changes.boxed(),
        wake: wakeups.jobs,
    };
    let job_controller = datajob::run(context, triggers);
    // Without a pool status controller the wake-ups for it are dropped here, not queued.
    let pool_controller =
        pool_status.map(|(jobs, pools)| pool::run(client, stores, jobs, pools, wakeups.pools));
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
        _ = watches => {}
    }
}

/// Calls `ready` once every cache has its first full list.
async fn signal_ready(stores: Stores, ready: impl FnOnce()) {
    let synced = stores.jobs.wait_until_ready().await.is_ok()
        && stores.pods.wait_until_ready().await.is_ok()
        && stores.pools.wait_until_ready().await.is_ok();
    if synced {
        info!("caches synced; reconciling");
        ready();
    }
}

/// An API for the namespace the instance watches, or for all namespaces.
fn scoped_api<K>(client: &Client, config: &Config) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match &config.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Changes of the executor pods; the job controller's pod cache follows them.
fn pod_changes(
    client: &Client,
    config: &Config,
    writer: Writer<Pod>,
) -> impl Stream<Item = Result<Pod, watcher::Error>> + Send + 'static {
    // Pods are cached stripped to what observe reads (no env, spec, managed fields).
    let watch =
        watcher(scoped_api(client, config), pod_watch(config)).modify(executor::cache::strip_pod);
    reflector::reflector(writer, watch)
        .default_backoff()
        .touched_objects()
}

/// The DataJob watch: every job in scope, or one data plane's (a field selector).
fn job_watch(config: &Config) -> watcher::Config {
    let watch = watcher::Config::default().any_semantic();
    match &config.data_plane {
        Some(plane) => watch.fields(&format!("spec.dataPlane={plane}")),
        None => watch,
    }
}

/// The executor pod watch: the pods the operator manages (of one data plane, when set).
fn pod_watch(config: &Config) -> watcher::Config {
    let mut selector = executor::managed_pods_selector();
    if let Some(plane) = &config.data_plane {
        selector.push_str(&format!(",{}={plane}", executor::LABEL_DATA_PLANE));
    }
    watcher::Config::default().labels(&selector).any_semantic()
}

/// Keeps a shared store up to date from a watch (retried with backoff); never ends. The watch
/// decodes through `DeserializeGuard`: an object that does not decode is reported to
/// [`undecodable`] and left out of the store, and the others go on.
async fn feed<K>(
    api: Api<DeserializeGuard<K>>,
    watch: watcher::Config,
    writer: Writer<K>,
    report: UnboundedSender<undecodable::Undecodable>,
    stand_in: fn(ObjectMeta) -> Option<K>,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    watcher(api, watch)
        .default_backoff()
        .filter_map(move |event| {
            future::ready(match event {
                Ok(event) => undecodable::split(event, &report, stand_in).map(Ok),
                Err(error) => Some(Err(error)),
            })
        })
        .reflect_shared(writer)
        .for_each(|event| async move {
            if let Err(error) = event {
                warn!(%error, kind = %K::kind(&()), "watch failed; retrying");
            }
        })
        .await;
}

/// The changes of a shared store, as one controller's trigger.
fn subscribe<K>(writer: &Writer<K>) -> impl Stream<Item = Arc<K>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    // A store made by store_shared always has subscribers; this never yields None.
    futures::stream::iter(writer.subscribe()).flatten()
}
