//! Reading the driver's termination message: a result JSON on exit 0, a `{reason, message}`
//! JSON otherwise. 64-bit ids are parsed as exact integers, never through floating point.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{JobResult, JobType};

/// Most characters of a driver's message copied into a failure.
const MAX_MESSAGE: usize = 1024;

/// What a terminated driver reported.
#[derive(Clone, Debug, PartialEq)]
pub enum DriverOutcome {
    /// Exit 0 with a valid result.
    Succeeded(JobResult),
    /// Exit 0, but the termination message is not a valid result for the job type.
    InvalidResult(String),
    /// Non-zero exit; the message says why, in the driver's words when it gave them.
    Failed(String),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MaterializeViewResult {
    dataset_id: i64,
    snapshot_id: i64,
    recalculation_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForecastResult {
    forecast: Map<String, Value>,
}

#[derive(Deserialize)]
struct DriverFailure {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Interprets a terminated driver container: its exit code and termination message.
pub fn read_driver_outcome(job_type: JobType, exit_code: i32, message: &str) -> DriverOutcome {
    if exit_code != 0 {
        return DriverOutcome::Failed(failure_message(exit_code, message));
    }
    match parse_result(job_type, message) {
        Ok(result) => DriverOutcome::Succeeded(result),
        Err(why) => DriverOutcome::InvalidResult(format!(
            "the driver exited 0 but its termination message is not a valid {job_type} result ({why}): {}",
            truncate(message)
        )),
    }
}

fn parse_result(job_type: JobType, message: &str) -> Result<JobResult, String> {
    let trimmed = message.trim();
    if trimmed.is_empty() {
        return Err("the message is empty".to_string());
    }
    match job_type {
        JobType::MaterializeView => {
            let parsed: MaterializeViewResult =
                serde_json::from_str(trimmed).map_err(|e| e.to_string())?;
            Ok(JobResult {
                dataset_id: Some(parsed.dataset_id),
                snapshot_id: Some(parsed.snapshot_id),
                recalculation_id: Some(parsed.recalculation_id),
                forecast: None,
            })
        }
        JobType::NqlForecast => {
            let parsed: ForecastResult =
                serde_json::from_str(trimmed).map_err(|e| e.to_string())?;
            Ok(JobResult {
                forecast: Some(parsed.forecast),
                ..JobResult::default()
            })
        }
    }
}

fn failure_message(exit_code: i32, message: &str) -> String {
    match serde_json::from_str::<DriverFailure>(message.trim()) {
        Ok(DriverFailure {
            reason: Some(reason),
            message,
        }) => format!(
            "driver exited with code {exit_code} ({reason}): {}",
            truncate(message.as_deref().unwrap_or(""))
        ),
        Ok(DriverFailure {
            reason: None,
            message: Some(message),
        }) => format!(
            "driver exited with code {exit_code}: {}",
            truncate(&message)
        ),
        _ if message.trim().is_empty() => {
            format!("driver exited with code {exit_code} and left no termination message")
        }
        _ => format!("driver exited with code {exit_code}: {}", truncate(message)),
    }
}

fn truncate(message: &str) -> String {
    let mut out: String = message.chars().take(MAX_MESSAGE).collect();
    if message.chars().count() > MAX_MESSAGE {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn materialize_view_result_keeps_64_bit_ids_exact() {
        let message = r#"{"datasetId": 6404, "snapshotId": 739881302291276700, "recalculationId": "abf9a2ec-426b-4751-bd16-fcb435061925"}"#;
        let DriverOutcome::Succeeded(result) =
            read_driver_outcome(JobType::MaterializeView, 0, message)
        else {
            panic!("expected a result");
        };
        assert_eq!(result.snapshot_id, Some(739_881_302_291_276_700));
        assert_eq!(result.dataset_id, Some(6404));
        let json = serde_json::to_string(&result).expect("serializes");
        assert!(json.contains("739881302291276700"), "{json}");
    }

    #[test]
    fn forecast_result_is_kept_as_written() {
        let message = r#"{"forecast": {"horizon": 7, "values": [1.5, 2.25]}}"#;
        let DriverOutcome::Succeeded(result) =
            read_driver_outcome(JobType::NqlForecast, 0, message)
        else {
            panic!("expected a result");
        };
        let forecast = result.forecast.expect("forecast present");
        assert_eq!(forecast["horizon"], 7);
        assert_eq!(forecast["values"][1], 2.25);
    }

    #[test]
    fn malformed_or_out_of_range_results_are_invalid() {
        for message in [
            "",
            "not json",
            r#"{"datasetId": 1}"#,
            r#"{"datasetId": 1, "snapshotId": 18446744073709551615, "recalculationId": "x"}"#,
            r#"{"datasetId": 1, "snapshotId": 1.5, "recalculationId": "x"}"#,
        ] {
            assert!(
                matches!(
                    read_driver_outcome(JobType::MaterializeView, 0, message),
                    DriverOutcome::InvalidResult(_)
                ),
                "{message:?} should be invalid"
            );
        }
    }

    #[test]
    fn failures_carry_the_drivers_reason_and_message() {
        let outcome = read_driver_outcome(
            JobType::NqlForecast,
            3,
            r#"{"reason": "QueryError", "message": "table ds_1 not found"}"#,
        );
        assert_eq!(
            outcome,
            DriverOutcome::Failed(
                "driver exited with code 3 (QueryError): table ds_1 not found".to_string()
            )
        );
        let outcome = read_driver_outcome(JobType::NqlForecast, 137, "");
        assert_eq!(
            outcome,
            DriverOutcome::Failed(
                "driver exited with code 137 and left no termination message".to_string()
            )
        );
    }
}
