//! The DataJob state machine (DESIGN section 3) as executable rules: one test per row of the
//! state table, then property tests over random sequences of observations. No cluster needed:
//! `decide` is pure.

use std::time::Duration;

use datajob_operator::api::{
    ClusterType, Condition, DataJobSpec, DataJobStatus, ExecutorSpec, JobInput, JobState, JobType,
};
use datajob_operator::domain::{
    COUNT_REFRESH, Cause, EventKind, NodeView, Observation, ObservedPod, Plan, PodPhase, PoolView,
    Reason, Termination, decide, release,
};
use datajob_operator::executor::{self, Role};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

/// The driver's result finalizer: results are never lost (issue 8, item 5).
#[path = "state_machine/results.rs"]
mod results;

const UID: &str = "0f1e2d3c-aaaa-bbbb-cccc-000000000001";
const RESULT: &str = r#"{"datasetId": 6404, "snapshotId": 739881302291276700, "recalculationId": "abf9a2ec-426b-4751-bd16-fcb435061925"}"#;

fn spec(cluster_type: ClusterType) -> DataJobSpec {
    DataJobSpec {
        job_type: JobType::MaterializeView,
        input: JobInput {
            nql: "SELECT 1".to_string(),
            compiled_sql: None,
            dataset_id: Some(6404),
            stats_enabled: false,
        },
        data_plane: "dp-1".to_string(),
        compute_pool: None,
        cluster_type: Some(cluster_type),
        executor: Some(ExecutorSpec {
            workers: (cluster_type == ClusterType::Dedicated).then_some(2),
            ..ExecutorSpec::default()
        }),
        cancel: false,
        cancel_reason: None,
        active_deadline_seconds: None,
        ttl_seconds_after_finished: None,
        start_timeout_seconds: None,
    }
}

/// A job fixture that is driven through observations, as the controller would.
#[derive(Clone, Debug)]
struct Job {
    obs: Observation,
}

impl Job {
    fn new(cluster_type: ClusterType) -> Self {
        Job {
            obs: Observation {
                now: Timestamp::from_second(1_800_000_000).expect("valid time"),
                name: "report".to_string(),
                uid: UID.to_string(),
                generation: 1,
                spec: spec(cluster_type),
                status: DataJobStatus::default(),
                pods: Vec::new(),
                pool: PoolView::NotRequested,
                nodes: Default::default(),
                rejection: None,
                create_refusal: None,
                refusal: None,
                arrival: None,
            },
        }
    }

    fn executor(&self) -> String {
        executor::executor_name(&self.obs.name, &self.obs.uid)
    }

    fn state(&self) -> Option<JobState> {
        self.obs.status.state
    }

    /// Decides and records the status, as apply would; returns the plan.
    fn step(&mut self) -> Plan {
        let plan = decide(&self.obs);
        self.obs.status = plan.status.clone();
        plan
    }

    /// Decides, records the status and carries out pod deletions (pods start terminating),
    /// result finalizer removals and creations (pods appear Pending, a driver with its result
    /// finalizer).
    fn step_and_apply(&mut self) -> Plan {
        let plan = self.step();
        for name in &plan.delete {
            self.delete_pod(name);
        }
        for name in &plan.release_pods {
            if let Some(pod) = self.obs.pods.iter_mut().find(|p| &p.name == name) {
                pod.holds_result = false;
            }
        }
        for slot in &plan.create {
            self.obs.pods.push(ObservedPod {
                holds_result: slot.role == Role::Driver,
                ..pod(&slot.name, slot.role, PodPhase::Pending)
            });
        }
        plan
    }

    /// Someone (the operator, a user, the garbage collector) deletes the pod: it terminates.
    fn delete_pod(&mut self, name: &str) {
        let now = self.obs.now;
        if let Some(pod) = self.obs.pods.iter_mut().find(|p| p.name == name) {
            pod.terminating = true;
            pod.deletion_requested_at.get_or_insert(now);
        }
    }

    /// Terminating pods without the result finalizer are gone; those with it stay.
    fn terminations_finish(&mut self) {
        self.obs.pods.retain(|p| !p.terminating || p.holds_result);
    }

    fn set_phase(&mut self, phase: PodPhase) {
        for pod in &mut self.obs.pods {
            pod.phase = phase;
        }
    }

    fn driver_mut(&mut self) -> &mut ObservedPod {
        let name = format!("{}-driver", self.executor());
        self.obs
            .pods
            .iter_mut()
            .find(|p| p.name == name)
            .expect("driver pod exists")
    }

    fn terminate_driver(&mut self, exit_code: i32, message: &str) {
        let now = self.obs.now;
        let driver = self.driver_mut();
        driver.phase = if exit_code == 0 {
            PodPhase::Succeeded
        } else {
            PodPhase::Failed
        };
        driver.termination = Some(Termination {
            exit_code,
            message: message.to_string(),
            finished_at: Some(now),
        });
    }

    fn request_cancel(&mut self) {
        self.obs.spec.cancel = true;
        self.obs.spec.cancel_reason = Some("user asked".to_string());
        self.obs.generation += 1;
    }

    fn pods_gone(&mut self) {
        self.obs.pods.clear();
    }

