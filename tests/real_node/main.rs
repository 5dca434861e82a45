//! Tests on the real node (`hack/real-node.sh up`): kubelet, containerd and runc run the
//! project's images for real, so what kwok only simulates is proven here: the images themselves,
//! the operator's readiness probe, SIGTERM reaching an executor process, the termination message
//! read back by a kubelet, and a query larger than one environment string may be.
//!
//! Environment: tests/support's (KUBECONFIG, ...) plus `hack/real-node.sh env`
//! (DATAJOB_REAL_NODE, DATAJOB_CTR, DATAJOB_CONTAINERD_ADDRESS, DATAJOB_OPERATOR_IMAGE,
//! DATAJOB_EXECUTOR_IMAGE, DATAJOB_OPERATOR_ARCHIVE, DATAJOB_EXECUTOR_ARCHIVE). Without them the
//! tests fail with how to start the real node. They share the node, so they run one at a time.

mod images;
mod real;
#[path = "../support/mod.rs"]
mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use datajob_operator::api::{DataJob, JobState};
use datajob_operator::executor::executor_name;
use datajob_operator::reference_executor::fnv1a64_hex;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use real::{Logs, PodRecorder, Pool, RealNode, SERIAL, job, placement};
use support::helm::{CHART, helm_ok};
use support::{Operator, STEP, TestNamespace, cancel, kubectl, state, wait_for, wait_state};

const SNAPSHOT_ID: i64 = support::MATERIALIZE_SNAPSHOT_ID as i64;

fn state_is(expected: JobState) -> impl Fn(&DataJob) -> bool {
    move |job: &DataJob| state(job) == expected.as_str()
}

/// What a job test on the real node starts from: the CRDs, a fresh namespace, a ComputePool of
/// `cluster_type` on the real node, and this build's operator watching the namespace.
struct Scene {
    real: RealNode,
    client: Client,
    ns: TestNamespace,
    pool: Pool,
    _operator: Operator,
}

impl Scene {
    async fn new(prefix: &str, cluster_type: &str) -> Scene {
        let real = RealNode::from_env();
        let client = support::admin_client().await;
        support::install_crds(&client).await;
        let ns = TestNamespace::new(&client, prefix).await;
        let pool = Pool::create(&client, ns.name(), cluster_type).await;
        let _operator = Operator::start(ns.name());
        Scene {
            real,
            client,
            ns,
            pool,
            _operator,
        }
    }

    fn parts(&self) -> (&RealNode, &Client, &TestNamespace, &Pool) {
        (&self.real, &self.client, &self.ns, &self.pool)
    }

    /// Starts deleting the namespace; the operator stops when the scene is dropped.
    async fn finish(self) {
        self.ns.cleanup().await;
    }
}

/// Creates `job` in `namespace` and returns it with its uid.
async fn create(client: &Client, namespace: &str, job: impl Into<DataJob>) -> DataJob {
    let job = job.into();
    Api::<DataJob>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &job)
        .await
        .unwrap_or_else(|e| panic!("cannot create DataJob {}: {e}", job.name_any()))
}

/// The name of the job's pod with `suffix` (`driver`, `worker-0`, ...).
fn pod_name(job: &DataJob, suffix: &str) -> String {
    format!(
        "{}-{suffix}",
        executor_name(&job.name_any(), &job.uid().expect("uid"))
    )
}

