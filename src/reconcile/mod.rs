//! The DataJob controller. One reconcile is a pipeline:
//! observe (job, executor pods, pool; [`observe`]) -> decide (pure; [`decide`]) -> apply
//! (status, pods, events; [`apply`]). Deletion goes through `kube::runtime::finalizer` with the
//! finalizer `datajob.dev/teardown`: the DataJob stays until every executor pod is gone.

pub mod apply;
pub mod decide;
pub mod error;
pub mod observe;
pub mod pool;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::channel::mpsc;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::finalizer::{self, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, ResourceExt};
use tokio::sync::Mutex;
use tracing::{debug, info, warn};

use crate::api::datajob::DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS;
use crate::api::{ComputePool, DataJob, JobState};
use crate::caches::Caches;
use crate::executor::ExecutorTemplate;
use crate::telemetry::Metrics;
use decide::Plan;
use error::Error;

/// Finalizer that holds a DataJob until its executor pods are gone.
pub const FINALIZER: &str = "datajob.dev/teardown";

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
}

/// What every reconcile shares.
pub struct Context {
    client: Client,
    config: Config,
    jobs: Store<DataJob>,
    pods: Store<Pod>,
    pools: Store<ComputePool>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    /// Jobs admitted into a limited pool whose admission the cache may not show yet.
    admitted: Mutex<HashSet<String>>,
    /// Consecutive failures per job uid, for backoff.
    failures: std::sync::Mutex<HashMap<String, u32>>,
    /// Why the API server rejected a job's executor pod, by job uid, until the job records it.
    rejections: std::sync::Mutex<HashMap<String, String>>,
    /// Requests to reconcile jobs waiting for a slot.
    wake: mpsc::UnboundedSender<ObjectRef<DataJob>>,
}

impl Context {
    fn jobs_api(&self, namespace: &str) -> Api<DataJob> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn pods_api(&self, namespace: &str) -> Api<Pod> {
        Api::namespaced(self.client.clone(), namespace)
    }

    fn pool(&self, job: &DataJob) -> Option<Arc<ComputePool>> {
        let name = job.spec.compute_pool.as_deref()?;
        self.pools.get(&ObjectRef::new(name))
    }

    /// Asks for a reconcile of every job waiting for a slot in `pool`.
    fn wake_pool(&self, pool: &str) {
        for job in self.jobs.state() {
            if job.spec.compute_pool.as_deref() == Some(pool) && observe::awaits_slot(&job) {
                // A closed channel means the controller is shutting down.
                let _ = self.wake.unbounded_send(ObjectRef::from_obj(&*job));
            }
        }
    }
}

/// Runs the controller on the shared `caches` until a shutdown signal.
pub async fn run(client: Client, config: Config, metrics: Arc<Metrics>, caches: Caches) {
    let jobs = caches.jobs.store();
    let (wake, wake_stream) = mpsc::unbounded();
    let controller = Controller::for_shared_stream(caches.jobs.subscribe(), jobs.clone());
    let jobs_for_pools = jobs.clone();
    let reporter = Reporter {
        controller: crate::OPERATOR_NAME.to_string(),
        instance: config.instance.clone(),
    };
    let concurrency = config.concurrency;
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client,
        config,
        jobs: jobs.clone(),
        pods: caches.pods.store(),
        pools: caches.pools.store(),
        metrics,
        admitted: Mutex::new(HashSet::new()),
        failures: std::sync::Mutex::new(HashMap::new()),
        rejections: std::sync::Mutex::new(HashMap::new()),
        wake,
    });

    controller
        .with_config(kube::runtime::controller::Config::default().concurrency(concurrency))
        .owns_shared_stream(caches.pods.subscribe())
        .watches_shared_stream(caches.pools.subscribe(), move |pool: Arc<ComputePool>| {
            let name = pool.name_any();
            jobs_for_pools
                .state()
                .into_iter()
                .filter(|j| j.spec.compute_pool.as_deref() == Some(name.as_str()))
                .map(|j| ObjectRef::from_obj(&*j))
                .collect::<Vec<_>>()
        })
        .reconcile_on(wake_stream)
        .shutdown_on_signal()
        .run(reconcile, error_policy, context)
        .for_each(|result| async move {
            match result {
                // error_policy already logged it.
                Ok(_) | Err(kube::runtime::controller::Error::ReconcilerFailed(..)) => {}
                // A pod or pool event for a job that is gone or outside this instance's scope.
                Err(kube::runtime::controller::Error::ObjectNotFound(obj)) => {
                    debug!(%obj, "skipping a job that is not in the cache");
                }
                Err(error) => warn!(%error, "controller error"),
            }
        })
        .await;
}

