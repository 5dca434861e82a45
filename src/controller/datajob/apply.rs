//! Apply: carries out a [`Plan`] against the API server. Status first (server-side apply on the
//! status subresource, guarded by the observed resourceVersion so a decision made on a stale
//! read is rejected instead of written) and at once the events of what it records, then pod
//! deletions, the removal of result finalizers the plan releases, and creations (all
//! idempotent), then metrics.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, DeleteParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::context::Context;
use super::error::Error;
use crate::OPERATOR_NAME;
use crate::api::{ComputePool, DataJob, DataJobStatus, JobState};
use crate::controller::events::{Note, Publisher};
use crate::controller::kube_util::{self, Guard, invalid_message, is_not_found, object_key};
use crate::controller::result_finalizer;
use crate::domain::{self, JobEvent, Plan};
use crate::executor::{ExecutorTemplate, LABEL_JOB_UID, RESULT_FINALIZER};

/// When to look again after the API server rejected an executor pod: the next pass observes
/// the rejection and decide records it as the job's failure.
const RECHECK_AFTER_REJECTION: Duration = Duration::from_millis(200);
/// The shortest requeue, so a plan asking to look again at once does not spin.
const MIN_REQUEUE: Duration = Duration::from_millis(50);

/// How the creation of an executor's pods ended.
enum Creation {
    /// Every planned pod exists.
    Done,
    /// The API server refused a pod as invalid, with this message.
    Rejected(String),
    /// A pod that is not the job's already has one of the executor's names.
    Conflict(String),
}

/// Carries out `plan` for `job` (as observed, with the pool the observation saw).
pub async fn apply(
    job: &DataJob,
    ctx: &Context,
    plan: &Plan,
    pool: Option<&ComputePool>,
) -> Result<Action, Error> {
    let namespace = job.namespace().unwrap_or_default();
    // Creating pods also goes through the guarded status write (a no-op when nothing changed):
    // pods are only ever created from an up-to-date view of the job.
    let previous = job.status.as_ref();
    if plan.writes_status(previous) {
        let guard = if plan.guarded(previous.and_then(|s| s.state)) {
            Guard::ObservedVersion
        } else {
            Guard::None
        };
        write_status(job, ctx, &plan.status, guard).await?;
    }
    // Right after the status write that records them: a pod request failing below cannot
    // lose the event of a state change already written.
    publish_events(&ctx.events, job, &plan.events);
    let pods = ctx.pods_api(&namespace);
    delete_pods(&pods, &namespace, &plan.delete).await?;
    for name in &plan.delete {
        ctx.deleted_pod(format!("{namespace}/{name}"));
    }
    force_delete_pods(&pods, &namespace, &plan.force_delete).await?;
    // After the status write: the outcome (or the teardown) is recorded.
    release_pods(ctx, &pods, &namespace, &plan.release_pods).await?;
    match create_executor(job, ctx, plan, pool, &pods).await? {
        Creation::Done => {}
        Creation::Rejected(message) => {
            info!(job = %object_key(job), %message, "the API server rejected an executor pod");
            ctx.record_rejection(&job.uid().unwrap_or_default(), &message);
            return Ok(Action::requeue(RECHECK_AFTER_REJECTION));
        }
        Creation::Conflict(message) => {
            warn!(job = %object_key(job), %message, "a pod squats on an executor name");
            ctx.record_conflict(&job.uid().unwrap_or_default(), &message);
            return Ok(Action::requeue(RECHECK_AFTER_REJECTION));
        }
    }
    record_transition(job, ctx, plan);
    if plan.delete_job {
        delete_job(&ctx.jobs_api(&namespace), job).await?;
        return Ok(Action::await_change());
    }
    Ok(match plan.requeue {
        Some(delay) => Action::requeue(delay.max(MIN_REQUEUE)),
        None => Action::await_change(),
    })
}

/// Writes `status` to `job`'s status subresource (server-side apply, the operator's field
/// manager) and notes the write, so a pass on the version it superseded waits for the watch.
pub async fn write_status(
    job: &DataJob,
    ctx: &Context,
    status: &DataJobStatus,
    guard: Guard,
) -> Result<(), Error> {
    let jobs = ctx.jobs_api(&job.namespace().unwrap_or_default());
    let version = kube_util::apply_status(&jobs, job, status, guard)
        .await
        .map_err(|source| Error::WriteStatus {
            job: object_key(job),
            source,
        })?;
    ctx.wrote(job, version.as_deref());
    Ok(())
}

