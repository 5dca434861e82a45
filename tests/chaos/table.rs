//! The state table of the contract (DESIGN.md section 3), with `pending -> failed` (a pod
//! lost, rejected or not starting before the driver ran; docs/design.md).

use std::collections::BTreeSet;

/// The states of the contract, as written in status ("" before the first reconcile).
const TERMINAL: [&str; 3] = ["completed", "cancelled", "failed"];

/// Whether `from -> to` is one edge of the state table.
pub fn is_edge(from: &str, to: &str) -> bool {
    matches!(
        (from, to),
        ("", "pending")
            | ("pending", "running" | "pending_cancellation" | "failed")
            | ("running", "pending_cancellation" | "completed" | "failed")
            | ("pending_cancellation", "cancelled")
    )
}

/// Whether `to` can be reached from `from` along the table (events between were not seen).
pub fn is_reachable(from: &str, to: &str) -> bool {
    let mut frontier = vec![from.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(state) = frontier.pop() {
        for next in [
            "pending",
            "running",
            "pending_cancellation",
            "cancelled",
            "completed",
            "failed",
        ] {
            if is_edge(&state, next) {
                if next == to {
                    return true;
                }
                if seen.insert(next) {
                    frontier.push(next.to_string());
                }
            }
        }
    }
    false
}

/// Whether a state is terminal.
pub fn is_terminal(state: &str) -> bool {
    TERMINAL.contains(&state)
}
