//! The seed's Jobs REST API (`datajob-operator api`) on the real local control plane, called
//! with real ServiceAccount tokens (TokenRequest): what a read-only and a read-write caller may
//! do, the seed's request-cancellation -> cancel flow with the operator running, the seed's
//! error cases, exactly-once creates under concurrent retries, and a schema-driven run against
//! the API's own OpenAPI document (`schema.rs`).

mod fixture;
mod schema;
#[path = "../support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use datajob_operator::api::DataJob;
use datajob_operator::executor;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

use fixture::*;
use support::{MATERIALIZE_RESULT, Operator, STEP, wait_for};

fn assert_error(answer: &Answer, status: u16, code: &str) {
    assert_eq!(answer.status, status, "{answer:?}");
    assert_eq!(answer.body["status"], status, "one error shape: {answer:?}");
    assert_eq!(answer.body["code"], code, "{answer:?}");
    assert!(
        answer.body["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{answer:?}"
    );
}

async fn admin_create(env: &Env, job: &DataJob) -> DataJob {
    env.jobs()
        .create(&PostParams::default(), job)
        .await
        .unwrap_or_else(|e| panic!("cannot create DataJob {}: {e}", job.name_any()))
}

#[tokio::test]
async fn a_view_only_caller_reads_jobs_but_gets_403_on_both_cancel_calls() {
    let env = Env::new("api-view").await;
    let api = env.api_in_process(Duration::from_secs(5)).await;
    let job = admin_create(&env, &datajob("mv", "dp-api", "materialize-view")).await;
    let id = job.uid().expect("uid");

    let list = api.get("/v1/jobs", &env.viewer).await;
    assert_eq!(list.status, 200, "{list:?}");
    assert_eq!(list.body["jobs"][0]["id"], id.as_str());
    let one = api.get(&format!("/v1/jobs/{id}"), &env.viewer).await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.body["name"], "mv");
    assert_eq!(one.body["state"], "pending");

    for call in ["request-cancellation", "cancel"] {
        let answer = api
            .post(&format!("/v1/jobs/{id}/{call}"), &env.viewer, json!({}))
            .await;
        assert_error(&answer, 403, "forbidden");
        assert!(
            answer.body["message"]
                .as_str()
                .unwrap_or_default()
                .contains("write access"),
            "{answer:?}"
        );
    }
    let created = api.post("/v1/jobs", &env.viewer, create_body()).await;
    assert_error(&created, 403, "forbidden");

    let after = env.jobs().get("mv").await.expect("job");
    assert!(!after.spec.cancel, "a refused call changed nothing");

    // No token, a malformed header, or a token the API server does not accept: 401.
    let none = api.call("GET", "/v1/jobs", None, &[], None).await;
    assert_error(&none, 401, "unauthorized");
    assert_eq!(
        none.headers.get("www-authenticate").map(|v| v.as_bytes()),
        Some(&b"Bearer"[..])
    );
    let basic = api
        .call(
            "GET",
            "/v1/jobs",
            None,
            &[("authorization", "Basic YTpi")],
            None,
        )
        .await;
    assert_error(&basic, 401, "unauthorized");
    let forged = api.get("/v1/jobs", "not-a-kubernetes-token").await;
    assert_error(&forged, 401, "unauthorized");
    env.cleanup().await;
}

