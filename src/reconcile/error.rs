//! Errors of one reconcile, each naming the action and the object it failed on.

use std::time::Duration;

/// What went wrong while reconciling a DataJob.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Listing a job's executor pods failed.
    #[error("failed to list executor pods of DataJob {job}: {source}")]
    ListPods {
        /// namespace/name of the job.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Creating an executor pod failed.
    #[error("failed to create executor pod {pod}: {source}")]
    CreatePod {
        /// namespace/name of the pod.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// The API server refused an executor pod as invalid (built from a spec it cannot accept).
    #[error("executor pod {pod} was rejected as invalid: {message}")]
    PodRejected {
        /// namespace/name of the pod.
        pod: String,
        /// The API server's reason.
        message: String,
    },
    /// Deleting an executor pod failed.
    #[error("failed to delete executor pod {pod}: {source}")]
    DeletePod {
        /// namespace/name of the pod.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Writing a job's status failed.
    #[error("failed to write status of DataJob {job}: {source}")]
    WriteStatus {
        /// namespace/name of the job.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting a finished job whose TTL expired failed.
    #[error("failed to delete finished DataJob {job}: {source}")]
    DeleteJob {
        /// namespace/name of the job.
        job: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Serializing a status patch failed.
    #[error("failed to serialize the status of DataJob {job}: {source}")]
    SerializeStatus {
        /// namespace/name of the job.
        job: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// The job object lacks what every stored object has (name, namespace or uid).
    #[error("DataJob {job} has no {field}; it cannot be reconciled")]
    MalformedObject {
        /// What is known of the job's key.
        job: String,
        /// The missing metadata field.
        field: &'static str,
    },
    /// A deleted job's pods are still terminating; its finalizer stays until they are gone.
    #[error("DataJob {job} is being deleted; waiting for {pods} executor pod(s) to terminate")]
    TeardownInProgress {
        /// namespace/name of the job.
        job: String,
        /// Pods still present.
        pods: usize,
    },
    /// The finalizer machinery failed (adding or removing `datajob.dev/teardown`).
    #[error("failed to manage the finalizer of DataJob {job}: {message}")]
    Finalizer {
        /// namespace/name of the job.
        job: String,
        /// What kube's finalizer helper reported.
        message: String,
    },
}

impl Error {
    /// Metric label of the error's kind.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ListPods { .. } => "list_pods",
            Error::CreatePod { .. } => "create_pod",
            Error::PodRejected { .. } => "pod_rejected",
            Error::DeletePod { .. } => "delete_pod",
            Error::WriteStatus { .. } => "write_status",
            Error::DeleteJob { .. } => "delete_job",
            Error::SerializeStatus { .. } => "serialize_status",
            Error::MalformedObject { .. } => "malformed_object",
            Error::TeardownInProgress { .. } => "teardown_in_progress",
            Error::Finalizer { .. } => "finalizer",
        }
    }

    /// When to try again: soon for teardown progress and write conflicts, after a backoff for
    /// API errors, and only on a change for objects that cannot be reconciled as they are.
    pub fn retry_after(&self, attempt: u32) -> Option<Duration> {
        match self {
            Error::MalformedObject { .. } | Error::SerializeStatus { .. } => None,
            Error::TeardownInProgress { .. } => Some(Duration::from_secs(2)),
            // The next reconcile records the rejection as the job's failure.
            Error::PodRejected { .. } => Some(Duration::from_millis(200)),
            Error::WriteStatus { source, .. } if is_conflict(source) => {
                Some(Duration::from_millis(200))
            }
            _ => Some(backoff(attempt)),
        }
    }
}

/// Whether an API error is a 409 Conflict (a stale read lost an optimistic-concurrency race).
pub fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

/// Whether an API error is a 404 Not Found.
pub fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// Exponential backoff from 1 s, capped at 5 minutes.
pub fn backoff(attempt: u32) -> Duration {
    let secs = 1u64 << attempt.min(8);
    Duration::from_secs(secs.min(300))
}
