//! `cairn-bench job` and `cairn-bench state-size` as the real binary, at
//! small sizes: the JSON has the documented fields with the documented
//! types, counts are exact with and without an injected failure, restores
//! give back every key, the figures are consistent, and bad options exit 2
//! naming the option. The RocksDB tests run with `--features rocks`.

// A test crate: helpers outside #[test] fns unwrap too, a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;

fn cairn_bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn json(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not an unsigned integer: {v}"))
}

fn f(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number: {v}"))
}

fn bad_option(args: &[&str], option: &str) {
    let out = cairn_bench(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(option),
        "{args:?} should name {option}: {stderr}"
    );
    assert!(out.stdout.is_empty(), "{args:?} printed {:?}", out.stdout);
}

fn job(extra: &[&str]) -> Value {
    let mut args = vec![
        "job",
        "--records",
        "20000",
        "--keys",
        "1000",
        "--checkpoint-interval",
        "10ms",
        "--json",
    ];
    args.extend_from_slice(extra);
    json(&cairn_bench(&args))
}

fn check_job_fields(v: &Value, backend: &str, parallelism: u64) {
    assert_eq!(v["backend"], backend);
    assert_eq!(u(v, "records"), 20_000);
    assert_eq!(u(v, "keys"), 1_000);
    assert_eq!(u(v, "parallelism"), parallelism);
    assert_eq!(v["status"], "FINISHED");
    assert!(f(v, "seconds") > 0.0);
    assert!(f(v, "records_per_sec") > 0.0);
    assert!(v["incremental"].is_boolean());
    for c in v["checkpoints"].as_array().unwrap() {
        assert!(u(c, "id") >= 1);
        assert!(u(c, "written_bytes") <= u(c, "full_bytes"), "{c}");
        assert!(f(c, "duration_ms") >= 0.0);
        for known_later in ["sync_ms", "async_ms", "storage_bytes"] {
            assert!(c.get(known_later).is_some(), "{known_later} missing: {c}");
        }
    }
    assert_eq!(v["exact"], true, "{v}");
    assert_eq!(u(v, "counted"), 20_000);
    assert_eq!(u(v, "wrong_keys"), 0);
    assert!(u(v, "peak_rss_bytes") > 0);
}

#[test]
fn job_counts_are_exact_without_a_failure() {
    let v = job(&[]);
    check_job_fields(&v, "heap", 1);
    assert!(v["recovery_ms"].is_null(), "{v}");
    assert!(v["fail_at"].is_null());
    assert_eq!(u(&v, "restarts"), 0);
}

#[test]
fn job_counts_are_exact_after_an_injected_failure() {
    let v = job(&["--fail-at", "12345", "--parallelism", "2"]);
    check_job_fields(&v, "heap", 2);
    assert_eq!(u(&v, "fail_at"), 12_345);
    assert_eq!(u(&v, "restarts"), 1);
    assert!(f(&v, "recovery_ms") >= 0.0, "{v}");
}

#[test]
fn job_with_local_recovery_restores_exactly() {
    let v = job(&["--local-recovery", "--fail-at", "15000"]);
    check_job_fields(&v, "heap", 1);
    assert_eq!(v["local_recovery"], true);
    assert_eq!(u(&v, "restarts"), 1);
    assert!(f(&v, "recovery_ms") >= 0.0, "{v}");
}

