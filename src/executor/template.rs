//! The build step: [`ExecutorTemplate::resolve`] merges a DataJob, its ComputePool and the
//! operator's defaults into everything an executor pod needs, and [`ExecutorTemplate::pod`]
//! builds each pod (labels, the DATAJOB_* environment, the restricted security context, the
//! dedicated anti-affinity). Pure: apply calls it with the plan's decided cluster type.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, ConfigMap, ConfigMapVolumeSource, Container, EnvVar, Pod,
    PodAffinityTerm, PodAntiAffinity, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, OwnerReference,
};
use kube::ResourceExt;
use kube::api::ObjectMeta;

use super::{
    CONTAINER_NAME, LABEL_CLUSTER_TYPE, LABEL_COMPUTE_POOL, LABEL_DATA_PLANE, LABEL_JOB_NAME,
    LABEL_JOB_UID, LABEL_MANAGED_BY, LABEL_ROLE, PodSlot, RESULT_FINALIZER, Role,
    TERMINATION_MESSAGE_PATH,
};
use crate::OPERATOR_NAME;
use crate::api::datajob::DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS;
use crate::api::{ClusterType, ComputePool, DataJob, JobType};

/// User id executor containers run as (non-root, as the restricted profile requires).
const EXECUTOR_UID: i64 = 65532;

/// Where the query files are mounted in executor containers.
pub const QUERY_MOUNT: &str = "/var/run/datajob/query";
/// File (ConfigMap key) holding the NQL.
pub const QUERY_NQL_KEY: &str = "nql";
/// File (ConfigMap key) holding the compiled SQL (empty when the spec has none).
pub const QUERY_SQL_KEY: &str = "compiled.sql";
/// Name of the query volume in executor pods.
const QUERY_VOLUME: &str = "query";
/// Longest query text passed inline in `DATAJOB_NQL` / `DATAJOB_COMPILED_SQL`, in bytes; when
/// the NQL or the compiled SQL is longer, the query goes to executors as files of a ConfigMap
/// (Linux refuses one environment string over 128 KiB), and the text that fits stays inline.
pub const MAX_INLINE_QUERY_BYTES: usize = 64 * 1024;

/// Name of the job's query ConfigMap (one per job incarnation: it carries the job's uid).
pub fn query_config_map_name(job_uid: &str) -> String {
    format!("datajob-query-{job_uid}")
}

/// The query text for the environment: itself when short enough, else empty (read the file).
fn inline(text: &str) -> String {
    if text.len() <= MAX_INLINE_QUERY_BYTES {
        text.to_string()
    } else {
        String::new()
    }
}

/// What the operator gives executor pods when neither the job nor its pool says.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutorDefaults {
    /// Container image.
    pub image: String,
}

/// The DataJob lacks metadata every stored object has, so no pod can be built for it.
#[derive(Debug, thiserror::Error)]
#[error("failed to build the executor pods of DataJob {job}: it has no {field}")]
pub struct BuildError {
    /// namespace/name of the job, as far as known.
    pub job: String,
    /// The missing metadata field.
    pub field: &'static str,
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

/// The image executor pods of `job` run: the job's, else its pool's, else the operator's.
pub fn image(job: &DataJob, pool: Option<&ComputePool>, defaults: &ExecutorDefaults) -> String {
    job.spec
        .executor
        .as_ref()
        .and_then(|e| e.image.clone())
        .or_else(|| pool.and_then(|p| p.spec.executor.as_ref()?.image.clone()))
        .unwrap_or_else(|| defaults.image.clone())
}

impl ExecutorTemplate {
    /// Resolves the template from the job, its pool and the operator's defaults: the job's
    /// executor settings win over the pool's, which win over the defaults. `cluster_type` is
    /// the one decide recorded (see `Plan::cluster_type`); it is not resolved again here.
    pub fn resolve(
        job: &DataJob,
        cluster_type: ClusterType,
        pool: Option<&ComputePool>,
        defaults: &ExecutorDefaults,
    ) -> Result<Self, BuildError> {
        let missing = |field| BuildError {
            job: format!("{}/{}", job.namespace().unwrap_or_default(), job.name_any()),
            field,
        };
        let uid = job.uid().ok_or_else(|| missing("uid"))?;
        let namespace = job.namespace().ok_or_else(|| missing("namespace"))?;
        let spec = &job.spec;
        let job_executor = spec.executor.clone().unwrap_or_default();
        let pool_executor = pool
            .and_then(|p| p.spec.executor.clone())
            .unwrap_or_default();
        Ok(ExecutorTemplate {
            namespace,
            job_name: job.name_any(),
            job_uid: uid,
            job_type: spec.job_type,
            nql: spec.input.nql.clone(),
            compiled_sql: spec.input.compiled_sql.clone(),
            dataset_id: spec.input.dataset_id,
            stats_enabled: spec.input.stats_enabled,
            data_plane: spec.data_plane.clone(),
            compute_pool: spec.compute_pool.clone(),
            cluster_type,
            image: image(job, pool, defaults),
            resources: job_executor.resources.or(pool_executor.resources),
            termination_grace_period_seconds: job_executor
                .termination_grace_period_seconds
                .unwrap_or(DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS),
            extra_env: job_executor.env,
            node_selector: pool
                .map(|p| p.spec.node_selector.clone())
                .unwrap_or_default(),
            tolerations: pool.map(|p| p.spec.tolerations.clone()).unwrap_or_default(),
        })
    }

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

