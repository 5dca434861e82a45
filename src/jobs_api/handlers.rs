//! The endpoints under `/v1`. Each request acts with the caller's own Kubernetes identity
//! ([`super::identity`]); the API keeps no state of its own: the DataJobs are the truth.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use super::identity::{self, bearer_token};
use super::wire::{
    ANNOTATION_CANCEL_REQUESTED_BY, ANNOTATION_CREATED_BY, ANNOTATION_REQUEST_DIGEST,
    CancellationRequest, CreateJob, ErrorBody, ErrorCode, Job, JobList, JobState, ListQuery,
    WaitQuery,
};
use crate::api::DataJob;
use crate::executor;

/// Name of the header that makes a create safe to retry.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Header set on the answer to a retried create that returned the existing job.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Jobs per page when the caller gives no `limit`.
const DEFAULT_PAGE: u32 = 100;
/// Seconds `cancel` waits for the operator when the caller gives no `wait`.
const DEFAULT_CANCEL_WAIT: u32 = 10;
/// Seconds `request-cancellation` waits for the operator to record `pending_cancellation`.
const DEFAULT_REQUEST_WAIT: u32 = 5;
/// Field manager of the API's writes (as the caller).
const FIELD_MANAGER: &str = "datajob-operator-api";

/// The caller's client and the jobs of the served namespace, seen as the caller.
struct Caller {
    client: Client,
    jobs: Api<DataJob>,
}

fn caller(state: &AppState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let token = bearer_token(headers)?;
    let client = state.upstream.client_for(token)?;
    Ok(Caller {
        jobs: Api::namespaced(client.clone(), &state.namespace),
        client,
    })
}

/// The job id of the path; one that does not even decode names no job (404).
fn job_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(id)| id).map_err(|e| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            format!("no such job: {e}"),
        )
    })
}

fn query<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(format!("invalid query parameters: {}", e.body_text())))
}

/// List jobs.
///
/// Jobs of the served namespace, filtered by state, type, data plane and compute pool (all
/// filters are Kubernetes field selectors, so paging stays exact), a page at a time.
#[utoipa::path(
    get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses(
        (status = 200, description = "A page of jobs", body = JobList),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 401, description = "No valid Bearer token", body = ErrorBody),
        (status = 403, description = "The caller may not list DataJobs", body = ErrorBody),
        (status = 410, description = "The continue token expired", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<JobList>, ApiError> {
    let caller = caller(&state, &headers)?;
    let q = query(q)?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request("limit must be between 1 and 500"));
    }
    let mut fields = Vec::new();
    if let Some(s) = q.state {
        fields.push(format!("status.state={}", s.as_str()));
    }
    if let Some(t) = q.job_type {
        fields.push(format!(
            "spec.type={}",
            crate::api::JobType::from(t).as_str()
        ));
    }
    for (param, field, value, max) in [
        ("data_plane", "spec.dataPlane", &q.data_plane, 63),
        ("compute_pool", "spec.computePool", &q.compute_pool, 253),
    ] {
        if let Some(value) = value {
            if !is_name(value, max, param == "compute_pool") {
                return Err(ApiError::bad_request(format!(
                    "{param} must be a Kubernetes name of at most {max} characters \
                     (lowercase letters, digits and '-'{})",
                    if param == "compute_pool" { ", '.'" } else { "" }
                )));
            }
            fields.push(format!("{field}={value}"));
        }
    }
    let mut params = ListParams::default().limit(limit);
    if !fields.is_empty() {
        params = params.fields(&fields.join(","));
    }
    if let Some(token) = q.continue_token.as_deref().filter(|t| !t.is_empty()) {
        params = params.continue_token(token);
    }
    let page = caller.jobs.list(&params).await.map_err(|e| {
        ApiError::from_kube(
            &format!("list DataJobs in namespace {}", state.namespace),
            e,
        )
    })?;
    Ok(Json(JobList {
        jobs: page.items.iter().map(Job::from_datajob).collect(),
        continue_token: page.metadata.continue_.filter(|c| !c.is_empty()),
    }))
}

/// A DNS-1123 label (or, with `dots`, a subdomain-like name) of at most `max` characters: the
/// patterns the OpenAPI document gives these parameters.
fn is_name(value: &str, max: usize, dots: bool) -> bool {
    let edge = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let inner = |c: char| edge(c) || c == '-' || (dots && c == '.');
    !value.is_empty()
        && value.len() <= max
        && value.starts_with(edge)
        && value.ends_with(edge)
        && value.chars().all(inner)
}

