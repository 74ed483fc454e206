//! The CRD YAML in `crds/` and in the Helm chart is generated from the Rust types; this fails when
//! someone changed the types without running `cargo run -p tern-operator -- crdgen`.

use std::path::Path;

#[test]
fn committed_crds_match_the_rust_types() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let expected = tern_operator::crdgen::render().unwrap();
    for dir in tern_operator::crdgen::directories(&root) {
        for (name, text) in &expected {
            let path = dir.join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run `cargo run -p tern-operator -- crdgen`",
                    path.display()
                )
            });
            assert!(
                committed == *text,
                "{} is stale; run `cargo run -p tern-operator -- crdgen`",
                path.display()
            );
        }
        let extra: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|f| !expected.iter().any(|(n, _)| n == f))
            .collect();
        assert!(
            extra.is_empty(),
            "{} holds files crdgen does not write: {extra:?}",
            dir.display()
        );
    }
}