    /// Runs to `running`: pending, executor recorded, pods created and running.
    fn running(cluster_type: ClusterType) -> Self {
        let mut job = Job::new(cluster_type);
        job.step_and_apply(); // -> pending, executor recorded, pods created
        job.set_phase(PodPhase::Running);
        job.step_and_apply(); // -> running
        assert_eq!(job.state(), Some(JobState::Running));
        job
    }

    fn completed() -> Self {
        let mut job = Job::running(ClusterType::Shared);
        job.terminate_driver(0, RESULT);
        job.step_and_apply();
        assert_eq!(job.state(), Some(JobState::Completed));
        job
    }
}

fn pod(name: &str, role: Role, phase: PodPhase) -> ObservedPod {
    ObservedPod {
        role: Some(role),
        ..ObservedPod::new(name, phase)
    }
}

fn condition(job: &Job, type_: &str) -> String {
    find_condition(job, type_)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

/// The job's condition of `type_`, if its status has one.
fn find_condition<'a>(job: &'a Job, type_: &str) -> Option<&'a Condition> {
    job.obs.status.conditions.iter().find(|c| c.type_ == type_)
}

fn reasons(plan: &Plan) -> Vec<Reason> {
    plan.events.iter().map(|e| e.reason).collect()
}

#[test]
fn first_reconcile_records_pending_with_job_id_and_executor_and_plans_its_pods() {
    let mut job = Job::new(ClusterType::Shared);
    let plan = job.step();
    assert_eq!(job.state(), Some(JobState::Pending));
    assert_eq!(job.obs.status.job_id.as_deref(), Some(UID));
    assert!(job.obs.status.created_at.is_some());
    assert_eq!(job.obs.status.executor, Some(job.executor()));
    assert_eq!(plan.create.len(), 1, "pods follow the one status write");
    assert!(plan.guarded(None), "the write before pods is guarded");
    assert_eq!(job.obs.status.active_executors, Some(1));
    assert_eq!(reasons(&plan), ["Pending"], "one event: the state change");
    assert_eq!(condition(&job, "Reconciling"), "True");
}

#[test]
fn the_pending_record_keeps_the_arrival_the_watch_saw_and_never_rewrites_it() {
    let arrival = Timestamp::from_microsecond(1_799_999_999_123_456).expect("time");
    let mut job = Job::new(ClusterType::Shared);
    job.obs.arrival = Some(arrival);
    job.step();
    let recorded = job.obs.status.arrived_at.clone().map(|t| t.0);
    assert_eq!(recorded, Some(arrival), "to the microsecond");
    job.obs.arrival = None;
    job.step();
    assert_eq!(job.obs.status.arrived_at.map(|t| t.0), Some(arrival));
    let mut listed = Job::new(ClusterType::Shared);
    listed.step();
    assert_eq!(
        listed.obs.status.arrived_at, None,
        "a job first seen in a list"
    );
}

#[test]
fn executor_is_recorded_before_any_pod_is_created() {
    let mut job = Job::new(ClusterType::Shared);
    // The operator crashes after the status write, before it creates the pods.
    let plan = job.step();
    assert!(
        plan.create
            .iter()
            .all(|slot| slot.name.starts_with(&job.executor()))
    );
    assert_eq!(plan.status.executor, Some(job.executor()));
    // The next pass creates them under the recorded name, behind a guarded write.
    let plan = job.step();
    assert_eq!(plan.create.len(), 1);
    assert!(plan.create[0].name.starts_with(&job.executor()));
    assert!(plan.writes_status(Some(&job.obs.status)));
    assert!(plan.guarded(job.state()));
}

#[test]
fn a_job_that_cannot_start_at_once_records_only_pending_first() {
    let mut job = Job::new(ClusterType::Shared);
    job.obs.spec.compute_pool = Some("p".to_string());
    job.obs.pool = PoolView::Present {
        name: "p".to_string(),
        cluster_type: ClusterType::Shared,
        admitted: false,
        max_concurrent_jobs: 1,
        start_timeout_seconds: None,
    };
    let plan = job.step();
    assert_eq!(job.state(), Some(JobState::Pending));
    assert!(job.obs.status.executor.is_none());
    assert!(plan.create.is_empty());
    assert_eq!(
        reasons(&plan),
        ["Pending", "Queued"],
        "one write: pending, and why"
    );
    let mut job = Job::new(ClusterType::Shared);
    job.obs.spec.cancel = true;
    let plan = job.step();
    assert!(
        job.obs.status.executor.is_none(),
        "a cancelled job takes no executor"
    );
    assert!(plan.create.is_empty());
}

#[test]
fn pending_with_room_creates_pods_and_stays_pending_until_the_driver_runs() {
    let mut job = Job::new(ClusterType::Dedicated);
    let plan = job.step_and_apply();
    assert_eq!(plan.create.len(), 3, "driver plus two workers");
    assert_eq!(job.state(), Some(JobState::Pending));
    let plan = job.step_and_apply();
    assert!(plan.create.is_empty(), "pods are not created twice");
    assert!(plan.events.is_empty(), "waiting for the driver is no news");
    assert_eq!(job.state(), Some(JobState::Pending));
    job.set_phase(PodPhase::Running);
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Running));
    assert_eq!(reasons(&plan), ["Running"]);
    assert!(job.obs.status.started_at.is_some());
    assert_eq!(condition(&job, "Ready"), "True");
}

