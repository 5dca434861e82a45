//! The `DataJob` custom resource: what a user asks for (spec) and what the operator records
//! (status). The CEL rules here are the API server's half of the contract: immutability, the
//! one-way cancel flag and the per-type required fields are enforced before the operator sees
//! an object.

use std::fmt;

use k8s_openapi::api::core::v1::{EnvVar, ResourceRequirements};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ClusterType;
use super::condition::Condition;

/// Longest accepted `spec.input.nql`, in characters (256 KiB).
pub const MAX_NQL_LENGTH: usize = 256 * 1024;
/// Longest accepted `spec.cancelReason`, in characters.
pub const MAX_CANCEL_REASON_LENGTH: usize = 1024;
/// Worker pods of a dedicated cluster when `spec.executor.workers` is not set.
pub const DEFAULT_WORKERS: i32 = 2;
/// Most worker pods a dedicated cluster may ask for.
pub const MAX_WORKERS: i32 = 64;
/// Grace period given to executor pods when `spec.executor.terminationGracePeriodSeconds` is unset.
pub const DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 30;
/// Longest grace period an executor pod may get.
pub const MAX_TERMINATION_GRACE_PERIOD_SECONDS: i64 = 3600;
/// Seconds a job's executor may take to start (its driver running) when neither
/// `spec.startTimeoutSeconds` nor the pool's `startTimeoutSeconds` says otherwise.
pub const DEFAULT_START_TIMEOUT_SECONDS: i64 = 600;
/// Longest start timeout (`startTimeoutSeconds` of a job or a pool): one day.
pub const MAX_START_TIMEOUT_SECONDS: i64 = 86_400;
/// Longest `spec.activeDeadlineSeconds` (one year).
pub const MAX_ACTIVE_DEADLINE_SECONDS: i64 = 31_536_000;
/// Longest `spec.ttlSecondsAfterFinished` (one year).
pub const MAX_TTL_SECONDS_AFTER_FINISHED: i32 = 31_536_000;
/// Largest `spec.input.datasetId` (10^18: exact in the API server's float comparison and far
/// inside int64).
pub const MAX_DATASET_ID: i64 = 1_000_000_000_000_000_000;

