//! Side by side on one cluster: batch/v1 Jobs (kube-controller-manager's Job controller)
//! against shared DataJobs (this operator, release build), one-pod jobs, grace period 1 s.
//! Scenarios, each with N objects:
//! - stream: the client creates N objects as fast as it can (32 requests in flight); time
//!   until every one runs (Job: `status.ready` = 1; DataJob: `running`), per-object
//!   create -> running p50/p99, and the client's own create time;
//! - cancel storm: the N objects of the stream are stopped at once (Job `suspend`, DataJob
//!   `cancel`); time until no pod is left (Job) / every DataJob is `cancelled`;
//! - backlog: N objects exist before the controller has work (Jobs created suspended and then
//!   resumed at once; DataJobs created while the operator is stopped, which then starts);
//! - complete: then the backlog's pods all exit 0 (kwok's `sim.datajob.dev/exit-code`); time
//!   until every Job is `Complete` / every DataJob `completed`. Its writes plus the backlog's
//!   are the lifecycle create -> running -> completed;
//! - dedicated start and stop: 20 jobs of 33 pods each (`--dedicated 20x32`; see
//!   [`dedicated`]);
//! - request cost: what one write of each kind costs the API server (`--request-cost ROUNDS`,
//!   first, while the cluster is quiet; see [`request_cost`]).
//!
//! For each: the controller's API writes per object by verb and resource (from the API
//! server's audit log, `hack/cluster.sh --audit`: user agent `datajob-operator/...` against
//! kube-controller-manager's `.../job-controller`), the controller's CPU seconds (the
//! operator's process; for Jobs the whole kube-controller-manager), the operator's peak RSS,
//! and the ratio DataJob/Job. Medians over `--runs` runs.
//!
//! Run with `hack/bench.sh --side-by-side [--sizes 300,1000] [--runs 3] [--dedicated 20x32]
//! [--request-cost 10]`; `--sizes 0` runs only the dedicated scenario, `--dedicated 0` leaves it
//! out.

// Shared with benches/scale.rs, which uses all of it.
#[allow(dead_code)]
#[path = "scale/audit.rs"]
mod audit;
#[path = "scale/cli.rs"]
mod cli;
#[path = "versus/dedicated.rs"]
mod dedicated;
#[path = "versus/request_cost.rs"]
mod request_cost;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use datajob_operator::api::DataJob;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};

use audit::{AuditLog, Writes};
use support::operator::Launch;
use support::{Operator, TestNamespace, admin_client, cancel, datajob, install_crds};

/// Requests in flight at once.
const PARALLEL: usize = 32;
/// Longest a phase may take before the run is abandoned.
const PHASE_LIMIT: Duration = Duration::from_secs(900);
/// The operator's name in the audit log; the Job controller's.
const OPERATOR: &str = audit::OPERATOR;
const JOB_CONTROLLER: &str = "job-controller";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Job,
    DataJob,
}

impl Kind {
    /// The label that names a pod's object.
    fn pod_label(self) -> &'static str {
        match self {
            Kind::Job => "batch.kubernetes.io/job-name",
            Kind::DataJob => datajob_operator::executor::LABEL_JOB_NAME,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Stream,
    CancelStorm,
    Backlog,
    /// The backlog's objects, all running, finish: every pod exits 0.
    Complete,
    /// Dedicated jobs of many pods: N is the count of jobs ([`dedicated`]).
    DedicatedStart,
    DedicatedStop,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::Stream => "stream",
            Scenario::CancelStorm => "cancel storm",
            Scenario::Backlog => "backlog",
            Scenario::Complete => "complete",
            Scenario::DedicatedStart => "dedicated start",
            Scenario::DedicatedStop => "dedicated stop",
        }
    }
}

/// One scenario of one run for one kind.
#[derive(Clone, Debug, Default)]
struct Measure {
    /// The client's own time to create (or stop, or resume) the N objects.
    client: Duration,
    /// Until every object reached the end of the phase.
    wall: Duration,
    per_object: Vec<Duration>,
    writes: Writes,
    cpu_seconds: f64,
    /// CPU seconds kube-apiserver and etcd used meanwhile (for everyone's requests).
    control_plane_cpu: f64,
    peak_rss_kib: u64,
}