/// Runs `job` as apply would and counts the status writes apply makes (an unchanged status
/// is not written, except before pods are created) and the events it publishes.
fn write(job: &mut Job, writes: &mut Vec<Option<JobState>>, events: &mut Vec<Reason>) {
    let observed = job.obs.status.clone();
    let plan = job.step_and_apply();
    if plan.writes_status(Some(&observed)) {
        writes.push(plan.status.state);
    }
    events.extend(reasons(&plan));
}

#[test]
fn a_lifecycle_writes_status_once_per_state_change_and_one_event_each() {
    for (cluster_type, end) in [
        (ClusterType::Shared, JobState::Cancelled),
        (ClusterType::Dedicated, JobState::Cancelled),
        (ClusterType::Shared, JobState::Completed),
    ] {
        let mut job = Job::new(cluster_type);
        let (mut writes, mut events) = (Vec::new(), Vec::new());
        write(&mut job, &mut writes, &mut events); // -> pending, pods created
        write(&mut job, &mut writes, &mut events); // pods seen pending: nothing new
        job.set_phase(PodPhase::Running);
        write(&mut job, &mut writes, &mut events); // -> running
        write(&mut job, &mut writes, &mut events); // nothing new
        if end == JobState::Cancelled {
            job.request_cancel();
            write(&mut job, &mut writes, &mut events); // -> pending_cancellation
            write(&mut job, &mut writes, &mut events); // pods terminating: nothing new
            while job.obs.pods.len() > 1 {
                job.obs.pods.pop();
                write(&mut job, &mut writes, &mut events); // one pod fewer: nothing new
            }
            job.pods_gone();
            write(&mut job, &mut writes, &mut events); // -> cancelled
        } else {
            job.terminate_driver(0, RESULT);
            write(&mut job, &mut writes, &mut events); // -> completed
        }
        write(&mut job, &mut writes, &mut events); // nothing new
        assert_eq!(job.state(), Some(end));
        let states: Vec<JobState> = writes.iter().map(|s| s.expect("a state")).collect();
        let expected: Vec<JobState> = match end {
            JobState::Cancelled => vec![
                JobState::Pending,
                JobState::Running,
                JobState::PendingCancellation,
                JobState::Cancelled,
            ],
            _ => vec![JobState::Pending, JobState::Running, JobState::Completed],
        };
        assert_eq!(
            states, expected,
            "{cluster_type:?}: one write per state change"
        );
        let expected_events: Vec<Reason> = expected.iter().map(|s| Reason::of_state(*s)).collect();
        assert_eq!(
            events, expected_events,
            "{cluster_type:?}: one event per state change"
        );
    }
}

#[test]
fn a_pod_count_that_alone_changes_is_written_once_its_refresh_interval_is_over() {
    let mut job = Job::running(ClusterType::Dedicated);
    job.request_cancel();
    job.step_and_apply(); // -> pending_cancellation, written now with 3 pods
    assert_eq!(job.obs.status.active_executors, Some(3));
    job.obs.pods.pop();
    job.obs.now += Duration::from_secs(1);
    let observed = job.obs.status.clone();
    let plan = job.step();
    assert!(
        !plan.writes_status(Some(&observed)),
        "one pod fewer a second after a write: not written yet"
    );
    assert_eq!(plan.status.active_executors, Some(3));
    assert_eq!(
        plan.requeue,
        Some(COUNT_REFRESH - Duration::from_secs(1)),
        "but looked at again when the interval is over"
    );
    job.obs.now += COUNT_REFRESH;
    let plan = job.step();
    assert!(plan.writes_status(Some(&observed)), "then written");
    assert_eq!(plan.status.active_executors, Some(2));
    job.pods_gone();
    let plan = job.step();
    assert_eq!(
        (plan.status.state, plan.status.active_executors),
        (Some(JobState::Cancelled), Some(0)),
        "a state change writes the exact count at once"
    );

    let mut job = Job::running(ClusterType::Dedicated);
    job.obs.status.updated_at = Some(Time(job.obs.now + Duration::from_secs(3600)));
    job.obs.pods.pop();
    let observed = job.obs.status.clone();
    let plan = job.step();
    assert!(
        plan.writes_status(Some(&observed)),
        "a recorded time in the future does not hold the count back"
    );
    assert_eq!(plan.status.active_executors, Some(2));
}

#[test]
fn only_pod_creation_and_state_changes_are_guarded() {
    let mut job = Job::running(ClusterType::Shared);
    job.obs.now += Duration::from_secs(30);
    job.obs.generation += 1; // a spec change that decides nothing new: a refresh
    let plan = decide(&job.obs);
    assert!(plan.writes_status(Some(&job.obs.status)));
    assert!(plan.transition(job.state()).is_none());
    assert!(!plan.guarded(job.state()), "a refresh is written as is");
    job.request_cancel();
    let plan = decide(&job.obs);
    assert!(plan.guarded(job.state()), "a state change is guarded");
}

