//! Reading the driver's termination message: a result JSON on exit 0, a `{reason, message}`
//! JSON otherwise. 64-bit ids are parsed as exact integers, never through floating point.
//!
//! The message is written by code the operator does not trust: whatever it holds (garbage,
//! wrong JSON types, ids beyond 64 bits, lone surrogates, deep nesting, more than the kubelet's
//! 4 KiB), reading it never panics, and every text copied from it into status and events is
//! cut to a fixed length and stripped of control characters.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::api::{DataJobSpec, JobResult, JobType};

/// Most characters of a driver's message copied into a failure (the only free text from the
/// driver that reaches status and events).
pub const MAX_MESSAGE: usize = 1024;
/// Most characters of a driver's failure reason copied into a failure.
pub const MAX_REASON: usize = 128;
/// Most characters of the raw termination message quoted in an `InvalidResult` failure.
pub const MAX_QUOTED: usize = 256;
/// The kubelet keeps at most this many bytes of a termination message; a longer one was cut
/// (or did not come from a kubelet), so it is not a complete result.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;
/// Longest accepted `recalculationId`, in characters.
pub const MAX_RECALCULATION_ID: usize = 256;

/// What a terminated driver reported.
#[derive(Clone, Debug, PartialEq)]
pub enum DriverOutcome {
    /// Exit 0 with a valid result.
    Succeeded(JobResult),
    /// Exit 0, but the termination message is not a valid result for the job.
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
    reason: Option<Value>,
    #[serde(default)]
    message: Option<Value>,
}

/// Interprets a terminated driver container of the job `spec`: its exit code and termination
/// message. Never panics, whatever the message holds; every text it returns is bounded.
pub fn read_driver_outcome(spec: &DataJobSpec, exit_code: i32, message: &str) -> DriverOutcome {
    if exit_code != 0 {
        return DriverOutcome::Failed(failure_message(exit_code, message));
    }
    match parse_result(spec, message) {
        Ok(result) => DriverOutcome::Succeeded(result),
        Err(why) => DriverOutcome::InvalidResult(format!(
            "the driver exited 0 but its termination message is not a valid {} result ({why}): {}",
            spec.job_type,
            clean(message, MAX_QUOTED)
        )),
    }
}

fn parse_result(spec: &DataJobSpec, message: &str) -> Result<JobResult, String> {
    if message.len() > MAX_TERMINATION_MESSAGE {
        return Err(format!(
            "it is {} bytes long, over the kubelet's {MAX_TERMINATION_MESSAGE}-byte termination-message limit",
            message.len()
        ));
    }
    let trimmed = message.trim();
    if trimmed.is_empty() {
        return Err("the message is empty".to_string());
    }
    if !trimmed.starts_with('{') {
        return Err("it is not a JSON object".to_string());
    }
    let error = |e: serde_json::Error| clean(&e.to_string(), MAX_QUOTED);
    match spec.job_type {
        JobType::MaterializeView => {
            let parsed: MaterializeViewResult = serde_json::from_str(trimmed).map_err(error)?;
            if let Some(expected) = spec.input.dataset_id
                && parsed.dataset_id != expected
            {
                return Err(format!(
                    "datasetId {} differs from spec.input.datasetId {expected}",
                    parsed.dataset_id
                ));
            }
            let id = &parsed.recalculation_id;
            if id.is_empty() || id.chars().count() > MAX_RECALCULATION_ID {
                return Err(format!(
                    "recalculationId must have 1 to {MAX_RECALCULATION_ID} characters"
                ));
            }
            if id.chars().any(char::is_control) {
                return Err("recalculationId contains control characters".to_string());
            }
            Ok(JobResult {
                dataset_id: Some(parsed.dataset_id),
                snapshot_id: Some(parsed.snapshot_id),
                recalculation_id: Some(parsed.recalculation_id),
                forecast: None,
            })
        }
        JobType::NqlForecast => {
            let parsed: ForecastResult = serde_json::from_str(trimmed).map_err(error)?;
            Ok(JobResult {
                forecast: Some(parsed.forecast),
                ..JobResult::default()
            })
        }
    }
}

