//! `crds/` is the committed output of `datajob-operator crd`; this fails when they drift.

#[test]
fn committed_crds_match_the_rust_types() {
    let generated = datajob_operator::api::crds_yaml().expect("CRDs render");
    let committed = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/datajob-operator.yaml"
    ))
    .expect("crds/datajob-operator.yaml is readable");
    assert!(
        generated == committed,
        "crds/datajob-operator.yaml is stale; regenerate it with \
         `cargo run -q -- crd > crds/datajob-operator.yaml`"
    );
}
