//! `pending_cancellation`, and a DataJob being deleted: tear every executor pod down, and
//! decide `cancelled` (or release the DataJob) only once none is left.

use std::time::Duration;

use super::{Step, reason_suffix};
use crate::api::{Cancellation, JobState};
use crate::domain::model::{Deletion, ObservedPod, RESYNC, Reason};

/// How often the teardown of a deleted DataJob is looked at while its pods terminate.
pub const TEARDOWN_POLL: Duration = Duration::from_secs(2);

/// The pods to delete to tear an executor down: every pod not already being deleted.
pub fn teardown(pods: &[ObservedPod]) -> Vec<String> {
    pods.iter()
        .filter(|p| !p.terminating)
        .map(|p| p.name.clone())
        .collect()
}

/// What to do about a DataJob being deleted, given its pods as read from the API server.
pub fn on_deletion(pods: &[ObservedPod]) -> Deletion {
    if pods.is_empty() {
        return Deletion::Release;
    }
    Deletion::Wait {
        delete: teardown(pods),
        remaining: pods.len(),
        poll: TEARDOWN_POLL,
    }
}

impl Step<'_> {
    pub(super) fn request_cancellation(&mut self) {
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

    pub(super) fn tear_down(&mut self) {
        if self.obs.pods.is_empty() {
            self.requires_absence = true;
            self.move_to(
                JobState::Cancelled,
                "every executor pod is gone".to_string(),
            );
        } else {
            self.delete = teardown(&self.obs.pods);
            self.waiting = Some(super::Waiting {
                reason: Reason::TearingDown,
                message: format!(
                    "waiting for {} executor pod(s) to terminate",
                    self.obs.pods.len()
                ),
            });
            self.requeue = Some(RESYNC);
        }
    }
}