/// Builds and creates the planned pods. A failure a retry may fix is also published as the
/// event decide names for it.
async fn create_executor(
    job: &DataJob,
    ctx: &Context,
    plan: &Plan,
    pool: Option<&ComputePool>,
    pods: &Api<Pod>,
) -> Result<Creation, Error> {
    if plan.create.is_empty() {
        return Ok(Creation::Done);
    }
    let template = ExecutorTemplate::resolve(job, plan.cluster_type(), pool, &ctx.defaults)?;
    let query = if template.query_file() {
        create_query(ctx, job, &template).await
    } else {
        Ok(Creation::Done)
    };
    let created = match query {
        Ok(Creation::Done) => create_pods(ctx, pods, job, &template, plan).await,
        other => other,
    };
    let uid = job.uid().unwrap_or_default();
    match &created {
        Ok(Creation::Done) => ctx.set_create_refusal(&uid, None),
        Err(error @ Error::CreatePod { source, .. }) => {
            // A refusal that may pass (a quota) is shown on the job until its start timeout.
            ctx.set_create_refusal(&uid, kube_util::refusal(source));
            let event = domain::executor_create_failed(error.to_string());
            publish_events(&ctx.events, job, &[event]);
        }
        _ => {}
    }
    created
}

/// Counts and logs a state change. (A job that finished gives its pool slot back when the
/// cache shows it: [`Context::job_changed`].)
fn record_transition(job: &DataJob, ctx: &Context, plan: &Plan) {
    let previous = job.status.as_ref().and_then(|s| s.state);
    if let Some(state) = plan.transition(previous) {
        ctx.metrics.observe_transition(state.as_str());
        info!(job = %object_key(job), from = ?previous.map(JobState::as_str), to = state.as_str(), "state changed");
    }
    if plan.status.state.is_some_and(JobState::is_terminal) {
        ctx.forget_rejection(&job.uid().unwrap_or_default());
    }
}

/// Creates the planned pods; a pod that already exists (same deterministic name) counts as
/// created.
async fn create_pods(
    ctx: &Context,
    pods: &Api<Pod>,
    job: &DataJob,
    template: &ExecutorTemplate,
    plan: &Plan,
) -> Result<Creation, Error> {
    let Some(owner) = job.controller_owner_ref(&()) else {
        return Err(Error::MalformedObject {
            job: object_key(job),
            field: "uid",
        });
    };
    let params = PostParams {
        field_manager: Some(OPERATOR_NAME.to_string()),
        ..PostParams::default()
    };
    for slot in &plan.create {
        match pods
            .create(&params, &template.pod(slot, owner.clone()))
            .await
        {
            Ok(_) => {
                ctx.created_pod(format!("{}/{}", template.namespace, slot.name));
                debug!(pod = %slot.name, "created executor pod");
            }
            Err(source) if kube_util::is_conflict(&source) => {
                if let Some(message) = squatter(pods, job, &slot.name).await? {
                    return Ok(Creation::Conflict(message));
                }
                ctx.created_pod(format!("{}/{}", template.namespace, slot.name));
                debug!(pod = %slot.name, "executor pod already exists");
            }
            Err(source) => {
                if let Some(message) = invalid_message(&source) {
                    return Ok(Creation::Rejected(message.to_string()));
                }
                return Err(Error::CreatePod {
                    pod: format!("{}/{}", template.namespace, slot.name),
                    source,
                });
            }
        }
    }
    Ok(Creation::Done)
}

/// Creates the job's query ConfigMap (idempotent); one that exists but is not the job's is a
/// conflict, never used.
async fn create_query(
    ctx: &Context,
    job: &DataJob,
    template: &ExecutorTemplate,
) -> Result<Creation, Error> {
    let Some(owner) = job.controller_owner_ref(&()) else {
        return Err(Error::MalformedObject {
            job: object_key(job),
            field: "uid",
        });
    };
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &template.namespace);
    let config_map = template.query_config_map(owner);
    let name = config_map.name_any();
    let failed = |source| Error::CreateQuery {
        config_map: format!("{}/{name}", template.namespace),
        source,
    };
    let params = PostParams {
        field_manager: Some(OPERATOR_NAME.to_string()),
        ..PostParams::default()
    };
    match config_maps.create(&params, &config_map).await {
        Ok(_) => Ok(Creation::Done),
        Err(source) if kube_util::is_conflict(&source) => {
            let existing = config_maps.get(&name).await.map_err(failed)?;
            let uid = job.uid().unwrap_or_default();
            if existing.owner_references().iter().any(|o| o.uid == uid) {
                Ok(Creation::Done)
            } else {
                Ok(Creation::Conflict(format!(
                    "ConfigMap {}/{name} already exists but does not belong to this DataJob; it is left alone: delete it or recreate the DataJob",
                    template.namespace
                )))
            }
        }
        Err(source) => Err(failed(source)),
    }
}

