//! The reference executor (`datajob-executor`): a small program that honours the executor
//! contract (docs/executor.md) the way a real executor must, without doing real work.
//!
//! It reads the job from the `DATAJOB_*` environment (the query from `DATAJOB_NQL_FILE` /
//! `DATAJOB_COMPILED_SQL_FILE` when those are set), logs what it does to stdout, "works" for a
//! while, and then, as the driver, writes its result or failure JSON to the termination-message
//! path and exits. Workers serve until they are stopped. On SIGTERM (or SIGINT) it stops, says
//! so, and exits within its grace period.
//!
//! Tests and demos steer it with the `EXECUTOR_*` knobs of [`Knobs`] (set through
//! `spec.executor.env`; `DATAJOB_*` names belong to the operator).
//!
//! The pure part ([`Job::from_env`], [`Knobs::from_env`], [`report`]) decides everything; [`run`]
//! only adds time, signals and files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::json;

/// Where the termination message goes unless `EXECUTOR_TERMINATION_MESSAGE_PATH` says otherwise.
pub const DEFAULT_TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
/// Exit code after a SIGTERM or SIGINT (128 + 15, as a shell reports a TERM'd process).
pub const EXIT_STOPPED: u8 = 143;
/// Exit code when the environment is not a valid job.
pub const EXIT_INVALID_ENVIRONMENT: u8 = 2;
/// Kubernetes reads at most 4096 bytes of a termination message.
const MAX_TERMINATION_MESSAGE: usize = 4096;

/// The job, as the operator passes it in the environment (DESIGN section 4).
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// `DATAJOB_ID`: the job's unique id.
    pub id: String,
    /// `DATAJOB_TYPE`.
    pub job_type: JobKind,
    /// The NQL statement, from `DATAJOB_NQL_FILE` when set, else `DATAJOB_NQL`.
    pub nql: Query,
    /// The compiled SQL, from `DATAJOB_COMPILED_SQL_FILE` when set, else
    /// `DATAJOB_COMPILED_SQL`; `None` when empty.
    pub compiled_sql: Option<Query>,
    /// `DATAJOB_DATASET_ID`, when set.
    pub dataset_id: Option<i64>,
    /// `DATAJOB_STATS_ENABLED`.
    pub stats_enabled: bool,
    /// `DATAJOB_DATA_PLANE`.
    pub data_plane: String,
    /// `DATAJOB_COMPUTE_POOL` (empty when the job names none).
    pub compute_pool: String,
    /// `DATAJOB_CLUSTER_TYPE`: `dedicated` or `shared`.
    pub cluster_type: String,
    /// `DATAJOB_ROLE`.
    pub role: Role,
}

/// `DATAJOB_TYPE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobKind {
    /// `materialize-view`: the result is `{datasetId, snapshotId, recalculationId}`.
    MaterializeView,
    /// `nql-forecast`: the result is `{forecast: {...}}`.
    NqlForecast,
}

/// `DATAJOB_ROLE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Runs the job and reports its result.
    Driver,
    /// Serves the driver until it is stopped.
    Worker,
}

/// A query and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Query {
    /// The text.
    pub text: String,
    /// `env DATAJOB_NQL` or `file /path`.
    pub source: String,
}

impl Query {
    /// Bytes, FNV-1a 64-bit digest and source, for logs and results: enough to show that a
    /// query arrived intact without printing it.
    pub fn fingerprint(&self) -> String {
        format!(
            "{} bytes, fnv1a64 {}, from {}",
            self.text.len(),
            fnv1a64_hex(self.text.as_bytes()),
            self.source
        )
    }
}

/// FNV-1a 64-bit hash of `bytes`, as 16 lower-case hex digits.
pub fn fnv1a64_hex(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Why the environment is not a valid job.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidEnvironment(pub String);

impl fmt::Display for InvalidEnvironment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads a variable: `Some` only when set and non-empty.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

fn var(env: Env<'_>, name: &str) -> Option<String> {
    env(name).filter(|v| !v.is_empty())
}

fn required(env: Env<'_>, name: &str) -> Result<String, InvalidEnvironment> {
    var(env, name).ok_or_else(|| InvalidEnvironment(format!("{name} is not set")))
}

/// A query from `FILE_VAR` (a path, read as UTF-8) when set, else from `VAR`.
fn query(env: Env<'_>, name: &str, file_name: &str) -> Result<Option<Query>, InvalidEnvironment> {
    if let Some(path) = var(env, file_name) {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| InvalidEnvironment(format!("cannot read {file_name}={path}: {e}")))?;
        return Ok(Some(Query {
            text,
            source: format!("file {path}"),
        }));
    }
    Ok(var(env, name).map(|text| Query {
        text,
        source: format!("env {name}"),
    }))
}

