//! The image archives of `hack/image.sh`, inspected with the system's `tar` (not with the code
//! that wrote them): config (user, entrypoint, labels), tag, and the files of the one layer.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The archive of image `var` (`DATAJOB_OPERATOR` or `DATAJOB_EXECUTOR`) from the environment,
/// else from `target/images/`.
fn archive(var: &str, name: &str) -> (PathBuf, String) {
    let version = env!("CARGO_PKG_VERSION");
    let path = std::env::var(format!("{var}_ARCHIVE"))
        .ok()
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/images")
                .join(format!("{name}-{version}.oci.tar"))
        });
    assert!(
        path.is_file(),
        "{} is missing: build the images with hack/image.sh (hack/real-node.sh up does)",
        path.display()
    );
    let reference = std::env::var(format!("{var}_IMAGE"))
        .unwrap_or_else(|_| format!("ghcr.io/datajob-dev/{name}:{version}"));
    (path, reference)
}

fn tar(args: &[&str]) -> String {
    let out = Command::new("tar").args(args).output().expect("run tar");
    assert!(
        out.status.success(),
        "tar {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn blob(root: &Path, digest: &Value) -> PathBuf {
    let digest = digest.as_str().expect("digest string");
    root.join("blobs/sha256")
        .join(digest.strip_prefix("sha256:").expect("sha256 digest"))
}

/// Whether an ELF file asks for a dynamic loader (has a PT_INTERP program header).
fn has_interpreter(elf: &[u8]) -> bool {
    assert_eq!(&elf[..4], b"\x7fELF", "an ELF binary");
    assert_eq!(elf[4], 2, "64-bit");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().expect("8 bytes")) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let at = phoff + i * phentsize;
        u32::from_le_bytes(elf[at..at + 4].try_into().expect("4 bytes")) == 3
    })
}

fn inspect(var: &str, name: &str) {
    let (path, reference) = archive(var, name);
    let version = env!("CARGO_PKG_VERSION");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("image-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("rootfs")).expect("folder");
    tar(&[
        "-xf",
        &path.display().to_string(),
        "-C",
        &dir.display().to_string(),
    ]);

    assert_eq!(
        read_json(&dir.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = read_json(&dir.join("index.json"));
    let manifests = index["manifests"].as_array().expect("manifests");
    assert_eq!(manifests.len(), 1, "one image per archive");
    let annotations = &manifests[0]["annotations"];
    assert_eq!(annotations["io.containerd.image.name"], reference.as_str());
    assert_eq!(
        annotations["org.opencontainers.image.ref.name"], version,
        "tagged with the crate version"
    );
    assert!(!reference.ends_with(":latest"));

    let manifest = read_json(&blob(&dir, &manifests[0]["digest"]));
    let config = read_json(&blob(&dir, &manifest["config"]["digest"]));
    let image = &config["config"];
    assert_eq!(image["User"], "65532:65532", "non-root");
    let entrypoint = format!("/usr/local/bin/{name}");
    assert_eq!(image["Entrypoint"], serde_json::json!([entrypoint]));
    assert!(image["Cmd"].is_null(), "no shell command");
    let labels = &image["Labels"];
    assert_eq!(labels["org.opencontainers.image.version"], version);
    assert_eq!(labels["org.opencontainers.image.title"], name);
    for key in ["source", "revision", "created", "licenses", "description"] {
        let value = labels[format!("org.opencontainers.image.{key}")]
            .as_str()
            .unwrap_or("");
        assert!(!value.is_empty(), "label org.opencontainers.image.{key}");
    }
    let revision = labels["org.opencontainers.image.revision"]
        .as_str()
        .unwrap();
    assert!(
        revision.len() >= 40 && revision[..40].chars().all(|c| c.is_ascii_hexdigit()),
        "revision is a commit: {revision}"
    );
    assert_eq!(
        config["created"], labels["org.opencontainers.image.created"],
        "created is the commit's time"
    );

    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1, "one layer");
    let layer = blob(&dir, &layers[0]["digest"]).display().to_string();
    let listing = tar(&["-tvzf", &layer]);
    let mut files: Vec<&str> = listing
        .lines()
        .map(|l| l.split_whitespace().last().expect("name"))
        .collect();
    files.sort();
    let binary = format!("usr/local/bin/{name}");
    assert_eq!(
        files,
        [
            "etc/",
            "etc/group",
            "etc/passwd",
            "tmp/",
            "usr/",
            "usr/local/",
            "usr/local/bin/",
            binary.as_str(),
        ],
        "the binary and only what it needs (no shell, no libraries):\n{listing}"
    );
    for line in listing.lines() {
        assert!(
            line.contains(" root/root ") || line.contains(" 0/0 "),
            "root-owned: {line}"
        );
    }
    tar(&[
        "-xzf",
        &layer,
        "-C",
        &dir.join("rootfs").display().to_string(),
    ]);
    let elf = std::fs::read(dir.join("rootfs").join(&binary)).expect("the binary");
    assert!(
        !has_interpreter(&elf),
        "{name} is statically linked (no dynamic loader in the image)"
    );
    let passwd = std::fs::read_to_string(dir.join("rootfs/etc/passwd")).expect("passwd");
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    println!(
        "{reference}: {}, layer {} bytes, binary {} bytes",
        manifests[0]["digest"].as_str().unwrap_or(""),
        layers[0]["size"],
        elf.len()
    );
}

#[test]
fn the_operator_image_is_minimal_non_root_labelled_and_tagged_with_the_crate_version() {
    inspect("DATAJOB_OPERATOR", "datajob-operator");
}

#[test]
fn the_executor_image_is_minimal_non_root_labelled_and_tagged_with_the_crate_version() {
    inspect("DATAJOB_EXECUTOR", "datajob-executor");
}
