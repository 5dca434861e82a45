//! Logs (text or JSON) and the operator's metrics (OpenMetrics text).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::api::JobState;

/// Content type of [`Metrics::encode`]'s output.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global log subscriber (on stdout); `RUST_LOG` overrides the default `info`
/// filter. Text logs are coloured only on a terminal and never when `NO_COLOR` is set.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = use_colour(std::io::stdout().is_terminal(), no_color);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// Whether text logs may carry colour codes: only on a terminal, and not when the user set
/// `NO_COLOR` (<https://no-color.org>).
pub fn use_colour(stdout_is_terminal: bool, no_color: bool) -> bool {
    stdout_is_terminal && !no_color
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    category: String,
}

/// Counts DataJobs by state at the moment of a scrape (typically read from the controller's
/// cache).
pub type JobCounter = Box<dyn Fn() -> HashMap<JobState, i64> + Send + Sync>;

/// A [`JobCounter`] over a reflector store of DataJobs (the controller's cache); jobs without a
/// state yet count as `pending`.
pub fn count_jobs_in(store: kube::runtime::reflector::Store<crate::api::DataJob>) -> JobCounter {
    Box::new(move || {
        let mut counts = HashMap::new();
        for job in store.state() {
            let state = job
                .status
                .as_ref()
                .and_then(|s| s.state)
                .unwrap_or(JobState::Pending);
            *counts.entry(state).or_insert(0) += 1;
        }
        counts
    })
}

/// The `jobs` gauge: computed on every scrape from the installed [`JobCounter`]; empty until
/// one is installed.
#[derive(Clone, Default)]
struct JobsByState {
    source: Arc<RwLock<Option<JobCounter>>>,
}

impl std::fmt::Debug for JobsByState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JobsByState")
    }
}

impl Collector for JobsByState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let source = self.source.read().unwrap_or_else(|e| e.into_inner());
        let Some(count) = source.as_ref() else {
            return Ok(());
        };
        let counts = count();
        let family = Family::<StateLabels, Gauge>::default();
        for state in JobState::ALL {
            family
                .get_or_create(&StateLabels {
                    state: state.as_str().to_string(),
                })
                .set(counts.get(&state).copied().unwrap_or(0));
        }
        let metric = encoder.encode_descriptor(
            "jobs",
            "DataJobs the operator sees, by state",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
}

/// The operator's metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter<u64, AtomicU64>,
    reconcile_duration: Histogram,
    errors: Family<ErrorLabels, Counter>,
    transitions: Family<StateLabels, Counter>,
    leader: Gauge,
    jobs: JobsByState,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("datajob_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let reconcile_duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile took",
            reconcile_duration.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error category",
            errors.clone(),
        );
        let transitions = Family::<StateLabels, Counter>::default();
        registry.register(
            "state_transitions",
            "DataJob state changes recorded, by new state",
            transitions.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this instance leads (or runs without leader election), else 0",
            leader.clone(),
        );
        let jobs = JobsByState::default();
        registry.register_collector(Box::new(jobs.clone()));
        registry.register(
            "build",
            "The operator's version",
            Info::new(BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_string(),
            }),
        );
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            errors,
            transitions,
            leader,
            jobs,
        }
    }
}

impl Metrics {
    /// Counts one reconcile and its duration.
    pub fn observe_reconcile(&self, elapsed: Duration) {
        self.reconciles.inc();
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn observe_error(&self, category: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                category: category.to_string(),
            })
            .inc();
    }

    /// Counts a recorded state change.
    pub fn observe_transition(&self, state: &str) {
        self.transitions
            .get_or_create(&StateLabels {
                state: state.to_string(),
            })
            .inc();
    }

    /// Records whether this instance leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Installs what the `jobs` gauge reads on each scrape.
    pub fn count_jobs_with(&self, counter: JobCounter) {
        *self.jobs.source.write().unwrap_or_else(|e| e.into_inner()) = Some(counter);
    }

    /// The metrics in the OpenMetrics text format ([`OPENMETRICS_CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
