//! `(new)` and `pending`: accept the job, wait for its pool and a slot, record the executor,
//! create its pods, and move to `running` once the driver runs; or fail with
//! `ExecutorStartFailed` when it cannot start ([`crate::domain::start`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

use super::{Step, duration_until, resolve_cluster_type, workers};
use crate::api::JobState;
use crate::domain::model::{EventKind, JobEvent, PodPhase, PoolView, RESYNC, Reason};
use crate::domain::policy::Refusal;
use crate::domain::start::{self, Verdict};
use crate::executor::{self, PodSlot};

/// The event published when creating an executor pod failed for a reason a retry may fix
/// (quota, API errors); the caller retries with backoff.
pub fn executor_create_failed(message: String) -> JobEvent {
    JobEvent {
        kind: EventKind::Warning,
        reason: Reason::ExecutorCreateFailed,
        message,
    }
}

impl Step<'_> {
    /// Records `pending` and, in the same status write, what `pending` decides next when that
    /// cannot fail the job (no refusal, no rejection, no cancel request): the executor and its
    /// pods when the pool has room, else why the job waits. A refused or cancelled job is
    /// decided by the next pass, so no state is skipped.
    pub(super) fn initialize(&mut self) {
        self.status.job_id = Some(self.obs.uid.clone());
        self.status.created_at = Some(self.now());
        if self.status.arrived_at.is_none() {
            self.status.arrived_at = self.obs.arrival.map(MicroTime);
        }
        self.move_to(JobState::Pending, "job accepted".to_string());
        if self.obs.refusal.is_none() && self.obs.rejection.is_none() && !self.obs.spec.cancel {
            self.pending();
        }
    }

    pub(super) fn pending(&mut self) {
        // A pod squatting on an executor name fails the job whenever it is seen; the policy is
        // checked before the job takes an executor (a running executor keeps its admission).
        match &self.obs.refusal {
            Some(refusal @ Refusal::ExecutorConflict(_)) => {
                self.fail(refusal.reason(), refusal.message().to_string());
                return;
            }
            Some(refusal) if self.status.executor.is_none() => {
                self.fail(refusal.reason(), refusal.message().to_string());
                return;
            }
            _ => {}
        }
        // A job that holds no executor yet waits for its pool to exist and to have room.
        if self.status.executor.is_none() && self.waits_for_pool() {
            return;
        }
        if let Some(message) = &self.obs.rejection {
            self.fail(
                Reason::ExecutorRejected,
                format!("the API server rejected an executor pod: {message}"),
            );
            return;
        }
        let cluster_type = *self
            .status
            .cluster_type
            .get_or_insert_with(|| resolve_cluster_type(&self.obs.spec, &self.obs.pool));
        // The executor is recorded in the status this plan writes, and apply writes it (guarded
        // by the observed version) before it creates any pod, so recording it and creating its
        // pods go in one pass. The start timeout counts from here.
        if self.status.executor.is_none() {
            self.status.start_requested_at = Some(self.now());
        }
        let executor = self
            .status
            .executor
            .get_or_insert_with(|| executor::executor_name(&self.obs.name, &self.obs.uid))
            .clone();
        let slots = executor::pod_slots(&executor, cluster_type, workers(&self.obs.spec));
        if let Some((reason, message)) = self.lost_executor_pod(&slots, false) {
            self.fail(reason, message);
            return;
        }
        self.start(&executor, &slots);
    }

    /// Waits while the named pool is missing or has no room for the job; true when waiting.
    fn waits_for_pool(&mut self) -> bool {
        match &self.obs.pool {
            PoolView::Missing { name } => {
                let message = format!(
                    "compute pool {name} does not exist; the job starts when it is created"
                );
                self.wait(Reason::WaitingForComputePool, message, EventKind::Warning);
                true
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
                self.wait(Reason::Queued, message, EventKind::Normal);
                true
            }
            PoolView::NotRequested | PoolView::Present { .. } => false,
        }
    }

    /// Creates the executor's missing pods, and moves to running once they all exist and the
    /// driver runs.
    fn start(&mut self, executor: &str, slots: &[PodSlot]) {
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
            self.wait(Reason::WaitingForComputePool, message, EventKind::Warning);
            return;
        }
        self.create = missing;
        let driver = self.driver(executor);
        let driver_started = driver.is_some_and(|d| d.phase != PodPhase::Pending);
        if driver_started && self.create.is_empty() {
            let started_at = driver.and_then(|d| d.started_at).unwrap_or(self.obs.now);
            self.status.started_at = Some(Time(started_at));
            self.move_to(
                JobState::Running,
                format!("driver of executor {executor} is running"),
            );
        } else {
            self.await_start(executor);
        }
    }

    /// The executor's pods exist or are being created but its driver does not run yet: shows
    /// what holds it up, or fails the job when that cannot pass or the start timeout ended.
    fn await_start(&mut self, executor: &str) {
        // Jobs recorded before the field existed start their clock now.
        let requested_at = self
            .status
            .start_requested_at
            .get_or_insert(Time(self.obs.now))
            .0;
        let timeout = start::timeout_seconds(&self.obs.spec, &self.obs.pool);
        let verdict = start::judge(
            self.obs.now,
            requested_at,
            timeout,
            &self.obs.pods,
            self.obs.create_refusal.as_ref(),
        );
        match verdict {
            Verdict::Failed(message) => {
                self.create.clear();
                self.fail(Reason::ExecutorStartFailed, message);
            }
            Verdict::Waiting { blocked, deadline } => {
                match blocked {
                    Some(blocked) => self.wait(
                        Reason::ExecutorWaiting,
                        format!(
                            "{}; the job fails with ExecutorStartFailed at {deadline} unless executor {executor} starts",
                            blocked.describe()
                        ),
                        EventKind::Warning,
                    ),
                    None => self.wait(
                        Reason::Starting,
                        format!("waiting for the driver of executor {executor} to run"),
                        EventKind::Normal,
                    ),
                }
                self.requeue = Some(RESYNC.min(duration_until(self.obs.now, deadline)));
            }
        }
    }
}
