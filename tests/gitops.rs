//! GitOps, proven with the tools' own code.
//!
//! Offline: the Argo CD health check (`integrations/argocd/.../health.lua`) runs in gopher-lua,
//! the Lua 5.1 VM Argo CD embeds, over its fixtures; kstatus (sigs.k8s.io/cli-utils, the
//! library Flux uses) computes the status of the same fixtures; both must match the table in
//! docs/gitops.md. The Go helpers come from `hack/gotools.sh` (built once, cached).
//!
//! On the cluster, with the chart's teardown-finalizer admission policy installed: one field
//! manager server-side applies a DataJob, later applies it with `cancel: true`; re-applying
//! causes no conflict and no change, and keeps the finalizer the policy added. The real objects the operator
//! writes on the way are run through both tools as well.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use datajob_operator::api::{DataJob, JobState};
use kube::ResourceExt;
use kube::api::Api;
use serde::Deserialize;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const CUSTOMIZATION: &str = "integrations/argocd/resource_customizations/datajob.dev/DataJob";

/// Path of a Go helper of hack/gotools, built by hack/gotools.sh when not cached yet.
fn gotool(name: &str) -> PathBuf {
    let out = Command::new(Path::new(ROOT).join("hack/gotools.sh"))
        .arg(name)
        .stderr(Stdio::inherit())
        .output()
        .expect("hack/gotools.sh runs");
    assert!(out.status.success(), "hack/gotools.sh {name} failed");
    PathBuf::from(String::from_utf8(out.stdout).expect("path").trim())
}

#[derive(Debug, Deserialize, PartialEq, Eq, Clone)]
struct Health {
    status: String,
    message: String,
}

/// Runs `tool args` with `objects` as a JSON array on stdin; one result per object.
fn run_tool(tool: &Path, args: &[&Path], objects: &[Value]) -> Vec<Health> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let input = serde_json::to_vec(objects).expect("JSON");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&input)
        .expect("write stdin");
    let out = child.wait_with_output().expect("tool output");
    assert!(
        out.status.success(),
        "{} failed: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON array of results")
}

fn argo_health(objects: &[Value]) -> Vec<Health> {
    let script = Path::new(ROOT).join(CUSTOMIZATION).join("health.lua");
    run_tool(&gotool("luahealth"), &[&script], objects)
}

fn kstatus(objects: &[Value]) -> Vec<Health> {
    run_tool(&gotool("kstatus"), &[], objects)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    input_path: String,
    health_status: Health,
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every fixture of health_test.yaml: (input path, object, expected Argo CD health).
fn fixtures() -> Vec<(String, Value, Health)> {
    let dir = Path::new(ROOT).join(CUSTOMIZATION);
    let tests: HealthTests = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("health_test.yaml")).expect("health_test.yaml"),
    )
    .expect("health_test.yaml parses");
    tests
        .tests
        .into_iter()
        .map(|t| {
            let object = read_yaml(&dir.join(&t.input_path));
            (t.input_path, object, t.health_status)
        })
        .collect()
}

fn is_generation_mismatch(object: &Value) -> bool {
    object["status"].is_object()
        && object["status"]["observedGeneration"] != object["metadata"]["generation"]
}

/// The rows of the table in docs/gitops.md: first cell -> column name -> cell.
fn docs_table() -> BTreeMap<String, BTreeMap<String, String>> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("docs/gitops.md")).expect("docs");
    let mut lines = text.lines().skip_while(|l| !l.starts_with("| state |"));
    let cells = |line: &str| -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let header = cells(lines.next().expect("the state table in docs/gitops.md"));
    lines
        .skip(1)
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let row = cells(line);
            (
                row[0].clone(),
                header.iter().cloned().zip(row.iter().cloned()).collect(),
            )
        })
        .collect()
}

/// The docs row that describes `object`.
fn docs_row_key(object: &Value) -> String {
    if !object["status"].is_object() {
        return "(no status yet)".to_string();
    }
    if is_generation_mismatch(object) {
        return "(any, `status.observedGeneration` < `metadata.generation`)".to_string();
    }
    object["status"]["state"]
        .as_str()
        .expect("a state")
        .to_string()
}