    /// Whether the query goes to executors as files (the job's query ConfigMap, mounted at
    /// [`QUERY_MOUNT`]): only when the NQL or the compiled SQL is too long to pass inline. A
    /// query that fits needs no ConfigMap, no volume and no write of its own.
    pub fn query_file(&self) -> bool {
        self.nql.len() > MAX_INLINE_QUERY_BYTES
            || self
                .compiled_sql
                .as_ref()
                .is_some_and(|sql| sql.len() > MAX_INLINE_QUERY_BYTES)
    }

    /// The DATAJOB_* environment contract, followed by the spec's extra variables (contract
    /// names win). `DATAJOB_NQL_FILE` and `DATAJOB_COMPILED_SQL_FILE` are set only when the
    /// query goes as files ([`Self::query_file`]).
    pub fn env(&self, role: Role) -> Vec<EnvVar> {
        let files = self.query_file();
        let contract = [
            ("DATAJOB_ID", self.job_uid.clone()),
            ("DATAJOB_TYPE", self.job_type.as_str().to_string()),
            ("DATAJOB_NQL", inline(&self.nql)),
            (
                "DATAJOB_COMPILED_SQL",
                inline(self.compiled_sql.as_deref().unwrap_or_default()),
            ),
            ("DATAJOB_NQL_FILE", format!("{QUERY_MOUNT}/{QUERY_NQL_KEY}")),
            (
                "DATAJOB_COMPILED_SQL_FILE",
                format!("{QUERY_MOUNT}/{QUERY_SQL_KEY}"),
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
            .filter(|(name, _)| files || !name.ends_with("_FILE"))
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
                // The driver's result lives in its pod: held until status records it.
                finalizers: (slot.role == Role::Driver).then(|| vec![RESULT_FINALIZER.to_string()]),
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
                    volume_mounts: self.query_file().then(|| {
                        vec![VolumeMount {
                            name: QUERY_VOLUME.to_string(),
                            mount_path: QUERY_MOUNT.to_string(),
                            read_only: Some(true),
                            ..VolumeMount::default()
                        }]
                    }),
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
                volumes: self.query_file().then(|| {
                    vec![Volume {
                        name: QUERY_VOLUME.to_string(),
                        config_map: Some(ConfigMapVolumeSource {
                            name: query_config_map_name(&self.job_uid),
                            default_mode: Some(0o444),
                            ..ConfigMapVolumeSource::default()
                        }),
                        ..Volume::default()
                    }]
                }),
                ..PodSpec::default()
            }),
            status: None,
        }
    }

    /// The job's query as an immutable ConfigMap owned by the job: `nql` and `compiled.sql`,
    /// mounted read-only into every executor pod at [`QUERY_MOUNT`] when the query goes as
    /// files ([`Self::query_file`]).
    pub fn query_config_map(&self, owner: OwnerReference) -> ConfigMap {
        let mut labels = self.labels(Role::Driver);
        labels.remove(LABEL_ROLE);
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(query_config_map_name(&self.job_uid)),
                namespace: Some(self.namespace.clone()),
                labels: Some(labels),
                owner_references: Some(vec![owner]),
                ..ObjectMeta::default()
            },
            immutable: Some(true),
            data: Some(BTreeMap::from([
                (QUERY_NQL_KEY.to_string(), self.nql.clone()),
                (
                    QUERY_SQL_KEY.to_string(),
                    self.compiled_sql.clone().unwrap_or_default(),
                ),
            ])),
            ..ConfigMap::default()
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_values_are_trimmed_to_valid_values() {
        assert_eq!(label_value("-abc-"), "abc");
        assert_eq!(label_value(&"x".repeat(100)).len(), 63);
        assert_eq!(label_value(""), "");
    }

