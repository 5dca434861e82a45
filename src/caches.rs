//! The operator's caches of DataJobs, executor pods and ComputePools. They run from start-up,
//! whether this replica leads or stands by, so that:
//!
//! - readiness means "this process can serve": `/readyz` turns 200 once every cache has
//!   listed its objects (a standby too, so a rolling update of several replicas finishes);
//! - a standby that takes over starts reconciling from warm caches.
//!
//! Readiness is recorded by watching the watch streams for their first `InitDone`, not with
//! `Store::wait_until_ready`: in kube-runtime 5 that future wakes only the task that polled it
//! last (the store's one-shot channel keeps a single waker), and the controller's own runner
//! waits on the same store, so a second waiter can sleep forever (docs/resilience.md).
//!
//! A controller subscribes with [`Cache::subscribe`]: it gets every object in the cache at that
//! moment, then every object the watch touches (unbounded, so a slow controller never holds the
//! watch back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::api::{ComputePool, DataJob};
use crate::executor;

/// What the caches hold.
#[derive(Clone, Debug, Default)]
pub struct Scope {
    /// Namespace of the DataJobs and pods; None: all namespaces.
    pub namespace: Option<String>,
    /// Only DataJobs (field selector) and pods (label) of this data plane.
    pub data_plane: Option<String>,
}

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

/// One cache: a store, whether it has listed its objects once, and its subscribers.
pub struct Cache<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    synced: Arc<AtomicBool>,
    synced_signal: Arc<Notify>,
    subscribers: Arc<Mutex<Vec<mpsc::UnboundedSender<Arc<K>>>>>,
}

impl<K: Resource<DynamicType = ()> + Clone + 'static> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Cache {
            store: self.store.clone(),
            synced: self.synced.clone(),
            synced_signal: self.synced_signal.clone(),
            subscribers: self.subscribers.clone(),
        }
    }
}

impl<K: Watched> Cache<K> {
    /// Starts watching `api` into a new cache (on the current runtime).
    fn start(
        kind: &'static str,
        api: Api<K>,
        config: watcher::Config,
        synced_signal: Arc<Notify>,
    ) -> Self {
        let writer: Writer<K> = Writer::default();
        let cache = Cache {
            store: writer.as_reader(),
            synced: Arc::new(AtomicBool::new(false)),
            synced_signal,
            subscribers: Arc::new(Mutex::new(Vec::new())),
        };
        tokio::spawn(reflect(kind, api, config, writer, cache.clone()));
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

    fn publish(&self, obj: &K) {
        let obj = Arc::new(obj.clone());
        let mut subscribers = self.subscribers.lock().unwrap_or_else(|e| e.into_inner());
        subscribers.retain(|s| s.unbounded_send(obj.clone()).is_ok());
    }
}

/// Drives one watch into its store until the process ends.
async fn reflect<K: Watched>(
    kind: &'static str,
    api: Api<K>,
    config: watcher::Config,
    mut writer: Writer<K>,
    cache: Cache<K>,
) {
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                warn!(cache = kind, %error, "watch failed; retrying with backoff");
                continue;
            }
        };
        writer.apply_watcher_event(&event);
        match &event {
            watcher::Event::InitDone => {
                if !cache.synced.swap(true, Ordering::AcqRel) {
                    info!(cache = kind, "cache synced");
                    cache.synced_signal.notify_waiters();
                }
            }
            watcher::Event::Apply(obj)
            | watcher::Event::Delete(obj)
            | watcher::Event::InitApply(obj) => cache.publish(obj),
            watcher::Event::Init => {}
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
    synced_signal: Arc<Notify>,
}

impl Caches {
    /// Starts the watches (on the current runtime).
    pub fn start(client: &Client, scope: &Scope) -> Self {
        let (jobs_api, pods_api): (Api<DataJob>, Api<Pod>) = match &scope.namespace {
            Some(ns) => (
                Api::namespaced(client.clone(), ns),
                Api::namespaced(client.clone(), ns),
            ),
            None => (Api::all(client.clone()), Api::all(client.clone())),
        };
        let mut job_watch = watcher::Config::default().any_semantic();
        let mut pod_selector = executor::managed_pods_selector();
        if let Some(plane) = &scope.data_plane {
            job_watch = job_watch.fields(&format!("spec.dataPlane={plane}"));
            pod_selector.push_str(&format!(",{}={plane}", executor::LABEL_DATA_PLANE));
        }
        let pod_watch = watcher::Config::default()
            .labels(&pod_selector)
            .any_semantic();
        let signal = Arc::new(Notify::new());
        Caches {
            jobs: Cache::start("datajobs", jobs_api, job_watch, signal.clone()),
            pods: Cache::start("pods", pods_api, pod_watch, signal.clone()),
            pools: Cache::start(
                "computepools",
                Api::all(client.clone()),
                watcher::Config::default().any_semantic(),
                signal.clone(),
            ),
            synced_signal: signal,
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