#[tokio::main]
async fn main() {
    let mut sizes = cli::sizes("300,1000");
    sizes.retain(|&n| n > 0);
    let runs: usize = cli::arg("--runs").map_or(3, |r| r.parse().expect("--runs takes a number"));
    let operator = cli::operator();
    // `--only datajob` (or `job`) runs one side, for profiling; the ratios then read n/a.
    let kinds = match cli::arg("--only").as_deref() {
        None => vec![Kind::Job, Kind::DataJob],
        Some("job") => vec![Kind::Job],
        Some("datajob") => vec![Kind::DataJob],
        Some(other) => panic!("--only takes job or datajob, not {other}"),
    };
    let audit = AuditLog::from_env();
    assert!(
        audit.mark() > 0,
        "no audit log: start the cluster with `hack/cluster.sh --audit` (hack/bench.sh does)"
    );
    let client = admin_client().await;
    install_crds(&client).await;
    // As `helm install` does on a cluster that serves MutatingAdmissionPolicy.
    support::helm::apply_finalizer_policy(&client, "bench", &[]).await;
    let bench = Bench {
        client,
        audit,
        operator,
        controller_manager: recorded_pid("kube-controller-manager"),
        control_plane: ["kube-apiserver", "etcd"]
            .iter()
            .map(|name| recorded_pid(name).unwrap_or_else(|| panic!("no recorded pid of {name}")))
            .collect(),
    };
    // First, while the cluster is quiet: what one write costs ([`request_cost`]).
    let cost_rounds: usize = cli::arg("--request-cost").map_or(0, |r| {
        r.parse().expect("--request-cost takes a number of rounds")
    });
    if cost_rounds > 0 {
        bench.request_cost(cost_rounds).await;
    }
    let mut results: BTreeMap<(usize, Scenario, Kind), Vec<Measure>> = BTreeMap::new();
    for &size in &sizes {
        for run in 1..=runs {
            for &kind in &kinds {
                eprintln!("N={size} run {run}/{runs}: {kind:?} stream and cancel storm");
                let (stream, storm) = bench.stream_and_cancel(kind, size).await;
                results
                    .entry((size, Scenario::Stream, kind))
                    .or_default()
                    .push(stream);
                results
                    .entry((size, Scenario::CancelStorm, kind))
                    .or_default()
                    .push(storm);
                eprintln!("N={size} run {run}/{runs}: {kind:?} backlog and complete");
                let (backlog, complete) = bench.backlog_and_complete(kind, size).await;
                results
                    .entry((size, Scenario::Backlog, kind))
                    .or_default()
                    .push(backlog);
                results
                    .entry((size, Scenario::Complete, kind))
                    .or_default()
                    .push(complete);
            }
        }
    }
    if let Some(shape) = dedicated::Shape::from_args() {
        for run in 1..=runs {
            for &kind in &kinds {
                eprintln!(
                    "dedicated {}x{} run {run}/{runs}: {kind:?}",
                    shape.jobs, shape.workers
                );
                let (start, stop) = bench.dedicated(kind, shape).await;
                for (scenario, measure) in [
                    (Scenario::DedicatedStart, start),
                    (Scenario::DedicatedStop, stop),
                ] {
                    results
                        .entry((shape.jobs, scenario, kind))
                        .or_default()
                        .push(measure);
                }
            }
        }
    }
    if results.is_empty() {
        return;
    }
    print_tables(&results, runs);
    let csv = cli::arg("--csv").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench/versus.csv"),
        PathBuf::from,
    );
    write_csv(&results, &csv);
}