    #[test]
    fn the_job_wins_over_its_pool_and_the_pool_over_the_defaults() {
        let job: DataJob = serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
            "metadata": { "name": "j", "namespace": "ns", "uid": "u-1" },
            "spec": { "type": "nql-forecast", "input": { "nql": "x" }, "dataPlane": "dp",
                      "computePool": "p", "executor": { "terminationGracePeriodSeconds": 5 } },
        }))
        .expect("job");
        let pool: ComputePool = serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "ComputePool",
            "metadata": { "name": "p" },
            "spec": { "executor": { "image": "pool:1" }, "nodeSelector": { "k": "v" } },
        }))
        .expect("pool");
        let defaults = ExecutorDefaults {
            image: "default:1".to_string(),
        };
        let template = ExecutorTemplate::resolve(&job, ClusterType::Shared, Some(&pool), &defaults)
            .expect("resolves");
        assert_eq!(template.image, "pool:1");
        assert_eq!(template.termination_grace_period_seconds, 5);
        assert_eq!(template.node_selector["k"], "v");
        let alone = ExecutorTemplate::resolve(&job, ClusterType::Shared, None, &defaults)
            .expect("resolves");
        assert_eq!(alone.image, "default:1");
        let finalizers = |role| {
            let slot = PodSlot {
                name: "p".to_string(),
                role,
            };
            alone
                .pod(&slot, OwnerReference::default())
                .metadata
                .finalizers
        };
        assert_eq!(
            finalizers(Role::Driver),
            Some(vec![RESULT_FINALIZER.to_string()])
        );
        assert_eq!(
            finalizers(Role::Worker),
            None,
            "only the driver holds a result"
        );
    }

    #[test]
    fn only_a_query_too_long_for_the_environment_goes_as_files() {
        let template = |nql: String, sql: Option<String>| {
            let job: DataJob = serde_json::from_value(json!({
                "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
                "metadata": { "name": "j", "namespace": "ns", "uid": "u-1" },
                "spec": { "type": "nql-forecast", "input": { "nql": nql, "compiledSql": sql },
                          "dataPlane": "dp" },
            }))
            .expect("job");
            let defaults = ExecutorDefaults {
                image: "default:1".to_string(),
            };
            ExecutorTemplate::resolve(&job, ClusterType::Shared, None, &defaults).expect("resolves")
        };
        let slot = PodSlot {
            name: "dj-j-driver".to_string(),
            role: Role::Driver,
        };
        let env_names = |t: &ExecutorTemplate| -> Vec<String> {
            t.env(Role::Driver).into_iter().map(|e| e.name).collect()
        };
        let fits = "x".repeat(MAX_INLINE_QUERY_BYTES);
        let too_long = "x".repeat(MAX_INLINE_QUERY_BYTES + 1);
        let short = template(fits.clone(), Some(fits.clone()));
        assert!(!short.query_file());
        assert!(!env_names(&short).iter().any(|n| n.ends_with("_FILE")));
        let pod = short.pod(&slot, OwnerReference::default());
        let spec = pod.spec.expect("spec");
        assert!(spec.volumes.is_none() && spec.containers[0].volume_mounts.is_none());
        for long in [
            template(too_long.clone(), None),
            template(fits.clone(), Some(too_long.clone())),
        ] {
            assert!(long.query_file());
            let names = env_names(&long);
            assert!(names.contains(&"DATAJOB_NQL_FILE".to_string()), "{names:?}");
            assert!(names.contains(&"DATAJOB_COMPILED_SQL_FILE".to_string()));
            let spec = long
                .pod(&slot, OwnerReference::default())
                .spec
                .expect("spec");
            assert_eq!(spec.volumes.map(|v| v.len()), Some(1));
        }
    }
}
