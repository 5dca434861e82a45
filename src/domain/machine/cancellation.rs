//! `pending_cancellation`, and a DataJob being deleted: tear every executor pod down, and
//! decide `cancelled` (or release the DataJob) only once none is left.

use std::time::Duration;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Step, reason_suffix};
use crate::api::{Cancellation, DataJobStatus, JobState, condition};
use crate::domain::conditions;
use crate::domain::model::{
    ConditionType, Deletion, EventKind, NodeView, ObservedPod, RESYNC, Reason,
};
use crate::domain::teardown as stuck;

/// How often the teardown of a deleted DataJob is looked at while its pods terminate.
pub const TEARDOWN_POLL: Duration = Duration::from_secs(2);

/// The pods to delete to tear an executor down: every pod not already being deleted.
pub fn teardown(pods: &[ObservedPod]) -> Vec<String> {
    pods.iter()
        .filter(|p| !p.terminating)
        .map(|p| p.name.clone())
        .collect()
}

/// What to do about a DataJob being deleted, given its pods as read from the API server and
/// the nodes of those stuck terminating ([`stuck::judge`]).
pub fn on_deletion(
    pods: &[ObservedPod],
    nodes: &BTreeMap<String, NodeView>,
    now: Timestamp,
) -> Deletion {
    if pods.is_empty() {
        return Deletion::Release;
    }
    let judged = stuck::judge(pods, nodes, now);
    let stuck = stuck_message(&judged);
    Deletion::Wait {
        delete: teardown(pods),
        force_delete: judged.force_delete,
        release: crate::domain::release::holders(pods),
        remaining: pods.len(),
        poll: if stuck.is_some() {
            stuck::STUCK_POLL
        } else {
            TEARDOWN_POLL
        },
        stuck,
    }
}

/// What a stuck teardown tells the user (pods, nodes, and when the operator force-deletes),
/// if a pod is stuck.
fn stuck_message(judged: &stuck::Judgement) -> Option<String> {
    (!judged.stuck.is_empty()).then(|| {
        format!(
            "{}; it is force-deleted once its node is gone, tainted {} or not Ready for {} s",
            judged.stuck.join("; "),
            stuck::OUT_OF_SERVICE_TAINT,
            stuck::NODE_LOST_AFTER_SECONDS
        )
    })
}

/// The status of a DataJob being deleted whose teardown is stuck: `Stalled=True` with reason
/// `TeardownStuck` and `message` (from [`on_deletion`]), the other conditions and the state
/// as they were (a deletion changes no state). None when the status already shows exactly
/// that, so a teardown that stays stuck is written once.
pub fn stalled_deletion(
    status: &DataJobStatus,
    message: &str,
    now: Timestamp,
    generation: i64,
) -> Option<DataJobStatus> {
    let kind = ConditionType::Stalled.as_str();
    let previous = condition::find(&status.conditions, kind);
    if previous.is_some_and(|c| {
        c.is_true() && c.reason == Reason::TeardownStuck.as_str() && c.message == message
    }) {
        return None;
    }
    let since = previous
        .filter(|c| c.is_true())
        .map_or(Time(now), |c| c.last_transition_time.clone());
    let stalled = conditions::condition(
        ConditionType::Stalled,
        true,
        Reason::TeardownStuck,
        message.to_string(),
        since,
        Some(generation),
    );
    let mut next = status.clone();
    next.conditions.retain(|c| c.type_ != kind);
    next.conditions.push(stalled);
    next.updated_at = Some(Time(now));
    Some(next)
}

/// What the conditions say while pods terminate. It names no count: a count would change the
/// status, and so write it, each time one of a dedicated executor's pods goes.
fn tearing_down() -> super::Waiting {
    super::Waiting {
        reason: Reason::TearingDown,
        message: "waiting for the executor pods to terminate".to_string(),
        stalled: false,
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
        if !self.obs.pods.is_empty() {
            // What the next passes record while the pods terminate, so they write nothing new.
            self.waiting = Some(tearing_down());
        }
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
            self.watch_teardown();
        }
    }

    /// Waits for the pods to terminate: shows a teardown that is stuck, and force-deletes
    /// pods stuck on a lost node.
    fn watch_teardown(&mut self) {
        let judged = stuck::judge(&self.obs.pods, &self.obs.nodes, self.obs.now);
        for (pod, why) in &judged.force_delete {
            let message = format!("force-deleting executor pod {pod} (grace period 0): {why}");
            self.event(EventKind::Warning, Reason::PodForceDeleted, message);
            self.force_delete.push(pod.clone());
        }
        if let Some(message) = stuck_message(&judged) {
            self.wait(Reason::TeardownStuck, message, EventKind::Warning);
            if let Some(waiting) = &mut self.waiting {
                waiting.stalled = true;
            }
        } else {
            // Not announced: the state change already said that pods are torn down.
            self.waiting = Some(tearing_down());
        }
        self.requeue = Some(judged.next_look.unwrap_or(RESYNC).min(RESYNC));
    }
}