/// Writes the medians (one row per N, scenario and controller) as CSV for
/// hack/plot-bench.sh.
fn write_csv(results: &BTreeMap<(usize, Scenario, Kind), Vec<Measure>>, path: &std::path::Path) {
    let mut out = String::from(
        "n,scenario,kind,runs,client_s,wall_s,p50_ms,p99_ms,writes,conflicts,cpu_s,rss_mib,control_plane_cpu_s\n",
    );
    for ((size, scenario, kind), measures) in results {
        let actor = match kind {
            Kind::Job => JOB_CONTROLLER,
            Kind::DataJob => OPERATOR,
        };
        let r = row(measures, actor, *size);
        out.push_str(&format!(
            "{size},{},{kind:?},{},{:.3},{:.3},{:.1},{:.1},{:.3},{:.3},{:.2},{:.1},{:.2}\n",
            scenario.name(),
            measures.len(),
            r.client_s,
            r.wall_s,
            r.p50_ms,
            r.p99_ms,
            r.writes,
            r.conflicts,
            r.cpu_s,
            r.rss_mib,
            r.control_plane_cpu_s
        ));
    }
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, out));
    match written {
        Ok(()) => eprintln!("medians written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}

struct Bench {
    client: Client,
    audit: AuditLog,
    operator: String,
    controller_manager: Option<u32>,
    /// kube-apiserver's and etcd's pids.
    control_plane: Vec<u32>,
}

/// The pid hack/cluster.sh recorded for the cluster's component `name` (beside the audit log).
fn recorded_pid(name: &str) -> Option<u32> {
    let log = PathBuf::from(std::env::var_os("DATAJOB_AUDIT_LOG")?);
    let pid = log.parent()?.join("pids").join(format!("{name}.pid"));
    std::fs::read_to_string(pid).ok()?.trim().parse().ok()
}

/// CPU seconds (user + system) a process used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn job_manifest(name: &str, suspend: bool) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": {
            "suspend": suspend,
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{ "name": "main", "image": "registry.example/job:bench" }],
                },
            },
        },
    }))
    .expect("job manifest")
}

/// A one-pod DataJob like [`job_manifest`]'s Job (a builder, for the dedicated scenario).
fn datajob_builder(name: &str) -> support::DataJobBuilder {
    datajob(name)
        .nql("SELECT 1")
        .stats_enabled(false)
        .data_plane("dp-bench")
        .grace_period(1)
}

fn datajob_manifest(name: &str) -> DataJob {
    datajob_builder(name).build()
}

/// Runs `f` on every name, `PARALLEL` at once; returns when each call started.
async fn each<F, Fut>(names: &[String], f: F) -> HashMap<String, Instant>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    futures::stream::iter(names.iter().cloned().map(|name| {
        let call = f(name.clone());
        async move {
            let at = Instant::now();
            call.await;
            (name, at)
        }
    }))
    .buffer_unordered(PARALLEL)
    .collect()
    .await
}

/// Sends `(name, when)` each time `reached` holds for an object of `api`.
fn watch_objects<K>(
    api: Api<K>,
    reached: impl Fn(&K) -> bool + Send + 'static,
) -> (
    UnboundedReceiver<(String, Instant)>,
    tokio::task::JoinHandle<()>,
)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let (tx, rx) = unbounded_channel();
    let task = tokio::spawn(async move {
        let mut stream = watcher(api, watcher::Config::default()).boxed();
        while let Ok(Some(event)) = stream.try_next().await {
            if let watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) = event
                && reached(&obj)
            {
                let _ = tx.send((obj.name_any(), Instant::now()));
            }
        }
    });
    (rx, task)
}

/// `(object name, when)` each time an object reaches what a channel reports.
type Arrivals = UnboundedReceiver<(String, Instant)>;

/// Watches the namespace's pods of `kind`; sends `(object name, when)` on the first channel
/// when `per_object` pods of an object run, on the second when that many are deleted.
fn watch_pods(
    pods: Api<Pod>,
    kind: Kind,
    per_object: usize,
) -> (Arrivals, Arrivals, tokio::task::JoinHandle<()>) {
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
            let Some(object) = pod.labels().get(kind.pod_label()).cloned() else {
                continue;
            };
            let pods = seen.entry(object.clone()).or_default();
            if pods.insert(pod.name_any()) && pods.len() == per_object {
                let _ = tx.send((object, Instant::now()));
            }
        }
    });
    (running_rx, deleted_rx, task)
}