/// Waits until `pod` runs its executor container on the real node.
async fn wait_running_on_real_node(client: &Client, namespace: &str, pod: &str, node: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let running = wait_for(&pods, pod, STEP, |p: &Pod| {
        real::started_on(p).is_some_and(|(_, started)| started)
    })
    .await;
    let (on, _) = real::started_on(&running).expect("scheduled");
    assert_eq!(on, node, "{pod} runs on {on}, not on the real node");
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn a_job_on_the_real_node_completes_with_its_exact_result_and_logs() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::new("real-complete", "shared").await;
    let (real, client, ns, pool) = scene.parts();

    let manifest = job("materialize", &pool.name, &real.executor_image)
        .nql("SELECT visits FROM presence")
        .env("EXECUTOR_WORK_SECONDS", "3")
        .env("EXECUTOR_SNAPSHOT_ID", &SNAPSHOT_ID.to_string());
    let created = create(client, ns.name(), manifest).await;
    let driver = pod_name(&created, "driver");
    wait_running_on_real_node(client, ns.name(), &driver, &real.node).await;
    let mut logs = Logs::follow(ns.name(), &driver);

    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let done = wait_state(&jobs, "materialize", JobState::Completed).await;
    let result = done.status.and_then(|s| s.result).expect("a result");
    assert_eq!(result.snapshot_id, Some(SNAPSHOT_ID), "exact 64-bit id");
    assert_eq!(result.dataset_id, Some(6404));
    assert_eq!(result.recalculation_id.as_deref(), created.uid().as_deref());
    // The API server holds the number itself, not a float's rounding of it.
    let raw = run_ok(kubectl().args(["get", "dj", "materialize", "-n", ns.name(), "-o", "json"]));
    assert!(raw.contains("739881302291276700"), "{raw}");

    let text = logs.wait_closed(STEP).await;
    println!("kubectl logs {driver}:\n{text}");
    for line in [
        "starting materialize-view job",
        "nql: 27 bytes",
        "work done after",
        "\"snapshotId\":739881302291276700",
        "exiting with code 0",
    ] {
        assert!(text.contains(line), "the log lacks {line:?}:\n{text}");
    }
    // The finished driver stays, so `kubectl logs` works after the job completed too.
    let again = run_ok(kubectl().args(["logs", "-n", ns.name(), &driver]));
    assert!(again.contains("exiting with code 0"), "{again}");
    scene.finish().await;
}

#[tokio::test]
async fn cancelling_a_running_executor_delivers_sigterm_and_ends_cancelled() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::new("real-cancel", "shared").await;
    let (real, client, ns, pool) = scene.parts();
    let recorder = PodRecorder::start(client, ns.name());

    const GRACE: i64 = 60;
    let manifest = job("long-running", &pool.name, &real.executor_image)
        .job_type("nql-forecast")
        .nql("FORECAST visits")
        .dataset_id(None)
        .grace_period(GRACE)
        .env("EXECUTOR_WORK_SECONDS", "3600")
        .env("EXECUTOR_SHUTDOWN_SECONDS", "1");
    let created = create(client, ns.name(), manifest).await;
    let driver = pod_name(&created, "driver");
    wait_running_on_real_node(client, ns.name(), &driver, &real.node).await;
    let mut logs = Logs::follow(ns.name(), &driver);
    logs.wait_for("working: 1 of", STEP).await;
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    wait_state(&jobs, "long-running", JobState::Running).await;

    let requested = Instant::now();
    cancel(&jobs, "long-running", "real-node test").await;
    let cancelled = wait_for(
        &jobs,
        "long-running",
        Duration::from_secs(GRACE as u64) + STEP,
        state_is(JobState::Cancelled),
    )
    .await;
    let took = requested.elapsed();
    println!(
        "cancel -> cancelled in {:.2} s (grace period {GRACE} s; the executor takes 1 s to stop)",
        took.as_secs_f64()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    assert!(
        pods.get_opt(&driver).await.expect("get pod").is_none(),
        "cancelled is written only once the pod is gone"
    );
    assert_eq!(
        cancelled.status.and_then(|s| s.active_executors),
        Some(0),
        "no executor left"
    );

    let text = logs.wait_closed(STEP).await;
    println!("kubectl logs {driver}:\n{text}");
    assert!(
        text.contains("received SIGTERM after"),
        "the process got SIGTERM:\n{text}"
    );
    assert!(text.contains("exiting with code 143"), "{text}");
    // The kubelet saw the process exit by itself (143), not killed at the end of the grace
    // period (137): the wait tracked the executor's shutdown.
    assert_eq!(recorder.wait_exit_code(&driver, STEP).await, 143);
    scene.finish().await;
}

