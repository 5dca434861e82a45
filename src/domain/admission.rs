//! Admission to a limited compute pool: which jobs hold a slot, which wait for one, the order
//! they wait in, and the one [`admit`] decision. The DataJob controller admits with it; the
//! ComputePool status counts the same [`PoolQueue`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use kube::ResourceExt;

use crate::api::{ComputePool, DataJob, JobState};

/// Whether a job holds a slot in its pool: it has an executor and has not finished.
pub fn holds_slot(job: &DataJob) -> bool {
    job.status
        .as_ref()
        .is_some_and(|s| s.executor.is_some() && !s.state.is_some_and(JobState::is_terminal))
}

/// Whether a job waits for a slot: pending with no executor yet and not cancelled.
pub fn awaits_slot(job: &DataJob) -> bool {
    !job.spec.cancel
        && job.metadata.deletion_timestamp.is_none()
        && job.status.as_ref().is_none_or(|s| {
            s.executor.is_none() && s.state.is_none_or(|st| st == JobState::Pending)
        })
}

/// Whether an admission the operator made is still in flight (the job was admitted but the
/// cache does not show it holding a slot yet); once not, the admission is forgotten.
pub fn still_in_flight(job: &DataJob) -> bool {
    !holds_slot(job) && awaits_slot(job)
}

/// Arrivals the operator's watch saw that the jobs' statuses may not show yet, by job uid.
pub type Arrivals = HashMap<String, jiff::Timestamp>;

/// A job's place in its pool's queue: first come, first served. Arrival is
/// `creationTimestamp` (whole seconds), then within a second the time the operator's watch
/// delivered the job (`status.arrivedAt`, which follows the API server's order of creation, or
/// while the cache does not show that record yet, the watch's own note in `arrivals`); a job
/// without one (the operator noted none) comes after those that have one, by namespace and
/// name.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct QueueKey<'a> {
    created: Option<jiff::Timestamp>,
    unknown_arrival: bool,
    arrival: Option<jiff::Timestamp>,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

impl<'a> QueueKey<'a> {
    fn of(job: &'a DataJob, arrivals: &Arrivals) -> Self {
        let arrival = job
            .status
            .as_ref()
            .and_then(|s| s.arrived_at.as_ref())
            .map(|t| t.0)
            .or_else(|| {
                let uid = job.metadata.uid.as_deref()?;
                arrivals.get(uid).copied()
            });
        QueueKey {
            created: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
            unknown_arrival: arrival.is_none(),
            arrival,
            namespace: job.metadata.namespace.as_deref(),
            name: job.metadata.name.as_deref(),
        }
    }
}

/// The jobs of one pool: how many hold a slot and who waits (unordered). Admissions in flight
/// count as holders, not as waiting.
pub struct PoolQueue {
    holders: usize,
    waiting: Vec<Arc<DataJob>>,
}

impl PoolQueue {
    /// The queue of pool `pool` among `jobs`.
    pub fn new(pool: &str, jobs: &[Arc<DataJob>], in_flight: &HashSet<String>) -> Self {
        let is_in_flight = |j: &DataJob| j.uid().is_some_and(|uid| in_flight.contains(&uid));
        let in_pool = jobs
            .iter()
            .filter(|j| j.spec.compute_pool.as_deref() == Some(pool));
        let holders = in_pool
            .clone()
            .filter(|j| holds_slot(j) || is_in_flight(j))
            .count();
        let waiting: Vec<Arc<DataJob>> = in_pool
            .filter(|j| awaits_slot(j) && !is_in_flight(j))
            .cloned()
            .collect();
        PoolQueue { holders, waiting }
    }

    /// Jobs holding a slot.
    pub fn holders(&self) -> usize {
        self.holders
    }

    /// Jobs waiting for a slot.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// The job's place in the queue (0 is next): how many waiting jobs came before it. One
    /// pass, no sort.
    fn rank(&self, job: &DataJob, arrivals: &Arrivals) -> usize {
        let key = QueueKey::of(job, arrivals);
        self.waiting
            .iter()
            .filter(|j| j.uid() != job.uid() && QueueKey::of(j, arrivals) < key)
            .count()
    }

    /// The slots a pool limited to `max` jobs has free.
    fn free(&self, max: i32) -> usize {
        usize::try_from(max)
            .unwrap_or(0)
            .saturating_sub(self.holders)
    }

