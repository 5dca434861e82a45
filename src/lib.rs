//! datajob-operator: runs `DataJob`s on executor pods and cancels them on request.
//!
//! The crate is a library with a thin binary. [`api`] holds the custom resources,
//! [`executor`] the executor pod templates and the contract with the executor image,
//! [`reconcile`] the controller (observe -> decide -> apply -> status), [`telemetry`] logs and
//! metrics, [`http`] the metrics and health endpoints, [`leader`] leader election, and
//! [`reference_executor`] the reference executor image's program (`datajob-executor`).

pub mod api;
pub mod executor;
pub mod http;
pub mod leader;
pub mod reconcile;
pub mod reference_executor;
pub mod telemetry;

/// Name of the operator: field manager of everything it writes, Event reporter, label value.
pub const OPERATOR_NAME: &str = "datajob-operator";
