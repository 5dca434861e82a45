//! The operator's caches of DataJobs, executor pods and ComputePools. They run from start-up,
//! whether this replica leads or stands by, so readiness means "this process can serve"
//! (`/readyz` turns 200 once every cache has listed its objects, a standby too, so a rolling
//! update finishes) and a standby that takes over starts from warm caches.
//!
//! Readiness is taken from each watch's first `InitDone`, not from `Store::wait_until_ready`:
//! in kube-runtime 5 that future wakes only the task that polled it last, and the controller's
//! runner waits on the same store (docs/resilience.md). DataJobs and ComputePools are read
//! through `DeserializeGuard` ([`super::undecodable`]); pods are cached stripped
//! (`executor::cache::strip_pod`), DataJobs and ComputePools without managed fields and
//! annotations ([`lean_metadata`]). [`Cache::subscribe`] hands a controller every cached object,
//! then every change, and every object again after each (re-)list (unbounded, so a controller
//! that is not running never holds a watch back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use futures::{Stream, StreamExt, future};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ObjectMeta};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::datajob::{Config, Stores};
use super::index::{CacheIndex, JobIndex};
use super::undecodable::{self, Undecodable};
use crate::api::{ComputePool, DataJob};
use crate::executor;

/// What a cache can hold: a Kubernetes object of a static type.
pub trait Watched:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static
{
}

/// A watch's events, as a cache takes them.
type Events<K> = futures::stream::BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// One cache: a store, whether it has listed its objects once, its subscribers, and an index
/// kept beside the store, if it has one.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    synced: Arc<AtomicBool>,
    synced_signal: Arc<Notify>,
    subscribers: Arc<Mutex<Vec<UnboundedSender<Arc<K>>>>>,
    index: Option<Arc<dyn CacheIndex<K>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            store: self.store.clone(),
            synced: self.synced.clone(),
            synced_signal: self.synced_signal.clone(),
            subscribers: self.subscribers.clone(),
            index: self.index.clone(),
        }
    }
}

impl<K: Watched> Cache<K> {
    /// Starts feeding `events` into a new cache (on the current runtime), and into `index`.
    fn start(
        kind: &'static str,
        events: Events<K>,
        synced_signal: Arc<Notify>,
        index: Option<Arc<dyn CacheIndex<K>>>,
    ) -> Self {
        let writer: Writer<K> = Writer::default();
        let cache = Cache {
            store: writer.as_reader(),
            synced: Arc::new(AtomicBool::new(false)),
            synced_signal,
            subscribers: Arc::new(Mutex::new(Vec::new())),
            index,
        };
        tokio::spawn(reflect(kind, events, writer, cache.clone()));
        cache
    }

    /// The store (read-only).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Whether the cache has listed its objects at least once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// Every object in the cache now, then every object the watch touches from now on.
    pub fn subscribe(&self) -> impl Stream<Item = Arc<K>> + Send + 'static {
        let (sender, receiver) = mpsc::unbounded();
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        for obj in self.store.state() {
            let _ = sender.unbounded_send(obj);
        }
        subscribers.push(sender);
        receiver
    }

    fn publish(&self, obj: &Arc<K>) {
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.unbounded_send(obj.clone()).is_ok());
    }
}

/// Drives one watch into its store until the process ends.
async fn reflect<K: Watched>(
    kind: &'static str,
    mut events: Events<K>,
    mut writer: Writer<K>,
    cache: Cache<K>,
) {
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                warn!(cache = kind, %error, "watch failed; retrying with backoff");
                continue;
            }
        };
        // Whether the store holds this incarnation of an applied object, asked before it does.
        let new = match &event {
            watcher::Event::Apply(obj) => cache
                .store
                .get(&ObjectRef::from_obj(obj))
                .is_none_or(|cached| cached.meta().uid != obj.meta().uid),
            _ => false,
        };
        writer.apply_watcher_event(&event);
        if let Some(index) = &cache.index {
            match &event {
                watcher::Event::Apply(obj) => index.applied(obj, new),
                watcher::Event::Delete(obj) => index.deleted(obj),
                watcher::Event::InitDone => index.relisted(&cache.store.state()),
                watcher::Event::Init | watcher::Event::InitApply(_) => {}
            }
        }
        match &event {
            watcher::Event::InitDone => {
                // A (re-)list reaches the store only now, all at once: hand every object to
                // the subscribers from the store, so one that subscribed while the list was
                // read (its snapshot did not hold the listed objects yet) misses none.
                for obj in cache.store.state() {
                    cache.publish(&obj);
                }
                if !cache.synced.swap(true, Ordering::AcqRel) {
                    info!(cache = kind, "cache synced");
                    cache.synced_signal.notify_waiters();
                }
            }
            watcher::Event::Apply(obj) | watcher::Event::Delete(obj) => {
                cache.publish(&Arc::new(obj.clone()))
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => {}
        }
    }
}

/// The operator's three caches.
#[derive(Clone)]
pub struct Caches {
    /// DataJobs in scope.
    pub jobs: Cache<DataJob>,
    /// Executor pods in scope (label `app.kubernetes.io/managed-by=datajob-operator`).
    pub pods: Cache<Pod>,
    /// Every ComputePool.
    pub pools: Cache<ComputePool>,
    /// The DataJob cache's index (jobs by pool, arrivals).
    pub index: Arc<JobIndex>,
    synced_signal: Arc<Notify>,
}

