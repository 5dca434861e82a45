//! The everyday paths of people who live in kubectl, tested with the real tools on the real
//! cluster: kubectl's resource names and the `datajob-all` category, the `kubectl-datajob`
//! plugin (exit codes, filters, describe, logs, -n/-A/--context/--kubeconfig), and the
//! README's "Using it" block, run line by line as typed.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use datajob_operator::api::{ComputePool, DataJob, JobState};
use datajob_operator::executor::LABEL_ROLE;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;

use support::{
    Operator, STEP, datajob, eventually, exit_pod, install_crds, wait_pods_running, wait_state,
};
use support::{TestNamespace, admin_client, kubectl, wait_deleted};

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-datajob");

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("the command runs")
}

fn kubectl_ok(args: &[&str]) -> String {
    let out = run(kubectl().args(args));
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// `kubectl-datajob args`; returns (exit code, stdout, stderr).
fn plugin(args: &[&str]) -> (i32, String, String) {
    let out = run(Command::new(PLUGIN).args(args));
    (
        out.status.code().expect("exited"),
        text(&out.stdout),
        text(&out.stderr),
    )
}

async fn create(client: &Client, ns: &str, job: DataJob) -> DataJob {
    Api::<DataJob>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &job)
        .await
        .unwrap_or_else(|e| panic!("create DataJob: {e}"))
}

/// A shared job with a 1 s grace period.
fn quick_job(name: &str) -> DataJob {
    datajob(name).grace_period(1).build()
}

async fn driver(client: &Client, ns: &str, job: &DataJob) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    wait_pods_running(&pods, job, 1)
        .await
        .into_iter()
        .find(|p| p.labels().get(LABEL_ROLE).map(String::as_str) == Some("driver"))
        .expect("a driver pod")
}

/// Creates a job and waits until it runs; returns it and its driver pod.
async fn running(client: &Client, ns: &str, name: &str) -> (DataJob, Pod) {
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns);
    create(client, ns, quick_job(name)).await;
    let job = wait_state(&jobs, name, JobState::Running).await;
    let pod = driver(client, ns, &job).await;
    (job, pod)
}

/// Runs a job until it is `completed` (the driver exits 0 with a result) or `failed`.
async fn finish(client: &Client, ns: &str, name: &str, succeed: bool) -> DataJob {
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), ns);
    let (_, pod) = running(client, ns, name).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    if succeed {
        exit_pod(&pods, &pod.name_any(), 0, support::MATERIALIZE_RESULT).await;
        wait_state(&jobs, name, JobState::Completed).await
    } else {
        exit_pod(
            &pods,
            &pod.name_any(),
            3,
            r#"{"reason": "QueryFailed", "message": "table 6402 not found"}"#,
        )
        .await;
        wait_state(&jobs, name, JobState::Failed).await
    }
}

/// A test's namespace with an operator watching it.
struct Env {
    client: Client,
    ns: TestNamespace,
    jobs: Api<DataJob>,
    operator: Operator,
}

async fn env(prefix: &str) -> Env {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, prefix).await;
    let operator = Operator::start(ns.name());
    Env {
        jobs: Api::namespaced(client.clone(), ns.name()),
        client,
        ns,
        operator,
    }
}

// --- kubectl and the category -----------------------------------------------------------------

