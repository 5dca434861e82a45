//! The REST API's bodies, in the seed's snake_case shape, and their mapping from and to
//! DataJobs. These types are the single source of the OpenAPI document's schemas.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::api::{self, DataJob, DataJobSpec};

/// Annotation holding the Kubernetes user that created the job through this API.
pub const ANNOTATION_CREATED_BY: &str = "datajob.dev/created-by";
/// Annotation holding the Kubernetes user that first requested cancellation through this API.
pub const ANNOTATION_CANCEL_REQUESTED_BY: &str = "datajob.dev/cancel-requested-by";
/// Annotation holding a digest of the create request made with an `Idempotency-Key`, so that
/// reusing the key for a different request is refused.
pub const ANNOTATION_REQUEST_DIGEST: &str = "datajob.dev/idempotency-request-digest";

/// A job, as the seed's Jobs API returns it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct Job {
    /// Unique identifier for the job: the DataJob's uid (`status.jobId`).
    #[schema(example = "0b5c8a8e-6f7d-4f9e-9a55-3c1d2a4b6e70")]
    pub id: String,
    /// Name of the DataJob that holds the job (`kubectl get dj NAME`).
    pub name: String,
    /// Lifecycle state. A job the operator has not seen yet is `pending`.
    pub state: JobState,
    /// The type associated with the job.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// The job's query and dataset.
    pub input: JobInput,
    /// The internal job executor tied to the job; null until the operator assigned one.
    pub executor: Option<String>,
    /// Causes of job failure.
    pub failures: Vec<JobFailure>,
    /// The output of the job, once completed.
    pub result: Option<JobResult>,
    /// The data plane the job runs on.
    pub data_plane: String,
    /// The compute pool associated with the job, if any.
    pub compute_pool: Option<String>,
    /// The type of the execution cluster the job runs on (null until the operator resolved it
    /// when the request did not set it).
    pub cluster_type: Option<ClusterType>,
    /// The cancellation request, once one was made.
    pub cancellation: Option<Cancellation>,
    /// Who created the job and who requested its cancellation, when done through this API.
    pub request_source: Option<RequestSource>,
    /// When the job was created (RFC 3339).
    #[schema(format = DateTime)]
    pub created_at: String,
    /// When the job was last updated (RFC 3339).
    #[schema(format = DateTime)]
    pub updated_at: String,
    /// When the job finished (RFC 3339); set on every terminal state.
    #[schema(format = DateTime)]
    pub completed_at: Option<String>,
}

/// Lifecycle state of a job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Pending,
    Running,
    PendingCancellation,
    Cancelled,
    Completed,
    Failed,
}

impl JobState {
    /// The state of a DataJob; `pending` before the operator recorded any.
    pub fn of(job: &DataJob) -> JobState {
        match job.status.as_ref().and_then(|s| s.state) {
            None | Some(api::JobState::Pending) => JobState::Pending,
            Some(api::JobState::Running) => JobState::Running,
            Some(api::JobState::PendingCancellation) => JobState::PendingCancellation,
            Some(api::JobState::Cancelled) => JobState::Cancelled,
            Some(api::JobState::Completed) => JobState::Completed,
            Some(api::JobState::Failed) => JobState::Failed,
        }
    }

    /// Completed, cancelled or failed: nothing changes the job any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Cancelled | JobState::Completed | JobState::Failed
        )
    }

    /// The value of the DataJob's `status.state` (for field selectors).
    pub fn as_str(self) -> &'static str {
        self.to_api().as_str()
    }

    fn to_api(self) -> api::JobState {
        match self {
            JobState::Pending => api::JobState::Pending,
            JobState::Running => api::JobState::Running,
            JobState::PendingCancellation => api::JobState::PendingCancellation,
            JobState::Cancelled => api::JobState::Cancelled,
            JobState::Completed => api::JobState::Completed,
            JobState::Failed => api::JobState::Failed,
        }
    }
}

/// The type associated with the job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobType {
    MaterializeView,
    NqlForecast,
}

impl From<api::JobType> for JobType {
    fn from(t: api::JobType) -> Self {
        match t {
            api::JobType::MaterializeView => JobType::MaterializeView,
            api::JobType::NqlForecast => JobType::NqlForecast,
        }
    }
}

impl From<JobType> for api::JobType {
    fn from(t: JobType) -> Self {
        match t {
            JobType::MaterializeView => api::JobType::MaterializeView,
            JobType::NqlForecast => api::JobType::NqlForecast,
        }
    }
}

/// The type of the execution cluster: `dedicated` runs the job on a dedicated cluster,
/// `shared` on a shared one.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterType {
    Dedicated,
    Shared,
}