#[test]
fn argo_cd_health_check_gives_the_expected_health_for_every_fixture() {
    let fixtures = fixtures();
    let objects: Vec<Value> = fixtures.iter().map(|(_, o, _)| o.clone()).collect();
    let got = argo_health(&objects);
    let mut wrong = Vec::new();
    for ((path, _, expected), got) in fixtures.iter().zip(&got) {
        if expected != got {
            wrong.push(format!("{path}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn fixtures_cover_every_state_and_generation_mismatches() {
    let fixtures = fixtures();
    let states: BTreeSet<String> = fixtures
        .iter()
        .filter(|(_, o, _)| !is_generation_mismatch(o))
        .filter_map(|(_, o, _)| o["status"]["state"].as_str().map(str::to_string))
        .collect();
    let all: BTreeSet<String> = JobState::ALL
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    assert_eq!(states, all);
    let mismatched: BTreeSet<String> = fixtures
        .iter()
        .filter(|(_, o, _)| is_generation_mismatch(o))
        .filter_map(|(_, o, _)| o["status"]["state"].as_str().map(str::to_string))
        .collect();
    assert!(
        mismatched.len() >= 3 && mismatched.contains("completed"),
        "generation mismatches on running and finished jobs: {mismatched:?}"
    );
    assert!(
        fixtures.iter().any(|(_, o, _)| !o["status"].is_object()),
        "a fixture without status"
    );
    for (path, object, _) in &fixtures {
        serde_json::from_value::<DataJob>(object.clone())
            .unwrap_or_else(|e| panic!("{path} is not a valid DataJob: {e}"));
    }
}

#[test]
fn kstatus_and_argo_cd_columns_of_docs_gitops_md_are_what_the_tools_compute() {
    let table = docs_table();
    let fixtures = fixtures();
    let objects: Vec<Value> = fixtures.iter().map(|(_, o, _)| o.clone()).collect();
    let kstatus = kstatus(&objects);
    let argo = argo_health(&objects);
    let mut covered = BTreeSet::new();
    let mut wrong = Vec::new();
    for (((path, object, _), k), a) in fixtures.iter().zip(&kstatus).zip(&argo) {
        let key = docs_row_key(object);
        let row = table
            .get(&key)
            .unwrap_or_else(|| panic!("docs/gitops.md has no row `{key}` (for {path})"));
        if row["kstatus (Flux)"] != k.status {
            wrong.push(format!(
                "{path}: docs say kstatus {}, kstatus computes {} ({})",
                row["kstatus (Flux)"], k.status, k.message
            ));
        }
        if row["Argo CD health"] != a.status {
            wrong.push(format!(
                "{path}: docs say Argo CD {}, health.lua returns {}",
                row["Argo CD health"], a.status
            ));
        }
        covered.insert(key);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let rows: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(covered, rows, "every row of the docs table is computed");
}

// --- on the cluster ---------------------------------------------------------------------------

const FIELD_MANAGER: &str = "gitops-test";
/// The operator's finalizer on a DataJob.
const TEARDOWN: &str = "datajob.dev/teardown";

fn manifest(name: &str, cancel: bool) -> String {
    let cancel = if cancel {
        "\n  cancel: true\n  cancelReason: superseded in git"
    } else {
        ""
    };
    format!(
        "apiVersion: datajob.dev/v1alpha1\nkind: DataJob\nmetadata:\n  name: {name}\nspec:\n  \
         type: materialize-view\n  dataPlane: dp-gitops\n  input:\n    nql: SELECT 1\n    \
         datasetId: 6404\n  executor:\n    terminationGracePeriodSeconds: 1{cancel}\n"
    )
}

/// `kubectl apply --server-side` of `manifest` as the GitOps field manager; returns stdout.
fn server_side_apply(namespace: &str, manifest: &str) -> String {
    support::kubectl_with_input(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            FIELD_MANAGER,
            "-n",
            namespace,
            "-f",
            "-",
        ],
        manifest,
    )
}

/// Installs the chart's teardown-finalizer policy for `namespace` and `dp-gitops`, as a
/// release watching that namespace would, and waits until the API server applies it (a dry
/// run of a DataJob comes back with the finalizer). Returns the rendered policy, to delete.
async fn install_finalizer_policy(client: &kube::Client, namespace: &str) -> String {
    let watch = format!("watchNamespace={namespace}");
    let policy =
        support::helm::apply_finalizer_policy(client, namespace, &[&watch, "dataPlane=dp-gitops"])
            .await;
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), namespace);
    let probe: DataJob = serde_yaml::from_str(&manifest("policy-probe", false)).expect("manifest");
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    support::eventually(
        "the finalizer policy to take effect",
        support::STEP,
        async || {
            let created = jobs.create(&dry_run, &probe).await.ok()?;
            created
                .finalizers()
                .iter()
                .any(|f| f == TEARDOWN)
                .then_some(())
        },
    )
    .await;
    policy
}

/// Which field managers own `metadata.finalizers` of `job`, by manager and subresource.
fn finalizer_owners(job: &DataJob) -> Vec<String> {
    job.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .is_some_and(|f| f.0.pointer("/f:metadata/f:finalizers").is_some())
        })
        .map(|m| format!("{:?}:{:?}", m.manager, m.subresource))
        .collect()
}

fn as_value(job: &DataJob) -> Value {
    let mut value = serde_json::to_value(job).expect("JSON");
    // As a tool reads it from the API: apiVersion and kind set.
    value["apiVersion"] = "datajob.dev/v1alpha1".into();
    value["kind"] = "DataJob".into();
    value
}

