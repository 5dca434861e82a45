//! One reconcile's API calls against a mocked API server: the order of the writes and the
//! guard on the status write.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector;
use serde_json::{Value, json};
use tower_test::mock::{self, Handle};

use super::*;
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

fn context(client: Client) -> Context {
    let stores = Stores {
        jobs: reflector::store().0,
        pods: reflector::store().0,
        pools: reflector::store().0,
    };
    let config = Config {
        namespace: None,
        data_plane: None,
        executor_image: "executor:test".to_string(),
        concurrency: 1,
        instance: None,
    };
    Context::new(client, config, Arc::new(Metrics::default()), stores).0
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
    assert!(error.is_conflict(), "{error}");
    assert_eq!(error.retry_after(0), Some(Duration::from_millis(200)));
    drop(ctx);
    let mut server = api_server.await.expect("mock API server");
    assert!(
        server.next_request().await.is_none(),
        "no pod is created from a stale view"
    );
}