/// A data job: a materialized view or an NQL forecast, run by executor pods on a data plane.
// Every printcolumn(...) repeats the same keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "datajob.dev",
    version = "v1alpha1",
    kind = "DataJob",
    plural = "datajobs",
    shortname = "dj",
    category = "datajob-all",
    namespaced,
    status = "DataJobStatus",
    derive = "PartialEq",
    doc = "A data job (materialize-view or nql-forecast) that the datajob-operator runs on executor pods and can cancel on request.",
    selectable = ".spec.dataPlane",
    selectable = ".spec.computePool",
    selectable = ".spec.type",
    selectable = ".status.state",
    selectable = ".status.jobId",
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.state",
        description = "Lifecycle state of the job"
    ),
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.type",
        description = "Kind of data job"
    ),
    printcolumn(
        name = "Cluster",
        type_ = "string",
        json_path = ".status.clusterType",
        description = "Executor cluster type the job runs on"
    ),
    printcolumn(
        name = "Pool",
        type_ = "string",
        json_path = ".spec.computePool",
        description = "Compute pool of the job"
    ),
    printcolumn(
        name = "Data plane",
        type_ = "string",
        json_path = ".spec.dataPlane",
        description = "Data plane the job runs on"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.type != 'materialize-view' || has(self.input.datasetId)").message("spec.input.datasetId is required for materialize-view jobs"))]
#[x_kube(validation = Rule::new("self.type == oldSelf.type").message("spec.type is immutable; create a new DataJob instead (only cancel, cancelReason and ttlSecondsAfterFinished may change)"))]
#[x_kube(validation = Rule::new("self.input == oldSelf.input").message("spec.input is immutable; create a new DataJob instead (only cancel, cancelReason and ttlSecondsAfterFinished may change)"))]
#[x_kube(validation = Rule::new("self.dataPlane == oldSelf.dataPlane").message("spec.dataPlane is immutable; create a new DataJob instead (only cancel, cancelReason and ttlSecondsAfterFinished may change)"))]
#[x_kube(validation = Rule::new("has(self.computePool) == has(oldSelf.computePool) && (!has(self.computePool) || self.computePool == oldSelf.computePool)").message("spec.computePool is immutable; create a new DataJob instead (only cancel, cancelReason and ttlSecondsAfterFinished may change)"))]
#[x_kube(validation = Rule::new("has(self.clusterType) == has(oldSelf.clusterType) && (!has(self.clusterType) || self.clusterType == oldSelf.clusterType)").message("spec.clusterType is immutable; create a new DataJob instead (only cancel, cancelReason and ttlSecondsAfterFinished may change)"))]
#[x_kube(validation = Rule::new("has(self.executor) == has(oldSelf.executor) && (!has(self.executor) || self.executor == oldSelf.executor)").message("spec.executor is immutable; create a new DataJob instead (only cancel, cancelReason and ttlSecondsAfterFinished may change)"))]
#[x_kube(validation = Rule::new("has(self.activeDeadlineSeconds) == has(oldSelf.activeDeadlineSeconds) && (!has(self.activeDeadlineSeconds) || self.activeDeadlineSeconds == oldSelf.activeDeadlineSeconds)").message("spec.activeDeadlineSeconds is immutable; create a new DataJob instead (only cancel, cancelReason and ttlSecondsAfterFinished may change)"))]
#[x_kube(validation = Rule::new("has(self.startTimeoutSeconds) == has(oldSelf.startTimeoutSeconds) && (!has(self.startTimeoutSeconds) || self.startTimeoutSeconds == oldSelf.startTimeoutSeconds)").message("spec.startTimeoutSeconds is immutable; create a new DataJob instead (only cancel, cancelReason and ttlSecondsAfterFinished may change)"))]
#[x_kube(validation = Rule::new("!(has(oldSelf.cancel) && oldSelf.cancel) || (has(self.cancel) && self.cancel)").message("cancellation cannot be withdrawn; delete the DataJob instead"))]
#[x_kube(validation = Rule::new("!has(self.executor) || !has(self.executor.env) || self.executor.env.all(e, !e.name.startsWith('DATAJOB_'))").message("spec.executor.env cannot set DATAJOB_* variables; the operator sets them from the spec"))]
#[x_kube(validation = Rule::new("!has(self.executor) || !has(self.executor.workers) || !has(self.clusterType) || self.clusterType == 'dedicated'").message("spec.executor.workers applies to dedicated clusters only; remove it or set spec.clusterType to dedicated"))]
pub struct DataJobSpec {
    /// Kind of data job: `materialize-view` builds a dataset snapshot, `nql-forecast` computes a
    /// forecast. Immutable.
    #[serde(rename = "type")]
    pub job_type: JobType,

    /// The job's query and dataset. Immutable.
    pub input: JobInput,

    /// The data plane the job runs on (a DNS-1123 label). Immutable; selectable with
    /// `--field-selector spec.dataPlane=NAME`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub data_plane: String,

    /// Name of the ComputePool the job runs in (a DNS-1123 label). When set and the pool does
    /// not exist yet, the job waits in `pending` until it appears. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub compute_pool: Option<String>,

    /// Executor cluster type: `dedicated` (own driver and workers, no node shared with other
    /// jobs) or `shared` (one pod packed with other jobs). Defaults to the pool's type, else
    /// `shared`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_type: Option<ClusterType>,

    /// Executor overrides (image, resources, workers, grace period, environment). Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<ExecutorSpec>,

    /// Set to true to request cancellation. One-way: it cannot be set back to false.
    #[serde(default)]
    pub cancel: bool,

    /// Why the job is cancelled; recorded in status.cancellation and in events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub cancel_reason: Option<String>,

    /// A job running longer than this many seconds (1 to 31536000, one year) fails with
    /// reason `DeadlineExceeded`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 31_536_000))]
    pub active_deadline_seconds: Option<i64>,

    /// The executor must start (its driver running) within this many seconds (1 to 86400) of
    /// being recorded, else the job fails with reason `ExecutorStartFailed`. Default: the
    /// pool's `startTimeoutSeconds`, else 600. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86_400))]
    pub start_timeout_seconds: Option<i64>,

    /// A finished DataJob is deleted this many seconds (0 to 31536000, one year) after it
    /// finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 31_536_000))]
    pub ttl_seconds_after_finished: Option<i32>,
}

/// Kind of data job.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobType {
    /// Builds a dataset snapshot from an NQL materialized view.
    MaterializeView,
    /// Computes a forecast from an NQL query.
    NqlForecast,
}

impl JobType {
    /// The name used on the wire and in the executor environment.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::MaterializeView => "materialize-view",
            JobType::NqlForecast => "nql-forecast",
        }
    }
}

