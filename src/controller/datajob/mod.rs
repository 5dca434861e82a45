//! The DataJob controller. One reconcile is the pipeline
//! observe ([`observe`]) -> decide (`crate::domain`) -> apply ([`apply`]), run for a live job
//! through `kube::runtime::finalizer` with the finalizer `datajob.dev/teardown`. A deleted job
//! keeps the finalizer while executor pods remain: reconcile deletes them and looks again
//! (waiting, not an error); the finalizer goes once none is left.

pub mod apply;
pub mod context;
pub mod error;
pub mod observe;
#[cfg(test)]
mod tests;

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures::channel::mpsc::UnboundedReceiver;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, future};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use tracing::{debug, info, warn};

use crate::api::{ComputePool, DataJob};
use crate::controller::kube_util::{self, object_key};
use crate::domain::{self, Deletion, EventKind, JobEvent, Observation, Reason};
pub use context::{Config, Context, Stores};
pub use error::Error;

/// When to look again at a job whose cached version predates the operator's own write, if
/// the watch has not woken it by then.
const OWN_WRITE_RECHECK: std::time::Duration = std::time::Duration::from_secs(1);

/// Finalizer that holds a DataJob until its executor pods are gone.
pub const FINALIZER: &str = "datajob.dev/teardown";

/// What makes the job controller reconcile a job.
pub struct Triggers {
    /// DataJobs that changed (from the shared DataJob watch).
    pub jobs: BoxStream<'static, Arc<DataJob>>,
    /// Executor pods that changed (their owner is reconciled).
    pub pods: BoxStream<'static, Arc<Pod>>,
    /// ComputePools that changed (the jobs naming them are reconciled).
    pub pools: BoxStream<'static, Arc<ComputePool>>,
    /// Jobs the controller wakes itself (a slot was freed).
    pub wake: UnboundedReceiver<ObjectRef<DataJob>>,
}

/// Runs the DataJob controller until a shutdown signal. Every job change also goes through
/// [`Context::job_changed`] (a freed slot wakes the next queued jobs); a pool change wakes the
/// pool's jobs only when the pool appeared, went, or its spec changed (not for the pool status
/// the operator writes itself).
pub async fn run(ctx: Context, triggers: Triggers) {
    let ctx = Arc::new(ctx);
    let stores = ctx.stores.clone();
    let config = controller::Config::default().concurrency(ctx.config.concurrency);
    let follower = ctx.clone();
    let jobs = triggers.jobs.inspect(move |job| follower.job_changed(job));
    let mut seen = HashMap::new();
    let pool_store = stores.pools.clone();
    let pools = triggers
        .pools
        .filter(move |pool| future::ready(pool_spec_changed(&mut seen, pool, &pool_store)));
    Controller::for_shared_stream(jobs, stores.jobs.clone())
        .with_config(config)
        .owns_shared_stream(triggers.pods)
        .watches_shared_stream(pools, move |pool: Arc<ComputePool>| {
            stores
                .jobs_in_pool(&pool.name_any())
                .iter()
                .map(|j| ObjectRef::from_obj(&**j))
                .collect::<Vec<_>>()
        })
        .reconcile_on(triggers.wake)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                // error_policy already logged it.
                Ok(_) | Err(controller::Error::ReconcilerFailed(..)) => {}
                // A pod or pool event for a job that is gone or outside this instance's scope.
                Err(controller::Error::ObjectNotFound(obj)) => {
                    debug!(%obj, "skipping a job that is not in the cache");
                }
                Err(error) => warn!(%error, "controller error"),
            }
        })
        .await;
}

/// Whether a delivered pool differs from the last one seen in what its jobs decide on: it is
/// new (name and uid), it is gone from the cache, or it has a new generation (a spec change).
/// `seen` holds the uid and generation last seen per pool name.
pub fn pool_spec_changed(
    seen: &mut HashMap<String, (Option<String>, Option<i64>)>,
    pool: &ComputePool,
    store: &Store<ComputePool>,
) -> bool {
    let name = pool.name_any();
    if store.get(&ObjectRef::new(&name)).is_none() {
        seen.remove(&name);
        return true;
    }
    let current = (pool.uid(), pool.metadata.generation);
    seen.insert(name, current.clone()) != Some(current)
}

