//! `cairn-bench state-size`: its options, the runs a `--sweep` asks for,
//! and their report as text, JSON or a plot.
//!
//! ```text
//! cairn-bench state-size [--backend heap,fs,…] [--incremental] [--savepoints] [--settle] [--keys K] [--value-size S]
//!                        [--update-fraction F] [--rounds R] [--parallelism P] [--seed N]
//!                        [--sweep keys=…|value-size=…]… [--plot FILE.svg]
//!                        [--dir DIR] [--checkpoint-url URL] [--keep] [--json]
//! ```
//!
//! One run is measured in [`measure`]; its checkpoints in [`checkpointing`],
//! its restores in [`restore`].

mod checkpointing;
mod lsm;
mod measure;
mod memory;
mod plot;
mod restore;
mod subtasks;

use std::io::Write;
use std::path::PathBuf;

use cairn_cli::human;
use cairn_cli::job_args::BackendKind;

use crate::report;

/// The fields of `cairn-bench state-size --json`.
pub(crate) const JSON_HELP: &str = "\
JSON (--json): one object per run (an array of them with --sweep or several
backends): backend, storage (\"file\" or the --checkpoint-url), incremental, keys, value_size, update_fraction, rounds,
parallelism, seed, raw_bytes, load_seconds, load_ops_per_sec, settle_seconds
(--settle; else null), update_ms [per
round], checkpoints [{id, full_bytes, written_bytes, sync_ms, async_ms,
duration_ms (to the backends told it completed), discard_ms (deleting the
checkpoints it subsumed, after that), storage_bytes, rocks (null unless rocks:
{pending_compaction_bytes, running_compactions, files_per_level,
bytes_per_level, new_bytes_per_level (SST files the previous checkpoint lacked,
by the level they are in: L0 flushed, deeper compacted)}, read once the
snapshot is written)}], restore_local_ms (from the local checkpoint
copies: on disk for rocks --incremental, in memory for heap and fs; null for
rocks full snapshots, which keep none), restore_storage_ms (with the local
copies removed),
restored_keys, restore_exact (both restores),
peak_rss_bytes, memory [{phase (load; checkpoints: the rounds, their
checkpoints and savepoints; restore-local; restore-storage: each restore with
the check reading every key back), peak_rss_bytes (VmHWM in the phase),
peak_anon_bytes and peak_file_bytes (RssAnon and RssFile, sampled every
10 ms), end_anon_bytes, heaps {rust_committed (mimalloc), c_in_use and
c_free_held (glibc malloc: RocksDB's C++)}, rocks (null unless rocks:
{budget_bytes, block_cache_bytes (memtables included), write_buffers_bytes,
pinned_bytes, value_caches_bytes, table_readers_bytes (outside the
cache)})}], io_read_bytes, io_write_bytes, savepoints [{format, bytes,
files, sync_ms, async_ms, duration_ms}] (empty without --savepoints), dir
(null unless --keep).
Sizes in bytes, times in ms unless the name says otherwise.";

/// Options of `cairn-bench state-size`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct StateSizeArgs {
    /// Backends to measure, comma-separated (heap: checkpoints in memory; fs: in files)
    #[arg(long, value_enum, value_delimiter = ',', default_value = "heap")]
    backend: Vec<BackendKind>,
    /// Incremental checkpoints where the backend supports them
    #[arg(long)]
    incremental: bool,
    /// After the last round, take a canonical and a native savepoint of the
    /// same state and report their time and size beside the checkpoints
    #[arg(long)]
    savepoints: bool,
    /// After the load, wait until RocksDB has finished flushing and compacting it
    /// before the first checkpoint, so the rounds measure the churn at steady state
    /// rather than the load's compaction debt (without it: right after the load)
    #[arg(long)]
    settle: bool,
    /// Keys loaded (`key-0000000`…)
    #[arg(long, allow_hyphen_values = true, value_name = "K", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..=4_294_967_295))]
    keys: u64,
    /// Bytes per value (incompressible)
    #[arg(long, allow_hyphen_values = true, value_name = "S", default_value_t = 100,
          value_parser = clap::value_parser!(u64).range(0..=67_108_864))]
    value_size: u64,
    /// Fraction of the keys updated per round (0 to 1)
    #[arg(long, allow_hyphen_values = true, value_name = "F", default_value_t = 0.01, value_parser = parse_fraction)]
    update_fraction: f64,
    /// Update rounds, each followed by a checkpoint
    #[arg(long, allow_hyphen_values = true, value_name = "R", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=65_535))]
    rounds: u32,
    /// Subtasks (each on its own thread, owning its key groups)
    #[arg(long, allow_hyphen_values = true, value_name = "P", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    parallelism: u32,
    /// Seed of the values and of the keys each round updates
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        default_value_t = 42
    )]
    seed: u64,
    /// Run once per value: `keys=100000,1000000` or `value-size=100,1000` (repeatable: all combinations)
    #[arg(long, value_name = "DIM=V,V,…", value_parser = parse_sweep)]
    sweep: Vec<Sweep>,
    /// Draw checkpoint size and time (with --incremental, also each incremental checkpoint's),
    /// and restore time against state size into an SVG file (log axes past a 100x span)
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Where checkpoint files go (fs, rocks); default: a temp directory
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Also run each backend with its checkpoints in this object store
    /// (`s3://bucket/prefix`, credentials and endpoint from the AWS_* environment),
    /// after the run on the local filesystem; needs the `object-store` feature
    #[arg(long, value_name = "URL")]
    checkpoint_url: Option<String>,
    /// Keep the checkpoint data after the run (it is removed by default)
    #[arg(long)]
    keep: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// One `--sweep` dimension and its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sweep {
    /// `keys=…`.
    Keys(Vec<u64>),
    /// `value-size=…`.
    ValueSize(Vec<u64>),
}

