//! `cairn checkpoints verify <chk-dir | _metadata | job-dir>`: re-reads every
//! file of one checkpoint, or of every checkpoint of a job directory, and
//! checks its length and CRC-32 against the metadata.
//!
//! Exit status: 0 when every file is intact, 1 when a file is corrupt (its
//! line names it), 2 when the path is not a checkpoint or job directory.
//! `chk-<n>` directories without `_metadata` (in progress or aborted) are
//! reported as incomplete and are not corruption: restore never sees them.
//!
//! For a job directory, files that no completed checkpoint references are
//! listed with status `orphan` ([`backend_fs::find_orphans`]: torn
//! checkpoints, unreferenced uploads in `shared/`, stray files); they never
//! change the exit status, and `cairn checkpoints gc` removes them. While a
//! live job holds the directory's lock, the files of its checkpoint in
//! progress show as orphans too, and the output says so.
//!
//! JSON output (`--json`), stable field names:
//!
//! ```text
//! {
//!   "checkpoints": [{
//!     "id": 3,
//!     "status": "ok",                  "ok" | "corrupt" | "incomplete" (not checked)
//!     "files": [{
//!       "path": "chk-3/_metadata",     relative to the job directory
//!       "size": null,                  expected bytes; null for _metadata
//!       "crc32": null,                 expected crc32 (hex); null for _metadata
//!       "ok": true,
//!       "error": null                  what is wrong, naming the file
//!     }]
//!   }],
//!   "checkpoints_verified": 1, "files_verified": 4, "corrupt_files": 0,
//!   "incomplete": [99],               ids of chk-<n> directories without _metadata
//!   "orphans": [{                     job directory only; [] for one checkpoint
//!     "path": "shared/000042.sst",    relative to the job directory ("chk-9/" for a directory)
//!     "kind": "file",                 "file" | "symlink" | "dir"
//!     "bytes": 4096
//!   }],
//!   "orphans_held_back": null,        why shared/ and taskowned/ were not searched
//!                                     (a _metadata that cannot be read), or null
//!   "running_job": null,              the live owner of the job lock (its in-progress
//!                                     checkpoint's files show as orphans), or null
//!   "ok": true                        orphans do not make it false
//! }
//! ```

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::anyhow;
use backend_fs::{FsCheckpointStorage, Orphan, OrphanKind};
use serde::Serialize;
use state_core::METADATA_FILE_NAME;
use state_core::{CheckpointId, ErrorKind};
use state_core::{FileCheck, verify_checkpoint};

use crate::human;
use crate::job_dir::{self, CheckpointStatus, JobLocation};

/// The `--json` documentation shown by `cairn checkpoints verify --help`.
pub(crate) const JSON_HELP: &str = "\
JSON (--json): {\"checkpoints\": [{\"id\": int, \"status\": \"ok\"|\"corrupt\"|\"incomplete\",
    \"files\": [{\"path\": str, \"size\": int|null, \"crc32\": str|null (hex), \"ok\": bool,
      \"error\": str|null}]}],
  \"checkpoints_verified\": int, \"files_verified\": int, \"corrupt_files\": int,
  \"incomplete\": [int],
  \"orphans\": [{\"path\": str, \"kind\": \"file\"|\"symlink\"|\"dir\", \"bytes\": int}],
  \"orphans_held_back\": str|null, \"running_job\": str|null, \"ok\": bool}
size and crc32 are the values the metadata expects (null for _metadata itself).
orphans (job directory only): files no completed checkpoint references; they never fail
verify (`cairn checkpoints gc` removes them). running_job: the live owner of the job lock,
whose in-progress checkpoint's files show as orphans.
Exit status: 0 all intact, 1 a file is corrupt, 2 the path is not a checkpoint or job directory.";

#[derive(Debug, Serialize)]
struct Verification {
    checkpoints: Vec<CheckpointView>,
    checkpoints_verified: usize,
    files_verified: usize,
    corrupt_files: usize,
    incomplete: Vec<u64>,
    orphans: Vec<OrphanView>,
    orphans_held_back: Option<String>,
    running_job: Option<String>,
    ok: bool,
}

/// One orphan, as `verify --json` and `gc --json` print it.
#[derive(Debug, Serialize)]
pub(crate) struct OrphanView {
    path: String,
    kind: &'static str,
    bytes: u64,
}

impl OrphanView {
    pub(crate) fn of(orphan: &Orphan) -> Self {
        OrphanView {
            path: orphan.display_path(),
            kind: match orphan.kind {
                OrphanKind::File => "file",
                OrphanKind::Symlink => "symlink",
                OrphanKind::Dir => "dir",
            },
            bytes: orphan.bytes,
        }
    }

    /// `ORPHAN   shared/x.sst  (12 bytes)`, with `status` in front.
    pub(crate) fn line(&self, status: &str) -> String {
        format!("{status:<8} {}  ({} bytes)", self.path, self.bytes)
    }
}

#[derive(Debug, Serialize)]
struct CheckpointView {
    id: u64,
    status: &'static str,
    files: Vec<FileView>,
}

#[derive(Debug, Serialize)]
struct FileView {
    path: String,
    size: Option<u64>,
    crc32: Option<String>,
    ok: bool,
    error: Option<String>,
}

/// What the user asked to verify.
enum Target {
    One(JobLocation, CheckpointId),
    Job(JobLocation),
}

