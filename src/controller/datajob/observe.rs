//! Observe: turns the cluster's objects into the complete [`Observation`] that `decide` works
//! on: the DataJob, its executor pods, its pool with the admission decided for it, and a pod
//! rejection the API server reported. Reads come from the controller's caches; [`live_pods`]
//! asks the API server directly when a decision depends on pods being gone.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tracing::warn;

use super::context::Context;
use super::error::Error;
use crate::api::{ComputePool, DataJob};
use crate::controller::kube_util::object_key;
use crate::domain::policy::{self, Refusal};
use crate::domain::{
    self, Cause, NodeView, Observation, ObservedPod, PodPhase, PoolView, Termination,
};
use crate::executor::{self, CONTAINER_NAME, LABEL_JOB_UID, Role};

/// One job as observed, with the pool the observation saw (the pod build needs it).
pub struct Observed {
    /// What decide works on.
    pub observation: Observation,
    /// The job's pool, if it names one that exists.
    pub pool: Option<Arc<ComputePool>>,
}

/// Observes one job from the caches. `namespace_labels` are the labels of the job's namespace
/// when its pool has a namespace selector (see [`namespace_labels`]).
pub fn observe(
    job: &DataJob,
    ctx: &Context,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Observed {
    let pool = ctx.pool(job);
    let uid = job.uid().unwrap_or_default();
    let refusal = refusal(job, ctx, pool.as_deref(), namespace_labels, &uid);
    // A refused job takes no slot.
    let admitted = refusal.is_none() && pool.as_deref().is_some_and(|pool| ctx.admit(job, pool));
    let observation = Observation {
        now: now(),
        name: job.name_any(),
        generation: job.meta().generation.unwrap_or(0),
        spec: job.spec.clone(),
        status: job.status.clone().unwrap_or_default(),
        pods: cached_pods(ctx, job),
        pool: pool_view(job, pool.as_deref(), admitted),
        nodes: BTreeMap::new(),
        rejection: ctx.rejection(&uid),
        create_refusal: ctx.create_refusal(&uid),
        refusal,
        arrival: ctx.stores.index.arrival(&uid),
        uid,
    };
    Observed { observation, pool }
}

/// A squatter found on an executor name, else what the tenant boundary refuses.
fn refusal(
    job: &DataJob,
    ctx: &Context,
    pool: Option<&ComputePool>,
    namespace_labels: Option<&BTreeMap<String, String>>,
    uid: &str,
) -> Option<Refusal> {
    if let Some(message) = ctx.conflict(uid) {
        return Some(Refusal::ExecutorConflict(message));
    }
    let image = executor::image(job, pool, &ctx.defaults);
    policy::check(
        &job.spec,
        &job.namespace().unwrap_or_default(),
        namespace_labels,
        pool,
        &image,
        &ctx.config.allowed_image_prefixes,
    )
    .err()
}

/// The labels of the job's namespace, read from the API server only when they matter: the
/// job has no executor yet and its pool selects namespaces. None when they do not matter, or
/// when the namespace cannot be read (the pool then refuses the job rather than guess).
pub async fn namespace_labels(
    job: &DataJob,
    ctx: &Context,
) -> Result<Option<BTreeMap<String, String>>, Error> {
    let selects = ctx
        .pool(job)
        .is_some_and(|pool| pool.spec.namespace_selector.is_some());
    let has_executor = job.status.as_ref().is_some_and(|s| s.executor.is_some());
    if !selects || has_executor {
        return Ok(None);
    }
    let name = job.namespace().unwrap_or_default();
    match Api::<Namespace>::all(ctx.client.clone())
        .get_opt(&name)
        .await
    {
        Ok(namespace) => Ok(namespace.map(|ns| ns.labels().clone())),
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(None),
        Err(source) => Err(Error::ReadNamespace {
            namespace: name,
            source,
        }),
    }
}

/// The current time, truncated to whole seconds (the precision status times are stored with).
pub fn now() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Converts one executor pod.
pub fn observe_pod(pod: &Pod) -> ObservedPod {
    let status = pod.status.as_ref();
    let phase = match status.and_then(|s| s.phase.as_deref()) {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        _ => PodPhase::Pending,
    };
    let container = status
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == CONTAINER_NAME).or(cs.first()));
    let state = container.and_then(|c| c.state.as_ref());
    let termination = state
        .and_then(|s| s.terminated.as_ref())
        .map(|t| Termination {
            exit_code: t.exit_code,
            message: t.message.clone().unwrap_or_default(),
            finished_at: t.finished_at.as_ref().map(|f| f.0),
        });
    let started_at = state
        .and_then(|s| s.running.as_ref().and_then(|r| r.started_at.clone()))
        .or_else(|| state.and_then(|s| s.terminated.as_ref().and_then(|t| t.started_at.clone())))
        .map(|t| t.0);
    ObservedPod {
        name: pod.name_any(),
        role: pod
            .labels()
            .get(executor::LABEL_ROLE)
            .and_then(|r| Role::from_label(r)),
        phase,
        terminating: pod.metadata.deletion_timestamp.is_some(),
        deletion_deadline: pod.metadata.deletion_timestamp.as_ref().map(|t| t.0),
        deletion_requested_at: deletion_requested_at(pod),
        holds_result: holds_result(pod),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        reason: status.and_then(|s| s.reason.clone()),
        message: status.and_then(|s| s.message.clone()),
        termination,
        started_at,
        waiting: state
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| cause(w.reason.as_deref(), w.message.as_deref())),
        unschedulable: status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
            .filter(|c| c.status == "False")
            .and_then(|c| cause(c.reason.as_deref(), c.message.as_deref())),
    }
}