impl fmt::Display for JobType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The job's query and the dataset it works on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobInput {
    /// The NQL statement to run (non-empty, at most 256 KiB of UTF-8).
    #[schemars(length(min = 1, max = 262144))]
    #[x_kube(validation = Rule::new("size(bytes(self)) <= 262144").message("spec.input.nql must be at most 256 KiB (262144 UTF-8 bytes)"))]
    pub nql: String,

    /// The SQL the NQL compiled to, when already known (at most 256 KiB of UTF-8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 262144))]
    #[x_kube(validation = Rule::new("size(bytes(self)) <= 262144").message("spec.input.compiledSql must be at most 256 KiB (262144 UTF-8 bytes)"))]
    pub compiled_sql: Option<String>,

    /// The dataset the job reads or materializes (1 to 10^18); required for
    /// `materialize-view`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000_000_000i64))]
    pub dataset_id: Option<i64>,

    /// Whether the executor collects statistics while running.
    #[serde(default)]
    pub stats_enabled: bool,
}

/// Per-job executor settings; unset fields fall back to the pool's defaults, then the
/// operator's.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecutorSpec {
    /// Container image of the executor pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::image")]
    pub image: Option<String>,

    /// Compute resources of each executor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::resources")]
    pub resources: Option<ResourceRequirements>,

    /// Worker pods beside the driver (dedicated clusters only; default 2, 0 to 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 64))]
    pub workers: Option<i32>,

    /// Seconds each executor pod gets between SIGTERM and SIGKILL on teardown (default 30,
    /// 0 to 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub termination_grace_period_seconds: Option<i64>,

    /// Extra environment variables for the executor containers (at most 64; the DATAJOB_*
    /// contract variables are the operator's and cannot be set here).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::env")]
    pub env: Vec<EnvVar>,
}

/// Lifecycle state of a DataJob.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted; waiting for room in the pool or for the driver to run.
    Pending,
    /// The driver is running.
    Running,
    /// Cancellation was requested; executor pods are being torn down.
    PendingCancellation,
    /// Cancelled; every executor pod is gone. Terminal.
    Cancelled,
    /// The driver succeeded and its result is recorded. Terminal.
    Completed,
    /// The job failed; see failures. Terminal.
    Failed,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 6] = [
        JobState::Pending,
        JobState::Running,
        JobState::PendingCancellation,
        JobState::Cancelled,
        JobState::Completed,
        JobState::Failed,
    ];

    /// Whether the state is final: nothing changes it any more.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Cancelled | JobState::Completed | JobState::Failed
        )
    }

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Running => "running",
            JobState::PendingCancellation => "pending_cancellation",
            JobState::Cancelled => "cancelled",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the operator observed and decided about a DataJob.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataJobStatus {
    /// Lifecycle state: pending, running, pending_cancellation, cancelled, completed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<JobState>,

    /// The job's unique id (the object's uid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,

    /// Name of the job's executor; recorded before any executor pod is created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<String>,

    /// The executor cluster type the job resolved to (from the spec, the pool, or `shared`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_type: Option<ClusterType>,

    /// Causes of job failure.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<JobFailure>,

    /// The driver's result: dataset snapshot for materialize-view, forecast for nql-forecast.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,

    /// When the operator first saw the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,

    /// When the operator first saw the job, to the microsecond: from its watch, or for jobs it
    /// found in a list (created while it did not watch) the time of that list, in the order of
    /// `creationTimestamp` and name. A limited compute pool admits the jobs waiting for a slot
    /// in the order of `creationTimestamp` (whole seconds), then of this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arrived_at: Option<MicroTime>,

    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Time>,

    /// When the executor was recorded and its pods first requested; the start timeout counts
    /// from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_requested_at: Option<Time>,

    /// When the driver started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the job reached a terminal state (completed, cancelled or failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,

    /// The cancellation request, once the operator saw one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,

    /// Number of the job's executor pods that still exist (0 to 65: a driver and at most 64
    /// workers). When only this count changes it is written at most every 5 seconds; a state
    /// change writes it at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 65))]
    pub active_executors: Option<i32>,

    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Reconciling, Stalled (kstatus) and Complete, Failed, Cancelled,
    /// CancellationRequested.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// One cause of a job failure.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobFailure {
    /// Machine-readable cause, for example DriverFailed, ExecutorLost, Evicted, InvalidResult,
    /// DeadlineExceeded.
    pub reason: String,
    /// What happened and what to do about it.
    pub message: String,
    /// When the failure was recorded.
    pub time: Time,
}

/// The recorded cancellation request.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    /// When the operator first saw `spec.cancel: true`.
    pub requested_at: Time,
    /// The request's `spec.cancelReason`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The driver's result, read from its termination message.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    /// materialize-view: the dataset that was materialized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<i64>,
    /// materialize-view: the snapshot the job produced (64-bit, kept exact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<i64>,
    /// materialize-view: the recalculation that produced the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalculation_id: Option<String>,
    /// nql-forecast: the forecast, as the driver wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::free_form_object")]
    pub forecast: Option<serde_json::Map<String, serde_json::Value>>,
}