#[test]
fn missing_pool_keeps_the_job_pending_with_a_warning_until_it_appears() {
    let mut job = Job::new(ClusterType::Shared);
    job.obs.spec.compute_pool = Some("gpu".to_string());
    job.obs.spec.cluster_type = None;
    job.obs.pool = PoolView::Missing {
        name: "gpu".to_string(),
    };
    let plan = job.step();
    assert_eq!(job.state(), Some(JobState::Pending));
    assert!(plan.create.is_empty());
    assert_eq!(reasons(&plan), ["Pending", "WaitingForComputePool"]);
    let again = job.step();
    assert!(again.events.is_empty(), "the warning is published once");
    job.obs.pool = PoolView::Present {
        name: "gpu".to_string(),
        cluster_type: ClusterType::Dedicated,
        admitted: true,
        max_concurrent_jobs: 0,
        start_timeout_seconds: None,
    };
    let plan = job.step();
    assert_eq!(job.obs.status.cluster_type, Some(ClusterType::Dedicated));
    assert_eq!(
        plan.create.len(),
        3,
        "the pool's type applies: driver plus workers"
    );
}

#[test]
fn a_full_pool_queues_the_job_without_pods() {
    let mut job = Job::new(ClusterType::Shared);
    job.obs.spec.compute_pool = Some("small".to_string());
    job.obs.pool = PoolView::Present {
        name: "small".to_string(),
        cluster_type: ClusterType::Shared,
        admitted: false,
        max_concurrent_jobs: 1,
        start_timeout_seconds: None,
    };
    let plan = job.step();
    assert_eq!(reasons(&plan), ["Pending", "Queued"]);
    assert!(job.obs.status.executor.is_none());
    assert!(job.step().events.is_empty(), "queued is announced once");
    assert!(plan.create.is_empty());
}

#[test]
fn cancel_from_pending_moves_to_pending_cancellation_then_cancelled_once_pods_are_gone() {
    let mut job = Job::new(ClusterType::Dedicated);
    job.step_and_apply();
    job.step_and_apply();
    job.step_and_apply();
    job.request_cancel();
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::PendingCancellation));
    assert_eq!(plan.delete.len(), 3);
    assert_eq!(reasons(&plan), ["CancellationRequested"]);
    let cancellation = job.obs.status.cancellation.clone().expect("recorded");
    assert_eq!(cancellation.reason.as_deref(), Some("user asked"));
    assert_eq!(condition(&job, "CancellationRequested"), "True");
    let plan = job.step_and_apply();
    assert_eq!(
        job.state(),
        Some(JobState::PendingCancellation),
        "pods still terminating"
    );
    assert!(
        plan.delete.is_empty(),
        "terminating pods are not deleted again"
    );
    job.pods_gone();
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Cancelled));
    assert!(
        plan.requires_absence,
        "cancelled must be confirmed by a fresh read"
    );
    assert!(job.obs.status.completed_at.is_some());
    assert_eq!(condition(&job, "Cancelled"), "True");
}

#[test]
fn cancel_from_running_tears_down_every_executor_pod() {
    let mut job = Job::running(ClusterType::Dedicated);
    job.request_cancel();
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::PendingCancellation));
    let mut deleted = plan.delete.clone();
    deleted.sort();
    let mut all: Vec<String> = job.obs.pods.iter().map(|p| p.name.clone()).collect();
    all.sort();
    assert_eq!(deleted, all);
}

#[test]
fn driver_success_completes_with_the_result() {
    let job = Job::completed();
    let result = job.obs.status.result.clone().expect("result recorded");
    assert_eq!(result.snapshot_id, Some(739_881_302_291_276_700));
    assert_eq!(result.dataset_id, Some(6404));
    assert!(job.obs.status.completed_at.is_some());
    assert_eq!(condition(&job, "Complete"), "True");
    assert_eq!(condition(&job, "Ready"), "True");
}

#[test]
fn completion_releases_workers_still_running() {
    let mut job = Job::running(ClusterType::Dedicated);
    job.terminate_driver(0, RESULT);
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Completed));
    assert_eq!(plan.delete.len(), 2, "both workers are released");
}

#[test]
fn driver_failure_fails_the_job_with_its_reason() {
    let mut job = Job::running(ClusterType::Shared);
    job.terminate_driver(2, r#"{"reason": "QueryError", "message": "no such table"}"#);
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Failed));
    let failure = &job.obs.status.failures[0];
    assert_eq!(failure.reason, "DriverFailed");
    assert!(failure.message.contains("QueryError") && failure.message.contains("no such table"));
    assert_eq!(reasons(&plan), ["Failed"]);
    assert_eq!(condition(&job, "Failed"), "True");
    assert_eq!(condition(&job, "Stalled"), "True");
}

#[test]
fn unreadable_result_fails_with_invalid_result() {
    let mut job = Job::running(ClusterType::Shared);
    job.terminate_driver(0, "done!");
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Failed));
    assert_eq!(job.obs.status.failures[0].reason, "InvalidResult");
}

#[test]
fn lost_executor_pod_fails_the_job_after_a_confirmed_read() {
    let mut job = Job::running(ClusterType::Dedicated);
    let worker = format!("{}-worker-1", job.executor());
    job.obs.pods.retain(|p| p.name != worker);
    let plan = job.step();
    assert_eq!(job.state(), Some(JobState::Failed));
    assert!(plan.requires_absence);
    assert_eq!(job.obs.status.failures[0].reason, "ExecutorLost");
    assert!(job.obs.status.failures[0].message.contains(&worker));
}

#[test]
fn evicted_executor_pod_fails_the_job_with_evicted() {
    let mut job = Job::running(ClusterType::Dedicated);
    let worker = &mut job.obs.pods[1];
    worker.phase = PodPhase::Failed;
    worker.reason = Some("Evicted".to_string());
    worker.message = Some("The node was low on resource: memory.".to_string());
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Failed));
    assert_eq!(job.obs.status.failures[0].reason, "Evicted");
}