impl From<api::ClusterType> for ClusterType {
    fn from(t: api::ClusterType) -> Self {
        match t {
            api::ClusterType::Dedicated => ClusterType::Dedicated,
            api::ClusterType::Shared => ClusterType::Shared,
        }
    }
}

impl From<ClusterType> for api::ClusterType {
    fn from(t: ClusterType) -> Self {
        match t {
            ClusterType::Dedicated => api::ClusterType::Dedicated,
            ClusterType::Shared => api::ClusterType::Shared,
        }
    }
}

/// The job's query and dataset.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobInput {
    /// The NQL statement (non-empty, at most 256 KiB).
    #[schema(min_length = 1, max_length = 262144)]
    pub nql: String,
    /// The dataset the job reads or materializes; required for `materialize-view`.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub dataset_id: Option<i64>,
    /// Whether the executor collects statistics.
    #[serde(default)]
    pub stats_enabled: bool,
    /// The SQL the NQL compiled to, when known.
    #[serde(default)]
    #[schema(max_length = 262144)]
    pub compiled_sql: Option<String>,
}

/// One cause of job failure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct JobFailure {
    /// Machine-readable cause, for example `DriverFailed` or `DeadlineExceeded`.
    pub reason: String,
    /// What happened.
    pub message: String,
    /// When it was recorded (RFC 3339).
    #[schema(format = DateTime)]
    pub time: String,
}

/// The output of a job: a materialized view's snapshot, or a forecast.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct JobResult {
    /// materialize-view: the dataset that was materialized.
    pub dataset_id: Option<i64>,
    /// materialize-view: the snapshot produced (64-bit, exact).
    #[schema(example = 739881302291276700_i64)]
    pub snapshot_id: Option<i64>,
    /// materialize-view: the recalculation that produced the snapshot.
    pub recalculation_id: Option<String>,
    /// nql-forecast: the forecast, as the driver wrote it.
    #[schema(value_type = Option<Object>)]
    pub forecast: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The recorded cancellation request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct Cancellation {
    /// When the operator saw the request (RFC 3339); null until it did.
    #[schema(format = DateTime)]
    pub requested_at: Option<String>,
    /// Why the job is cancelled.
    pub reason: Option<String>,
}

/// Who acted on the job through this API, from the callers' Kubernetes identities.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct RequestSource {
    /// Always `kubernetes_user`: the identity is the Kubernetes user of the Bearer token.
    #[serde(rename = "type")]
    pub source_type: String,
    /// The Kubernetes user that created the job (for example
    /// `system:serviceaccount:team-a:ci`); null when it was not created through this API.
    pub created_by: Option<String>,
    /// The Kubernetes user that first requested cancellation through this API.
    pub cancellation_requested_by: Option<String>,
}

/// A page of jobs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct JobList {
    /// The jobs of this page, oldest name first.
    pub jobs: Vec<Job>,
    /// Opaque token for the next page (`?continue=`); null on the last page.
    #[serde(rename = "continue")]
    pub continue_token: Option<String>,
}

/// Filters and paging of `GET /v1/jobs`.
#[derive(Deserialize, Debug, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only jobs in this state (as recorded by the operator).
    pub state: Option<JobState>,
    /// Only jobs of this type.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub job_type: Option<JobType>,
    /// Only jobs on this data plane.
    #[param(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length = 63)]
    pub data_plane: Option<String>,
    /// Only jobs of this compute pool.
    #[param(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$", max_length = 253)]
    pub compute_pool: Option<String>,
    /// Most jobs per page (1 to 500, default 100).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
    /// The `continue` token of the previous page.
    #[serde(rename = "continue")]
    #[param(rename = "continue")]
    pub continue_token: Option<String>,
}

/// How long a call may wait for the operator.
#[derive(Deserialize, Debug, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait for the operator (0 to 300; capped by the server's `--max-wait`).
    #[param(minimum = 0, maximum = 300)]
    pub wait: Option<u32>,
}