/// Runs `cairn checkpoints verify`.
pub(crate) fn run(path: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let mut checkpoints = Vec::new();
    let mut orphans = Vec::new();
    let mut orphans_held_back = None;
    let mut running = None;
    match target(path)? {
        Target::One(storage, id) => checkpoints.push(verify_one(&storage, id)?),
        Target::Job(storage) => {
            running = storage.running_job()?;
            let found = storage.find_orphans()?;
            orphans = found.orphans.iter().map(OrphanView::of).collect();
            orphans_held_back = found.held_back;
            for entry in job_dir::scan(&storage)? {
                match entry.status {
                    CheckpointStatus::Incomplete => checkpoints.push(CheckpointView {
                        id: entry.id.get(),
                        status: "incomplete",
                        files: Vec::new(),
                    }),
                    CheckpointStatus::Complete(_) | CheckpointStatus::Corrupt(_) => {
                        checkpoints.push(verify_one(&storage, entry.id)?);
                    }
                }
            }
        }
    }
    let checked = checkpoints.iter().filter(|c| c.status != "incomplete");
    let files_verified = checked.clone().map(|c| c.files.len()).sum();
    let corrupt_files = checked
        .clone()
        .flat_map(|c| &c.files)
        .filter(|f| !f.ok)
        .count();
    let report = Verification {
        checkpoints_verified: checked.count(),
        files_verified,
        corrupt_files,
        incomplete: checkpoints
            .iter()
            .filter(|c| c.status == "incomplete")
            .map(|c| c.id)
            .collect(),
        orphans,
        orphans_held_back,
        running_job: running,
        ok: corrupt_files == 0,
        checkpoints,
    };
    if json {
        serde_json::to_writer_pretty(&mut *out, &report)?;
        writeln!(out)?;
    } else {
        print(&report, out)?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Opens a checkpoint (`chk-<n>` or its `_metadata`) or a job directory.
fn target(path: &Path) -> anyhow::Result<Target> {
    let names_checkpoint = path.file_name().is_some_and(|n| {
        n == METADATA_FILE_NAME || CheckpointId::from_dir_name(&n.to_string_lossy()).is_some()
    });
    if !names_checkpoint {
        return Ok(Target::Job(job_dir::open_location(path)?));
    }
    if cairn_cli::backend::object_url(path).is_some() {
        let (location, id) = job_dir::open_checkpoint(path)?;
        return Ok(Target::One(location, id));
    }
    let path = &cairn_cli::backend::plain_path(path);
    match FsCheckpointStorage::for_checkpoint_path(path) {
        Ok((storage, id)) => Ok(Target::One(JobLocation::Dir(storage), id)),
        // A `_metadata` that is not cairn's (a damaged magic number) in a
        // real checkpoint directory: that is corruption to report, not bad input.
        Err(err) if err.kind() == ErrorKind::IncompatibleFormat => {
            let chk_dir: PathBuf = if path.is_dir() {
                path.to_path_buf()
            } else {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            let id = chk_dir
                .file_name()
                .and_then(|n| CheckpointId::from_dir_name(&n.to_string_lossy()))
                .ok_or_else(|| human::anyhow(err))?;
            let job = chk_dir
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            Ok(Target::One(job_dir::open_location(job)?, id))
        }
        Err(err) => Err(human::anyhow(err)),
    }
}

fn verify_one(location: &JobLocation, id: CheckpointId) -> anyhow::Result<CheckpointView> {
    let storage = location.storage();
    let report = verify_checkpoint(storage.as_ref(), id).map_err(|e| {
        anyhow!(
            "cannot verify checkpoint {id} in {}: {}",
            location.display(),
            human::error(&e)
        )
    })?;
    let files: Vec<FileView> = report.files.iter().map(file_view).collect();
    Ok(CheckpointView {
        id: id.get(),
        status: if report.is_ok() { "ok" } else { "corrupt" },
        files,
    })
}

fn file_view(check: &FileCheck) -> FileView {
    FileView {
        path: check.path.clone(),
        size: check.size,
        crc32: check.crc32.map(|c| format!("{c:08x}")),
        ok: check.is_ok(),
        error: check.error.as_ref().map(|e| {
            let msg = human::error(e);
            // Every line that reports a problem names the file.
            if msg.contains(&check.path) {
                msg
            } else {
                format!("{}: {msg}", check.path)
            }
        }),
    }
}

fn print(report: &Verification, out: &mut dyn Write) -> anyhow::Result<()> {
    for c in &report.checkpoints {
        match c.status {
            "incomplete" => writeln!(
                out,
                "checkpoint {}: incomplete (no _metadata): not checked, invisible to restore",
                c.id
            )?,
            status => writeln!(out, "checkpoint {}: {status}", c.id)?,
        }
        for f in &c.files {
            match &f.error {
                None => {
                    let expected = match (f.size, &f.crc32) {
                        (Some(size), Some(crc)) => format!("  ({size} bytes, crc32 {crc})"),
                        _ => String::new(),
                    };
                    writeln!(out, "  OK       {}{expected}", f.path)?;
                }
                Some(err) => writeln!(out, "  CORRUPT  {err}")?,
            }
        }
    }
    for orphan in &report.orphans {
        writeln!(out, "  {}", orphan.line("ORPHAN"))?;
    }
    if let Some(why) = &report.orphans_held_back {
        writeln!(out, "note: {why}")?;
    }
    if let Some(owner) = &report.running_job {
        writeln!(
            out,
            "note: a job is running in this directory ({owner}): files of its checkpoint in \
             progress may show as orphans"
        )?;
    }
    if !report.orphans.is_empty() {
        let bytes: u64 = report.orphans.iter().map(|o| o.bytes).sum();
        let n = report.orphans.len();
        writeln!(
            out,
            "{n} orphan{} ({bytes} bytes) not referenced by any checkpoint: \
             `cairn checkpoints gc` removes them",
            if n == 1 { "" } else { "s" }
        )?;
    }
    writeln!(
        out,
        "{} checkpoints, {} files verified, {} corrupt",
        report.checkpoints_verified, report.files_verified, report.corrupt_files
    )?;
    Ok(())
}
