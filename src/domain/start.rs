//! Whether a pending job's executor can still start: what keeps its pods from running (a
//! container's waiting reason, a pod the scheduler cannot place, a create the API server
//! refused), which of those causes cannot pass, and the start timeout. A cause that may pass is
//! shown (condition and Warning event, reason `ExecutorWaiting`) until the timeout; one that
//! cannot, or the timeout, fails the job with reason `ExecutorStartFailed`.

use jiff::Timestamp;

use super::clock;
use super::model::{Cause, ObservedPod, PodPhase, PoolView};
use crate::api::DataJobSpec;
use crate::api::datajob::{DEFAULT_START_TIMEOUT_SECONDS, MAX_START_TIMEOUT_SECONDS};

/// Container waiting reasons of a normal start.
const STARTING: &[&str] = &["ContainerCreating", "PodInitializing"];

/// Waiting reasons no retry can end: the image reference is malformed, or the pull policy
/// forbids pulling an image the node does not have. (An image that fails to pull,
/// `ErrImagePull`/`ImagePullBackOff`, may appear in its registry later; a missing Secret or
/// ConfigMap, `CreateContainerConfigError`, may be created later; an unschedulable pod may fit
/// once nodes are added or freed. Those wait for the start timeout.)
const PERMANENT: &[&str] = &["InvalidImageName", "ErrImageNeverPull"];

/// What keeps one executor pod (or its creation) from starting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blocked {
    /// The pod's name.
    pub pod: String,
    /// The cluster's reason and message.
    pub cause: Cause,
    /// Whether the cause cannot pass without a new DataJob.
    pub permanent: bool,
}

impl Blocked {
    /// `pod NAME: REASON: MESSAGE`.
    pub fn describe(&self) -> String {
        let Cause { reason, message } = &self.cause;
        if message.is_empty() {
            format!("pod {}: {reason}", self.pod)
        } else {
            format!("pod {}: {reason}: {message}", self.pod)
        }
    }
}

/// The start of a pending executor, judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// It may still start: by `deadline`, else the job fails. `blocked` is what holds it up
    /// now, if anything the cluster reports.
    Waiting {
        /// The cause to show, if any.
        blocked: Option<Blocked>,
        /// When the start timeout ends.
        deadline: Timestamp,
    },
    /// It cannot start: fail the job with reason `ExecutorStartFailed` and this message.
    Failed(String),
}

/// Judges the start of an executor recorded at `requested_at` whose pods are `pods`, given the
/// last refused create and the timeout.
pub fn judge(
    now: Timestamp,
    requested_at: Timestamp,
    timeout_seconds: i64,
    pods: &[ObservedPod],
    create_refusal: Option<&Cause>,
) -> Verdict {
    let blocked = blocked(pods, create_refusal);
    if let Some(b) = blocked.as_ref().filter(|b| b.permanent) {
        return Verdict::Failed(format!("the executor cannot start: {}", b.describe()));
    }
    let deadline = clock::after(requested_at, timeout_seconds);
    if now < deadline {
        return Verdict::Waiting { blocked, deadline };
    }
    let cause = match &blocked {
        Some(b) => format!(": {}", b.describe()),
        None => "; its pods are still pending".to_string(),
    };
    Verdict::Failed(format!(
        "the executor did not start within {timeout_seconds} s (startTimeoutSeconds){cause}"
    ))
}

/// What holds the executor up: a cause that cannot pass first, then the first pod by name
/// with a cause, then a refused create.
pub fn blocked(pods: &[ObservedPod], create_refusal: Option<&Cause>) -> Option<Blocked> {
    let mut found: Vec<Blocked> = pods.iter().filter_map(pod_blocked).collect();
    found.sort_by(|a, b| b.permanent.cmp(&a.permanent).then(a.pod.cmp(&b.pod)));
    found.into_iter().next().or_else(|| {
        create_refusal.map(|cause| Blocked {
            pod: "(not created)".to_string(),
            cause: cause.clone(),
            permanent: false,
        })
    })
}

/// The cause that keeps one pod from running, if it reports one.
fn pod_blocked(pod: &ObservedPod) -> Option<Blocked> {
    if pod.phase != PodPhase::Pending || pod.terminating {
        return None;
    }
    let cause = pod
        .waiting
        .as_ref()
        .filter(|w| !STARTING.contains(&w.reason.as_str()))
        .or(pod.unschedulable.as_ref())?;
    Some(Blocked {
        pod: pod.name.clone(),
        permanent: PERMANENT.contains(&cause.reason.as_str()),
        cause: cause.clone(),
    })
}

