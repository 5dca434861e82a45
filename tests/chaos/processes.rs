//! The processes the chaos run controls: operator replicas (its own children) and the
//! cluster's API server and etcd (by the pids hack/cluster.sh recorded). Signals are sent by
//! pid with the system's `kill`; nothing is ever stopped by name.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::operator::log_has_message;

/// Sends `signal` (e.g. "-STOP") to `pid`.
pub fn signal(pid: u32, signal: &str) {
    let sent = Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success(), "could not send {signal} to {pid}");
}

/// Whether a process (not ours) still exists.
fn exists(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2).map(str::to_string))
        .is_some_and(|state| state != "Z" && state != "X")
}

/// The pid hack/cluster.sh recorded for `component`.
pub fn cluster_pid(state: &Path, component: &str) -> u32 {
    let path = state.join("pids").join(format!("{component}.pid"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .parse()
        .expect("a pid")
}

/// Stops the API server (SIGTERM, by its recorded pid) and starts it again with `up` (the
/// cluster script's `up`, which starts exactly the components that are not running).
pub async fn restart_api_server(state: &Path, up: &str) {
    let pid = cluster_pid(state, "kube-apiserver");
    signal(pid, "-TERM");
    while exists(pid) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = tokio::process::Command::new("bash")
        .args(["-c", up])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .expect("bash runs");
    assert!(status.success(), "`{up}` failed to restart the API server");
}

/// Pauses etcd (SIGSTOP by its recorded pid) for `pause`, then resumes it.
pub async fn pause_etcd(state: &Path, pause: Duration) {
    let pid = cluster_pid(state, "etcd");
    signal(pid, "-STOP");
    tokio::time::sleep(pause).await;
    signal(pid, "-CONT");
}

/// One operator process.
pub struct Replica {
    /// Its identity in the Lease and its user agent.
    pub instance: String,
    /// How often its process was restarted.
    pub restarts: u32,
    child: Child,
    log: PathBuf,
}

impl Replica {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether its log has a line whose message starts with `message`.
    pub fn logged(&self, message: &str) -> bool {
        log_has_message(&self.log, message)
    }

    /// Lines of its log containing `text`.
    pub fn count_in_log(&self, text: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(text))
            .count()
    }

    /// The exit status once it exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL, and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts operator replicas with leader election, each with a new identity.
pub struct Operators {
    binary: PathBuf,
    namespace: String,
    lease: String,
    lease_seconds: u64,
    logs: PathBuf,
    started: u32,
    /// Logs of replicas that are gone, for the fenced-write count.
    pub finished: Vec<Replica>,
}

impl Operators {
    /// Replicas of `binary` watching `namespace`, electing on the Lease `lease` there.
    pub fn new(
        binary: PathBuf,
        namespace: &str,
        lease: &str,
        lease_seconds: u64,
        logs: PathBuf,
    ) -> Self {
        std::fs::create_dir_all(&logs).expect("log folder");
        Operators {
            binary,
            namespace: namespace.to_string(),
            lease: lease.to_string(),
            lease_seconds,
            logs,
            started: 0,
            finished: Vec::new(),
        }
    }

    /// Starts a new replica (a new pod, with a new identity).
    pub fn start(&mut self) -> Replica {
        let instance = format!("op-{}", self.started);
        self.started += 1;
        self.start_as(instance, 0)
    }

    /// Starts `replica`'s process again with the same identity, as a kubelet restarts the
    /// container of a pod (restartPolicy Always).
    pub fn restart(&mut self, replica: &Replica) -> Replica {
        self.start_as(replica.instance.clone(), replica.restarts + 1)
    }

    fn start_as(&mut self, instance: String, restarts: u32) -> Replica {
        let log = self.logs.join(format!("{instance}.{restarts}.log"));
        let out = File::create(&log).expect("operator log");
        let err = out.try_clone().expect("operator log");
        let child = Command::new(&self.binary)
            .args([
                "--namespace",
                &self.namespace,
                "--http-addr",
                "127.0.0.1:0",
                "--executor-image",
                "registry.example/datajob-executor:chaos",
                "--log-format",
                "json",
                "--leader-election",
                "--lease-namespace",
                &self.namespace,
                "--lease-name",
                &self.lease,
                "--lease-duration-seconds",
                &self.lease_seconds.to_string(),
                "--instance",
                &instance,
            ])
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the operator binary starts");
        let mut replica = Replica {
            instance,
            restarts,
            child,
            log,
        };
        std::thread::sleep(Duration::from_millis(200));
        if let Some(status) = replica.exited() {
            panic!(
                "operator {} exited at once ({status}); see {}",
                replica.instance,
                replica.log.display()
            );
        }
        replica
    }
}
