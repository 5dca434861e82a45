//! Scale benchmark on the real local control plane: N DataJobs created at once, run, then
//! cancelled at once, with one operator process (release build) watching the namespace.
//! Prints a table per size: medians and p95 of per-job latencies (create -> running, cancel ->
//! cancelled), wall time and throughput of each phase, the operator's peak memory, and each
//! size's per-job cost as a ratio against the first (reference) size of the same invocation.
//!
//! Run with `hack/bench.sh` (brings a cluster up and down). Arguments:
//! `--sizes 100,1000` (the first is the reference), `--operator PATH`.
//!
//! The cluster client, CRDs, namespace, operator process and DataJob fixture are the tests'
//! (tests/support).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use datajob_operator::api::DataJob;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use support::operator::Launch;
use support::{Operator, TestNamespace, admin_client, cancel, datajob, install_crds};

/// Creations or patches in flight at once (the API server limits a client anyway).
const PARALLEL: usize = 32;
/// Longest a phase (all running, all cancelled) may take before the run is abandoned.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

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
    let client = admin_client().await;
    install_crds(&client).await;
    let mut runs = Vec::new();
    for (i, &size) in sizes.iter().enumerate() {
        eprintln!("run {}: {size} jobs", i + 1);
        runs.push(run(&client, &operator, size, i).await);
    }
    print_table(&runs);
}

/// One operator process (release build, 32 reconciles at once) watching `namespace`.
fn start_operator(binary: &str, namespace: &str) -> Operator {
    Operator::launch(Launch {
        binary: binary.into(),
        args: ["--namespace", namespace, "--concurrency", "32"]
            .map(String::from)
            .to_vec(),
        rust_log: "warn".to_string(),
        log_name: None,
    })
}

async fn run(client: &Client, operator: &str, size: usize, index: usize) -> Run {
    let namespace = TestNamespace::new(client, &format!("bench-{index}")).await;
    let ns = namespace.name();
    let process = start_operator(operator, ns);
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns);

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
            let job = datajob(&name)
                .nql("SELECT 1")
                .dataset_id(Some(1))
                .stats_enabled(false)
                .data_plane("dp-bench")
                .grace_period(1)
                .build();
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
            cancel(&jobs, &name, "benchmark").await;
            (name, at)
        }
    }))
    .buffer_unordered(PARALLEL)
    .collect::<Vec<_>>()
    .await;
    let cancel_requested: HashMap<String, Instant> = cancels.into_iter().collect();
    collect(&mut rx, &mut cancelled, "cancelled", size).await;
    let cancel_wall = cancel_start.elapsed();
    let peak_rss_kib = process.peak_rss_kib();
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
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
    drop(process);
    namespace.cleanup().await;

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
