//! `cairn checkpoints rescale|convert <checkpoint> [--parallelism N]
//! --format canonical --out DIR`: rewrites any checkpoint or savepoint
//! offline as a canonical savepoint directory.
//!
//! Keyed state is read key group by key group (native RocksDB and heap handles
//! through a temporary instance, see `state_open.rs`) and written at `N`
//! subtasks, one stream each; operator state is redistributed exactly as a
//! restore at `N` would do it (split lists dealt out, union lists whole;
//! [`state_core::OperatorStateStore::restore`]). `convert` keeps each
//! operator's parallelism unless `--parallelism` is given; `rescale` needs
//! it. The result has the source's checkpoint id, job id and time, and
//! restores with `cairn run … --from DIR` into any backend at any parallelism.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use state_core::{CheckpointStorage, KeyGroup, MaxParallelism, SavepointReader, SavepointWriter};

use crate::human;
use crate::state_open;

/// The format the rewritten checkpoint is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum FormatArg {
    /// cairn's full key-group streams: any backend, any parallelism
    Canonical,
}

/// `cairn checkpoints rescale|convert` options.
#[derive(Debug, Args)]
pub(crate) struct RescaleArgs {
    /// A checkpoint or savepoint: chk-<n> directory, _metadata, or job/savepoint directory
    path: PathBuf,
    /// Subtasks of every operator in the result
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    parallelism: Option<u32>,
    /// The result's format
    #[arg(long, value_enum, default_value = "canonical")]
    format: FormatArg,
    /// The savepoint directory to create (must not exist, or be empty)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

/// Runs `rescale` (`needs_parallelism`) or `convert`.
pub(crate) fn run(
    args: &RescaleArgs,
    needs_parallelism: bool,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    match args.format {
        FormatArg::Canonical => {}
    }
    if needs_parallelism && args.parallelism.is_none() {
        bail!("--parallelism is required: the number of subtasks to rescale to");
    }
    if args.parallelism == Some(0) {
        bail!("--parallelism 0: must be at least 1");
    }
    state_open::check_new_dir(&args.out)?;
    let opened = state_open::open(&args.path, None)?;
    let reader = &opened.reader;
    let source = reader.metadata().clone();
    for op in &source.operators {
        if let Some(n) = args.parallelism
            && n > op.max_parallelism
        {
            bail!(
                "--parallelism {n}: operator {} has max parallelism {}, which bounds its subtasks",
                op.operator_id,
                op.max_parallelism
            );
        }
    }
    let storage: Arc<dyn CheckpointStorage> = Arc::new(state_open::savepoint_dir(&args.out)?);
    let mut writer = SavepointWriter::new(
        storage,
        source.job_id.clone(),
        source.checkpoint_id,
        source.timestamp_millis,
    )
    .map_err(human::anyhow)?;
    let mut entries = 0u64;
    for op in &source.operators {
        let uid = op.operator_id.0.as_str();
        let n = args.parallelism.unwrap_or(op.parallelism);
        let max = MaxParallelism::new(op.max_parallelism).map_err(human::anyhow)?;
        entries += rewrite_operator(reader, &mut writer, uid, max, n)
            .with_context(|| format!("operator {uid}"))?;
    }
    let metadata = writer.finish().map_err(human::anyhow)?;
    let parallelisms: Vec<String> = metadata
        .operators
        .iter()
        .map(|op| format!("{} x{}", op.operator_id, op.parallelism))
        .collect();
    writeln!(
        out,
        "wrote canonical savepoint {} (checkpoint {} of job {}): {entries} keyed entries; operators {}",
        args.out.display(),
        metadata.checkpoint_id,
        metadata.job_id,
        parallelisms.join(", ")
    )?;
    Ok(ExitCode::SUCCESS)
}

/// Writes operator `uid`'s keyed and operator state at `n` subtasks;
/// returns how many keyed records it wrote.
fn rewrite_operator(
    reader: &SavepointReader,
    writer: &mut SavepointWriter,
    uid: &str,
    max: MaxParallelism,
    n: u32,
) -> anyhow::Result<u64> {
    let op = reader.operator(uid).map_err(human::anyhow)?;
    let operator_id = op.operator_id.clone();
    let mut records = 0u64;
    if op.subtasks.iter().any(|s| !s.keyed.is_empty()) {
        let states = reader.states(uid).map_err(human::anyhow)?;
        let mut keyed = writer
            .keyed_operator(operator_id.clone(), max, n, &states)
            .map_err(human::anyhow)?;
        let mut current: Option<KeyGroup> = None;
        reader
            .read_keyed(uid, None, &mut |d, r| {
                let index = states.iter().position(|s| s.name == d.name).unwrap_or(0);
                if current != Some(r.key_group) {
                    keyed.begin_key_group(r.key_group)?;
                    current = Some(r.key_group);
                }
                records += 1;
                keyed.write_record(index as u32, r)
            })
            .map_err(human::anyhow)?;
        keyed.finish().map_err(human::anyhow)?;
    }
    for subtask in 0..n {
        if let Some(store) = reader
            .operator_state(uid, n, subtask)
            .map_err(human::anyhow)?
        {
            writer
                .write_operator_state(&operator_id, max, n, subtask, &store)
                .map_err(human::anyhow)?;
        }
    }
    Ok(records)
}
