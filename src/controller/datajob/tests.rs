//! One reconcile's API calls against a mocked API server: the order of the writes, the guard
//! on the status write, and waits (teardown, a rejected pod) that are not errors.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tower_test::mock::{self, Handle};

use super::*;
use crate::executor::RESULT_FINALIZER;
use crate::telemetry::Metrics;

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

fn config() -> Config {
    Config {
        namespace: None,
        data_plane: None,
        executor_image: "executor:test".to_string(),
        concurrency: 1,
        instance: None,
        allowed_image_prefixes: Vec::new(),
    }
}

fn context(client: Client) -> Context {
    let stores = Stores {
        jobs: reflector::store().0,
        pods: reflector::store().0,
        pools: reflector::store().0,
        index: Default::default(),
    };
    Context::new(client, config(), Arc::new(Metrics::default()), stores).0
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

const STATUS_PATH: &str = "/apis/datajob.dev/v1alpha1/namespaces/ns/datajobs/j/status";
const PODS_PATH: &str = "/api/v1/namespaces/ns/pods";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";

#[tokio::test]
async fn status_is_written_with_the_observed_resource_version_before_pods_are_created() {
    let (ctx, mut server) = mocked();
    let datajob = job();
    let api_server = tokio::spawn(async move {
        let (status, send) = expect(&mut server, "PATCH", STATUS_PATH).await;
        let query = status.uri().query().unwrap_or_default();
        assert!(
            query.contains("fieldManager=datajob-operator") && query.contains("force=true"),
            "{query}"
        );
        assert_eq!(status.body()["metadata"]["resourceVersion"], "42");
        assert_eq!(status.body()["status"]["executor"], "dj-j-abcdef12");
        accept_status(send);

        // A query that fits the environment goes inline: no query ConfigMap.
        let (pod, send) = expect(&mut server, "POST", PODS_PATH).await;
        assert_eq!(pod.body()["metadata"]["name"], "dj-j-abcdef12-driver");
        assert_eq!(
            pod.body()["metadata"]["ownerReferences"][0]["uid"],
            "abcdef12-0000-0000-0000-000000000000"
        );
        echo(send, &pod, StatusCode::CREATED);
        server
    });
    reconcile_job(&datajob, &ctx)
        .await
        .expect("reconcile succeeds");
    no_more_calls(
        ctx,
        api_server,
        "no event: waiting for the driver is no news",
    )
    .await;
}

#[tokio::test]
async fn a_view_older_than_the_operators_own_write_is_not_acted_on() {
    let (ctx, server) = mocked();
    let datajob = job();
    ctx.wrote(&datajob, Some("43"));
    let api_server = tokio::spawn(async move { server });
    let action = reconcile_object(Arc::new(datajob.clone()), &ctx)
        .await
        .expect("a wait, not an error");
    assert_eq!(action, Action::requeue(OWN_WRITE_RECHECK));
    let mut newer = datajob.clone();
    newer.metadata.resource_version = Some("43".to_string());
    assert!(!ctx.predates_own_write(&newer), "the write arrived");
    assert!(!ctx.predates_own_write(&datajob), "and is forgotten");
    no_more_calls(ctx, api_server, "nothing is decided from a stale view").await;
}

#[tokio::test]
async fn a_pod_just_created_counts_as_existing_until_the_cache_shows_it() {
    let (ctx, _server) = mocked();
    let mut datajob = job();
    ctx.created_pod("ns/dj-j-abcdef12-driver".to_string());
    let observed = observe::observe(&datajob, &ctx, None);
    assert_eq!(observed.observation.pods.len(), 1);
    let plan = crate::domain::decide(&observed.observation);
    assert!(plan.create.is_empty(), "not created twice");
    assert_eq!(plan.status.active_executors, Some(1));
    ctx.deleted_pod("ns/dj-j-abcdef12-driver".to_string());
    datajob.metadata.resource_version = Some("44".to_string());
    let observed = observe::observe(&datajob, &ctx, None);
    assert!(
        observed.observation.pods.is_empty(),
        "a deleted pod is not expected any more"
    );
    assert!(
        ctx.deleting_pod("ns/dj-j-abcdef12-driver", false),
        "it counts as terminating"
    );
    assert!(
        !ctx.deleting_pod("ns/dj-j-abcdef12-driver", true),
        "until the cache shows it"
    );
}

#[tokio::test]
async fn a_stale_view_creates_no_pod() {
    let (ctx, mut server) = mocked();
    let datajob = job();
    let api_server = tokio::spawn(async move {
        let (_, send) = expect(&mut server, "PATCH", STATUS_PATH).await;
        let conflict = failure(409, "Conflict", "the object has been modified");
        reply(send, StatusCode::CONFLICT, conflict);
        server
    });
    let error = reconcile_job(&datajob, &ctx)
        .await
        .expect_err("the write conflicts");
    assert!(error.is_conflict(), "{error}");
    assert_eq!(error.retry_after(0), Some(Duration::from_millis(200)));
    no_more_calls(ctx, api_server, "no pod is created from a stale view").await;
}

#[tokio::test]
async fn a_rejected_pod_is_recorded_and_the_next_pass_fails_the_job_without_an_error() {
    let (ctx, mut server) = mocked();
    let datajob = job();
    let api_server = tokio::spawn(async move {
        let (_, send) = expect(&mut server, "PATCH", STATUS_PATH).await;
        accept_status(send);
        let (_, send) = expect(&mut server, "POST", PODS_PATH).await;
        let invalid = failure(422, "Invalid", "resources.requests: Invalid value");
        reply(send, StatusCode::UNPROCESSABLE_ENTITY, invalid);
        // The next pass: decide records the rejection as the job's failure.
        let (status, send) = expect(&mut server, "PATCH", STATUS_PATH).await;
        let failure = &status.body()["status"]["failures"][0];
        assert_eq!(status.body()["status"]["state"], "failed");
        assert_eq!(failure["reason"], "ExecutorRejected");
        assert!(failure["message"].to_string().contains("Invalid value"));
        accept_status(send);
        let (event, send) = expect(&mut server, "POST", EVENTS_PATH).await;
        assert_eq!(event.body()["reason"], "Failed");
        echo(send, &event, StatusCode::CREATED);
        server
    });
    let action = reconcile_job(&datajob, &ctx)
        .await
        .expect("a rejection is no error");
    assert_eq!(action, Action::requeue(Duration::from_millis(200)));
    reconcile_job(&datajob, &ctx)
        .await
        .expect("the failure is recorded");
    no_more_calls(ctx, api_server, "no further API calls").await;
}

#[tokio::test]
async fn waiting_for_a_deleted_jobs_pods_to_terminate_is_not_an_error() {
    let (ctx, mut server) = mocked();
    let mut datajob = job();
    datajob.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    let api_server = tokio::spawn(async move {
        let (_, send) = expect(&mut server, "GET", PODS_PATH).await;
        let pod = json!({ "metadata": { "name": "dj-j-abcdef12-driver", "namespace": "ns" } });
        let pods = json!({ "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod] });
        reply(send, StatusCode::OK, pods);
        let driver = format!("{PODS_PATH}/dj-j-abcdef12-driver");
        let (_, send) = expect(&mut server, "DELETE", &driver).await;
        reply(send, StatusCode::OK, pod);
        server
    });
    let ctx = reconcile_waiting_teardown(ctx, datajob).await;
    no_more_calls(ctx, api_server, "the finalizer stays while a pod remains").await;
}

/// Reconciles the deleted `datajob`, which waits for its pods (a requeue, no error); returns
/// the context.
async fn reconcile_waiting_teardown(ctx: Context, datajob: DataJob) -> Context {
    let ctx = Arc::new(ctx);
    let action = reconcile(Arc::new(datajob), ctx.clone())
        .await
        .expect("waiting is no error");
    assert_eq!(action, Action::requeue(Duration::from_secs(2)));
    Arc::into_inner(ctx).expect("the only reference")
}

/// The next request, which must be `method` on `path`.
async fn expect(
    server: &mut ApiServer,
    method: &str,
    path: &str,
) -> (Request<Value>, mock::SendResponse<Response<Body>>) {
    let (request, send) = next(server).await;
    assert_eq!(request.method(), method);
    assert_eq!(request.uri().path(), path);
    (request, send)
}

/// Answers a status write with the job.
fn accept_status(send: mock::SendResponse<Response<Body>>) {
    reply(
        send,
        StatusCode::OK,
        serde_json::to_value(job()).expect("json"),
    );
}

/// Answers a create with the object as sent.
fn echo(send: mock::SendResponse<Response<Body>>, request: &Request<Value>, status: StatusCode) {
    reply(send, status, request.body().clone());
}

/// Closes the client and checks the server got no request beyond those it answered.
async fn no_more_calls(ctx: Context, api_server: JoinHandle<ApiServer>, why: &str) {
    drop(ctx);
    let mut server = api_server.await.expect("mock API server");
    assert!(server.next_request().await.is_none(), "{why}");
}

/// A Status body the API server sends with an error.
fn failure(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code,
        "reason": reason, "message": message,
    })
}

#[tokio::test]
async fn a_panicking_reconcile_becomes_an_error_not_a_dead_process() {
    let caught = super::catch_panic(async {
        let deadline: i64 = std::hint::black_box(300_000_000_000);
        if deadline > 0 {
            panic!("adding unsigned duration to timestamp overflowed");
        }
        1
    })
    .await;
    assert_eq!(
        caught,
        Err("adding unsigned duration to timestamp overflowed".to_string())
    );
    assert_eq!(super::catch_panic(async { 7 }).await, Ok(7));
    let error = Error::Panicked {
        job: "ns/j".to_string(),
        message: "boom".to_string(),
    };
    assert_eq!(error.category(), "panic");
    assert!(
        error.retry_after(3).is_some(),
        "a panicked job is retried with back-off"
    );
}

#[tokio::test]
async fn a_torn_down_pod_loses_only_its_result_finalizer_read_again_when_the_index_is_stale() {
    let (ctx, mut server) = mocked();
    let mut datajob = job();
    datajob.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
    let driver = format!("{PODS_PATH}/dj-j-abcdef12-driver");
    let pod = |finalizers: &[&str]| {
        json!({ "metadata": { "name": "dj-j-abcdef12-driver", "namespace": "ns",
                              "finalizers": finalizers } })
    };
    let held = pod(&["example.com/other", RESULT_FINALIZER]);
    let api_server = tokio::spawn(async move {
        let (_, send) = expect(&mut server, "GET", PODS_PATH).await;
        let pods =
            json!({ "kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [held] });
        reply(send, StatusCode::OK, pods);
        let (_, send) = expect(&mut server, "DELETE", &driver).await;
        reply(send, StatusCode::OK, held.clone());
        // Not cached: read, then a test-and-remove at its index.
        let (_, send) = expect(&mut server, "GET", &driver).await;
        reply(send, StatusCode::OK, held.clone());
        let (patch, send) = expect(&mut server, "PATCH", &driver).await;
        let content_type = patch.headers().get("content-type").expect("content type");
        assert_eq!(content_type, "application/json-patch+json");
        let at = |i: usize| format!("/metadata/finalizers/{i}");
        let expected = json!([
            { "op": "test", "path": at(1), "value": RESULT_FINALIZER },
            { "op": "remove", "path": at(1) },
        ]);
        assert_eq!(patch.body(), &expected);
        // The other finalizer went meanwhile: the test fails, the pod is read again.
        let stale = failure(422, "Invalid", "the test operation failed");
        reply(send, StatusCode::UNPROCESSABLE_ENTITY, stale);
        let (_, send) = expect(&mut server, "GET", &driver).await;
        reply(send, StatusCode::OK, pod(&[RESULT_FINALIZER]));
        let (patch, send) = expect(&mut server, "PATCH", &driver).await;
        assert_eq!(patch.body()[1], json!({ "op": "remove", "path": at(0) }));
        reply(send, StatusCode::OK, pod(&[]));
        server
    });
    let ctx = reconcile_waiting_teardown(ctx, datajob).await;
    assert!(ctx.releasing_pod("ns/dj-j-abcdef12-driver", false), "noted");
    no_more_calls(ctx, api_server, "one removal").await;
}

/// A job of pool `p` created at second `created`, with `status`.
fn pooled(name: &str, created: i64, status: Value) -> DataJob {
    let mut job: DataJob = serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
        "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}") },
        "spec": { "type": "nql-forecast", "input": { "nql": "x" }, "dataPlane": "dp",
                  "computePool": "p" },
        "status": status,
    }))
    .expect("job");
    job.metadata.creation_timestamp =
        Some(Time(jiff::Timestamp::from_second(created).expect("time")));
    job
}

