//! Apply: carries out a [`Plan`] against the API server. Status first (server-side apply on the
//! status subresource, one field manager, guarded by the observed resourceVersion so a decision
//! made on a stale read is rejected instead of written), then pod deletions and creations (both
//! idempotent), then events.

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, warn};

use super::decide::{EventKind, JobEvent, Plan};
use super::error::{Error, is_not_found};
use super::observe::object_key;
use crate::OPERATOR_NAME;
use crate::api::{DataJob, DataJobStatus};
use crate::executor::{ExecutorTemplate, PodSlot};

/// Writes the job's status by server-side apply, failing with a conflict when the job changed
/// since `job` was read.
pub async fn write_status(
    jobs: &Api<DataJob>,
    job: &DataJob,
    status: &DataJobStatus,
) -> Result<(), Error> {
    let key = object_key(job);
    let name = job.name_any();
    let patch = json!({
        "apiVersion": DataJob::api_version(&()),
        "kind": DataJob::kind(&()),
        "metadata": {
            "name": name,
            "namespace": job.namespace(),
            "resourceVersion": job.resource_version(),
        },
        "status": serde_json::to_value(status).map_err(|source| Error::SerializeStatus {
            job: key.clone(),
            source,
        })?,
    });
    jobs.patch_status(
        &name,
        &PatchParams::apply(OPERATOR_NAME).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus { job: key, source })?;
    Ok(())
}

/// Creates the planned pods; a pod that already exists (same deterministic name) counts as
/// created.
pub async fn create_pods(
    pods: &Api<Pod>,
    job: &DataJob,
    template: &ExecutorTemplate,
    slots: &[PodSlot],
) -> Result<(), Error> {
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
    for slot in slots {
        let pod = template.pod(slot, owner.clone());
        match pods.create(&params, &pod).await {
            Ok(_) => debug!(pod = %slot.name, "created executor pod"),
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(pod = %slot.name, "executor pod already exists");
            }
            Err(kube::Error::Api(status)) if status.code == 422 => {
                return Err(Error::PodRejected {
                    pod: format!("{}/{}", template.namespace, slot.name),
                    message: status.message.clone(),
                });
            }
            Err(source) => {
                return Err(Error::CreatePod {
                    pod: format!("{}/{}", template.namespace, slot.name),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Deletes pods gracefully (each with its own grace period); a pod already gone counts as
/// deleted.
pub async fn delete_pods(pods: &Api<Pod>, namespace: &str, names: &[String]) -> Result<(), Error> {
    for name in names {
        match pods.delete(name, &DeleteParams::default()).await {
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

/// Deletes a finished job whose TTL expired, only if it is still the same object.
pub async fn delete_job(jobs: &Api<DataJob>, job: &DataJob) -> Result<(), Error> {
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

/// Publishes events on the job; a failure to publish is logged, never fatal.
pub async fn publish_events(recorder: &Recorder, job: &DataJob, events: &[JobEvent]) {
    let reference = job.object_ref(&());
    for event in events {
        let published = recorder
            .publish(
                &Event {
                    type_: match event.kind {
                        EventKind::Normal => EventType::Normal,
                        EventKind::Warning => EventType::Warning,
                    },
                    reason: event.reason.to_string(),
                    note: Some(truncate_note(&event.message)),
                    action: "Reconcile".to_string(),
                    secondary: None,
                },
                &reference,
            )
            .await;
        if let Err(error) = published {
            warn!(job = %object_key(job), reason = event.reason, %error, "failed to publish event");
        }
    }
}

/// Event notes are limited to 1 kB.
fn truncate_note(message: &str) -> String {
    if message.len() <= 1000 {
        return message.to_string();
    }
    let mut end = 1000;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &message[..end])
}

/// Whether the plan changes the recorded status.
pub fn status_changed(job: &DataJob, plan: &Plan) -> bool {
    job.status.as_ref() != Some(&plan.status)
}