fn parse_sweep(text: &str) -> Result<Sweep, String> {
    let (dim, values) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected keys=N,N,… or value-size=N,N,…"))?;
    let values = values
        .split(',')
        .map(|v| {
            v.trim()
                .replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{text:?}: {v:?} is not a whole number"))
        })
        .collect::<Result<Vec<u64>, String>>()?;
    match dim.trim() {
        "keys" if values.iter().all(|&k| (1..=4_294_967_295).contains(&k)) => {
            Ok(Sweep::Keys(values))
        }
        "keys" => Err(format!("{text:?}: keys must be between 1 and 4294967295")),
        "value-size" | "value_size" if values.iter().all(|&s| s <= 67_108_864) => {
            Ok(Sweep::ValueSize(values))
        }
        "value-size" | "value_size" => Err(format!("{text:?}: value sizes must be at most 64 MiB")),
        other => Err(format!(
            "{text:?}: unknown dimension {other:?} (keys or value-size)"
        )),
    }
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("{text:?} is not a fraction between 0 and 1")),
    }
}

/// Runs `cairn-bench state-size`: every run the options ask for, then the report.
pub(crate) fn run(args: &StateSizeArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let mut keys = vec![args.keys];
    let mut sizes = vec![args.value_size];
    for sweep in &args.sweep {
        match sweep {
            Sweep::Keys(v) => keys.clone_from(v),
            Sweep::ValueSize(v) => sizes.clone_from(v),
        }
    }
    let mut reports = Vec::new();
    let mut storages = vec![None];
    if let Some(url) = &args.checkpoint_url {
        storages.push(Some(url.clone()));
    }
    for &backend in &args.backend {
        for &k in &keys {
            for &size in &sizes {
                for checkpoint_url in &storages {
                    let params = measure::Params {
                        checkpoint_url: checkpoint_url.clone(),
                        backend,
                        incremental: args.incremental,
                        keys: k,
                        value_size: usize::try_from(size)?,
                        update_fraction: args.update_fraction,
                        rounds: args.rounds,
                        parallelism: args.parallelism,
                        seed: args.seed,
                        show_progress: !args.json,
                        savepoints: args.savepoints,
                        settle: args.settle,
                    };
                    reports.push(measure::run_one(&params, args.dir.as_deref(), args.keep)?);
                }
            }
        }
    }
    if let Some(path) = &args.plot {
        plot::draw(path, &reports)?;
    }
    let many = reports.len() > 1 || !args.sweep.is_empty();
    if args.json {
        if many {
            serde_json::to_writer_pretty(&mut *out, &reports)?;
        } else if let Some(report) = reports.first() {
            serde_json::to_writer_pretty(&mut *out, report)?;
        }
        writeln!(out)?;
    } else if many {
        write_table(&reports, out)?;
    } else {
        for report in &reports {
            write_one(report, out)?;
        }
    }
    if let Some(path) = &args.plot
        && !args.json
    {
        writeln!(out, "plot written to {}", path.display())?;
    }
    Ok(())
}

