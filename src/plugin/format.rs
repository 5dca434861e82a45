//! Parsing and formatting shared by the plugin's commands; pure, unit-tested.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::JobState;

/// Parses `90s`, `5m`, `1h`, `1h30m` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => return Err(format!("invalid duration {text:?}: use e.g. 90s, 5m or 1h")),
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: a number must precede {c}"))?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || text.is_empty() {
        return Err(format!("invalid duration {text:?}: use e.g. 90s, 5m or 1h"));
    }
    Ok(Duration::from_secs(total))
}

/// Parses a comma-separated list of states; `active` and `finished` stand for the unfinished
/// and the terminal states.
pub fn parse_states(text: &str) -> Result<Vec<JobState>, String> {
    let mut out = Vec::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "active" => out.extend(JobState::ALL.iter().filter(|s| !s.is_terminal())),
            "finished" => out.extend(JobState::ALL.iter().filter(|s| s.is_terminal())),
            _ => out.push(
                *JobState::ALL
                    .iter()
                    .find(|s| s.as_str() == word.replace('-', "_"))
                    .ok_or_else(|| {
                        format!(
                            "unknown state {word:?}: use pending, running, pending_cancellation, \
                             cancelled, completed, failed, active or finished"
                        )
                    })?,
            ),
        }
    }
    if out.is_empty() {
        return Err("no state given".to_string());
    }
    Ok(out)
}

/// kubectl-style age: 45s, 3m, 2h, 5d.
pub fn age(since: Option<&Time>, now: Timestamp) -> String {
    let Some(since) = since else {
        return "<unknown>".to_string();
    };
    let seconds = now.as_second().saturating_sub(since.0.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

/// Renders rows as columns separated by three spaces, like kubectl.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}   ", width = widths[i]));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn states() {
        assert_eq!(
            parse_states("running,pending-cancellation"),
            Ok(vec![JobState::Running, JobState::PendingCancellation])
        );
        assert_eq!(parse_states("finished").map(|s| s.len()), Ok(3));
        assert_eq!(
            parse_states("active"),
            Ok(vec![
                JobState::Pending,
                JobState::Running,
                JobState::PendingCancellation
            ])
        );
        assert!(parse_states("done").is_err());
    }

    #[test]
    fn ages() {
        let now: Timestamp = "2026-11-29T12:00:00Z".parse().unwrap();
        let at = |s: &str| Time(s.parse().unwrap());
        assert_eq!(age(Some(&at("2026-11-29T11:59:15Z")), now), "45s");
        assert_eq!(age(Some(&at("2026-11-29T11:30:00Z")), now), "30m");
        assert_eq!(age(Some(&at("2026-11-29T02:00:00Z")), now), "10h");
        assert_eq!(age(Some(&at("2026-11-20T12:00:00Z")), now), "9d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["NAME", "STATE"],
            &[vec!["a-long-name".into(), "running".into()]],
        );
        assert_eq!(out, "NAME          STATE\na-long-name   running\n");
    }
}
