//! The domain's vocabulary: what observe hands to decide ([`Observation`]), what decide hands
//! to apply ([`Plan`]), and the typed names decisions are made in ([`Reason`],
//! [`ConditionType`]). Plain data only; the strings the API shows are produced at the edge
//! ([`Reason::as_str`], [`ConditionType::as_str`]).

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;

use crate::api::{ClusterType, DataJobSpec, DataJobStatus, JobState};
use crate::executor::{PodSlot, Role};

/// How often a live, non-terminal job is looked at even when nothing changes.
pub const RESYNC: Duration = Duration::from_secs(300);

/// Phase of an executor pod, as the kubelet reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PodPhase {
    /// Accepted, not all containers started.
    Pending,
    /// Containers running.
    Running,
    /// All containers exited 0.
    Succeeded,
    /// A container failed or the pod was rejected or evicted.
    Failed,
    /// The node stopped reporting.
    Unknown,
}

/// How an executor container ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Termination {
    /// The container's exit code.
    pub exit_code: i32,
    /// The container's termination message.
    pub message: String,
    /// When the container ended, if known.
    pub finished_at: Option<Timestamp>,
}

/// One executor pod of the job, as observed.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedPod {
    /// Pod name.
    pub name: String,
    /// Role label, if it parsed.
    pub role: Option<Role>,
    /// Pod phase.
    pub phase: PodPhase,
    /// Whether the pod has a deletion timestamp.
    pub terminating: bool,
    /// When a pod being deleted should be gone (its deletion timestamp: the deletion's time
    /// plus the grace period).
    pub deletion_deadline: Option<Timestamp>,
    /// When its deletion was asked for (the deletion timestamp minus the grace period).
    pub deletion_requested_at: Option<Timestamp>,
    /// Whether it still carries the result finalizer (`executor::RESULT_FINALIZER`).
    pub holds_result: bool,
    /// The node the pod is bound to, if any.
    pub node: Option<String>,
    /// The pod's status.reason (for example Evicted), if any.
    pub reason: Option<String>,
    /// The pod's status.message, if any.
    pub message: Option<String>,
    /// The executor container's termination, once it ended.
    pub termination: Option<Termination>,
    /// When the executor container started running.
    pub started_at: Option<Timestamp>,
    /// Why the executor container waits to start (the kubelet's reason and message), if it
    /// does.
    pub waiting: Option<Cause>,
    /// Why the scheduler cannot place the pod (condition PodScheduled=False), if it cannot.
    pub unschedulable: Option<Cause>,
}

/// A reason and message from the cluster (a container's waiting state, a pod condition, an
/// API refusal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// The machine-readable reason, for example `ImagePullBackOff` or `Unschedulable`.
    pub reason: String,
    /// The human-readable message.
    pub message: String,
}

impl ObservedPod {
    /// A pod named `name` in `phase`, not being deleted, with nothing else known.
    pub fn new(name: &str, phase: PodPhase) -> Self {
        ObservedPod {
            name: name.to_string(),
            role: None,
            phase,
            terminating: false,
            deletion_deadline: None,
            deletion_requested_at: None,
            holds_result: false,
            node: None,
            reason: None,
            message: None,
            termination: None,
            started_at: None,
            waiting: None,
            unschedulable: None,
        }
    }

    /// Whether the pod's containers have all ended.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    /// Whether its containers ended before anyone asked to delete it (or it is not being
    /// deleted): what a finished driver wrote then is its own report, not the deletion's doing.
    /// A container that ended in the same second as the request counts as before it.
    pub fn finished_before_deletion(&self) -> bool {
        let finished = self.termination.as_ref().and_then(|t| t.finished_at);
        self.is_finished()
            && (!self.terminating
                || matches!((finished, self.deletion_requested_at), (Some(f), Some(r)) if f <= r))
    }

    /// Whether the kubelet evicted the pod.
    pub fn is_evicted(&self) -> bool {
        self.reason.as_deref() == Some("Evicted")
    }
}

/// What is known about the job's compute pool.
#[derive(Clone, Debug, PartialEq)]
pub enum PoolView {
    /// The job names no pool.
    NotRequested,
    /// The job names a pool that does not exist (yet).
    Missing {
        /// The pool's name.
        name: String,
    },
    /// The pool exists.
    Present {
        /// The pool's name.
        name: String,
        /// The pool's default cluster type.
        cluster_type: ClusterType,
        /// Whether the job may hold executors now (room in the pool, or it already holds them).
        admitted: bool,
        /// The pool's limit, for messages (0 = unlimited).
        max_concurrent_jobs: i32,
        /// The pool's default start timeout, in seconds.
        start_timeout_seconds: Option<i64>,
    },
}

