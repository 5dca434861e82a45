//! The state machine: a pure, synchronous function from what was observed about one DataJob
//! (its spec and status, its executor pods, its pool and admission, the time) to a [`Plan`]:
//! the next status, the pods to create and delete, the events to publish and when to look
//! again. One file per state: [`pending`], [`running`], [`cancellation`], [`finished`]; this
//! module holds the dispatch and the steps they share.
//!
//! Rules it keeps under every interleaving (checked by the unit and property tests):
//! - a terminal state (completed, cancelled, failed) never changes;
//! - the state moves at most one step per decision, so no state is skipped;
//! - `cancelled` is decided only when no executor pod of the job exists, and such a decision is
//!   marked [`Plan::requires_absence`] so the caller confirms it with a fresh read first;
//! - pods are only ever created under the one executor name recorded in status, and only once
//!   that name is recorded;
//! - a pod's result finalizer goes only once the status records the outcome or the teardown
//!   ([`crate::domain::release`]).

mod cancellation;
mod finished;
mod pending;
mod running;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::model::{
    ConditionType, EventKind, JobEvent, Observation, ObservedPod, Plan, PoolView, RESYNC, Reason,
};
use crate::api::{ClusterType, DataJobSpec, DataJobStatus, JobFailure, JobState};
use crate::executor::PodSlot;

pub use cancellation::{on_deletion, stalled_deletion, teardown};
pub use pending::executor_create_failed;

/// Longest `activeExecutors` may lag behind the pods when it is the only change
/// ([`Step::count_wait`]).
pub const COUNT_REFRESH: Duration = Duration::from_secs(5);

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

/// Why a job stays where it is; the state conditions carry it instead of the state's own
/// reason.
pub(super) struct Waiting {
    pub(super) reason: Reason,
    pub(super) message: String,
    /// The job cannot make progress by itself (kstatus `Stalled=True`).
    pub(super) stalled: bool,
}

/// One decision in progress: the observation, and the plan being built from it.
struct Step<'a> {
    obs: &'a Observation,
    status: DataJobStatus,
    create: Vec<PodSlot>,
    delete: Vec<String>,
    force_delete: Vec<String>,
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
            force_delete: Vec::new(),
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

    fn event(&mut self, kind: EventKind, reason: Reason, message: String) {
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
        self.event(kind, Reason::of_state(state), message);
        // Look again at once: the next step may already be decidable.
        self.requeue = Some(Duration::ZERO);
    }

    fn fail(&mut self, reason: Reason, message: String) {
        self.status.failures.push(JobFailure {
            reason: reason.as_str().to_string(),
            message: message.clone(),
            time: self.now(),
        });
        self.move_to(JobState::Failed, format!("{reason}: {message}"));
        self.release_running_pods();
    }

    /// Deletes the pods that still run; finished pods stay so their logs can be read.
    fn release_running_pods(&mut self) {
        self.delete = self
            .obs
            .pods
            .iter()
            .filter(|p| !p.terminating && !p.is_finished())
            .map(|p| p.name.clone())
            .collect();
    }

    /// Stays where it is for a reason; publishes the event only when the reason is new and
    /// tells the user more than the state does ([`announces`]).
    fn wait(&mut self, reason: Reason, message: String, kind: EventKind) {
        let previous = crate::api::condition::find(
            &self.obs.status.conditions,
            ConditionType::Reconciling.as_str(),
        );
        if previous.is_none_or(|c| reason != c.reason.as_str()) && announces(reason) {
            self.event(kind, reason, message.clone());
        }
        self.waiting = Some(Waiting {
            reason,
            message,
            stalled: false,
        });
        if self.requeue.is_none() {
            self.requeue = Some(RESYNC);
        }
    }

    /// How long the recorded `activeExecutors` may stay as it is, when the pod count is all
    /// that changed and the status was written less than [`COUNT_REFRESH`] ago (no pods to
    /// create: a creation writes the exact count). A dedicated executor's 65 pods that go one
    /// by one then cost a write or two instead of one each; the count is written once the
    /// interval is over, or with the next change that is not a count.
    fn count_wait(&self) -> Option<Duration> {
        if !self.create.is_empty() {
            return None;
        }
        let mut uncounted = self.status.clone();
        uncounted.active_executors = self.obs.status.active_executors;
        if uncounted != self.obs.status {
            return None;
        }
        // A recorded time in the future (a status someone else wrote) counts as long ago.
        let written = self.obs.status.updated_at.as_ref()?.0;
        let since = Duration::try_from(self.obs.now.duration_since(written)).ok()?;
        COUNT_REFRESH
            .checked_sub(since)
            .filter(|left| !left.is_zero())
    }

    fn driver(&self, executor: &str) -> Option<&'a ObservedPod> {
        let name = format!("{executor}-driver");
        self.obs.pods.iter().find(|p| p.name == name)
    }

    fn finish(mut self) -> Plan {
        self.status.observed_generation = Some(self.obs.generation);
        // Pods planned for creation exist once the plan is carried out: counting them now
        // spares a second write when they appear.
        let active = self.obs.pods.len() + self.create.len();
        self.status.active_executors = Some(i32::try_from(active).unwrap_or(i32::MAX));
        self.status.conditions =
            super::conditions::conditions(self.obs, &self.status, self.waiting.as_ref());
        if self.status != self.obs.status {
            match self.count_wait() {
                Some(wait) => {
                    self.status.active_executors = self.obs.status.active_executors;
                    self.requeue = Some(self.requeue.map_or(wait, |r| r.min(wait)));
                }
                None => self.status.updated_at = Some(self.now()),
            }
        }
        Plan {
            release_pods: super::release::releasable(&self.obs.pods, self.status.state),
            status: self.status,
            create: self.create,
            delete: self.delete,
            force_delete: self.force_delete,
            events: self.events,
            requeue: self.requeue,
            requires_absence: self.requires_absence,
            delete_job: self.delete_job,
        }
    }
}

/// Whether waiting for `reason` is worth an event: not when it only restates the state
/// (`pending` waiting for its pods or its driver); a missing pool, a full pool and the like
/// are news to the user.
pub(super) fn announces(reason: Reason) -> bool {
    !matches!(reason, Reason::CreatingExecutor | Reason::Starting)
}

/// ` (reason: ...)` when a reason was given.
pub(super) fn reason_suffix(reason: Option<&str>) -> String {
    match reason {
        Some(r) if !r.is_empty() => format!(" (reason: {r})"),
        _ => String::new(),
    }
}

/// Whole seconds from `now` until `then`, plus one so the look happens after it.
fn duration_until(now: Timestamp, then: Timestamp) -> Duration {
    crate::domain::clock::duration_until(now, then)
}

/// `start` plus a number of seconds from the spec (negative counts as zero), saturating.
fn after_seconds(start: Timestamp, seconds: i64) -> Timestamp {
    crate::domain::clock::after(start, seconds)
}
