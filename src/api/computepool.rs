//! The cluster-scoped `ComputePool` custom resource: where DataJob executors run, what they
//! default to, and how many jobs may run at once.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ClusterType;
use super::condition::Condition;

/// A pool of nodes that runs DataJob executors.
// Every printcolumn(...) repeats the same keys, which clippy mistakes for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
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

    /// Most jobs of this pool holding executors at once; 0 means unlimited. Jobs beyond it wait
    /// in `pending`, first come first served.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_concurrent_jobs: i32,

    /// Node labels executor pods of this pool must match.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations given to executor pods of this pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Executor defaults for the pool's jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor: Option<PoolExecutorDefaults>,
}

/// Executor defaults a pool gives its jobs.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolExecutorDefaults {
    /// Container image of executor pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Compute resources of each executor container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

/// What the operator observed about a pool.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ComputePoolStatus {
    /// Jobs of the pool that hold executors (admitted and not finished).
    #[serde(default)]
    pub active_jobs: i32,
    /// Jobs of the pool waiting for room.
    #[serde(default)]
    pub queued_jobs: i32,
    /// The metadata.generation this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready when the pool is accepting jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
