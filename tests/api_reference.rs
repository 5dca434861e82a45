//! docs/api-reference.md is generated from the CRDs: it must be what the generator prints now.

#[test]
fn api_reference_matches_the_crds() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api-reference.md");
    let checked_in = std::fs::read_to_string(path).expect("docs/api-reference.md exists");
    assert!(
        checked_in == datajob_operator::reference::markdown(),
        "docs/api-reference.md is stale; regenerate it with \
         `cargo run -q -- api-reference > docs/api-reference.md`"
    );
}

#[test]
fn api_reference_documents_every_field_and_rule() {
    let doc = datajob_operator::reference::markdown();
    for needle in [
        "| `spec.cancel` | boolean |",
        "| `spec.input.nql` | string | yes |",
        "| `status.state` |",
        "| `status.conditions[].observedGeneration` |",
        "cancellation cannot be withdrawn; delete the DataJob instead",
        "| categories | `datajob-all` |",
        "## ComputePool",
        "| `spec.maxConcurrentJobs` | int32 |",
    ] {
        assert!(doc.contains(needle), "missing `{needle}` in:\n{doc}");
    }
}
