//! `running`: the driver's outcome (completed or failed), lost executor pods and the deadline.
//! Losing a pod is also checked while `pending`, since an executor can be lost before its
//! driver runs.

use super::{Step, after_seconds, duration_until, workers};
use crate::api::{ClusterType, JobResult, JobState};
use crate::domain::model::{EventKind, ObservedPod, PodPhase, RESYNC, Reason};
use crate::domain::start;
use crate::executor::{self, DriverOutcome, PodSlot, Role};

impl Step<'_> {
    pub(super) fn running(&mut self) {
        let Some(executor) = self.status.executor.clone() else {
            self.fail(
                Reason::ExecutorLost,
                "the job is running but no executor is recorded".to_string(),
            );
            return;
        };
        let cluster_type = self.status.cluster_type.unwrap_or(ClusterType::Shared);
        let slots = executor::pod_slots(&executor, cluster_type, workers(&self.obs.spec));
        // A driver that finished before anyone deleted it reported its own outcome; its pod's
        // result finalizer kept it readable.
        if let Some(driver) = self.driver(&executor)
            && !driver.is_evicted()
            && driver.finished_before_deletion()
        {
            self.driver_finished(driver);
            return;
        }
        if let Some((reason, message)) = self.lost_executor_pod(&slots, true) {
            self.fail(reason, message);
            return;
        }
        self.watch_workers();
        self.watch_deadline();
    }

    /// A dedicated job runs once its driver does; a worker that cannot start meanwhile (an
    /// image pull, a missing Secret, no node that fits) is shown (reason `ExecutorWaiting` on
    /// the conditions, a Warning event once) while the driver goes on with the workers it has.
    /// It does not fail the job: the driver decides, and `activeDeadlineSeconds` bounds it.
    fn watch_workers(&mut self) {
        let workers: Vec<ObservedPod> = self
            .obs
            .pods
            .iter()
            .filter(|p| p.role == Some(Role::Worker))
            .cloned()
            .collect();
        if let Some(blocked) = start::blocked(&workers, None) {
            self.wait(
                Reason::ExecutorWaiting,
                format!(
                    "worker {}; the driver runs on without it until it starts",
                    blocked.describe()
                ),
                EventKind::Warning,
            );
        }
    }

    /// Completes or fails the job from the driver's exit code and termination message.
    fn driver_finished(&mut self, driver: &ObservedPod) {
        // A finished driver that reported no container state counts as exit 0 or 1 with an
        // empty message, so it still resolves (as InvalidResult or DriverFailed).
        let (exit_code, message) = match &driver.termination {
            Some(t) => (t.exit_code, t.message.as_str()),
            None if driver.phase == PodPhase::Succeeded => (0, ""),
            None => (1, ""),
        };
        match executor::read_driver_outcome(&self.obs.spec, exit_code, message) {
            DriverOutcome::Succeeded(result) => self.complete(result),
            DriverOutcome::InvalidResult(message) => self.fail(Reason::InvalidResult, message),
            DriverOutcome::Failed(message) => self.fail(Reason::DriverFailed, message),
        }
    }

    fn complete(&mut self, result: JobResult) {
        self.status.result = Some(result);
        self.move_to(
            JobState::Completed,
            "the driver succeeded and its result is recorded".to_string(),
        );
        self.release_running_pods();
    }

    /// Fails the job once it ran longer than activeDeadlineSeconds; otherwise looks again
    /// when the deadline passes (or at the resync, whichever is sooner).
    fn watch_deadline(&mut self) {
        let (Some(deadline), Some(started)) = (
            self.obs.spec.active_deadline_seconds,
            self.status.started_at.clone(),
        ) else {
            self.requeue = Some(RESYNC);
            return;
        };
        let expires = after_seconds(started.0, deadline);
        if self.obs.now >= expires {
            self.fail(
                Reason::DeadlineExceeded,
                format!("the job ran longer than activeDeadlineSeconds ({deadline}s)"),
            );
            return;
        }
        self.requeue = Some(duration_until(self.obs.now, expires).min(RESYNC));
    }

    /// The first executor pod that was lost: evicted, failed, being deleted by someone else, or
    /// (when `missing_is_lost`) gone. A loss by absence needs the absence confirmed.
    pub(super) fn lost_executor_pod(
        &mut self,
        slots: &[PodSlot],
        missing_is_lost: bool,
    ) -> Option<(Reason, String)> {
        for slot in slots {
            match self.obs.pods.iter().find(|p| p.name == slot.name) {
                None if missing_is_lost => {
                    self.requires_absence = true;
                    let message = format!(
                        "executor pod {} disappeared while the job was running",
                        slot.name
                    );
                    return Some((Reason::ExecutorLost, message));
                }
                None => {}
                Some(pod) => {
                    if let Some(loss) = loss_of(slot, pod) {
                        return Some(loss);
                    }
                }
            }
        }
        None
    }
}

/// Why an existing executor pod counts as lost, if it does.
fn loss_of(slot: &PodSlot, pod: &ObservedPod) -> Option<(Reason, String)> {
    let why = pod.message.as_deref().unwrap_or("no message");
    if pod.is_evicted() {
        let message = format!("executor pod {} was evicted: {why}", pod.name);
        return Some((Reason::Evicted, message));
    }
    // A driver that finished before its deletion is not lost: its report is read.
    let reported = slot.role == Role::Driver && pod.finished_before_deletion();
    let message = if pod.terminating && !reported {
        format!(
            "executor pod {} is being deleted by someone other than the operator",
            pod.name
        )
    } else if slot.role == Role::Worker && pod.is_finished() {
        let code = pod
            .termination
            .as_ref()
            .map(|t| format!(" with code {}", t.exit_code))
            .unwrap_or_default();
        format!("worker pod {} exited{code}", pod.name)
    } else if pod.phase == PodPhase::Failed && pod.termination.is_none() {
        format!("executor pod {} failed: {why}", pod.name)
    } else {
        return None;
    };
    Some((Reason::ExecutorLost, message))
}
