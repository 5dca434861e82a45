//! The cluster-scoped `ComputePool` custom resource: where DataJob executors run, what they
//! default to, and how many jobs may run at once.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ClusterType;
use super::condition::Condition;

/// Most jobs a pool may run at once.
pub const MAX_CONCURRENT_JOBS: i32 = 100_000;

/// A pool of nodes that runs DataJob executors.
// Every printcolumn(...) repeats the same keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "datajob.dev",
    version = "v1alpha1",
    kind = "ComputePool",
    plural = "computepools",
    shortname = "cpool",
    category = "datajob-all",
    status = "ComputePoolStatus",
    derive = "PartialEq",
    doc = "A compute pool: the nodes, executor defaults and concurrency limit for the DataJobs that name it.",
    validation = Rule::new("self.metadata.name.size() <= 63 && self.metadata.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("metadata.name of a ComputePool must be a DNS-1123 label (at most 63 lower-case letters, digits and '-'): jobs carry it in a label"),
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.clusterType",
        description = "Default executor cluster type"
    ),
    printcolumn(
        name = "Max",
        type_ = "integer",
        json_path = ".spec.maxConcurrentJobs",
        description = "Most jobs running at once (0 = unlimited)"
    ),
    printcolumn(
        name = "Active",
        type_ = "integer",
        json_path = ".status.activeJobs",
        description = "Jobs holding executors"
    ),
    printcolumn(
        name = "Queued",
        type_ = "integer",
        json_path = ".status.queuedJobs",
        description = "Jobs waiting for room"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ComputePoolSpec {
    /// Cluster type of jobs that do not set spec.clusterType (default shared).
    #[serde(default)]
    pub cluster_type: ClusterType,

    /// Most jobs of this pool holding executors at once (0 to 100000); 0 means unlimited. Jobs
    /// beyond it wait in `pending`, first come first served.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100_000))]
    pub max_concurrent_jobs: i32,

    /// Node labels executor pods of this pool must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "super::schema::node_selector")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations given to executor pods of this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::tolerations")]
    pub tolerations: Vec<Toleration>,

    /// Executor defaults for the pool's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<PoolExecutorDefaults>,

    /// Image prefixes the pool's jobs may use besides the operator's `--allowed-image-prefix`
    /// flags. See [`crate::policy::image_allowed`] for how an entry matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "super::schema::allowed_images")]
    pub allowed_images: Vec<String>,

    /// Namespaces whose jobs may use the pool; unset admits every namespace. A job from another
    /// namespace fails with reason `PoolNotAllowed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::namespace_selector")]
    pub namespace_selector: Option<LabelSelector>,

    /// Whether the pool's jobs may take executor environment values from Secrets and
    /// ConfigMaps of their namespace (`spec.executor.env[].valueFrom`). Off by default: a job
    /// that asks for it in a pool without it fails with reason `InvalidSpec`.
    #[serde(default)]
    pub allow_env_value_from: bool,

    /// Default `startTimeoutSeconds` of the pool's jobs (1 to 86400): an executor that has not
    /// started that long after it was recorded fails its job with reason
    /// `ExecutorStartFailed`. Unset: 600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86_400))]
    pub start_timeout_seconds: Option<i64>,
}

/// Executor defaults a pool gives its jobs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolExecutorDefaults {
    /// Container image of executor pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::image")]
    pub image: Option<String>,
    /// Compute resources of each executor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "super::schema::resources")]
    pub resources: Option<ResourceRequirements>,
}

/// What the operator observed about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputePoolStatus {
    /// Jobs of the pool that hold executors (admitted and not finished).
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub active_jobs: i32,
    /// Jobs of the pool waiting for room.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub queued_jobs: i32,
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready when the pool is accepting jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
