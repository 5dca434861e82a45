//! The bad-input catalogue (issue 7), on the real local control plane: what a tenant may write
//! and what it may not.
//!
//! - Creates and updates of DataJobs and ComputePools that the API server must refuse; each case
//!   asserts that the refusal names the field (server-side dry runs: nothing is stored).
//! - Run-time faults that must end in a defined failure reason: a driver that writes garbage,
//!   a result over the 4 KiB termination-message limit, wrong JSON types, ids beyond 64 bits, a
//!   result for another dataset, an image outside the policy, a Secret reference in a pool that
//!   does not allow it, a namespace the pool does not admit, a pod squatting on the executor's
//!   name. One operator process serves them all; it must still be running afterwards, and a
//!   normal job started then completes.

mod support;

use datajob_operator::api::{ComputePool, DataJob, JobFailure, JobState};
use datajob_operator::executor;
use futures::future::join_all;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceQuota};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use support::*;

/// One manifest the API server must refuse, and what its message must contain.
struct Refused {
    case: &'static str,
    body: Value,
    field: &'static str,
}

fn refused(case: &'static str, body: Value, field: &'static str) -> Refused {
    Refused { case, body, field }
}

/// A valid DataJob spec with `patch` merged in (a JSON merge: null removes a field).
fn job_spec(patch: Value) -> Value {
    let mut spec = json!({
        "type": "materialize-view",
        "input": { "nql": "SELECT 1", "datasetId": 6404 },
        "dataPlane": "dp-bad-input",
    });
    merge(&mut spec, patch);
    spec
}

fn env(n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({ "name": format!("V{i}"), "value": "x" }))
            .collect(),
    )
}

fn quantities(n: usize) -> Value {
    Value::Object(
        (0..n)
            .map(|i| (format!("example.com/r{i}"), json!("1")))
            .collect(),
    )
}

fn labels(n: usize) -> Value {
    Value::Object((0..n).map(|i| (format!("k{i}"), json!("v"))).collect())
}

fn secret_env(secret: Value) -> Value {
    json!({ "executor": { "env": [{ "name": "TOKEN", "valueFrom": { "secretKeyRef": secret } }] } })
}