#[tokio::test]
async fn an_edit_caller_runs_the_seed_flow_request_cancellation_then_cancel() {
    let env = Env::new("api-flow").await;
    let _operator = Operator::start(env.ns.name());
    let (_api_process, api) = Process::api(env.ns.name()).await;
    let pods: Api<Pod> = Api::namespaced(env.admin.clone(), env.ns.name());

    let created = api.post("/v1/jobs", &env.editor, create_body()).await;
    assert_eq!(created.status, 201, "{created:?}");
    let id = created.body["id"].as_str().expect("id").to_string();
    let name = created.body["name"].as_str().expect("name").to_string();
    assert_eq!(
        created.body["request_source"]["created_by"],
        env.user("editor")
    );

    // The operator starts the executor; the job runs.
    let running = wait_for(&env.jobs(), &name, STEP, |j| {
        j.status.as_ref().and_then(|s| s.state).map(|s| s.as_str()) == Some("running")
    })
    .await;
    assert_eq!(
        running.status.as_ref().and_then(|s| s.job_id.as_deref()),
        Some(id.as_str())
    );
    let got = api.get(&format!("/v1/jobs/{id}"), &env.editor).await;
    assert_eq!(got.body["state"], "running", "{got:?}");
    assert!(got.body["executor"].is_string(), "{got:?}");

    // cancel before request-cancellation: refused, nothing changes.
    let early = api
        .post(&format!("/v1/jobs/{id}/cancel"), &env.editor, json!({}))
        .await;
    assert_error(&early, 409, "cancellation_not_requested");
    assert!(
        early.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("request-cancellation first")
    );

    let requested = api
        .post(
            &format!("/v1/jobs/{id}/request-cancellation?wait=60"),
            &env.editor,
            json!({"reason": "superseded"}),
        )
        .await;
    assert_eq!(requested.status, 200, "{requested:?}");
    assert_eq!(
        requested.body["state"], "pending_cancellation",
        "{requested:?}"
    );
    assert_eq!(requested.body["cancellation"]["reason"], "superseded");
    assert_eq!(
        requested.body["request_source"]["cancellation_requested_by"],
        env.user("editor")
    );

    let cancelled = api
        .post(
            &format!("/v1/jobs/{id}/cancel?wait=90"),
            &env.editor,
            json!({}),
        )
        .await;
    assert_eq!(cancelled.status, 200, "{cancelled:?}");
    assert_eq!(cancelled.body["state"], "cancelled", "{cancelled:?}");
    assert!(cancelled.body["completed_at"].is_string());
    let job = env.jobs().get(&name).await.expect("job");
    let left = pods
        .list(&ListParams::default().labels(&executor::job_pods_selector(&id)))
        .await
        .expect("pods");
    assert!(
        left.items.is_empty(),
        "no executor pod is left: {:?}",
        left.items.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    assert_eq!(job.spec.cancel_reason.as_deref(), Some("superseded"));

    // Both calls on the terminal job: the job, unchanged.
    for call in ["cancel", "request-cancellation"] {
        let again = api
            .post(&format!("/v1/jobs/{id}/{call}"), &env.editor, json!({}))
            .await;
        assert_eq!(again.status, 200, "{again:?}");
        assert_eq!(
            again.body, cancelled.body,
            "{call} on a cancelled job changes nothing"
        );
    }
    env.cleanup().await;
}

#[tokio::test]
async fn the_seed_error_cases() {
    let env = Env::new("api-errors").await;
    let api = env.api_in_process(Duration::from_secs(60)).await;
    let jobs = env.jobs();

    // 404 for an unknown id (uid-shaped or not), one error shape everywhere.
    for id in ["6a1f7c9e-0000-4000-8000-000000000000", "42"] {
        assert_error(
            &api.get(&format!("/v1/jobs/{id}"), &env.editor).await,
            404,
            "not_found",
        );
        assert_error(
            &api.post(&format!("/v1/jobs/{id}/cancel"), &env.editor, json!({}))
                .await,
            404,
            "not_found",
        );
    }
    assert_error(&api.get("/v1/nothing", &env.editor).await, 404, "not_found");
    // Malformed and invalid creates.
    let malformed = api
        .call(
            "POST",
            "/v1/jobs",
            Some(&env.editor),
            &[],
            Some("{".to_string()),
        )
        .await;
    assert_error(&malformed, 400, "bad_request");
    let mut empty_nql = create_body();
    empty_nql["input"]["nql"] = json!("");
    assert_error(
        &api.post("/v1/jobs", &env.editor, empty_nql).await,
        422,
        "invalid",
    );
    assert_error(
        &api.get("/v1/jobs?limit=0", &env.editor).await,
        400,
        "bad_request",
    );
    assert_error(
        &api.get("/v1/jobs?state=paused", &env.editor).await,
        400,
        "bad_request",
    );

    // A completed job: both cancel calls return it unchanged, 64-bit ids exact.
    let done = admin_create(&env, &datajob("done", "dp-api", "materialize-view")).await;
    let done_id = done.uid().expect("uid");
    set_status(
        &jobs,
        "done",
        json!({
            "state": "completed", "jobId": done_id, "executor": "dj-done",
            "result": serde_json::from_str::<Value>(MATERIALIZE_RESULT).expect("result"),
            "completedAt": "2026-11-29T05:00:00Z",
        }),
    )
    .await;
    let before = api.get(&format!("/v1/jobs/{done_id}"), &env.editor).await;
    assert!(
        before.text.contains(r#""snapshot_id":739881302291276700"#),
        "{before:?}"
    );
    for call in ["cancel", "request-cancellation"] {
        let answer = api
            .post(
                &format!("/v1/jobs/{done_id}/{call}"),
                &env.editor,
                json!({}),
            )
            .await;
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.body, before.body, "{call} on a completed job");
    }
    assert!(
        !jobs.get("done").await.expect("job").spec.cancel,
        "nothing was written"
    );

    // pending / running: cancel says to request cancellation first.
    let pending = admin_create(&env, &datajob("pending", "dp-api", "materialize-view")).await;
    let pending_id = pending.uid().expect("uid");
    for state in ["pending", "running"] {
        set_status(
            &jobs,
            "pending",
            json!({ "state": state, "jobId": pending_id }),
        )
        .await;
        let answer = api
            .post(
                &format!("/v1/jobs/{pending_id}/cancel"),
                &env.editor,
                json!({}),
            )
            .await;
        assert_error(&answer, 409, "cancellation_not_requested");
    }

    // pending_cancellation with a pod still there: 409 naming the pod; then, while a cancel
    // waits, the operator's `cancelled` ends the wait with the cancelled job.
    let tearing = admin_create(&env, &datajob("tearing", "dp-api", "materialize-view")).await;
    let tearing_id = tearing.uid().expect("uid");
    set_status(
        &jobs,
        "tearing",
        json!({ "state": "pending_cancellation", "jobId": tearing_id }),
    )
    .await;
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "dj-tearing-driver", "labels": {
            executor::LABEL_JOB_UID: tearing_id, executor::LABEL_MANAGED_BY: "datajob-operator",
        } },
        "spec": { "containers": [{ "name": "executor", "image": "registry.example/x:1" }],
                  "nodeSelector": { "no-such-node": "true" } },
    }))
    .expect("pod");
    Api::<Pod>::namespaced(env.admin.clone(), env.ns.name())
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let busy = api
        .post(
            &format!("/v1/jobs/{tearing_id}/cancel?wait=0"),
            &env.editor,
            json!({}),
        )
        .await;
    assert_error(&busy, 409, "teardown_in_progress");
    assert_eq!(busy.body["pods"], json!(["dj-tearing-driver"]), "{busy:?}");
    assert!(
        busy.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("dj-tearing-driver")
    );

    let waiting = {
        let api = api.clone();
        let token = env.editor.clone();
        let path = format!("/v1/jobs/{tearing_id}/cancel?wait=60");
        tokio::spawn(async move { api.post(&path, &token, json!({})).await })
    };
    // The cancel call does not write `cancelled`: only the (here simulated) operator does.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        jobs.get_status("tearing")
            .await
            .expect("job")
            .status
            .and_then(|s| s.state)
            .map(|s| s.as_str()),
        Some("pending_cancellation")
    );
    set_status(
        &jobs,
        "tearing",
        json!({ "state": "cancelled", "completedAt": "2026-11-29T05:00:01Z" }),
    )
    .await;
    let answer = waiting.await.expect("the waiting call");
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body["state"], "cancelled");
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_duplicate_creates_with_one_idempotency_key_create_exactly_one_job() {
    let env = Env::new("api-idem").await;
    let api = env.api_in_process(Duration::from_secs(5)).await;
    let body = create_body().to_string();
    let calls = (0..8).map(|_| {
        let api = api.clone();
        let token = env.editor.clone();
        let body = body.clone();
        tokio::spawn(async move {
            api.call(
                "POST",
                "/v1/jobs",
                Some(&token),
                &[("idempotency-key", "order-42")],
                Some(body),
            )
            .await
        })
    });
    let answers: Vec<Answer> = futures::future::join_all(calls)
        .await
        .into_iter()
        .map(|r| r.expect("call"))
        .collect();
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{answers:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        7,
        "{answers:?}"
    );
    let ids: BTreeSet<&str> = answers
        .iter()
        .map(|a| a.body["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(ids.len(), 1, "every answer is the same job: {answers:?}");
    let replayed = answers
        .iter()
        .filter(|a| a.headers.contains_key("idempotent-replayed"))
        .count();
    assert_eq!(replayed, 7);
    let all = env.jobs().list(&ListParams::default()).await.expect("list");
    assert_eq!(all.items.len(), 1, "exactly one DataJob exists");

    // The same key for another request is refused; another key makes another job.
    let mut other = create_body();
    other["data_plane"] = json!("dp-other");
    let reused = api
        .call(
            "POST",
            "/v1/jobs",
            Some(&env.editor),
            &[("idempotency-key", "order-42")],
            Some(other.to_string()),
        )
        .await;
    assert_error(&reused, 422, "idempotency_key_reused");
    let fresh = api
        .call(
            "POST",
            "/v1/jobs",
            Some(&env.editor),
            &[("idempotency-key", "order-43")],
            Some(other.to_string()),
        )
        .await;
    assert_eq!(fresh.status, 201, "{fresh:?}");
    assert_eq!(
        env.jobs()
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .len(),
        2
    );
    env.cleanup().await;
}

#[tokio::test]
async fn list_filters_by_state_type_data_plane_and_pool_and_pages_with_a_continue_token() {
    let env = Env::new("api-list").await;
    let api = env.api_in_process(Duration::from_secs(5)).await;
    let jobs = env.jobs();
    for (name, plane, kind) in [
        ("a", "dp-1", "materialize-view"),
        ("b", "dp-1", "nql-forecast"),
        ("c", "dp-2", "materialize-view"),
        ("d", "dp-2", "nql-forecast"),
        ("e", "dp-2", "materialize-view"),
    ] {
        admin_create(&env, &datajob(name, plane, kind)).await;
    }
    let mut pooled = datajob("f", "dp-1", "materialize-view");
    pooled.spec.compute_pool = Some("pool-x".to_string());
    admin_create(&env, &pooled).await;
    set_status(&jobs, "c", json!({ "state": "running" })).await;

    let names = |answer: &Answer| -> Vec<String> {
        answer.body["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("{answer:?}"))
            .iter()
            .map(|j| j["name"].as_str().expect("name").to_string())
            .collect()
    };
    let token = &env.viewer;
    assert_eq!(
        names(&api.get("/v1/jobs?data_plane=dp-1", token).await),
        ["a", "b", "f"]
    );
    assert_eq!(
        names(&api.get("/v1/jobs?type=nql-forecast", token).await),
        ["b", "d"]
    );
    assert_eq!(
        names(&api.get("/v1/jobs?state=running", token).await),
        ["c"]
    );
    assert_eq!(
        names(&api.get("/v1/jobs?compute_pool=pool-x", token).await),
        ["f"]
    );
    assert_eq!(
        names(
            &api.get("/v1/jobs?data_plane=dp-2&type=materialize-view", token)
                .await
        ),
        ["c", "e"]
    );

    let mut seen = Vec::new();
    let mut path = "/v1/jobs?limit=2".to_string();
    loop {
        let page = api.get(&path, token).await;
        assert_eq!(page.status, 200, "{page:?}");
        let got = names(&page);
        assert!(got.len() <= 2);
        seen.extend(got);
        match page.body["continue"].as_str() {
            Some(next) => path = format!("/v1/jobs?limit=2&continue={}", urlencode(next)),
            None => break,
        }
    }
    assert_eq!(seen, ["a", "b", "c", "d", "e", "f"]);
    env.cleanup().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