    /// The waiting jobs that take the slots free now, first come first.
    fn next(mut self, max: i32, arrivals: &Arrivals) -> Vec<Arc<DataJob>> {
        let free = self.free(max);
        self.waiting
            .sort_by(|a, b| QueueKey::of(a, arrivals).cmp(&QueueKey::of(b, arrivals)));
        self.waiting.truncate(free);
        self.waiting
    }
}

/// The admission, when the queue does not matter: the pool is unlimited or the job already
/// holds a slot (admitted), or the job is not a recorded pending job waiting for a slot (not
/// admitted; a job still being initialized does not compete yet). None when the job competes.
pub fn settled(job: &DataJob, pool: &ComputePool) -> Option<bool> {
    if pool.spec.max_concurrent_jobs <= 0 || holds_slot(job) {
        return Some(true);
    }
    let pending = job.status.as_ref().and_then(|s| s.state) == Some(JobState::Pending);
    if !pending || !awaits_slot(job) {
        return Some(false);
    }
    None
}

/// Decides whether `job` may take a slot of `pool` now. `in_flight` holds uids the operator
/// admitted whose status the cache may not show yet; they count as holders and stay admitted.
/// `arrivals` are the watch's arrivals the statuses may not show yet ([`Arrivals`]).
pub fn admit(
    job: &DataJob,
    pool: &ComputePool,
    jobs: &[Arc<DataJob>],
    in_flight: &HashSet<String>,
    arrivals: &Arrivals,
) -> bool {
    if let Some(admitted) = settled(job, pool) {
        return admitted;
    }
    if job.uid().is_some_and(|uid| in_flight.contains(&uid)) {
        return true;
    }
    let queue = PoolQueue::new(&pool.name_any(), jobs, in_flight);
    queue.rank(job, arrivals) < queue.free(pool.spec.max_concurrent_jobs)
}

