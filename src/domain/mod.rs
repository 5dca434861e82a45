//! The pure core: every decision the operator makes, as plain synchronous functions over plain
//! data (API types included, no client, no runtime, no locks, no clock).
//!
//! - [`model`]: what observe hands in ([`Observation`]) and what apply carries out ([`Plan`]),
//!   with typed [`Reason`]s and [`ConditionType`]s;
//! - [`admission`]: slots of a limited pool, the queue order and the one [`admission::admit`];
//! - [`machine`]: the DataJob state machine ([`decide`]), one file per state, and what a
//!   deletion waits for ([`on_deletion`]);
//! - [`start`]: whether a pending executor can still start (causes, start timeout);
//! - [`teardown`]: a teardown that is stuck, and when a pod is force-deleted;
//! - [`release`]: when a driver pod's result finalizer may go;
//! - [`conditions`]: the conditions derived from a decided status;
//! - [`pool`]: the ComputePool status.

pub mod admission;
pub mod clock;
pub mod conditions;
pub mod machine;
pub mod model;
pub mod policy;
pub mod pool;
pub mod release;
pub mod start;
pub mod teardown;

pub use machine::{
    COUNT_REFRESH, decide, executor_create_failed, on_deletion, resolve_cluster_type,
    stalled_deletion, teardown, workers,
};
pub use model::{
    Cause, ConditionType, Deletion, EventKind, JobEvent, NodeView, Observation, ObservedPod, Plan,
    PodPhase, PoolView, RESYNC, Reason, Termination,
};
