//! The operator binary as a user and a kubelet run it, without a cluster: flags after `run`,
//! an environment variable for every flag, plain logs off a terminal, the start-up check for
//! the CRDs (against a tiny fake API server), and a bounded shutdown with the API server gone
//! (a real process pointed at a dead port, stopped with SIGTERM). And `datajob-operator api`
//! serving HTTPS with a certificate made by openssl, checked with curl.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_datajob-operator");
/// Generous: the machine is shared; the assertion is that the process exits at all.
const EXIT_WITHIN: Duration = Duration::from_secs(90);

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("operator-binary")
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// A kubeconfig whose cluster is `server`.
fn kubeconfig(dir: &Path, server: &str) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    \
             insecure-skip-tls-verify: true\nusers:\n- name: u\n  user:\n    token: t\ncontexts:\n- \
             name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .expect("write kubeconfig");
    path
}

/// A loopback port nothing listens on.
fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn operator(kubeconfig: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(BINARY);
    cmd.args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG");
    cmd
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the operator did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `log` contains `needle`; panics with the log after `within`.
fn wait_log(log: &Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "`{needle}` not logged within {within:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());
}

#[test]
fn every_run_flag_has_an_environment_variable() {
    let out = Command::new(BINARY)
        .args(["run", "--help"])
        .output()
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let mut flags = 0;
    let blocks: Vec<&str> = help.split("\n      --").skip(1).collect();
    for block in &blocks {
        let flag = block.split_whitespace().next().unwrap_or_default();
        if flag == "help" || block.starts_with("help") {
            continue;
        }
        flags += 1;
        assert!(
            block.contains("[env: "),
            "--{flag} has no env variable:\n{block}"
        );
    }
    assert!(flags >= 12, "expected every run flag in the help:\n{help}");
    for var in [
        "DATAJOB_LEASE_NAME",
        "DATAJOB_LEASE_DURATION_SECONDS",
        "DATAJOB_EXECUTOR_IMAGE",
        "DATAJOB_SHUTDOWN_TIMEOUT_SECONDS",
    ] {
        assert!(help.contains(&format!("[env: {var}=")), "{var}:\n{help}");
    }
    assert!(
        help.contains("RUST_LOG") && help.contains("NO_COLOR"),
        "{help}"
    );
}

#[test]
fn run_flags_are_accepted_after_the_subcommand_and_before_it() {
    for args in [
        vec!["run", "--executor-image", "registry.example/x:1", "--help"],
        vec!["--executor-image", "registry.example/x:1", "--help"],
    ] {
        let out = Command::new(BINARY).args(&args).output().expect("runs");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Run flags belong to `run`, not to `crd`.
    let out = Command::new(BINARY)
        .args(["crd", "--executor-image", "x"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
}

/// Starts the operator against a dead API server, sends SIGTERM once it runs, and checks that
/// it exits; returns its log.
fn stops_on_sigterm_with_the_api_server_gone(name: &str, extra: &[&str], running: &str) -> String {
    let dir = scratch(name);
    let config = kubeconfig(&dir, &format!("https://127.0.0.1:{}", dead_port()));
    let log_path = dir.join("operator.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let mut args = vec![
        "run",
        "--executor-image",
        "registry.example/executor:1",
        "--http-addr",
        "127.0.0.1:0",
        "--shutdown-timeout-seconds",
        "3",
        "--lease-duration-seconds",
        "3",
    ];
    args.extend(extra);
    let mut child = operator(&config, &args)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start the operator");
    wait_log(&log_path, running, EXIT_WITHIN);
    sigterm(&child);
    let status = wait_exit(&mut child, EXIT_WITHIN);
    let text = std::fs::read_to_string(&log_path).expect("log");
    assert!(
        status.code().is_some(),
        "exited by itself: {status}\n{text}"
    );
    text
}

#[test]
fn sigterm_stops_a_running_controller_whose_api_server_is_gone() {
    let log = stops_on_sigterm_with_the_api_server_gone(
        "controller",
        &[],
        "starting the DataJob controller",
    );
    assert!(log.contains("shutting down"), "{log}");
    // stdout is a file: no colour codes.
    assert!(
        !log.contains('\u{1b}'),
        "ANSI escape in a non-terminal log:\n{log}"
    );
}

#[test]
fn sigterm_stops_a_candidate_waiting_for_leadership_with_the_api_server_gone() {
    let log = stops_on_sigterm_with_the_api_server_gone(
        "candidate",
        &["--leader-election"],
        "waiting for leadership",
    );
    assert!(!log.contains("acquired leadership"), "{log}");
}

/// A fake API server that answers every request with 404 (so the CRDs' API group is not
/// served); returns its URL.
fn api_server_without_crds() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                let _ = stream.read(&mut buf);
                let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;
                let _ = write!(
                    stream,
                    "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    url
}

#[test]
fn start_up_names_the_missing_crds_and_how_to_install_them() {
    let dir = scratch("nocrd");
    let config = kubeconfig(&dir, &api_server_without_crds());
    let mut child = operator(&config, &["run", "--http-addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start");
    let status = wait_exit(&mut child, EXIT_WITHIN);
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(status.code(), Some(1), "{out}");
    assert!(
        out.contains("datajobs.datajob.dev and computepools.datajob.dev are not installed"),
        "{out}"
    );
    assert!(
        out.contains("datajob-operator crd | kubectl apply --server-side -f -"),
        "{out}"
    );
}

/// Runs the operator's `--help`-free start under a pseudo-terminal (`script`), with and without
/// NO_COLOR, and reports whether its output had colour codes.
fn coloured_on_a_terminal(no_color: bool) -> bool {
    let dir = scratch(if no_color { "tty-nocolor" } else { "tty-color" });
    let config = kubeconfig(&dir, &api_server_without_crds());
    let mut cmd = Command::new("script");
    cmd.args([
        "-qec",
        &format!("{BINARY} run --http-addr 127.0.0.1:0"),
        "/dev/null",
    ])
    .env("KUBECONFIG", &config)
    .env_remove("KUBERNETES_SERVICE_HOST")
    .env_remove("RUST_LOG")
    .env_remove("NO_COLOR");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    let out = cmd.output().expect("script (util-linux) runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("not installed"), "{text}");
    text.contains('\u{1b}')
}

#[test]
fn text_logs_are_coloured_only_on_a_terminal_without_no_color() {
    assert!(coloured_on_a_terminal(false), "a terminal gets colours");
    assert!(!coloured_on_a_terminal(true), "NO_COLOR turns them off");
}

/// The flag table of docs/user-guide.md is what `run --help` says: every flag with its
/// environment variable, and nothing else.
#[test]
fn user_guide_flag_table_matches_the_binary() {
    let out = Command::new(BINARY)
        .args(["run", "--help"])
        .output()
        .expect("run --help");
    let help = String::from_utf8(out.stdout).expect("utf-8");
    let mut from_help: Vec<(String, String)> = help
        .split("\n      --")
        .skip(1)
        .filter_map(|block| {
            let flag = block.split_whitespace().next()?.to_string();
            let env = block.split("[env: ").nth(1)?.split('=').next()?.to_string();
            Some((format!("--{flag}"), env))
        })
        .collect();
    from_help.sort();
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/user-guide.md"))
        .expect("user guide");
    let mut from_guide: Vec<(String, String)> = guide
        .lines()
        .filter(|l| l.starts_with("| `--"))
        .map(|l| {
            let row = l.replace("\\|", "/");
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let flag = cells[1]
                .trim_matches('`')
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .trim_end_matches('`')
                .to_string();
            (flag, cells[2].trim_matches('`').to_string())
        })
        .collect();
    from_guide.sort();
    assert_eq!(from_guide, from_help);
}

/// A self-signed certificate for 127.0.0.1 and its key, made with openssl in `dir`.
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

/// A child process that is killed when dropped, also when the test panics.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `curl` with the certificate as its only trust anchor; the body, or None when it fails.
fn curl(ca: &Path, url: &str) -> Option<String> {
    let out = Command::new("curl")
        .args(["--silent", "--fail", "--max-time", "20", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl runs");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `datajob-operator api` with `--tls-cert/--tls-key` serves HTTPS (and only HTTPS) with that
/// certificate; a file that is not a certificate stops it with a clear error.
#[test]
fn jobs_api_serves_https_with_the_given_certificate() {
    let dir = scratch("api-tls");
    let config = kubeconfig(&dir, &format!("https://127.0.0.1:{}", dead_port()));
    let (cert, key) = self_signed(&dir);
    let port = dead_port();
    let log = dir.join("api.log");
    let api = operator(&config, &["api", "--log-format", "json", "--tls-cert"])
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .stdout(std::fs::File::create(&log).expect("log"))
        .stderr(Stdio::null())
        .spawn()
        .expect("the api starts");
    let mut api = KillOnDrop(api);
    wait_log(&log, "serving the Jobs API", EXIT_WITHIN);
    let https = format!("https://127.0.0.1:{port}");
    assert_eq!(
        curl(&cert, &format!("{https}/healthz")).as_deref(),
        Some("ok")
    );
    let document = curl(&cert, &format!("{https}/v1/openapi.json")).expect("the document");
    let document: serde_json::Value = serde_json::from_str(&document).expect("JSON");
    assert!(
        document["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{document}"
    );
    assert_eq!(
        curl(&cert, &format!("http://127.0.0.1:{port}/healthz")),
        None,
        "plain HTTP"
    );
    sigterm(&api.0);
    assert!(wait_exit(&mut api.0, EXIT_WITHIN).success());

    // A key file given as the certificate: refused at start, naming the problem.
    let out = operator(&config, &["api", "--tls-cert"])
        .arg(&key)
        .arg("--tls-key")
        .arg(&key)
        .args(["--http-addr", "127.0.0.1:0"])
        .output()
        .expect("the api runs");
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("no PEM certificate in the TLS certificate file"),
        "{text}"
    );
}