impl Job {
    /// The job described by the environment `env`.
    pub fn from_env(env: Env<'_>) -> Result<Job, InvalidEnvironment> {
        let job_type = match required(env, "DATAJOB_TYPE")?.as_str() {
            "materialize-view" => JobKind::MaterializeView,
            "nql-forecast" => JobKind::NqlForecast,
            other => {
                return Err(InvalidEnvironment(format!(
                    "DATAJOB_TYPE={other} is neither materialize-view nor nql-forecast"
                )));
            }
        };
        let role = match required(env, "DATAJOB_ROLE")?.as_str() {
            "driver" => Role::Driver,
            "worker" => Role::Worker,
            other => {
                return Err(InvalidEnvironment(format!(
                    "DATAJOB_ROLE={other} is neither driver nor worker"
                )));
            }
        };
        let nql = query(env, "DATAJOB_NQL", "DATAJOB_NQL_FILE")?.ok_or_else(|| {
            InvalidEnvironment("neither DATAJOB_NQL_FILE nor DATAJOB_NQL is set".to_string())
        })?;
        let dataset_id = var(env, "DATAJOB_DATASET_ID")
            .map(|v| {
                v.parse::<i64>().map_err(|e| {
                    InvalidEnvironment(format!("DATAJOB_DATASET_ID={v} is not a 64-bit id: {e}"))
                })
            })
            .transpose()?;
        if job_type == JobKind::MaterializeView && dataset_id.is_none() {
            return Err(InvalidEnvironment(
                "DATAJOB_DATASET_ID is required for materialize-view".to_string(),
            ));
        }
        Ok(Job {
            id: required(env, "DATAJOB_ID")?,
            job_type,
            nql,
            compiled_sql: query(env, "DATAJOB_COMPILED_SQL", "DATAJOB_COMPILED_SQL_FILE")?,
            dataset_id,
            stats_enabled: var(env, "DATAJOB_STATS_ENABLED").as_deref() == Some("true"),
            data_plane: var(env, "DATAJOB_DATA_PLANE").unwrap_or_default(),
            compute_pool: var(env, "DATAJOB_COMPUTE_POOL").unwrap_or_default(),
            cluster_type: var(env, "DATAJOB_CLUSTER_TYPE").unwrap_or_default(),
            role,
        })
    }
}

/// How the reference executor behaves; each field is an `EXECUTOR_*` variable, documented in
/// docs/executor.md.
#[derive(Clone, Debug, PartialEq)]
pub struct Knobs {
    /// `EXECUTOR_WORK_SECONDS` (default 5): how long the driver works before it reports.
    pub work: Duration,
    /// `EXECUTOR_OUTCOME`: `succeed` (default) or `fail`.
    pub succeed: bool,
    /// `EXECUTOR_RESULT`: result JSON written verbatim instead of the computed one.
    pub result: Option<String>,
    /// `EXECUTOR_SNAPSHOT_ID`: the materialize-view result's snapshot id (default: derived from
    /// the job id).
    pub snapshot_id: Option<i64>,
    /// `EXECUTOR_FAILURE_REASON` (default `ExecutorFailed`).
    pub failure_reason: String,
    /// `EXECUTOR_FAILURE_MESSAGE` (default: a sentence naming the knob).
    pub failure_message: String,
    /// `EXECUTOR_EXIT_CODE` (default 1): exit code of a failing driver.
    pub exit_code: u8,
    /// `EXECUTOR_SHUTDOWN_SECONDS` (default 0): how long stopping takes after SIGTERM.
    pub shutdown: Duration,
    /// `EXECUTOR_TERMINATION_MESSAGE_PATH` (default `/dev/termination-log`).
    pub termination_message_path: PathBuf,
}

fn seconds(env: Env<'_>, name: &str, default: f64) -> Result<Duration, InvalidEnvironment> {
    let Some(value) = var(env, name) else {
        return Ok(Duration::from_secs_f64(default));
    };
    value
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| InvalidEnvironment(format!("{name}={value} is not a number of seconds")))
}

