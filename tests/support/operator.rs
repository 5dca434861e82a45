//! The operator binary as a child process of the test or benchmark: started with the common
//! flags, checked to be alive, stopped by its process id (SIGKILL, or SIGTERM and a bounded
//! wait), and killed when dropped, also when the test panics.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start the operator: which binary, the arguments besides the common ones, its log
/// level, and where its output goes.
#[derive(Clone, Debug)]
pub struct Launch {
    pub binary: PathBuf,
    pub args: Vec<String>,
    /// `RUST_LOG` of the process.
    pub rust_log: String,
    /// `Some(name)`: output to `<CARGO_TARGET_TMPDIR>/e2e-logs/<name>.<start>.log`; `None`:
    /// discarded.
    pub log_name: Option<String>,
}

impl Launch {
    /// The binary cargo built for this test, logging at debug level to a file named
    /// `log_name`.
    pub fn test_binary(log_name: &str, args: &[&str]) -> Self {
        Launch {
            binary: PathBuf::from(env!("CARGO_BIN_EXE_datajob-operator")),
            args: args.iter().map(|a| a.to_string()).collect(),
            rust_log: "info,datajob_operator=debug".to_string(),
            log_name: Some(log_name.to_string()),
        }
    }

    fn log_path(&self, start: u32) -> Option<PathBuf> {
        let name = self.log_name.as_ref()?;
        Some(
            PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
                .join("e2e-logs")
                .join(format!("{name}.{start}.log")),
        )
    }

    fn spawn(&self, start: u32) -> Child {
        let (stdout, stderr) = match self.log_path(start) {
            Some(path) => {
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).expect("log folder");
                }
                let log = File::create(&path).expect("operator log file");
                let err = log.try_clone().expect("operator log file");
                (Stdio::from(log), Stdio::from(err))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        Command::new(&self.binary)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--executor-image",
                "registry.example/datajob-executor:e2e",
                "--log-format",
                "json",
            ])
            .args(&self.args)
            .env("RUST_LOG", &self.rust_log)
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the operator {} (is it built?): {e}",
                    self.binary.display()
                )
            })
    }
}

/// Whether the operator's JSON log at `path` has a line whose message starts with `message`.
pub fn log_has_message(path: &Path, message: &str) -> bool {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
}

/// A running operator process; killed (SIGKILL) when dropped.
pub struct Operator {
    child: Child,
    launch: Launch,
    starts: u32,
}

impl Operator {
    /// Starts the test's operator binary watching `namespace`.
    pub fn start(namespace: &str) -> Self {
        Operator::start_with(namespace, &["--namespace", namespace])
    }

    /// Starts the test's operator binary with `args` (besides the common ones), logging to
    /// `<CARGO_TARGET_TMPDIR>/e2e-logs/<log_name>.<n>.log`.
    pub fn start_with(log_name: &str, args: &[&str]) -> Self {
        Operator::launch(Launch::test_binary(log_name, args))
    }

    /// Starts the operator as `launch` says.
    pub fn launch(launch: Launch) -> Self {
        let mut operator = Operator {
            child: launch.spawn(0),
            launch,
            starts: 1,
        };
        operator.check_alive();
        operator
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The log file of the current process (panics if its output is discarded).
    pub fn log(&self) -> PathBuf {
        self.launch
            .log_path(self.starts - 1)
            .expect("this operator logs to a file")
    }

    /// Whether the current process logged a line whose message starts with `message`.
    pub fn logged(&self, message: &str) -> bool {
        log_has_message(&self.log(), message)
    }

    /// Kills the process with SIGKILL (no clean shutdown) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM (by pid, with the system's `kill`) and waits up to `timeout` for the
    /// process to exit; returns its exit status.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "could not send SIGTERM");
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the operator") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not exit within {timeout:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts a new process after [`Operator::kill`].
    pub fn restart(&mut self) {
        self.kill();
        self.child = self.launch.spawn(self.starts);
        self.starts += 1;
        self.check_alive();
    }

    /// Peak resident memory of the process so far (`VmHWM` in `/proc`), in KiB; 0 if unknown.
    pub fn peak_rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// The exit status, once the process has exited (None while it runs).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("wait for the operator")
    }

    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let log = match self.launch.log_path(self.starts - 1) {
                Some(path) => format!("see {}", path.display()),
                None => "its output was discarded".to_string(),
            };
            panic!("the operator exited at once ({status}); {log}");
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}
