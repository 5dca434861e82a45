//! What one write costs the API server: a DataJob against a Job, on an otherwise idle cluster
//! (`--request-cost ROUNDS`; 0 or absent leaves it out).
//!
//! Each case is one request, sent `BLOCK` times in a row (keep-alive, dry run: everything the
//! API server does for a write but the etcd write), in rounds that take the cases in turn (the
//! CRD's rules removed and put back within each round), so a slow moment of the machine falls
//! on every case alike. Per case: the median latency of
//! all its requests, and the median over its blocks of the CPU the API server and etcd used
//! per request (from /proc; the processes hack/cluster.sh recorded), less what they use when
//! idle. The reference is the Job's `suspend` patch, the Job side's cancel.
//!
//! The cases are the writes of the cancel storm: the client's stop request (Job `suspend`,
//! DataJob `cancel`, merge patches), the controllers' status write (the Job controller's is a
//! status update, here a merge patch of `status.ready`; the operator's is a server-side apply
//! of its whole status, here the `pending_cancellation` that `domain::decide` decides for a
//! running job, and its Event as the operator publishes it), the status
//! apply of a DataJob whose status is smaller (what trimming the conditions would buy), and
//! the same DataJob writes again with the CRD's CEL rules removed (then put back), which shows
//! what those rules cost; and the writes both sides make for each job's pod and events (a pod
//! created, deleted, its finalizer removed; an Event created).

use std::time::{Duration, Instant};

use std::fmt::Debug;

use datajob_operator::OPERATOR_NAME;
use datajob_operator::api::{DataJob, DataJobStatus, JobState};
use datajob_operator::controller::datajob::observe;
use datajob_operator::controller::events::{Note, Publisher};
use datajob_operator::domain::{self, Observation, PoolView};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::support::{TestNamespace, watch};
use super::{Bench, PHASE_LIMIT, datajob_manifest, job_manifest, job_running};

/// The name of the Job and of the DataJob the requests write to.
const NAME: &str = "cost";
/// The DataJob whose status is the smaller one.
const SMALL: &str = "cost-small";
/// The pod the pod cases write to: it holds a finalizer, as a driver pod holds its result.
const POD: &str = "cost-pod";
/// The finalizer it holds (the operator's result finalizer).
const POD_FINALIZER: &str = "datajob.dev/result";
/// Requests per case in one block.
const BLOCK: usize = 100;
/// The operator's field manager for status (as `controller::kube_util` applies it).
const STATUS_MANAGER: &str = "datajob-operator";

/// One measured request.
#[derive(Clone, Copy, PartialEq)]
enum Case {
    JobSuspend,
    JobStatus,
    DataJobCancel,
    DataJobStatus,
    DataJobStatusSmall,
    DataJobCancelNoRules,
    DataJobStatusNoRules,
    PodCreate,
    PodDelete,
    PodFinalizerRemoval,
    EventCreate,
}

/// Every case, in the order of the table.
const CASES: [Case; 11] = [
    Case::JobSuspend,
    Case::JobStatus,
    Case::DataJobCancel,
    Case::DataJobStatus,
    Case::DataJobStatusSmall,
    Case::DataJobCancelNoRules,
    Case::DataJobStatusNoRules,
    Case::PodCreate,
    Case::PodDelete,
    Case::PodFinalizerRemoval,
    Case::EventCreate,
];

impl Case {
    /// The half of a round the case runs in: with the DataJob CRD's CEL rules (Some(true)),
    /// without them (Some(false)), or in both (None: the reference, measured beside each).
    fn needs_rules(self) -> Option<bool> {
        match self {
            Case::JobSuspend | Case::JobStatus => None,
            Case::DataJobCancel | Case::DataJobStatus | Case::DataJobStatusSmall => Some(true),
            // Writes both sides make: once a round.
            Case::PodCreate | Case::PodDelete | Case::PodFinalizerRemoval | Case::EventCreate => {
                Some(true)
            }
            Case::DataJobCancelNoRules | Case::DataJobStatusNoRules => Some(false),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Case::JobSuspend => "Job: `suspend` merge patch (reference)",
            Case::JobStatus => "Job: status merge patch",
            Case::DataJobCancel => "DataJob: `cancel` merge patch",
            Case::DataJobStatus => "DataJob: status server-side apply",
            Case::DataJobStatusSmall => {
                "DataJob: status server-side apply, smaller (conditions without observedGeneration, \
                 the False ones without message)"
            }
            Case::DataJobCancelNoRules => "DataJob without CEL rules: `cancel` merge patch",
            Case::DataJobStatusNoRules => "DataJob without CEL rules: status server-side apply",
            Case::PodCreate => "both: Pod create",
            Case::PodDelete => "both: Pod delete (graceful)",
            Case::PodFinalizerRemoval => "both: Pod finalizer removal (merge patch)",
            Case::EventCreate => "both: Event create (events.k8s.io/v1)",
        }
    }
}