/// The jobs of a limited `pool` that a freed slot admits now: the first waiting jobs in queue
/// order, as many as the pool has free slots (none for an unlimited pool, whose jobs never
/// wait). Costs one pass over the pool's jobs and a sort of those waiting.
pub fn next_in_line(
    pool: &ComputePool,
    jobs: &[Arc<DataJob>],
    in_flight: &HashSet<String>,
    arrivals: &Arrivals,
) -> Vec<Arc<DataJob>> {
    if pool.spec.max_concurrent_jobs <= 0 {
        return Vec::new();
    }
    PoolQueue::new(&pool.name_any(), jobs, in_flight).next(pool.spec.max_concurrent_jobs, arrivals)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
    use serde_json::json;

    use super::*;
    use crate::api::{ComputePool, DataJob};

    fn no_arrivals() -> Arrivals {
        Arrivals::new()
    }

    fn pool(max: i32) -> ComputePool {
        serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "ComputePool",
            "metadata": { "name": "p" },
            "spec": { "maxConcurrentJobs": max },
        }))
        .expect("pool")
    }

    fn job(name: &str, created: i64, executor: bool) -> Arc<DataJob> {
        let mut job: DataJob = serde_json::from_value(json!({
            "apiVersion": "datajob.dev/v1alpha1", "kind": "DataJob",
            "metadata": { "name": name, "namespace": "ns", "uid": format!("uid-{name}") },
            "spec": { "type": "nql-forecast", "input": { "nql": "x" }, "dataPlane": "dp", "computePool": "p" },
            "status": { "state": if executor { "running" } else { "pending" } },
        }))
        .expect("job");
        job.metadata.creation_timestamp =
            Some(Time(jiff::Timestamp::from_second(created).expect("time")));
        if executor && let Some(status) = job.status.as_mut() {
            status.executor = Some(format!("dj-{name}"));
        }
        Arc::new(job)
    }

    #[test]
    fn the_oldest_waiting_jobs_take_the_free_slots() {
        let jobs = vec![job("a", 1, true), job("b", 3, false), job("c", 2, false)];
        let none = HashSet::new();
        assert!(
            admit(&jobs[2], &pool(2), &jobs, &none, &no_arrivals()),
            "c is older than b"
        );
        assert!(!admit(&jobs[1], &pool(2), &jobs, &none, &no_arrivals()));
        assert!(admit(&jobs[1], &pool(3), &jobs, &none, &no_arrivals()));
        assert!(
            admit(&jobs[1], &pool(0), &jobs, &none, &no_arrivals()),
            "0 means unlimited"
        );
    }

    /// A waiting job created at second `created` whose arrival the operator recorded at
    /// `micros` past that second (None: no arrival noted).
    fn arrived(name: &str, created: i64, micros: Option<i64>) -> Arc<DataJob> {
        let mut job = (*job(name, created, false)).clone();
        if let Some(status) = job.status.as_mut() {
            status.arrived_at = micros.map(|m| {
                MicroTime(jiff::Timestamp::from_microsecond(created * 1_000_000 + m).expect("time"))
            });
        }
        Arc::new(job)
    }

    #[test]
    fn within_one_second_the_queue_follows_arrival_not_names() {
        // Created in the same second in the order z, y, x; w has no arrival; v is a
        // second older.
        let jobs = vec![
            arrived("x", 5, Some(900)),
            arrived("w", 5, None),
            arrived("y", 5, Some(500)),
            arrived("z", 5, Some(100)),
            arrived("v", 4, None),
        ];
        let none = HashSet::new();
        let order: Vec<String> = next_in_line(&pool(9), &jobs, &none, &no_arrivals())
            .iter()
            .map(|j| j.name_any())
            .collect();
        assert_eq!(order, ["v", "z", "y", "x", "w"]);
        for (name, place) in [("v", 1), ("z", 2), ("y", 3), ("x", 4), ("w", 5)] {
            let job = jobs.iter().find(|j| j.name_any() == name).expect("job");
            assert!(
                admit(job, &pool(place), &jobs, &none, &no_arrivals()),
                "{name} is number {place}"
            );
            if place > 1 {
                assert!(
                    !admit(job, &pool(place - 1), &jobs, &none, &no_arrivals()),
                    "{name}"
                );
            }
        }
    }

    #[test]
    fn an_arrival_the_cache_does_not_show_yet_keeps_its_place() {
        // z arrived first, but the cache still shows it as created, without its pending
        // record; x's record (a later arrival) is cached already.
        let mut z = (*job("z", 5, false)).clone();
        z.status = None;
        let x = arrived("x", 5, Some(900));
        let jobs = vec![Arc::new(z), x.clone()];
        let none = HashSet::new();
        let early = jiff::Timestamp::from_microsecond(5_000_100).expect("time");
        let noted: Arrivals = [("uid-z".to_string(), early)].into();
        assert!(
            !admit(&x, &pool(1), &jobs, &none, &noted),
            "z keeps its place"
        );
        assert!(
            admit(&x, &pool(1), &jobs, &none, &no_arrivals()),
            "without the note, z sorts last"
        );
    }

    #[test]
    fn a_freed_slot_admits_as_many_waiting_jobs_as_slots_are_free() {
        let jobs = vec![
            job("a", 1, true),
            job("b", 2, false),
            job("c", 3, false),
            job("d", 4, false),
        ];
        let names = |max: i32, in_flight: &HashSet<String>| -> Vec<String> {
            next_in_line(&pool(max), &jobs, in_flight, &no_arrivals())
                .iter()
                .map(|j| j.name_any())
                .collect()
        };
        let none = HashSet::new();
        assert_eq!(names(1, &none), Vec::<String>::new(), "the pool is full");
        assert_eq!(names(3, &none), ["b", "c"]);
        let b_in_flight: HashSet<String> = ["uid-b".to_string()].into();
        assert_eq!(names(3, &b_in_flight), ["c"], "b already took a slot");
        assert!(names(0, &none).is_empty(), "an unlimited pool has no queue");
    }

    #[test]
    fn admissions_not_yet_in_the_cache_count_and_stay_admitted() {
        let jobs = vec![job("a", 1, false), job("b", 2, false), job("c", 3, false)];
        let in_flight: HashSet<String> = ["uid-a".to_string(), "uid-b".to_string()].into();
        assert!(admit(&jobs[0], &pool(2), &jobs, &in_flight, &no_arrivals()));
        assert!(admit(&jobs[1], &pool(2), &jobs, &in_flight, &no_arrivals()));
        assert!(
            !admit(&jobs[2], &pool(2), &jobs, &in_flight, &no_arrivals()),
            "both slots are taken"
        );
    }

    #[test]
    fn the_queue_counts_holders_and_waiting_jobs_of_its_pool_only() {
        let mut other = (*job("x", 1, false)).clone();
        other.spec.compute_pool = Some("elsewhere".to_string());
        let jobs = vec![job("a", 1, true), job("b", 2, false), Arc::new(other)];
        let queue = PoolQueue::new("p", &jobs, &HashSet::new());
        assert_eq!((queue.holders(), queue.waiting()), (1, 1));
    }
}