/// Creates each manifest as a server-side dry run and checks the refusal.
async fn expect_refusals(
    client: &Client,
    resource: ApiResource,
    namespace: Option<&str>,
    cases: Vec<Refused>,
) {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    };
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let mut wrong = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let mut manifest = case.body.clone();
        if manifest["metadata"]["name"].is_null() {
            manifest["metadata"]["name"] = json!(format!("bad-{i}"));
        }
        manifest["apiVersion"] = json!(resource.api_version);
        manifest["kind"] = json!(resource.kind);
        let object: DynamicObject = serde_json::from_value(manifest).expect("a manifest");
        match api.create(&dry_run, &object).await {
            Ok(_) => wrong.push(format!("{}: accepted", case.case)),
            Err(kube::Error::Api(status)) if [400, 422].contains(&status.code) => {
                eprintln!("{}: {:.300}", case.case, status.message);
                if !status.message.contains(case.field) {
                    wrong.push(format!(
                        "{}: the message does not name {}: {:.600}",
                        case.case, case.field, status.message
                    ));
                }
            }
            Err(e) => wrong.push(format!("{}: unexpected error {e}", case.case)),
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases went wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

fn job_case(case: &'static str, spec_patch: Value, field: &'static str) -> Refused {
    refused(
        case,
        json!({ "metadata": {}, "spec": job_spec(spec_patch) }),
        field,
    )
}

/// Waits until job `name` failed and returns its last failure, whose reason must be
/// `ExecutorStartFailed`.
async fn wait_start_failed(jobs: &Api<DataJob>, name: &str) -> JobFailure {
    let failed = wait_for(jobs, name, STEP, |j| {
        j.status.as_ref().and_then(|s| s.state) == Some(JobState::Failed)
    })
    .await;
    let failure = failed
        .status
        .and_then(|s| s.failures.last().cloned())
        .expect("a failure");
    assert_eq!(failure.reason, "ExecutorStartFailed");
    failure
}

/// A job from the shared builder with `extra` merged into its spec.
fn job(name: &str, extra: Value) -> DataJob {
    datajob(name).merged(extra).build()
}

#[tokio::test]
async fn api_server_refuses_bad_datajobs_naming_the_field() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bad-dj").await;
    let long = |n: usize| "a".repeat(n);
    let cases = vec![
        refused("no spec", json!({ "metadata": {} }), "spec"),
        job_case("no type", json!({ "type": null }), "spec.type"),
        job_case(
            "unknown type",
            json!({ "type": "drop-tables" }),
            "spec.type",
        ),
        job_case(
            "empty nql",
            json!({ "input": { "nql": "" } }),
            "spec.input.nql",
        ),
        job_case(
            "no nql",
            json!({ "input": { "nql": null } }),
            "spec.input.nql",
        ),
        job_case(
            "nql over 256 Ki characters",
            json!({ "input": { "nql": long(262_145) } }),
            "spec.input.nql",
        ),
        job_case(
            "nql over 256 KiB of UTF-8",
            json!({ "input": { "nql": "é".repeat(140_000) } }),
            "spec.input.nql",
        ),
        job_case(
            "compiledSql over 256 Ki characters",
            json!({ "input": { "compiledSql": long(262_145) } }),
            "spec.input.compiledSql",
        ),
        job_case(
            "compiledSql over 256 KiB of UTF-8",
            json!({ "input": { "compiledSql": "€".repeat(100_000) } }),
            "spec.input.compiledSql",
        ),
        job_case(
            "datasetId 0",
            json!({ "input": { "datasetId": 0 } }),
            "spec.input.datasetId",
        ),
        job_case(
            "negative datasetId",
            json!({ "input": { "datasetId": -1 } }),
            "spec.input.datasetId",
        ),
        job_case(
            "datasetId above 10^18",
            json!({ "input": { "datasetId": 1_000_000_000_000_000_001i64 } }),
            "spec.input.datasetId",
        ),
        job_case(
            "datasetId i64::MAX",
            json!({ "input": { "datasetId": i64::MAX } }),
            "spec.input.datasetId",
        ),
        job_case(
            "datasetId as a string",
            json!({ "input": { "datasetId": "6404" } }),
            "spec.input.datasetId",
        ),
        job_case(
            "fractional datasetId",
            json!({ "input": { "datasetId": 1.5 } }),
            "spec.input.datasetId",
        ),
        job_case(
            "materialize-view without datasetId",
            json!({ "input": { "datasetId": null } }),
            "spec.input.datasetId",
        ),
        job_case(
            "statsEnabled as a string",
            json!({ "input": { "statsEnabled": "yes" } }),
            "spec.input.statsEnabled",
        ),
        job_case(
            "empty dataPlane",
            json!({ "dataPlane": "" }),
            "spec.dataPlane",
        ),
        job_case(
            "no dataPlane",
            json!({ "dataPlane": null }),
            "spec.dataPlane",
        ),
        job_case(
            "dataPlane not a DNS label",
            json!({ "dataPlane": "Data_Plane" }),
            "spec.dataPlane",
        ),
        job_case(
            "dataPlane of 64 characters",
            json!({ "dataPlane": long(64) }),
            "spec.dataPlane",
        ),
        job_case(
            "computePool not a DNS label",
            json!({ "computePool": "pool.one" }),
            "spec.computePool",
        ),
        job_case(
            "computePool of 64 characters",
            json!({ "computePool": long(64) }),
            "spec.computePool",
        ),
        job_case(
            "unknown clusterType",
            json!({ "clusterType": "huge" }),
            "spec.clusterType",
        ),
        job_case(
            "65 workers",
            json!({ "clusterType": "dedicated", "executor": { "workers": 65 } }),
            "spec.executor.workers",
        ),
        job_case(
            "negative workers",
            json!({ "clusterType": "dedicated", "executor": { "workers": -1 } }),
            "spec.executor.workers",
        ),
        job_case(
            "workers on a shared job",
            json!({ "clusterType": "shared", "executor": { "workers": 2 } }),
            "spec.executor.workers",
        ),
        job_case(
            "grace period over an hour",
            json!({ "executor": { "terminationGracePeriodSeconds": 3601 } }),
            "spec.executor.terminationGracePeriodSeconds",
        ),
        job_case(
            "negative grace period",
            json!({ "executor": { "terminationGracePeriodSeconds": -1 } }),
            "spec.executor.terminationGracePeriodSeconds",
        ),
        job_case(
            "grace period i64::MAX",
            json!({ "executor": { "terminationGracePeriodSeconds": i64::MAX } }),
            "spec.executor.terminationGracePeriodSeconds",
        ),
        job_case(
            "empty image",
            json!({ "executor": { "image": "" } }),
            "spec.executor.image",
        ),
        job_case(
            "image with a space",
            json!({ "executor": { "image": "registry.example/a b" } }),
            "spec.executor.image",
        ),
        job_case(
            "image with a shell command",
            json!({ "executor": { "image": "x;rm -rf /" } }),
            "spec.executor.image",
        ),
        job_case(
            "image of 513 characters",
            json!({ "executor": { "image": format!("registry.example/{}", long(496)) } }),
            "spec.executor.image",
        ),
        job_case(
            "image with a short digest",
            json!({ "executor": { "image": "x@sha256:abc" } }),
            "spec.executor.image",
        ),
        job_case(
            "65 env variables",
            json!({ "executor": { "env": env(65) } }),
            "spec.executor.env",
        ),
        job_case(
            "env name starting with a digit",
            json!({ "executor": { "env": [{ "name": "1X", "value": "a" }] } }),
            "spec.executor.env[0].name",
        ),
        job_case(
            "env name with a dash",
            json!({ "executor": { "env": [{ "name": "A-B", "value": "a" }] } }),
            "spec.executor.env[0].name",
        ),
        job_case(
            "env name with '='",
            json!({ "executor": { "env": [{ "name": "A=B", "value": "a" }] } }),
            "spec.executor.env[0].name",
        ),
        job_case(
            "env name of 129 characters",
            json!({ "executor": { "env": [{ "name": long(129), "value": "a" }] } }),
            "spec.executor.env[0].name",
        ),
        job_case(
            "duplicate env names",
            json!({ "executor": { "env": [{ "name": "A", "value": "1" }, { "name": "A", "value": "2" }] } }),
            "spec.executor.env[1]",
        ),
        job_case(
            "env setting a contract variable",
            json!({ "executor": { "env": [{ "name": "DATAJOB_NQL", "value": "DROP" }] } }),
            "spec.executor.env",
        ),
        job_case(
            "env value of 4097 characters",
            json!({ "executor": { "env": [{ "name": "A", "value": long(4097) }] } }),
            "spec.executor.env[0].value",
        ),
        job_case(
            "env with value and valueFrom",
            json!({ "executor": { "env": [{ "name": "A", "value": "1", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" } } }] } }),
            "spec.executor.env[0]",
        ),
        job_case(
            "env valueFrom with no source",
            json!({ "executor": { "env": [{ "name": "A", "valueFrom": {} }] } }),
            "spec.executor.env[0].valueFrom",
        ),
        job_case(
            "env valueFrom with two sources",
            json!({ "executor": { "env": [{ "name": "A", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" }, "configMapKeyRef": { "name": "c", "key": "k" } } }] } }),
            "spec.executor.env[0].valueFrom",
        ),
        job_case(
            "env valueFrom of a pod field",
            json!({ "executor": { "env": [{ "name": "A", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }] } }),
            "spec.executor.env[0].valueFrom",
        ),
        job_case(
            "secret name not a DNS subdomain",
            secret_env(json!({ "name": "Bad_Secret", "key": "k" })),
            "spec.executor.env[0].valueFrom.secretKeyRef.name",
        ),
        job_case(
            "secret reference without key",
            secret_env(json!({ "name": "s" })),
            "spec.executor.env[0].valueFrom.secretKeyRef.key",
        ),
        job_case(
            "secret key with a slash",
            secret_env(json!({ "name": "s", "key": "../k" })),
            "spec.executor.env[0].valueFrom.secretKeyRef.key",
        ),
        job_case(
            "request above the limit",
            json!({ "executor": { "resources": { "requests": { "cpu": "2" }, "limits": { "cpu": 1 } } } }),
            "spec.executor.resources",
        ),
        job_case(
            "memory request above the limit",
            json!({ "executor": { "resources": { "requests": { "memory": "2Gi" }, "limits": { "memory": "1000Mi" } } } }),
            "spec.executor.resources",
        ),
        job_case(
            "quantity that is not one",
            json!({ "executor": { "resources": { "requests": { "memory": "lots" } } } }),
            "spec.executor.resources.requests",
        ),
        job_case(
            "negative limit",
            json!({ "executor": { "resources": { "limits": { "cpu": "-1" } } } }),
            "spec.executor.resources.limits",
        ),
        job_case(
            "nine requests",
            json!({ "executor": { "resources": { "requests": quantities(9) } } }),
            "spec.executor.resources.requests",
        ),
        job_case(
            "quantity of 65 characters",
            json!({ "executor": { "resources": { "requests": { "cpu": format!("{}m", "1".repeat(64)) } } } }),
            "spec.executor.resources.requests",
        ),
        job_case(
            "cancelReason of 1025 characters",
            json!({ "cancelReason": long(1025) }),
            "spec.cancelReason",
        ),
        job_case(
            "cancel as a string",
            json!({ "cancel": "true" }),
            "spec.cancel",
        ),
        job_case(
            "deadline of 300000000000 s (the crash of issue 7)",
            json!({ "activeDeadlineSeconds": 300_000_000_000i64 }),
            "spec.activeDeadlineSeconds",
        ),
        job_case(
            "deadline 0",
            json!({ "activeDeadlineSeconds": 0 }),
            "spec.activeDeadlineSeconds",
        ),
        job_case(
            "deadline i64::MAX",
            json!({ "activeDeadlineSeconds": i64::MAX }),
            "spec.activeDeadlineSeconds",
        ),
        job_case(
            "start timeout 0",
            json!({ "startTimeoutSeconds": 0 }),
            "spec.startTimeoutSeconds",
        ),
        job_case(
            "start timeout over a day",
            json!({ "startTimeoutSeconds": 86_401 }),
            "spec.startTimeoutSeconds",
        ),
        job_case(
            "negative TTL",
            json!({ "ttlSecondsAfterFinished": -1 }),
            "spec.ttlSecondsAfterFinished",
        ),
        job_case(
            "TTL over a year",
            json!({ "ttlSecondsAfterFinished": 31_536_001 }),
            "spec.ttlSecondsAfterFinished",
        ),
        job_case(
            "TTL beyond int32",
            json!({ "ttlSecondsAfterFinished": 1i64 << 40 }),
            "spec.ttlSecondsAfterFinished",
        ),
    ];
    assert!(
        cases.len() >= 50,
        "the DataJob catalogue has {} cases",
        cases.len()
    );
    expect_refusals(
        &client,
        ApiResource::erase::<DataJob>(&()),
        Some(ns.name()),
        cases,
    )
    .await;
    ns.cleanup().await;
}

fn pool(case: &'static str, name: &str, spec: Value, field: &'static str) -> Refused {
    refused(
        case,
        json!({ "metadata": { "name": name }, "spec": spec }),
        field,
    )
}

#[tokio::test]
async fn api_server_refuses_bad_computepools_naming_the_field() {
    let client = admin_client().await;
    install_crds(&client).await;
    let selector =
        |expression: Value| json!({ "namespaceSelector": { "matchExpressions": [expression] } });
    let cases = vec![
        pool(
            "name not a DNS label",
            "pool.with.dots",
            json!({}),
            "metadata.name",
        ),
        pool(
            "name of 64 characters",
            &"p".repeat(64),
            json!({}),
            "metadata.name",
        ),
        pool(
            "negative maxConcurrentJobs",
            "bad-pool",
            json!({ "maxConcurrentJobs": -1 }),
            "spec.maxConcurrentJobs",
        ),
        pool(
            "maxConcurrentJobs above 100000",
            "bad-pool",
            json!({ "maxConcurrentJobs": 100_001 }),
            "spec.maxConcurrentJobs",
        ),
        pool(
            "pool start timeout 0",
            "bad-pool",
            json!({ "startTimeoutSeconds": 0 }),
            "spec.startTimeoutSeconds",
        ),
        pool(
            "unknown clusterType",
            "bad-pool",
            json!({ "clusterType": "huge" }),
            "spec.clusterType",
        ),
        pool(
            "33 node selector labels",
            "bad-pool",
            json!({ "nodeSelector": labels(33) }),
            "spec.nodeSelector",
        ),
        pool(
            "node selector key with a space",
            "bad-pool",
            json!({ "nodeSelector": { "bad key": "v" } }),
            "spec.nodeSelector",
        ),
        pool(
            "node selector value of 64 characters",
            "bad-pool",
            json!({ "nodeSelector": { "zone": "v".repeat(64) } }),
            "spec.nodeSelector.zone",
        ),
        pool(
            "node selector value starting with '-'",
            "bad-pool",
            json!({ "nodeSelector": { "zone": "-a" } }),
            "spec.nodeSelector.zone",
        ),
        pool(
            "33 tolerations",
            "bad-pool",
            json!({ "tolerations": vec![json!({ "operator": "Exists" }); 33] }),
            "spec.tolerations",
        ),
        pool(
            "unknown toleration operator",
            "bad-pool",
            json!({ "tolerations": [{ "key": "k", "operator": "Maybe" }] }),
            "spec.tolerations[0].operator",
        ),
        pool(
            "unknown toleration effect",
            "bad-pool",
            json!({ "tolerations": [{ "key": "k", "effect": "Sometimes" }] }),
            "spec.tolerations[0].effect",
        ),
        pool(
            "tolerationSeconds over a year",
            "bad-pool",
            json!({ "tolerations": [{ "key": "k", "effect": "NoExecute", "tolerationSeconds": 31_536_001 }] }),
            "spec.tolerations[0].tolerationSeconds",
        ),
        pool(
            "negative tolerationSeconds",
            "bad-pool",
            json!({ "tolerations": [{ "key": "k", "effect": "NoExecute", "tolerationSeconds": -1 }] }),
            "spec.tolerations[0].tolerationSeconds",
        ),
        pool(
            "bad default image",
            "bad-pool",
            json!({ "executor": { "image": "Not An Image" } }),
            "spec.executor.image",
        ),
        pool(
            "default request above the limit",
            "bad-pool",
            json!({ "executor": { "resources": { "requests": { "cpu": "4" }, "limits": { "cpu": "2" } } } }),
            "spec.executor.resources",
        ),
        pool(
            "33 allowed images",
            "bad-pool",
            json!({ "allowedImages": vec![json!("registry.example/"); 33] }),
            "spec.allowedImages",
        ),
        pool(
            "empty allowed image",
            "bad-pool",
            json!({ "allowedImages": [""] }),
            "spec.allowedImages[0]",
        ),
        pool(
            "allowed image with a space",
            "bad-pool",
            json!({ "allowedImages": ["registry.example/ x"] }),
            "spec.allowedImages[0]",
        ),
        pool(
            "unknown selector operator",
            "bad-pool",
            selector(json!({ "key": "team", "operator": "Near", "values": ["a"] })),
            "spec.namespaceSelector.matchExpressions[0].operator",
        ),
        pool(
            "In without values",
            "bad-pool",
            selector(json!({ "key": "team", "operator": "In" })),
            "spec.namespaceSelector.matchExpressions[0]",
        ),
        pool(
            "Exists with values",
            "bad-pool",
            selector(json!({ "key": "team", "operator": "Exists", "values": ["a"] })),
            "spec.namespaceSelector.matchExpressions[0]",
        ),
        pool(
            "selector label key with a space",
            "bad-pool",
            json!({ "namespaceSelector": { "matchLabels": { "a b": "c" } } }),
            "spec.namespaceSelector.matchLabels",
        ),
        pool(
            "allowEnvValueFrom as a string",
            "bad-pool",
            json!({ "allowEnvValueFrom": "yes" }),
            "spec.allowEnvValueFrom",
        ),
    ];
    expect_refusals(&client, ApiResource::erase::<ComputePool>(&()), None, cases).await;
}

#[tokio::test]
async fn api_server_refuses_bad_updates_naming_the_field() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "bad-update").await;
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let job: DataJob = serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
        "metadata": { "name": "stored" }, "spec": job_spec(json!({})),
    }))
    .expect("job");
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create the job");
    let cases = [
        (
            "new nql",
            json!({ "spec": { "input": { "nql": "SELECT 2" } } }),
            "spec.input is immutable",
        ),
        (
            "new type",
            json!({ "spec": { "type": "nql-forecast" } }),
            "spec.type is immutable",
        ),
        (
            "new data plane",
            json!({ "spec": { "dataPlane": "other" } }),
            "spec.dataPlane is immutable",
        ),
        (
            "a pool added",
            json!({ "spec": { "computePool": "p" } }),
            "spec.computePool is immutable",
        ),
        (
            "an image added",
            json!({ "spec": { "executor": { "image": "busybox" } } }),
            "spec.executor is immutable",
        ),
        (
            "a deadline added",
            json!({ "spec": { "activeDeadlineSeconds": 60 } }),
            "spec.activeDeadlineSeconds is immutable",
        ),
        (
            "a start timeout added",
            json!({ "spec": { "startTimeoutSeconds": 60 } }),
            "spec.startTimeoutSeconds is immutable",
        ),
        (
            "a TTL beyond a year",
            json!({ "spec": { "ttlSecondsAfterFinished": 31_536_001 } }),
            "spec.ttlSecondsAfterFinished",
        ),
        (
            "a cancel reason of 1025 characters",
            json!({ "spec": { "cancel": true, "cancelReason": "r".repeat(1025) } }),
            "spec.cancelReason",
        ),
    ];
    let mut wrong = Vec::new();
    for (case, patch, expected) in cases {
        match jobs
            .patch("stored", &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => wrong.push(format!("{case}: accepted")),
            Err(kube::Error::Api(s)) if s.code == 422 && s.message.contains(expected) => {}
            Err(e) => wrong.push(format!("{case}: {e}")),
        }
    }
    jobs.patch(
        "stored",
        &PatchParams::default(),
        &Patch::Merge(&json!({ "spec": { "cancel": true } })),
    )
    .await
    .expect("cancelling is allowed");
    match jobs
        .patch(
            "stored",
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "cancel": false } })),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.message.contains("cancellation cannot be withdrawn") => {}
        other => wrong.push(format!("withdrawn cancel: {other:?}")),
    }
    let pools: Api<ComputePool> = Api::all(client.clone());
    let pool_name = format!("{}-p", ns.name());
    pools
        .create(&PostParams::default(), &compute_pool(&pool_name, json!({})))
        .await
        .expect("create the pool");
    match pools
        .patch(
            &pool_name,
            &PatchParams::default(),
            &Patch::Merge(&json!({ "spec": { "maxConcurrentJobs": -5 } })),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.message.contains("spec.maxConcurrentJobs") => {}
        other => wrong.push(format!("pool update: {other:?}")),
    }
    let _ = pools.delete(&pool_name, &DeleteParams::default()).await;
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    ns.cleanup().await;
}

/// One run-time fault: a job, what its driver writes (when it gets to run), and the reason it
/// must fail with.
struct Fault {
    name: &'static str,
    spec: Value,
    driver: Option<(i32, String)>,
    reason: &'static str,
}

fn driver_writes(
    name: &'static str,
    code: i32,
    message: impl Into<String>,
    reason: &'static str,
) -> Fault {
    Fault {
        name,
        spec: json!({ "clusterType": "shared" }),
        driver: Some((code, message.into())),
        reason,
    }
}

/// Runs one fault to its end and returns a description of what went wrong, if anything.
async fn run_fault(jobs: &Api<DataJob>, pods: &Api<Pod>, fault: &Fault) -> Option<String> {
    let job = job(fault.name, fault.spec.clone());
    let job = match jobs.create(&PostParams::default(), &job).await {
        Ok(job) => job,
        Err(e) => return Some(format!("{}: cannot create: {e}", fault.name)),
    };
    if let Some((code, message)) = &fault.driver {
        let running = wait_pods_running(pods, &job, 1).await;
        exit_pod(pods, &running[0].name_any(), *code, message).await;
    }
    let done = wait_for(jobs, fault.name, STEP, |j| {
        j.status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(JobState::is_terminal)
    })
    .await;
    let status = done.status.unwrap_or_default();
    let failure = status.failures.last();
    let got = failure.map(|f| f.reason.as_str()).unwrap_or("none");
    if status.state != Some(JobState::Failed) || got != fault.reason {
        return Some(format!(
            "{}: expected failed/{}, got {:?}/{got}: {:?}",
            fault.name,
            fault.reason,
            status.state,
            failure.map(|f| &f.message)
        ));
    }
    let message = &failure.expect("a failure").message;
    if message.chars().count() > 2000 || message.chars().any(char::is_control) {
        return Some(format!(
            "{}: the failure message is not bounded/clean: {message:?}",
            fault.name
        ));
    }
    None
}

#[tokio::test]
async fn run_time_faults_end_in_defined_reasons_and_the_operator_stays_up() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "faults").await;
    let mut operator = Operator::start_with(
        ns.name(),
        &[
            "--namespace",
            ns.name(),
            "--allowed-image-prefix",
            "registry.example/",
        ],
    );
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let pools: Api<ComputePool> = Api::all(client.clone());
    let closed = format!("{}-closed", ns.name());
    let open = format!("{}-open", ns.name());
    for pool in [
        compute_pool(
            &closed,
            json!({ "namespaceSelector": { "matchLabels": { "team": "nobody" } } }),
        ),
        compute_pool(
            &open,
            json!({ "allowedImages": ["evil.example/miner"], "allowEnvValueFrom": true }),
        ),
    ] {
        pools
            .create(&PostParams::default(), &pool)
            .await
            .expect("create a pool");
    }

    let valid = r#"{"datasetId": 6404, "snapshotId": 1, "recalculationId": "r"}"#;
    let secret =
        json!([{ "name": "TOKEN", "valueFrom": { "secretKeyRef": { "name": "s", "key": "k" } } }]);
    let faults = vec![
        driver_writes("garbage", 0, "not json at all", "InvalidResult"),
        driver_writes("empty-result", 0, "", "InvalidResult"),
        driver_writes(
            "result-over-4kib",
            0,
            format!("{valid}{}", " ".repeat(4100)),
            "InvalidResult",
        ),
        driver_writes(
            "snapshot-as-string",
            0,
            r#"{"datasetId": 6404, "snapshotId": "1", "recalculationId": "r"}"#,
            "InvalidResult",
        ),
        driver_writes(
            "dataset-as-string",
            0,
            r#"{"datasetId": "6404", "snapshotId": 1, "recalculationId": "r"}"#,
            "InvalidResult",
        ),
        driver_writes(
            "snapshot-beyond-u64",
            0,
            r#"{"datasetId": 6404, "snapshotId": 18446744073709551616, "recalculationId": "r"}"#,
            "InvalidResult",
        ),
        driver_writes(
            "snapshot-below-i64",
            0,
            r#"{"datasetId": 6404, "snapshotId": -9223372036854775809, "recalculationId": "r"}"#,
            "InvalidResult",
        ),
        driver_writes(
            "other-dataset",
            0,
            r#"{"datasetId": 6405, "snapshotId": 1, "recalculationId": "r"}"#,
            "InvalidResult",
        ),
        driver_writes(
            "lone-surrogate",
            0,
            r#"{"datasetId": 6404, "snapshotId": 1, "recalculationId": "\ud800"}"#,
            "InvalidResult",
        ),
        driver_writes(
            "deep-nesting",
            0,
            format!("{}{}", "[".repeat(2000), "]".repeat(2000)),
            "InvalidResult",
        ),
        driver_writes(
            "huge-failure",
            3,
            format!(
                "{{\"reason\": \"{}\", \"message\": \"a\\nb\\u001b{}\"}}",
                "R".repeat(5000),
                "m".repeat(20_000)
            ),
            "DriverFailed",
        ),
        Fault {
            name: "forecast-not-an-object",
            spec: json!({ "type": "nql-forecast", "clusterType": "shared" }),
            driver: Some((0, r#"{"forecast": [1, 2, 3]}"#.to_string())),
            reason: "InvalidResult",
        },
        Fault {
            name: "image-outside-policy",
            spec: json!({ "executor": { "image": "evil.example/miner:1" } }),
            driver: None,
            reason: "InvalidSpec",
        },
        Fault {
            name: "secret-without-pool",
            spec: json!({ "executor": { "env": secret } }),
            driver: None,
            reason: "InvalidSpec",
        },
        Fault {
            name: "namespace-not-admitted",
            spec: json!({ "computePool": closed }),
            driver: None,
            reason: "PoolNotAllowed",
        },
    ];
    let results = join_all(faults.iter().map(|f| run_fault(&jobs, &pods, f))).await;
    let wrong: Vec<String> = results.into_iter().flatten().collect();

    // A pool that allows them: the same image and Secret reference run to completion.
    let allowed = job(
        "allowed-by-pool",
        json!({ "computePool": open, "executor": { "image": "evil.example/miner:1", "env": secret } }),
    );
    run_to_completion(&jobs, &pods, &allowed).await;

    for pool in [&closed, &open] {
        let _ = pools.delete(pool, &DeleteParams::default()).await;
    }
    assert!(
        wrong.is_empty(),
        "{} of {} faults went wrong:\n{}",
        wrong.len(),
        faults.len(),
        wrong.join("\n")
    );
    assert_eq!(
        operator.exited(),
        None,
        "the operator process is still running"
    );

    // After the whole catalogue, a normal job still completes. Its query fits the
    // environment: it goes inline, with no ConfigMap, volume or file variable.
    let normal = job("normal", json!({ "clusterType": "shared" }));
    let done = run_to_completion(&jobs, &pods, &normal).await;
    let uid = done.uid().expect("uid");
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns.name());
    assert!(
        config_maps
            .get_opt(&executor::query_config_map_name(&uid))
            .await
            .expect("read ConfigMaps")
            .is_none(),
        "a short query needs no ConfigMap"
    );
    let driver = &job_pods(&pods, &done).await[0];
    let container = &driver.spec.as_ref().expect("spec").containers[0];
    let env = container.env.as_ref().expect("env");
    assert!(env.iter().any(
        |e| e.name == "DATAJOB_NQL" && e.value.as_deref() == Some(done.spec.input.nql.as_str())
    ));
    assert!(!env.iter().any(|e| e.name.ends_with("_FILE")));
    assert!(container.volume_mounts.is_none());
    // A query too long for the environment reaches the executor as read-only files of an
    // immutable ConfigMap of the job.
    let long_query = format!("SELECT '{}'", "q".repeat(100 * 1024));
    let long = job("long-query", json!({ "input": { "nql": long_query } }));
    let long = run_to_completion(&jobs, &pods, &long).await;
    let long_uid = long.uid().expect("uid");
    let query = config_maps
        .get(&executor::query_config_map_name(&long_uid))
        .await
        .expect("the query ConfigMap");
    assert_eq!(query.immutable, Some(true));
    assert_eq!(query.owner_references()[0].uid, long_uid);
    assert_eq!(
        query.data.as_ref().and_then(|d| d.get("nql")),
        Some(&long.spec.input.nql)
    );
    let long_driver = &job_pods(&pods, &long).await[0];
    let container = &long_driver.spec.as_ref().expect("spec").containers[0];
    let env = container.env.as_ref().expect("env");
    assert!(env.iter().any(|e| e.name == "DATAJOB_NQL_FILE"
        && e.value.as_deref() == Some("/var/run/datajob/query/nql")));
    assert!(
        env.iter()
            .any(|e| e.name == "DATAJOB_NQL" && e.value.as_deref().unwrap_or_default().is_empty()),
        "the text too long for the environment is not inline"
    );
    assert!(
        container.volume_mounts.as_ref().expect("mounts")[0].read_only == Some(true),
        "the query is mounted read-only"
    );
    assert_eq!(
        done.status
            .and_then(|s| s.result)
            .and_then(|r| r.snapshot_id),
        Some(739_881_302_291_276_700)
    );
    assert_eq!(
        operator.exited(),
        None,
        "the operator process is still running"
    );
    drop(operator);
    ns.cleanup().await;
}

