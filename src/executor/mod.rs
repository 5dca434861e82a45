//! Executor pods: their deterministic names, labels, the environment contract with the executor
//! image, the restricted security context, and how a driver's termination message becomes a
//! result or a failure.

pub mod cache;
pub mod result;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, EnvVar, Pod, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, ResourceRequirements, SeccompProfile, SecurityContext, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, OwnerReference,
};
use kube::api::ObjectMeta;

use crate::OPERATOR_NAME;
use crate::api::{ClusterType, JobType};

pub use result::{DriverOutcome, read_driver_outcome};

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
/// User id executor containers run as (non-root, as the restricted profile requires).
const EXECUTOR_UID: i64 = 65532;
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

/// Everything that goes into an executor pod, resolved from the job, its pool and the
/// operator's defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorTemplate {
    /// Namespace of the job and its pods.
    pub namespace: String,
    /// Name of the DataJob.
    pub job_name: String,
    /// uid of the DataJob (the job id).
    pub job_uid: String,
    /// Kind of job.
    pub job_type: JobType,
    /// The NQL statement.
    pub nql: String,
    /// Compiled SQL, if given.
    pub compiled_sql: Option<String>,
    /// Dataset id, if given.
    pub dataset_id: Option<i64>,
    /// Whether statistics are collected.
    pub stats_enabled: bool,
    /// Data plane of the job.
    pub data_plane: String,
    /// Compute pool of the job, if any.
    pub compute_pool: Option<String>,
    /// Resolved cluster type.
    pub cluster_type: ClusterType,
    /// Container image.
    pub image: String,
    /// Container resources.
    pub resources: Option<ResourceRequirements>,
    /// Grace period on teardown.
    pub termination_grace_period_seconds: i64,
    /// Extra environment from the spec.
    pub extra_env: Vec<EnvVar>,
    /// Node selector from the pool.
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations from the pool.
    pub tolerations: Vec<Toleration>,
}

impl ExecutorTemplate {
    /// The labels every pod of this executor carries.
    pub fn labels(&self, role: Role) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_MANAGED_BY.to_string(), OPERATOR_NAME.to_string()),
            (LABEL_JOB_NAME.to_string(), label_value(&self.job_name)),
            (LABEL_JOB_UID.to_string(), self.job_uid.clone()),
            (LABEL_ROLE.to_string(), role.as_str().to_string()),
            (
                LABEL_CLUSTER_TYPE.to_string(),
                self.cluster_type.as_str().to_string(),
            ),
            (
                LABEL_COMPUTE_POOL.to_string(),
                label_value(self.compute_pool.as_deref().unwrap_or("")),
            ),
            (LABEL_DATA_PLANE.to_string(), self.data_plane.clone()),
        ])
    }

    /// The DATAJOB_* environment contract, followed by the spec's extra variables (contract
    /// names win).
    pub fn env(&self, role: Role) -> Vec<EnvVar> {
        let contract = [
            ("DATAJOB_ID", self.job_uid.clone()),
            ("DATAJOB_TYPE", self.job_type.as_str().to_string()),
            ("DATAJOB_NQL", self.nql.clone()),
            (
                "DATAJOB_COMPILED_SQL",
                self.compiled_sql.clone().unwrap_or_default(),
            ),
            (
                "DATAJOB_DATASET_ID",
                self.dataset_id.map(|id| id.to_string()).unwrap_or_default(),
            ),
            ("DATAJOB_STATS_ENABLED", self.stats_enabled.to_string()),
            ("DATAJOB_DATA_PLANE", self.data_plane.clone()),
            (
                "DATAJOB_COMPUTE_POOL",
                self.compute_pool.clone().unwrap_or_default(),
            ),
            (
                "DATAJOB_CLUSTER_TYPE",
                self.cluster_type.as_str().to_string(),
            ),
            ("DATAJOB_ROLE", role.as_str().to_string()),
        ];
        let mut env: Vec<EnvVar> = contract
            .into_iter()
            .map(|(name, value)| EnvVar {
                name: name.to_string(),
                value: Some(value),
                value_from: None,
            })
            .collect();
        env.extend(
            self.extra_env
                .iter()
                .filter(|var| !var.name.starts_with("DATAJOB_"))
                .cloned(),
        );
        env
    }

    /// The pod for one slot, owned by the DataJob.
    pub fn pod(&self, slot: &PodSlot, owner: OwnerReference) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(slot.name.clone()),
                namespace: Some(self.namespace.clone()),
                labels: Some(self.labels(slot.role)),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                restart_policy: Some("Never".to_string()),
                termination_grace_period_seconds: Some(self.termination_grace_period_seconds),
                automount_service_account_token: Some(false),
                enable_service_links: Some(false),
                node_selector: (!self.node_selector.is_empty()).then(|| self.node_selector.clone()),
                tolerations: (!self.tolerations.is_empty()).then(|| self.tolerations.clone()),
                affinity: (self.cluster_type == ClusterType::Dedicated)
                    .then(|| self.dedicated_anti_affinity()),
                security_context: Some(PodSecurityContext {
                    run_as_non_root: Some(true),
                    run_as_user: Some(EXECUTOR_UID),
                    run_as_group: Some(EXECUTOR_UID),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "RuntimeDefault".to_string(),
                        localhost_profile: None,
                    }),
                    ..PodSecurityContext::default()
                }),
                containers: vec![Container {
                    name: CONTAINER_NAME.to_string(),
                    image: Some(self.image.clone()),
                    env: Some(self.env(slot.role)),
                    resources: self.resources.clone(),
                    termination_message_path: Some(TERMINATION_MESSAGE_PATH.to_string()),
                    termination_message_policy: Some("File".to_string()),
                    security_context: Some(SecurityContext {
                        allow_privilege_escalation: Some(false),
                        read_only_root_filesystem: Some(true),
                        run_as_non_root: Some(true),
                        capabilities: Some(Capabilities {
                            drop: Some(vec!["ALL".to_string()]),
                            add: None,
                        }),
                        ..SecurityContext::default()
                    }),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// Keeps a dedicated executor off every node that runs another DataJob's pods (the
    /// scheduler also applies it in reverse, keeping other jobs off this one's nodes).
    fn dedicated_anti_affinity(&self) -> Affinity {
        Affinity {
            pod_anti_affinity: Some(PodAntiAffinity {
                required_during_scheduling_ignored_during_execution: Some(vec![PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".to_string(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([(
                            LABEL_MANAGED_BY.to_string(),
                            OPERATOR_NAME.to_string(),
                        )])),
                        match_expressions: Some(vec![LabelSelectorRequirement {
                            key: LABEL_JOB_UID.to_string(),
                            operator: "NotIn".to_string(),
                            values: Some(vec![self.job_uid.clone()]),
                        }]),
                    }),
                    namespace_selector: Some(LabelSelector::default()),
                    ..PodAffinityTerm::default()
                }]),
                ..PodAntiAffinity::default()
            }),
            ..Affinity::default()
        }
    }
}

/// Makes a string a valid label value: at most 63 characters, alphanumeric at both ends.
fn label_value(value: &str) -> String {
    let cut: String = value.chars().take(63).collect();
    cut.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
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

    #[test]
    fn label_values_are_trimmed_to_valid_values() {
        assert_eq!(label_value("-abc-"), "abc");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
        assert_eq!(label_value(""), "");
    }
}