/// Get a job.
#[utoipa::path(
    get, path = "/v1/jobs/{job_id}", tag = "jobs",
    params(("job_id" = String, Path, description = "Unique identifier for a job.")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "No valid Bearer token", body = ErrorBody),
        (status = 403, description = "The caller may not read DataJobs", body = ErrorBody),
        (status = 404, description = "No job with this id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<Job>, ApiError> {
    let caller = caller(&state, &headers)?;
    let id = job_id(path)?;
    let job = find(&caller.jobs, &state.namespace, &id).await?;
    Ok(Json(Job::from_datajob(&job)))
}

/// The DataJob whose uid (= `status.jobId`) is `id`.
///
/// First a list with the field selector `status.jobId=ID` (filtered by the API server, one
/// object on the wire); a job the operator has not reconciled yet has no `status.jobId`, so
/// when that finds nothing the namespace is listed page by page and matched on
/// `metadata.uid`. An unknown id therefore costs a full list of the namespace.
async fn find(jobs: &Api<DataJob>, namespace: &str, id: &str) -> Result<DataJob, ApiError> {
    if !looks_like_uid(id) {
        return Err(ApiError::job_not_found(id));
    }
    let action = format!("read DataJobs in namespace {namespace}");
    match jobs
        .list(&ListParams::default().fields(&format!("status.jobId={id}")))
        .await
    {
        Ok(list) => {
            if let Some(job) = list
                .items
                .into_iter()
                .find(|j| j.uid().as_deref() == Some(id))
            {
                return Ok(job);
            }
        }
        // A CRD without the selectable field status.jobId: the scan below still works.
        Err(kube::Error::Api(s)) if s.code == 400 => {}
        Err(e) => return Err(ApiError::from_kube(&action, e)),
    }
    let mut params = ListParams::default().limit(500);
    loop {
        let page = jobs
            .list(&params)
            .await
            .map_err(|e| ApiError::from_kube(&action, e))?;
        if let Some(job) = page
            .items
            .into_iter()
            .find(|j| j.uid().as_deref() == Some(id))
        {
            return Ok(job);
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => return Err(ApiError::job_not_found(id)),
        }
    }
}