#[tokio::test]
async fn a_pod_squatting_on_the_executor_name_is_never_adopted() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "squat").await;
    let operator = Operator::start(ns.name());
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let pools: Api<ComputePool> = Api::all(client.clone());
    let late = format!("{}-late", ns.name());
    // The job waits for its pool, so its executor name is not recorded yet...
    let job = jobs
        .create(
            &PostParams::default(),
            &job("squatted", json!({ "computePool": late })),
        )
        .await
        .expect("create");
    wait_state(&jobs, "squatted", JobState::Pending).await;
    // ...while someone else creates a pod under the name the executor's driver will have.
    let executor = executor::executor_name("squatted", &job.uid().expect("uid"));
    let squatter: Pod = serde_json::from_value(json!({
        "metadata": { "name": format!("{executor}-driver"), "labels": { "app": "squatter" } },
        "spec": { "containers": [{ "name": "c", "image": "registry.example/squatter:1" }] },
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &squatter)
        .await
        .expect("create the squatter");
    pools
        .create(&PostParams::default(), &compute_pool(&late, json!({})))
        .await
        .expect("create the pool");
    let failed = wait_for(&jobs, "squatted", STEP, |j| {
        j.status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(JobState::is_terminal)
    })
    .await;
    let status = failed.status.expect("status");
    assert_eq!(status.state, Some(JobState::Failed));
    assert_eq!(
        status.failures.last().map(|f| f.reason.as_str()),
        Some("ExecutorConflict")
    );
    let pod = pods
        .get(&format!("{executor}-driver"))
        .await
        .expect("the squatter is still there");
    assert!(
        pod.owner_references().is_empty(),
        "the squatter was not adopted"
    );
    assert!(
        pod.metadata.deletion_timestamp.is_none(),
        "the squatter was not deleted"
    );
    assert_eq!(
        pod.labels().get("app").map(String::as_str),
        Some("squatter")
    );
    let _ = pools.delete(&late, &DeleteParams::default()).await;
    drop(operator);
    ns.cleanup().await;
}

/// A namespace whose ResourceQuota allows no pod: the refused create (403) is shown on the job
/// (`ExecutorWaiting`, the quota's message) and the job fails with `ExecutorStartFailed` at its
/// start timeout, giving its slot back.
#[tokio::test]
async fn a_used_up_quota_is_shown_and_fails_the_job_at_its_start_timeout() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "no-room").await;
    let quotas: Api<ResourceQuota> = Api::namespaced(client.clone(), ns.name());
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "no-pods" },
        "spec": { "hard": { "pods": "0" } },
    }))
    .expect("quota");
    quotas
        .create(&PostParams::default(), &quota)
        .await
        .expect("create the quota");
    // Enforced once the quota controller has counted the namespace.
    wait_for(&quotas, "no-pods", STEP, |q: &ResourceQuota| {
        q.status.as_ref().and_then(|s| s.hard.as_ref()).is_some()
    })
    .await;
    let operator = Operator::start(ns.name());
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    jobs.create(
        &PostParams::default(),
        &job("no-room", json!({ "startTimeoutSeconds": 15 })),
    )
    .await
    .expect("create");
    let waiting = wait_for(&jobs, "no-room", STEP, |j| {
        j.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" && c.reason == "ExecutorWaiting")
        })
    })
    .await;
    let conditions = waiting.status.expect("status").conditions;
    let reconciling = conditions.iter().find(|c| c.type_ == "Reconciling");
    let message = &reconciling.expect("Reconciling").message;
    assert!(message.contains("exceeded quota: no-pods"), "{message}");
    let failure = wait_start_failed(&jobs, "no-room").await;
    assert!(
        failure.message.contains("within 15 s") && failure.message.contains("exceeded quota"),
        "{}",
        failure.message
    );
    drop(operator);
    ns.cleanup().await;
}