#[test]
fn passing_the_deadline_fails_with_deadline_exceeded() {
    let mut job = Job::running(ClusterType::Shared);
    job.obs.spec.active_deadline_seconds = Some(60);
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Running));
    assert!(plan.requeue.is_some_and(|d| d <= Duration::from_secs(61)));
    job.obs.now += Duration::from_secs(61);
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Failed));
    assert_eq!(job.obs.status.failures[0].reason, "DeadlineExceeded");
    assert_eq!(plan.delete.len(), 1, "the running driver is torn down");
}

#[test]
fn cancel_of_completed_job_is_a_no_op_recorded_as_an_event() {
    let mut job = Job::completed();
    let before = job.obs.status.clone();
    job.request_cancel();
    let plan = job.step();
    assert_eq!(reasons(&plan), ["CancellationIgnored"]);
    assert_eq!(plan.status.state, Some(JobState::Completed));
    assert_eq!(plan.status.result, before.result);
    assert_eq!(plan.status.completed_at, before.completed_at);
    assert!(plan.status.cancellation.is_none());
    let again = job.step();
    assert!(again.events.is_empty(), "ignored once per generation");
}

#[test]
fn cancel_of_failed_or_cancelled_job_changes_nothing() {
    let mut failed = Job::running(ClusterType::Shared);
    failed.terminate_driver(1, "");
    failed.step_and_apply();
    let mut cancelled = Job::running(ClusterType::Shared);
    cancelled.request_cancel();
    cancelled.step_and_apply();
    cancelled.pods_gone();
    cancelled.step_and_apply();
    for mut job in [failed, cancelled] {
        let state = job.state();
        job.request_cancel();
        let plan = job.step();
        assert_eq!(plan.status.state, state);
        assert!(plan.create.is_empty());
    }
}

#[test]
fn pending_cancellation_ends_cancelled_even_if_the_driver_succeeds_meanwhile() {
    let mut job = Job::running(ClusterType::Shared);
    job.request_cancel();
    job.step_and_apply();
    job.terminate_driver(0, RESULT);
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::PendingCancellation));
    job.pods_gone();
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Cancelled));
    assert!(job.obs.status.result.is_none());
}

#[test]
fn ttl_deletes_a_finished_job_after_it_expires() {
    let mut job = Job::completed();
    job.obs.spec.ttl_seconds_after_finished = Some(30);
    let plan = job.step();
    assert!(!plan.delete_job);
    assert!(plan.requeue.is_some());
    job.obs.now += Duration::from_secs(30);
    assert!(job.step().delete_job);
}

#[test]
fn a_driver_that_finished_before_running_was_seen_still_passes_through_running() {
    let mut job = Job::new(ClusterType::Shared);
    job.step_and_apply();
    job.step_and_apply();
    job.step_and_apply();
    job.terminate_driver(0, RESULT);
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Running));
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Completed));
}

#[test]
fn an_executor_pod_the_api_server_rejects_fails_the_job() {
    let mut job = Job::new(ClusterType::Shared);
    job.step_and_apply();
    job.step_and_apply();
    job.obs.rejection = Some("spec.containers[0].resources.requests: Invalid value".to_string());
    let plan = job.step();
    assert_eq!(job.state(), Some(JobState::Failed));
    assert!(plan.create.is_empty());
    assert_eq!(job.obs.status.failures[0].reason, "ExecutorRejected");
    assert!(job.obs.status.failures[0].message.contains("Invalid value"));
}

/// A dedicated job whose pods were created (pending) `seconds` ago.
fn starting(seconds: i64) -> Job {
    let mut job = Job::new(ClusterType::Dedicated);
    job.step_and_apply();
    job.step_and_apply();
    job.step_and_apply();
    job.obs.now += jiff::SignedDuration::from_secs(seconds);
    job
}

#[test]
fn an_image_pull_back_off_is_a_warning_and_a_condition_until_the_start_timeout() {
    let mut job = starting(30);
    job.driver_mut().waiting = Some(Cause {
        reason: "ImagePullBackOff".to_string(),
        message: "Back-off pulling image \"registry.example/nope:1\"".to_string(),
    });
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Pending));
    assert_eq!(reasons(&plan), ["ExecutorWaiting"]);
    assert_eq!(plan.events[0].kind, EventKind::Warning);
    let reconciling = find_condition(&job, "Reconciling");
    let reconciling = reconciling.expect("Reconciling");
    assert_eq!(reconciling.reason, "ExecutorWaiting");
    assert!(
        reconciling.message.contains("ImagePullBackOff"),
        "{}",
        reconciling.message
    );
    assert!(
        plan.requeue.is_some_and(|r| r <= Duration::from_secs(571)),
        "looks again by the timeout: {:?}",
        plan.requeue
    );
    let plan = job.step_and_apply();
    assert!(plan.events.is_empty(), "the same cause is announced once");

    job.obs.now += jiff::SignedDuration::from_secs(570);
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Failed));
    let failure = &job.obs.status.failures[0];
    assert_eq!(failure.reason, "ExecutorStartFailed");
    assert!(
        failure.message.contains("within 600 s"),
        "{}",
        failure.message
    );
    assert!(
        failure.message.contains("ImagePullBackOff"),
        "{}",
        failure.message
    );
    assert_eq!(plan.delete.len(), 3, "every pending pod is deleted");
    assert!(plan.create.is_empty());
}

