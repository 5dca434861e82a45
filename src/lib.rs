//! datajob-operator: runs `DataJob`s on executor pods and cancels them on request.
//!
//! The crate is a library with a thin binary. [`api`] holds the custom resources,
//! [`domain`] the pure core (every decision: the state machine, admission, conditions, pool
//! status), [`controller`] the kube glue around it (caches every replica keeps, watches,
//! observe -> decide -> apply -> status), [`executor`] the executor pods and the contract with
//! the executor image, [`telemetry`] logs and metrics, [`http`] the metrics and health
//! endpoints, [`leader`] leader election, [`client`] the API clients (user agent per instance;
//! writes fenced by the leader Lease), [`plugin`] the kubectl plugin, [`jobs_api`] the seed's
//! Jobs REST API served over DataJobs (`datajob-operator api`), and [`reference_executor`] the
//! reference executor image's program (`datajob-executor`).

pub mod api;
pub mod client;
pub mod controller;
pub mod domain;
pub mod executor;
pub mod http;
pub mod jobs_api;
pub mod leader;
pub mod plugin;
pub mod probe;
pub mod reference;
pub mod reference_executor;
pub mod startup;
pub mod telemetry;

/// Name of the operator: field manager of everything it writes, Event reporter, label value.
pub const OPERATOR_NAME: &str = "datajob-operator";
