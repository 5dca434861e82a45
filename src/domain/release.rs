//! When an executor pod's result finalizer may go. Every driver pod is created with the
//! finalizer `datajob.dev/result` (`executor::RESULT_FINALIZER`): however the pod is removed (a
//! user's `kubectl delete pod`, pod garbage collection, an eviction, a lost node), the API
//! server keeps the pod object, and with it the driver's termination message, until the
//! operator removes the finalizer. It removes it only when nothing more is to be read from the
//! pod:
//!
//! - the job's status records a terminal state (`completed` with its result, `failed` with its
//!   failure; a `cancelled` job has no pod left), as observed or as the plan writes it: apply
//!   removes the finalizer only after that write succeeded;
//! - the job is `pending_cancellation` (recorded, or written by the plan): it ends `cancelled`
//!   whatever the driver reports, and every pod is torn down;
//! - the DataJob is being deleted: every pod is torn down.
//!
//! In `pending` and `running` the pod keeps it, also while it terminates: a driver that finished
//! before it was deleted is read as if it were not ([`ObservedPod::finished_before_deletion`]).
//! Each pass decides again from what it observes, so a removal lost to a crash is done by the
//! next pass.

use super::model::ObservedPod;
use crate::api::JobState;

/// Whether a job whose status records `state` (or whose plan writes it) is done with what its
/// pods report.
pub fn may_release(state: Option<JobState>) -> bool {
    state.is_some_and(|s| s.is_terminal() || s == JobState::PendingCancellation)
}

/// The pods of a job in `state` whose result finalizer is to be removed.
pub fn releasable(pods: &[ObservedPod], state: Option<JobState>) -> Vec<String> {
    if !may_release(state) {
        return Vec::new();
    }
    holders(pods)
}

/// The pods that still carry the result finalizer.
pub fn holders(pods: &[ObservedPod]) -> Vec<String> {
    pods.iter()
        .filter(|p| p.holds_result)
        .map(|p| p.name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::model::PodPhase;

    fn holding(name: &str) -> ObservedPod {
        ObservedPod {
            holds_result: true,
            ..ObservedPod::new(name, PodPhase::Succeeded)
        }
    }

    #[test]
    fn a_live_job_keeps_its_pods_finalizer_and_a_finished_or_cancelled_one_releases_it() {
        let pods = [
            holding("x-driver"),
            ObservedPod::new("x-worker-0", PodPhase::Running),
        ];
        for state in [None, Some(JobState::Pending), Some(JobState::Running)] {
            assert!(releasable(&pods, state).is_empty(), "{state:?}");
        }
        for state in [
            JobState::PendingCancellation,
            JobState::Completed,
            JobState::Failed,
            JobState::Cancelled,
        ] {
            assert_eq!(releasable(&pods, Some(state)), ["x-driver"], "{state:?}");
        }
    }
}