fn write_one(r: &measure::StateSizeReport, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "{} keys of {} B in {} ({}), checkpoints in {}, parallelism {}, {} round(s) updating {}",
        r.keys,
        r.value_size,
        r.backend,
        if r.incremental { "incremental" } else { "full" },
        r.storage,
        r.parallelism,
        r.rounds,
        r.update_fraction
    )?;
    writeln!(
        out,
        "load: {:.3} s, {:.0} puts/s (raw keys and values {})",
        r.load_seconds,
        r.load_ops_per_sec,
        human::size(r.raw_bytes)
    )?;
    if let Some(s) = r.settle_seconds {
        writeln!(
            out,
            "settled: the load's compactions finished {s:.3} s after it"
        )?;
    }
    let lsm = r.checkpoints.iter().any(|c| c.rocks.is_some());
    write!(
        out,
        "{:>6} {:>11} {:>11} {:>10} {:>10} {:>11}",
        "chk", "full", "written", "sync ms", "async ms", "in storage"
    )?;
    if lsm {
        write!(out, " {:>11}  new SST bytes per level", "compaction")?;
    }
    writeln!(out)?;
    for c in &r.checkpoints {
        write!(
            out,
            "{:>6} {:>11} {:>11} {:>10} {:>10} {:>11}",
            c.id,
            human::size(c.full_bytes),
            human::size(c.written_bytes),
            report::opt(c.sync_ms),
            report::opt(c.async_ms),
            c.storage_bytes.map_or("-".into(), human::size)
        )?;
        if let Some(f) = &c.rocks {
            let levels: Vec<String> = f
                .new_bytes_per_level
                .iter()
                .enumerate()
                .filter(|(_, b)| **b > 0)
                .map(|(l, b)| format!("L{l} {}", human::size(*b)))
                .collect();
            write!(
                out,
                " {:>11}  {}",
                human::size(f.pending_compaction_bytes),
                levels.join(", ")
            )?;
        }
        writeln!(out)?;
    }
    writeln!(
        out,
        "restore from storage: {} ms ({} of {} keys back{}); from a local copy: {}",
        r.restore_storage_ms,
        r.restored_keys,
        r.keys,
        if r.restore_exact {
            ", exact"
        } else {
            ", NOT exact"
        },
        r.restore_local_ms
            .map_or_else(|| "none".to_owned(), |v| format!("{v} ms"))
    )?;
    writeln!(
        out,
        "peak RSS {}, I/O read {}, written {}",
        r.peak_rss_bytes.map_or("-".into(), human::size),
        r.io_read_bytes.map_or("-".into(), human::size),
        r.io_write_bytes.map_or("-".into(), human::size)
    )?;
    for s in &r.savepoints {
        writeln!(
            out,
            "{} savepoint: {} in {} files, sync {} ms, async {} ms, {} ms in all",
            s.format,
            human::size(s.bytes),
            s.files,
            s.sync_ms,
            s.async_ms,
            s.duration_ms
        )?;
    }
    if let Some(dir) = &r.dir {
        writeln!(out, "checkpoint data kept in {dir}")?;
    }
    Ok(())
}

fn write_table(reports: &[measure::StateSizeReport], out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "{:<6} {:>10} {:>7} {:>9} {:>11} {:>11} {:>9} {:>9} {:>10} {:>10} {:>6} storage",
        "backend",
        "keys",
        "value",
        "load s",
        "full",
        "last wrote",
        "sync ms",
        "async ms",
        "restore ms",
        "peak RSS",
        "exact"
    )?;
    for r in reports {
        let first = r.checkpoints.first();
        let last = r.checkpoints.last();
        writeln!(
            out,
            "{:<6} {:>10} {:>7} {:>9.3} {:>11} {:>11} {:>9} {:>9} {:>10} {:>10} {:>6} {}",
            r.backend,
            r.keys,
            r.value_size,
            r.load_seconds,
            first.map_or("-".into(), |c| human::size(c.full_bytes)),
            last.map_or("-".into(), |c| human::size(c.written_bytes)),
            report::opt(first.and_then(|c| c.sync_ms)),
            report::opt(first.and_then(|c| c.async_ms)),
            r.restore_storage_ms,
            r.peak_rss_bytes.map_or("-".into(), human::size),
            r.restore_exact,
            r.storage
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweeps_parse_and_name_what_is_wrong() {
        assert_eq!(parse_sweep("keys=1,1_000"), Ok(Sweep::Keys(vec![1, 1000])));
        assert_eq!(
            parse_sweep("value-size=10,0"),
            Ok(Sweep::ValueSize(vec![10, 0]))
        );
        assert!(parse_sweep("keys=0").unwrap_err().contains("keys"));
        assert!(parse_sweep("colour=1").unwrap_err().contains("colour"));
        assert!(parse_sweep("keys").unwrap_err().contains("keys=N"));
        assert!(parse_sweep("keys=1,x").unwrap_err().contains("\"x\""));
        assert_eq!(parse_fraction("0.5"), Ok(0.5));
        assert!(parse_fraction("1.5").is_err());
        assert!(parse_fraction("NaN").is_err());
    }
}
