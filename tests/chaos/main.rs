//! The chaos run (`hack/chaos.sh --jobs N --kills K --seed S`): on a fresh cluster, N DataJobs
//! of both cluster types meet random cancels and random driver exits, while the operator is
//! SIGKILLed and restarted K times at random moments, the API server is restarted once, etcd is
//! paused once, and for a while two replicas run with the leader frozen (SIGSTOP) past its
//! lease and then resumed. A recorder watches every DataJob and pod; at the end ONE line:
//!
//! `chaos: jobs=N kills=K leaked_pods=0 stuck_jobs=0 illegal_transitions=0 two_executors=0
//! cancelled_with_pods=0 stale_leader_writes=0`
//!
//! and the exit code is 1 unless every number after `kills` is 0. Details go to stderr.
//!
//! A test target without the libtest harness (`test = false`: `cargo test` runs it only when
//! named), so it is built in the test profile with the dev-dependencies, gets the operator
//! binary from Cargo (`CARGO_BIN_EXE_datajob-operator`), and ships in no image.
//!
//! Arguments: `--jobs N --kills K --seed S --state DIR --up CMD [--namespace NS]`; DIR is the
//! cluster's state folder (pids, audit log), CMD the shell command that starts the cluster's
//! missing components (hack/chaos.sh passes both).

mod audit;
mod processes;
mod recorder;
#[path = "../support/mod.rs"]
mod support;
mod table;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datajob_operator::api::{ComputePool, DataJob};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;

use processes::{Operators, Replica};
use recorder::Shared;

const LEASE: &str = "chaos-operator";
const LEASE_SECONDS: u64 = 6;
const POOL: &str = "chaos-limited";
const MATERIALIZE_RESULT: &str = r#"{"datasetId": 6404, "snapshotId": 739881302291276700, "recalculationId": "abf9a2ec-426b-4751-bd16-fcb435061925"}"#;
const FORECAST_RESULT: &str = r#"{"forecast": {"horizon": 7, "values": [1, 2, 3]}}"#;

/// A small, seedable generator (SplitMix64): the run is reproducible from its seed, as far as
/// the cluster's own timing allows.
#[derive(Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

struct Args {
    jobs: usize,
    kills: usize,
    seed: u64,
    state: PathBuf,
    up: String,
    namespace: String,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().collect();
    let get = |name: &str| {
        argv.iter()
            .position(|a| a == name)
            .and_then(|i| argv.get(i + 1).cloned())
    };
    let number = |name: &str, default: u64| {
        get(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number, not {v}"))
        })
    };
    Args {
        jobs: number("--jobs", 40) as usize,
        kills: number("--kills", 3) as usize,
        seed: number("--seed", 1),
        state: PathBuf::from(
            get("--state")
                .expect("--state DIR (the cluster's state folder) is required; run hack/chaos.sh"),
        ),
        up: get("--up").expect("--up CMD is required; run hack/chaos.sh"),
        namespace: get("--namespace").unwrap_or_else(|| "chaos".to_string()),
    }
}

/// What a job is made to do.
#[derive(Clone, Copy, Debug)]
enum Fate {
    /// The driver exits 0 with a result (sometimes a late, ignored cancel follows; sometimes its
    /// pod is deleted once it finished, and the result must survive that).
    Complete { late_cancel: bool, delete_pod: bool },
    /// The driver exits non-zero.
    Fail,
    /// Cancelled at a random moment (pending or running).
    Cancel,
    /// The driver exits 0 and the cancel arrives at the same moment.
    Race,
    /// The DataJob is deleted at a random moment (its finalizer tears the pods down first).
    Delete,
}

fn fate(rng: &mut Rng) -> Fate {
    match rng.below(100) {
        0..40 => Fate::Complete {
            late_cancel: rng.chance(20),
            delete_pod: rng.chance(30),
        },
        40..55 => Fate::Fail,
        55..80 => Fate::Cancel,
        80..95 => Fate::Race,
        _ => Fate::Delete,
    }
}