/// An executor the scheduler cannot place (it asks for more CPU than any node has) is shown
/// on the job (Warning event and Reconciling reason `ExecutorWaiting`, naming the pod and the
/// scheduler's message) until `startTimeoutSeconds`, then the job fails with
/// `ExecutorStartFailed` and its pods are deleted.
#[tokio::test]
async fn requests_above_every_nodes_capacity_fail_the_job() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "too-big").await;
    let operator = Operator::start(ns.name());
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    let job = job(
        "too-big",
        json!({
            "executor": { "resources": { "requests": { "cpu": "100000" } } },
            "startTimeoutSeconds": 20,
        }),
    );
    let job = jobs
        .create(&PostParams::default(), &job)
        .await
        .expect("create");
    let waiting = wait_for(&jobs, "too-big", STEP, |j| {
        j.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "Reconciling" && c.reason == "ExecutorWaiting")
        })
    })
    .await;
    let reconciling = waiting.status.expect("status").conditions;
    let message = &reconciling
        .iter()
        .find(|c| c.type_ == "Reconciling")
        .expect("Reconciling")
        .message;
    assert!(
        message.contains("-driver: Unschedulable:") && message.contains("Insufficient cpu"),
        "{message}"
    );
    let failure = wait_start_failed(&jobs, "too-big").await;
    assert!(
        failure.message.contains("within 20 s") && failure.message.contains("Unschedulable"),
        "{}",
        failure.message
    );
    let events = events_for(&client, ns.name(), "too-big").await;
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("ExecutorWaiting")
                && e.type_.as_deref() == Some("Warning")),
        "a Warning event names the cause: {events:?}"
    );
    wait_pods_gone(&pods, &job, |_| true).await;
    drop(operator);
    ns.cleanup().await;
}
