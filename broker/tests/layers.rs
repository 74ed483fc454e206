//! The broker's modules form layers: each may use only modules of lower layers, so that no two
//! modules depend on each other and a change to a lower layer never has to thread through a
//! higher one. This test reads the source and checks every `crate::…` path against the layers
//! written in `src/lib.rs`'s documentation, which this list mirrors.

#![allow(clippy::expect_used, reason = "test code: a panic is a test failure")]

use std::collections::BTreeMap;
use std::path::Path;

/// From the top down; a module may use the modules of any later entry, and of its own entry only
/// where listed in `SAME_LAYER`.
const LAYERS: &[&[&str]] = &[
    &["server"],
    &["listener", "http", "client"],
    &["connection"],
    &["sys"],
    &["broker"],
    &["router", "cluster", "backpressure", "auth"],
    &["session", "hook"],
    &["storage"],
    &["control", "message", "receipt"],
    &[
        "identity", "topic", "codec", "config", "stats", "limits", "reload",
    ],
];

/// Uses within one layer that keep the graph acyclic: the leaf modules build on the codec's types.
const SAME_LAYER: &[(&str, &str)] = &[
    ("identity", "codec"),
    ("config", "codec"),
    ("stats", "codec"),
];

/// Modules of the binary, not the library.
const BINARY_ONLY: &[&str] = &["main", "lib", "drain", "logging", "passwd"];

/// The layer's number, from 1 at the top as `src/lib.rs` counts them.
fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|layer| layer.contains(&module))
        .map(|index| index + 1)
}

/// `crate::x` paths in a file, outside comments and the test module at its end.
fn crate_uses(text: &str) -> Vec<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut uses = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or_default();
                for part in inner.split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        uses.push(name);
                    }
                }
            } else {
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                uses.push(name);
            }
        }
    }
    uses
}

fn visit(dir: &Path, found: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("the source directory is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "tests") {
                visit(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            found.push(path);
        }
    }
}

#[test]
fn every_module_uses_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    let mut violations = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).expect("under src");
        let module = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .map(|m| m.trim_end_matches(".rs").to_owned())
            .expect("a module name");
        if BINARY_ONLY.contains(&module.as_str()) {
            continue;
        }
        let Some(own) = layer_of(&module) else {
            violations.insert(module.clone(), "is in no layer of LAYERS".to_owned());
            continue;
        };
        let text = std::fs::read_to_string(&file).expect("a readable source file");
        for used in crate_uses(&text) {
            if used == module {
                continue;
            }
            let allowed = match layer_of(&used) {
                Some(layer) if layer > own => true,
                Some(layer) if layer == own => {
                    SAME_LAYER.contains(&(module.as_str(), used.as_str()))
                }
                _ => false,
            };
            if !allowed {
                violations.insert(
                    format!("{} uses crate::{used}", relative.display()),
                    format!(
                        "{module} (layer {own}) may not use {used} ({:?})",
                        layer_of(&used)
                    ),
                );
            }
        }
    }
    assert!(violations.is_empty(), "layering broken: {violations:#?}");
}