#[tokio::test]
async fn server_side_apply_then_cancel_from_git_then_reapply_changes_nothing() {
    let client = support::admin_client().await;
    support::install_crds(&client).await;
    let ns = support::TestNamespace::new(&client, "gitops").await;
    let policy = install_finalizer_policy(&client, ns.name()).await;
    let _operator = support::Operator::start(ns.name());
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns.name());
    let name = "nightly-view";

    server_side_apply(ns.name(), &manifest(name, false));
    let running = support::wait_state(&jobs, name, JobState::Running).await;
    // The admission policy added the finalizer; no field manager owns it, so no later apply
    // from git removes it.
    assert!(running.finalizers().iter().any(|f| f == TEARDOWN));
    assert_eq!(finalizer_owners(&running), Vec::<String>::new());

    server_side_apply(ns.name(), &manifest(name, true));
    let cancelled = support::wait_state(&jobs, name, JobState::Cancelled).await;
    // The operator's last writes (status, finalizer removal of nothing: the job still exists)
    // are done once the state is terminal and observedGeneration caught up.
    let settled = support::wait_for(&jobs, name, support::STEP, |j: &DataJob| {
        j.status.as_ref().and_then(|s| s.observed_generation) == j.metadata.generation
            && j.status.as_ref().and_then(|s| s.active_executors) == Some(0)
    })
    .await;

    let out = server_side_apply(ns.name(), &manifest(name, true));
    assert!(out.contains("serverside-applied"), "{out}");
    let after = jobs.get(name).await.expect("the DataJob");
    assert_eq!(
        after.metadata.resource_version, settled.metadata.resource_version,
        "re-applying the same manifest must not change the object"
    );
    assert_eq!(after.metadata.generation, settled.metadata.generation);
    assert!(
        after.finalizers().iter().any(|f| f == TEARDOWN),
        "applies from git keep the admission-added finalizer: {:?}",
        after.finalizers()
    );

    // Field ownership: the GitOps manager owns the spec it applied, the operator only status.
    let managers: BTreeMap<String, String> = after
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|m| {
            (
                format!(
                    "{}:{}",
                    m.manager.clone().unwrap_or_default(),
                    m.subresource.clone().unwrap_or_default()
                ),
                m.fields_v1
                    .as_ref()
                    .map(|f| f.0.to_string())
                    .unwrap_or_default(),
            )
        })
        .collect();
    let gitops = managers
        .get(&format!("{FIELD_MANAGER}:"))
        .unwrap_or_else(|| panic!("no fields of {FIELD_MANAGER}: {managers:?}"));
    assert!(
        gitops.contains("f:cancel") && gitops.contains("f:cancelReason"),
        "{gitops}"
    );
    for (manager, fields) in &managers {
        if manager.starts_with(datajob_operator::OPERATOR_NAME) {
            assert!(
                !fields.contains("f:spec"),
                "the operator must not own spec fields: {manager} {fields}"
            );
            assert!(
                manager.ends_with(":status"),
                "with the finalizer policy the operator writes only status: {manager} {fields}"
            );
        }
    }

    // The tools agree with the docs on what the operator really wrote.
    let real = [as_value(&running), as_value(&cancelled), as_value(&after)];
    let argo = argo_health(&real);
    let flux = kstatus(&real);
    assert_eq!(argo[0].status, "Healthy", "{:?}", argo[0]);
    assert_eq!(flux[0].status, "Current", "{:?}", flux[0]);
    assert_eq!(argo[2].status, "Suspended", "{:?}", argo[2]);
    assert_eq!(flux[2].status, "Current", "{:?}", flux[2]);
    ns.cleanup().await;
    support::kubectl_with_input(&["delete", "-f", "-"], &policy);
}

/// The docs' command that puts health.lua into argocd-cm, run against a ConfigMap of that name
/// (in a test namespace instead of `argocd`): the key holds the file, byte for byte, and other
/// keys stay.
#[tokio::test]
async fn docs_command_installs_the_health_check_into_argocd_cm() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let client = support::admin_client().await;
    let ns = support::TestNamespace::new(&client, "argocd-cm").await;
    let docs = std::fs::read_to_string(Path::new(ROOT).join("docs/gitops.md")).expect("docs");
    let section = docs.split("## Argo CD").nth(1).expect("Argo CD section");
    let command = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the install command")
        .replace("-n argocd", &format!("-n {}", ns.name()));
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), ns.name());
    let existing: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "argocd-cm" },
        "data": { "url": "https://argocd.example.com" }
    }))
    .expect("ConfigMap");
    configmaps
        .create(&Default::default(), &existing)
        .await
        .expect("create argocd-cm");
    let kubectl_dir = std::env::var("DATAJOB_KUBECTL")
        .ok()
        .and_then(|k| Path::new(&k).parent().map(Path::to_path_buf));
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = kubectl_dir {
        path = std::env::join_paths(std::iter::once(dir).chain(std::env::split_paths(&path)))
            .expect("PATH");
    }
    let out = Command::new("bash")
        .args(["-ec", &command])
        .current_dir(ROOT)
        .env("PATH", path)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{command}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cm = configmaps.get("argocd-cm").await.expect("argocd-cm");
    let data = cm.data.expect("data");
    let script = std::fs::read_to_string(Path::new(ROOT).join(CUSTOMIZATION).join("health.lua"))
        .expect("health.lua");
    assert_eq!(
        data.get("resource.customizations.health.datajob.dev_DataJob"),
        Some(&script)
    );
    assert_eq!(
        data.get("url").map(String::as_str),
        Some("https://argocd.example.com")
    );
    ns.cleanup().await;
}
