//! `cairn checkpoints gc <job-dir> [--delete] [--json]`: removes the files of
//! a job directory that no completed checkpoint references (orphans: torn
//! `chk-<n>` directories, uploads in `shared/` whose checkpoint never
//! completed, stray files; see [`backend_fs::find_orphans`] for the rules).
//!
//! Without `--delete` it is a dry run: it lists what would be removed and the
//! total bytes, and says "dry run: pass --delete to remove". With `--delete`
//! it first takes the job directory's lock ([`JobLock`], as `cairn run`
//! does), so it never removes the files of a running job's checkpoint in
//! progress: a directory locked by a live job is refused naming its owner.
//! `cairn run` sweeps the same orphans itself when it starts.
//!
//! While any `_metadata` cannot be read, its references are unknown and
//! nothing in `shared/` or `taskowned/` is removed; the output says why.
//!
//! Exit status: 0 on success (orphans found or not), 2 for bad input (not a
//! job directory, a directory locked by a running job) or when a removal
//! fails (the error names the file).
//!
//! JSON output (`--json`), stable field names:
//!
//! ```text
//! {
//!   "job_dir": "/ck/wc",
//!   "deleted": false,                 true with --delete: "orphans" were removed
//!   "orphans": [{"path": "shared/000042.sst", "kind": "file", "bytes": 4096}],
//!   "bytes": 4096,                    total of "orphans"
//!   "held_back": null,                why shared/ and taskowned/ were left alone, or null
//!   "running_job": null               dry run only: the live owner of the job lock, or null
//! }
//! ```

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use backend_fs::OrphanReport;
use serde::Serialize;
use state_core::{Clock, SystemClock};

use crate::human;
use crate::job_dir;
use crate::verify::OrphanView;

/// The `--json` documentation shown by `cairn checkpoints gc --help`.
pub(crate) const JSON_HELP: &str = "\
Without --delete: a dry run listing what would be removed. With --delete: takes the job \
directory's lock (refused while a job runs in it) and removes the orphans.
JSON (--json): {\"job_dir\": str, \"deleted\": bool,
  \"orphans\": [{\"path\": str, \"kind\": \"file\"|\"symlink\"|\"dir\", \"bytes\": int}],
  \"bytes\": int, \"held_back\": str|null, \"running_job\": str|null}
Exit status: 0 ok, 2 not a job directory, locked by a running job, or a removal failed.";

#[derive(Debug, Serialize)]
struct Gc {
    job_dir: String,
    deleted: bool,
    orphans: Vec<OrphanView>,
    bytes: u64,
    held_back: Option<String>,
    running_job: Option<String>,
}

/// Runs `cairn checkpoints gc`.
pub(crate) fn run(
    path: &Path,
    delete: bool,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let storage = job_dir::open_location(path)?;
    let (report, running): (OrphanReport, _) = if delete {
        let lock = storage.lock(SystemClock.now_millis())?;
        (storage.sweep(&lock)?, None)
    } else {
        (storage.find_orphans()?, storage.running_job()?)
    };
    let gc = Gc {
        job_dir: storage.display(),
        deleted: delete,
        orphans: report.orphans.iter().map(OrphanView::of).collect(),
        bytes: report.bytes(),
        held_back: report.held_back,
        running_job: running,
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &gc)?;
        writeln!(out)?;
    } else {
        print(&gc, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print(gc: &Gc, out: &mut dyn Write) -> anyhow::Result<()> {
    let status = if gc.deleted { "REMOVED" } else { "ORPHAN" };
    for orphan in &gc.orphans {
        writeln!(out, "  {}", orphan.line(status))?;
    }
    if let Some(why) = &gc.held_back {
        writeln!(out, "note: {why}")?;
    }
    if let Some(owner) = &gc.running_job {
        writeln!(
            out,
            "note: a job is running in this directory ({owner}): files of its checkpoint in \
             progress may show as orphans; --delete is refused until it ends"
        )?;
    }
    let size = human::size(gc.bytes);
    let n = gc.orphans.len();
    let plural = if n == 1 { "" } else { "s" };
    match (gc.deleted, n) {
        (_, 0) => writeln!(out, "no orphans in {}", gc.job_dir)?,
        (true, n) => writeln!(
            out,
            "removed {n} orphan{plural} ({size}) from {}",
            gc.job_dir
        )?,
        (false, n) => writeln!(
            out,
            "{n} orphan{plural} ({size}) in {}; dry run: pass --delete to remove",
            gc.job_dir
        )?,
    }
    Ok(())
}