#[test]
fn an_invalid_image_name_fails_the_job_at_once_and_deletes_its_pods() {
    let mut job = starting(1);
    job.obs.pods[1].waiting = Some(Cause {
        reason: "InvalidImageName".to_string(),
        message: "couldn't parse image name".to_string(),
    });
    let plan = job.step();
    assert_eq!(job.state(), Some(JobState::Failed));
    assert_eq!(job.obs.status.failures[0].reason, "ExecutorStartFailed");
    assert_eq!(plan.delete.len(), 3);
    assert_eq!(condition(&job, "Stalled"), "True");
}

#[test]
fn the_jobs_start_timeout_wins_over_the_pools_and_counts_from_the_recorded_executor() {
    let mut job = starting(0);
    job.obs.spec.start_timeout_seconds = Some(20);
    job.obs.pool = PoolView::Present {
        name: "p".to_string(),
        cluster_type: ClusterType::Dedicated,
        admitted: true,
        max_concurrent_jobs: 0,
        start_timeout_seconds: Some(3600),
    };
    let requested = job.obs.status.start_requested_at.clone().expect("recorded");
    job.obs.now = requested.0 + jiff::SignedDuration::from_secs(19);
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Pending));
    job.obs.now = requested.0 + jiff::SignedDuration::from_secs(20);
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Failed));
    assert!(
        job.obs.status.failures[0]
            .message
            .contains("its pods are still pending"),
        "{}",
        job.obs.status.failures[0].message
    );
}

#[test]
fn a_refused_create_is_shown_and_a_queued_job_waits_without_a_start_clock() {
    let mut job = starting(0);
    job.obs.pods.clear();
    job.obs.create_refusal = Some(Cause {
        reason: "Forbidden".to_string(),
        message: "exceeded quota: pods".to_string(),
    });
    let plan = job.step();
    assert_eq!(reasons(&plan), ["ExecutorWaiting"]);
    assert!(!plan.create.is_empty(), "creation is retried");

    let mut queued = Job::new(ClusterType::Shared);
    queued.obs.pool = PoolView::Present {
        name: "p".to_string(),
        cluster_type: ClusterType::Shared,
        admitted: false,
        max_concurrent_jobs: 1,
        start_timeout_seconds: Some(1),
    };
    queued.step_and_apply();
    queued.obs.now += jiff::SignedDuration::from_secs(3600);
    queued.step_and_apply();
    assert_eq!(
        queued.state(),
        Some(JobState::Pending),
        "a queued job never times out"
    );
    assert!(queued.obs.status.start_requested_at.is_none());
}

#[test]
fn a_teardown_stuck_past_the_grace_period_stalls_and_a_pod_on_a_lost_node_is_force_deleted() {
    let mut job = Job::running(ClusterType::Shared);
    job.request_cancel();
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::PendingCancellation));
    let deadline = job.obs.now + jiff::SignedDuration::from_secs(2);
    for pod in &mut job.obs.pods {
        pod.deletion_deadline = Some(deadline);
        pod.node = Some("kwok-node-3".to_string());
    }
    let plan = job.step_and_apply();
    assert_eq!(
        condition(&job, "Stalled"),
        "False",
        "within the grace period"
    );
    assert_eq!(
        plan.requeue,
        Some(Duration::from_secs(33)),
        "looks again when it would be stuck"
    );

    job.obs.now += jiff::SignedDuration::from_secs(40);
    let plan = job.step_and_apply();
    assert_eq!(condition(&job, "Stalled"), "True");
    assert_eq!(reasons(&plan), ["TeardownStuck"]);
    assert_eq!(plan.events[0].kind, EventKind::Warning);
    let stalled = find_condition(&job, "Stalled");
    let message = &stalled.expect("Stalled").message;
    assert!(message.contains("-driver on node kwok-node-3"), "{message}");
    assert!(plan.force_delete.is_empty(), "the node's state is unknown");

    job.obs
        .nodes
        .insert("kwok-node-3".to_string(), NodeView::Gone);
    let plan = job.step_and_apply();
    assert_eq!(plan.force_delete, [format!("{}-driver", job.executor())]);
    assert!(
        plan.events[0]
            .message
            .contains("node kwok-node-3 no longer exists")
    );
    assert_eq!(
        job.state(),
        Some(JobState::PendingCancellation),
        "cancelled only once gone"
    );

    job.pods_gone();
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Cancelled));
    assert_eq!(condition(&job, "Stalled"), "False");
}

#[test]
fn a_pool_deleted_after_admission_keeps_the_executor_and_creates_nothing_without_it() {
    let mut job = Job::new(ClusterType::Shared);
    job.obs.spec.compute_pool = Some("p".to_string());
    job.obs.pool = PoolView::Present {
        name: "p".to_string(),
        cluster_type: ClusterType::Shared,
        admitted: true,
        max_concurrent_jobs: 0,
        start_timeout_seconds: None,
    };
    job.step(); // the executor is recorded; its pods are not created yet
    job.obs.pool = PoolView::Missing {
        name: "p".to_string(),
    };
    let plan = job.step_and_apply();
    assert!(plan.create.is_empty(), "no pod is placed without its pool");
    assert_eq!(reasons(&plan), ["WaitingForComputePool"]);
    assert!(job.obs.status.executor.is_some());
}

