//! The driver's result finalizer (`datajob.dev/result`, `domain::release`): a driver pod keeps it
//! until the job's status records the outcome or the job is torn down, so a result is read even
//! when the pod was deleted before the operator saw it finish. The fixture (`Job`) models the
//! finalizer: a created driver holds it, a deleted pod that holds it only starts terminating,
//! and apply removes it from `Plan::release_pods`.

use std::collections::BTreeMap;

use super::*;

fn driver_name(job: &Job) -> String {
    format!("{}-driver", job.executor())
}

fn failure_reason(job: &Job) -> String {
    job.obs
        .status
        .failures
        .first()
        .map(|f| f.reason.clone())
        .unwrap_or_default()
}

#[test]
fn a_driver_pod_holds_its_result_until_status_records_the_outcome() {
    let mut job = Job::new(ClusterType::Dedicated);
    let plan = job.step_and_apply();
    assert!(plan.release_pods.is_empty());
    let holders: Vec<&str> = job
        .obs
        .pods
        .iter()
        .filter(|p| p.holds_result)
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        holders,
        [driver_name(&job)],
        "only the driver holds a result"
    );
    job.set_phase(PodPhase::Running);
    assert!(
        job.step_and_apply().release_pods.is_empty(),
        "running keeps it"
    );
    job.terminate_driver(0, RESULT);
    let plan = job.step();
    assert_eq!(job.state(), Some(JobState::Completed));
    assert_eq!(plan.release_pods, [driver_name(&job)]);
    assert!(
        plan.guarded(Some(JobState::Running)),
        "released after a guarded write of the outcome"
    );
}

#[test]
fn a_finished_driver_deleted_before_the_operator_read_it_still_completes_the_job() {
    // Recorded running, and from pending (the operator never saw the driver run).
    for running_first in [true, false] {
        let mut job = if running_first {
            Job::running(ClusterType::Shared)
        } else {
            let mut job = Job::new(ClusterType::Shared);
            job.step_and_apply();
            job.set_phase(PodPhase::Running);
            job
        };
        job.terminate_driver(0, RESULT);
        job.obs.now += Duration::from_secs(5);
        let driver = driver_name(&job);
        job.delete_pod(&driver);
        job.terminations_finish();
        assert_eq!(job.obs.pods.len(), 1, "the finalizer holds the pod");
        for _ in 0..2 {
            job.step_and_apply();
        }
        assert_eq!(job.state(), Some(JobState::Completed), "{running_first}");
        assert!(job.obs.status.result.is_some());
        job.terminations_finish();
        assert!(job.obs.pods.is_empty(), "released, the pod is gone");
    }
}

#[test]
fn a_driver_stopped_by_its_deletion_is_lost_and_one_that_failed_before_keeps_its_reason() {
    let mut job = Job::running(ClusterType::Shared);
    let driver = driver_name(&job);
    job.delete_pod(&driver);
    job.obs.now += Duration::from_secs(31);
    job.terminate_driver(137, "");
    let plan = job.step_and_apply();
    assert_eq!(failure_reason(&job), "ExecutorLost");
    assert_eq!(plan.release_pods, std::slice::from_ref(&driver));

    let mut job = Job::running(ClusterType::Shared);
    job.terminate_driver(3, r#"{"reason": "QueryError", "message": "no table"}"#);
    job.obs.now += Duration::from_secs(1);
    job.delete_pod(&driver);
    job.step_and_apply();
    assert_eq!(failure_reason(&job), "DriverFailed");
}

#[test]
fn a_teardown_releases_every_pod_it_deletes_also_after_a_crash_before_the_patch() {
    let mut job = Job::running(ClusterType::Dedicated);
    job.request_cancel();
    let plan = job.step();
    assert_eq!(job.state(), Some(JobState::PendingCancellation));
    assert_eq!(plan.delete.len(), 3);
    assert_eq!(plan.release_pods, [driver_name(&job)]);
    // The operator is killed after the deletions, before the patch.
    for name in &plan.delete {
        job.delete_pod(name);
    }
    let plan = job.step_and_apply();
    assert!(plan.delete.is_empty(), "nothing is deleted twice");
    assert_eq!(plan.release_pods, [driver_name(&job)]);
    job.terminations_finish();
    job.step_and_apply();
    assert_eq!(job.state(), Some(JobState::Cancelled));
}

#[test]
fn a_finished_job_whose_driver_still_holds_the_finalizer_releases_it_without_a_write() {
    let mut job = Job::completed();
    job.step();
    job.driver_mut().holds_result = true; // the patch was lost to a restart
    let observed = job.obs.status.clone();
    let plan = job.step();
    assert_eq!(plan.release_pods, [driver_name(&job)]);
    assert!(
        !plan.writes_status(Some(&observed)),
        "the outcome is recorded"
    );
    assert!(plan.events.is_empty());
}

#[test]
fn a_deleted_datajob_releases_its_pods_with_their_deletion() {
    let job = Job::running(ClusterType::Dedicated);
    let deletion =
        datajob_operator::domain::on_deletion(&job.obs.pods, &BTreeMap::new(), job.obs.now);
    let datajob_operator::domain::Deletion::Wait {
        delete, release, ..
    } = deletion
    else {
        panic!("pods remain: {deletion:?}");
    };
    assert_eq!(delete.len(), 3);
    assert_eq!(release, [driver_name(&job)]);
}

/// What can happen after the driver exited 0 with its result.
#[derive(Clone, Debug)]
enum AfterExit {
    Reconcile,
    ReconcileThenCrash,
    /// A user, the garbage collector or an eviction deletes the driver pod.
    DeleteDriver,
    TerminationsFinish,
    Tick(u64),
}

fn after_exit() -> impl Strategy<Value = AfterExit> {
    prop_oneof![
        Just(AfterExit::Reconcile),
        Just(AfterExit::ReconcileThenCrash),
        Just(AfterExit::DeleteDriver),
        Just(AfterExit::TerminationsFinish),
        (1u64..60).prop_map(AfterExit::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Whatever happens to the pod and the operator after the driver reported its result, the
    /// job ends completed with it, and no pod is held for ever.
    #[test]
    fn a_reported_result_is_never_lost(
        dedicated in any::<bool>(),
        running_first in any::<bool>(),
        events in prop::collection::vec(after_exit(), 0..30),
    ) {
        let cluster_type = if dedicated { ClusterType::Dedicated } else { ClusterType::Shared };
        let mut job = if running_first {
            Job::running(cluster_type)
        } else {
            let mut job = Job::new(cluster_type);
            job.step_and_apply();
            job.set_phase(PodPhase::Running);
            job
        };
        job.terminate_driver(0, RESULT);
        let driver = driver_name(&job);
        for event in events {
            match event {
                AfterExit::Reconcile => {
                    job.step_and_apply();
                }
                AfterExit::ReconcileThenCrash => {
                    job.step();
                }
                AfterExit::DeleteDriver => job.delete_pod(&driver),
                AfterExit::TerminationsFinish => job.terminations_finish(),
                AfterExit::Tick(secs) => job.obs.now += Duration::from_secs(secs),
            }
        }
        for _ in 0..3 {
            job.step_and_apply();
            job.terminations_finish();
        }
        prop_assert_eq!(job.state(), Some(JobState::Completed));
        prop_assert!(job.obs.status.result.is_some());
        prop_assert!(job.obs.pods.iter().all(|p| !p.holds_result && !p.terminating), "{:?}", job.obs.pods);
    }
}