#[tokio::test]
async fn kubectl_get_and_delete_datajob_by_name_and_the_category_lists_both_kinds() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "kubectl").await;
    let n = ns.name();
    let job = create(&client, n, quick_job("by-name")).await;
    let pool_name = format!("pool-{n}");
    let pool: ComputePool = serde_json::from_value(json!({
        "apiVersion": "datajob.dev/v1alpha1", "kind": "ComputePool",
        "metadata": { "name": pool_name }, "spec": { "clusterType": "shared" }
    }))
    .unwrap();
    let pools: Api<ComputePool> = Api::all(client.clone());
    pools
        .create(&PostParams::default(), &pool)
        .await
        .expect("pool");

    // The singular name is the resource, not a category: one object, by name.
    let out = kubectl_ok(&["get", "datajob", "by-name", "-n", n, "-o", "name"]);
    assert_eq!(out.trim(), "datajob.datajob.dev/by-name");
    let out = kubectl_ok(&["get", "computepool", &pool_name, "-o", "name"]);
    assert_eq!(out.trim(), format!("computepool.datajob.dev/{pool_name}"));
    // `kubectl get datajob` lists DataJobs only.
    let out = kubectl_ok(&["get", "datajob", "-n", n, "-o", "name"]);
    assert_eq!(out.trim(), "datajob.datajob.dev/by-name");
    // The category lists both kinds.
    let out = kubectl_ok(&["get", "datajob-all", "-n", n, "-o", "name"]);
    assert!(out.contains("datajob.datajob.dev/by-name"), "{out}");
    assert!(
        out.contains(&format!("computepool.datajob.dev/{pool_name}")),
        "{out}"
    );
    // Delete by the singular name.
    let out = kubectl_ok(&["delete", "datajob", "by-name", "-n", n, "--wait=false"]);
    assert!(out.contains("deleted"), "{out}");
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), n);
    wait_deleted(&jobs, &job.name_any(), STEP).await;
    let out = kubectl_ok(&["delete", "computepool", &pool_name]);
    assert!(out.contains("deleted"), "{out}");
    ns.cleanup().await;
}

// --- the plugin -------------------------------------------------------------------------------