/// A Kubernetes uid: 36 characters of hex digits and dashes.
fn looks_like_uid(id: &str) -> bool {
    id.len() == 36 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// Create a job.
///
/// With an `Idempotency-Key`, the DataJob's name is derived from the key and the caller's
/// user, so a retried or concurrent duplicate request finds the job the first one created
/// (200, header `Idempotent-Replayed: true`) instead of creating a second one.
#[utoipa::path(
    post, path = "/v1/jobs", tag = "jobs",
    params(("Idempotency-Key" = Option<String>, Header,
            description = "Makes the create safe to retry: the same key (from the same user) \
                           returns the same job. 1 to 255 printable ASCII characters.",
            min_length = 1, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$")),
    request_body = CreateJob,
    responses(
        (status = 201, description = "Created", body = Job),
        (status = 200, description = "A retry with the same Idempotency-Key: the job the first request created", body = Job),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid Bearer token", body = ErrorBody),
        (status = 403, description = "The caller may not create DataJobs", body = ErrorBody),
        (status = 422, description = "Invalid job, or the Idempotency-Key was used for another request", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let caller = caller(&state, &headers)?;
    let request = parse_create(&body)?;
    // What the document promises beyond the CRD's own schema (the API server checks the rest).
    if let Some(pool) = &request.compute_pool
        && !is_name(pool, 253, true)
    {
        return Err(ApiError::bad_request(
            "compute_pool must be a Kubernetes name (lowercase letters, digits, '-' and '.')",
        ));
    }
    if request.executor.as_ref().and_then(|e| e.image.as_deref()) == Some("") {
        return Err(ApiError::bad_request("executor.image must not be empty"));
    }
    let key = idempotency_key(&headers)?;
    let user = identity::username(&caller.client).await?;
    let digest = digest(&[serde_json::to_string(&request)
        .expect("serializes")
        .as_bytes()]);

    let mut job = DataJob::new("", request.to_spec());
    job.annotations_mut()
        .insert(ANNOTATION_CREATED_BY.to_string(), user.clone());
    match &key {
        Some(key) => {
            job.metadata.name = Some(idempotent_name(&user, key));
            job.annotations_mut()
                .insert(ANNOTATION_REQUEST_DIGEST.to_string(), digest.clone());
        }
        None => job.metadata.generate_name = Some("job-".to_string()),
    }
    let action = format!("create DataJobs in namespace {}", state.namespace);
    match caller.jobs.create(&PostParams::default(), &job).await {
        Ok(created) => Ok((StatusCode::CREATED, Json(Job::from_datajob(&created))).into_response()),
        Err(kube::Error::Api(s)) if s.reason == "AlreadyExists" && key.is_some() => {
            let name = job.metadata.name.clone().unwrap_or_default();
            let existing = caller
                .jobs
                .get(&name)
                .await
                .map_err(|e| ApiError::from_kube(&action, e))?;
            let same_user = existing.annotations().get(ANNOTATION_CREATED_BY) == Some(&user);
            let same_request =
                existing.annotations().get(ANNOTATION_REQUEST_DIGEST) == Some(&digest);
            if !(same_user && same_request) {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    ErrorCode::IdempotencyKeyReused,
                    "this Idempotency-Key was already used for a different request; \
                     use a new key for a new job",
                ));
            }
            let mut response = Json(Job::from_datajob(&existing)).into_response();
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
        Err(e) => Err(ApiError::from_kube(&action, e)),
    }
}

/// The create body. serde would also read a struct from a JSON array (`"executor": [..]`);
/// the document says objects, so anything else is refused first.
fn parse_create(body: &[u8]) -> Result<CreateJob, ApiError> {
    let invalid = |e: String| ApiError::bad_request(format!("invalid job: {e}"));
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| invalid(e.to_string()))?;
    let is_object_or_absent =
        |v: Option<&serde_json::Value>| v.is_none_or(|v| v.is_object() || v.is_null());
    if !value.is_object()
        || !value.get("input").is_some_and(serde_json::Value::is_object)
        || !is_object_or_absent(value.get("executor"))
    {
        return Err(invalid(
            "the job, its input and its executor must be JSON objects".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_KEY) else {
        return Ok(None);
    };
    let key = value.to_str().ok().filter(|k| {
        !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic() || c == ' ')
    });
    key.map(|k| Some(k.to_string())).ok_or_else(|| {
        ApiError::bad_request("Idempotency-Key must be 1 to 255 printable ASCII characters")
    })
}

/// The DataJob name for a create with `key` by `user`: the same pair always gives the same
/// name, so the API server's uniqueness of names makes the create happen at most once.
pub fn idempotent_name(user: &str, key: &str) -> String {
    let d = digest(&[user.as_bytes(), b"\0", key.as_bytes()]);
    format!("job-{}", &d[..24])
}

/// Lowercase hex SHA-256 of the concatenated parts.
fn digest(parts: &[&[u8]]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Request cancellation of a job.
///
/// Sets `spec.cancel` (and `spec.cancelReason`) on the DataJob with the caller's identity; the
/// operator then moves the job to `pending_cancellation` and tears its executor pods down. On a
/// terminal job nothing changes and the job is returned as it is. Requires write access to jobs.
#[utoipa::path(
    post, path = "/v1/jobs/{job_id}/request-cancellation", tag = "jobs",
    params(("job_id" = String, Path, description = "Unique identifier for a job."), WaitQuery),
    request_body(content = Option<CancellationRequest>, description = "Optional reason"),
    responses(
        (status = 200, description = "The job, after the request (pending_cancellation once the operator saw it within `wait`)", body = Job),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid Bearer token", body = ErrorBody),
        (status = 403, description = "The caller has no write access to jobs", body = ErrorBody),
        (status = 404, description = "No job with this id", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn request_cancellation(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<WaitQuery>, QueryRejection>,
    body: Bytes,
) -> Result<Json<Job>, ApiError> {
    let caller = caller(&state, &headers)?;
    let id = job_id(path)?;
    let wait = state.wait(query(q)?.wait, DEFAULT_REQUEST_WAIT)?;
    // The body is optional: empty, JSON null, or {"reason": ...}.
    let request: CancellationRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancellationRequest::default()
    } else {
        serde_json::from_slice::<Option<CancellationRequest>>(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid cancellation request: {e}")))?
            .unwrap_or_default()
    };
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > 1024)
    {
        return Err(ApiError::bad_request(
            "reason must be at most 1024 characters",
        ));
    }
    let job = find(&caller.jobs, &state.namespace, &id).await?;
    require_write(&caller, &state.namespace, &job, "request cancellation of").await?;
    if JobState::of(&job).is_terminal() {
        return Ok(Json(Job::from_datajob(&job)));
    }
    let user = identity::username(&caller.client).await?;
    let mut metadata = json!({ "uid": id });
    if !job
        .annotations()
        .contains_key(ANNOTATION_CANCEL_REQUESTED_BY)
    {
        metadata["annotations"] = json!({ ANNOTATION_CANCEL_REQUESTED_BY: user });
    }
    let mut spec = json!({ "cancel": true });
    if let Some(reason) = &request.reason {
        spec["cancelReason"] = json!(reason);
    }
    let patched = caller
        .jobs
        .patch(
            &job.name_any(),
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &Patch::Merge(json!({ "metadata": metadata, "spec": spec })),
        )
        .await
        .map_err(|e| ApiError::from_kube(&format!("patch DataJob {}", job.name_any()), e))?;
    let seen = wait_for(&caller.jobs, &patched, wait, |s| {
        !matches!(s, JobState::Pending | JobState::Running)
    })
    .await?;
    Ok(Json(Job::from_datajob(&seen)))
}

/// Cancel a job.
///
/// Finalizes cancellation of a job, moving it from pending_cancellation to cancelled. It is a
/// no-op for a job already in a terminal state (completed, cancelled, failed); any other
/// non-terminal state (pending or running) is rejected: use request-cancellation first. Only
/// the operator records `cancelled`, once every executor pod is gone; this call waits up to
/// `wait` seconds for that and otherwise answers 409 naming the pods still there. Requires
/// write access to jobs.
#[utoipa::path(
    post, path = "/v1/jobs/{job_id}/cancel", tag = "jobs",
    params(("job_id" = String, Path, description = "Unique identifier for a job."), WaitQuery),
    responses(
        (status = 200, description = "The job: cancelled, or unchanged when it was already terminal", body = Job),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 401, description = "No valid Bearer token", body = ErrorBody),
        (status = 403, description = "The caller has no write access to jobs", body = ErrorBody),
        (status = 404, description = "No job with this id", body = ErrorBody),
        (status = 409, description = "Pending or running (request cancellation first), or teardown still in progress", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    q: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<Job>, ApiError> {
    let caller = caller(&state, &headers)?;
    let id = job_id(path)?;
    let wait = state.wait(query(q)?.wait, DEFAULT_CANCEL_WAIT)?;
    let job = find(&caller.jobs, &state.namespace, &id).await?;
    require_write(&caller, &state.namespace, &job, "cancel").await?;
    let current = JobState::of(&job);
    if current.is_terminal() {
        return Ok(Json(Job::from_datajob(&job)));
    }
    // A request the operator has not recorded yet counts as made: the job is on its way to
    // pending_cancellation.
    if !job.spec.cancel && current != JobState::PendingCancellation {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::CancellationNotRequested,
            format!(
                "job {id} is {}: call POST /v1/jobs/{id}/request-cancellation first, then cancel",
                current.as_str()
            ),
        ));
    }
    let seen = wait_for(&caller.jobs, &job, wait, JobState::is_terminal).await?;
    if JobState::of(&seen).is_terminal() {
        return Ok(Json(Job::from_datajob(&seen)));
    }
    let pods = remaining_pods(&caller.client, &state.namespace, &seen).await;
    let listed = if pods.is_empty() {
        "its executor pods".to_string()
    } else {
        pods.join(", ")
    };
    let mut error = ApiError::new(
        StatusCode::CONFLICT,
        ErrorCode::TeardownInProgress,
        format!(
            "teardown in progress: job {id} is {} and waits for {listed} to be gone; \
             call cancel again (with ?wait=SECONDS to wait longer)",
            JobState::of(&seen).as_str()
        ),
    );
    error.pods = Some(pods);
    Err(error)
}

/// 403 unless the caller may patch the job: both cancel calls require write access, also when
/// they change nothing.
async fn require_write(
    caller: &Caller,
    namespace: &str,
    job: &DataJob,
    what: &str,
) -> Result<(), ApiError> {
    let name = job.name_any();
    if identity::may(&caller.client, namespace, "patch", &name).await? {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        ErrorCode::Forbidden,
        format!(
            "your Kubernetes identity may not {what} this job: that requires write access to jobs \
             (patch on datajobs.datajob.dev {name} in namespace {namespace}, e.g. the datajob-edit role)"
        ),
    ))
}

/// Watches `job` from the version read until its state meets `done`, it is deleted, or `wait`
/// passes; returns the last version seen. A watch the caller may not open ends the wait early
/// (the answer is then made from what was read).
async fn wait_for(
    jobs: &Api<DataJob>,
    job: &DataJob,
    wait: Duration,
    done: impl Fn(JobState) -> bool,
) -> Result<DataJob, ApiError> {
    let mut last = job.clone();
    if done(JobState::of(job)) || wait.is_zero() {
        return Ok(last);
    }
    let name = job.name_any();
    let params = WatchParams::default()
        .fields(&format!("metadata.name={name}"))
        .timeout(wait.as_secs().clamp(1, 290) as u32);
    let version = job.resource_version().unwrap_or_default();
    let Ok(stream) = jobs.watch(&params, &version).await else {
        return Ok(last);
    };
    let mut stream = stream.boxed();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(Some(event))) = tokio::time::timeout_at(deadline, stream.try_next()).await {
        match event {
            WatchEvent::Added(seen) | WatchEvent::Modified(seen) => {
                if seen.uid() != job.uid() {
                    break;
                }
                last = seen;
                if done(JobState::of(&last)) {
                    break;
                }
            }
            WatchEvent::Deleted(_) => {
                return Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    format!("job {} was deleted", job.uid().unwrap_or_default()),
                ));
            }
            WatchEvent::Bookmark(_) => {}
            WatchEvent::Error(_) => break,
        }
    }
    Ok(last)
}