#[tokio::test]
async fn a_dedicated_job_runs_driver_and_workers_as_real_containers_and_cancels_cleanly() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::new("real-dedicated", "dedicated").await;
    let (real, client, ns, pool) = scene.parts();
    let recorder = PodRecorder::start(client, ns.name());

    let manifest = job("dedicated", &pool.name, &real.executor_image)
        .nql("SELECT 1")
        .workers(2)
        .grace_period(60)
        .env("EXECUTOR_WORK_SECONDS", "3600");
    let created = create(client, ns.name(), manifest).await;
    let names: Vec<String> = ["driver", "worker-0", "worker-1"]
        .iter()
        .map(|s| pod_name(&created, s))
        .collect();
    let mut logs = Vec::new();
    for pod in &names {
        wait_running_on_real_node(client, ns.name(), pod, &real.node).await;
        logs.push(Logs::follow(ns.name(), pod));
    }
    logs[0].wait_for("working for", STEP).await;
    for worker in &logs[1..] {
        worker
            .wait_for("serving the driver until stopped", STEP)
            .await;
    }
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    wait_state(&jobs, "dedicated", JobState::Running).await;

    let requested = Instant::now();
    cancel(&jobs, "dedicated", "real-node test").await;
    wait_for(&jobs, "dedicated", STEP * 2, state_is(JobState::Cancelled)).await;
    println!(
        "dedicated job with 2 workers: cancel -> cancelled in {:.2} s (grace period 60 s)",
        requested.elapsed().as_secs_f64()
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns.name());
    for (pod, log) in names.iter().zip(logs.iter_mut()) {
        assert!(
            pods.get_opt(pod).await.expect("get").is_none(),
            "{pod} is gone"
        );
        let text = log.wait_closed(STEP).await;
        assert!(
            text.contains("received SIGTERM") && text.contains("exiting with code 143"),
            "{pod} stopped on SIGTERM:\n{text}"
        );
        assert_eq!(recorder.wait_exit_code(pod, STEP).await, 143, "{pod}");
    }
    scene.finish().await;
}

// Linux refuses one environment string over 128 KiB (the container's exec fails with E2BIG):
// the query reaches the executor as a file of the job's query ConfigMap (DATAJOB_NQL_FILE),
// and DATAJOB_NQL stays empty above 64 KiB. This proves issue 7's query files on a kubelet.
#[tokio::test]
async fn a_query_over_128_kib_reaches_the_executor_intact() {
    let _serial = SERIAL.lock().await;
    let scene = Scene::new("real-big-query", "shared").await;
    let (real, client, ns, pool) = scene.parts();

    // 200 KiB: above the kernel's 128 KiB limit for one environment string, below the CRD's
    // 256 KiB limit for spec.input.nql.
    let mut nql = String::from("FORECAST visits FROM presence WHERE site IN (");
    let mut i = 0;
    while nql.len() < 200 * 1024 {
        nql.push_str(&format!("'site-{i:06}', "));
        i += 1;
    }
    nql.push_str("'last')");
    let manifest = job("big-query", &pool.name, &real.executor_image)
        .job_type("nql-forecast")
        .nql(&nql)
        .dataset_id(None)
        .env("EXECUTOR_WORK_SECONDS", "1");
    let created = create(client, ns.name(), manifest).await;
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let done = wait_for(&jobs, "big-query", STEP, |j: &DataJob| {
        j.status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(JobState::is_terminal)
    })
    .await;
    let status = done.status.expect("status");
    assert_eq!(
        status.state,
        Some(JobState::Completed),
        "a {} byte query must reach the executor; failures: {:?}",
        nql.len(),
        status.failures
    );
    let forecast = status
        .result
        .and_then(|r| r.forecast)
        .expect("a forecast result");
    assert_eq!(forecast["nqlBytes"], json!(nql.len()));
    assert_eq!(
        forecast["nqlFnv1a64"],
        json!(fnv1a64_hex(nql.as_bytes())),
        "the executor received the query unchanged"
    );
    // It read the mounted file of the job's query ConfigMap.
    let driver = pod_name(&created, "driver");
    let log = run_ok(kubectl().args(["logs", "-n", ns.name(), &driver]));
    let read = format!(
        "nql: {} bytes, fnv1a64 {}, from file /var/run/datajob/query/nql",
        nql.len(),
        fnv1a64_hex(nql.as_bytes())
    );
    assert!(log.contains(&read), "the log lacks {read:?}:\n{log}");
    scene.finish().await;
}

