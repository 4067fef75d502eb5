//! `cairn checkpoints list <job-dir>`: one row per `chk-<n>` directory.
//!
//! JSON output (`--json`), stable field names:
//!
//! ```text
//! {
//!   "job_dir": "/data/ckpt/example",
//!   "checkpoints": [                      ascending by id; [] when there are none
//!     {
//!       "id": 3,
//!       "status": "complete",             "complete" | "incomplete" | "corrupt"
//!       "detail": null,                   why it is incomplete or corrupt (names the file)
//!       "time": "2026-11-22T00:15:03.120Z",   null unless complete
//!       "timestamp_millis": 1795306503120,    null unless complete
//!       "kind": "full",                   "full" | "incremental"; null unless complete
//!       "state_size": 1234,               bytes of state; null unless complete
//!       "checkpointed_size": 1234         bytes written by this checkpoint; null unless complete
//!     }
//!   ]
//! }
//! ```

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;
use state_core::SnapshotKind;

use crate::human;
use crate::job_dir::{self, CheckpointStatus};

/// The `--json` documentation shown by `cairn checkpoints list --help`.
pub(crate) const JSON_HELP: &str = "\
JSON (--json): {\"job_dir\": str, \"checkpoints\": [{
    \"id\": int, \"status\": \"complete\"|\"incomplete\"|\"corrupt\", \"detail\": str|null,
    \"time\": str|null (UTC, RFC 3339), \"timestamp_millis\": int|null,
    \"kind\": \"full\"|\"incremental\"|null, \"state_size\": int|null (bytes),
    \"checkpointed_size\": int|null (bytes written by this checkpoint)}, ...]}
Rows are ascending by id; fields other than id, status and detail are null
unless the checkpoint is complete. Exit status 0, or 2 if the path is not a job directory.";

/// One row of the listing.
#[derive(Debug, Serialize)]
struct Row {
    id: u64,
    status: &'static str,
    detail: Option<String>,
    time: Option<String>,
    timestamp_millis: Option<u64>,
    kind: Option<&'static str>,
    state_size: Option<u64>,
    checkpointed_size: Option<u64>,
}

#[derive(Debug, Serialize)]
struct Listing {
    job_dir: String,
    checkpoints: Vec<Row>,
}

/// The name of a snapshot kind in output.
pub(crate) fn kind_name(kind: SnapshotKind) -> &'static str {
    match kind {
        SnapshotKind::Full => "full",
        SnapshotKind::Incremental => "incremental",
    }
}

/// Runs `cairn checkpoints list`.
pub(crate) fn run(path: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let storage = job_dir::open_location(path)?;
    let entries = job_dir::scan(&storage)?;
    let rows: Vec<Row> = entries
        .into_iter()
        .map(|e| {
            let id = e.id.get();
            match e.status {
                CheckpointStatus::Complete(m) => Row {
                    id,
                    status: "complete",
                    detail: None,
                    time: Some(human::timestamp(m.timestamp_millis)),
                    timestamp_millis: Some(m.timestamp_millis),
                    kind: Some(kind_name(m.kind)),
                    state_size: Some(m.state_size()),
                    checkpointed_size: Some(m.checkpointed_size()),
                },
                CheckpointStatus::Incomplete => Row {
                    detail: Some("no _metadata".to_owned()),
                    ..empty_row(id, "incomplete")
                },
                CheckpointStatus::Corrupt(err) => Row {
                    detail: Some(human::error(&err)),
                    ..empty_row(id, "corrupt")
                },
            }
        })
        .collect();
    let listing = Listing {
        job_dir: storage.display(),
        checkpoints: rows,
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &listing)?;
        writeln!(out)?;
    } else {
        print_table(&listing, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn empty_row(id: u64, status: &'static str) -> Row {
    Row {
        id,
        status,
        detail: None,
        time: None,
        timestamp_millis: None,
        kind: None,
        state_size: None,
        checkpointed_size: None,
    }
}

fn print_table(listing: &Listing, out: &mut dyn Write) -> anyhow::Result<()> {
    if listing.checkpoints.is_empty() {
        writeln!(out, "no checkpoints in {}", listing.job_dir)?;
        return Ok(());
    }
    let dash = || "-".to_owned();
    let mut table = vec![[
        "ID".to_owned(),
        "TIME".to_owned(),
        "KIND".to_owned(),
        "SIZE".to_owned(),
        "WRITTEN".to_owned(),
        "STATUS".to_owned(),
    ]];
    for r in &listing.checkpoints {
        let status = match (&r.detail, r.status) {
            (Some(d), "incomplete") => format!("incomplete ({d})"),
            (Some(d), s) => format!("{s}: {d}"),
            (None, s) => s.to_owned(),
        };
        table.push([
            r.id.to_string(),
            r.time.clone().unwrap_or_else(dash),
            r.kind.map_or_else(dash, str::to_owned),
            r.state_size.map_or_else(dash, human::size),
            r.checkpointed_size.map_or_else(dash, human::size),
            status,
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &table {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else if i == 0 || i >= 3 {
                // Numbers right-aligned.
                line.push_str(&format!("{cell:>w$}  "));
            } else {
                line.push_str(&format!("{cell:<w$}  "));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    let count = |s: &str| listing.checkpoints.iter().filter(|r| r.status == s).count();
    writeln!(
        out,
        "{} checkpoint directories in {}: {} complete, {} incomplete, {} corrupt",
        listing.checkpoints.len(),
        listing.job_dir,
        count("complete"),
        count("incomplete"),
        count("corrupt")
    )?;
    Ok(())
}
