//! `kubectl datajob cancel NAME... [--reason R] [--wait] [--timeout D]`: sets `spec.cancel`
//! (the request; the operator tears the executor pods down, then records `cancelled`) and
//! optionally waits for the outcome.

use std::time::Duration;

use futures::future::join_all;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use serde_json::json;

use super::{Failure, Target, exit, job_error, namespace};
use crate::api::{DataJob, JobState};

/// Field manager of the plugin's patches.
const FIELD_MANAGER: &str = "kubectl-datajob";

/// What became of one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request was recorded (no wait).
    Requested,
    /// The job is cancelled.
    Cancelled,
    /// The job ended (or had ended) in another state; nothing to cancel.
    Other(JobState),
    /// The job was deleted before it was seen cancelled.
    Deleted,
    /// The wait timed out in this state (None: no state yet).
    TimedOut(Option<JobState>),
    /// The request failed.
    Error(String),
}

impl Outcome {
    fn code(&self) -> u8 {
        match self {
            Outcome::Requested | Outcome::Cancelled => exit::OK,
            Outcome::Other(_) | Outcome::Deleted => exit::OTHER_STATE,
            Outcome::TimedOut(_) => exit::TIMEOUT,
            Outcome::Error(_) => exit::ERROR,
        }
    }
}

/// The exit code for a set of outcomes: an error wins, then a timeout, then another state.
pub fn exit_code(outcomes: &[Outcome]) -> u8 {
    let codes: Vec<u8> = outcomes.iter().map(Outcome::code).collect();
    [exit::ERROR, exit::TIMEOUT, exit::OTHER_STATE]
        .into_iter()
        .find(|c| codes.contains(c))
        .unwrap_or(exit::OK)
}

fn state(job: &DataJob) -> Option<JobState> {
    job.status.as_ref().and_then(|s| s.state)
}

/// Sends the request for `name` unless the job is finished or already asked; returns the
/// outcome when there is nothing to wait for.
async fn request(
    api: &Api<DataJob>,
    ns: &str,
    name: &str,
    reason: Option<&str>,
) -> Option<Outcome> {
    let job = match api.get(name).await {
        Ok(job) => job,
        Err(e) => return Some(Outcome::Error(job_error(name, ns, e).0)),
    };
    match state(&job) {
        Some(JobState::Cancelled) => return Some(Outcome::Cancelled),
        Some(s) if s.is_terminal() => return Some(Outcome::Other(s)),
        _ => {}
    }
    if job.spec.cancel {
        println!("datajob.datajob.dev/{name} cancellation already requested");
        return None;
    }
    let mut spec = json!({ "cancel": true });
    if let Some(reason) = reason {
        spec["cancelReason"] = reason.into();
    }
    let patch = Patch::Merge(json!({ "spec": spec }));
    match api
        .patch(
            name,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.to_string()),
                ..PatchParams::default()
            },
            &patch,
        )
        .await
    {
        Ok(_) => {
            println!("datajob.datajob.dev/{name} cancellation requested");
            None
        }
        Err(e) => Some(Outcome::Error(job_error(name, ns, e).0)),
    }
}

async fn wait_for_end(api: &Api<DataJob>, name: &str, deadline: tokio::time::Instant) -> Outcome {
    let finished =
        |job: Option<&DataJob>| job.is_none_or(|j| state(j).is_some_and(JobState::is_terminal));
    match tokio::time::timeout_at(deadline, await_condition(api.clone(), name, finished)).await {
        Ok(Ok(Some(job))) => match state(&job) {
            Some(JobState::Cancelled) => Outcome::Cancelled,
            Some(other) => Outcome::Other(other),
            None => Outcome::Error(format!("datajob {name} has no state")),
        },
        Ok(Ok(None)) => Outcome::Deleted,
        Ok(Err(e)) => Outcome::Error(format!("watching datajob {name}: {e}")),
        Err(_) => Outcome::TimedOut(
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|j| state(&j)),
        ),
    }
}

fn report(name: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Requested => {}
        Outcome::Cancelled => println!("datajob.datajob.dev/{name} cancelled"),
        Outcome::Other(s) => eprintln!("datajob {name} is {s}, not cancelled: nothing to cancel"),
        Outcome::Deleted => eprintln!("datajob {name} was deleted before it was cancelled"),
        Outcome::TimedOut(s) => eprintln!(
            "timed out waiting for datajob {name} to be cancelled (state: {})",
            s.map_or("none yet".to_string(), |s| s.to_string())
        ),
        Outcome::Error(message) => eprintln!("error: {message}"),
    }
}

pub async fn run(
    target: &Target,
    names: &[String],
    reason: Option<&str>,
    wait: Option<Duration>,
) -> Result<u8, Failure> {
    let ns = namespace(target);
    let api: Api<DataJob> = Api::namespaced(target.client.clone(), ns);
    let deadline = wait.map(|w| tokio::time::Instant::now() + w);
    let outcomes = join_all(names.iter().map(|name| {
        let api = api.clone();
        async move {
            if let Some(done) = request(&api, ns, name, reason).await {
                return done;
            }
            match deadline {
                Some(deadline) => wait_for_end(&api, name, deadline).await,
                None => Outcome::Requested,
            }
        }
    }))
    .await;
    for (name, outcome) in names.iter().zip(&outcomes) {
        report(name, outcome);
    }
    Ok(exit_code(&outcomes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_wins_then_a_timeout_then_another_state() {
        use Outcome::*;
        assert_eq!(exit_code(&[Cancelled, Requested]), exit::OK);
        assert_eq!(
            exit_code(&[Cancelled, Other(JobState::Completed)]),
            exit::OTHER_STATE
        );
        assert_eq!(exit_code(&[Deleted]), exit::OTHER_STATE);
        assert_eq!(
            exit_code(&[Other(JobState::Failed), TimedOut(Some(JobState::Running))]),
            exit::TIMEOUT
        );
        assert_eq!(exit_code(&[TimedOut(None), Error("x".into())]), exit::ERROR);
    }
}