/// Whether the pod carries the result finalizer.
pub fn holds_result(pod: &Pod) -> bool {
    pod.finalizers()
        .iter()
        .any(|f| f == executor::RESULT_FINALIZER)
}

/// When the pod's deletion was asked for: its deletion timestamp minus its grace period (the
/// API server keeps that difference when a later delete shortens the grace period).
fn deletion_requested_at(pod: &Pod) -> Option<Timestamp> {
    let deadline = pod.metadata.deletion_timestamp.as_ref()?.0;
    let grace = pod.metadata.deletion_grace_period_seconds.unwrap_or(0);
    Some(domain::clock::before(deadline, grace))
}

/// The nodes of the pods whose teardown is stuck, read from the API server (only those: a
/// stuck teardown is rare). A node that cannot be read is left out, so its pods are not
/// force-deleted.
pub async fn stuck_nodes(
    ctx: &Context,
    pods: &[ObservedPod],
    now: Timestamp,
) -> BTreeMap<String, NodeView> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut nodes = BTreeMap::new();
    for pod in domain::teardown::stuck(pods, now) {
        let Some(name) = pod.node.clone() else {
            continue;
        };
        if nodes.contains_key(&name) {
            continue;
        }
        if let Some(view) = ctx.recent_node(&name) {
            nodes.insert(name, view);
            continue;
        }
        match api.get_opt(&name).await {
            Ok(node) => {
                let view = node.map_or(NodeView::Gone, |n| node_view(&n));
                ctx.node_read(&name, &view);
                nodes.insert(name, view);
            }
            Err(error) => {
                warn!(node = %name, %error, "cannot read the node of a stuck executor pod")
            }
        }
    }
    nodes
}

/// Readiness and the out-of-service taint of a node. A node that never reported Ready counts
/// as not Ready since it was created.
fn node_view(node: &Node) -> NodeView {
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    let not_ready_since = match ready {
        Some(c) if c.status == "True" => None,
        Some(c) => c.last_transition_time.as_ref().map(|t| t.0),
        None => node.metadata.creation_timestamp.as_ref().map(|t| t.0),
    };
    let out_of_service = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| {
            ts.iter()
                .any(|t| t.key == domain::teardown::OUT_OF_SERVICE_TAINT)
        });
    NodeView::Present {
        not_ready_since,
        out_of_service,
    }
}

/// A cause from a reason and a message (cut to what status may carry); None without a reason.
fn cause(reason: Option<&str>, message: Option<&str>) -> Option<Cause> {
    Some(Cause {
        reason: executor::result::clean(reason.filter(|r| !r.is_empty())?, 128),
        message: executor::result::clean(message.unwrap_or_default(), 512),
    })
}