#[tokio::test]
async fn plugin_cancel_wait_exit_codes() {
    let Env {
        client,
        ns,
        jobs,
        operator: _operator,
    } = env("plugin-cancel").await;
    let n = ns.name();

    // Running -> cancelled: exit 0, the reason recorded.
    create(&client, n, quick_job("to-cancel")).await;
    wait_state(&jobs, "to-cancel", JobState::Running).await;
    let (code, out, err) = plugin(&[
        "-n",
        n,
        "cancel",
        "to-cancel",
        "--reason",
        "wrong dataset",
        "--wait",
        "--timeout",
        "3m",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("datajob.datajob.dev/to-cancel cancelled"),
        "{out}"
    );
    let job = jobs.get("to-cancel").await.expect("job");
    let status = job.status.expect("status");
    assert_eq!(status.state, Some(JobState::Cancelled));
    assert_eq!(
        status.cancellation.and_then(|c| c.reason).as_deref(),
        Some("wrong dataset")
    );
    // Cancelling a cancelled job again: still 0.
    let (code, _, err) = plugin(&["-n", n, "cancel", "to-cancel", "--wait"]);
    assert_eq!(code, 0, "{err}");

    // A completed job cannot be cancelled: exit 3, with and without --wait, and nothing sent.
    let done = finish(&client, n, "done", true).await;
    let (code, _, err) = plugin(&["-n", n, "cancel", "done", "--wait"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("done is completed, not cancelled"), "{err}");
    let (code, _, _) = plugin(&["-n", n, "cancel", "done"]);
    assert_eq!(code, 3);
    let after = jobs.get("done").await.expect("job");
    assert!(!after.spec.cancel, "no request is sent for a finished job");
    assert_eq!(after.metadata.generation, done.metadata.generation);

    // Several names: one cancelled, one completed -> 3.
    create(&client, n, quick_job("second")).await;
    wait_state(&jobs, "second", JobState::Running).await;
    let (code, out, err) = plugin(&["-n", n, "cancel", "second", "done", "--wait"]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.contains("second cancelled"), "{out}");

    // Missing job: 1.
    let (code, _, err) = plugin(&["-n", n, "cancel", "no-such-job", "--wait"]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("datajob no-such-job not found in namespace"),
        "{err}"
    );
    ns.cleanup().await;
}

#[tokio::test]
async fn plugin_cancel_wait_times_out_with_exit_4_when_nothing_finalizes() {
    let client = admin_client().await;
    install_crds(&client).await;
    // No operator here: the request is recorded but nobody finalizes it.
    let ns = TestNamespace::new(&client, "plugin-timeout").await;
    let n = ns.name();
    create(&client, n, quick_job("stuck")).await;
    let (code, out, err) = plugin(&["-n", n, "cancel", "stuck", "--wait", "--timeout", "2s"]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(out.contains("cancellation requested"), "{out}");
    assert!(err.contains("timed out waiting for datajob stuck"), "{err}");
    let job: DataJob = Api::namespaced(client.clone(), n)
        .get("stuck")
        .await
        .expect("job");
    assert!(job.spec.cancel);
    // A usage error is 2.
    let (code, _, _) = plugin(&["-n", n, "cancel"]);
    assert_eq!(code, 2);
    let (code, _, _) = plugin(&["-n", n, "get", "--state", "done"]);
    assert_eq!(code, 2);
    ns.cleanup().await;
}

/// A kubeconfig copy with an extra context `other` whose namespace is `namespace`.
fn kubeconfig_with_context(dir: &Path, namespace: &str) -> PathBuf {
    let source = std::env::var("KUBECONFIG").expect("KUBECONFIG");
    let copy = dir.join(format!("kubeconfig-{namespace}"));
    std::fs::copy(&source, &copy).expect("copy kubeconfig");
    let config = copy.to_str().expect("utf-8 path");
    let current = kubectl_ok(&["--kubeconfig", config, "config", "current-context"]);
    let cluster = kubectl_ok(&[
        "--kubeconfig",
        config,
        "config",
        "view",
        "-o",
        &format!(
            "jsonpath={{.contexts[?(@.name==\"{}\")].context.cluster}}",
            current.trim()
        ),
    ]);
    let user = kubectl_ok(&[
        "--kubeconfig",
        config,
        "config",
        "view",
        "-o",
        &format!(
            "jsonpath={{.contexts[?(@.name==\"{}\")].context.user}}",
            current.trim()
        ),
    ]);
    kubectl_ok(&[
        "--kubeconfig",
        config,
        "config",
        "set-context",
        "other",
        "--cluster",
        &cluster,
        "--user",
        &user,
        "--namespace",
        namespace,
    ]);
    copy
}

#[tokio::test]
async fn plugin_get_list_filters_namespaces_contexts_and_kubeconfigs() {
    let Env {
        client,
        ns,
        jobs,
        operator: _operator,
    } = env("plugin-get").await;
    let Env {
        ns: other,
        operator: _other_operator,
        ..
    } = env("plugin-get2").await;
    let n = ns.name();
    create(&client, n, quick_job("runs")).await;
    wait_state(&jobs, "runs", JobState::Running).await;
    finish(&client, n, "ends-well", true).await;
    finish(&client, n, "ends-badly", false).await;
    create(&client, other.name(), quick_job("elsewhere")).await;
    wait_state(
        &Api::namespaced(client.clone(), other.name()),
        "elsewhere",
        JobState::Running,
    )
    .await;

    let names = |args: &[&str]| -> Vec<String> {
        let (code, out, err) = plugin(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        let mut names: Vec<String> = out.lines().map(str::to_string).collect();
        names.sort();
        names
    };
    let dj = |name: &str| format!("datajob.datajob.dev/{name}");
    assert_eq!(
        names(&["-n", n, "get", "-o", "name"]),
        [dj("ends-badly"), dj("ends-well"), dj("runs")]
    );
    assert_eq!(
        names(&["-n", n, "list", "--state", "running", "-o", "name"]),
        [dj("runs")]
    );
    assert_eq!(
        names(&["-n", n, "list", "--state", "finished", "-o", "name"]),
        [dj("ends-badly"), dj("ends-well")]
    );
    assert_eq!(
        names(&[
            "-n",
            n,
            "list",
            "-s",
            "failed",
            "-s",
            "completed",
            "-o",
            "name"
        ]),
        [dj("ends-badly"), dj("ends-well")]
    );
    assert_eq!(
        names(&["-n", n, "get", "--state", "active", "-o", "name"]),
        [dj("runs")]
    );
    // A table with the state column; the name filter.
    let (code, out, _) = plugin(&["-n", n, "get", "runs", "ends-well"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("STATE"),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("runs ") && l.contains(" running ")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("ends-well ") && l.contains(" completed ")),
        "{out}"
    );
    // -A: every namespace, with a namespace column.
    let (code, out, _) = plugin(&["-A", "get", "--state", "running"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("NAMESPACE"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(n) && l.contains(" runs ")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with(other.name()) && l.contains(" elsewhere ")),
        "{out}"
    );
    // -o json is a List of DataJobs.
    let (_, out, _) = plugin(&["-n", n, "get", "--state", "completed", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        list["items"][0]["status"]["result"]["snapshotId"],
        739881302291276700i64
    );

    // --kubeconfig and --context: a context whose namespace is the other namespace.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("everyday");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = kubeconfig_with_context(&dir, other.name());
    let config = config.to_str().expect("utf-8");
    assert_eq!(
        names(&[
            "--kubeconfig",
            config,
            "--context",
            "other",
            "get",
            "-o",
            "name"
        ]),
        [dj("elsewhere")]
    );
    // Without --context, the copy's current context and its namespace (none: default).
    let (code, _, err) = plugin(&["--kubeconfig", config, "--context", "missing", "get"]);
    assert_eq!(code, 1, "{err}");
    // alice holds no role: forbidden is an error, exit 1.
    let alice = std::env::var("DATAJOB_KUBECONFIG_ALICE").expect("alice's kubeconfig");
    let (code, _, err) = plugin(&["--kubeconfig", &alice, "-n", n, "get"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("forbidden"), "{err}");
    let (code, _, err) = plugin(&["--kubeconfig", &alice, "-n", n, "cancel", "runs"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("forbidden"), "{err}");
    ns.cleanup().await;
    other.cleanup().await;
}

#[tokio::test]
async fn plugin_describe_shows_timeline_conditions_pods_result_and_failures() {
    let Env {
        client,
        ns,
        operator: _operator,
        ..
    } = env("plugin-describe").await;
    let n = ns.name();

    let (_, pod) = running(&client, n, "live").await;
    let (code, out, err) = plugin(&["-n", n, "describe", "live"]);
    assert_eq!(code, 0, "{err}");
    for needle in [
        "State:        running",
        "Timeline:",
        "created",
        "Normal Running: pending -> running",
        "Conditions:",
        "Ready                   True",
        "Pods:",
        "driver",
    ] {
        assert!(out.contains(needle), "missing `{needle}`:\n{out}");
    }
    assert!(out.contains(&pod.name_any()), "{out}");

    finish(&client, n, "good", true).await;
    let (_, out, _) = plugin(&["-n", n, "describe", "good"]);
    assert!(
        out.contains("Result:") && out.contains("739881302291276700"),
        "{out}"
    );
    assert!(out.contains("finished: completed"), "{out}");

    finish(&client, n, "bad", false).await;
    // The state change's event follows the status write that `finish` waited for.
    let out = eventually(
        "the failure's Warning event in describe",
        STEP,
        async || {
            let (_, out, _) = plugin(&["-n", n, "describe", "bad"]);
            out.contains("Warning").then_some(out)
        },
    )
    .await;
    assert!(out.contains("Failures:"), "{out}");
    assert!(out.contains("table 6402 not found"), "{out}");

    let (code, _, err) = plugin(&["-n", n, "describe", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    ns.cleanup().await;
}

#[tokio::test]
async fn plugin_logs_finds_the_pods_of_a_role() {
    let Env {
        client,
        ns,
        operator: _operator,
        ..
    } = env("plugin-logs").await;
    let n = ns.name();
    let (_, pod) = running(&client, n, "chatty").await;

    // A shared job has a driver only.
    let (code, _, err) = plugin(&["-n", n, "logs", "chatty", "--role", "worker"]);
    assert_eq!(code, 1);
    assert!(err.contains("datajob chatty has no worker pods"), "{err}");
    // kwok's pods have no kubelet to serve logs: the plugin names the pod it asked and fails.
    let (code, _, err) = plugin(&[
        "-n", n, "logs", "chatty", "--role", "driver", "--tail", "10",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("cannot read the logs of pod {}", pod.name_any())),
        "{err}"
    );
    let (code, _, err) = plugin(&["-n", n, "logs", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("not found"), "{err}");
    ns.cleanup().await;
}

#[tokio::test]
async fn kubectl_finds_the_plugin_on_path() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "plugin-path").await;
    let n = ns.name();
    create(&client, n, quick_job("seen-by-kubectl")).await;
    let plugin_dir = Path::new(PLUGIN).parent().expect("dir");
    let path = std::env::join_paths(std::iter::once(plugin_dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    // kubectl accepts no flag before a plugin's name, so no --request-timeout here.
    let kubectl_path = std::env::var("DATAJOB_KUBECTL").unwrap_or_else(|_| "kubectl".into());
    let bare = || {
        let mut c = Command::new(&kubectl_path);
        c.env("PATH", &path);
        c
    };
    let out = run(bare().args(["datajob", "-n", n, "get", "-o", "name"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "datajob.datajob.dev/seen-by-kubectl"
    );
    let out = run(bare().args(["plugin", "list"]));
    assert!(
        text(&out.stdout).contains("kubectl-datajob"),
        "{}",
        text(&out.stdout)
    );
    ns.cleanup().await;
}

// --- the README -------------------------------------------------------------------------------

/// The commands of the README's "Using it" block, without comments.
fn readme_commands() -> Vec<String> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section = readme
        .split("## Using it")
        .nth(1)
        .expect("a `## Using it` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block in `Using it`");
    let mut commands: Vec<String> = Vec::new();
    for line in block.lines() {
        let line = match line.find(" #") {
            Some(i) if !line[..i].contains('\'') && !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match commands.last_mut() {
            Some(last) if last.ends_with('\\') => {
                last.pop();
                last.push(' ');
                last.push_str(line);
            }
            _ => commands.push(line.to_string()),
        }
    }
    commands
}

#[tokio::test]
async fn readme_using_it_block_works_as_typed() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "readme").await;
    let n = ns.name();
    // The reader's kubeconfig: the admin's, with the test namespace as the context's
    // namespace (so unqualified commands act there, as in a reader's own namespace).
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("readme");
    std::fs::create_dir_all(&dir).expect("dir");
    let config = dir.join(format!("kubeconfig-{n}"));
    std::fs::copy(std::env::var("KUBECONFIG").expect("KUBECONFIG"), &config).expect("copy");
    let out = run(kubectl().env("KUBECONFIG", &config).args([
        "config",
        "set-context",
        "--current",
        "--namespace",
        n,
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    let root = env!("CARGO_MANIFEST_DIR");
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    let mut background = Vec::new();
    let commands = readme_commands();
    assert!(commands.len() >= 6, "{commands:?}");
    for command in &commands {
        eprintln!("$ {command}");
        let shell = |cmd: &str| {
            let mut c = Command::new("bash");
            c.args(["-c", cmd])
                .current_dir(root)
                .env("KUBECONFIG", &config)
                .env("PATH", &path)
                // Only this namespace, on a free port: other tests share the cluster and the
                // machine (both flags' environment variables, as a deployment would set them).
                .env("DATAJOB_NAMESPACE", n)
                .env("DATAJOB_HTTP_ADDR", "127.0.0.1:0");
            c
        };
        if command == "cargo build" {
            // `cargo test` just built the binaries this command builds (and holds the build
            // lock while tests run): check they are there instead.
            for bin in ["datajob-operator", "kubectl-datajob"] {
                assert!(
                    Path::new(root).join("target/debug").join(bin).is_file(),
                    "{bin}"
                );
            }
            continue;
        }
        if let Some(value) = command.strip_prefix("export PATH=") {
            let out = run(&mut shell(&format!("printf %s {value}")));
            path = String::from_utf8(out.stdout).expect("PATH").into();
            continue;
        }
        if let Some(cmd) = command.strip_suffix('&') {
            let log = std::fs::File::create(dir.join(format!("background-{n}.log"))).expect("log");
            let child = shell(cmd.trim())
                .stdout(log.try_clone().expect("log"))
                .stderr(log)
                .spawn()
                .expect("background command");
            background.push(child);
            continue;
        }
        if command.contains(" -w") {
            // A watch: the reader stops it (Ctrl-C) once the job runs.
            let out_path = dir.join(format!("watch-{n}.log"));
            let out = std::fs::File::create(&out_path).expect("log");
            let mut child = shell(command)
                .stdout(out)
                .stderr(Stdio::inherit())
                .spawn()
                .expect("watch");
            let deadline = Instant::now() + STEP;
            loop {
                let seen = std::fs::read_to_string(&out_path).unwrap_or_default();
                if seen.contains(" running ") {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "`{command}` never showed a running job:\n{seen}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let _ = child.wait();
            continue;
        }
        let out = run(&mut shell(command));
        assert!(
            out.status.success(),
            "`{command}` failed ({}):\n{}\n{}",
            out.status,
            text(&out.stdout),
            text(&out.stderr)
        );
        eprint!("{}", text(&out.stdout));
    }
    for mut child in background {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    let jobs: Api<DataJob> = Api::namespaced(client.clone(), n);
    let job = jobs
        .get("materialize-continuous-presence")
        .await
        .expect("the example job");
    assert_eq!(job.status.and_then(|s| s.state), Some(JobState::Cancelled));
    let _ = jobs
        .delete("materialize-continuous-presence", &DeleteParams::default())
        .await;
    ns.cleanup().await;
}

// --- metrics of a real operator process -------------------------------------------------------

/// GET `path` from `addr`; the body, or None when nothing answers yet.
fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// Scrapes `/metrics` until `want` holds for the text; panics with the last scrape.
fn scrape_until(addr: &str, what: &str, want: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + STEP;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(text) = http_get(addr, "/metrics") {
            if want(&text) {
                return text;
            }
            last = text;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    panic!("/metrics never showed {what}; last scrape:\n{last}");
}

#[tokio::test]
async fn a_running_operator_exports_leader_jobs_by_state_and_build_info() {
    let client = admin_client().await;
    install_crds(&client).await;
    let ns = TestNamespace::new(&client, "metrics").await;
    let n = ns.name();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("metrics-{n}.log"));
    let log = std::fs::File::create(&log).expect("log");
    let mut operator = Command::new(env!("CARGO_BIN_EXE_datajob-operator"))
        .args([
            "run",
            "--namespace",
            n,
            "--http-addr",
            &addr,
            "--executor-image",
            "registry.example/datajob-executor:e2e",
            "--leader-election",
            "--lease-namespace",
            n,
            "--lease-name",
            "metrics-test",
        ])
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("operator");
    let text = scrape_until(&addr, "leadership", |t| {
        t.contains("datajob_operator_leader 1\n")
    });
    let build = format!(
        "datajob_operator_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build), "{text}");
    assert!(text.ends_with("# EOF\n"), "OpenMetrics text: {text}");
    let head = http_get(&addr, "/metrics").expect("scrape");
    assert!(
        head.to_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );

    running(&client, n, "counted").await;
    scrape_until(&addr, "one running job", |t| {
        t.contains("datajob_operator_jobs{state=\"running\"} 1\n")
            && t.contains("datajob_operator_jobs{state=\"pending\"} 0\n")
    });
    let _ = Command::new("kill")
        .args(["-TERM", &operator.id().to_string()])
        .status();
    let _ = operator.wait();
    ns.cleanup().await;
}