/// The job's start timeout in seconds: its own, else its pool's, else the default (bounded as
/// the schema bounds it).
pub fn timeout_seconds(spec: &DataJobSpec, pool: &PoolView) -> i64 {
    let pool_default = match pool {
        PoolView::Present {
            start_timeout_seconds,
            ..
        } => *start_timeout_seconds,
        _ => None,
    };
    spec.start_timeout_seconds
        .or(pool_default)
        .unwrap_or(DEFAULT_START_TIMEOUT_SECONDS)
        .clamp(1, MAX_START_TIMEOUT_SECONDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(T0 + seconds).expect("valid time")
    }

    fn cause(reason: &str, message: &str) -> Cause {
        Cause {
            reason: reason.to_string(),
            message: message.to_string(),
        }
    }

    fn pending(name: &str) -> ObservedPod {
        ObservedPod::new(name, PodPhase::Pending)
    }

    fn waiting(name: &str, reason: &str) -> ObservedPod {
        ObservedPod {
            waiting: Some(cause(reason, "details")),
            ..pending(name)
        }
    }

    #[test]
    fn a_normal_start_is_not_a_cause() {
        let pods = [
            waiting("x-driver", "ContainerCreating"),
            pending("x-worker-0"),
        ];
        assert_eq!(blocked(&pods, None), None);
        assert_eq!(
            judge(at(599), at(0), 600, &pods, None),
            Verdict::Waiting {
                blocked: None,
                deadline: at(600)
            }
        );
    }

    #[test]
    fn a_cause_that_may_pass_is_shown_until_the_timeout_then_fails_the_job() {
        for reason in [
            "ErrImagePull",
            "ImagePullBackOff",
            "CreateContainerConfigError",
        ] {
            let pods = [waiting("x-driver", reason)];
            let Verdict::Waiting {
                blocked: Some(b), ..
            } = judge(at(10), at(0), 60, &pods, None)
            else {
                panic!("{reason} waits for the timeout");
            };
            assert_eq!(b.describe(), format!("pod x-driver: {reason}: details"));
            assert_eq!(
                judge(at(60), at(0), 60, &pods, None),
                Verdict::Failed(format!(
                    "the executor did not start within 60 s (startTimeoutSeconds): pod x-driver: {reason}: details"
                ))
            );
        }
    }

    #[test]
    fn an_unschedulable_pod_waits_for_the_timeout() {
        let pod = ObservedPod {
            unschedulable: Some(cause("Unschedulable", "0/6 nodes are available")),
            ..pending("x-driver")
        };
        let verdict = judge(at(1), at(0), 30, std::slice::from_ref(&pod), None);
        assert!(matches!(verdict, Verdict::Waiting { blocked: Some(ref b), .. } if !b.permanent));
        assert!(matches!(
            judge(at(30), at(0), 30, &[pod], None),
            Verdict::Failed(m) if m.ends_with("pod x-driver: Unschedulable: 0/6 nodes are available")
        ));
    }

    #[test]
    fn an_invalid_image_name_fails_at_once() {
        let pods = [
            pending("x-driver"),
            waiting("x-worker-0", "InvalidImageName"),
        ];
        assert_eq!(
            judge(at(1), at(0), 600, &pods, None),
            Verdict::Failed(
                "the executor cannot start: pod x-worker-0: InvalidImageName: details".to_string()
            )
        );
    }

    #[test]
    fn a_refused_create_is_a_cause_and_a_silent_timeout_still_fails() {
        let quota = cause("Forbidden", "exceeded quota: q, requested: pods=1");
        let verdict = judge(at(5), at(0), 10, &[], Some(&quota));
        assert!(
            matches!(verdict, Verdict::Waiting { blocked: Some(ref b), .. } if b.cause == quota)
        );
        assert_eq!(
            judge(at(10), at(0), 10, &[pending("x-driver")], None),
            Verdict::Failed(
                "the executor did not start within 10 s (startTimeoutSeconds); its pods are still pending"
                    .to_string()
            )
        );
    }

    #[test]
    fn running_or_terminating_pods_are_not_blocked() {
        let running = ObservedPod {
            phase: PodPhase::Running,
            ..waiting("x-driver", "ImagePullBackOff")
        };
        let terminating = ObservedPod {
            terminating: true,
            ..waiting("x-worker-0", "InvalidImageName")
        };
        assert_eq!(blocked(&[running, terminating], None), None);
    }

    #[test]
    fn the_timeout_is_the_jobs_else_the_pools_else_the_default() {
        let spec: DataJobSpec = serde_json::from_value(serde_json::json!({
            "type": "nql-forecast", "input": { "nql": "q" }, "dataPlane": "dp",
        }))
        .expect("spec");
        let pool = PoolView::Present {
            name: "p".to_string(),
            cluster_type: crate::api::ClusterType::Shared,
            admitted: true,
            max_concurrent_jobs: 0,
            start_timeout_seconds: Some(120),
        };
        assert_eq!(
            timeout_seconds(&spec, &PoolView::NotRequested),
            DEFAULT_START_TIMEOUT_SECONDS
        );
        assert_eq!(timeout_seconds(&spec, &pool), 120);
        let own = DataJobSpec {
            start_timeout_seconds: Some(45),
            ..spec
        };
        assert_eq!(timeout_seconds(&own, &pool), 45);
    }
}