#[tokio::test]
async fn a_slot_freed_in_the_cache_wakes_the_next_queued_job_and_no_other() {
    use crate::controller::index::{CacheIndex, JobIndex};
    use kube::runtime::watcher::Event;
    let (jobs, mut job_writer) = reflector::store::<DataJob>();
    let (pools, mut pool_writer) = reflector::store::<ComputePool>();
    let pool: ComputePool = serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1", "kind": "ComputePool",
        "metadata": { "name": "p" }, "spec": { "maxConcurrentJobs": 1 },
    }))
    .expect("pool");
    pool_writer.apply_watcher_event(&Event::Apply(pool));
    let index = Arc::new(JobIndex::default());
    let running = pooled("a", 1, json!({ "state": "running", "executor": "dj-a" }));
    let waiting = [
        pooled("c", 3, json!({ "state": "pending" })),
        pooled("b", 2, json!({ "state": "pending" })),
    ];
    for job in waiting.iter().chain([&running]) {
        job_writer.apply_watcher_event(&Event::Apply(job.clone()));
        index.applied(job, true);
    }
    let stores = Stores {
        jobs,
        pods: reflector::store().0,
        pools,
        index: index.clone(),
    };
    let (service, _server) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let (ctx, mut wake) = Context::new(client, config(), Arc::new(Metrics::default()), stores);
    for job in waiting.iter().chain([&running]) {
        ctx.job_changed(job);
    }
    assert!(wake.try_recv().is_err(), "no slot is free yet");
    let finished = pooled("a", 1, json!({ "state": "completed", "executor": "dj-a" }));
    job_writer.apply_watcher_event(&Event::Apply(finished.clone()));
    index.applied(&finished, false);
    ctx.job_changed(&finished);
    let woken = wake.try_recv().expect("a wake-up");
    assert_eq!(woken.name, "b", "the older waiting job takes the slot");
    assert!(wake.try_recv().is_err(), "one slot wakes one job");
}