#[test]
fn job_on_fs_checkpoints_to_files_and_removes_them() {
    let dir = tempfile::tempdir().unwrap();
    let v = job(&[
        "--backend",
        "fs",
        "--fail-at",
        "19999",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    check_job_fields(&v, "fs", 1);
    assert!(v["dir"].is_null());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "data left behind"
    );
}

#[test]
fn job_keep_leaves_the_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let v = job(&[
        "--backend",
        "fs",
        "--keep",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    let kept = v["dir"].as_str().unwrap();
    assert!(std::path::Path::new(kept).join("bench-job").is_dir(), "{v}");
}

#[test]
fn job_text_output_says_exact() {
    let out = cairn_bench(&["job", "--records", "5000", "--keys", "100"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("counts: exact"), "{text}");
    assert!(text.contains("records/s"), "{text}");
}

fn check_state_size(v: &Value, backend: &str, keys: u64) {
    assert_eq!(v["backend"], backend);
    assert_eq!(u(v, "keys"), keys);
    assert_eq!(u(v, "value_size"), 100);
    assert!(v["incremental"].is_boolean());
    assert!(f(v, "load_seconds") >= 0.0);
    assert!(f(v, "load_ops_per_sec") > 0.0);
    let checkpoints = v["checkpoints"].as_array().unwrap();
    assert_eq!(checkpoints.len(), 1 + u(v, "rounds") as usize);
    for (n, c) in checkpoints.iter().enumerate() {
        assert_eq!(u(c, "id"), n as u64 + 1);
        let (full, written, stored) = (
            u(c, "full_bytes"),
            u(c, "written_bytes"),
            u(c, "storage_bytes"),
        );
        assert!(written <= full, "{c}");
        assert!(
            written <= stored,
            "uploaded bytes exceed bytes in storage: {c}"
        );
        // Incompressible values: the snapshot is about the raw size.
        assert!(full >= u(v, "raw_bytes") / 2, "{c}");
        assert!(f(c, "sync_ms") >= 0.0 && f(c, "async_ms") >= 0.0, "{c}");
        assert!(f(c, "discard_ms") >= 0.0, "{c}");
    }
    if backend == "rocks" && v["incremental"] == false {
        // RocksDB full snapshots keep no local copy.
        assert!(v["restore_local_ms"].is_null(), "{v}");
    } else {
        // Restored from the local copies (rocks: on disk; heap, fs: in
        // memory), then from storage alone; both checked to read only there.
        assert!(f(v, "restore_local_ms") >= 0.0, "{v}");
    }
    assert!(f(v, "restore_storage_ms") >= 0.0);
    assert_eq!(u(v, "restored_keys"), keys);
    assert_eq!(v["restore_exact"], true);
    assert!(u(v, "peak_rss_bytes") > 0);
    check_memory_phases(v, backend);
    assert!(v.get("io_read_bytes").is_some() && v.get("io_write_bytes").is_some());
    assert_eq!(
        v["update_ms"].as_array().unwrap().len() as u64,
        u(v, "rounds")
    );
}

/// The memory phases: every phase of the run in order, the run's peak
/// the highest of theirs, each phase's sampled parts within its peak, and
/// on RocksDB the budget's parts within the budget.
fn check_memory_phases(v: &Value, backend: &str) {
    let phases = v["memory"].as_array().unwrap();
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    let local = !v["restore_local_ms"].is_null();
    let want: &[&str] = if local {
        &["load", "checkpoints", "restore-local", "restore-storage"]
    } else {
        &["load", "checkpoints", "restore-storage"]
    };
    assert_eq!(names, want, "{v}");
    let peaks: Vec<u64> = phases.iter().map(|p| u(p, "peak_rss_bytes")).collect();
    assert_eq!(peaks.iter().max().copied(), Some(u(v, "peak_rss_bytes")));
    for p in phases {
        let (anon, file) = (u(p, "peak_anon_bytes"), u(p, "peak_file_bytes"));
        assert!(anon > 0 && u(p, "end_anon_bytes") > 0, "{p}");
        // Sampled peaks of the two parts are each within the kernel's peak
        // of their sum (sampled at other moments, they may add up to more).
        // The last sample is taken just after the kernel's peak is read:
        // RocksDB's threads may allocate in between, hence the slack.
        let within = u(p, "peak_rss_bytes") + (8 << 20);
        assert!(anon <= within && file <= within, "{p}");
        assert!(u(&p["heaps"], "rust_committed") > 0, "{p}");
        let rocks = &p["rocks"];
        if backend == "rocks" {
            let budget = u(rocks, "budget_bytes");
            assert_eq!(budget, 256 << 20, "{p}");
            assert!(
                u(rocks, "write_buffers_bytes") <= u(rocks, "block_cache_bytes"),
                "{p}"
            );
            assert!(
                u(rocks, "pinned_bytes") <= u(rocks, "block_cache_bytes"),
                "{p}"
            );
            assert!(
                u(rocks, "block_cache_bytes") + u(rocks, "value_caches_bytes") <= budget,
                "{p}"
            );
            assert!(rocks["table_readers_bytes"].is_u64(), "{p}");
            // RocksDB's C++ allocates through glibc's malloc.
            assert!(u(&p["heaps"], "c_in_use") > 0, "{p}");
        } else {
            assert!(rocks.is_null(), "{p}");
        }
    }
}

#[test]
fn state_size_heap_and_fs_report_consistent_figures() {
    for backend in ["heap", "fs"] {
        let v = json(&cairn_bench(&[
            "state-size",
            "--backend",
            backend,
            "--keys",
            "1000",
            "--json",
        ]));
        check_state_size(&v, backend, 1000);
        assert_eq!(u(&v, "rounds"), 3);
    }
}

#[test]
fn state_size_at_parallelism_two_restores_every_key() {
    let v = json(&cairn_bench(&[
        "state-size",
        "--backend",
        "fs",
        "--keys",
        "3000",
        "--parallelism",
        "2",
        "--update-fraction",
        "0.5",
        "--rounds",
        "2",
        "--json",
    ]));
    check_state_size(&v, "fs", 3000);
}

#[test]
fn sweep_prints_one_report_per_run_and_plots() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("sweep.svg");
    let v = json(&cairn_bench(&[
        "state-size",
        "--backend",
        "heap,fs",
        "--sweep",
        "keys=500,1000",
        "--rounds",
        "1",
        "--json",
        "--plot",
        svg.to_str().unwrap(),
    ]));
    let runs = v.as_array().unwrap();
    assert_eq!(runs.len(), 4);
    for (run, (backend, keys)) in
        runs.iter()
            .zip([("heap", 500), ("heap", 1000), ("fs", 500), ("fs", 1000)])
    {
        check_state_size(run, backend, keys);
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg"), "{}", &plot[..plot.len().min(100)]);
    assert!(plot.contains("Restore time"));
}

#[cfg(feature = "rocks")]
#[test]
fn rocks_incremental_state_size_and_exact_job() {
    // state-size: incremental checkpoints write far less than the full state
    // after a 1% update, and every key comes back.
    let v = json(&cairn_bench(&[
        "state-size",
        "--backend",
        "rocks",
        "--incremental",
        "--settle",
        "--keys",
        "20000",
        "--rounds",
        "1",
        "--json",
    ]));
    let report = if v.is_array() { v[0].clone() } else { v };
    assert_eq!(report["backend"], "rocks");
    assert_eq!(report["incremental"], true);
    assert!(report["settle_seconds"].as_f64().is_some(), "{report}");
    let checkpoints = report["checkpoints"].as_array().unwrap();
    let last = checkpoints.last().unwrap();
    let (written, full) = (
        last["written_bytes"].as_u64().unwrap(),
        last["full_bytes"].as_u64().unwrap(),
    );
    assert!(written * 5 < full, "incremental wrote {written} of {full}");
    // RocksDB's view of each checkpoint: settled, the first has no
    // compaction debt and every file is new to it; a later one's new SST
    // files are part of what it wrote (beside MANIFEST, OPTIONS and meta).
    let sum = |v: &serde_json::Value| -> u64 {
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap())
            .sum()
    };
    let first = &checkpoints[0]["rocks"];
    assert_eq!(first["pending_compaction_bytes"], 0, "{first}");
    assert!(sum(&first["files_per_level"]) > 0, "{first}");
    assert_eq!(
        sum(&first["new_bytes_per_level"]),
        sum(&first["bytes_per_level"])
    );
    let lsm = &last["rocks"];
    let new = sum(&lsm["new_bytes_per_level"]);
    assert!(new > 0 && new <= written, "{lsm} wrote {written}");
    assert!(
        sum(&lsm["new_bytes_per_level"]) < sum(&lsm["bytes_per_level"]),
        "{lsm}"
    );

    // job: exact counts on rocks, with an injected failure, recovering from
    // the local copies it keeps in the run's directory (removed after).
    let dir = tempfile::tempdir().unwrap();
    let v = json(&cairn_bench(&[
        "job",
        "--backend",
        "rocks",
        "--incremental",
        "--local-recovery",
        "--dir",
        dir.path().to_str().unwrap(),
        "--records",
        "20000",
        "--keys",
        "500",
        "--checkpoint-interval",
        "50ms",
        "--fail-at",
        "12000",
        "--json",
    ]));
    assert_eq!(v["backend"], "rocks");
    assert_eq!(v["exact"], true);
    assert_eq!(v["local_recovery"], true);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "data left behind"
    );
}

#[cfg(feature = "rocks")]
#[test]
fn a_too_small_rocks_value_cache_is_refused_by_name() {
    let out = cairn_bench(&[
        "job",
        "--backend",
        "rocks",
        "--records",
        "100",
        "--rocks-value-cache",
        "1000",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("value_cache_bytes"), "{err}");
    assert!(out.stdout.is_empty());
}

#[cfg(feature = "rocks")]
#[test]
fn rocks_state_size_restores_from_the_local_copy_and_from_storage() {
    let v = json(&cairn_bench(&[
        "state-size",
        "--backend",
        "rocks",
        "--incremental",
        "--keys",
        "1000",
        "--parallelism",
        "2",
        "--rounds",
        "2",
        "--json",
    ]));
    check_state_size(&v, "rocks", 1000);
    assert!(f(&v, "restore_local_ms") >= 0.0, "{v}");
    assert!(f(&v, "restore_storage_ms") >= 0.0, "{v}");
    assert_eq!(v["restore_exact"], true, "{v}");

    // Full snapshots keep no local copy to restore from.
    let v = json(&cairn_bench(&[
        "state-size",
        "--backend",
        "rocks",
        "--keys",
        "1000",
        "--rounds",
        "1",
        "--json",
    ]));
    check_state_size(&v, "rocks", 1000);
    assert!(v["restore_local_ms"].is_null(), "{v}");
}

#[test]
fn bad_options_exit_2_naming_the_option() {
    bad_option(&["job", "--records", "0"], "--records");
    bad_option(&["job", "--keys=-3"], "--keys");
    bad_option(&["job", "--parallelism", "0"], "--parallelism");
    bad_option(
        &["job", "--records", "100", "--fail-at", "100"],
        "--fail-at",
    );
    bad_option(
        &["job", "--checkpoint-interval", "soon"],
        "--checkpoint-interval",
    );
    bad_option(
        &["job", "--checkpoint-interval", "0s"],
        "--checkpoint-interval",
    );
    bad_option(&["job", "--backend", "oracle"], "--backend");
    bad_option(
        &["state-size", "--update-fraction", "2"],
        "--update-fraction",
    );
    bad_option(&["state-size", "--keys", "0"], "--keys");
    bad_option(&["state-size", "--value-size", "x"], "--value-size");
    bad_option(&["state-size", "--sweep", "colour=1"], "--sweep");
    bad_option(&["state-size", "--rounds=-1"], "--rounds");
}

/// `state-size --checkpoint-url` runs the backend on the filesystem, then on
/// the object store, and deletes its checkpoints from the store afterwards:
/// a second run into the same URL succeeds (the conditional `_metadata`
/// creates would refuse it otherwise) and nothing is left below the prefix.
#[cfg(feature = "object-store")]
#[test]
fn state_size_on_s3_deletes_its_checkpoints_so_the_url_serves_again() {
    use backend_fs::object::{ObjectCheckpointStorage, ObjectUrl};
    use state_testkit::s3::S3Server;

    let Some(server) = S3Server::moto_or_skip() else {
        return;
    };
    server.create_bucket("bench");
    let args = [
        "state-size",
        "--backend",
        "heap",
        "--keys",
        "2000",
        "--rounds",
        "1",
        "--checkpoint-url",
        "s3://bench/state",
        "--json",
    ];
    for run in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_cairn-bench"))
            .args(args)
            .envs(server.env())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let reports = json(&out);
        let storages: Vec<&str> = reports
            .as_array()
            .unwrap_or_else(|| panic!("run {run}: one report per storage: {reports}"))
            .iter()
            .map(|r| {
                assert_eq!(r["restore_exact"], Value::Bool(true), "run {run}: {r}");
                r["storage"].as_str().unwrap()
            })
            .collect();
        assert_eq!(storages, ["file", "s3://bench/state"], "run {run}");
    }
    let mut url = ObjectUrl::parse("s3://bench/state/bench-state-size").unwrap();
    for (k, v) in server.url_options() {
        url = url.with_option(k, v);
    }
    let job = ObjectCheckpointStorage::at_job_url(&url).unwrap();
    assert_eq!(job.list_below("").unwrap(), []);
}