/// When each of `size` names first arrived on `rx`.
async fn collect(
    rx: &mut UnboundedReceiver<(String, Instant)>,
    size: usize,
    what: &str,
) -> HashMap<String, Instant> {
    let mut seen = HashMap::new();
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    while seen.len() < size {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, at))) => {
                seen.entry(name).or_insert(at);
            }
            Ok(None) => panic!("the watch ended"),
            Err(_) => panic!("only {} of {size} reached {what} in time", seen.len()),
        }
    }
    seen
}

/// Sends `(name, when)` when an object runs: a Job has a ready pod, a DataJob is `running`.
fn watch_running(
    kind: Kind,
    jobs: &Api<Job>,
    datajobs: &Api<DataJob>,
) -> (
    UnboundedReceiver<(String, Instant)>,
    tokio::task::JoinHandle<()>,
) {
    match kind {
        Kind::Job => watch_objects(jobs.clone(), job_running),
        Kind::DataJob => watch_objects(datajobs.clone(), datajob_in("running")),
    }
}

fn job_running(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.ready)
        .is_some_and(|r| r >= 1)
}

fn job_complete(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| c.type_ == "Complete" && c.status == "True")
        })
}

fn datajob_in(state: &'static str) -> impl Fn(&DataJob) -> bool {
    move |job| {
        job.status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(|s| s.as_str() == state)
    }
}

fn names(size: usize) -> Vec<String> {
    (0..size).map(|i| format!("job-{i:05}")).collect()
}

fn latencies(
    names: &[String],
    from: &HashMap<String, Instant>,
    to: &HashMap<String, Instant>,
) -> Vec<Duration> {
    names
        .iter()
        .map(|n| to[n].saturating_duration_since(from[n]))
        .collect()
}

/// What a measured phase is about.
struct Phase<'a> {
    kind: Kind,
    operator: Option<&'a Operator>,
    namespace: &'a str,
    names: &'a [String],
}

impl Bench {
    /// Runs `requests` (which returns when each object's request started), then waits until
    /// every object arrived on `reached`; measures the controller meanwhile.
    async fn measure(
        &self,
        phase: &Phase<'_>,
        reached: &mut UnboundedReceiver<(String, Instant)>,
        requests: impl Future<Output = HashMap<String, Instant>>,
    ) -> Measure {
        let mark = self.audit.mark();
        let cpu = self.controller_cpu(phase.kind, phase.operator);
        let control_plane = self.control_plane_cpu();
        let start = Instant::now();
        let requested = requests.await;
        let client = start.elapsed();
        let reached = collect(reached, phase.names.len(), "the end of the phase").await;
        let wall = start.elapsed();
        Measure {
            client,
            wall,
            per_object: latencies(phase.names, &requested, &reached),
            writes: self.audit.writes_since(mark, phase.namespace).await,
            cpu_seconds: self.controller_cpu(phase.kind, phase.operator) - cpu,
            control_plane_cpu: self.control_plane_cpu() - control_plane,
            peak_rss_kib: phase.operator.map_or(0, Operator::peak_rss_kib),
        }
    }

    /// CPU seconds kube-apiserver and etcd used so far.
    fn control_plane_cpu(&self) -> f64 {
        self.control_plane.iter().map(|&pid| cpu_seconds(pid)).sum()
    }

    /// What kube-apiserver and etcd use per second (CPU seconds) while no request is sent,
    /// over 10 s.
    async fn idle_control_plane_cpu(&self) -> f64 {
        const WINDOW: Duration = Duration::from_secs(10);
        let before = self.control_plane_cpu();
        tokio::time::sleep(WINDOW).await;
        (self.control_plane_cpu() - before) / WINDOW.as_secs_f64()
    }