/// Entry point of one reconcile: hands the job to the finalizer helper.
pub async fn reconcile(job: Arc<DataJob>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = job.namespace().ok_or_else(|| Error::MalformedObject {
        job: job.name_any(),
        field: "namespace",
    })?;
    let key = observe::object_key(&*job);
    let jobs = ctx.jobs_api(&namespace);
    let result = finalizer(&jobs, FINALIZER, job, |event| async {
        match event {
            finalizer::Event::Apply(job) => reconcile_job(&job, &ctx).await,
            finalizer::Event::Cleanup(job) => cleanup(&job, &ctx).await,
        }
    })
    .await
    .map_err(|error| match error {
        finalizer::Error::ApplyFailed(e) | finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer {
            job: key.clone(),
            message: other.to_string(),
        },
    });
    ctx.metrics.observe_reconcile(started.elapsed());
    if result.is_ok()
        && let Ok(mut failures) = ctx.failures.lock()
    {
        failures.remove(&key);
    }
    result
}

/// Backs off per job: waits for a change on errors a retry cannot fix, retries API errors
/// with exponential backoff, and polls teardown progress quickly.
pub fn error_policy(job: Arc<DataJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.observe_error(error.category());
    let key = observe::object_key(&*job);
    let attempt = match ctx.failures.lock() {
        Ok(mut failures) => {
            let count = failures.entry(key.clone()).or_insert(0);
            *count = count.saturating_add(1);
            *count - 1
        }
        Err(_) => 0,
    };
    match error {
        Error::TeardownInProgress { .. } => info!(job = %key, %error, "teardown in progress"),
        Error::WriteStatus { source, .. } if error::is_conflict(source) => {
            debug!(job = %key, "status write lost a race with a newer version; retrying");
        }
        _ => warn!(job = %key, %error, attempt, "reconcile failed"),
    }
    match error.retry_after(attempt) {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    }
}

/// Observe, decide, apply for a live (not deleted) job.
async fn reconcile_job(job: &DataJob, ctx: &Context) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_default();
    let pool = ctx.pool(job);
    let admitted = admit(job, pool.as_deref(), ctx).await;
    let pool_view = observe::pool_view(job, pool.as_deref(), admitted);
    let now = observe::now();
    let pods = observe::cached_pods(&ctx.pods, job);
    let uid = job.uid().unwrap_or_default();
    let rejection = ctx
        .rejections
        .lock()
        .ok()
        .and_then(|r| r.get(&uid).cloned());
    let observe = |pods| {
        let mut observation = observe::observation(job, pods, pool_view.clone(), now);
        observation.rejection = rejection.clone();
        observation
    };
    let mut plan = decide::decide(&observe(pods));
    if plan.requires_absence {
        // The cache may lag behind pods just created: confirm absence with the API server.
        let live = observe::live_pods(&ctx.pods_api(&namespace), job).await?;
        if !live.is_empty() {
            plan = decide::decide(&observe(live));
        }
    }
    let result = apply_plan(job, ctx, &plan, pool.as_deref()).await;
    match &result {
        Err(Error::PodRejected { message, .. }) => {
            if let Ok(mut rejections) = ctx.rejections.lock() {
                rejections.insert(uid, message.clone());
            }
        }
        Err(error @ Error::CreatePod { .. }) => {
            let event = decide::JobEvent {
                kind: decide::EventKind::Warning,
                reason: "ExecutorCreateFailed",
                message: error.to_string(),
            };
            apply::publish_events(&ctx.recorder, job, &[event]).await;
        }
        _ if plan.status.state.is_some_and(JobState::is_terminal) => {
            if let Ok(mut rejections) = ctx.rejections.lock() {
                rejections.remove(&uid);
            }
        }
        _ => {}
    }
    result
}

