//! The Jobs API's OpenAPI document (offline): the committed `docs/openapi.json` is the one the
//! code generates (and serves at `/v1/openapi.json`), and it describes the seed's API.

use datajob_operator::jobs_api::openapi::document_json;
use serde_json::Value;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

#[test]
fn committed_openapi_document_is_the_generated_one() {
    let generated = document_json();
    if std::env::var_os("DATAJOB_UPDATE_OPENAPI").is_some() {
        std::fs::write(COMMITTED, &generated).expect("write docs/openapi.json");
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "docs/openapi.json is stale; regenerate it with \
         `DATAJOB_UPDATE_OPENAPI=1 cargo test --test jobs_api_openapi`"
    );
}

#[test]
fn the_document_describes_the_seed_endpoints_with_bearer_auth() {
    let doc: Value = serde_json::from_str(&document_json()).expect("JSON");
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    let paths = doc["paths"].as_object().expect("paths");
    let mut operations: Vec<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("path item")
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    operations.sort();
    assert_eq!(
        operations,
        [
            "GET /v1/jobs",
            "GET /v1/jobs/{job_id}",
            "POST /v1/jobs",
            "POST /v1/jobs/{job_id}/cancel",
            "POST /v1/jobs/{job_id}/request-cancellation",
        ]
    );
    for (path, item) in paths {
        for (method, op) in item.as_object().expect("path item") {
            assert_eq!(
                op["security"][0]["bearer"],
                Value::Array(vec![]),
                "{method} {path}"
            );
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} documents 401"
            );
        }
    }
    let schemas = &doc["components"]["schemas"];
    let snapshot = &schemas["JobResult"]["properties"]["snapshot_id"];
    assert_eq!(snapshot["format"], "int64", "{snapshot}");
    let states = &schemas["JobState"]["enum"];
    assert_eq!(
        states,
        &serde_json::json!([
            "pending",
            "running",
            "pending_cancellation",
            "cancelled",
            "completed",
            "failed"
        ])
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
