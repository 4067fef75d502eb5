//! `cairn checkpoints inspect <chk-dir | _metadata>`: everything one
//! checkpoint's metadata says.
//!
//! JSON output (`--json`), stable field names:
//!
//! ```text
//! {
//!   "checkpoint_id": 3, "job_id": "example", "dir": "/data/ckpt/example/chk-3",
//!   "time": "2026-11-22T00:15:03.120Z", "timestamp_millis": 1795306503120,
//!   "kind": "full", "state_size": 1234, "checkpointed_size": 1234,
//!   "operators": [{
//!     "uid": "wordcount", "parallelism": 2, "max_parallelism": 128,
//!     "subtasks": [{
//!       "subtask": 0,
//!       "keyed": [{
//!         "format": "key_groups",          "key_groups" (full) | "incremental"
//!         "backend": "heap",
//!         "key_group_start": 0, "key_group_end": 63,   end null for an empty range
//!         "files": [{
//!           "path": "chk-3/wordcount-0-keyed",          relative to the job directory
//!           "size": 1234, "crc32": "0a1b2c3d",
//!           "origin": "new",                 "new" (written by this checkpoint) | "shared"
//!           "uploaded_by": 3                 the checkpoint that wrote the file
//!         }]
//!       }],
//!       "operator_state": null | {
//!         "file": { same fields as above },
//!         "states": [{"name": "offsets", "mode": "split", "elements": 1}]   mode: "split" | "union"
//!       }
//!     }]
//!   }]
//! }
//! ```

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail};
use backend_fs::FsCheckpointStorage;
use serde::Serialize;
use state_core::{CheckpointId, CheckpointMetadata, METADATA_FILE_NAME, StreamHandle};
use state_core::{
    KeyedStateHandle, OperatorSnapshot, OperatorStateHandle, OperatorStateMode, SubtaskSnapshot,
};

use crate::human;
use crate::job_dir::{self, JobLocation};
use crate::list::kind_name;

/// The `--json` documentation shown by `cairn checkpoints inspect --help`.
pub(crate) const JSON_HELP: &str = "\
JSON (--json): {\"checkpoint_id\": int, \"job_id\": str, \"dir\": str, \"time\": str (UTC),
  \"timestamp_millis\": int, \"kind\": \"full\"|\"incremental\", \"state_size\": int,
  \"checkpointed_size\": int, \"operators\": [{\"uid\": str, \"parallelism\": int,
  \"max_parallelism\": int, \"subtasks\": [{\"subtask\": int,
    \"keyed\": [{\"format\": \"key_groups\"|\"incremental\", \"backend\": str,
      \"key_group_start\": int, \"key_group_end\": int|null, \"files\": [FILE]}],
    \"operator_state\": null | {\"file\": FILE,
      \"states\": [{\"name\": str, \"mode\": \"split\"|\"union\", \"elements\": int}]}}]}]}
