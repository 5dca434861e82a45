//! The state machine: a pure, synchronous function from what was observed about one DataJob
//! (its spec and status, its executor pods, its pool, the time) to a [`Plan`]: the next status,
//! the pods to create and delete, the events to publish and when to look again.
//!
//! Rules it keeps under every interleaving (checked by the unit and property tests):
//! - a terminal state (completed, cancelled, failed) never changes;
//! - the state moves at most one step per decision, so no state is skipped;
//! - `cancelled` is decided only when no executor pod of the job exists, and such a decision is
//!   marked [`Plan::requires_absence`] so the caller confirms it with a fresh read first;
//! - pods are only ever created under the one executor name recorded in status, and only once
//!   that name is recorded.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    Cancellation, ClusterType, Condition, DataJobSpec, DataJobStatus, JobFailure, JobResult,
    JobState, condition,
};
use crate::executor::{self, DriverOutcome, PodSlot, Role};

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
    /// The pod's status.reason (for example Evicted), if any.
    pub reason: Option<String>,
    /// The pod's status.message, if any.
    pub message: Option<String>,
    /// The executor container's termination, once it ended.
    pub termination: Option<Termination>,
    /// When the executor container started running.
    pub started_at: Option<Timestamp>,
}

impl ObservedPod {
    fn is_finished(&self) -> bool {
        matches!(self.phase, PodPhase::Succeeded | PodPhase::Failed)
    }

    fn is_evicted(&self) -> bool {
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
    /// The job's pool.
    pub pool: PoolView,
    /// Why the API server refused to create an executor pod (an invalid pod built from the
    /// spec); None when no creation was refused.
    pub rejection: Option<String>,
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
    /// CamelCase reason.
    pub reason: &'static str,
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

/// Decides the next step for one job.
pub fn decide(obs: &Observation) -> Plan {
    let mut step = Step::new(obs);
    match obs.status.state {
        None => step.initialize(),
        Some(state @ (JobState::Cancelled | JobState::Completed | JobState::Failed)) => {
            step.finished(state)
        }
        Some(JobState::PendingCancellation) => step.tear_down(),
        Some(JobState::Pending | JobState::Running) if obs.spec.cancel => {
            step.request_cancellation()
        }
        Some(JobState::Pending) => step.pending(),
        Some(JobState::Running) => step.running(),
    }
    step.finish()
}

/// The pods to delete to tear an executor down: every pod not already being deleted.
pub fn teardown(pods: &[ObservedPod]) -> Vec<String> {
    pods.iter()
        .filter(|p| !p.terminating)
        .map(|p| p.name.clone())
        .collect()
}

/// The cluster type a job runs on: its own setting, else its pool's, else shared.
pub fn resolve_cluster_type(spec: &DataJobSpec, pool: &PoolView) -> ClusterType {
    spec.cluster_type.unwrap_or(match pool {
        PoolView::Present { cluster_type, .. } => *cluster_type,
        _ => ClusterType::Shared,
    })
}

/// Worker count of a dedicated executor.
pub fn workers(spec: &DataJobSpec) -> i32 {
    spec.executor
        .as_ref()
        .and_then(|e| e.workers)
        .unwrap_or(crate::api::datajob::DEFAULT_WORKERS)
        .clamp(0, crate::api::datajob::MAX_WORKERS)
}

/// The reason and message of the pending state, also used for conditions.
struct Waiting {
    reason: &'static str,
    message: String,
}

struct Step<'a> {
    obs: &'a Observation,
    status: DataJobStatus,
    create: Vec<PodSlot>,
    delete: Vec<String>,
    events: Vec<JobEvent>,
    requeue: Option<Duration>,
    requires_absence: bool,
    delete_job: bool,
    waiting: Option<Waiting>,
}

impl<'a> Step<'a> {
    fn new(obs: &'a Observation) -> Self {
        Step {
            obs,
            status: obs.status.clone(),
            create: Vec::new(),
            delete: Vec::new(),
            events: Vec::new(),
            requeue: None,
            requires_absence: false,
            delete_job: false,
            waiting: None,
        }
    }

    fn now(&self) -> Time {
        Time(self.obs.now)
    }

    fn event(&mut self, kind: EventKind, reason: &'static str, message: String) {
        self.events.push(JobEvent {
            kind,
            reason,
            message,
        });
    }

    fn move_to(&mut self, state: JobState, message: String) {
        let from = self.status.state;
        self.status.state = Some(state);
        if state.is_terminal() {
            self.status.completed_at = Some(self.now());
        }
        let kind = if state == JobState::Failed {
            EventKind::Warning
        } else {
            EventKind::Normal
        };
        let message = match from {
            Some(from) => format!("{from} -> {state}: {message}"),
            None => format!("{state}: {message}"),
        };
        self.event(kind, state_reason(state), message);
        // Look again at once: the next step may already be decidable.
        self.requeue = Some(Duration::ZERO);
    }