/// Decides whether a pending job may take a slot of its pool, recording the admission.
async fn admit(job: &DataJob, pool: Option<&ComputePool>, ctx: &Context) -> bool {
    let Some(pool) = pool else { return false };
    if pool.spec.max_concurrent_jobs <= 0 || observe::holds_slot(job) {
        return true;
    }
    // Only a recorded pending job competes for a slot (not one still being initialized).
    let pending = job.status.as_ref().and_then(|s| s.state) == Some(JobState::Pending);
    if !pending || !observe::awaits_slot(job) {
        return false;
    }
    let mut admitted = ctx.admitted.lock().await;
    let jobs = ctx.jobs.state();
    // Forget admissions the cache now shows (or that ended).
    admitted.retain(|uid| {
        jobs.iter()
            .find(|j| j.uid().as_deref() == Some(uid.as_str()))
            .is_some_and(|j| !observe::holds_slot(j) && observe::awaits_slot(j))
    });
    let ok = observe::admit(job, pool, &jobs, &admitted);
    if ok && let Some(uid) = job.uid() {
        admitted.insert(uid);
    }
    ok
}

async fn apply_plan(
    job: &DataJob,
    ctx: &Context,
    plan: &Plan,
    pool: Option<&ComputePool>,
) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_default();
    let previous = job.status.as_ref().and_then(|s| s.state);
    // Creating pods also goes through the guarded status write (a no-op when nothing changed):
    // pods are only ever created from an up-to-date view of the job.
    if apply::status_changed(job, plan) || !plan.create.is_empty() {
        apply::write_status(&ctx.jobs_api(&namespace), job, &plan.status).await?;
    }
    let pods = ctx.pods_api(&namespace);
    if !plan.delete.is_empty() {
        apply::delete_pods(&pods, &namespace, &plan.delete).await?;
    }
    if !plan.create.is_empty() {
        let template = template_for(job, pool, &plan.status, &ctx.config)?;
        apply::create_pods(&pods, job, &template, &plan.create).await?;
    }
    apply::publish_events(&ctx.recorder, job, &plan.events).await;
    if let Some(state) = plan.status.state
        && previous != Some(state)
    {
        ctx.metrics.observe_transition(state.as_str());
        info!(job = %observe::object_key(job), from = ?previous.map(JobState::as_str), to = state.as_str(), "state changed");
        if state.is_terminal()
            && let Some(pool) = &job.spec.compute_pool
        {
            ctx.wake_pool(pool);
        }
    }
    if plan.delete_job {
        apply::delete_job(&ctx.jobs_api(&namespace), job).await?;
        return Ok(Action::await_change());
    }
    Ok(match plan.requeue {
        Some(delay) => Action::requeue(delay.max(Duration::from_millis(50))),
        None => Action::await_change(),
    })
}

/// Deletion: tear every executor pod down; the finalizer is removed only once none exists.
async fn cleanup(job: &DataJob, ctx: &Context) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_default();
    let pods_api = ctx.pods_api(&namespace);
    let live = observe::live_pods(&pods_api, job).await?;
    if live.is_empty() {
        if let (Some(uid), Ok(mut rejections)) = (job.uid(), ctx.rejections.lock()) {
            rejections.remove(&uid);
        }
        info!(job = %observe::object_key(job), "executor pods gone; releasing the DataJob");
        if let Some(pool) = &job.spec.compute_pool {
            ctx.wake_pool(pool);
        }
        return Ok(Action::await_change());
    }
    apply::delete_pods(&pods_api, &namespace, &decide::teardown(&live)).await?;
    Err(Error::TeardownInProgress {
        job: observe::object_key(job),
        pods: live.len(),
    })
}