impl Knobs {
    /// The knobs set in `env`, with their defaults.
    pub fn from_env(env: Env<'_>) -> Result<Knobs, InvalidEnvironment> {
        let succeed = match var(env, "EXECUTOR_OUTCOME").as_deref() {
            None | Some("succeed") => true,
            Some("fail") => false,
            Some(other) => {
                return Err(InvalidEnvironment(format!(
                    "EXECUTOR_OUTCOME={other} is neither succeed nor fail"
                )));
            }
        };
        let snapshot_id = var(env, "EXECUTOR_SNAPSHOT_ID")
            .map(|v| {
                v.parse::<i64>().map_err(|e| {
                    InvalidEnvironment(format!("EXECUTOR_SNAPSHOT_ID={v} is not a 64-bit id: {e}"))
                })
            })
            .transpose()?;
        let exit_code = match var(env, "EXECUTOR_EXIT_CODE") {
            None => 1,
            Some(v) => match v.parse::<u8>() {
                Ok(code) if code != 0 => code,
                _ => {
                    return Err(InvalidEnvironment(format!(
                        "EXECUTOR_EXIT_CODE={v} is not an exit code from 1 to 255"
                    )));
                }
            },
        };
        Ok(Knobs {
            work: seconds(env, "EXECUTOR_WORK_SECONDS", 5.0)?,
            succeed,
            result: var(env, "EXECUTOR_RESULT"),
            snapshot_id,
            failure_reason: var(env, "EXECUTOR_FAILURE_REASON")
                .unwrap_or_else(|| "ExecutorFailed".to_string()),
            failure_message: var(env, "EXECUTOR_FAILURE_MESSAGE").unwrap_or_else(|| {
                "the reference executor was told to fail (EXECUTOR_OUTCOME=fail)".to_string()
            }),
            exit_code,
            shutdown: seconds(env, "EXECUTOR_SHUTDOWN_SECONDS", 0.0)?,
            termination_message_path: var(env, "EXECUTOR_TERMINATION_MESSAGE_PATH")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_TERMINATION_MESSAGE_PATH)),
        })
    }
}

/// What the driver reports when its work is done: the termination message and exit code.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// JSON for the termination-message path.
    pub message: String,
    /// Process exit code: 0 with a result, non-zero with a failure.
    pub exit_code: u8,
}

/// A failure report `{"reason", "message"}` with `exit_code`.
pub fn failure(reason: &str, message: &str, exit_code: u8) -> Report {
    Report {
        message: json!({ "reason": reason, "message": message }).to_string(),
        exit_code,
    }
}

/// The driver's report for `job` under `knobs`. A materialize-view result carries the job's
/// dataset id, the snapshot id (exact 64-bit) and the job id as recalculation id; a forecast
/// carries a small series and the fingerprint of the query it received.
pub fn report(job: &Job, knobs: &Knobs) -> Report {
    if !knobs.succeed {
        return failure(
            &knobs.failure_reason,
            &knobs.failure_message,
            knobs.exit_code,
        );
    }
    let message = match (&knobs.result, job.job_type) {
        (Some(verbatim), _) => verbatim.clone(),
        (None, JobKind::MaterializeView) => json!({
            "datasetId": job.dataset_id,
            "snapshotId": knobs.snapshot_id.unwrap_or_else(|| derived_snapshot_id(&job.id)),
            "recalculationId": job.id,
        })
        .to_string(),
        (None, JobKind::NqlForecast) => json!({
            "forecast": {
                "horizon": 3,
                "values": [1.5, 2.25, 3.0],
                "nqlBytes": job.nql.text.len(),
                "nqlFnv1a64": fnv1a64_hex(job.nql.text.as_bytes()),
            }
        })
        .to_string(),
    };
    if message.len() > MAX_TERMINATION_MESSAGE {
        return failure(
            "ResultTooLarge",
            &format!(
                "the result is {} bytes; a termination message holds at most {MAX_TERMINATION_MESSAGE}",
                message.len()
            ),
            1,
        );
    }
    Report {
        message,
        exit_code: 0,
    }
}

/// A stable positive 64-bit snapshot id for a job id (above 2^53, so a float would lose it).
fn derived_snapshot_id(job_id: &str) -> i64 {
    let hash = u64::from_str_radix(&fnv1a64_hex(job_id.as_bytes()), 16).unwrap_or(0);
    ((hash >> 1) | (1 << 60)) as i64
}

