//! A schema-driven, property-based run of the API against its own OpenAPI document: proptest
//! generates requests from the document (every operation; path, query and header parameters
//! and bodies built from their schemas, sometimes mutated into invalid ones; with the editor's
//! token, the viewer's, or none) and sends them to the API on the real cluster. Every answer
//! must be a status the document lists for that operation, never a server error (5xx), with a
//! JSON body that matches the documented schema of that status.
//!
//! (Schemathesis does the same from Python; this keeps the check inside `cargo test`, with no
//! Python toolchain or PyPI download on the test machine.)

use std::sync::Arc;
use std::time::Duration;

use datajob_operator::jobs_api::openapi::document_json;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Just, Union};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

use crate::fixture::*;

/// One generated request.
#[derive(Clone, Debug)]
struct Case {
    operation: usize,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
    caller: Caller,
}

#[derive(Clone, Copy, Debug)]
enum Caller {
    Editor,
    Viewer,
    Anonymous,
}

/// An operation of the document.
struct Operation {
    method: String,
    template: String,
    parameters: Vec<Value>,
    body: Option<Value>,
    responses: Map<String, Value>,
}

fn operations(doc: &Value) -> Vec<Operation> {
    let mut out = Vec::new();
    for (template, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push(Operation {
                method: method.to_uppercase(),
                template: template.clone(),
                parameters: op["parameters"].as_array().cloned().unwrap_or_default(),
                body: op["requestBody"]["content"]["application/json"]["schema"]
                    .as_object()
                    .map(|s| Value::Object(s.clone())),
                responses: op["responses"].as_object().cloned().expect("responses"),
            });
        }
    }
    out
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.rsplit('/').next().expect("ref name");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema,
    }
}

/// Values of `schema`; with `junk`, sometimes a value of another type.
fn values(doc: &Arc<Value>, schema: &Value, junk: bool) -> BoxedStrategy<Value> {
    let valid = valid_values(doc, schema);
    if !junk {
        return valid;
    }
    prop_oneof![
        12 => valid,
        1 => prop_oneof![
            Just(Value::Null),
            any::<i64>().prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
            "[ -~]{0,12}".prop_map(Value::from),
            Just(json!([])),
            Just(json!({"unexpected": 1})),
        ],
    ]
    .boxed()
}

fn valid_values(doc: &Arc<Value>, schema: &Value) -> BoxedStrategy<Value> {
    let schema = resolve(doc, schema).clone();
    if let Some(options) = schema["oneOf"].as_array() {
        let strategies: Vec<_> = options.iter().map(|s| valid_values(doc, s)).collect();
        return Union::new(strategies).boxed();
    }
    if let Some(choices) = schema["enum"].as_array() {
        return proptest::sample::select(choices.clone()).boxed();
    }
    let types: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts
            .iter()
            .filter_map(|t| t.as_str().map(String::from))
            .collect(),
        _ => vec!["object".to_string()],
    };
    let strategies: Vec<BoxedStrategy<Value>> = types
        .iter()
        .map(|t| match t.as_str() {
            "null" => Just(Value::Null).boxed(),
            "boolean" => any::<bool>().prop_map(Value::from).boxed(),
            "integer" => {
                let min = schema["minimum"].as_i64().unwrap_or(i64::MIN);
                let max = schema["maximum"].as_i64().unwrap_or(i64::MAX);
                prop_oneof![Just(min), Just(max), min..=max]
                    .prop_map(Value::from)
                    .boxed()
            }
            "string" => string_values(&schema),
            "array" => {
                let items = valid_values(doc, &schema["items"]);
                proptest::collection::vec(items, 0..3)
                    .prop_map(Value::from)
                    .boxed()
            }
            _ => object_values(doc, &schema),
        })
        .collect();
    Union::new(strategies).boxed()
}

