//! The custom resources the operator serves (`datajob.dev/v1alpha1`) and the CRDs generated
//! from them.

pub mod computepool;
pub mod condition;
pub mod datajob;
pub mod schema;

use std::fmt;

use kube::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use computepool::{ComputePool, ComputePoolSpec, ComputePoolStatus, PoolExecutorDefaults};
pub use condition::Condition;
pub use datajob::{
    Cancellation, DataJob, DataJobSpec, DataJobStatus, ExecutorSpec, JobFailure, JobInput,
    JobResult, JobState, JobType,
};

/// API group of every resource the operator serves.
pub const GROUP: &str = "datajob.dev";

/// Executor cluster type.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ClusterType {
    /// The job gets its own driver and workers, on nodes no other DataJob uses.
    Dedicated,
    /// One executor pod, packed onto the pool's nodes with other jobs.
    #[default]
    Shared,
}

impl ClusterType {
    /// The name used on the wire, in labels and in the executor environment.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterType::Dedicated => "dedicated",
            ClusterType::Shared => "shared",
        }
    }
}

impl fmt::Display for ClusterType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Schema of a JSON object whose fields the API server keeps as they are.
pub(crate) fn free_form_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// The CRDs as YAML documents, in the order they are applied (what `datajob-operator crd`
/// prints and `crds/` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let mut out = String::new();
    for crd in [DataJob::crd(), ComputePool::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}
