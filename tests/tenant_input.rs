//! Nothing a tenant writes reaches a panic in `decide`: the crash of issue 7
//! (`activeDeadlineSeconds: 300000000000` on a running job) and property tests with extreme
//! deadlines, TTLs, clocks and worker counts. Pure: no cluster needed.

use datajob_operator::api::{
    ClusterType, DataJobSpec, DataJobStatus, ExecutorSpec, JobInput, JobState, JobType,
};
use datajob_operator::domain::{Observation, ObservedPod, PodPhase, PoolView, decide};
use datajob_operator::executor;
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use proptest::prelude::*;

const UID: &str = "0f1e2d3c-aaaa-bbbb-cccc-000000000001";

fn spec() -> DataJobSpec {
    DataJobSpec {
        job_type: JobType::MaterializeView,
        input: JobInput {
            nql: "SELECT 1".to_string(),
            compiled_sql: None,
            dataset_id: Some(6404),
            stats_enabled: false,
        },
        data_plane: "dp".to_string(),
        compute_pool: None,
        cluster_type: Some(ClusterType::Shared),
        executor: Some(ExecutorSpec::default()),
        cancel: false,
        cancel_reason: None,
        active_deadline_seconds: None,
        ttl_seconds_after_finished: None,
        start_timeout_seconds: None,
    }
}

fn time(second: i64) -> Timestamp {
    Timestamp::from_second(second.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second()))
        .expect("clamped into range")
}

/// A job in `state` whose driver started at `started` and (when finished) finished then too,
/// observed at `now`.
fn observed(state: JobState, started: Timestamp, now: Timestamp, spec: DataJobSpec) -> Observation {
    let executor = executor::executor_name("report", UID);
    let status = DataJobStatus {
        state: Some(state),
        job_id: Some(UID.to_string()),
        executor: Some(executor.clone()),
        cluster_type: Some(ClusterType::Shared),
        started_at: Some(Time(started)),
        completed_at: state.is_terminal().then_some(Time(started)),
        observed_generation: Some(1),
        ..DataJobStatus::default()
    };
    let driver = ObservedPod {
        role: Some(executor::Role::Driver),
        started_at: Some(started),
        ..ObservedPod::new(&format!("{executor}-driver"), PodPhase::Running)
    };
    Observation {
        now,
        name: "report".to_string(),
        uid: UID.to_string(),
        generation: 1,
        spec,
        status,
        pods: if state.is_terminal() {
            Vec::new()
        } else {
            vec![driver]
        },
        pool: PoolView::NotRequested,
        nodes: Default::default(),
        rejection: None,
        create_refusal: None,
        refusal: None,
        arrival: None,
    }
}

#[test]
fn a_deadline_of_300000000000_seconds_does_not_crash_a_running_job() {
    let spec = DataJobSpec {
        active_deadline_seconds: Some(300_000_000_000),
        ..spec()
    };
    let now = time(1_800_000_000);
    let plan = decide(&observed(JobState::Running, now, now, spec));
    assert_eq!(plan.status.state, Some(JobState::Running));
    assert!(plan.requeue.is_some(), "a running job is looked at again");
}

#[test]
fn a_ttl_of_i32_max_does_not_crash_a_finished_job() {
    let spec = DataJobSpec {
        ttl_seconds_after_finished: Some(i32::MAX),
        ..spec()
    };
    let late = time(Timestamp::MAX.as_second() - 10);
    let plan = decide(&observed(JobState::Completed, late, late, spec));
    assert!(!plan.delete_job);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decide_never_panics_on_extreme_numbers(
        deadline in prop_oneof![Just(None), any::<i64>().prop_map(Some), Just(Some(i64::MAX)), Just(Some(0)), Just(Some(-1))],
        ttl in prop_oneof![Just(None), any::<i32>().prop_map(Some), Just(Some(i32::MAX))],
        workers in prop_oneof![Just(None), any::<i32>().prop_map(Some)],
        grace in prop_oneof![Just(None), any::<i64>().prop_map(Some)],
        started in prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN), Just(0)],
        now in prop_oneof![any::<i64>(), Just(i64::MAX), Just(i64::MIN), Just(0)],
        generation in any::<i64>(),
        state in prop_oneof![
            Just(JobState::Pending), Just(JobState::Running), Just(JobState::PendingCancellation),
            Just(JobState::Completed), Just(JobState::Failed), Just(JobState::Cancelled),
        ],
        cluster_type in prop_oneof![Just(ClusterType::Shared), Just(ClusterType::Dedicated)],
    ) {
        let spec = DataJobSpec {
            active_deadline_seconds: deadline,
            ttl_seconds_after_finished: ttl,
            cluster_type: Some(cluster_type),
            executor: Some(ExecutorSpec {
                workers,
                termination_grace_period_seconds: grace,
                ..ExecutorSpec::default()
            }),
            ..spec()
        };
        let mut obs = observed(state, time(started), time(now), spec);
        obs.generation = generation;
        let plan = decide(&obs);
        if state.is_terminal() {
            prop_assert_eq!(plan.status.state, Some(state));
        }
        prop_assert!(plan.create.len() <= 65, "at most a driver and 64 workers");
    }
}