/// Resolves the executor pods' template from the job, its pool and the operator's defaults.
pub fn template_for(
    job: &DataJob,
    pool: Option<&ComputePool>,
    status: &crate::api::DataJobStatus,
    config: &Config,
) -> Result<ExecutorTemplate, Error> {
    let key = observe::object_key(job);
    let uid = job.uid().ok_or_else(|| Error::MalformedObject {
        job: key.clone(),
        field: "uid",
    })?;
    let namespace = job.namespace().ok_or(Error::MalformedObject {
        job: key,
        field: "namespace",
    })?;
    let spec = &job.spec;
    let job_executor = spec.executor.clone().unwrap_or_default();
    let pool_executor = pool
        .and_then(|p| p.spec.executor.clone())
        .unwrap_or_default();
    let pool_view = observe::pool_view(job, pool, true);
    Ok(ExecutorTemplate {
        namespace,
        job_name: job.name_any(),
        job_uid: uid,
        job_type: spec.job_type,
        nql: spec.input.nql.clone(),
        compiled_sql: spec.input.compiled_sql.clone(),
        dataset_id: spec.input.dataset_id,
        stats_enabled: spec.input.stats_enabled,
        data_plane: spec.data_plane.clone(),
        compute_pool: spec.compute_pool.clone(),
        cluster_type: status
            .cluster_type
            .unwrap_or_else(|| decide::resolve_cluster_type(spec, &pool_view)),
        image: job_executor
            .image
            .or(pool_executor.image)
            .unwrap_or_else(|| config.executor_image.clone()),
        resources: job_executor.resources.or(pool_executor.resources),
        termination_grace_period_seconds: job_executor
            .termination_grace_period_seconds
            .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS),
        extra_env: job_executor.env,
        node_selector: pool
            .map(|p| p.spec.node_selector.clone())
            .unwrap_or_default(),
        tolerations: pool.map(|p| p.spec.tolerations.clone()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    //! One reconcile's API calls against a mocked API server: the order of the writes and the
    //! guard on the status write.

    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use kube::runtime::reflector;
    use serde_json::{Value, json};
    use tower_test::mock::{self, Handle};

    use super::*;

    fn job() -> DataJob {
        serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1",
            "kind": "DataJob",
            "metadata": {
                "name": "j", "namespace": "ns", "uid": "abcdef12-0000-0000-0000-000000000000",
                "resourceVersion": "42", "generation": 1, "finalizers": [FINALIZER],
            },
            "spec": { "type": "nql-forecast", "input": { "nql": "SELECT 1" }, "dataPlane": "dp" },
            "status": { "state": "pending", "executor": "dj-j-abcdef12", "clusterType": "shared" },
        }))
        .expect("job fixture")
    }

    fn context(client: Client) -> Context {
        let (jobs, _) = reflector::store();
        let (pods, _) = reflector::store();
        let (pools, _) = reflector::store();
        let (wake, _) = mpsc::unbounded();
        Context {
            recorder: Recorder::new(
                client.clone(),
                Reporter {
                    controller: crate::OPERATOR_NAME.to_string(),
                    instance: None,
                },
            ),
            client,
            config: Config {
                namespace: None,
                data_plane: None,
                executor_image: "executor:test".to_string(),
                concurrency: 1,
                instance: None,
            },
            jobs,
            pods,
            pools,
            metrics: Arc::new(crate::telemetry::Metrics::default()),
            admitted: Mutex::new(HashSet::new()),
            failures: std::sync::Mutex::new(HashMap::new()),
            rejections: std::sync::Mutex::new(HashMap::new()),
            wake,
        }
    }

    type ApiServer = Handle<Request<Body>, Response<Body>>;

    /// A context whose client talks to a mocked API server, and that server's handle.
    fn mocked() -> (Context, ApiServer) {
        let (service, server) = mock::pair::<Request<Body>, Response<Body>>();
        (context(Client::new(service, "default")), server)
    }

    async fn next(server: &mut ApiServer) -> (Request<Value>, mock::SendResponse<Response<Body>>) {
        let (request, send) = server.next_request().await.expect("a request");
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        (Request::from_parts(parts, value), send)
    }

    fn reply(send: mock::SendResponse<Response<Body>>, status: StatusCode, body: Value) {
        let response = Response::builder()
            .status(status)
            .body(Body::from(
                serde_json::to_vec(&body).expect("response body"),
            ))
            .expect("response");
        send.send_response(response);
    }

    #[tokio::test]
    async fn status_is_written_with_the_observed_resource_version_before_pods_are_created() {
        let (ctx, mut server) = mocked();
        let datajob = job();
        let api_server = tokio::spawn(async move {
            let (status, send) = next(&mut server).await;
            assert_eq!(status.method(), "PATCH");
            assert_eq!(
                status.uri().path(),
                "/apis/datajob.dev/v1alpha1/namespaces/ns/datajobs/j/status"
            );
            let query = status.uri().query().unwrap_or_default();
            assert!(
                query.contains("fieldManager=datajob-operator") && query.contains("force=true"),
                "{query}"
            );
            assert_eq!(status.body()["metadata"]["resourceVersion"], "42");
            assert_eq!(status.body()["status"]["executor"], "dj-j-abcdef12");
            reply(
                send,
                StatusCode::OK,
                serde_json::to_value(job()).expect("json"),
            );

            let (pod, send) = next(&mut server).await;
            assert_eq!(pod.method(), "POST");
            assert_eq!(pod.uri().path(), "/api/v1/namespaces/ns/pods");
            assert_eq!(pod.body()["metadata"]["name"], "dj-j-abcdef12-driver");
            assert_eq!(
                pod.body()["metadata"]["ownerReferences"][0]["uid"],
                "abcdef12-0000-0000-0000-000000000000"
            );
            let created = pod.body().clone();
            reply(send, StatusCode::CREATED, created);

            let (event, send) = next(&mut server).await;
            assert_eq!(event.method(), "POST");
            assert_eq!(
                event.uri().path(),
                "/apis/events.k8s.io/v1/namespaces/ns/events"
            );
            assert_eq!(event.body()["reason"], "Starting");
            let created = event.body().clone();
            reply(send, StatusCode::CREATED, created);
            server
        });
        reconcile_job(&datajob, &ctx)
            .await
            .expect("reconcile succeeds");
        drop(ctx);
        let mut server = api_server.await.expect("mock API server");
        assert!(
            server.next_request().await.is_none(),
            "no further API calls"
        );
    }

    #[tokio::test]
    async fn a_stale_view_creates_no_pod() {
        let (ctx, mut server) = mocked();
        let datajob = job();
        let api_server = tokio::spawn(async move {
            let (status, send) = next(&mut server).await;
            assert_eq!(status.method(), "PATCH");
            reply(
                send,
                StatusCode::CONFLICT,
                json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 409,
                    "reason": "Conflict", "message": "the object has been modified",
                }),
            );
            server
        });
        let error = reconcile_job(&datajob, &ctx)
            .await
            .expect_err("the write conflicts");
        assert!(matches!(&error, Error::WriteStatus { source, .. } if error::is_conflict(source)));
        assert_eq!(error.retry_after(0), Some(Duration::from_millis(200)));
        drop(ctx);
        let mut server = api_server.await.expect("mock API server");
        assert!(
            server.next_request().await.is_none(),
            "no pod is created from a stale view"
        );
    }
}