#[test]
fn an_unchanged_observation_writes_nothing_new() {
    let mut job = Job::running(ClusterType::Shared);
    job.step();
    let before = job.obs.status.clone();
    let plan = job.step();
    assert_eq!(plan.status, before);
    assert!(plan.events.is_empty());
}

/// One thing that can happen between two reconciles.
#[derive(Clone, Debug)]
enum Happening {
    /// The operator reconciles (and its pod writes take effect).
    Reconcile,
    /// The operator reconciles but crashes after writing status, before touching pods.
    ReconcileThenCrash,
    /// Pods move to a phase.
    Phase(PodPhase),
    /// The driver terminates with an exit code.
    DriverExits(i32),
    /// A pod disappears (deleted by someone, or its deletion finished).
    PodGone(usize),
    /// Terminating pods finish terminating.
    TerminationsFinish,
    /// The user requests cancellation.
    Cancel,
    /// Time passes.
    Tick(u64),
}

fn legal(from: Option<JobState>, to: Option<JobState>) -> bool {
    use JobState::*;
    from == to
        || matches!(
            (from, to),
            (None, Some(Pending))
                | (Some(Pending), Some(Running | PendingCancellation | Failed))
                | (
                    Some(Running),
                    Some(PendingCancellation | Completed | Failed)
                )
                | (Some(PendingCancellation), Some(Cancelled))
        )
}