/// Entry point of one reconcile: counts it, and resets the job's backoff when it succeeds.
/// A panic anywhere in it is caught and becomes an error for this one job (a Warning event,
/// the `panic` error metric, a back-off), never a dead process.
pub async fn reconcile(job: Arc<DataJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let key = object_key(&*job);
    // Nothing is observed across the unwind: the side tables recover from poisoning, and the
    // job's next reconcile starts from the caches again.
    let result = match catch_panic(reconcile_object(job.clone(), &ctx)).await {
        Ok(result) => result,
        Err(message) => {
            let error = Error::Panicked {
                job: key.clone(),
                message,
            };
            let event = JobEvent {
                kind: EventKind::Warning,
                reason: Reason::ReconcilePanicked,
                message: format!("{error}; retrying with back-off"),
            };
            apply::publish_events(&ctx.events, &job, &[event]);
            Err(error)
        }
    };
    ctx.metrics.observe_reconcile(started.elapsed());
    if result.is_ok() {
        ctx.reset_failures(&key);
    }
    result
}

/// Runs `future`, turning a panic in it into `Err` with the panic's message.
pub async fn catch_panic<F: Future>(future: F) -> Result<F::Output, String> {
    AssertUnwindSafe(future)
        .catch_unwind()
        .await
        .map_err(|payload| panic_message(payload.as_ref()))
}

/// The text of a panic's payload (a `&str` or a `String`), cut to a line's length.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    crate::executor::result::clean(&text, 512)
}

/// Backs off per job: waits for a change on errors a retry cannot fix, retries write
/// conflicts soon, and API errors with exponential backoff.
pub fn error_policy(job: Arc<DataJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.observe_error(error.category());
    let key = object_key(&*job);
    let attempt = ctx.record_failure(&key);
    if error.is_conflict() {
        debug!(job = %key, "status write lost a race with a newer version; retrying");
    } else {
        warn!(job = %key, %error, attempt, "reconcile failed");
    }
    match error.retry_after(attempt) {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    }
}

/// Waits for a deleted job's teardown, or hands the job to the finalizer helper.
async fn reconcile_object(job: Arc<DataJob>, ctx: &Context) -> Result<Action, Error> {
    let namespace = job.namespace().ok_or_else(|| Error::MalformedObject {
        job: job.name_any(),
        field: "namespace",
    })?;
    if ctx.predates_own_write(&job) {
        // The watch delivers the operator's own write soon and wakes the job again; deciding
        // now would work from a view older than that write (and its write would conflict).
        return Ok(Action::requeue(OWN_WRITE_RECHECK));
    }
    if let Some(wait) = wait_for_teardown(&job, ctx).await? {
        return Ok(wait);
    }
    let key = object_key(&*job);
    let job = add_finalizer(&ctx.jobs_api(&namespace), job, ctx).await?;
    finalizer(&ctx.jobs_api(&namespace), FINALIZER, job, |event| async {
        match event {
            finalizer::Event::Apply(job) => reconcile_job(&job, ctx).await,
            finalizer::Event::Cleanup(job) => Ok(release(&job, ctx)),
        }
    })
    .await
    .map_err(|error| match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer {
            job: key,
            message: other.to_string(),
        },
    })
}

/// A live job without the finalizer gets it, and the pass goes on with the object the API
/// server returned (so the first status write follows in the same pass, not after a watch
/// round trip). The patch carries the observed resourceVersion: it fails rather than
/// overwrite finalizers someone else changed meanwhile.
async fn add_finalizer(
    jobs: &kube::Api<DataJob>,
    job: Arc<DataJob>,
    ctx: &Context,
) -> Result<Arc<DataJob>, Error> {
    if job.metadata.deletion_timestamp.is_some() || job.finalizers().iter().any(|f| f == FINALIZER)
    {
        return Ok(job);
    }
    let mut finalizers = job.finalizers().to_vec();
    finalizers.push(FINALIZER.to_string());
    let patch = serde_json::json!({
        "metadata": { "resourceVersion": job.resource_version(), "finalizers": finalizers }
    });
    let patched = jobs
        .patch(
            &job.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Finalizer {
            job: object_key(&*job),
            message: format!("cannot add the finalizer: {source}"),
        })?;
    ctx.wrote(&job, patched.resource_version().as_deref());
    Ok(Arc::new(patched))
}