/// What is known about the node of a pod whose teardown is stuck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeView {
    /// The Node object does not exist.
    Gone,
    /// The Node exists.
    Present {
        /// Since when its Ready condition is not True (None while it is Ready).
        not_ready_since: Option<Timestamp>,
        /// Whether it carries the taint `node.kubernetes.io/out-of-service`.
        out_of_service: bool,
    },
}

/// Everything decide needs about one job.
#[derive(Clone, Debug)]
pub struct Observation {
    /// The current time, to the second.
    pub now: Timestamp,
    /// Name of the DataJob.
    pub name: String,
    /// uid of the DataJob.
    pub uid: String,
    /// metadata.generation.
    pub generation: i64,
    /// The spec.
    pub spec: DataJobSpec,
    /// The current status (default when the object has none).
    pub status: DataJobStatus,
    /// The job's executor pods (those labelled with its uid).
    pub pods: Vec<ObservedPod>,
    /// The job's pool, with the admission decided for it.
    pub pool: PoolView,
    /// Why the API server refused to create an executor pod (an invalid pod built from the
    /// spec); None when no creation was refused.
    pub rejection: Option<String>,
    /// Why the API server last refused to create an executor pod for a reason that may pass
    /// (403: a ResourceQuota, an admission policy); None once a creation succeeded.
    pub create_refusal: Option<Cause>,
    /// The nodes of the job's pods whose teardown is stuck ([`crate::domain::teardown`]), by
    /// name; a node that could not be read is left out.
    pub nodes: std::collections::BTreeMap<String, NodeView>,
    /// Why the tenant boundary refuses the job ([`crate::domain::policy`]), or a pod that
    /// squats on one of its executor's names; None when nothing is refused.
    pub refusal: Option<crate::domain::policy::Refusal>,
    /// When the operator first saw the job (its watch, or the list it was found in), if it
    /// noted it. Recorded as `status.arrivedAt` with the `pending` record.
    pub arrival: Option<Timestamp>,
}

/// Severity of an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Something expected happened.
    Normal,
    /// Something the user may need to act on.
    Warning,
}

/// An event to publish on the DataJob.
#[derive(Clone, Debug, PartialEq)]
pub struct JobEvent {
    /// Severity.
    pub kind: EventKind,
    /// Why it was published.
    pub reason: Reason,
    /// What happened.
    pub message: String,
}

/// What to do about one job.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The status to record (written before any pod is created or deleted).
    pub status: DataJobStatus,
    /// Pods to create (idempotently).
    pub create: Vec<PodSlot>,
    /// Pods to delete gracefully.
    pub delete: Vec<String>,
    /// Pods to delete at once (grace period 0): stuck on a node that is lost.
    pub force_delete: Vec<String>,
    /// Pods whose result finalizer to remove, after the status write and the deletions: the
    /// status (as observed, or as written by this plan) records the job's outcome, or the job
    /// is torn down ([`crate::domain::release`]).
    pub release_pods: Vec<String>,
    /// Events to publish once the status is recorded.
    pub events: Vec<JobEvent>,
    /// When to look again if nothing else happens; None waits for a change.
    pub requeue: Option<Duration>,
    /// The decision relies on the job having no executor pod: confirm with a fresh read of
    /// the API server before writing it.
    pub requires_absence: bool,
    /// The job finished longer ago than its TTL: delete the DataJob.
    pub delete_job: bool,
}

impl Plan {
    /// The cluster type of the pods in [`Plan::create`]: decide records it in status before it
    /// plans any pod, so the pod build never resolves it again.
    pub fn cluster_type(&self) -> ClusterType {
        self.status.cluster_type.unwrap_or_default()
    }

    /// The state the plan moves the job to, when it differs from `previous`.
    pub fn transition(&self, previous: Option<JobState>) -> Option<JobState> {
        self.status.state.filter(|state| previous != Some(*state))
    }

    /// Whether the status must be written, given the status observed: when it changed, and
    /// before pods are created even when it did not (that write is the double-executor guard:
    /// pods are only created from an up-to-date view). An unchanged status is not rewritten.
    pub fn writes_status(&self, observed: Option<&DataJobStatus>) -> bool {
        observed != Some(&self.status) || !self.create.is_empty()
    }

    /// Whether the status write must fail when the job changed since it was observed (sent
    /// with the observed resourceVersion): before pods are created (no second executor), and
    /// when the state changes (a decision from a stale view must not overwrite a state
    /// recorded meanwhile: a terminal state stays, pending_cancellation ends cancelled).
    /// Everything else (conditions, counts, times of an unchanged state) is written as is.
    pub fn guarded(&self, previous: Option<JobState>) -> bool {
        !self.create.is_empty() || self.transition(previous).is_some()
    }
}