/// A job manifest, and whether it is a forecast.
fn job_manifest(name: &str, rng: &mut Rng) -> (DataJob, bool) {
    let forecast = rng.chance(40);
    let dedicated = rng.chance(30);
    let pooled = rng.chance(20);
    let mut spec = json!({
        "type": if forecast { "nql-forecast" } else { "materialize-view" },
        "input": { "nql": "SELECT * FROM company_data.\"6402\"", "datasetId": 6404 },
        "dataPlane": "dp-chaos",
        "clusterType": if dedicated { "dedicated" } else { "shared" },
        "executor": { "terminationGracePeriodSeconds": 1 + rng.below(3) },
    });
    if dedicated {
        spec["executor"]["workers"] = json!(1 + rng.below(2));
    }
    if pooled {
        spec["computePool"] = json!(POOL);
    }
    let job = serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1",
        "kind": "DataJob",
        "metadata": { "name": name },
        "spec": spec,
    }))
    .expect("valid DataJob");
    (job, forecast)
}

async fn install(client: &Client, namespace: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [DataJob::crd(), ComputePool::crd()] {
        crds.patch(
            &crd.name_any(),
            &PatchParams::apply("datajob-chaos").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply CRD");
    }
    let established = |crd: &CustomResourceDefinition| {
        crd.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
            })
    };
    for name in ["datajobs.datajob.dev", "computepools.datajob.dev"] {
        while !crds.get(name).await.is_ok_and(|crd| established(&crd)) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let ns: Namespace =
        serde_json::from_value(json!({ "metadata": { "name": namespace } })).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the run's namespace (a fresh cluster has none)");
    let pool: ComputePool = serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1", "kind": "ComputePool",
        "metadata": { "name": POOL },
        "spec": { "clusterType": "shared", "maxConcurrentJobs": 5 },
    }))
    .expect("pool");
    Api::<ComputePool>::all(client.clone())
        .create(&PostParams::default(), &pool)
        .await
        .expect("create the limited pool");
    // Pods need the namespace's default service account.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(client.clone(), namespace);
    while accounts.get_opt("default").await.ok().flatten().is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retries an API call until it succeeds, says the object is gone, or (a create whose answer
/// was lost while the API server restarted) that it already exists; false when it is gone.
async fn retry<T, F, Fut>(call: F) -> bool
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    loop {
        match call().await {
            Ok(_) => return true,
            Err(kube::Error::Api(status)) if status.code == 404 => return false,
            Err(kube::Error::Api(status)) if status.code == 409 => return true,
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

fn job_state(record: &Shared, name: &str) -> (String, Option<String>) {
    let r = record.lock().expect("record");
    r.jobs
        .get(name)
        .map(|j| (j.state.clone(), j.executor.clone()))
        .unwrap_or_default()
}

/// Waits until the job's driver runs; false when the job finished first.
async fn driver_running(record: &Shared, name: &str) -> Option<String> {
    loop {
        let (state, executor) = job_state(record, name);
        if recorder::is_terminal(&state) || state == "pending_cancellation" {
            return None;
        }
        if let Some(executor) = executor {
            let driver = format!("{executor}-driver");
            let running = record
                .lock()
                .expect("record")
                .pods
                .get(&driver)
                .is_some_and(|p| p.phase == "Running" && !p.deleted);
            if running {
                return Some(driver);
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn exit_driver(pods: &Api<Pod>, driver: &str, code: i32, message: &str) {
    let patch = json!({ "metadata": { "annotations": {
        "sim.datajob.dev/exit-code": code.to_string(),
        "sim.datajob.dev/message": message,
    }}});
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    retry(|| pods.patch(driver, &params, &patch)).await;
}

async fn cancel(jobs: &Api<DataJob>, name: &str) {
    let patch = json!({ "spec": { "cancel": true, "cancelReason": "chaos" } });
    let (params, patch) = (PatchParams::default(), Patch::Merge(&patch));
    retry(|| jobs.patch(name, &params, &patch)).await;
}

/// Plays one job's fate; true when the job must end `completed` although its driver's pod was
/// deleted after it reported (results are never lost).
async fn play(
    jobs: Api<DataJob>,
    pods: Api<Pod>,
    record: Shared,
    name: String,
    fate: Fate,
    forecast: bool,
    mut rng: Rng,
) -> bool {
    let result = if forecast {
        FORECAST_RESULT
    } else {
        MATERIALIZE_RESULT
    };
    match fate {
        Fate::Cancel => {
            tokio::time::sleep(rng.millis(0, 6000)).await;
            cancel(&jobs, &name).await;
        }
        Fate::Delete => {
            tokio::time::sleep(rng.millis(0, 6000)).await;
            let params = DeleteParams::default();
            retry(|| jobs.delete(&name, &params)).await;
        }
        Fate::Complete {
            late_cancel,
            delete_pod,
        } => {
            let Some(driver) = driver_running(&record, &name).await else {
                return false;
            };
            tokio::time::sleep(rng.millis(0, 3000)).await;
            exit_driver(&pods, &driver, 0, result).await;
            let deleted =
                delete_pod && delete_when_finished(&pods, &record, &driver, &mut rng).await;
            if late_cancel {
                tokio::time::sleep(rng.millis(0, 2000)).await;
                cancel(&jobs, &name).await;
            }
            return deleted && !late_cancel;
        }
        Fate::Fail => {
            let Some(driver) = driver_running(&record, &name).await else {
                return false;
            };
            tokio::time::sleep(rng.millis(0, 3000)).await;
            exit_driver(
                &pods,
                &driver,
                2,
                r#"{"reason": "QueryError", "message": "chaos"}"#,
            )
            .await;
        }
        Fate::Race => {
            let Some(driver) = driver_running(&record, &name).await else {
                return false;
            };
            tokio::time::sleep(rng.millis(0, 3000)).await;
            tokio::join!(exit_driver(&pods, &driver, 0, result), cancel(&jobs, &name));
        }
    }
    false
}

/// Once the driver's pod Succeeded (within a minute), deletes it as a user or the pod garbage
/// collector would; true when it did.
async fn delete_when_finished(
    pods: &Api<Pod>,
    record: &Shared,
    driver: &str,
    rng: &mut Rng,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let succeeded = || {
        let r = record.lock().expect("record");
        r.pods.get(driver).is_some_and(|p| p.phase == "Succeeded")
    };
    while !succeeded() {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(rng.millis(0, 1000)).await;
    let params = DeleteParams::default();
    retry(|| pods.delete(driver, &params)).await
}

/// The Lease's holder, if it can be read.
async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// The chaos the run applies, in a random order with random pauses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chaos {
    KillOperator,
    RestartApiServer,
    PauseEtcd,
    FreezeLeader,
}

struct Control {
    operators: Operators,
    replicas: Vec<Replica>,
    leases: Api<Lease>,
    kills: usize,
    /// Replicas that exited by themselves (lost the Lease) and were restarted.
    restarts: usize,
    frozen_leader_stopped: Option<bool>,
}

impl Control {
    /// Restarts the process of every replica that exited, as a kubelet would.
    fn supervise(&mut self) {
        for i in 0..self.replicas.len() {
            if let Some(status) = self.replicas[i].exited() {
                eprintln!(
                    "chaos: {} exited ({status}); restarting it",
                    self.replicas[i].instance
                );
                let restarted = self.operators.restart(&self.replicas[i]);
                let gone = std::mem::replace(&mut self.replicas[i], restarted);
                self.operators.finished.push(gone);
                self.restarts += 1;
            }
        }
    }

    /// Sleeps `pause`, supervising meanwhile.
    async fn pass(&mut self, pause: Duration) {
        let until = Instant::now() + pause;
        while Instant::now() < until {
            self.supervise();
            tokio::time::sleep(Duration::from_millis(250).min(until - Instant::now())).await;
        }
    }

    fn retire(&mut self, index: usize) {
        let replica = self.replicas.remove(index);
        self.operators.finished.push(replica);
    }

    async fn leader_index(&self) -> Option<usize> {
        let holder = holder(&self.leases).await?;
        self.replicas.iter().position(|r| r.instance == holder)
    }

    async fn kill(&mut self, rng: &mut Rng) {
        let index = match self.leader_index().await {
            Some(i) => i,
            None => rng.below(self.replicas.len() as u64) as usize,
        };
        eprintln!("chaos: SIGKILL {}", self.replicas[index].instance);
        self.replicas[index].kill();
        self.kills += 1;
        // Restarted by its "kubelet" with the same identity.
        let restarted = self.operators.restart(&self.replicas[index]);
        let gone = std::mem::replace(&mut self.replicas[index], restarted);
        self.operators.finished.push(gone);
    }

    /// Two replicas; the leader is frozen until the other took over (and then some), then
    /// resumed: it must stop by itself.
    async fn freeze_leader(&mut self) {
        let standby = self.operators.start();
        let standby_name = standby.instance.clone();
        self.replicas.push(standby);
        let deadline = Instant::now() + Duration::from_secs(120);
        let leader = loop {
            let ready = self
                .replicas
                .last()
                .is_some_and(|r| r.logged("caches synced; ready"));
            if ready
                && let Some(i) = self.leader_index().await
                && self.replicas[i].instance != standby_name
            {
                break Some(i);
            }
            if Instant::now() > deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let Some(leader) = leader else {
            eprintln!("chaos: freeze skipped: no leader besides the new standby");
            return;
        };
        let pid = self.replicas[leader].pid();
        let frozen = self.replicas[leader].instance.clone();
        eprintln!("chaos: SIGSTOP leader {frozen}; {standby_name} stands by");
        processes::signal(pid, "-STOP");
        let deadline = Instant::now() + Duration::from_secs(180);
        while holder(&self.leases).await.as_deref() != Some(standby_name.as_str())
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        eprintln!("chaos: SIGCONT {frozen}");
        processes::signal(pid, "-CONT");
        let deadline = Instant::now() + Duration::from_secs(60);
        let stopped = loop {
            if let Some(status) = self.replicas[leader].exited() {
                eprintln!("chaos: resumed {frozen} stopped by itself ({status})");
                break true;
            }
            if Instant::now() > deadline {
                eprintln!("chaos: resumed {frozen} is STILL RUNNING a minute later");
                break false;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        self.frozen_leader_stopped = Some(stopped);
        self.retire(leader);
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    let started = Instant::now();
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at the chaos cluster (hack/chaos.sh starts one)");
    install(&client, &args.namespace).await;
    let record = recorder::start(&client, &args.namespace);
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), &args.namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &args.namespace);
    let mut rng = Rng(args.seed);

    let logs = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("chaos-logs")
        .join(format!("seed-{}", args.seed));
    let _ = std::fs::remove_dir_all(&logs);
    let mut operators = Operators::new(
        PathBuf::from(env!("CARGO_BIN_EXE_datajob-operator")),
        &args.namespace,
        LEASE,
        LEASE_SECONDS,
        logs.clone(),
    );
    let first = operators.start();
    let mut control = Control {
        operators,
        replicas: vec![first],
        leases: Api::namespaced(client.clone(), &args.namespace),
        kills: 0,
        restarts: 0,
        frozen_leader_stopped: None,
    };

    // The chaos schedule: K kills, one API server restart, one etcd pause, one frozen leader.
    let mut schedule: Vec<Chaos> = vec![Chaos::KillOperator; args.kills];
    schedule.extend([
        Chaos::RestartApiServer,
        Chaos::PauseEtcd,
        Chaos::FreezeLeader,
    ]);
    for i in (1..schedule.len()).rev() {
        schedule.swap(i, rng.below(i as u64 + 1) as usize);
    }
    // Jobs are created over about as long as the chaos lasts, so chaos meets jobs in flight.
    let chaos_gap = (3000, 9000);
    let expected_chaos = Duration::from_millis(6000 * schedule.len() as u64);
    let per_job = expected_chaos / args.jobs.max(1) as u32;

    let limit = Arc::new(Semaphore::new(64));
    let creator = {
        let (jobs, pods, record, mut rng) =
            (jobs.clone(), pods.clone(), record.clone(), rng.clone());
        let count = args.jobs;
        let limit = limit.clone();
        tokio::spawn(async move {
            rng.next();
            let mut players = Vec::new();
            for i in 0..count {
                let name = format!("job-{i:05}");
                let (manifest, forecast) = job_manifest(&name, &mut rng);
                let fate = fate(&mut rng);
                let params = PostParams::default();
                retry(|| jobs.create(&params, &manifest)).await;
                let permit = limit.clone().acquire_owned().await.expect("semaphore");
                let (jobs, pods, record, rng) =
                    (jobs.clone(), pods.clone(), record.clone(), Rng(rng.next()));
                players.push(tokio::spawn(async move {
                    let must_complete =
                        play(jobs, pods, record, name.clone(), fate, forecast, rng).await;
                    drop(permit);
                    must_complete.then_some(name)
                }));
                tokio::time::sleep(per_job).await;
            }
            let mut must_complete = Vec::new();
            for player in players {
                must_complete.extend(player.await.ok().flatten());
            }
            must_complete
        })
    };

    for chaos in schedule {
        control.pass(rng.millis(chaos_gap.0, chaos_gap.1)).await;
        match chaos {
            Chaos::KillOperator => control.kill(&mut rng).await,
            Chaos::RestartApiServer => {
                eprintln!("chaos: restarting the API server");
                processes::restart_api_server(&args.state, &args.up).await;
                eprintln!("chaos: API server back");
            }
            Chaos::PauseEtcd => {
                let pause = Duration::from_secs(LEASE_SECONDS + 2);
                eprintln!("chaos: pausing etcd for {pause:?}");
                processes::pause_etcd(&args.state, pause).await;
            }
            Chaos::FreezeLeader => control.freeze_leader().await,
        }
    }
    eprintln!(
        "chaos: schedule done after {:?}; waiting for the jobs' fates",
        started.elapsed()
    );
    while !creator.is_finished() {
        control.pass(Duration::from_secs(1)).await;
    }
    let must_complete = creator.await.unwrap_or_default();

    // Settle: every job terminal, then every pod that should go gone.
    let settle = Duration::from_secs(300 + args.jobs as u64 / 2);
    let deadline = Instant::now() + settle;
    let non_terminal = |record: &Shared| -> Vec<String> {
        let r = record.lock().expect("record");
        r.jobs
            .iter()
            .filter(|(_, j)| !j.deleted && !recorder::is_terminal(&j.state))
            .map(|(n, j)| format!("{n} ({:?})", j.state))
            .collect()
    };
    while !non_terminal(&record).is_empty() && Instant::now() < deadline {
        control.pass(Duration::from_secs(1)).await;
        // A job deleted while a watch re-listed leaves no delete event: ask the API server.
        if let Ok(list) = jobs.list(&ListParams::default()).await {
            let present: BTreeSet<String> = list.items.iter().map(|j| j.name_any()).collect();
            let mut r = record.lock().expect("record");
            for (name, job) in r.jobs.iter_mut() {
                if !present.contains(name) {
                    job.deleted = true;
                }
            }
        }
    }
    let leaked = |listed: &[Pod], record: &Shared| -> Vec<String> {
        let r = record.lock().expect("record");
        let by_uid: std::collections::HashMap<&str, &recorder::JobRecord> =
            r.jobs.values().map(|j| (j.uid.as_str(), j)).collect();
        listed
            .iter()
            .filter(|pod| {
                let uid = pod.labels().get(datajob_operator::executor::LABEL_JOB_UID);
                let finished = pod
                    .status
                    .as_ref()
                    .and_then(|s| s.phase.as_deref())
                    .is_some_and(|p| p == "Succeeded" || p == "Failed");
                // A finished job's pods must not stay held by the result finalizer.
                let held = pod
                    .finalizers()
                    .iter()
                    .any(|f| f == datajob_operator::executor::RESULT_FINALIZER);
                match uid.and_then(|u| by_uid.get(u.as_str())) {
                    None => true,
                    Some(job) if job.deleted || job.state == "cancelled" => true,
                    Some(job) if recorder::is_terminal(&job.state) => !finished || held,
                    Some(_) => false,
                }
            })
            .map(|p| p.name_any())
            .collect()
    };
    let pod_deadline = Instant::now() + Duration::from_secs(120);
    let leaked_pods = loop {
        let listed = loop {
            match pods.list(&ListParams::default()).await {
                Ok(list) => break list.items,
                Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        };
        let leaked = leaked(&listed, &record);
        if leaked.is_empty() || Instant::now() > pod_deadline {
            break leaked;
        }
        control.pass(Duration::from_secs(1)).await;
    };
    let stuck = non_terminal(&record);

    // Stop the operators before reading the audit log, so that it is complete.
    let mut fenced_writes = 0;
    for mut replica in control.replicas.drain(..) {
        replica.kill();
        control.operators.finished.push(replica);
    }
    for replica in &control.operators.finished {
        fenced_writes += replica.count_in_log("does not hold the leader lease");
    }
    let findings = audit::analyse(&args.state.join("audit.log"), &args.namespace, LEASE);

    let r = record.lock().expect("record");
    let illegal: Vec<String> = r
        .jobs
        .iter()
        .flat_map(|(n, j)| j.illegal.iter().map(move |t| format!("{n}: {t}")))
        .collect();
    let mut two_executors = BTreeSet::new();
    for (name, job) in &r.jobs {
        let pod_executors = r.pod_executors.get(&job.uid).map_or(0, BTreeSet::len);
        if job.executors.len() > 1 || pod_executors > 1 {
            two_executors.insert(name.clone());
        }
    }
    for (pod, uids) in &r.pod_uids {
        if uids.len() > 1 {
            two_executors.insert(format!("pod {pod}"));
        }
    }
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    for job in r.jobs.values() {
        let outcome = if job.deleted {
            "deleted".to_string()
        } else {
            job.state.clone()
        };
        *outcomes.entry(outcome).or_default() += 1;
    }
    eprintln!("chaos: outcomes {outcomes:?}");
    let lost_results: Vec<String> = must_complete
        .iter()
        .filter(|n| {
            r.jobs
                .get(*n)
                .is_some_and(|j| !j.deleted && j.state != "completed")
        })
        .map(|n| format!("{n} ended {:?}", r.jobs.get(n).map(|j| j.state.as_str())))
        .collect();
    eprintln!(
        "chaos: {} driver pods deleted after they reported; results lost: {}",
        must_complete.len(),
        lost_results.len()
    );
    eprintln!(
        "chaos: {} watch re-lists; {} operator processes restarted after they stopped leading; {} operator writes and {} Lease writes in the audit log; {} writes refused by the fence; frozen leader stopped by itself: {:?}; took {:?}",
        r.relists,
        control.restarts,
        findings.operator_writes,
        findings.lease_writes,
        fenced_writes,
        control.frozen_leader_stopped,
        started.elapsed()
    );
    let show = |what: &str, items: &[String]| {
        for item in items.iter().take(10) {
            eprintln!("chaos: {what}: {item}");
        }
    };
    show("leaked pod", &leaked_pods);
    show("lost result", &lost_results);
    show("stuck job", &stuck);
    show("illegal transition", &illegal);
    show(
        "two executors",
        &two_executors.iter().cloned().collect::<Vec<_>>(),
    );
    show(
        "cancelled with pods",
        &r.cancelled_with_pods.iter().cloned().collect::<Vec<_>>(),
    );
    show(
        "stale leader write",
        &findings
            .stale
            .iter()
            .map(|(w, why)| format!("{} by {} at {}: {why}", w.what, w.instance, w.at))
            .collect::<Vec<_>>(),
    );
    println!(
        "chaos: jobs={} kills={} leaked_pods={} stuck_jobs={} illegal_transitions={} two_executors={} cancelled_with_pods={} stale_leader_writes={}",
        r.jobs.len(),
        control.kills,
        leaked_pods.len(),
        stuck.len(),
        illegal.len(),
        two_executors.len(),
        r.cancelled_with_pods.len(),
        findings.stale.len()
    );
    let clean = leaked_pods.is_empty()
        && lost_results.is_empty()
        && stuck.is_empty()
        && illegal.is_empty()
        && two_executors.is_empty()
        && r.cancelled_with_pods.is_empty()
        && findings.stale.is_empty()
        && control.frozen_leader_stopped != Some(false);
    std::process::exit(if clean { 0 } else { 1 });
}
