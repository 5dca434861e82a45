//! The dedicated scenario: J jobs of W + 1 pods each (a DataJob's driver and W workers on a
//! dedicated cluster; a Job with parallelism W + 1), each job on its own fake node (a DataJob
//! through a ComputePool that selects the node, a Job through the same node selector), since a
//! dedicated executor keeps other jobs off its nodes. Two phases, like stream and cancel storm:
//! - start: the client creates the J objects; time until every pod of every job runs;
//! - stop: all J are stopped at once (Job `suspend`, DataJob `cancel`); time until every Job's
//!   pods are deleted / every DataJob is `cancelled` (which waits for its pods).

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::support::{TestNamespace, compute_pool, watch};
use super::{
    Bench, Kind, Measure, PHASE_LIMIT, Phase, create_all, datajob_in, names, stop_all,
    watch_objects, watch_pods,
};
use datajob_operator::api::{ComputePool, DataJob};

/// The node label that gives each dedicated job a node of its own.
const POOL_LABEL: &str = "datajob.dev/bench-pool";

/// How many dedicated jobs, and how many workers each.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub jobs: usize,
    pub workers: usize,
}

impl Shape {
    /// `--dedicated JOBSxWORKERS` (default 20x32); `--dedicated 0` leaves the scenario out.
    pub fn from_args() -> Option<Shape> {
        let arg = super::cli::arg("--dedicated").unwrap_or_else(|| "20x32".to_string());
        if arg == "0" {
            return None;
        }
        let (jobs, workers) = arg
            .split_once('x')
            .and_then(|(j, w)| Some((j.parse().ok()?, w.parse().ok()?)))
            .expect("--dedicated takes JOBSxWORKERS, such as 20x32, or 0");
        assert!(
            (1..=64).contains(&workers) && jobs >= 1,
            "--dedicated: 1 to 64 workers and at least one job"
        );
        Some(Shape { jobs, workers })
    }

    fn pods_per_job(self) -> usize {
        self.workers + 1
    }
}

impl Bench {
    /// Runs the start and stop phases for `kind`; returns (start, stop).
    pub async fn dedicated(&self, kind: Kind, shape: Shape) -> (Measure, Measure) {
        ensure_pools(&self.client, shape.jobs).await;
        let namespace = TestNamespace::new(&self.client, "versus-dedicated").await;
        let ns = namespace.name().to_string();
        let operator = (kind == Kind::DataJob).then(|| self.start_operator(&ns));
        let names = names(shape.jobs);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let datajobs: Api<DataJob> = Api::namespaced(self.client.clone(), &ns);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let (mut running, mut deleted, pods_watch) = watch_pods(pods, kind, shape.pods_per_job());
        let (mut stopped, stopped_watch) = match kind {
            Kind::Job => (deleted, None),
            Kind::DataJob => {
                // Only the DataJobs' state ends their stop phase.
                tokio::spawn(async move { while deleted.recv().await.is_some() {} });
                let (rx, task) = watch_objects(datajobs.clone(), datajob_in("cancelled"));
                (rx, Some(task))
            }
        };
        let phase = Phase {
            kind,
            operator: operator.as_ref(),
            namespace: &ns,
            names: &names,
        };
        let create = create_all(
            kind,
            &jobs,
            &datajobs,
            &names,
            |name| job_manifest(name, shape),
            |name| datajob_manifest(name, shape),
        );
        let start = self.measure(&phase, &mut running, create).await;
        let stop = self
            .measure(
                &phase,
                &mut stopped,
                stop_all(kind, &jobs, &datajobs, &names),
            )
            .await;
        pods_watch.abort();
        if let Some(task) = stopped_watch {
            task.abort();
        }
        self.clean_up(namespace).await;
        drop(operator);
        (start, stop)
    }
}

/// The pool (and node label value) of job `name` ("job-00003" -> "bench-p3").
fn pool_name(name: &str) -> String {
    let index: usize = name
        .trim_start_matches("job-")
        .parse()
        .expect("bench job names end in a number");
    format!("bench-p{index}")
}

/// One fake node and one dedicated ComputePool per job, made once per cluster.
async fn ensure_pools(client: &Client, count: usize) {
    let nodes: Api<Node> = Api::all(client.clone());
    let pools: Api<ComputePool> = Api::all(client.clone());
    for index in 0..count {
        let pool = format!("bench-p{index}");
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": format!("kwok-{pool}"),
                "annotations": { "kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0" },
                "labels": {
                    "type": "kwok",
                    POOL_LABEL: pool,
                    "kubernetes.io/hostname": format!("kwok-{pool}"),
                    "kubernetes.io/os": "linux",
                },
            },
            "status": {
                "allocatable": { "cpu": "16", "memory": "64Gi", "pods": "110" },
                "capacity": { "cpu": "16", "memory": "64Gi", "pods": "110" },
            },
        }))
        .expect("node manifest");
        create_unless_exists(&nodes, &node).await;
        let spec = json!({ "clusterType": "dedicated", "nodeSelector": { POOL_LABEL: pool } });
        create_unless_exists(&pools, &compute_pool(&pool, spec)).await;
    }
    for index in 0..count {
        let name = format!("kwok-bench-p{index}");
        watch::wait_for(&nodes, &name, PHASE_LIMIT, |node: &Node| {
            node.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .await;
    }
}

async fn create_unless_exists<K>(api: &Api<K>, object: &K)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    match api.create(&PostParams::default(), object).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("cannot create {}: {e}", object.name_any()),
    }
}

/// A Job of `shape`'s pods on the node of its pool.
fn job_manifest(name: &str, shape: Shape) -> Job {
    let pods = i32::try_from(shape.pods_per_job()).expect("at most 65 pods");
    let mut job = super::job_manifest(name, false);
    let spec = job.spec.as_mut().expect("a Job spec");
    spec.parallelism = Some(pods);
    spec.completions = Some(pods);
    if let Some(template) = spec.template.spec.as_mut() {
        template.node_selector = Some([(POOL_LABEL.to_string(), pool_name(name))].into());
    }
    job
}

/// A DataJob of `shape` on a dedicated cluster of its pool.
fn datajob_manifest(name: &str, shape: Shape) -> DataJob {
    super::datajob_builder(name)
        .pool(&pool_name(name))
        .cluster_type("dedicated")
        .workers(i32::try_from(shape.workers).expect("at most 64 workers"))
        .build()
}