    fn start_operator(&self, namespace: &str) -> Operator {
        // DATAJOB_BENCH_CONCURRENCY=<n> tries another --concurrency (default 32).
        let concurrency =
            std::env::var("DATAJOB_BENCH_CONCURRENCY").unwrap_or_else(|_| "32".to_string());
        Operator::launch(Launch {
            binary: self.operator.clone().into(),
            args: ["--namespace", namespace, "--concurrency", &concurrency]
                .map(String::from)
                .to_vec(),
            // DATAJOB_BENCH_LOG=<filter> keeps the operator's log (target/tmp/e2e-logs).
            rust_log: std::env::var("DATAJOB_BENCH_LOG").unwrap_or_else(|_| "warn".to_string()),
            log_name: std::env::var_os("DATAJOB_BENCH_LOG").map(|_| namespace.to_string()),
        })
    }

    /// CPU seconds of the controller of `kind` so far.
    fn controller_cpu(&self, kind: Kind, operator: Option<&Operator>) -> f64 {
        match kind {
            Kind::Job => self.controller_manager.map_or(0.0, cpu_seconds),
            Kind::DataJob => operator.map_or(0.0, |o| cpu_seconds(o.pid())),
        }
    }

    /// Deletes the scenario's namespace and waits until it is gone (the operator, if any, still
    /// running to release the deleted DataJobs), so no scenario shares the control plane with
    /// the previous one's garbage collection.
    async fn clean_up(&self, namespace: TestNamespace) {
        let name = namespace.name().to_string();
        namespace.cleanup().await;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        support::watch::wait_deleted(&namespaces, &name, PHASE_LIMIT).await;
    }

    async fn stream_and_cancel(&self, kind: Kind, size: usize) -> (Measure, Measure) {
        let namespace = TestNamespace::new(&self.client, "versus").await;
        let ns = namespace.name().to_string();
        let operator = (kind == Kind::DataJob).then(|| self.start_operator(&ns));
        let names = names(size);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let datajobs: Api<DataJob> = Api::namespaced(self.client.clone(), &ns);
        let (mut running, running_watch) = watch_running(kind, &jobs, &datajobs);
        let (mut stopped, stopped_watch) = match kind {
            Kind::Job => {
                let pods = Api::namespaced(self.client.clone(), &ns);
                let (_, deleted, task) = watch_pods(pods, kind, 1);
                (deleted, task)
            }
            Kind::DataJob => watch_objects(datajobs.clone(), datajob_in("cancelled")),
        };
        let phase = Phase {
            kind,
            operator: operator.as_ref(),
            namespace: &ns,
            names: &names,
        };
        let stream = self
            .measure(
                &phase,
                &mut running,
                create_all(
                    kind,
                    &jobs,
                    &datajobs,
                    &names,
                    |n| job_manifest(n, false),
                    datajob_manifest,
                ),
            )
            .await;
        let storm = self
            .measure(
                &phase,
                &mut stopped,
                stop_all(kind, &jobs, &datajobs, &names),
            )
            .await;
        running_watch.abort();
        stopped_watch.abort();
        self.clean_up(namespace).await;
        drop(operator);
        (stream, storm)
    }

    async fn backlog_and_complete(&self, kind: Kind, size: usize) -> (Measure, Measure) {
        let namespace = TestNamespace::new(&self.client, "versus").await;
        let ns = namespace.name().to_string();
        let names = names(size);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
        let datajobs: Api<DataJob> = Api::namespaced(self.client.clone(), &ns);
        let (mut running, running_watch) = watch_running(kind, &jobs, &datajobs);
        create_all(
            kind,
            &jobs,
            &datajobs,
            &names,
            |n| job_manifest(n, true),
            datajob_manifest,
        )
        .await;
        // Let the Job controller see the suspended Jobs (it records them Suspended).
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mark = self.audit.mark();
        let cpu_before = self.controller_cpu(kind, None);
        let control_plane = self.control_plane_cpu();
        let start = Instant::now();
        let (operator, client) = match kind {
            Kind::Job => {
                each(&names, |name| {
                    let jobs = jobs.clone();
                    async move { suspend(&jobs, &name, false).await }
                })
                .await;
                (None, start.elapsed())
            }
            Kind::DataJob => (Some(self.start_operator(&ns)), Duration::ZERO),
        };
        let reached = collect(&mut running, size, "running").await;
        let wall = start.elapsed();
        let cpu = match kind {
            Kind::Job => self.controller_cpu(kind, None) - cpu_before,
            Kind::DataJob => self.controller_cpu(kind, operator.as_ref()),
        };
        let starts: HashMap<String, Instant> = names.iter().map(|n| (n.clone(), start)).collect();
        let measure = Measure {
            client,
            wall,
            per_object: latencies(&names, &starts, &reached),
            writes: self.audit.writes_since(mark, &ns).await,
            cpu_seconds: cpu,
            control_plane_cpu: self.control_plane_cpu() - control_plane,
            peak_rss_kib: operator.as_ref().map_or(0, Operator::peak_rss_kib),
        };
        running_watch.abort();
        let phase = Phase {
            kind,
            operator: operator.as_ref(),
            namespace: &ns,
            names: &names,
        };
        let complete = self.complete(&phase, &jobs, &datajobs).await;
        self.clean_up(namespace).await;
        drop(operator);
        (measure, complete)
    }