/// What one case measured.
#[derive(Default)]
struct Costs {
    latencies: Vec<Duration>,
    cpu_ms_per_request: Vec<f64>,
}

/// The objects the cases write to, as they are in a cancel storm's first moment.
struct Targets {
    jobs: Api<Job>,
    datajobs: Api<DataJob>,
    /// The status the operator applies when it sees the cancel request.
    pending_cancellation: Value,
    /// The same, smaller ([`smaller`]), for the other DataJob.
    pending_cancellation_small: Value,
    pods: Api<Pod>,
    events: Api<Event>,
    /// The event the operator publishes when it sees the cancel request.
    event: Event,
}

/// What the operator decides ([`domain::decide`]) for the running job `running`, with its
/// executor pods `pods`, once it sees the job's cancel request: its status and events.
fn pending_cancellation(running: &DataJob, pods: Vec<domain::ObservedPod>) -> domain::Plan {
    let mut spec = running.spec.clone();
    spec.cancel = true;
    let observation = Observation {
        now: observe::now(),
        name: running.name_any(),
        uid: running.uid().expect("a stored DataJob's uid"),
        // The cancel patch is a spec change.
        generation: running.metadata.generation.unwrap_or(1) + 1,
        spec,
        status: running.status.clone().expect("a running job's status"),
        pods,
        pool: PoolView::NotRequested,
        rejection: None,
        create_refusal: None,
        nodes: Default::default(),
        refusal: None,
        arrival: None,
    };
    let plan = domain::decide(&observation);
    assert_eq!(plan.status.state, Some(JobState::PendingCancellation));
    plan
}

/// `status` with conditions that carry no `observedGeneration` (the status has one) and no
/// message when False.
fn smaller(mut status: DataJobStatus) -> DataJobStatus {
    for condition in &mut status.conditions {
        condition.observed_generation = None;
        if !condition.is_true() {
            condition.message.clear();
        }
    }
    status
}

/// A server-side apply of `status` to the DataJob `name`.
fn status_apply(name: &str, namespace: &str, status: DataJobStatus) -> Value {
    json!({
        "apiVersion": DataJob::api_version(&()),
        "kind": DataJob::kind(&()),
        "metadata": { "name": name, "namespace": namespace },
        "status": status,
    })
}

impl Bench {
    /// Measures the cases in `rounds` rounds and prints the table.
    pub(super) async fn request_cost(&self, rounds: usize) {
        let namespace = TestNamespace::new(&self.client, "cost").await;
        let targets = self.targets(namespace.name()).await;
        let idle = self.idle_control_plane_cpu().await;
        eprintln!(
            "request cost: kube-apiserver and etcd use {:.1} ms of CPU a second when idle",
            idle * 1000.0
        );
        let crds: Api<CustomResourceDefinition> = Api::all(self.client.clone());
        let with_rules = crds.get("datajobs.datajob.dev").await.expect("DataJob CRD");
        let without_rules = strip_rules(&with_rules);
        let mut costs: Vec<(Case, Costs)> =
            CASES.iter().map(|&case| (case, Costs::default())).collect();
        for round in 1..=rounds {
            eprintln!("request cost: round {round}/{rounds}");
            // Every round takes each case once, with the CRD's rules and without them.
            for rules in [true, false] {
                if !rules {
                    set_rules(&crds, &targets, without_rules.clone(), false).await;
                }
                for (case, costs) in &mut costs {
                    if case.needs_rules() != Some(!rules) {
                        let cpu = || self.control_plane_cpu();
                        targets.block(*case, cpu, idle, costs).await;
                    }
                }
                if !rules {
                    set_rules(&crds, &targets, with_rules.clone(), true).await;
                }
            }
        }
        print_costs(&costs, rounds);
        targets.release_pod().await;
        // The DataJob keeps its finalizer until an operator releases it.
        let _operator = self.start_operator(namespace.name());
        self.clean_up(namespace).await;
    }

