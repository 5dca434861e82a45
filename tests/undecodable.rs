//! One undecodable object cannot stall the others, and the crash of issue 7 cannot happen
//! (real cluster). The CRD is served with a looser schema so that objects the strict schema
//! refuses get stored: a running job whose datasetId becomes a string (the operator cannot
//! decode it) and a job with `activeDeadlineSeconds: 300000000000` (it decodes, and used to
//! panic the operator in timestamp arithmetic). The bad job gets a Warning event and
//! Stalled=True/InvalidSpec, the deadline job runs, another job completes, deleting the bad job
//! tears its pod down and releases it, and the operator process stays up throughout. The strict
//! CRD is restored at the end (an object invalid under the schema it is served with cannot be
//! written by anyone, so the finalizer release needs the schema that stored it).
//!
//! A test binary of its own: loosening the CRD would break tests running beside it.

mod support;

use std::time::Duration;

use datajob_operator::api::{DataJob, JobState};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::{Value, json};

use support::*;

/// Serves the DataJob CRD with a spec schema that keeps anything (only the selectable fields
/// stay typed: the API server requires them in the schema), so objects the strict schema
/// refuses can be stored.
async fn serve_loose_schema(client: &Client) {
    let mut crd = serde_json::to_value(DataJob::crd()).expect("CRD as JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"] = json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "dataPlane": { "type": "string" },
            "computePool": { "type": "string" },
            "type": { "type": "string" },
        },
    });
    let crd: CustomResourceDefinition = serde_json::from_value(crd).expect("CRD");
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            &crd.name_any(),
            &PatchParams::apply("datajob-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("serve the loose schema");
}

/// Retries `attempt` until it succeeds (the API server picks a new schema up asynchronously).
async fn eventually<F, Fut>(what: &str, mut attempt: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        match attempt().await {
            Ok(()) => return,
            Err(e) if tokio::time::Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

fn stalled_reason(object: &DynamicObject) -> Option<String> {
    object.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Stalled" && c["status"] == "True")
        .and_then(|c| c["reason"].as_str().map(str::to_string))
}

/// A job from the shared builder with `extra` merged into its spec.
fn job(name: &str, extra: Value) -> DataJob {
    datajob(name).merged(extra).build()
}

#[tokio::test]
async fn an_undecodable_job_is_reported_and_does_not_stall_the_others() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "undecodable").await;
    let mut operator = Operator::start(ns.name());
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let raw: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns.name(),
        &ApiResource::erase::<DataJob>(&()),
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());

    // A job that runs, with its finalizer and its pod...
    let victim = jobs
        .create(
            &PostParams::default(),
            &job("victim", json!({ "clusterType": "shared" })),
        )
        .await
        .expect("create");
    wait_state(&jobs, "victim", JobState::Running).await;
    wait_pods_running(&pods, &victim, 1).await;

    // ...becomes undecodable, and a job with the deadline of the crash is stored.
    serve_loose_schema(&client).await;
    eventually("make the victim undecodable", || async {
        let patch = json!({ "spec": { "input": { "datasetId": "not-a-number" } } });
        raw.patch("victim", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .await;
    eventually("store the crash deadline", || async {
        let job = job(
            "deadline",
            json!({ "clusterType": "shared", "activeDeadlineSeconds": 300_000_000_000i64 }),
        );
        let object: DynamicObject =
            serde_json::from_value(serde_json::to_value(&job).expect("json")).expect("object");
        match raw.create(&PostParams::default(), &object).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await;

    // The bad job is reported: Stalled=True with reason InvalidSpec, and a Warning event.
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let object = raw.get("victim").await.expect("get the victim");
        if stalled_reason(&object).as_deref() == Some("InvalidSpec") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim never got Stalled/InvalidSpec: {:#}",
            object.data["status"]
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let events: Vec<Event> = Api::<Event>::namespaced(client.clone(), ns.name())
        .list(&ListParams::default())
        .await
        .expect("events")
        .items;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("InvalidSpec")
                && e.type_.as_deref() == Some("Warning")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("victim")),
        "a Warning event InvalidSpec on the victim"
    );

    // The others go on: the deadline job runs (no panic), a new job completes.
    wait_state(&jobs, "deadline", JobState::Running).await;
    let normal = job("normal", json!({ "clusterType": "shared" }));
    run_to_completion(&jobs, &pods, &normal).await;
    assert_eq!(
        operator.exited(),
        None,
        "the operator process is still running"
    );

    // Deleting the bad job still tears its pod down and releases it.
    raw.delete("victim", &DeleteParams::default())
        .await
        .expect("delete the victim");
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        let left = job_pods(&pods, &victim).await.len();
        let exists = raw.get_opt("victim").await.expect("get").is_some();
        if left == 0 && !exists {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the victim was not torn down: {left} pod(s), object exists: {exists}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        operator.exited(),
        None,
        "the operator process is still running"
    );
    drop(operator);
    ns.cleanup().await;
}
