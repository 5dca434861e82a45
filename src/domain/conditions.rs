//! Conditions: the kstatus set (`Ready`, `Reconciling`, `Stalled`) plus `Complete`, `Failed`,
//! `Cancelled` and `CancellationRequested`, derived from the decided status. Decisions work on
//! [`ConditionType`], [`Reason`] and `bool`; [`condition`] turns them into the API's strings.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::machine::{Waiting, reason_suffix};
use super::model::{ConditionType, Observation, Reason};
use crate::api::{Condition, DataJobStatus, JobState, condition as api_condition};

/// One condition as decided: its type, whether it holds, and why.
struct Decided {
    type_: ConditionType,
    holds: bool,
    reason: Reason,
    message: String,
}

/// The job's conditions for the decided `status`; `waiting` (why a job stays where it is)
/// replaces the state's own reason and message. A condition keeps its transition time while
/// its status does not change.
pub(super) fn conditions(
    obs: &Observation,
    status: &DataJobStatus,
    waiting: Option<&Waiting>,
) -> Vec<Condition> {
    let state = status.state.unwrap_or(JobState::Pending);
    let (reason, message) = match waiting {
        Some(w) => (w.reason, w.message.clone()),
        None => (Reason::of_state(state), state_summary(state, status)),
    };
    let holds = [
        (
            ConditionType::Ready,
            matches!(
                state,
                JobState::Running | JobState::Completed | JobState::Cancelled
            ),
        ),
        (
            ConditionType::Reconciling,
            matches!(state, JobState::Pending | JobState::PendingCancellation),
        ),
        (
            ConditionType::Stalled,
            state == JobState::Failed || waiting.is_some_and(|w| w.stalled),
        ),
        (ConditionType::Complete, state == JobState::Completed),
        (ConditionType::Failed, state == JobState::Failed),
        (ConditionType::Cancelled, state == JobState::Cancelled),
    ];
    holds
        .into_iter()
        .map(|(type_, holds)| Decided {
            type_,
            holds,
            reason,
            message: message.clone(),
        })
        .chain([cancellation(state, status)])
        .map(|decided| {
            let since = transition_time(&obs.status.conditions, &decided, Time(obs.now));
            condition(
                decided.type_,
                decided.holds,
                decided.reason,
                decided.message,
                since,
                Some(obs.generation),
            )
        })
        .collect()
}

/// CancellationRequested: true from the request until the job ends other than completed or
/// failed.
fn cancellation(state: JobState, status: &DataJobStatus) -> Decided {
    let requested = status
        .cancellation
        .as_ref()
        .filter(|_| !matches!(state, JobState::Completed | JobState::Failed));
    let (reason, message) = match requested {
        Some(c) => (
            Reason::CancellationRequested,
            format!(
                "cancellation requested{}",
                reason_suffix(c.reason.as_deref())
            ),
        ),
        None => (
            Reason::NotRequested,
            "no cancellation requested".to_string(),
        ),
    };
    Decided {
        type_: ConditionType::CancellationRequested,
        holds: requested.is_some(),
        reason,
        message,
    }
}

/// The previous transition time when the condition's status stays the same, else `now`.
fn transition_time(previous: &[Condition], decided: &Decided, now: Time) -> Time {
    match api_condition::find(previous, decided.type_.as_str()) {
        Some(p) if p.status == status_value(decided.holds) => p.last_transition_time.clone(),
        _ => now,
    }
}

/// The API's form of a condition (the edge where typed names become strings).
pub fn condition(
    type_: ConditionType,
    holds: bool,
    reason: Reason,
    message: String,
    last_transition_time: Time,
    observed_generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.as_str().to_string(),
        status: status_value(holds).to_string(),
        reason: reason.as_str().to_string(),
        message,
        last_transition_time,
        observed_generation,
    }
}

fn status_value(holds: bool) -> &'static str {
    if holds { "True" } else { "False" }
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