    /// A running Job and a running DataJob (the operator started it, then stopped).
    async fn targets(&self, namespace: &str) -> Targets {
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), namespace);
        let datajobs: Api<DataJob> = Api::namespaced(self.client.clone(), namespace);
        jobs.create(&PostParams::default(), &job_manifest(NAME, false))
            .await
            .expect("create Job");
        datajobs
            .create(&PostParams::default(), &datajob_manifest(NAME))
            .await
            .expect("create DataJob");
        let operator = self.start_operator(namespace);
        watch::wait_for(&jobs, NAME, PHASE_LIMIT, job_running).await;
        let running = watch::wait_for(&datajobs, NAME, PHASE_LIMIT, |j: &DataJob| {
            j.status.as_ref().and_then(|s| s.state) == Some(JobState::Running)
        })
        .await;
        drop(operator);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let executor_pods = observe::live_pods(&pods, &running)
            .await
            .expect("list the DataJob's executor pods");
        let plan = pending_cancellation(&running, executor_pods);
        let status: DataJobStatus = running.status.clone().expect("a running job's status");
        // A second DataJob holds the smaller form of the same status, written as the operator
        // writes it.
        datajobs
            .create(&PostParams::default(), &datajob_manifest(SMALL))
            .await
            .expect("create DataJob");
        datajobs
            .patch_status(
                SMALL,
                &PatchParams::apply(STATUS_MANAGER).force(),
                &Patch::Apply(status_apply(SMALL, namespace, smaller(status.clone()))),
            )
            .await
            .expect("write the smaller status");
        pods.create(&PostParams::default(), &pod(POD, true))
            .await
            .expect("create Pod");
        // Published as the operator's apply publishes a decided event.
        let decided = plan.events.first().expect("the event of the state change");
        let event = Publisher::new(self.client.clone(), OPERATOR_NAME, None).event(
            &running.object_ref(&()),
            &Note {
                kind: decided.kind,
                reason: decided.reason.as_str(),
                action: "Reconcile",
                message: &decided.message,
            },
        );
        Targets {
            pods,
            events: Api::namespaced(self.client.clone(), namespace),
            event,
            jobs,
            datajobs,
            pending_cancellation: status_apply(NAME, namespace, plan.status.clone()),
            pending_cancellation_small: status_apply(SMALL, namespace, smaller(plan.status)),
        }
    }
}

impl Targets {
    /// Sends `BLOCK` requests of `case` in a row; records their latencies and the CPU per
    /// request the control plane used meanwhile (`cpu`: its CPU seconds so far), less `idle`
    /// (what it uses per second without requests: kwok's node heartbeats, the watches).
    async fn block(&self, case: Case, cpu: impl Fn() -> f64, idle: f64, costs: &mut Costs) {
        let before = cpu();
        let started = Instant::now();
        for _ in 0..BLOCK {
            let start = Instant::now();
            self.send(case).await;
            costs.latencies.push(start.elapsed());
        }
        let used = cpu() - before - idle * started.elapsed().as_secs_f64();
        costs.cpu_ms_per_request.push(used * 1000.0 / BLOCK as f64);
    }

    async fn send(&self, case: Case) {
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let result = match case {
            Case::JobSuspend => {
                dry_merge(
                    &self.jobs,
                    NAME,
                    json!({ "spec": { "suspend": true } }),
                    false,
                )
                .await
            }
            Case::JobStatus => {
                dry_merge(&self.jobs, NAME, json!({ "status": { "ready": 0 } }), true).await
            }
            Case::DataJobCancel | Case::DataJobCancelNoRules => {
                dry_merge(
                    &self.datajobs,
                    NAME,
                    json!({ "spec": { "cancel": true } }),
                    false,
                )
                .await
            }
            Case::DataJobStatus | Case::DataJobStatusNoRules | Case::DataJobStatusSmall => {
                let mut apply = PatchParams::apply(STATUS_MANAGER).force();
                apply.dry_run = true;
                let (name, body) = if case == Case::DataJobStatusSmall {
                    (SMALL, &self.pending_cancellation_small)
                } else {
                    (NAME, &self.pending_cancellation)
                };
                self.datajobs
                    .patch_status(name, &apply, &Patch::Apply(body))
                    .await
                    .map(drop)
            }
            Case::PodCreate => self
                .pods
                .create(&dry_run, &pod("cost-pod-new", false))
                .await
                .map(drop),
            Case::PodDelete => self
                .pods
                .delete(
                    POD,
                    &DeleteParams {
                        dry_run: true,
                        ..DeleteParams::default()
                    },
                )
                .await
                .map(drop),
            Case::PodFinalizerRemoval => dry_merge(&self.pods, POD, no_finalizers(), false).await,
            Case::EventCreate => self.events.create(&dry_run, &self.event).await.map(drop),
        };
        if let Err(error) = result {
            panic!("{}: {error}", case.label());
        }
    }