/// The job's executor pods from the pod cache, sorted by name. Pod names are deterministic, so
/// this looks up the recorded executor's slots by name (not a scan of every cached pod); a
/// decision that needs to know that no pod at all is left confirms it with [`live_pods`].
/// A pod this instance just created that the cache does not show yet counts as existing and
/// pending, so it is not created twice; one it just deleted counts as terminating, so it is
/// not deleted twice.
fn cached_pods(ctx: &Context, job: &DataJob) -> Vec<ObservedPod> {
    let pods: &Store<Pod> = &ctx.stores.pods;
    let (Some(uid), Some(namespace)) = (job.uid(), job.namespace()) else {
        return Vec::new();
    };
    let Some(status) = &job.status else {
        return Vec::new();
    };
    let Some(executor) = &status.executor else {
        return Vec::new();
    };
    let cluster_type = status.cluster_type.unwrap_or_default();
    let workers = domain::workers(&job.spec);
    let mut observed: Vec<ObservedPod> = executor::pod_slots(executor, cluster_type, workers)
        .iter()
        .filter_map(|slot| {
            let cached = pods.get(&ObjectRef::new(&slot.name).within(&namespace));
            let key = format!("{namespace}/{}", slot.name);
            match cached {
                Some(pod) => {
                    ctx.expects_pod(&key, true);
                    let mut observed = observe_pod(&pod);
                    // A pod this instance just deleted is terminating, whatever the cache says;
                    // one it just released no longer holds the result finalizer.
                    observed.terminating |= ctx.deleting_pod(&key, observed.terminating);
                    observed.holds_result &= !ctx.releasing_pod(&key, !observed.holds_result);
                    (pod.labels().get(LABEL_JOB_UID) == Some(&uid)).then_some(observed)
                }
                None => ctx
                    .expects_pod(&key, false)
                    .then(|| just_created(&slot.name, slot.role)),
            }
        })
        .collect();
    observed.sort_by(|a, b| a.name.cmp(&b.name));
    observed
}

/// A pod created a moment ago, as decide should see it: existing, not started, a driver with
/// its result finalizer.
fn just_created(name: &str, role: Role) -> ObservedPod {
    ObservedPod {
        role: Some(role),
        holds_result: role == Role::Driver,
        ..ObservedPod::new(name, PodPhase::Pending)
    }
}

/// The job's executor pods read from the API server (a consistent read, not a cache).
pub async fn live_pods(pods: &Api<Pod>, job: &DataJob) -> Result<Vec<ObservedPod>, Error> {
    let uid = job.uid().unwrap_or_default();
    let list = pods
        .list(&ListParams::default().labels(&executor::job_pods_selector(&uid)))
        .await
        .map_err(|source| Error::ListPods {
            job: object_key(job),
            source,
        })?;
    let mut observed: Vec<ObservedPod> = list.items.iter().map(observe_pod).collect();
    observed.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(observed)
}

/// The pool view of a job, given the pool (if it exists) and whether the job is admitted.
fn pool_view(job: &DataJob, pool: Option<&ComputePool>, admitted: bool) -> PoolView {
    match (&job.spec.compute_pool, pool) {
        (None, _) => PoolView::NotRequested,
        (Some(name), None) => PoolView::Missing { name: name.clone() },
        (Some(name), Some(pool)) => PoolView::Present {
            name: name.clone(),
            cluster_type: pool.spec.cluster_type,
            admitted,
            max_concurrent_jobs: pool.spec.max_concurrent_jobs,
            start_timeout_seconds: pool.spec.start_timeout_seconds,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_pod_shows_when_its_deletion_was_asked_for_and_its_result_finalizer() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "dj-x-1-driver", "finalizers": ["example.com/other", executor::RESULT_FINALIZER],
                "deletionTimestamp": "2026-01-01T00:00:30Z", "deletionGracePeriodSeconds": 30,
            },
            "status": { "phase": "Succeeded", "containerStatuses": [{
                "name": "executor", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "finishedAt": "2026-01-01T00:00:00Z" } },
            }]},
        }))
        .expect("pod");
        let observed = observe_pod(&pod);
        let at = |s: &str| s.parse::<Timestamp>().expect("time");
        assert!(observed.holds_result && observed.terminating);
        assert_eq!(
            observed.deletion_requested_at,
            Some(at("2026-01-01T00:00:00Z"))
        );
        let finished = observed.termination.as_ref().and_then(|t| t.finished_at);
        assert_eq!(finished, Some(at("2026-01-01T00:00:00Z")));
        assert!(
            observed.finished_before_deletion(),
            "the same second counts as before"
        );
    }
}
