//! Executor pods: their deterministic names and slots, the labels that select them, the build
//! step ([`ExecutorTemplate`]: the environment contract with the executor image, the restricted
//! security context) and how a driver's termination message becomes a result or a failure
//! ([`result`]).

pub mod cache;
pub mod result;
mod template;

use crate::OPERATOR_NAME;
use crate::api::ClusterType;

pub use result::{DriverOutcome, read_driver_outcome};
pub use template::{BuildError, ExecutorDefaults, ExecutorTemplate, image, query_config_map_name};

/// Label on every executor pod: who manages it.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label: name of the DataJob.
pub const LABEL_JOB_NAME: &str = "datajob.dev/job-name";
/// Label: uid of the DataJob; selects exactly one job's pods.
pub const LABEL_JOB_UID: &str = "datajob.dev/job-uid";
/// Label: `driver` or `worker`.
pub const LABEL_ROLE: &str = "datajob.dev/role";
/// Label: `dedicated` or `shared`.
pub const LABEL_CLUSTER_TYPE: &str = "datajob.dev/cluster-type";
/// Label: the compute pool (empty when the job names none).
pub const LABEL_COMPUTE_POOL: &str = "datajob.dev/compute-pool";
/// Label: the data plane.
pub const LABEL_DATA_PLANE: &str = "datajob.dev/data-plane";
/// Name of the executor container in every executor pod.
pub const CONTAINER_NAME: &str = "executor";
/// Where the driver writes its result or failure.
pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Finalizer on every driver pod: holds the pod object, and with it the driver's termination
/// message, until the job's status records the outcome (or the job is being torn down).
pub const RESULT_FINALIZER: &str = "datajob.dev/result";
/// Longest DataJob name kept in an executor name; the rest is replaced by the uid suffix.
const MAX_NAME_PART: usize = 41;

/// Role of an executor pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Runs the job and reports its result.
    Driver,
    /// Helps the driver on a dedicated cluster.
    Worker,
}

impl Role {
    /// Label value of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Driver => "driver",
            Role::Worker => "worker",
        }
    }

    /// Parses a role label value.
    pub fn from_label(value: &str) -> Option<Role> {
        match value {
            "driver" => Some(Role::Driver),
            "worker" => Some(Role::Worker),
            _ => None,
        }
    }
}

/// Deterministic executor name of a job: `dj-<name>-<uid prefix>`, at most 53 characters so
/// every pod name (`<executor>-worker-63`) stays a valid 63-character DNS label.
pub fn executor_name(job_name: &str, job_uid: &str) -> String {
    let mut name_part: String = job_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(MAX_NAME_PART)
        .collect();
    while name_part.ends_with('-') {
        name_part.pop();
    }
    let uid_part: String = job_uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    if name_part.is_empty() {
        format!("dj-{uid_part}")
    } else {
        format!("dj-{name_part}-{uid_part}")
    }
}

/// One executor pod the job should have.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodSlot {
    /// The pod's deterministic name.
    pub name: String,
    /// Driver or worker.
    pub role: Role,
}

/// The pods of an executor: one driver, plus `workers` workers on a dedicated cluster.
pub fn pod_slots(executor: &str, cluster_type: ClusterType, workers: i32) -> Vec<PodSlot> {
    let mut slots = vec![PodSlot {
        name: format!("{executor}-driver"),
        role: Role::Driver,
    }];
    if cluster_type == ClusterType::Dedicated {
        slots.extend((0..workers.max(0)).map(|i| PodSlot {
            name: format!("{executor}-worker-{i}"),
            role: Role::Worker,
        }));
    }
    slots
}

/// Label selector for all executor pods of one job.
pub fn job_pods_selector(job_uid: &str) -> String {
    format!("{LABEL_MANAGED_BY}={OPERATOR_NAME},{LABEL_JOB_UID}={job_uid}")
}

/// Label selector for every executor pod the operator manages.
pub fn managed_pods_selector() -> String {
    format!("{LABEL_MANAGED_BY}={OPERATOR_NAME}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_names_are_deterministic_and_bounded() {
        let uid = "3f0c9a1e-1111-2222-3333-444455556666";
        let long = "a".repeat(253);
        let name = executor_name(&long, uid);
        assert_eq!(name, executor_name(&long, uid));
        assert!(name.len() <= 53, "{name} is {} long", name.len());
        let worker = format!("{name}-worker-63");
        assert!(worker.len() <= 63);
        assert_eq!(executor_name("my.job", uid), "dj-my-job-3f0c9a1e");
    }

    #[test]
    fn different_incarnations_of_a_name_get_different_executors() {
        assert_ne!(
            executor_name("job", "aaaaaaaa-0000"),
            executor_name("job", "bbbbbbbb-0000")
        );
    }

    #[test]
    fn shared_executor_is_one_driver_and_dedicated_adds_workers() {
        let shared = pod_slots("dj-x-1", ClusterType::Shared, 5);
        assert_eq!(shared.len(), 1);
        assert_eq!(shared[0].role, Role::Driver);
        let dedicated = pod_slots("dj-x-1", ClusterType::Dedicated, 3);
        let names: Vec<_> = dedicated.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "dj-x-1-driver",
                "dj-x-1-worker-0",
                "dj-x-1-worker-1",
                "dj-x-1-worker-2"
            ]
        );
    }
}
