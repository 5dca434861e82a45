//! The dedicated scenario: J jobs of W + 1 pods each (a DataJob's driver and W workers on a
//! dedicated cluster; a Job with parallelism W + 1), each job on its own fake node (a DataJob
//! through a ComputePool that selects the node, a Job through the same node selector), since a
//! dedicated executor keeps other jobs off its nodes. Two phases, like stream and cancel storm:
//! - start: the client creates the J objects; time until every pod of every job runs;
//! - stop: all J are stopped at once (Job `suspend`, DataJob `cancel`); time until every Job's
//!   pods are deleted / every DataJob is `cancelled` (which waits for its pods).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use super::support::{TestNamespace, compute_pool, datajob, watch};
use super::{
    Bench, Kind, Measure, PHASE_LIMIT, Phase, datajob_in, each, names, stop_all, watch_objects,
};
use datajob_operator::api::{ComputePool, DataJob};

/// The node label that gives each dedicated job a node of its own.
const POOL_LABEL: &str = "datajob.dev/bench-pool";

/// `(job name, when)` each time a job reaches what a channel reports.
type Arrivals = UnboundedReceiver<(String, Instant)>;

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
        let (mut running, mut deleted, pods_watch) = watch_job_pods(pods, kind, shape);
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
        let create = each(&names, |name| {
            let (jobs, datajobs) = (jobs.clone(), datajobs.clone());
            async move {
                let pool = pool_name(&name);
                let params = PostParams::default();
                let created = match kind {
                    Kind::Job => jobs
                        .create(&params, &job_manifest(&name, &pool, shape))
                        .await
                        .map(drop),
                    Kind::DataJob => datajobs
                        .create(&params, &datajob_manifest(&name, &pool, shape))
                        .await
                        .map(drop),
                };
                created.unwrap_or_else(|e| panic!("cannot create {kind:?} {name}: {e}"));
            }
        });
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

fn job_manifest(name: &str, pool: &str, shape: Shape) -> Job {
    let pods = shape.pods_per_job();
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": {
            "parallelism": pods,
            "completions": pods,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "nodeSelector": { POOL_LABEL: pool },
                    "containers": [{ "name": "main", "image": "registry.example/job:bench" }],
                },
            },
        },
    }))
    .expect("job manifest")
}

fn datajob_manifest(name: &str, pool: &str, shape: Shape) -> DataJob {
    datajob(name)
        .nql("SELECT 1")
        .stats_enabled(false)
        .data_plane("dp-bench")
        .grace_period(1)
        .pool(pool)
        .cluster_type("dedicated")
        .workers(i32::try_from(shape.workers).expect("at most 64 workers"))
        .build()
}

/// Watches the namespace's pods; sends `(job name, when)` on the first channel when all of a
/// job's pods run, on the second when all of them are deleted.
fn watch_job_pods(
    pods: Api<Pod>,
    kind: Kind,
    shape: Shape,
) -> (Arrivals, Arrivals, tokio::task::JoinHandle<()>) {
    let label = match kind {
        Kind::Job => "batch.kubernetes.io/job-name",
        Kind::DataJob => datajob_operator::executor::LABEL_JOB_NAME,
    };
    let want = shape.pods_per_job();
    let (running_tx, running_rx) = unbounded_channel();
    let (deleted_tx, deleted_rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        let mut running: HashMap<String, HashSet<String>> = HashMap::new();
        let mut deleted: HashMap<String, HashSet<String>> = HashMap::new();
        let mut stream = watcher(pods, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            let (pod, seen, tx) = match event {
                watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)
                    if pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") =>
                {
                    (pod, &mut running, &running_tx)
                }
                watcher::Event::Delete(pod) => (pod, &mut deleted, &deleted_tx),
                _ => continue,
            };
            let Some(job) = pod.labels().get(label).cloned() else {
                continue;
            };
            let pods = seen.entry(job.clone()).or_default();
            if pods.insert(pod.name_any()) && pods.len() == want {
                let _ = tx.send((job, Instant::now()));
            }
        }
    });
    (running_rx, deleted_rx, task)
}
