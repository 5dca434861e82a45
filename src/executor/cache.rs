//! What the operator keeps of an executor pod in its cache: only what observe reads (name,
//! namespace, uid, labels, owners, finalizers (the driver's result finalizer), deletion mark and
//! grace period, node, phase, reason, message, the PodScheduled condition and the containers'
//! states). The environment (which carries the
//! whole query), the rest of the spec, managed fields, annotations and other conditions are
//! dropped before a pod is cached, so the cache's memory per job does not grow with what a
//! tenant writes.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus,
};
use kube::api::ObjectMeta;

/// Reduces a pod, in place, to what the controller reads.
pub fn strip_pod(pod: &mut Pod) {
    let meta = std::mem::take(&mut pod.metadata);
    pod.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        labels: meta.labels,
        owner_references: meta.owner_references,
        deletion_timestamp: meta.deletion_timestamp,
        deletion_grace_period_seconds: meta.deletion_grace_period_seconds,
        finalizers: meta.finalizers,
        ..ObjectMeta::default()
    };
    // The node, for a teardown stuck on a lost node.
    pod.spec = pod.spec.take().map(|spec| PodSpec {
        node_name: spec.node_name,
        ..PodSpec::default()
    });
    pod.status = pod.status.take().map(|status| PodStatus {
        phase: status.phase,
        reason: status.reason,
        message: status.message.map(|m| super::result::clean(&m, 1024)),
        // Why the scheduler cannot place the pod, if it cannot.
        conditions: status.conditions.map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == "PodScheduled")
                .map(|c| PodCondition {
                    type_: c.type_,
                    status: c.status,
                    reason: c.reason,
                    message: c.message.map(|m| super::result::clean(&m, 512)),
                    ..PodCondition::default()
                })
                .collect()
        }),
        container_statuses: status
            .container_statuses
            .map(|statuses| statuses.into_iter().map(strip_container).collect()),
        ..PodStatus::default()
    });
}

fn strip_container(status: ContainerStatus) -> ContainerStatus {
    ContainerStatus {
        name: status.name,
        state: status.state.map(|state| ContainerState {
            running: state.running,
            terminated: state.terminated,
            waiting: state.waiting,
        }),
        ..ContainerStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_cached_pod_keeps_what_observe_reads_and_nothing_else() {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {
                "name": "dj-x-1-driver", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "finalizers": ["datajob.dev/result"], "deletionGracePeriodSeconds": 30,
                "labels": { "datajob.dev/job-uid": "j" },
                "annotations": { "big": "x".repeat(10_000) },
                "managedFields": [{ "manager": "datajob-operator", "operation": "Apply" }],
                "ownerReferences": [{ "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob", "name": "x", "uid": "j" }],
            },
            "spec": { "containers": [{ "name": "executor", "env": [{ "name": "DATAJOB_NQL", "value": "q".repeat(100_000) }] }] },
            "status": {
                "phase": "Failed", "reason": "Evicted", "message": "low memory",
                "conditions": [{ "type": "Ready", "status": "False" }],
                "containerStatuses": [{
                    "name": "executor", "image": "i", "imageID": "sha", "ready": false, "restartCount": 0,
                    "state": { "terminated": { "exitCode": 3, "message": "m", "startedAt": "2026-01-01T00:00:00Z" } },
                }],
            },
        }))
        .expect("pod");
        let before = crate::executor::cache::tests::observed(&pod);
        strip_pod(&mut pod);
        assert_eq!(crate::executor::cache::tests::observed(&pod), before);
        let spec = pod.spec.as_ref().expect("the node is kept");
        assert!(spec.containers.is_empty(), "containers and env are dropped");
        let conditions = pod.status.as_ref().and_then(|s| s.conditions.as_ref());
        assert!(conditions.is_some_and(|c| c.is_empty()), "Ready is dropped");
        assert!(pod.metadata.annotations.is_none() && pod.metadata.managed_fields.is_none());
        let size = serde_json::to_string(&pod).expect("json").len();
        assert!(size < 1024, "a stripped pod is {size} bytes");
    }

    /// What observe reads of a pod.
    fn observed(pod: &Pod) -> String {
        let status = pod.status.as_ref().expect("status");
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            pod.metadata.name,
            pod.metadata.finalizers,
            pod.metadata.deletion_grace_period_seconds,
            pod.metadata.labels,
            pod.metadata.owner_references,
            pod.metadata.deletion_timestamp,
            status.phase,
            status.reason,
            status.message,
            status.container_statuses.as_ref().map(|c| c
                .iter()
                .map(|c| (c.name.clone(), c.state.clone()))
                .collect::<Vec<_>>())
        )
    }
}