/// Names of the job's executor pods that still exist, as the caller sees them; when the
/// caller may not list pods, the names the operator gives them (from the job's executor),
/// as many as the operator last counted.
async fn remaining_pods(client: &Client, namespace: &str, job: &DataJob) -> Vec<String> {
    let uid = job.uid().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    match pods
        .list(&ListParams::default().labels(&executor::job_pods_selector(&uid)))
        .await
    {
        Ok(list) => {
            let mut names: Vec<String> = list.items.iter().map(|p| p.name_any()).collect();
            names.sort();
            names
        }
        Err(_) => {
            let status = job.status.clone().unwrap_or_default();
            let (Some(executor_name), Some(active)) = (status.executor, status.active_executors)
            else {
                return Vec::new();
            };
            let cluster_type = status.cluster_type.unwrap_or_default();
            let workers = job
                .spec
                .executor
                .as_ref()
                .and_then(|e| e.workers)
                .unwrap_or(crate::api::datajob::DEFAULT_WORKERS);
            executor::pod_slots(&executor_name, cluster_type, workers)
                .into_iter()
                .take(usize::try_from(active).unwrap_or(0))
                .map(|slot| slot.name)
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_key_and_user_give_the_same_name_and_others_do_not() {
        let a = idempotent_name("system:serviceaccount:ns:ci", "order-42");
        assert_eq!(
            a,
            idempotent_name("system:serviceaccount:ns:ci", "order-42")
        );
        assert_ne!(
            a,
            idempotent_name("system:serviceaccount:ns:other", "order-42")
        );
        assert_ne!(
            a,
            idempotent_name("system:serviceaccount:ns:ci", "order-43")
        );
        assert!(a.len() <= 63 && a.starts_with("job-"), "{a}");
    }

    #[test]
    fn only_uid_shaped_ids_are_looked_up() {
        assert!(looks_like_uid("0b5c8a8e-6f7d-4f9e-9a55-3c1d2a4b6e70"));
        assert!(is_name("dp-1", 63, false) && is_name("pool.a", 253, true));
        for bad in ["", "-dp", "dp-", "Dp", "pool.a", &"a".repeat(64)] {
            assert!(!is_name(bad, 63, false), "{bad}");
        }
        for id in ["", "42", "../x", "0b5c8a8e-6f7d-4f9e-9a55-3c1d2a4b6e7z"] {
            assert!(!looks_like_uid(id), "{id}");
        }
    }
}
