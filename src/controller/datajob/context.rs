//! What every DataJob reconcile shares: the API client, the operator's configuration, the
//! caches (reflector stores), the event recorder, the metrics, and three side tables behind a
//! small typed API: admissions in flight, consecutive failures (for backoff) and pod
//! rejections. [`Context::new`] is the one constructor, used by `run` and by the unit tests.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::channel::mpsc::{self, UnboundedReceiver, UnboundedSender};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};

use crate::api::{ComputePool, DataJob};
use crate::controller::events::Publisher;
use crate::controller::index::JobIndex;
use crate::domain::{Cause, NodeView, admission};
use crate::executor::ExecutorDefaults;
use crate::telemetry::Metrics;

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Namespace to watch; None watches all.
    pub namespace: Option<String>,
    /// Only reconcile DataJobs of this data plane (a field selector on spec.dataPlane).
    pub data_plane: Option<String>,
    /// Executor image when neither the job nor its pool sets one.
    pub executor_image: String,
    /// Reconciles running at once.
    pub concurrency: u16,
    /// Identity of this instance in events (for example the pod name).
    pub instance: Option<String>,
    /// Image prefixes executor pods may use (`--allowed-image-prefix`); empty allows every
    /// image unless the job's pool lists `allowedImages`.
    pub allowed_image_prefixes: Vec<String>,
}

/// The caches the controllers read from.
#[derive(Clone)]
pub struct Stores {
    /// DataJobs (every namespace, or the one watched).
    pub jobs: Store<DataJob>,
    /// Executor pods the operator manages.
    pub pods: Store<Pod>,
    /// ComputePools.
    pub pools: Store<ComputePool>,
    /// The DataJob cache's index: jobs by pool, arrivals.
    pub index: Arc<JobIndex>,
}

impl Stores {
    /// The cached jobs of `pool` (an index lookup, not a scan of every job).
    pub fn jobs_in_pool(&self, pool: &str) -> Vec<Arc<DataJob>> {
        self.index.jobs_in_pool(pool, &self.jobs)
    }
}

/// A table shared by concurrent reconciles. A reconcile that panicked while holding the lock
/// leaves the table as it was; the next one goes on with it.
struct Table<T>(Mutex<T>);