impl Caches {
    /// Starts the watches the instance configured by `config` needs (on the current runtime).
    /// Objects that do not decode go to the returned stream, for [`undecodable::run`].
    pub fn start(client: &Client, config: &Config) -> (Self, UnboundedReceiver<Undecodable>) {
        let (report, reports) = mpsc::unbounded();
        let signal = Arc::new(Notify::new());
        // Pods are cached stripped to what observe reads (no env, spec, managed fields).
        let pods = watcher(scoped_api(client, config), pod_watch(config))
            .modify(executor::cache::strip_pod)
            .default_backoff()
            .boxed();
        let jobs = guarded(
            scoped_api(client, config),
            job_watch(config),
            report.clone(),
            undecodable::job_stand_in,
        );
        let pools = guarded(
            Api::all(client.clone()),
            watcher::Config::default().any_semantic(),
            report,
            undecodable::pool_stand_in,
        );
        let index = Arc::new(JobIndex::default());
        let job_index: Arc<dyn CacheIndex<DataJob>> = index.clone();
        let caches = Caches {
            jobs: Cache::start("datajobs", jobs, signal.clone(), Some(job_index)),
            pods: Cache::start("pods", pods, signal.clone(), None),
            pools: Cache::start("computepools", pools, signal.clone(), None),
            index,
            synced_signal: signal,
        };
        (caches, reports)
    }

    /// The stores the controllers read.
    pub fn stores(&self) -> Stores {
        Stores {
            jobs: self.jobs.store(),
            pods: self.pods.store(),
            pools: self.pools.store(),
            index: self.index.clone(),
        }
    }

    /// Whether every cache has listed its objects: the process can serve.
    pub fn are_synced(&self) -> bool {
        self.jobs.is_synced() && self.pods.is_synced() && self.pools.is_synced()
    }

    /// Waits until every cache has listed its objects.
    pub async fn wait_synced(&self) {
        loop {
            let signal = self.synced_signal.notified();
            tokio::pin!(signal);
            // Registered before the check, so a sync in between is not missed.
            signal.as_mut().enable();
            if self.are_synced() {
                return;
            }
            signal.await;
        }
    }
}

/// A watch that decodes through `DeserializeGuard`: an object that does not decode is reported
/// to `report` and left out (removed, if an earlier version was cached); the others go on.
fn guarded<K: Watched>(
    api: Api<DeserializeGuard<K>>,
    watch: watcher::Config,
    report: UnboundedSender<Undecodable>,
    stand_in: fn(ObjectMeta) -> Option<K>,
) -> Events<K> {
    watcher(api, watch)
        .default_backoff()
        .filter_map(move |event| {
            future::ready(match event {
                Ok(event) => undecodable::split(event, &report, stand_in).map(Ok),
                Err(error) => Some(Err(error)),
            })
        })
        .modify(lean_metadata)
        .boxed()
}

/// Drops what no controller reads from a cached object's metadata: managed fields (every
/// server-side apply of the status adds to them) and annotations (`kubectl apply` keeps the
/// whole last-applied manifest there, the query included), so a cached DataJob holds its
/// spec and status once.
pub fn lean_metadata<K: Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    meta.annotations = None;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn pod(name: &str) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_string());
        pod.metadata.namespace = Some("ns".to_string());
        pod
    }

    /// Waits (bounded) until the cache has applied what was sent.
    async fn settled(cache: &Cache<Pod>, listed: bool) {
        for _ in 0..200 {
            if cache.is_synced() == listed {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_subscriber_that_comes_while_the_list_is_read_gets_every_listed_object() {
        let (events, stream) = mpsc::unbounded();
        let cache = Cache::start(
            "pods",
            stream.map(Ok).boxed(),
            Arc::new(Notify::new()),
            None,
        );
        events.unbounded_send(watcher::Event::Init).expect("send");
        events
            .unbounded_send(watcher::Event::InitApply(pod("listed")))
            .expect("send");
        tokio::time::sleep(Duration::from_millis(20)).await;
        // The listed pod is not in the store yet: the snapshot cannot hold it.
        let mut subscriber = cache.subscribe();
        events
            .unbounded_send(watcher::Event::InitDone)
            .expect("send");
        settled(&cache, true).await;
        events
            .unbounded_send(watcher::Event::Apply(pod("created")))
            .expect("send");
        let first = tokio::time::timeout(Duration::from_secs(5), subscriber.next()).await;
        let second = tokio::time::timeout(Duration::from_secs(5), subscriber.next()).await;
        let names: Vec<String> = [first, second]
            .into_iter()
            .map(|p| {
                p.expect("in time")
                    .expect("an object")
                    .metadata
                    .name
                    .clone()
                    .unwrap_or_default()
            })
            .collect();
        assert_eq!(names, ["listed", "created"]);
    }

    #[test]
    fn cached_jobs_keep_labels_and_finalizers_but_not_managed_fields_or_annotations() {
        let mut job: DataJob = serde_json::from_value(serde_json::json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
            "metadata": {
                "name": "j", "namespace": "ns", "labels": { "team": "a" },
                "finalizers": ["datajob.dev/teardown"],
                "annotations": { "kubectl.kubernetes.io/last-applied-configuration": "{}" },
                "managedFields": [{ "manager": "datajob-operator", "operation": "Apply" }],
            },
            "spec": { "type": "nql-forecast", "input": { "nql": "x" }, "dataPlane": "dp" },
        }))
        .expect("job");
        lean_metadata(&mut job);
        assert!(job.metadata.managed_fields.is_none() && job.metadata.annotations.is_none());
        assert_eq!(job.metadata.labels.as_ref().map(|l| l.len()), Some(1));
        assert_eq!(job.metadata.finalizers.as_ref().map(|f| f.len()), Some(1));
    }
}
