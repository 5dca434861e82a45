//! The chaos run's judges, checked on made-up input: the state table and the audit-log analysis
//! that finds writes by a leader after it lost the Lease. (The run itself is
//! tests/chaos/main.rs, started by hack/chaos.sh.)

#[path = "chaos/audit.rs"]
#[allow(dead_code)]
mod audit;
#[path = "chaos/table.rs"]
mod table;

use std::io::Write;

use serde_json::json;

#[test]
fn the_state_table_allows_its_edges_and_nothing_out_of_a_terminal_state() {
    assert!(table::is_edge("", "pending"));
    assert!(table::is_edge("pending_cancellation", "cancelled"));
    assert!(
        !table::is_edge("pending", "cancelled"),
        "cancelled needs teardown first"
    );
    assert!(!table::is_edge("running", "pending"));
    for terminal in ["completed", "cancelled", "failed"] {
        assert!(table::is_terminal(terminal));
        for to in [
            "pending",
            "running",
            "pending_cancellation",
            "completed",
            "failed",
        ] {
            assert!(!table::is_reachable(terminal, to), "{terminal} -> {to}");
        }
    }
    assert!(
        table::is_reachable("pending", "completed"),
        "through running"
    );
    assert!(!table::is_reachable("pending_cancellation", "completed"));
}

fn event(
    verb: &str,
    agent: &str,
    resource: &str,
    name: &str,
    at: &str,
    extra: serde_json::Value,
) -> String {
    let mut e = json!({
        "kind": "Event", "stage": "ResponseComplete", "verb": verb, "userAgent": agent,
        "objectRef": { "resource": resource, "namespace": "chaos", "name": name },
        "responseStatus": { "code": 200 },
        "stageTimestamp": at,
    });
    if let (Some(e), Some(extra)) = (e.as_object_mut(), extra.as_object()) {
        e.extend(extra.clone());
    }
    e.to_string()
}

fn lease(holder: Option<&str>, at: &str) -> String {
    event(
        "update",
        "other",
        "leases",
        "chaos-operator",
        at,
        json!({ "responseObject": { "spec": { "holderIdentity": holder, "leaseDurationSeconds": 6 } } }),
    )
}

fn write(instance: &str, at: &str) -> String {
    event(
        "patch",
        &format!("datajob-operator/0.1.0 ({instance})"),
        "datajobs",
        "job-1",
        at,
        json!({}),
    )
}

#[test]
fn writes_after_another_holder_took_over_or_after_the_own_lease_expired_are_found() {
    let lines = [
        lease(Some("op-0"), "2026-11-29T06:00:00.000000Z"),
        write("op-0", "2026-11-29T06:00:01.000000Z"),
        // Renewed at :00, so valid until :06; this write is after the expiry.
        write("op-0", "2026-11-29T06:00:07.000000Z"),
        lease(Some("op-1"), "2026-11-29T06:00:08.000000Z"),
        write("op-1", "2026-11-29T06:00:08.500000Z"),
        // The old leader wrote after op-1 took over.
        write("op-0", "2026-11-29T06:00:09.000000Z"),
        lease(None, "2026-11-29T06:00:10.000000Z"),
        // After its own release.
        write("op-1", "2026-11-29T06:00:10.500000Z"),
    ];
    let dir = std::env::temp_dir().join(format!("chaos-audit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("audit.log");
    let mut file = std::fs::File::create(&path).expect("audit log");
    for line in &lines {
        writeln!(file, "{line}").expect("write");
    }
    let findings = audit::analyse(&path, "chaos", "chaos-operator");
    assert_eq!(findings.lease_writes, 3);
    assert_eq!(findings.operator_writes, 5);
    let stale: Vec<(String, String)> = findings
        .stale
        .iter()
        .map(|(w, _)| (w.instance.clone(), w.at.to_string()))
        .collect();
    assert_eq!(
        stale,
        vec![
            ("op-0".to_string(), "2026-11-29T06:00:07Z".to_string()),
            ("op-0".to_string(), "2026-11-29T06:00:09Z".to_string()),
            ("op-1".to_string(), "2026-11-29T06:00:10.5Z".to_string()),
        ]
    );
    let _ = std::fs::remove_dir_all(dir);
}