/// The body of `POST /v1/jobs`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateJob {
    /// The type of the job.
    #[serde(rename = "type")]
    pub job_type: JobType,
    /// The job's query and dataset.
    pub input: JobInput,
    /// The data plane to run on (a DNS-1123 label).
    #[schema(
        pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        min_length = 1,
        max_length = 63
    )]
    pub data_plane: String,
    /// The compute pool to run in.
    #[serde(default)]
    #[schema(
        pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        min_length = 1,
        max_length = 253
    )]
    pub compute_pool: Option<String>,
    /// Dedicated or shared cluster; default: the pool's type, else shared.
    #[serde(default)]
    pub cluster_type: Option<ClusterType>,
    /// Executor overrides.
    #[serde(default)]
    pub executor: Option<CreateExecutor>,
    /// Fail the job after this many seconds of running.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub active_deadline_seconds: Option<i64>,
    /// Delete the finished job this many seconds after it finished.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 2147483647)]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// Executor overrides of a new job.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateExecutor {
    /// Executor image.
    #[serde(default)]
    #[schema(min_length = 1)]
    pub image: Option<String>,
    /// Worker pods beside the driver (dedicated clusters only).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 64)]
    pub workers: Option<i32>,
    /// Seconds between SIGTERM and SIGKILL on teardown.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 3600)]
    pub termination_grace_period_seconds: Option<i64>,
}

/// The optional body of `POST /v1/jobs/{job_id}/request-cancellation`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancellationRequest {
    /// Why the job is cancelled (at most 1024 characters).
    #[serde(default)]
    #[schema(max_length = 1024)]
    pub reason: Option<String>,
}

/// The one shape of every error body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, ToSchema)]
pub struct ErrorBody {
    /// The HTTP status code, repeated.
    pub status: u16,
    /// Machine-readable error code.
    pub code: ErrorCode,
    /// What went wrong and what to do about it.
    pub message: String,
    /// `teardown_in_progress`: the executor pods still there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<Vec<String>>,
}

/// Machine-readable error codes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// No or an invalid Bearer token.
    Unauthorized,
    /// The caller's Kubernetes identity may not do this.
    Forbidden,
    /// No job with this id (or no such route).
    NotFound,
    /// The request is malformed.
    BadRequest,
    /// The API server rejected the job as invalid.
    Invalid,
    /// The job is pending or running: request cancellation first.
    CancellationNotRequested,
    /// Executor pods are still being torn down.
    TeardownInProgress,
    /// The Idempotency-Key was used for a different request.
    IdempotencyKeyReused,
    /// The object changed or exists already.
    Conflict,
    /// A continue token expired.
    Gone,
    /// The Kubernetes API server failed or could not be reached.
    Upstream,
}

impl Job {
    /// The job a DataJob holds.
    pub fn from_datajob(job: &DataJob) -> Job {
        let spec = &job.spec;
        let status = job.status.clone().unwrap_or_default();
        let annotations = job.annotations();
        let created = status
            .created_at
            .clone()
            .or_else(|| job.metadata.creation_timestamp.clone());
        let created_at = created.as_ref().map(time).unwrap_or_default();
        let request_source = request_source(annotations);
        Job {
            id: status
                .job_id
                .clone()
                .or_else(|| job.uid())
                .unwrap_or_default(),
            name: job.name_any(),
            state: JobState::of(job),
            job_type: spec.job_type.into(),
            input: JobInput {
                nql: spec.input.nql.clone(),
                dataset_id: spec.input.dataset_id,
                stats_enabled: spec.input.stats_enabled,
                compiled_sql: spec.input.compiled_sql.clone(),
            },
            executor: status.executor.clone(),
            failures: status
                .failures
                .iter()
                .map(|f| JobFailure {
                    reason: f.reason.clone(),
                    message: f.message.clone(),
                    time: time(&f.time),
                })
                .collect(),
            result: status.result.as_ref().map(|r| JobResult {
                dataset_id: r.dataset_id,
                snapshot_id: r.snapshot_id,
                recalculation_id: r.recalculation_id.clone(),
                forecast: r.forecast.clone(),
            }),
            data_plane: spec.data_plane.clone(),
            compute_pool: spec.compute_pool.clone(),
            cluster_type: status.cluster_type.or(spec.cluster_type).map(Into::into),
            cancellation: cancellation(spec, &status),
            request_source,
            updated_at: status
                .updated_at
                .as_ref()
                .map(time)
                .unwrap_or_else(|| created_at.clone()),
            created_at,
            completed_at: status.completed_at.as_ref().map(time),
        }
    }
}

fn time(t: &Time) -> String {
    t.0.to_string()
}

fn cancellation(spec: &DataJobSpec, status: &api::DataJobStatus) -> Option<Cancellation> {
    match &status.cancellation {
        Some(seen) => Some(Cancellation {
            requested_at: Some(time(&seen.requested_at)),
            reason: seen.reason.clone().or_else(|| spec.cancel_reason.clone()),
        }),
        None if spec.cancel => Some(Cancellation {
            requested_at: None,
            reason: spec.cancel_reason.clone(),
        }),
        None => None,
    }
}

