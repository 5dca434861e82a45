//! The command line both benchmarks take: `--sizes`, `--operator`, and their own options.

/// The value after the last `name` on the command line (hack/bench.sh passes its defaults
/// first, so what the user adds wins).
pub fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .rposition(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// `--sizes 100,1000` (else `default`).
pub fn sizes(default: &str) -> Vec<usize> {
    arg("--sizes")
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|s| s.trim().parse().expect("--sizes takes numbers"))
        .collect()
}

/// `--operator PATH`, else the release build of this tree.
pub fn operator() -> String {
    arg("--operator").unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/release/datajob-operator"
        )
        .to_string()
    })
}