/// What an installed release leaves for the test to use.
struct Installed {
    client: Client,
    ns: TestNamespace,
    namespace: String,
    values_arg: String,
    repository: String,
    tag: String,
    fullname: String,
    pool: Pool,
    manifest: DataJob,
    _release: real::Release,
}

/// `helm install` of the chart with the local operator image on the real node; checks the
/// Deployment became Available through the real readiness probe and that the operator in its
/// pod runs a job to completion.
async fn install_on_real_node(real: &RealNode) -> Installed {
    let client = support::admin_client().await;
    support::install_crds(&client).await;
    let ns = TestNamespace::new(&client, "real-helm").await;
    let namespace = ns.name().to_string();
    // The operator pod must be admitted under the "restricted" Pod Security Standard.
    support::enforce_restricted(&client, &namespace).await;
    let (repository, tag) = real
        .operator_image
        .rsplit_once(':')
        .expect("image with a tag");
    let suffix = namespace.trim_start_matches("real-helm-");
    let (node_selector, tolerations) = placement();
    let values = json!({
        // The CRDs are the test suite's (support::install_crds), shared by every release.
        "crds": { "enabled": false },
        "image": { "repository": repository, "tag": tag, "pullPolicy": "Never" },
        "executor": { "image": real.executor_image },
        "watchNamespace": namespace,
        "logFormat": "text",
        "nodeSelector": node_selector,
        "tolerations": tolerations,
        "rbac": { "aggregatedRoles": {
            "viewName": format!("datajob-view-{suffix}"),
            "editName": format!("datajob-edit-{suffix}"),
        }},
    });
    let values_file =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("real-helm-{suffix}.values.json"));
    std::fs::write(&values_file, values.to_string()).expect("values file");
    let values_arg = values_file.display().to_string();
    let release = real::Release::new(&namespace);

    let started = Instant::now();
    helm_ok(&[
        "install",
        &namespace,
        CHART,
        "--namespace",
        &namespace,
        "--values",
        &values_arg,
        "--wait",
        "--timeout",
        "240s",
    ]);
    println!(
        "helm install --wait: Deployment Available after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let fullname = format!("{namespace}-datajob-operator");
    let pod = real::operator_pod(&client, &namespace, &fullname).await;
    real::assert_ready_on(&pod, &real.node, &real.operator_image);
    let operator_log = run_ok(kubectl().args(["logs", "-n", &namespace, &pod.name_any()]));
    assert!(
        operator_log.contains("caches synced"),
        "readiness came from synced caches:\n{operator_log}"
    );

    // The operator in its pod reconciles a job whose executor runs on the real node too.
    let pool = Pool::create(&client, &format!("{namespace}-pool"), "shared").await;
    let manifest: DataJob = job("via-helm", &pool.name, &real.executor_image)
        .nql("SELECT 1")
        .env("EXECUTOR_WORK_SECONDS", "1")
        .env("EXECUTOR_SNAPSHOT_ID", &SNAPSHOT_ID.to_string())
        .build();
    // The chart's MutatingAdmissionPolicy (scoped to watchNamespace) gave the job its teardown
    // finalizer as the API server admitted it.
    let created = create(&client, &namespace, manifest.clone()).await;
    assert!(
        created
            .finalizers()
            .iter()
            .any(|f| f == "datajob.dev/teardown"),
        "the chart's admission policy adds the finalizer on create: {:?}",
        created.finalizers()
    );
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), &namespace);
    let done = wait_state(&jobs, "via-helm", JobState::Completed).await;
    // So the operator never patched the job's metadata: its only write is the status apply.
    let operator_writes: Vec<String> = done
        .managed_fields()
        .iter()
        .filter(|m| m.manager.as_deref() == Some("datajob-operator"))
        .map(|m| format!("{:?} {:?}", m.operation, m.subresource))
        .collect();
    assert_eq!(
        operator_writes,
        [r#"Some("Apply") Some("status")"#],
        "the operator's writes to the job"
    );
    assert_eq!(
        done.status
            .and_then(|s| s.result)
            .and_then(|r| r.snapshot_id),
        Some(SNAPSHOT_ID)
    );
    Installed {
        client,
        ns,
        namespace,
        values_arg,
        repository: repository.to_string(),
        tag: tag.to_string(),
        fullname,
        pool,
        manifest,
        _release: release,
    }
}