    fn initialize(&mut self) {
        self.status.job_id = Some(self.obs.uid.clone());
        self.status.created_at = Some(self.now());
        self.move_to(JobState::Pending, "job accepted".to_string());
    }

    fn finished(&mut self, state: JobState) {
        let spec = &self.obs.spec;
        let new_generation = self.obs.status.observed_generation != Some(self.obs.generation);
        if spec.cancel && new_generation {
            let message = format!(
                "cancellation ignored: the job already finished as {state}{}",
                reason_suffix(spec.cancel_reason.as_deref())
            );
            self.event(EventKind::Normal, "CancellationIgnored", message);
        }
        // Completed and failed jobs give back what still runs; finished pods stay for logs.
        self.delete = self
            .obs
            .pods
            .iter()
            .filter(|p| !p.terminating && !p.is_finished())
            .map(|p| p.name.clone())
            .collect();
        if let (Some(ttl), Some(done)) =
            (spec.ttl_seconds_after_finished, &self.status.completed_at)
        {
            let expires = crate::clock::after(done.0, i64::from(ttl));
            if self.obs.now >= expires {
                self.delete_job = true;
            } else {
                self.requeue = Some(duration_until(self.obs.now, expires));
            }
        }
    }

    fn request_cancellation(&mut self) {
        self.status.cancellation = Some(Cancellation {
            requested_at: self.now(),
            reason: self.obs.spec.cancel_reason.clone(),
        });
        let message = format!(
            "cancellation requested{}; tearing down {} executor pod(s)",
            reason_suffix(self.obs.spec.cancel_reason.as_deref()),
            self.obs.pods.len()
        );
        self.move_to(JobState::PendingCancellation, message);
        self.delete = teardown(&self.obs.pods);
    }

    fn tear_down(&mut self) {
        if self.obs.pods.is_empty() {
            self.requires_absence = true;
            self.move_to(
                JobState::Cancelled,
                "every executor pod is gone".to_string(),
            );
        } else {
            self.delete = teardown(&self.obs.pods);
            self.waiting = Some(Waiting {
                reason: "TearingDown",
                message: format!(
                    "waiting for {} executor pod(s) to terminate",
                    self.obs.pods.len()
                ),
            });
            self.requeue = Some(RESYNC);
        }
    }

    fn pending(&mut self) {
        // A job that holds no executor yet waits for its pool to exist and to have room.
        if self.status.executor.is_none() {
            match &self.obs.pool {
                PoolView::Missing { name } => {
                    let message = format!(
                        "compute pool {name} does not exist; the job starts when it is created"
                    );
                    self.wait("WaitingForComputePool", message, EventKind::Warning);
                    return;
                }
                PoolView::Present {
                    name,
                    admitted: false,
                    max_concurrent_jobs,
                    ..
                } => {
                    let message = format!(
                        "queued: compute pool {name} runs at most {max_concurrent_jobs} job(s) at once"
                    );
                    self.wait("Queued", message, EventKind::Normal);
                    return;
                }
                PoolView::NotRequested | PoolView::Present { .. } => {}
            }
        }
        if let Some(message) = &self.obs.rejection {
            self.fail(
                "ExecutorRejected",
                format!("the API server rejected an executor pod: {message}"),
            );
            return;
        }
        let cluster_type = *self
            .status
            .cluster_type
            .get_or_insert_with(|| resolve_cluster_type(&self.obs.spec, &self.obs.pool));
        let Some(executor) = self.status.executor.clone() else {
            // Record the executor first; pods are created once the name is in status.
            self.status.executor = Some(executor::executor_name(&self.obs.name, &self.obs.uid));
            self.wait(
                "CreatingExecutor",
                "recording the executor before creating its pods".to_string(),
                EventKind::Normal,
            );
            self.requeue = Some(Duration::ZERO);
            return;
        };
        let slots = executor::pod_slots(&executor, cluster_type, workers(&self.obs.spec));
        if let Some(failure) = self.lost_executor_pod(&slots, false) {
            self.fail(failure.0, failure.1);
            return;
        }
        let missing: Vec<PodSlot> = slots
            .iter()
            .filter(|slot| !self.obs.pods.iter().any(|p| p.name == slot.name))
            .cloned()
            .collect();
        if let PoolView::Missing { name } = &self.obs.pool
            && !missing.is_empty()
        {
            // Pods are placed by the pool's node selector: without the pool, wait for it.
            let message = format!(
                "compute pool {name} was deleted; {} executor pod(s) wait for it to be recreated",
                missing.len()
            );
            self.wait("WaitingForComputePool", message, EventKind::Warning);
            return;
        }
        self.create = missing;
        let driver = self.driver(&executor);
        let driver_started = driver.is_some_and(|d| d.phase != PodPhase::Pending);
        if driver_started && self.create.is_empty() {
            let started_at = driver.and_then(|d| d.started_at).unwrap_or(self.obs.now);
            self.status.started_at = Some(Time(started_at));
            self.move_to(
                JobState::Running,
                format!("driver of executor {executor} is running"),
            );
        } else {
            self.wait(
                "Starting",
                format!("waiting for the driver of executor {executor} to run"),
                EventKind::Normal,
            );
            self.requeue = Some(RESYNC);
        }
    }