/// Observe, decide, apply for a live (not deleted) job.
async fn reconcile_job(job: &DataJob, ctx: &Context) -> Result<Action, Error> {
    let namespace_labels = observe::namespace_labels(job, ctx).await?;
    let mut observed = observe::observe(job, ctx, namespace_labels.as_ref());
    let observation = &mut observed.observation;
    observation.nodes = observe::stuck_nodes(ctx, &observation.pods, observation.now).await;
    let mut plan = domain::decide(&observed.observation);
    if plan.requires_absence {
        // The cache may lag behind pods just created: confirm absence with the API server.
        let pods = ctx.pods_api(&job.namespace().unwrap_or_default());
        let live = observe::live_pods(&pods, job).await?;
        if !live.is_empty() {
            plan = domain::decide(&Observation {
                pods: live,
                ..observed.observation
            });
        }
    }
    apply::apply(job, ctx, &plan, observed.pool.as_deref()).await
}

/// A deleted job: deletes its remaining executor pods, removes their result finalizer, and
/// looks again soon. None once no pod is left (the finalizer helper then releases the job).
/// A job whose finalizer someone removed by hand but that a foreground deletion still holds
/// gets the same, or its pods would hold it for ever.
async fn wait_for_teardown(job: &DataJob, ctx: &Context) -> Result<Option<Action>, Error> {
    if job.metadata.deletion_timestamp.is_none() {
        return Ok(None);
    }
    let namespace = job.namespace().unwrap_or_default();
    let pods = ctx.pods_api(&namespace);
    let live = observe::live_pods(&pods, job).await?;
    let now = observe::now();
    let nodes = observe::stuck_nodes(ctx, &live, now).await;
    match domain::on_deletion(&live, &nodes, now) {
        Deletion::Release => Ok(None),
        Deletion::Wait {
            delete,
            force_delete,
            release,
            remaining,
            poll,
            stuck,
        } => {
            apply::delete_pods(&pods, &namespace, &delete).await?;
            let mut events: Vec<JobEvent> = force_delete
                .iter()
                .map(|(pod, why)| JobEvent {
                    kind: EventKind::Warning,
                    reason: Reason::PodForceDeleted,
                    message: format!("force-deleting executor pod {pod} (grace period 0): {why}"),
                })
                .collect();
            let names: Vec<String> = force_delete.into_iter().map(|(pod, _)| pod).collect();
            apply::force_delete_pods(&pods, &namespace, &names).await?;
            apply::release_pods(ctx, &pods, &namespace, &release).await?;
            if let Some(message) = stuck {
                events.extend(show_stuck_teardown(job, ctx, message, now).await?);
            }
            apply::publish_events(&ctx.events, job, &events);
            info!(job = %object_key(job), remaining, "teardown in progress; waiting for executor pods to terminate");
            Ok(Some(Action::requeue(poll)))
        }
    }
}

/// A deleted job whose teardown is stuck shows it: `Stalled=True`/`TeardownStuck` naming the
/// pods and nodes (`kubectl delete` waits on the finalizer meanwhile), and a Warning event the
/// first time. Nothing is written while the job already shows exactly that.
async fn show_stuck_teardown(
    job: &DataJob,
    ctx: &Context,
    message: String,
    now: jiff::Timestamp,
) -> Result<Option<JobEvent>, Error> {
    let status = job.status.clone().unwrap_or_default();
    let generation = job.metadata.generation.unwrap_or(0);
    let Some(next) = domain::stalled_deletion(&status, &message, now, generation) else {
        return Ok(None);
    };
    apply::write_status(job, ctx, &next, kube_util::Guard::None).await?;
    warn!(job = %object_key(job), %message, "the teardown of a deleted job is stuck");
    Ok(Some(JobEvent {
        kind: EventKind::Warning,
        reason: Reason::TeardownStuck,
        message,
    }))
}

/// Deletion, once every executor pod is gone: forget the job. (Its slot goes back when the
/// watch delivers its removal: [`Context::job_changed`].)
fn release(job: &DataJob, ctx: &Context) -> Action {
    ctx.forget_rejection(&job.uid().unwrap_or_default());
    info!(job = %object_key(job), "executor pods gone; releasing the DataJob");
    Action::await_change()
}