/// Writes one log line to stdout: RFC 3339 time, role, message.
pub fn log(role: &str, message: &str) {
    println!(
        "{} datajob-executor[{role}] {message}",
        jiff::Timestamp::now()
    );
}

fn role_name(job: Option<&Job>) -> &'static str {
    match job.map(|j| j.role) {
        Some(Role::Driver) => "driver",
        Some(Role::Worker) => "worker",
        None => "-",
    }
}

fn write_termination_message(path: &Path, role: &str, message: &str) {
    match std::fs::write(path, message) {
        Ok(()) => log(
            role,
            &format!("wrote termination message to {}: {message}", path.display()),
        ),
        Err(e) => log(
            role,
            &format!(
                "cannot write the termination message to {}: {e}; it was: {message}",
                path.display()
            ),
        ),
    }
}

/// How the work ended.
enum Ending {
    Finished,
    Stopped(&'static str),
}

/// Runs the executor with the environment `env` until its work is done or a signal stops it;
/// returns the process exit code.
pub async fn run(env: Env<'_>) -> u8 {
    use tokio::signal::unix::{SignalKind, signal};

    let started = Instant::now();
    let (job, knobs) = match Job::from_env(env).and_then(|job| Ok((job, Knobs::from_env(env)?))) {
        Ok(parsed) => parsed,
        Err(invalid) => {
            let path = var(env, "EXECUTOR_TERMINATION_MESSAGE_PATH")
                .unwrap_or_else(|| DEFAULT_TERMINATION_MESSAGE_PATH.to_string());
            log("-", &format!("invalid environment: {invalid}"));
            let report = failure("InvalidEnvironment", &invalid.0, EXIT_INVALID_ENVIRONMENT);
            write_termination_message(Path::new(&path), "-", &report.message);
            return report.exit_code;
        }
    };
    let role = role_name(Some(&job));
    log(
        role,
        &format!(
            "starting {} job {} (data plane {}, pool {}, {} cluster, stats {}); pid {}",
            match job.job_type {
                JobKind::MaterializeView => "materialize-view",
                JobKind::NqlForecast => "nql-forecast",
            },
            job.id,
            job.data_plane,
            if job.compute_pool.is_empty() {
                "-"
            } else {
                &job.compute_pool
            },
            job.cluster_type,
            job.stats_enabled,
            std::process::id(),
        ),
    );
    log(role, &format!("nql: {}", job.nql.fingerprint()));
    if let Some(sql) = &job.compiled_sql {
        log(role, &format!("compiled sql: {}", sql.fingerprint()));
    }

    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(e), _) | (_, Err(e)) => {
            log(role, &format!("cannot install signal handlers: {e}"));
            return 1;
        }
    };
    let work = async {
        match job.role {
            Role::Driver => {
                log(
                    role,
                    &format!("working for {:.1} s", knobs.work.as_secs_f64()),
                );
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                tick.tick().await;
                let deadline = tokio::time::sleep(knobs.work);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        () = &mut deadline => break,
                        _ = tick.tick() => log(role, &format!(
                            "working: {:.0} of {:.1} s",
                            started.elapsed().as_secs_f64(),
                            knobs.work.as_secs_f64()
                        )),
                    }
                }
            }
            Role::Worker => {
                log(role, "serving the driver until stopped (SIGTERM)");
                std::future::pending::<()>().await;
            }
        }
    };
    let ending = tokio::select! {
        () = work => Ending::Finished,
        _ = term.recv() => Ending::Stopped("SIGTERM"),
        _ = int.recv() => Ending::Stopped("SIGINT"),
    };
    match ending {
        Ending::Finished => {
            let report = report(&job, &knobs);
            log(
                role,
                &format!(
                    "work done after {:.1} s; {}",
                    started.elapsed().as_secs_f64(),
                    if report.exit_code == 0 {
                        "succeeded"
                    } else {
                        "failed"
                    }
                ),
            );
            write_termination_message(&knobs.termination_message_path, role, &report.message);
            log(role, &format!("exiting with code {}", report.exit_code));
            report.exit_code
        }
        Ending::Stopped(signal) => {
            let at = started.elapsed().as_secs_f64();
            log(
                role,
                &format!(
                    "received {signal} after {at:.1} s: stopping (shutdown takes {:.1} s)",
                    knobs.shutdown.as_secs_f64()
                ),
            );
            tokio::time::sleep(knobs.shutdown).await;
            if job.role == Role::Driver {
                let report = failure(
                    "Stopped",
                    &format!("stopped by {signal} after {at:.1} s of work"),
                    EXIT_STOPPED,
                );
                write_termination_message(&knobs.termination_message_path, role, &report.message);
            }
            log(
                role,
                &format!(
                    "stopped {:.1} s after {signal}; exiting with code {EXIT_STOPPED}",
                    started.elapsed().as_secs_f64() - at
                ),
            );
            EXIT_STOPPED
        }
    }
}