fn happening() -> impl Strategy<Value = Happening> {
    prop_oneof![
        4 => Just(Happening::Reconcile),
        1 => Just(Happening::ReconcileThenCrash),
        1 => prop_oneof![
            Just(PodPhase::Running),
            Just(PodPhase::Pending),
            Just(PodPhase::Unknown)
        ]
        .prop_map(Happening::Phase),
        1 => prop_oneof![Just(0), Just(1), Just(137)].prop_map(Happening::DriverExits),
        1 => (0usize..4).prop_map(Happening::PodGone),
        2 => Just(Happening::TerminationsFinish),
        1 => Just(Happening::Cancel),
        1 => (1u64..120).prop_map(Happening::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn invariants_hold_under_any_sequence(
        dedicated in any::<bool>(),
        deadline in prop::option::of(30i64..600),
        events in prop::collection::vec(happening(), 1..60),
    ) {
        let cluster_type = if dedicated { ClusterType::Dedicated } else { ClusterType::Shared };
        let mut job = Job::new(cluster_type);
        job.obs.spec.active_deadline_seconds = deadline;
        let mut terminal: Option<JobState> = None;
        let mut frozen: Option<String> = None;
        let mut executor: Option<String> = None;
        let mut saw_pending_cancellation = false;
        for event in events {
            match event {
                Happening::Reconcile | Happening::ReconcileThenCrash => {
                    let before = job.state();
                    let plan = if matches!(event, Happening::Reconcile) {
                        job.step_and_apply()
                    } else {
                        job.step()
                    };
                    let after = job.state();
                    // A terminal state never changes.
                    if let Some(t) = terminal {
                        prop_assert_eq!(after, Some(t));
                    }
                    // Only edges of the state table; no state is skipped.
                    prop_assert!(legal(before, after), "illegal transition {:?} -> {:?}", before, after);
                    // A result finalizer goes only with a recorded outcome or a teardown.
                    if !plan.release_pods.is_empty() {
                        prop_assert!(release::may_release(plan.status.state), "released in {:?}", plan.status.state);
                    }
                    // Cancelled only when no executor pod exists.
                    if after == Some(JobState::Cancelled) && before != after {
                        prop_assert!(job.obs.pods.is_empty(), "cancelled with pods {:?}", job.obs.pods);
                        prop_assert!(plan.requires_absence);
                    }
                    // Once pending_cancellation is recorded, only cancelled may follow.
                    if before == Some(JobState::PendingCancellation) {
                        prop_assert!(matches!(after, Some(JobState::PendingCancellation | JobState::Cancelled)));
                    }
                    // Never a second executor: one recorded name, pods only under it.
                    if let Some(name) = &job.obs.status.executor {
                        if let Some(first) = &executor {
                            prop_assert_eq!(first, name);
                        }
                        executor = Some(name.clone());
                    }
                    for slot in &plan.create {
                        let recorded = job.obs.status.executor.clone();
                        prop_assert!(recorded.is_some_and(|e| slot.name.starts_with(&e)));
                    }
                    let mut names: Vec<&str> = job.obs.pods.iter().map(|p| p.name.as_str()).collect();
                    names.sort();
                    let count = names.len();
                    names.dedup();
                    prop_assert_eq!(names.len(), count, "duplicate pods");
                    if after == Some(JobState::PendingCancellation) {
                        saw_pending_cancellation = true;
                    }
                    if let Some(state) = after && state.is_terminal() {
                        terminal = Some(state);
                        // What a finished job records never changes afterwards.
                        let s = &job.obs.status;
                        let record = format!(
                            "{:?}",
                            (&s.result, &s.failures, &s.cancellation, &s.started_at, &s.completed_at)
                        );
                        if let Some(first) = &frozen {
                            prop_assert_eq!(first, &record);
                        }
                        frozen = Some(record);
                    }
                }
                Happening::Phase(phase) => {
                    for pod in &mut job.obs.pods {
                        if pod.termination.is_none() {
                            pod.phase = phase;
                        }
                    }
                }
                Happening::DriverExits(code) => {
                    let driver = format!("{}-driver", job.executor());
                    if job.obs.pods.iter().any(|p| p.name == driver) {
                        job.terminate_driver(code, if code == 0 { RESULT } else { "" });
                    }
                }
                // A pod with the result finalizer only starts terminating.
                Happening::PodGone(i) => match job.obs.pods.get(i) {
                    Some(pod) if pod.holds_result => {
                        let name = pod.name.clone();
                        job.delete_pod(&name);
                    }
                    Some(_) => {
                        job.obs.pods.remove(i);
                    }
                    None => {}
                },
                Happening::TerminationsFinish => job.terminations_finish(),
                Happening::Cancel => {
                    if !job.obs.spec.cancel {
                        job.request_cancel();
                    }
                }
                Happening::Tick(secs) => job.obs.now += Duration::from_secs(secs),
            }
        }
        // pending_cancellation always ends cancelled: drive the teardown to its end.
        if saw_pending_cancellation {
            for _ in 0..4 {
                job.step_and_apply();
                job.terminations_finish();
            }
            prop_assert_eq!(job.state(), Some(JobState::Cancelled));
            prop_assert!(job.obs.pods.is_empty());
        }
        // A finished job holds no pod by its result finalizer once it was looked at.
        job.step_and_apply();
        if job.state().is_some_and(JobState::is_terminal) {
            prop_assert!(job.obs.pods.iter().all(|p| !p.holds_result), "{:?}", job.obs.pods);
        }
    }
}

#[test]
fn a_deleted_jobs_stuck_teardown_is_shown_once_naming_pod_and_node() {
    use datajob_operator::domain::{Deletion, on_deletion, stalled_deletion, teardown};
    let deadline = Timestamp::from_second(1_800_000_000).expect("time");
    let pod = ObservedPod {
        terminating: true,
        deletion_deadline: Some(deadline),
        node: Some("node-7".to_string()),
        ..ObservedPod::new("dj-x-driver", PodPhase::Running)
    };
    let at = |s: i64| Timestamp::from_second(1_800_000_000 + s).expect("time");
    let Deletion::Wait { stuck, poll, .. } =
        on_deletion(std::slice::from_ref(&pod), &Default::default(), at(10))
    else {
        panic!("a pod remains");
    };
    assert_eq!(stuck, None, "within the margin a teardown is not stuck");
    assert_eq!(poll, Duration::from_secs(2));
    let Deletion::Wait { stuck, poll, .. } =
        on_deletion(std::slice::from_ref(&pod), &Default::default(), at(45))
    else {
        panic!("a pod remains");
    };
    let message = stuck.expect("stuck past the grace period and the margin");
    assert!(
        message.contains("dj-x-driver") && message.contains("node-7"),
        "{message}"
    );
    assert_eq!(poll, teardown::STUCK_POLL);
    let status = DataJobStatus {
        state: Some(JobState::Running),
        ..DataJobStatus::default()
    };
    let shown = stalled_deletion(&status, &message, at(45), 3).expect("shown");
    assert_eq!(
        shown.state,
        Some(JobState::Running),
        "a deletion changes no state"
    );
    let stalled = shown.conditions.iter().find(|c| c.type_ == "Stalled");
    let stalled = stalled.expect("Stalled");
    assert_eq!(
        (stalled.status.as_str(), stalled.reason.as_str()),
        ("True", "TeardownStuck")
    );
    assert_eq!(stalled.message, message);
    assert_eq!(
        stalled_deletion(&shown, &message, at(55), 3),
        None,
        "an unchanged stuck teardown is written once"
    );
}

#[test]
fn a_worker_of_a_running_job_that_cannot_start_is_shown_once_and_the_job_runs_on() {
    let mut job = Job::running(ClusterType::Dedicated);
    let worker = job
        .obs
        .pods
        .iter_mut()
        .find(|p| p.role == Some(Role::Worker))
        .expect("a worker");
    worker.phase = PodPhase::Pending;
    worker.waiting = Some(Cause {
        reason: "ImagePullBackOff".to_string(),
        message: "Back-off pulling image".to_string(),
    });
    let name = worker.name.clone();
    let plan = job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Running), "the driver goes on");
    assert_eq!(reasons(&plan), ["ExecutorWaiting"]);
    assert_eq!(plan.events[0].kind, EventKind::Warning);
    let ready = find_condition(&job, "Ready");
    let ready = ready.expect("Ready");
    assert_eq!(ready.reason, "ExecutorWaiting");
    assert!(ready.message.contains(&name) && ready.message.contains("ImagePullBackOff"));
    let before = job.obs.status.clone();
    let again = job.step_and_apply();
    assert!(again.events.is_empty(), "shown once");
    assert!(!again.writes_status(Some(&before)), "and written once");
    job.set_phase(PodPhase::Running);
    for pod in &mut job.obs.pods {
        pod.waiting = None;
    }
    job.step_and_apply();
    let ready = find_condition(&job, "Ready");
    assert_eq!(ready.expect("Ready").reason, "Running");
}