    /// Makes the pod of every object (all running) exit 0, as kwok does for a pod annotated
    /// `sim.datajob.dev/exit-code` (the DataJob's driver with a result); until every Job is
    /// `Complete` / every DataJob `completed`.
    async fn complete(
        &self,
        phase: &Phase<'_>,
        jobs: &Api<Job>,
        datajobs: &Api<DataJob>,
    ) -> Measure {
        let (mut done, done_watch) = match phase.kind {
            Kind::Job => watch_objects(jobs.clone(), job_complete),
            Kind::DataJob => watch_objects(datajobs.clone(), datajob_in("completed")),
        };
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), phase.namespace);
        let label = phase.kind.pod_label();
        let pod_of: HashMap<String, String> = pods
            .list(&Default::default())
            .await
            .expect("list the pods")
            .items
            .iter()
            .filter_map(|pod| Some((pod.labels().get(label)?.clone(), pod.name_any())))
            .collect();
        let exits = each(phase.names, |name| {
            let pods = pods.clone();
            let pod = pod_of
                .get(&name)
                .unwrap_or_else(|| panic!("no pod of {name}"))
                .clone();
            async move {
                support::exit_pod(&pods, &pod, 0, support::MATERIALIZE_RESULT).await;
            }
        });
        let measure = self.measure(phase, &mut done, exits).await;
        done_watch.abort();
        measure
    }
}

/// Creates the N objects from `job` / `datajob` (manifests by name); returns when each create
/// started.
async fn create_all(
    kind: Kind,
    jobs: &Api<Job>,
    datajobs: &Api<DataJob>,
    names: &[String],
    job: impl Fn(&str) -> Job,
    datajob: impl Fn(&str) -> DataJob,
) -> HashMap<String, Instant> {
    let (job, datajob) = (&job, &datajob);
    each(names, |name| async move {
        let params = PostParams::default();
        let created = match kind {
            Kind::Job => jobs.create(&params, &job(&name)).await.map(drop),
            Kind::DataJob => datajobs.create(&params, &datajob(&name)).await.map(drop),
        };
        created.unwrap_or_else(|e| panic!("cannot create {kind:?} {name}: {e}"));
    })
    .await
}

/// Stops the N objects (Job `suspend`, DataJob `cancel`); returns when each request started.
async fn stop_all(
    kind: Kind,
    jobs: &Api<Job>,
    datajobs: &Api<DataJob>,
    names: &[String],
) -> HashMap<String, Instant> {
    each(names, |name| async move {
        match kind {
            Kind::Job => suspend(jobs, &name, true).await,
            Kind::DataJob => cancel(datajobs, &name, "benchmark").await,
        }
    })
    .await
}

