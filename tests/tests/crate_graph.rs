//! The workspace's dependencies point one way (ARCHITECTURE.md, "Crate map"):
//! `state-core` depends on no cairn crate; backends, storages, the test kit,
//! the executor and `cairn-timely` depend on `state-core` alone; only the `cairn` command,
//! the benchmark crate and this crate choose concrete backends. Dev-
//! dependencies are free (tests may run a backend over another's storage).
//!
//! Read from `cargo metadata`, so a new dependency that points the wrong way
//! fails here, and a new crate must be given its place in [`ALLOWED`].

// A test crate: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

/// For each workspace package, the workspace packages its normal and build
/// dependencies may name.
const ALLOWED: &[(&str, &[&str])] = &[
    ("cairn-state-core", &[]),
    ("cairn-state-testkit", &["cairn-state-core"]),
    ("cairn-backend-heap", &["cairn-state-core"]),
    ("cairn-backend-fs", &["cairn-state-core"]),
    ("cairn-backend-rocks", &["cairn-state-core"]),
    ("cairn-executor", &["cairn-state-core"]),
    ("cairn-timely", &["cairn-state-core"]),
    (
        "cairn-cli",
        &[
            "cairn-state-core",
            "cairn-backend-heap",
            "cairn-backend-fs",
            "cairn-backend-rocks",
            "cairn-executor",
            "cairn-timely",
        ],
    ),
    (
        "cairn-benches",
        &[
            "cairn-state-core",
            "cairn-state-testkit",
            "cairn-backend-heap",
            "cairn-backend-fs",
            "cairn-backend-rocks",
            "cairn-executor",
            "cairn-timely",
            "cairn-cli",
        ],
    ),
    (
        "cairn-tests",
        &[
            "cairn-state-core",
            "cairn-state-testkit",
            "cairn-backend-heap",
            "cairn-backend-fs",
            "cairn-backend-rocks",
            "cairn-executor",
            "cairn-timely",
            "cairn-cli",
        ],
    ),
];

/// Each workspace package with the workspace packages it depends on outside
/// `[dev-dependencies]`.
fn workspace_graph() -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = metadata["packages"].as_array().unwrap();
    let names: BTreeSet<String> = packages
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    packages
        .iter()
        .map(|p| {
            let deps = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["kind"].as_str() != Some("dev"))
                .map(|d| d["name"].as_str().unwrap().to_owned())
                .filter(|d| names.contains(d))
                .collect();
            (p["name"].as_str().unwrap().to_owned(), deps)
        })
        .collect()
}

#[test]
fn dependencies_point_one_way() {
    let allowed: BTreeMap<&str, BTreeSet<&str>> = ALLOWED
        .iter()
        .map(|(name, deps)| (*name, deps.iter().copied().collect()))
        .collect();
    let graph = workspace_graph();
    assert!(graph.contains_key("cairn-state-core"), "{graph:?}");
    let mut wrong = Vec::new();
    for (package, deps) in &graph {
        let Some(ok) = allowed.get(package.as_str()) else {
            wrong.push(format!(
                "{package}: not in ALLOWED; give the new crate its place"
            ));
            continue;
        };
        for dep in deps {
            if !ok.contains(dep.as_str()) {
                wrong.push(format!("{package} -> {dep}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies pointing the wrong way: {wrong:#?}"
    );
}