impl<T: Default> Table<T> {
    fn new() -> Self {
        Table(Mutex::new(T::default()))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// How long a created pod counts as existing while the pod cache does not show it.
const POD_CACHE_LAG: Duration = Duration::from_secs(30);

/// Whether a change this instance made to `key` is still on its way to the cache: noted less
/// than [`POD_CACHE_LAG`] ago and not `seen` yet. Forgets it once seen or too old.
fn pending(changes: &mut HashMap<String, Instant>, key: &str, seen: bool) -> bool {
    let recent = !seen
        && changes
            .get(key)
            .is_some_and(|at| at.elapsed() < POD_CACHE_LAG);
    if !recent {
        changes.remove(key);
    }
    recent
}

/// What every reconcile shares.
pub struct Context {
    pub(super) client: Client,
    pub(super) config: Config,
    pub(super) defaults: ExecutorDefaults,
    pub(super) stores: Stores,
    pub(super) events: Publisher,
    pub(super) metrics: Arc<Metrics>,
    /// uids of jobs admitted into a limited pool whose admission the cache may not show yet,
    /// by pool.
    in_flight: Table<HashMap<String, HashSet<String>>>,
    /// uids of the jobs the cache last showed holding a slot of a limited pool's queue, for
    /// [`Context::job_changed`].
    holders: Table<HashSet<String>>,
    /// Consecutive failures per job key, for backoff.
    failures: Table<HashMap<String, u32>>,
    /// Why the API server rejected a job's executor pod, by job uid, until the job records it.
    rejections: Table<HashMap<String, String>>,
    /// Why the API server last refused an executor pod for a reason that may pass (403), by
    /// job uid, until a creation succeeds or the job ends.
    create_refusals: Table<HashMap<String, Cause>>,
    /// Pods squatting on an executor's names, by job uid, until the job records its failure.
    conflicts: Table<HashMap<String, String>>,
    /// The resourceVersions a job had before this instance's last writes to it, by job uid,
    /// until the cache shows a newer one: a pass on such a version would decide from a view
    /// older than the operator's own write.
    superseded: Table<HashMap<String, Vec<String>>>,
    /// Executor pods created by this instance that the pod cache does not show yet, by
    /// `namespace/name`, with when they were created.
    created: Table<HashMap<String, Instant>>,
    /// Executor pods deleted by this instance that the cache does not show terminating yet.
    deleted: Table<HashMap<String, Instant>>,
    /// Executor pods whose result finalizer this instance removed while the cache still shows it.
    released: Table<HashMap<String, Instant>>,
    /// Nodes of stuck-looking pods as last read, with when: many jobs torn down at once on one
    /// node read it once per [`NODE_READ_TTL`], not once per job and pass.
    nodes: Table<HashMap<String, (Instant, NodeView)>>,
    wake_jobs: UnboundedSender<ObjectRef<DataJob>>,
}

/// How long a node read for a teardown judgement is reused.
const NODE_READ_TTL: Duration = Duration::from_secs(5);

impl Context {
    /// The context, and the stream of reconcile requests it raises (jobs a freed slot admits).
    pub fn new(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
        stores: Stores,
    ) -> (Self, UnboundedReceiver<ObjectRef<DataJob>>) {
        let (wake_jobs, wakeups) = mpsc::unbounded();
        let context = Context {
            events: Publisher::new(
                client.clone(),
                crate::OPERATOR_NAME,
                config.instance.as_deref(),
            ),
            client,
            defaults: ExecutorDefaults {
                image: config.executor_image.clone(),
            },
            config,
            stores,
            metrics,
            in_flight: Table::new(),
            holders: Table::new(),
            failures: Table::new(),
            rejections: Table::new(),
            create_refusals: Table::new(),
            conflicts: Table::new(),
            superseded: Table::new(),
            created: Table::new(),
            deleted: Table::new(),
            released: Table::new(),
            nodes: Table::new(),
            wake_jobs,
        };
        (context, wakeups)
    }

    /// A node's view read less than [`NODE_READ_TTL`] ago.
    pub(super) fn recent_node(&self, name: &str) -> Option<NodeView> {
        self.nodes.with(|nodes| {
            nodes.retain(|_, (at, _)| at.elapsed() < NODE_READ_TTL);
            nodes.get(name).map(|(_, view)| view.clone())
        })
    }

    /// Notes a node's view as just read.
    pub(super) fn node_read(&self, name: &str, view: &NodeView) {
        self.nodes
            .with(|nodes| nodes.insert(name.to_string(), (Instant::now(), view.clone())));
    }

    pub(super) fn jobs_api(&self, namespace: &str) -> Api<DataJob> {
        Api::namespaced(self.client.clone(), namespace)
    }

    pub(super) fn pods_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The job's pool from the cache, if it names one that exists.
    pub(super) fn pool(&self, job: &DataJob) -> Option<Arc<ComputePool>> {
        let name = job.spec.compute_pool.as_deref()?;
        self.stores.pools.get(&ObjectRef::new(name))
    }

    /// Whether the job may hold executors in `pool` now ([`admission::admit`]), remembering an
    /// admission until the cache shows it, so concurrent reconciles cannot over-admit. Reads
    /// the pool's jobs only.
    pub(super) fn admit(&self, job: &DataJob, pool: &ComputePool) -> bool {
        if let Some(admitted) = admission::settled(job, pool) {
            return admitted;
        }
        let name = pool.name_any();
        let jobs = self.stores.jobs_in_pool(&name);
        let arrivals = self.stores.index.arrivals_of(&jobs);
        self.with_in_flight(&name, &jobs, |in_flight| {
            let admitted = admission::admit(job, pool, &jobs, in_flight, &arrivals);
            if admitted && let Some(uid) = job.uid() {
                in_flight.insert(uid);
            }
            admitted
        })
    }

    /// Runs `f` on the admissions in flight into `pool`, after forgetting those the cache now
    /// shows (or whose job is gone or stopped waiting) among the pool's `jobs`.
    fn with_in_flight<R>(
        &self,
        pool: &str,
        jobs: &[Arc<DataJob>],
        f: impl FnOnce(&mut HashSet<String>) -> R,
    ) -> R {
        self.in_flight.with(|in_flight| {
            let pending: HashSet<String> = jobs
                .iter()
                .filter(|j| admission::still_in_flight(j))
                .filter_map(|j| j.uid())
                .collect();
            let admitted = in_flight.entry(pool.to_string()).or_default();
            admitted.retain(|uid| pending.contains(uid));
            let result = f(admitted);
            if admitted.is_empty() {
                in_flight.remove(pool);
            }
            result
        })
    }

    /// Counts a failed reconcile of `key`; returns how many failed before it in a row.
    pub(super) fn record_failure(&self, key: &str) -> u32 {
        self.failures.with(|failures| {
            let count = failures.entry(key.to_string()).or_insert(0);
            *count = count.saturating_add(1);
            *count - 1
        })
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub(super) fn reset_failures(&self, key: &str) {
        self.failures.with(|failures| failures.remove(key));
    }

    /// Remembers why the API server rejected the executor pod of job `uid`.
    pub(super) fn record_rejection(&self, uid: &str, message: &str) {
        self.rejections
            .with(|rejections| rejections.insert(uid.to_string(), message.to_string()));
    }

    /// Why the API server rejected the executor pod of job `uid`, if it did.
    pub(super) fn rejection(&self, uid: &str) -> Option<String> {
        self.rejections
            .with(|rejections| rejections.get(uid).cloned())
    }

    /// Remembers (`Some`) or forgets (`None`) why creating job `uid`'s executor pod was
    /// refused for a reason that may pass.
    pub(super) fn set_create_refusal(&self, uid: &str, refusal: Option<Cause>) {
        self.create_refusals.with(|refusals| match refusal {
            Some(cause) => refusals.insert(uid.to_string(), cause),
            None => refusals.remove(uid),
        });
    }

    /// Why creating job `uid`'s executor pod was last refused, if it was.
    pub(super) fn create_refusal(&self, uid: &str) -> Option<Cause> {
        self.create_refusals
            .with(|refusals| refusals.get(uid).cloned())
    }

    /// Forgets a rejection (and a conflict, and a refused create) once the job recorded its
    /// end.
    pub(super) fn forget_rejection(&self, uid: &str) {
        self.rejections.with(|rejections| rejections.remove(uid));
        self.create_refusals.with(|refusals| refusals.remove(uid));
        self.conflicts.with(|conflicts| conflicts.remove(uid));
    }

    /// Remembers that a pod squats on one of job `uid`'s executor names.
    pub(super) fn record_conflict(&self, uid: &str, message: &str) {
        self.conflicts
            .with(|conflicts| conflicts.insert(uid.to_string(), message.to_string()));
    }

    /// The squatter found for job `uid`, if any.
    pub(super) fn conflict(&self, uid: &str) -> Option<String> {
        self.conflicts.with(|conflicts| conflicts.get(uid).cloned())
    }

    /// Notes a write to `job` (as it was read) that moved it to resourceVersion `now`.
    pub(super) fn wrote(&self, job: &DataJob, now: Option<&str>) {
        let (Some(uid), Some(before)) = (job.uid(), job.resource_version()) else {
            return;
        };
        if now == Some(before.as_str()) {
            return;
        }
        self.superseded
            .with(|superseded| superseded.entry(uid).or_default().push(before));
    }

    /// Whether `job` as cached is older than this instance's last write to it (the watch has
    /// not delivered that write yet). Forgets the writes once a newer version is seen.
    pub(super) fn predates_own_write(&self, job: &DataJob) -> bool {
        let (Some(uid), Some(version)) = (job.uid(), job.resource_version()) else {
            return false;
        };
        self.superseded
            .with(|superseded| match superseded.get(&uid) {
                Some(versions) if versions.contains(&version) => true,
                Some(_) => {
                    superseded.remove(&uid);
                    false
                }
                None => false,
            })
    }

    /// Notes that the executor pod `namespace/name` was created (or found to exist).
    pub(super) fn created_pod(&self, key: String) {
        self.created
            .with(|created| created.insert(key, Instant::now()));
    }

    /// Whether the pod `namespace/name` was created by this instance recently enough that the
    /// cache may not show it yet; `cached` says whether the cache shows it (then it is
    /// forgotten).
    pub(super) fn expects_pod(&self, key: &str, cached: bool) -> bool {
        self.created.with(|created| pending(created, key, cached))
    }

    /// Notes that the executor pod `namespace/name` is being deleted: it no longer counts as
    /// just created, and counts as terminating until the cache shows it so.
    pub(super) fn deleted_pod(&self, key: String) {
        self.created.with(|created| created.remove(&key));
        self.deleted
            .with(|deleted| deleted.insert(key, Instant::now()));
    }

    /// Whether the pod `namespace/name`, which the cache shows as not terminating, was deleted
    /// by this instance so recently that the cache may not show it yet; `terminating` says
    /// whether the cache shows it terminating (then it is forgotten).
    pub(super) fn deleting_pod(&self, key: &str, terminating: bool) -> bool {
        self.deleted
            .with(|deleted| pending(deleted, key, terminating))
    }

    /// Notes that the result finalizer of the executor pod `namespace/name` was removed.
    pub(super) fn released_pod(&self, key: String) {
        self.released
            .with(|released| released.insert(key, Instant::now()));
    }

    /// Whether the result finalizer of the pod `namespace/name` was removed by this instance so
    /// recently that the cache may still show it; `gone` says whether the cache shows it removed
    /// (then it is forgotten).
    pub(super) fn releasing_pod(&self, key: &str, gone: bool) -> bool {
        self.released.with(|released| pending(released, key, gone))
    }

    /// Follows a job the DataJob watch delivered (the cache already shows the change): when a
    /// job that held a slot of its pool no longer does (it finished, or it is gone), or an
    /// admission in flight is dropped (the job was cancelled before it took its executor), the
    /// jobs that slot admits are reconciled now, not at their next resync.
    pub fn job_changed(&self, job: &DataJob) {
        let (Some(pool), Some(uid)) = (job.spec.compute_pool.as_deref(), job.uid()) else {
            return;
        };
        let current = self
            .stores
            .jobs
            .get(&ObjectRef::from_obj(job))
            .filter(|cached| cached.uid().as_deref() == Some(uid.as_str()));
        let holds = current.as_deref().is_some_and(admission::holds_slot);
        let awaits = current.as_deref().is_some_and(admission::awaits_slot);
        let held = self.holders.with(|holders| {
            if holds {
                holders.insert(uid.clone());
                false
            } else {
                holders.remove(&uid)
            }
        });
        let dropped = !holds
            && !awaits
            && self.in_flight.with(|in_flight| {
                in_flight
                    .get_mut(pool)
                    .is_some_and(|admitted| admitted.remove(&uid))
            });
        if held || dropped {
            self.slot_freed(pool);
        }
    }

    /// A slot of `pool` was freed: reconcile the jobs it admits ([`admission::next_in_line`]),
    /// as many as the pool has free slots, in queue order.
    fn slot_freed(&self, pool: &str) {
        let Some(limits) = self
            .stores
            .pools
            .get(&ObjectRef::new(pool))
            .filter(|p| p.spec.max_concurrent_jobs > 0)
        else {
            return;
        };
        let jobs = self.stores.jobs_in_pool(pool);
        let arrivals = self.stores.index.arrivals_of(&jobs);
        let next = self.with_in_flight(pool, &jobs, |in_flight| {
            admission::next_in_line(&limits, &jobs, in_flight, &arrivals)
        });
        for job in next {
            // A closed channel means the controller is shutting down.
            let _ = self.wake_jobs.unbounded_send(ObjectRef::from_obj(&*job));
        }
    }
}