    /// Lets the pod go (its finalizer would keep the namespace).
    async fn release_pod(&self) {
        self.pods
            .patch(POD, &PatchParams::default(), &Patch::Merge(no_finalizers()))
            .await
            .expect("remove the pod's finalizer");
    }

    /// Whether the API server enforces the CRD's rules now: a dry-run change of the immutable
    /// `spec.dataPlane` is refused.
    async fn enforces_rules(&self) -> bool {
        let change = json!({ "spec": { "dataPlane": "dp-other" } });
        dry_merge(&self.datajobs, NAME, change, false)
            .await
            .is_err()
    }
}

/// A dry-run JSON merge patch of the object `name` (of its status when `status`).
async fn dry_merge<K>(api: &Api<K>, name: &str, patch: Value, status: bool) -> kube::Result<()>
where
    K: Clone + DeserializeOwned + Debug,
{
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let patch = Patch::Merge(patch);
    let patched = if status {
        api.patch_status(name, &params, &patch).await
    } else {
        api.patch(name, &params, &patch).await
    };
    patched.map(drop)
}

/// A merge patch that removes every finalizer.
fn no_finalizers() -> Value {
    json!({ "metadata": { "finalizers": null } })
}

/// A one-container pod (on no node: the cases do not need it to run), holding the result
/// finalizer when `finalizer`.
fn pod(name: &str, finalizer: bool) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "finalizers": if finalizer { vec![POD_FINALIZER] } else { Vec::new() },
        },
        "spec": {
            "nodeSelector": { "datajob.dev/bench": "no-such-node" },
            "containers": [{ "name": "main", "image": "registry.example/job:bench" }],
        },
    }))
    .expect("pod manifest")
}

/// The DataJob CRD without its `x-kubernetes-validations` rules.
fn strip_rules(crd: &CustomResourceDefinition) -> CustomResourceDefinition {
    fn strip(value: &mut Value) {
        match value {
            Value::Object(map) => {
                map.remove("x-kubernetes-validations");
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(crd).expect("CRD as JSON");
    strip(&mut value);
    serde_json::from_value(value).expect("CRD from JSON")
}

/// Replaces the DataJob CRD's spec with `crd`'s and waits until the API server serves it
/// (enforcing the rules or not, as `rules` says).
async fn set_rules(
    crds: &Api<CustomResourceDefinition>,
    targets: &Targets,
    crd: CustomResourceDefinition,
    rules: bool,
) {
    let mut current = crds.get(&crd.name_any()).await.expect("DataJob CRD");
    current.spec = crd.spec;
    crds.replace(&current.name_any(), &PostParams::default(), &current)
        .await
        .expect("replace the DataJob CRD");
    let deadline = Instant::now() + Duration::from_secs(60);
    while targets.enforces_rules().await != rules {
        assert!(
            Instant::now() < deadline,
            "the API server did not pick up the DataJob CRD change within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn print_costs(costs: &[(Case, Costs)], rounds: usize) {
    let reference = costs
        .iter()
        .find(|(case, _)| *case == Case::JobSuspend)
        .map(|(_, c)| {
            (
                median_ms(&c.latencies),
                super::median(c.cpu_ms_per_request.clone()),
            )
        })
        .expect("the reference case ran");
    println!();
    println!(
        "What one write costs the API server (dry run, {BLOCK} requests in a row per block, \
         {rounds} blocks per case and CRD; ratio against the Job's `suspend` patch)"
    );
    println!();
    println!(
        "| request | N | median latency ms (ratio) | API server + etcd CPU ms per request, median of blocks (ratio) |"
    );
    println!("|---|---|---|---|");
    for (case, c) in costs {
        let latency = median_ms(&c.latencies);
        let cpu = super::median(c.cpu_ms_per_request.clone());
        println!(
            "| {} | {} | {latency:.2} ({:.2}) | {cpu:.2} ({:.2}) |",
            case.label(),
            c.latencies.len(),
            latency / reference.0,
            cpu / reference.1,
        );
    }
}

fn median_ms(values: &[Duration]) -> f64 {
    super::median(values.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
}