fn failure_message(exit_code: i32, message: &str) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let parsed = if message.len() <= MAX_TERMINATION_MESSAGE {
        serde_json::from_str::<DriverFailure>(message.trim()).ok()
    } else {
        None
    };
    match parsed {
        Some(DriverFailure {
            reason: Some(reason),
            message,
        }) => format!(
            "driver exited with code {exit_code} ({}): {}",
            clean(&text(&reason), MAX_REASON),
            clean(&message.as_ref().map(text).unwrap_or_default(), MAX_MESSAGE)
        ),
        Some(DriverFailure {
            reason: None,
            message: Some(message),
        }) => format!(
            "driver exited with code {exit_code}: {}",
            clean(&text(&message), MAX_MESSAGE)
        ),
        _ if message.trim().is_empty() => {
            format!("driver exited with code {exit_code} and left no termination message")
        }
        _ => format!(
            "driver exited with code {exit_code}: {}",
            clean(message, MAX_MESSAGE)
        ),
    }
}

/// At most `max` characters of `text` with control characters (newlines, escapes, NULs)
/// replaced by spaces, and `...` when cut: safe to put in status, events and logs.
pub fn clean(text: &str, max: usize) -> String {
    let mut out: String = text
        .chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(max).is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn spec(job_type: JobType) -> DataJobSpec {
        serde_json::from_value(json!({
            "type": job_type.as_str(),
            "input": { "nql": "x", "datasetId": 6404 },
            "dataPlane": "dp",
        }))
        .expect("spec")
    }

    fn outcome(job_type: JobType, exit_code: i32, message: &str) -> DriverOutcome {
        read_driver_outcome(&spec(job_type), exit_code, message)
    }

    fn is_invalid(outcome: &DriverOutcome) -> bool {
        matches!(outcome, DriverOutcome::InvalidResult(_))
    }

    /// Every text an outcome carries, whatever the driver wrote, stays within this many
    /// characters (the fixed wording plus the bounded quotes).
    const MAX_OUTCOME_CHARS: usize = MAX_MESSAGE + MAX_REASON + MAX_QUOTED + 400;

    fn outcome_text(outcome: &DriverOutcome) -> &str {
        match outcome {
            DriverOutcome::Succeeded(_) => "",
            DriverOutcome::InvalidResult(m) | DriverOutcome::Failed(m) => m,
        }
    }

    #[test]
    fn materialize_view_result_keeps_64_bit_ids_exact() {
        let message = r#"{"datasetId": 6404, "snapshotId": 739881302291276700, "recalculationId": "abf9a2ec-426b-4751-bd16-fcb435061925"}"#;
        let DriverOutcome::Succeeded(result) = outcome(JobType::MaterializeView, 0, message) else {
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
        let DriverOutcome::Succeeded(result) = outcome(JobType::NqlForecast, 0, message) else {
            panic!("expected a result");
        };
        let forecast = result.forecast.expect("forecast present");
        assert_eq!(forecast["horizon"], 7);
        assert_eq!(forecast["values"][1], 2.25);
    }

    #[test]
    fn hostile_results_are_invalid_never_a_panic() {
        let valid = r#"{"datasetId": 6404, "snapshotId": 1, "recalculationId": "r"}"#;
        assert!(matches!(
            outcome(JobType::MaterializeView, 0, valid),
            DriverOutcome::Succeeded(_)
        ));
        let padded = format!("{}{}", valid, " ".repeat(MAX_TERMINATION_MESSAGE));
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_forecast = format!(r#"{{"forecast": {deep}}}"#);
        for message in [
            "",
            "not json",
            padded.as_str(),
            r#"{"datasetId": 1}"#,
            r#"{"datasetId": 6405, "snapshotId": 1, "recalculationId": "r"}"#,
            r#"{"datasetId": "6404", "snapshotId": 1, "recalculationId": "r"}"#,
            r#"{"datasetId": 6404, "snapshotId": "1", "recalculationId": "r"}"#,
            r#"{"datasetId": 6404, "snapshotId": 1, "recalculationId": 7}"#,
            r#"{"datasetId": 6404, "snapshotId": 18446744073709551615, "recalculationId": "r"}"#,
            r#"{"datasetId": 6404, "snapshotId": 9223372036854775808, "recalculationId": "r"}"#,
            r#"{"datasetId": 6404, "snapshotId": -9223372036854775809, "recalculationId": "r"}"#,
            r#"{"datasetId": 6404, "snapshotId": 1.5, "recalculationId": "r"}"#,
            r#"{"datasetId": 6404, "snapshotId": 1e3, "recalculationId": "r"}"#,
            r#"{"datasetId": 6404, "snapshotId": 1, "recalculationId": ""}"#,
            r#"{"datasetId": 6404, "snapshotId": 1, "recalculationId": "a\u0000b"}"#,
            r#"{"datasetId": 6404, "snapshotId": 1, "recalculationId": "\ud800"}"#,
            r#"{"datasetId": 6404, "snapshotId": 1, "recalculationId": "r", "extra": 1}"#,
            r#"[6404, 1, "r"]"#,
            "null",
            "\u{feff}{}",
            deep.as_str(),
        ] {
            let got = outcome(JobType::MaterializeView, 0, message);
            assert!(is_invalid(&got), "{message:.80} should be invalid: {got:?}");
            assert!(outcome_text(&got).chars().count() <= MAX_OUTCOME_CHARS);
        }
        for message in [
            r#"{"forecast": [1, 2]}"#,
            r#"{"forecast": null}"#,
            deep_forecast.as_str(),
        ] {
            assert!(is_invalid(&outcome(JobType::NqlForecast, 0, message)));
        }
    }

    #[test]
    fn failures_carry_the_drivers_reason_and_message() {
        assert_eq!(
            outcome(
                JobType::NqlForecast,
                3,
                r#"{"reason": "QueryError", "message": "table ds_1 not found"}"#
            ),
            DriverOutcome::Failed(
                "driver exited with code 3 (QueryError): table ds_1 not found".to_string()
            )
        );
        assert_eq!(
            outcome(JobType::NqlForecast, 137, ""),
            DriverOutcome::Failed(
                "driver exited with code 137 and left no termination message".to_string()
            )
        );
        assert_eq!(
            outcome(
                JobType::NqlForecast,
                1,
                r#"{"reason": 42, "message": {"a": 1}}"#
            ),
            DriverOutcome::Failed(r#"driver exited with code 1 (42): {"a":1}"#.to_string())
        );
    }

    #[test]
    fn failure_text_is_bounded_and_free_of_control_characters() {
        let long = "x".repeat(100_000);
        let message =
            format!(r#"{{"reason": "{long}", "message": "line1\nline2\u001b[31m{long}"}}"#);
        for message in [message.as_str(), long.as_str()] {
            let DriverOutcome::Failed(text) = outcome(JobType::NqlForecast, 2, message) else {
                panic!("a non-zero exit is a failure");
            };
            assert!(text.chars().count() <= MAX_OUTCOME_CHARS, "{}", text.len());
            assert!(!text.chars().any(char::is_control), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn any_message_and_exit_code_gives_a_bounded_outcome(
            exit_code in any::<i32>(),
            message in ".{0,6000}",
            forecast in any::<bool>(),
        ) {
            let job_type = if forecast { JobType::NqlForecast } else { JobType::MaterializeView };
            let got = outcome(job_type, exit_code, &message);
            prop_assert!(outcome_text(&got).chars().count() <= MAX_OUTCOME_CHARS);
            prop_assert!(!outcome_text(&got).chars().any(char::is_control));
            if exit_code != 0 {
                prop_assert!(matches!(got, DriverOutcome::Failed(_)), "non-zero exit is a failure");
            }
        }

        #[test]
        fn any_64_bit_ids_survive_exactly(snapshot in any::<i64>(), recalculation in "[a-z0-9-]{1,64}") {
            let message = json!({
                "datasetId": 6404, "snapshotId": snapshot, "recalculationId": recalculation,
            })
            .to_string();
            let DriverOutcome::Succeeded(result) = outcome(JobType::MaterializeView, 0, &message) else {
                return Err(TestCaseError::fail(format!("{message} should parse")));
            };
            prop_assert_eq!(result.snapshot_id, Some(snapshot));
            prop_assert_eq!(result.recalculation_id, Some(recalculation));
        }

        #[test]
        fn ids_beyond_64_bits_or_another_dataset_are_invalid(
            beyond in (i64::MAX as u64 + 1)..=u64::MAX,
            dataset in any::<i64>().prop_filter("not the spec's", |d| *d != 6404),
        ) {
            let too_big = format!(r#"{{"datasetId": 6404, "snapshotId": {beyond}, "recalculationId": "r"}}"#);
            prop_assert!(is_invalid(&outcome(JobType::MaterializeView, 0, &too_big)));
            let too_small = format!(r#"{{"datasetId": 6404, "snapshotId": -{beyond}1, "recalculationId": "r"}}"#);
            prop_assert!(is_invalid(&outcome(JobType::MaterializeView, 0, &too_small)));
            let other = json!({ "datasetId": dataset, "snapshotId": 1, "recalculationId": "r" }).to_string();
            prop_assert!(is_invalid(&outcome(JobType::MaterializeView, 0, &other)));
        }
    }
}
