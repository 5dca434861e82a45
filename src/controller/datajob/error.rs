//! Errors of one DataJob reconcile, each naming the action and the object it failed on, with a
//! metric category and a retry policy. Waiting (a teardown in progress, a rejected pod about to
//! be recorded) is not an error: reconcile returns `Ok` with a requeue for it.

use std::time::Duration;

use crate::controller::kube_util::{backoff, is_conflict};
use crate::executor::BuildError;

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
    /// Reading the job's namespace (for a pool's namespace selector) failed.
    #[error("failed to read namespace {namespace}: {source}")]
    ReadNamespace {
        /// The namespace.
        namespace: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// A reconcile panicked; the panic was caught and the job is retried with backoff.
    #[error("reconciling DataJob {job} panicked: {message}")]
    Panicked {
        /// namespace/name of the job.
        job: String,
        /// The panic's message.
        message: String,
    },
    /// Creating the job's query ConfigMap failed.
    #[error("failed to create query ConfigMap {config_map}: {source}")]
    CreateQuery {
        /// namespace/name of the ConfigMap.
        config_map: String,
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
    /// Deleting an executor pod failed.
    #[error("failed to delete executor pod {pod}: {source}")]
    DeletePod {
        /// namespace/name of the pod.
        pod: String,
        /// The API error.
        #[source]
        source: kube::Error,
    },
    /// Removing the result finalizer of an executor pod failed.
    #[error(transparent)]
    ReleasePod(#[from] crate::controller::result_finalizer::ReleaseError),
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
    /// The job object lacks what every stored object has (name, namespace or uid).
    #[error("DataJob {job} has no {field}; it cannot be reconciled")]
    MalformedObject {
        /// What is known of the job's key.
        job: String,
        /// The missing metadata field.
        field: &'static str,
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

impl From<BuildError> for Error {
    fn from(error: BuildError) -> Self {
        Error::MalformedObject {
            job: error.job,
            field: error.field,
        }
    }
}

impl Error {
    /// Metric label of the error's kind.
    pub fn category(&self) -> &'static str {
        match self {
            Error::ListPods { .. } => "list_pods",
            Error::CreateQuery { .. } => "create_query",
            Error::ReadNamespace { .. } => "read_namespace",
            Error::Panicked { .. } => "panic",
            Error::CreatePod { .. } => "create_pod",
            Error::DeletePod { .. } => "delete_pod",
            Error::ReleasePod(_) => "release_pod",
            Error::WriteStatus { .. } => "write_status",
            Error::DeleteJob { .. } => "delete_job",
            Error::MalformedObject { .. } => "malformed_object",
            Error::Finalizer { .. } => "finalizer",
        }
    }

    /// When to try again: soon after a write conflict, after a backoff for API errors, and
    /// only on a change for objects that cannot be reconciled as they are.
    pub fn retry_after(&self, attempt: u32) -> Option<Duration> {
        match self {
            Error::MalformedObject { .. } => None,
            Error::WriteStatus { source, .. } if is_conflict(source) => {
                Some(Duration::from_millis(200))
            }
            _ => Some(backoff(attempt)),
        }
    }

    /// Whether the error is a lost optimistic-concurrency race (expected; retried at once).
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::WriteStatus { source, .. } if is_conflict(source))
    }
}