fn string_values(schema: &Value) -> BoxedStrategy<Value> {
    let min = schema["minLength"].as_u64().unwrap_or(0).min(8);
    let max = schema["maxLength"].as_u64().unwrap_or(24).clamp(min, 24);
    match schema["pattern"].as_str() {
        Some(pattern) => {
            let inner = pattern.trim_start_matches('^').trim_end_matches('$');
            let bounded = inner.replace('*', "{0,10}");
            proptest::string::string_regex(&bounded)
                .expect("the document's patterns are simple regexes")
                .prop_filter("length", move |s| {
                    (s.len() as u64) >= min.max(1) && (s.len() as u64) <= max.max(63)
                })
                .prop_map(Value::from)
                .boxed()
        }
        None => proptest::string::string_regex(&format!("[ -~]{{{min},{max}}}"))
            .expect("regex")
            .prop_map(Value::from)
            .boxed(),
    }
}

fn object_values(doc: &Arc<Value>, schema: &Value) -> BoxedStrategy<Value> {
    let required: Vec<String> = schema["required"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = schema["properties"]
        .as_object()
        .map(|props| {
            props
                .iter()
                .map(|(name, prop)| {
                    let name = name.clone();
                    let value = values(doc, prop, true);
                    if required.contains(&name) {
                        value.prop_map(move |v| Some((name.clone(), v))).boxed()
                    } else {
                        proptest::option::of(value)
                            .prop_map(move |v| v.map(|v| (name.clone(), v)))
                            .boxed()
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    fields
        .prop_map(|fields| Value::Object(fields.into_iter().flatten().collect()))
        .boxed()
}

fn cases(doc: Arc<Value>, known_ids: Vec<String>) -> impl Strategy<Value = Case> {
    let count = operations(&doc).len();
    (0..count).prop_flat_map(move |index| {
        let op = &operations(&doc)[index];
        let ids = prop_oneof![
            4 => proptest::sample::select(known_ids.clone()),
            1 => Just("6a1f7c9e-0000-4000-8000-000000000000".to_string()),
            1 => "[a-z0-9%.-]{1,12}",
        ];
        let template = op.template.clone();
        let path = ids.prop_map(move |id| template.replace("{job_id}", &id));
        let mut query = Vec::new();
        let mut headers = Vec::new();
        for p in &op.parameters {
            let name = p["name"].as_str().expect("name").to_string();
            let value = proptest::option::of(values(&doc, &p["schema"], true));
            let pair = value.prop_map(move |v| v.map(|v| (name.clone(), v)));
            match p["in"].as_str() {
                Some("query") => query.push(pair.boxed()),
                Some("header") => headers.push(pair.boxed()),
                _ => {}
            }
        }
        let body = match &op.body {
            Some(schema) => proptest::option::weighted(0.9, values(&doc, schema, true))
                .prop_map(|b| b.map(|b| b.to_string()))
                .boxed(),
            None => Just(None).boxed(),
        };
        let caller = prop_oneof![
            6 => Just(Caller::Editor),
            2 => Just(Caller::Viewer),
            1 => Just(Caller::Anonymous),
        ];
        (path, query, headers, body, caller).prop_map(
            move |(path, query, headers, body, caller)| Case {
                operation: index,
                path,
                query: query
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| format!("{k}={}", crate::urlencode(&plain(&v))))
                    .collect::<Vec<_>>()
                    .join("&"),
                headers: headers
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k, plain(&v)))
                    .filter(|(_, v)| http::HeaderValue::from_str(v).is_ok())
                    .collect(),
                body,
                caller,
            },
        )
    })
}

/// A parameter value as text (strings without their quotes).
fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Why `value` does not match `schema` (None when it does); the subset the document uses.
fn mismatch(doc: &Value, schema: &Value, value: &Value, at: &str) -> Option<String> {
    let schema = resolve(doc, schema);
    if let Some(options) = schema["oneOf"].as_array() {
        let fits = options
            .iter()
            .filter(|s| mismatch(doc, s, value, at).is_none())
            .count();
        return (fits != 1).then(|| format!("{at}: {value} matches {fits} of oneOf"));
    }
    if let Some(choices) = schema["enum"].as_array() {
        return (!choices.contains(value)).then(|| format!("{at}: {value} not in {choices:?}"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
        _ => return None,
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let number_as_integer = kind == "integer" && types.contains(&"number");
    if !(types.contains(&kind) || number_as_integer) {
        return Some(format!("{at}: {value} is {kind}, expected {types:?}"));
    }
    match value {
        Value::Object(fields) => {
            for name in schema["required"].as_array().into_iter().flatten() {
                let name = name.as_str().unwrap_or_default();
                if !fields.contains_key(name) {
                    return Some(format!("{at}: required field {name} is missing"));
                }
            }
            let props = schema["properties"].as_object();
            fields
                .iter()
                .find_map(|(name, v)| match props.and_then(|p| p.get(name)) {
                    Some(prop) => mismatch(doc, prop, v, &format!("{at}.{name}")),
                    None if schema["additionalProperties"] == Value::Bool(false) => {
                        Some(format!("{at}: undocumented field {name}"))
                    }
                    None => None,
                })
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| mismatch(doc, &schema["items"], v, &format!("{at}[{i}]"))),
        _ => None,
    }
}

#[test]
fn every_request_the_openapi_document_allows_gets_a_documented_answer_and_no_server_error() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let doc: Arc<Value> = Arc::new(serde_json::from_str(&document_json()).expect("document"));
    let (env, api, known_ids) = rt.block_on(async {
        let env = Env::new("api-schema").await;
        // A short wait cap: generated requests may ask for up to 300 s.
        let api = env.api_in_process(Duration::from_secs(1)).await;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let created = api.post("/v1/jobs", &env.editor, create_body()).await;
            assert_eq!(created.status, 201, "{created:?}");
            ids.push(created.body["id"].as_str().expect("id").to_string());
        }
        (env, api, ids)
    });
    let ops = operations(&doc);
    let mut runner = TestRunner::new(Config {
        cases: 150,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..Config::default()
    });
    let outcome = runner.run(&cases(doc.clone(), known_ids), |case| {
        let op = &ops[case.operation];
        let token = match case.caller {
            Caller::Editor => Some(env.editor.as_str()),
            Caller::Viewer => Some(env.viewer.as_str()),
            Caller::Anonymous => None,
        };
        let path = if case.query.is_empty() {
            case.path.clone()
        } else {
            format!("{}?{}", case.path, case.query)
        };
        let headers: Vec<(&str, &str)> = case
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let answer = rt.block_on(api.call(&op.method, &path, token, &headers, case.body.clone()));
        let what = format!("{} {path} -> {answer:?}", op.method);
        prop_assert!(answer.status < 500, "server error: {}", what);
        let documented = op.responses.get(&answer.status.to_string());
        let Some(documented) = documented else {
            return Err(TestCaseError::fail(format!("undocumented status: {what}")));
        };
        let schema = &documented["content"]["application/json"]["schema"];
        if let Some(problem) = mismatch(&doc, schema, &answer.body, "body") {
            return Err(TestCaseError::fail(format!("{problem}: {what}")));
        }
        Ok(())
    });
    rt.block_on(env.cleanup());
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// The same against schemathesis itself (installed by `hack/schemathesis.sh` into
/// ~/.cache/datajob-operator on first use, which needs PyPI once): every phase (examples,
/// coverage, fuzzing, stateful) with the checks of hack/schemathesis.toml must pass.
#[tokio::test]
async fn schemathesis_finds_no_failure_against_the_openapi_document() {
    let env = Env::new("api-st").await;
    let api = env.api_in_process(Duration::from_secs(1)).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/schemathesis.sh");
    let report = std::env::temp_dir().join(format!("schemathesis-{}", env.ns.name()));
    std::fs::create_dir_all(&report).expect("report folder");
    let args = [
        "--no-color".to_string(),
        "run".to_string(),
        format!("{}/v1/openapi.json", api.base()),
        "--header".to_string(),
        format!("Authorization: Bearer {}", env.editor),
        "--max-examples".to_string(),
        "25".to_string(),
        "--workers".to_string(),
        "1".to_string(),
    ];
    // The API is served by this test's runtime: run schemathesis on a blocking thread.
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(script)
            .current_dir(&report)
            .args(&args)
            .output()
    })
    .await
    .expect("join")
    .expect("hack/schemathesis.sh runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found failures:\n{text}");
    env.cleanup().await;
}
