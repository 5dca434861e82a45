//! Scale benchmark on the real local control plane: N DataJobs created at once, run, then
//! cancelled at once, with one operator process (release build) watching the namespace.
//! Prints a table per size: medians and p95 of per-job latencies (create -> running, cancel ->
//! cancelled), wall time and throughput of each phase, the operator's peak memory, and each
//! size's per-job cost as a ratio against the first (reference) size of the same invocation.
//!
//! Run with `hack/bench.sh` (brings a cluster up and down). Arguments:
//! `--sizes 100,1000` (the first is the reference), `--operator PATH`.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use datajob_operator::api::DataJob;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;

/// Creations or patches in flight at once (the API server limits a client anyway).
const PARALLEL: usize = 32;
/// Longest a phase (all running, all cancelled) may take before the run is abandoned.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

/// The operator process, killed when the run ends, also on a panic.
struct OperatorProcess(Child);

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    jobs: usize,
    create_wall: Duration,
    to_running: Vec<Duration>,
    running_wall: Duration,
    to_cancelled: Vec<Duration>,
    cancel_wall: Duration,
    peak_rss_kib: u64,
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = arg("--sizes")
        .unwrap_or_else(|| "100,1000".to_string())
        .split(',')
        .map(|s| s.trim().parse().expect("--sizes takes numbers"))
        .collect();
    let operator = arg("--operator").unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/datajob-operator"
        )
        .to_string()
    });
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at a running cluster (hack/bench.sh starts one)");
    install_crds(&client).await;
    let mut runs = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        eprintln!("run {}: {size} jobs", i + 1);
        runs.push(run(&client, &operator, size, i).await);
    }
    print_table(&runs);
}

async fn install_crds(client: &Client) {
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client.clone());
    for crd in [DataJob::crd(), datajob_operator::api::ComputePool::crd()] {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("datajob-bench").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
    }
    for name in ["datajobs.datajob.dev", "computepools.datajob.dev"] {
        let established = |crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition| {
            crd.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
        };
        while !crds.get(name).await.is_ok_and(|crd| established(&crd)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn start_operator(path: &str, namespace: &str) -> Child {
    Command::new(path)
        .args([
            "--namespace",
            namespace,
            "--http-addr",
            "127.0.0.1:0",
            "--concurrency",
            "32",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start the operator {path} (cargo build --release first): {e}")
        })
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn run(client: &Client, operator: &str, size: usize, index: usize) -> Run {
    let ns = format!("bench-{index}-{}", std::process::id());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": ns } })).expect("ns"),
        )
        .await
        .expect("create namespace");
    // The namespace's default ServiceAccount must exist before pods can be created.
    let sas: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &ns);
    while sas.get_opt("default").await.ok().flatten().is_none() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let child = OperatorProcess(start_operator(operator, &ns));
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), &ns);

    // Watch every job's state and note when each first reaches running and cancelled.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, Instant)>();
    let watch = tokio::spawn({
        let jobs = jobs.clone();
        async move {
            let mut stream = watcher(jobs, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Ok(Some(job)) = stream.try_next().await {
                if let Some(state) = job.status.as_ref().and_then(|s| s.state) {
                    let _ = tx.send((job.name_any(), state.as_str().to_string(), Instant::now()));
                }
            }
        }
    });
    let names: Vec<String> = (0..size).map(|i| format!("job-{i:05}")).collect();
    let mut created: HashMap<String, Instant> = HashMap::new();
    let start = Instant::now();
    let creations = futures::stream::iter(names.iter().cloned().map(|name| {
        let jobs = jobs.clone();
        async move {
            let job: DataJob = serde_json::from_value(json!({
                "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
                "metadata": { "name": name },
                "spec": {
                    "type": "materialize-view",
                    "input": { "nql": "SELECT 1", "datasetId": 1 },
                    "dataPlane": "dp-bench",
                    "executor": { "terminationGracePeriodSeconds": 1 },
                },
            }))
            .expect("job");
            let at = Instant::now();
            jobs.create(&PostParams::default(), &job)
                .await
                .expect("create job");
            (name, at)
        }
    }))
    .buffer_unordered(PARALLEL)
    .collect::<Vec<_>>()
    .await;
    let create_wall = start.elapsed();
    created.extend(creations);

    let mut running: HashMap<String, Instant> = HashMap::new();
    let mut cancelled: HashMap<String, Instant> = HashMap::new();
    collect(&mut rx, &mut running, "running", size).await;
    let running_wall = start.elapsed();

    let cancel_start = Instant::now();
    let cancels = futures::stream::iter(names.iter().cloned().map(|name| {
        let jobs = jobs.clone();
        async move {
            let at = Instant::now();
            jobs.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({ "spec": { "cancel": true } })),
            )
            .await
            .expect("cancel job");
            (name, at)
        }
    }))
    .buffer_unordered(PARALLEL)
    .collect::<Vec<_>>()
    .await;
    let cancel_requested: HashMap<String, Instant> = cancels.into_iter().collect();
    collect(&mut rx, &mut cancelled, "cancelled", size).await;
    let cancel_wall = cancel_start.elapsed();
    let peak_rss_kib = peak_rss_kib(child.0.id());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let left = pods
        .list(&ListParams::default())
        .await
        .expect("list pods")
        .items
        .len();
    assert_eq!(
        left, 0,
        "{left} executor pods left after cancelling every job"
    );

    watch.abort();
    drop(child);
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;

    let to_running = names.iter().map(|n| running[n] - created[n]).collect();
    let to_cancelled = names
        .iter()
        .map(|n| cancelled[n] - cancel_requested[n])
        .collect();
    Run {
        jobs: size,
        create_wall,
        to_running,
        running_wall,
        to_cancelled,
        cancel_wall,
        peak_rss_kib,
    }
}

/// Records when each job first reaches `state`, until `size` jobs have.
async fn collect(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String, Instant)>,
    seen: &mut HashMap<String, Instant>,
    state: &str,
    size: usize,
) {
    let deadline = tokio::time::Instant::now() + PHASE_LIMIT;
    while seen.len() < size {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((name, now, at))) if now == state => {
                seen.entry(name).or_insert(at);
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("the watch of the jobs ended"),
            Err(_) => panic!(
                "only {} of {size} jobs reached {state} within {PHASE_LIMIT:?}",
                seen.len()
            ),
        }
    }
}

fn percentile(values: &[Duration], p: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

fn print_table(runs: &[Run]) {
    let Some(reference) = runs.first() else {
        return;
    };
    let per_job = |r: &Run| (r.running_wall + r.cancel_wall).as_secs_f64() / r.jobs as f64;
    println!();
    println!(
        "| jobs (N) | create wall s | all running s | running p50 ms | running p95 ms | jobs/s to running | all cancelled s | cancel p50 ms | cancel p95 ms | operator peak RSS MiB | per-job cost vs N={} |",
        reference.jobs
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for r in runs {
        println!(
            "| {} | {:.1} | {:.1} | {} | {} | {:.1} | {:.1} | {} | {} | {:.1} | {:.2} |",
            r.jobs,
            r.create_wall.as_secs_f64(),
            r.running_wall.as_secs_f64(),
            ms(percentile(&r.to_running, 0.5)),
            ms(percentile(&r.to_running, 0.95)),
            r.jobs as f64 / r.running_wall.as_secs_f64(),
            r.cancel_wall.as_secs_f64(),
            ms(percentile(&r.to_cancelled, 0.5)),
            ms(percentile(&r.to_cancelled, 0.95)),
            r.peak_rss_kib as f64 / 1024.0,
            per_job(r) / per_job(reference),
        );
    }
}