/// [`run`] with the process environment.
pub async fn run_with_process_env() -> u8 {
    let env = |name: &str| std::env::var(name).ok();
    run(&env).await
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::Value;

    use super::*;

    /// The parsed termination message of a report: `Value::Null` when not JSON.
    /// What the operator reads from a driver of a `job_type` job of dataset 6404 that exited
    /// with `exit_code` and wrote `message`.
    fn operator_reads(
        job_type: crate::api::JobType,
        exit_code: i32,
        message: &str,
    ) -> crate::executor::DriverOutcome {
        let spec: crate::api::DataJobSpec = serde_json::from_value(serde_json::json!({
            "type": job_type.as_str(),
            "input": { "nql": "SELECT 1", "datasetId": 6404 },
            "dataPlane": "dp",
        }))
        .expect("spec");
        crate::executor::read_driver_outcome(&spec, exit_code, message)
    }

    fn parsed(report: &Report) -> Value {
        serde_json::from_str(&report.message).unwrap_or(Value::Null)
    }

    fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn job_env() -> HashMap<String, String> {
        env_of(&[
            ("DATAJOB_ID", "3f0c9a1e-1111-2222-3333-444455556666"),
            ("DATAJOB_TYPE", "materialize-view"),
            ("DATAJOB_NQL", "SELECT 1"),
            ("DATAJOB_COMPILED_SQL", ""),
            ("DATAJOB_DATASET_ID", "6404"),
            ("DATAJOB_STATS_ENABLED", "false"),
            ("DATAJOB_DATA_PLANE", "eu-1"),
            ("DATAJOB_COMPUTE_POOL", "real"),
            ("DATAJOB_CLUSTER_TYPE", "shared"),
            ("DATAJOB_ROLE", "driver"),
        ])
    }

    fn parse(vars: &HashMap<String, String>) -> Result<(Job, Knobs), InvalidEnvironment> {
        let env = |name: &str| vars.get(name).cloned();
        Ok((Job::from_env(&env)?, Knobs::from_env(&env)?))
    }

    #[test]
    fn materialize_view_result_carries_the_exact_snapshot_id() {
        let mut vars = job_env();
        vars.insert("EXECUTOR_SNAPSHOT_ID".into(), "739881302291276700".into());
        let (job, knobs) = parse(&vars).unwrap();
        let report = report(&job, &knobs);
        assert_eq!(report.exit_code, 0);
        assert!(
            report.message.contains("\"snapshotId\":739881302291276700"),
            "{}",
            report.message
        );
        assert_eq!(parsed(&report)["datasetId"], 6404);
        assert_eq!(
            parsed(&report)["recalculationId"],
            "3f0c9a1e-1111-2222-3333-444455556666"
        );
        // The operator's parser reads it back as the same result.
        let outcome = operator_reads(crate::api::JobType::MaterializeView, 0, &report.message);
        let crate::executor::DriverOutcome::Succeeded(result) = outcome else {
            panic!("the operator rejects the reference result: {outcome:?}");
        };
        assert_eq!(result.snapshot_id, Some(739_881_302_291_276_700));
    }

    #[test]
    fn derived_snapshot_ids_are_stable_and_beyond_float_precision() {
        let (job, knobs) = parse(&job_env()).unwrap();
        let first = parsed(&report(&job, &knobs))["snapshotId"]
            .as_i64()
            .unwrap();
        assert_eq!(first, derived_snapshot_id(&job.id));
        assert!(first > 1 << 53);
    }

    #[test]
    fn forecast_result_fingerprints_the_query() {
        let mut vars = job_env();
        vars.insert("DATAJOB_TYPE".into(), "nql-forecast".into());
        vars.remove("DATAJOB_DATASET_ID");
        let (job, knobs) = parse(&vars).unwrap();
        let result = parsed(&report(&job, &knobs));
        assert_eq!(result["forecast"]["nqlBytes"], 8);
        assert_eq!(
            result["forecast"]["nqlFnv1a64"],
            fnv1a64_hex(b"SELECT 1").as_str()
        );
        let outcome = operator_reads(
            crate::api::JobType::NqlForecast,
            0,
            &report(&job, &knobs).message,
        );
        assert!(matches!(
            outcome,
            crate::executor::DriverOutcome::Succeeded(_)
        ));
    }

    #[test]
    fn fail_knobs_give_reason_message_and_exit_code() {
        let mut vars = job_env();
        vars.extend(env_of(&[
            ("EXECUTOR_OUTCOME", "fail"),
            ("EXECUTOR_FAILURE_REASON", "QueryError"),
            ("EXECUTOR_FAILURE_MESSAGE", "table ds_1 not found"),
            ("EXECUTOR_EXIT_CODE", "3"),
        ]));
        let (job, knobs) = parse(&vars).unwrap();
        let report = report(&job, &knobs);
        assert_eq!(report.exit_code, 3);
        assert_eq!(
            operator_reads(crate::api::JobType::MaterializeView, 3, &report.message),
            crate::executor::DriverOutcome::Failed(
                "driver exited with code 3 (QueryError): table ds_1 not found".to_string()
            )
        );
    }

    #[test]
    fn verbatim_result_is_written_as_given() {
        let mut vars = job_env();
        vars.insert("EXECUTOR_RESULT".into(), r#"{"forecast": {"x": 1}}"#.into());
        let (job, knobs) = parse(&vars).unwrap();
        assert_eq!(report(&job, &knobs).message, r#"{"forecast": {"x": 1}}"#);
    }

    #[test]
    fn query_files_win_over_the_variables() {
        let dir = std::env::temp_dir().join(format!("refexec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let nql = "x".repeat(200 * 1024);
        std::fs::write(dir.join("nql"), &nql).unwrap();
        std::fs::write(dir.join("sql"), "SELECT 2").unwrap();
        let mut vars = job_env();
        vars.insert(
            "DATAJOB_NQL_FILE".into(),
            dir.join("nql").display().to_string(),
        );
        vars.insert(
            "DATAJOB_COMPILED_SQL_FILE".into(),
            dir.join("sql").display().to_string(),
        );
        let (job, _) = parse(&vars).unwrap();
        assert_eq!(job.nql.text, nql);
        assert!(job.nql.source.starts_with("file "));
        assert_eq!(job.compiled_sql.unwrap().text, "SELECT 2");
        vars.insert("DATAJOB_NQL_FILE".into(), "/nonexistent/nql".into());
        let err = parse(&vars).unwrap_err();
        assert!(err.0.contains("DATAJOB_NQL_FILE=/nonexistent/nql"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn invalid_environments_name_the_variable() {
        for (name, value, expect) in [
            ("DATAJOB_TYPE", "", "DATAJOB_TYPE is not set"),
            ("DATAJOB_TYPE", "x", "DATAJOB_TYPE=x"),
            ("DATAJOB_ROLE", "boss", "DATAJOB_ROLE=boss"),
            ("DATAJOB_DATASET_ID", "", "DATAJOB_DATASET_ID is required"),
            ("DATAJOB_DATASET_ID", "1e3", "DATAJOB_DATASET_ID=1e3"),
            ("EXECUTOR_WORK_SECONDS", "-1", "EXECUTOR_WORK_SECONDS=-1"),
            ("EXECUTOR_OUTCOME", "maybe", "EXECUTOR_OUTCOME=maybe"),
            ("EXECUTOR_EXIT_CODE", "0", "EXECUTOR_EXIT_CODE=0"),
            (
                "EXECUTOR_SNAPSHOT_ID",
                "18446744073709551615",
                "EXECUTOR_SNAPSHOT_ID",
            ),
        ] {
            let mut vars = job_env();
            vars.insert(name.into(), value.into());
            let err = parse(&vars).unwrap_err();
            assert!(err.0.contains(expect), "{name}={value}: {err}");
        }
    }

    #[test]
    fn oversized_results_become_a_failure() {
        let mut vars = job_env();
        vars.insert(
            "EXECUTOR_RESULT".into(),
            format!(r#"{{"forecast": {{"x": "{}"}}}}"#, "y".repeat(5000)),
        );
        let (job, knobs) = parse(&vars).unwrap();
        let report = report(&job, &knobs);
        assert_eq!(report.exit_code, 1);
        assert_eq!(parsed(&report)["reason"], "ResultTooLarge");
    }
}