/// What to do about a DataJob being deleted (its finalizer is still on).
#[derive(Clone, Debug, PartialEq)]
pub enum Deletion {
    /// Every executor pod is gone: release the DataJob.
    Release,
    /// Pods remain: delete these (the others are already terminating) and look again.
    Wait {
        /// Pods to delete gracefully.
        delete: Vec<String>,
        /// Pods to delete at once, stuck on a lost node, with why.
        force_delete: Vec<(String, String)>,
        /// Pods whose result finalizer to remove once they are being deleted.
        release: Vec<String>,
        /// Pods still present.
        remaining: usize,
        /// When to look again.
        poll: Duration,
        /// What the job shows while a pod's teardown is stuck (naming pods and nodes), if one
        /// is.
        stuck: Option<String>,
    },
}

macro_rules! named {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident,)+ }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
        }

        impl $name {
            /// The CamelCase name the API shows.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => stringify!($variant),)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

named! {
    /// Why something happened: the reason of a failure, a condition or an event.
    Reason {
        /// State `pending`.
        Pending,
        /// State `running`.
        Running,
        /// State `pending_cancellation`; also the reason of the CancellationRequested condition.
        CancellationRequested,
        /// State `cancelled`.
        Cancelled,
        /// State `completed`.
        Completed,
        /// State `failed`.
        Failed,
        /// Pending: the named compute pool does not exist.
        WaitingForComputePool,
        /// Pending: the pool runs its maximum of jobs.
        Queued,
        /// Pending: the executor is being recorded before its pods are created.
        CreatingExecutor,
        /// Pending: waiting for the driver to run.
        Starting,
        /// Pending: an executor pod cannot start yet (image pull, configuration, scheduling,
        /// quota); the message names the pod and the cause.
        ExecutorWaiting,
        /// Pending cancellation: waiting for executor pods to terminate.
        TearingDown,
        /// Pending cancellation or deletion: an executor pod is terminating long past its grace
        /// period (its node is probably lost).
        TeardownStuck,
        /// Event: an executor pod stuck on a lost node was deleted with grace period 0.
        PodForceDeleted,
        /// Failure: the API server rejected an executor pod as invalid.
        ExecutorRejected,
        /// Failure: the executor could not start (a cause that cannot pass, or not within the
        /// start timeout).
        ExecutorStartFailed,
        /// Failure: an executor pod disappeared, failed or was deleted by someone else.
        ExecutorLost,
        /// Failure: an executor pod was evicted.
        Evicted,
        /// Failure: the driver exited 0 without a valid result.
        InvalidResult,
        /// Failure: the driver exited non-zero.
        DriverFailed,
        /// Failure: the job ran longer than activeDeadlineSeconds.
        DeadlineExceeded,
        /// Failure: the spec asks for what the policy forbids (an image, Secret or ConfigMap
        /// environment), or the operator cannot read the object; also the Stalled reason of an
        /// undecodable object.
        InvalidSpec,
        /// Failure: the job's pool does not admit the job's namespace.
        PoolNotAllowed,
        /// Failure: a pod under an executor's deterministic name belongs to something else.
        ExecutorConflict,
        /// Event: a reconcile panicked; it is retried with backoff.
        ReconcilePanicked,
        /// Event: a cancel request on a finished job.
        CancellationIgnored,
        /// Event: creating an executor pod failed (retried).
        ExecutorCreateFailed,
        /// Condition CancellationRequested=False.
        NotRequested,
        /// ComputePool Ready condition.
        Accepting,
    }
}

named! {
    /// A condition type the operator sets.
    ConditionType {
        /// kstatus: the job runs or finished well.
        Ready,
        /// kstatus: the operator is still working towards a result.
        Reconciling,
        /// kstatus: the job cannot make progress (it failed).
        Stalled,
        /// The job completed.
        Complete,
        /// The job failed.
        Failed,
        /// The job was cancelled.
        Cancelled,
        /// Cancellation was requested and not yet superseded by a result.
        CancellationRequested,
    }
}

impl Reason {
    /// The reason of a state (event reason and condition reason).
    pub fn of_state(state: JobState) -> Reason {
        match state {
            JobState::Pending => Reason::Pending,
            JobState::Running => Reason::Running,
            JobState::PendingCancellation => Reason::CancellationRequested,
            JobState::Cancelled => Reason::Cancelled,
            JobState::Completed => Reason::Completed,
            JobState::Failed => Reason::Failed,
        }
    }
}