fn request_source(annotations: &BTreeMap<String, String>) -> Option<RequestSource> {
    let created_by = annotations.get(ANNOTATION_CREATED_BY).cloned();
    let cancellation_requested_by = annotations.get(ANNOTATION_CANCEL_REQUESTED_BY).cloned();
    (created_by.is_some() || cancellation_requested_by.is_some()).then(|| RequestSource {
        source_type: "kubernetes_user".to_string(),
        created_by,
        cancellation_requested_by,
    })
}

impl CreateJob {
    /// The DataJob spec this request asks for.
    pub fn to_spec(&self) -> DataJobSpec {
        DataJobSpec {
            job_type: self.job_type.into(),
            input: api::JobInput {
                nql: self.input.nql.clone(),
                compiled_sql: self.input.compiled_sql.clone(),
                dataset_id: self.input.dataset_id,
                stats_enabled: self.input.stats_enabled,
            },
            data_plane: self.data_plane.clone(),
            compute_pool: self.compute_pool.clone(),
            cluster_type: self.cluster_type.map(Into::into),
            executor: self.executor.as_ref().map(|e| api::ExecutorSpec {
                image: e.image.clone(),
                workers: e.workers,
                termination_grace_period_seconds: e.termination_grace_period_seconds,
                ..Default::default()
            }),
            cancel: false,
            cancel_reason: None,
            active_deadline_seconds: self.active_deadline_seconds,
            ttl_seconds_after_finished: self.ttl_seconds_after_finished,
            // The REST API has no field for it: the pool's default, else 600 s.
            start_timeout_seconds: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn datajob(status: serde_json::Value) -> DataJob {
        serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1",
            "kind": "DataJob",
            "metadata": {
                "name": "mv", "namespace": "ns", "uid": "0b5c8a8e-6f7d-4f9e-9a55-3c1d2a4b6e70",
                "creationTimestamp": "2026-11-29T05:00:00Z",
                "annotations": { ANNOTATION_CREATED_BY: "system:serviceaccount:ns:ci" }
            },
            "spec": {
                "type": "materialize-view",
                "input": { "nql": "SELECT 1", "datasetId": 6404, "statsEnabled": true },
                "dataPlane": "dp-1",
            },
            "status": status,
        }))
        .expect("valid DataJob")
    }

    #[test]
    fn a_completed_job_has_the_seed_shape_with_the_64_bit_snapshot_id_exact() {
        let job = datajob(json!({
            "state": "completed",
            "jobId": "0b5c8a8e-6f7d-4f9e-9a55-3c1d2a4b6e70",
            "executor": "mv-0b5c8a8e",
            "clusterType": "shared",
            "result": { "datasetId": 6404, "snapshotId": 739881302291276700_i64,
                        "recalculationId": "abf9a2ec-426b-4751-bd16-fcb435061925" },
            "createdAt": "2026-11-29T05:00:01Z",
            "updatedAt": "2026-11-29T05:00:09Z",
            "completedAt": "2026-11-29T05:00:09Z",
        }));
        let body = serde_json::to_string(&Job::from_datajob(&job)).expect("serializes");
        assert!(
            body.contains(r#""snapshot_id":739881302291276700"#),
            "{body}"
        );
        let value: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(value["id"], "0b5c8a8e-6f7d-4f9e-9a55-3c1d2a4b6e70");
        assert_eq!(value["state"], "completed");
        assert_eq!(value["type"], "materialize-view");
        assert_eq!(
            value["input"],
            json!({"nql": "SELECT 1", "dataset_id": 6404, "stats_enabled": true, "compiled_sql": null})
        );
        assert_eq!(value["cluster_type"], "shared");
        assert_eq!(value["completed_at"], "2026-11-29T05:00:09Z");
        assert_eq!(
            value["request_source"],
            json!({"type": "kubernetes_user", "created_by": "system:serviceaccount:ns:ci",
                   "cancellation_requested_by": null})
        );
    }

    #[test]
    fn a_job_the_operator_has_not_seen_is_pending_with_its_uid_as_id() {
        let job = Job::from_datajob(&datajob(serde_json::Value::Null));
        assert_eq!(job.state, JobState::Pending);
        assert_eq!(job.id, "0b5c8a8e-6f7d-4f9e-9a55-3c1d2a4b6e70");
        assert_eq!(job.created_at, "2026-11-29T05:00:00Z");
        assert_eq!(job.updated_at, job.created_at);
    }

    #[test]
    fn unknown_fields_in_a_create_request_are_refused() {
        let body =
            json!({"type": "nql-forecast", "input": {"nql": "x"}, "data_plane": "dp", "color": 1});
        assert!(serde_json::from_value::<CreateJob>(body).is_err());
    }
}