    fn running(&mut self) {
        let Some(executor) = self.status.executor.clone() else {
            self.fail(
                "ExecutorLost",
                "the job is running but no executor is recorded".to_string(),
            );
            return;
        };
        let cluster_type = self.status.cluster_type.unwrap_or(ClusterType::Shared);
        let slots = executor::pod_slots(&executor, cluster_type, workers(&self.obs.spec));
        if let Some(driver) = self.driver(&executor)
            && !driver.terminating
            && !driver.is_evicted()
            && driver.is_finished()
        {
            // A finished driver that reported no container state counts as exit 0 or 1 with
            // an empty message, so it still resolves (as InvalidResult or DriverFailed).
            let (exit_code, message) = match &driver.termination {
                Some(t) => (t.exit_code, t.message.as_str()),
                None if driver.phase == PodPhase::Succeeded => (0, ""),
                None => (1, ""),
            };
            match executor::read_driver_outcome(&self.obs.spec, exit_code, message) {
                DriverOutcome::Succeeded(result) => self.complete(result),
                DriverOutcome::InvalidResult(message) => self.fail("InvalidResult", message),
                DriverOutcome::Failed(message) => self.fail("DriverFailed", message),
            }
            return;
        }
        if let Some((reason, message)) = self.lost_executor_pod(&slots, true) {
            self.fail(reason, message);
            return;
        }
        if let (Some(deadline), Some(started)) = (
            self.obs.spec.active_deadline_seconds,
            self.status.started_at.clone(),
        ) {
            let expires = crate::clock::after(started.0, deadline);
            if self.obs.now >= expires {
                self.fail(
                    "DeadlineExceeded",
                    format!("the job ran longer than activeDeadlineSeconds ({deadline}s)"),
                );
                return;
            }
            self.requeue = Some(duration_until(self.obs.now, expires).min(RESYNC));
            return;
        }
        self.requeue = Some(RESYNC);
    }

