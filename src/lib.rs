//! datajob-operator: runs `DataJob`s on executor pods and cancels them on request.
//!
//! The crate is a library with a thin binary. [`api`] holds the custom resources,
//! [`executor`] the executor pod templates and the contract with the executor image,
//! [`reconcile`] the controller (observe -> decide -> apply -> status), [`telemetry`] logs and
//! metrics, [`http`] the metrics and health endpoints, [`caches`] the watches every replica
//! keeps (leader or standby), [`leader`] leader election and [`client`] the API clients (user
//! agent per instance; writes fenced by the leader Lease).

pub mod api;
pub mod caches;
pub mod client;
pub mod executor;
pub mod http;
pub mod leader;
pub mod reconcile;
pub mod telemetry;

/// Name of the operator: field manager of everything it writes, Event reporter, label value.
pub const OPERATOR_NAME: &str = "datajob-operator";