#[tokio::test]
async fn helm_installs_the_operator_image_on_the_real_node_and_it_reconciles() {
    let _serial = SERIAL.lock().await;
    let real = RealNode::from_env();
    let installed = install_on_real_node(&real).await;
    let Installed { ns, pool, .. } = installed;
    drop(pool);
    ns.cleanup().await;
}

// The chart's rolling update keeps the old pod (the Lease holder) until the new one is Ready:
// the new pod, a standby, must become Ready with its caches synced, before it leads (issue 8).
#[tokio::test]
async fn helm_upgrade_to_a_second_tag_rolls_the_operator_on_the_real_node() {
    let _serial = SERIAL.lock().await;
    let real = RealNode::from_env();
    let Installed {
        client,
        ns,
        namespace,
        values_arg,
        repository,
        tag,
        fullname,
        pool,
        manifest,
        _release,
    } = install_on_real_node(&real).await;
    let repository = repository.as_str();
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), &namespace);
    // A second tag of the image: the upgrade rolls the Deployment to a new pod, which must
    // become ready (and take the lease) while the old one stands down.
    let next_tag = format!("{tag}-next");
    real.ctr(&[
        "images",
        "tag",
        "--force",
        &real.operator_image,
        &format!("{repository}:{next_tag}"),
    ]);
    let started = Instant::now();
    helm_ok(&[
        "upgrade",
        &namespace,
        CHART,
        "--namespace",
        &namespace,
        "--values",
        &values_arg,
        "--set",
        &format!("image.tag={next_tag}"),
        "--wait",
        "--timeout",
        "240s",
    ]);
    println!(
        "helm upgrade --wait to {next_tag}: done after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    let deployment = wait_for(&deployments, &fullname, STEP, |d: &Deployment| {
        d.status.as_ref().is_some_and(|s| {
            s.updated_replicas == Some(1)
                && s.available_replicas == Some(1)
                && s.replicas == Some(1)
        })
    })
    .await;
    assert_eq!(
        deployment.metadata.generation,
        deployment.status.and_then(|s| s.observed_generation)
    );
    let pod = real::operator_pod(&client, &namespace, &fullname).await;
    real::assert_ready_on(&pod, &real.node, &format!("{repository}:{next_tag}"));

    // The upgraded operator still reconciles.
    let mut again = manifest.clone();
    again.metadata.name = Some("after-upgrade".to_string());
    create(&client, &namespace, again).await;
    wait_state(&jobs, "after-upgrade", JobState::Completed).await;
    drop(pool);
    ns.cleanup().await;
}