    /// The first executor pod that was lost: evicted, failed, being deleted by someone else, or
    /// (when `missing_is_lost`) gone.
    fn lost_executor_pod(
        &mut self,
        slots: &[PodSlot],
        missing_is_lost: bool,
    ) -> Option<(&'static str, String)> {
        for slot in slots {
            match self.obs.pods.iter().find(|p| p.name == slot.name) {
                None if missing_is_lost => {
                    self.requires_absence = true;
                    return Some((
                        "ExecutorLost",
                        format!(
                            "executor pod {} disappeared while the job was running",
                            slot.name
                        ),
                    ));
                }
                None => {}
                Some(pod) if pod.is_evicted() => {
                    return Some((
                        "Evicted",
                        format!(
                            "executor pod {} was evicted: {}",
                            pod.name,
                            pod.message.as_deref().unwrap_or("no message")
                        ),
                    ));
                }
                Some(pod) if pod.terminating => {
                    return Some((
                        "ExecutorLost",
                        format!(
                            "executor pod {} is being deleted by someone other than the operator",
                            pod.name
                        ),
                    ));
                }
                Some(pod) if slot.role == Role::Worker && pod.is_finished() => {
                    return Some((
                        "ExecutorLost",
                        format!(
                            "worker pod {} exited{}",
                            pod.name,
                            pod.termination
                                .as_ref()
                                .map(|t| format!(" with code {}", t.exit_code))
                                .unwrap_or_default()
                        ),
                    ));
                }
                Some(pod) if pod.phase == PodPhase::Failed && pod.termination.is_none() => {
                    return Some((
                        "ExecutorLost",
                        format!(
                            "executor pod {} failed: {}",
                            pod.name,
                            pod.message.as_deref().unwrap_or("no message")
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        None
    }

    fn driver(&self, executor: &str) -> Option<&'a ObservedPod> {
        let name = format!("{executor}-driver");
        self.obs.pods.iter().find(|p| p.name == name)
    }

    fn complete(&mut self, result: JobResult) {
        self.status.result = Some(result);
        self.move_to(
            JobState::Completed,
            "the driver succeeded and its result is recorded".to_string(),
        );
        self.release_running_pods();
    }

    fn fail(&mut self, reason: &'static str, message: String) {
        self.status.failures.push(JobFailure {
            reason: reason.to_string(),
            message: message.clone(),
            time: self.now(),
        });
        self.move_to(JobState::Failed, format!("{reason}: {message}"));
        self.release_running_pods();
    }

    fn release_running_pods(&mut self) {
        self.delete = self
            .obs
            .pods
            .iter()
            .filter(|p| !p.terminating && !p.is_finished())
            .map(|p| p.name.clone())
            .collect();
    }

    /// Stays pending for a reason; publishes the event only when the reason is new.
    fn wait(&mut self, reason: &'static str, message: String, kind: EventKind) {
        let previous = condition::find(&self.obs.status.conditions, "Reconciling");
        if previous.is_none_or(|c| c.reason != reason) && reason != "CreatingExecutor" {
            self.event(kind, reason, message.clone());
        }
        self.waiting = Some(Waiting { reason, message });
        if self.requeue.is_none() {
            self.requeue = Some(RESYNC);
        }
    }

    fn finish(mut self) -> Plan {
        self.status.observed_generation = Some(self.obs.generation);
        self.status.active_executors = Some(i32::try_from(self.obs.pods.len()).unwrap_or(i32::MAX));
        self.status.conditions = self.conditions();
        if self.status != self.obs.status {
            self.status.updated_at = Some(self.now());
        }
        Plan {
            status: self.status,
            create: self.create,
            delete: self.delete,
            events: self.events,
            requeue: self.requeue,
            requires_absence: self.requires_absence,
            delete_job: self.delete_job,
        }
    }

    fn conditions(&self) -> Vec<Condition> {
        let state = self.status.state.unwrap_or(JobState::Pending);
        let (state_reason, state_message) = match &self.waiting {
            Some(w) => (w.reason, w.message.clone()),
            None => (state_reason(state), state_summary(state, &self.status)),
        };
        let cancel_requested = self.status.cancellation.is_some()
            && !matches!(state, JobState::Completed | JobState::Failed);
        let state_conditions = [
            (
                "Ready",
                matches!(
                    state,
                    JobState::Running | JobState::Completed | JobState::Cancelled
                ),
            ),
            (
                "Reconciling",
                matches!(state, JobState::Pending | JobState::PendingCancellation),
            ),
            ("Stalled", state == JobState::Failed),
            ("Complete", state == JobState::Completed),
            ("Failed", state == JobState::Failed),
            ("Cancelled", state == JobState::Cancelled),
        ];
        let cancellation = match (&self.status.cancellation, cancel_requested) {
            (Some(c), true) => (
                "CancellationRequested",
                format!(
                    "cancellation requested{}",
                    reason_suffix(c.reason.as_deref())
                ),
            ),
            _ => ("NotRequested", "no cancellation requested".to_string()),
        };
        let table = state_conditions
            .into_iter()
            .map(|(type_, value)| (type_, value, state_reason, state_message.clone()))
            .chain([(
                "CancellationRequested",
                cancel_requested,
                cancellation.0,
                cancellation.1,
            )]);
        table
            .map(|(type_, value, reason, message)| {
                let status = if value { "True" } else { "False" };
                let previous = condition::find(&self.obs.status.conditions, type_);
                let last_transition_time = match previous {
                    Some(p) if p.status == status => p.last_transition_time.clone(),
                    _ => self.now(),
                };
                Condition {
                    type_: type_.to_string(),
                    status: status.to_string(),
                    reason: reason.to_string(),
                    message,
                    last_transition_time,
                    observed_generation: Some(self.obs.generation),
                }
            })
            .collect()
    }
}

/// CamelCase reason of a state (event reason and condition reason).
pub fn state_reason(state: JobState) -> &'static str {
    match state {
        JobState::Pending => "Pending",
        JobState::Running => "Running",
        JobState::PendingCancellation => "CancellationRequested",
        JobState::Cancelled => "Cancelled",
        JobState::Completed => "Completed",
        JobState::Failed => "Failed",
    }
}

fn state_summary(state: JobState, status: &DataJobStatus) -> String {
    match state {
        JobState::Pending => "the job is pending".to_string(),
        JobState::Running => "the driver is running".to_string(),
        JobState::PendingCancellation => "tearing down executor pods".to_string(),
        JobState::Cancelled => "the job was cancelled and every executor pod is gone".to_string(),
        JobState::Completed => "the job completed and its result is recorded".to_string(),
        JobState::Failed => status
            .failures
            .last()
            .map(|f| format!("{}: {}", f.reason, f.message))
            .unwrap_or_else(|| "the job failed".to_string()),
    }
}

fn reason_suffix(reason: Option<&str>) -> String {
    match reason {
        Some(r) if !r.is_empty() => format!(" (reason: {r})"),
        _ => String::new(),
    }
}

fn duration_until(now: Timestamp, then: Timestamp) -> Duration {
    crate::clock::duration_until(now, then)
}