async fn suspend(jobs: &Api<Job>, name: &str, suspend: bool) {
    let patch = json!({ "spec": { "suspend": suspend } });
    jobs.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap_or_else(|e| panic!("cannot patch Job {name}: {e}"));
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The medians over runs of what a table row shows.
struct Row {
    client_s: f64,
    wall_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    writes: f64,
    conflicts: f64,
    cpu_s: f64,
    control_plane_cpu_s: f64,
    rss_mib: f64,
}

fn row(measures: &[Measure], actor: &str, size: usize) -> Row {
    let m = |f: &dyn Fn(&Measure) -> f64| median(measures.iter().map(f).collect());
    let n = size as f64;
    Row {
        client_s: m(&|x| x.client.as_secs_f64()),
        wall_s: m(&|x| x.wall.as_secs_f64()),
        p50_ms: m(&|x| percentile(&x.per_object, 0.5).as_secs_f64() * 1000.0),
        p99_ms: m(&|x| percentile(&x.per_object, 0.99).as_secs_f64() * 1000.0),
        writes: m(&|x| x.writes.total(actor) as f64 / n),
        conflicts: m(&|x| x.writes.conflicts(actor) as f64 / n),
        cpu_s: m(&|x| x.cpu_seconds),
        control_plane_cpu_s: m(&|x| x.control_plane_cpu),
        rss_mib: m(&|x| x.peak_rss_kib as f64 / 1024.0),
    }
}

fn print_tables(results: &BTreeMap<(usize, Scenario, Kind), Vec<Measure>>, runs: usize) {
    println!();
    println!(
        "Medians of {runs} run(s). Ratio = DataJob / Job (below 1: the operator is faster or writes less)."
    );
    println!();
    println!(
        "| N | scenario | client s Job / DataJob | all done s Job / DataJob (ratio) | p50 ms Job / DataJob | p99 ms Job / DataJob (ratio) | controller writes/object Job / DataJob (ratio) | 409s/object Job / DataJob | controller CPU s Job (whole KCM) / DataJob | API server + etcd CPU s Job / DataJob (ratio) | operator peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut breakdowns = Vec::new();
    let cells: BTreeSet<(usize, Scenario)> = results.keys().map(|&(n, s, _)| (n, s)).collect();
    let empty = Vec::new();
    for (size, scenario) in &cells {
        // A side left out (`--only`) reads NaN.
        let measures = results
            .get(&(*size, *scenario, Kind::Job))
            .unwrap_or(&empty);
        let ours = results
            .get(&(*size, *scenario, Kind::DataJob))
            .unwrap_or(&empty);
        let j = row(measures, JOB_CONTROLLER, *size);
        let d = row(ours, OPERATOR, *size);
        println!(
            "| {size} | {} | {:.1} / {:.1} | {:.1} / {:.1} ({:.2}) | {:.0} / {:.0} | {:.0} / {:.0} ({:.2}) | {:.2} / {:.2} ({:.2}) | {:.2} / {:.2} | {:.1} / {:.1} | {:.1} / {:.1} ({:.2}) | {:.1} |",
            scenario.name(),
            j.client_s,
            d.client_s,
            j.wall_s,
            d.wall_s,
            d.wall_s / j.wall_s,
            j.p50_ms,
            d.p50_ms,
            j.p99_ms,
            d.p99_ms,
            d.p99_ms / j.p99_ms,
            j.writes,
            d.writes,
            d.writes / j.writes,
            j.conflicts,
            d.conflicts,
            j.cpu_s,
            d.cpu_s,
            j.control_plane_cpu_s,
            d.control_plane_cpu_s,
            d.control_plane_cpu_s / j.control_plane_cpu_s,
            d.rss_mib,
        );
        // The first run's writes by verb and resource.
        let mut lines = Vec::new();
        if let Some(job_run) = measures.first() {
            lines.extend(job_run.writes.breakdown(&[JOB_CONTROLLER], *size));
        }
        if let Some(our_run) = ours.first() {
            lines.extend(our_run.writes.breakdown(&[OPERATOR], *size));
        }
        breakdowns.push((*size, scenario.name(), lines));
    }
    println!();
    println!("Controller writes per object by verb and resource (first run):");
    for (size, scenario, lines) in breakdowns {
        println!();
        println!("N={size} {scenario}:");
        for line in lines {
            println!("  {line}");
        }
    }
}