/// When the existing pod `name` is not the job's (no owner reference to the job, or not
/// labelled with its uid), why it must not be adopted.
async fn squatter(pods: &Api<Pod>, job: &DataJob, name: &str) -> Result<Option<String>, Error> {
    let uid = job.uid().unwrap_or_default();
    let existing = pods
        .get_opt(name)
        .await
        .map_err(|source| Error::CreatePod {
            pod: format!("{}/{name}", job.namespace().unwrap_or_default()),
            source,
        })?;
    let Some(pod) = existing else {
        // Gone again since the conflict: the next pass creates it.
        return Ok(None);
    };
    let owned = pod.owner_references().iter().any(|o| o.uid == uid);
    let labelled = pod.labels().get(LABEL_JOB_UID) == Some(&uid);
    Ok((!owned || !labelled).then(|| {
        format!(
            "pod {}/{name} already exists but does not belong to this DataJob (owner or {LABEL_JOB_UID} label differs); it is left alone: delete it or recreate the DataJob",
            job.namespace().unwrap_or_default()
        )
    }))
}

/// Deletes pods gracefully (each with its own grace period); a pod already gone counts as
/// deleted.
pub async fn delete_pods(pods: &Api<Pod>, namespace: &str, names: &[String]) -> Result<(), Error> {
    delete_pods_with(pods, namespace, names, &DeleteParams::default()).await
}

/// Deletes pods stuck on a lost node at once (grace period 0): the API server removes them
/// without waiting for a kubelet ([`crate::domain::teardown`]).
pub async fn force_delete_pods(
    pods: &Api<Pod>,
    namespace: &str,
    names: &[String],
) -> Result<(), Error> {
    for name in names {
        warn!(pod = %format!("{namespace}/{name}"), "force-deleting an executor pod stuck on a lost node");
    }
    let params = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    delete_pods_with(pods, namespace, names, &params).await
}

async fn delete_pods_with(
    pods: &Api<Pod>,
    namespace: &str,
    names: &[String],
    params: &DeleteParams,
) -> Result<(), Error> {
    for name in names {
        match pods.delete(name, params).await {
            Ok(_) => debug!(pod = %name, "deleting executor pod"),
            Err(source) if is_not_found(&source) => {}
            Err(source) => {
                return Err(Error::DeletePod {
                    pod: format!("{namespace}/{name}"),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Removes the result finalizer of the pods `names` (their finalizers as cached save a read),
/// and notes each, so a pass before the cache shows it does not remove it again.
pub async fn release_pods(
    ctx: &Context,
    pods: &Api<Pod>,
    namespace: &str,
    names: &[String],
) -> Result<(), Error> {
    for name in names {
        let cached = ctx
            .stores
            .pods
            .get(&ObjectRef::new(name).within(namespace))
            .map(|pod| pod.finalizers().to_vec())
            .filter(|finalizers| finalizers.iter().any(|f| f == RESULT_FINALIZER));
        if result_finalizer::release(pods, namespace, name, cached).await? {
            debug!(pod = %name, "removed the result finalizer");
        }
        ctx.released_pod(format!("{namespace}/{name}"));
    }
    Ok(())
}

/// Deletes a finished job whose TTL expired, only if it is still the same object.
async fn delete_job(jobs: &Api<DataJob>, job: &DataJob) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: job.uid(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match jobs.delete(&job.name_any(), &params).await {
        Ok(_) => Ok(()),
        Err(source) if is_not_found(&source) => Ok(()),
        Err(source) => Err(Error::DeleteJob {
            job: object_key(job),
            source,
        }),
    }
}

/// Publishes events on the job in the background (in order, timed now); a failure to publish
/// is logged, never fatal.
pub(super) fn publish_events(publisher: &Publisher, job: &DataJob, events: &[JobEvent]) {
    let notes: Vec<Note> = events
        .iter()
        .map(|event| Note {
            kind: event.kind,
            reason: event.reason.as_str(),
            action: "Reconcile",
            message: &event.message,
        })
        .collect();
    publisher.emit(&job.object_ref(&()), &notes);
}