FILE = {\"path\": str (relative to the job directory), \"size\": int, \"crc32\": str (hex),
  \"origin\": \"new\"|\"shared\", \"uploaded_by\": int (the checkpoint that wrote it)}
Exit status 0, or 2 if the path is not a checkpoint or its _metadata cannot be read.";

#[derive(Debug, Serialize)]
struct Inspection {
    checkpoint_id: u64,
    job_id: String,
    dir: String,
    time: String,
    timestamp_millis: u64,
    kind: &'static str,
    state_size: u64,
    checkpointed_size: u64,
    operators: Vec<OperatorView>,
}

#[derive(Debug, Serialize)]
struct OperatorView {
    uid: String,
    parallelism: u32,
    max_parallelism: u32,
    subtasks: Vec<SubtaskView>,
}

#[derive(Debug, Serialize)]
struct SubtaskView {
    subtask: u32,
    keyed: Vec<KeyedView>,
    operator_state: Option<OperatorStateView>,
}

#[derive(Debug, Serialize)]
struct KeyedView {
    format: &'static str,
    backend: String,
    key_group_start: u32,
    key_group_end: Option<u32>,
    files: Vec<FileView>,
}

#[derive(Debug, Serialize)]
struct FileView {
    path: String,
    size: u64,
    crc32: String,
    origin: &'static str,
    uploaded_by: u64,
}

#[derive(Debug, Serialize)]
struct OperatorStateView {
    file: FileView,
    states: Vec<StateView>,
}

#[derive(Debug, Serialize)]
struct StateView {
    name: String,
    mode: &'static str,
    elements: u64,
}

/// Runs `cairn checkpoints inspect`.
pub(crate) fn run(path: &Path, json: bool, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let (storage, id) = match job_dir::open_checkpoint(path) {
        Ok(opened) => opened,
        Err(err) => {
            if path.is_dir() && FsCheckpointStorage::for_job_dir(path).is_ok() {
                bail!(
                    "{} is a job directory, not a checkpoint: pass one of its chk-<n> directories (see `cairn checkpoints list {}`)",
                    path.display(),
                    path.display()
                );
            }
            return Err(err);
        }
    };
    let metadata = storage.storage().read_metadata(id).map_err(|e| {
        anyhow!(
            "cannot read {}/{METADATA_FILE_NAME}: {}",
            storage.checkpoint_display(id),
            human::error(&e)
        )
    })?;
    let view = view(&storage, &metadata);
    if json {
        serde_json::to_writer_pretty(&mut *out, &view)?;
        writeln!(out)?;
    } else {
        print(&view, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn view(storage: &JobLocation, m: &CheckpointMetadata) -> Inspection {
    Inspection {
        checkpoint_id: m.checkpoint_id.get(),
        job_id: m.job_id.to_string(),
        dir: storage.checkpoint_display(m.checkpoint_id),
        time: human::timestamp(m.timestamp_millis),
        timestamp_millis: m.timestamp_millis,
        kind: kind_name(m.kind),
        state_size: m.state_size(),
        checkpointed_size: m.checkpointed_size(),
        operators: m
            .operators
            .iter()
            .map(|op| operator_view(op, m.checkpoint_id))
            .collect(),
    }
}

fn operator_view(op: &OperatorSnapshot, id: CheckpointId) -> OperatorView {
    OperatorView {
        uid: op.operator_id.to_string(),
        parallelism: op.parallelism,
        max_parallelism: op.max_parallelism,
        subtasks: op.subtasks.iter().map(|st| subtask_view(st, id)).collect(),
    }
}

fn subtask_view(st: &SubtaskSnapshot, id: CheckpointId) -> SubtaskView {
    SubtaskView {
        subtask: st.subtask,
        keyed: st.keyed.iter().map(|k| keyed_view(k, id)).collect(),
        operator_state: st.operator.as_ref().map(|o| operator_state_view(o, id)),
    }
}

fn file_view(stream: &StreamHandle, uploaded_by: CheckpointId, this: CheckpointId) -> FileView {
    FileView {
        path: stream.describe(),
        size: stream.size,
        crc32: format!("{:08x}", stream.crc32),
        origin: if uploaded_by == this { "new" } else { "shared" },
        uploaded_by: uploaded_by.get(),
    }
}

fn keyed_view(handle: &KeyedStateHandle, id: CheckpointId) -> KeyedView {
    let range = handle.key_groups();
    let (format, backend, files) = match handle {
        KeyedStateHandle::KeyGroups(h) => {
            ("key_groups", &h.backend, vec![file_view(&h.stream, id, id)])
        }
        KeyedStateHandle::Incremental(h) => {
            let mut files: Vec<FileView> = h
                .shared
                .iter()
                .map(|f| file_view(&f.handle, f.uploaded_by, id))
                .collect();
            files.extend(h.private.iter().map(|f| file_view(&f.handle, id, id)));
            files.push(file_view(&h.meta, id, id));
            ("incremental", &h.backend, files)
        }
    };
    KeyedView {
        format,
        backend: backend.clone(),
        key_group_start: range.start().get(),
        key_group_end: range.end().map(|kg| kg.get()),
        files,
    }
}

fn operator_state_view(handle: &OperatorStateHandle, id: CheckpointId) -> OperatorStateView {
    OperatorStateView {
        file: file_view(&handle.stream, id, id),
        states: handle
            .states
            .iter()
            .map(|s| StateView {
                name: s.name.clone(),
                mode: match s.mode {
                    OperatorStateMode::Split => "split",
                    OperatorStateMode::Union => "union",
                },
                elements: s.elements,
            })
            .collect(),
    }
}

fn print(v: &Inspection, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(out, "checkpoint {} of job {}", v.checkpoint_id, v.job_id)?;
    writeln!(out, "  dir          {}", v.dir)?;
    writeln!(out, "  time         {}", v.time)?;
    writeln!(out, "  kind         {}", v.kind)?;
    writeln!(
        out,
        "  state size   {} ({} bytes)",
        human::size(v.state_size),
        v.state_size
    )?;
    writeln!(
        out,
        "  written      {} ({} bytes) by this checkpoint",
        human::size(v.checkpointed_size),
        v.checkpointed_size
    )?;
    if v.operators.is_empty() {
        writeln!(out, "no operator state")?;
    }
    for op in &v.operators {
        writeln!(
            out,
            "operator {}  parallelism {}  max parallelism {}",
            op.uid, op.parallelism, op.max_parallelism
        )?;
        for st in &op.subtasks {
            writeln!(out, "  subtask {}", st.subtask)?;
            for k in &st.keyed {
                let range = match k.key_group_end {
                    Some(end) => format!("{}..={end}", k.key_group_start),
                    None => "none".to_owned(),
                };
                let format = if k.format == "incremental" {
                    " (incremental)"
                } else {
                    ""
                };
                writeln!(
                    out,
                    "    keyed state  backend {}{format}  key groups {range}",
                    k.backend
                )?;
                for f in &k.files {
                    print_file(f, k.format == "incremental", out)?;
                }
            }
            if let Some(o) = &st.operator_state {
                writeln!(out, "    operator state")?;
                print_file(&o.file, false, out)?;
                for s in &o.states {
                    writeln!(
                        out,
                        "        state {}  mode {}  {} elements",
                        s.name, s.mode, s.elements
                    )?;
                }
            }
            if st.keyed.is_empty() && st.operator_state.is_none() {
                writeln!(out, "    no state")?;
            }
        }
    }
    Ok(())
}

fn print_file(f: &FileView, mark_origin: bool, out: &mut dyn Write) -> anyhow::Result<()> {
    let origin = match (mark_origin, f.origin) {
        (false, _) => String::new(),
        (true, "new") => "  new".to_owned(),
        (true, _) => format!("  shared (from chk {})", f.uploaded_by),
    };
    writeln!(
        out,
        "      {}  {} bytes  crc32 {}{origin}",
        f.path, f.size, f.crc32
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use state_core::{IncrementalHandle, NamedStream, SharedFile};
    use state_core::{KeyGroup, KeyGroupRange, StreamLocation};

    use super::*;

    fn stream(path: &str, size: u64) -> StreamHandle {
        StreamHandle {
            location: StreamLocation::File(path.to_owned()),
            size,
            crc32: 0xab,
        }
    }

    #[test]
    fn incremental_files_are_marked_new_or_shared() {
        let handle = KeyedStateHandle::Incremental(IncrementalHandle {
            backend: "rocks".into(),
            backend_id: "b-1".into(),
            range: KeyGroupRange::new(KeyGroup(0), KeyGroup(9)),
            checkpoint_id: CheckpointId(5),
            shared: vec![
                SharedFile {
                    name: "000001.sst".into(),
                    handle: stream("shared/000001.sst", 100),
                    uploaded_by: CheckpointId(3),
                },
                SharedFile {
                    name: "000002.sst".into(),
                    handle: stream("shared/000002.sst", 50),
                    uploaded_by: CheckpointId(5),
                },
            ],
            private: vec![NamedStream {
                name: "MANIFEST-000003".into(),
                handle: stream("chk-5/MANIFEST-000003", 7),
            }],
            meta: stream("chk-5/meta", 9),
        });
        let view = keyed_view(&handle, CheckpointId(5));
        assert_eq!(view.format, "incremental");
        assert_eq!((view.key_group_start, view.key_group_end), (0, Some(9)));
        let files: Vec<(&str, &str, u64)> = view
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.origin, f.uploaded_by))
            .collect();
        assert_eq!(
            files,
            [
                ("shared/000001.sst", "shared", 3),
                ("shared/000002.sst", "new", 5),
                ("chk-5/MANIFEST-000003", "new", 5),
                ("chk-5/meta", "new", 5),
            ]
        );
        assert_eq!(view.files[0].crc32, "000000ab");
        let mut out = Vec::new();
        print_file(&view.files[0], true, &mut out).unwrap();
        let line = String::from_utf8(out).unwrap();
        assert!(line.contains("shared (from chk 3)"), "{line}");
    }
}
