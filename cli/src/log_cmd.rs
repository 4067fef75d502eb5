//! `cairn log append|tail`: write to and read a replayable partitioned log
//! (a Kafka topic on local files, see [`executor::log`]), like Kafka's
//! console producer and consumer.
//!
//! ```text
//! cairn log append <dir> <topic> [record…] [--partition N | --key K] [--partitions N] [--quiet]
//! cairn log tail   <dir> <topic> [--partition N [--from-offset O]] [--follow] [--json]
//! ```
//!
//! `append` writes the records given as arguments, or one per line of stdin
//! when there are none, and prints `partition P offset O` per record.
//! `tail` prints `P:O  value` per record (`--json`: one JSON object per line).

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use executor::ExecutorError;
use executor::log::{LogRecord, PartitionReader, Topic, TopicWriter};

/// How often `tail --follow` looks for new records.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Bytes buffered per partition when appending lines from a pipe or file.
const BULK_BUFFER: usize = 64 * 1024;

/// `cairn log` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum LogCommand {
    /// Append records to a topic (created if missing), from the arguments or
    /// one per line of stdin; prints `partition P offset O` per record
    #[command(
        after_help = "Without --partition, a --key picks the partition by hash \
                            (MurmurHash3 of the key modulo the partition count), \
                            else records go round-robin."
    )]
    Append(AppendArgs),
    /// Print the records of a topic with their partition and offset (`P:O  value`)
    #[command(after_help = TAIL_HELP)]
    Tail(TailArgs),
}

const TAIL_HELP: &str = "Text output: one line per record, `<partition>:<offset>  <value>`.\n\
--json: one JSON object per line with the fields partition, offset, timestamp_millis, \
key (string or null) and value (invalid UTF-8 replaced by U+FFFD).\n\
--follow polls for new records every 100 ms until stdin is closed (Ctrl-D) or the \
process is interrupted (Ctrl-C).";

/// `cairn log append` options.
#[derive(Debug, clap::Args)]
pub(crate) struct AppendArgs {
    /// The directory holding the topic (`<dir>/<topic>/`)
    dir: PathBuf,
    /// The topic's name
    topic: String,
    /// The records; without any, one record per line of stdin
    records: Vec<String>,
    /// Append every record to this partition
    #[arg(
        long,
        allow_hyphen_values = true,
        value_name = "N",
        conflicts_with = "key"
    )]
    partition: Option<u32>,
    /// The key of every record; picks the partition by hash
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// Create the topic with N partitions if it does not exist (default 1);
    /// an existing topic must have exactly N
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    partitions: Option<u32>,
    /// Print one summary line instead of one line per record
    #[arg(long)]
    quiet: bool,
}

/// `cairn log tail` options.
#[derive(Debug, clap::Args)]
pub(crate) struct TailArgs {
    /// The directory holding the topic (`<dir>/<topic>/`)
    dir: PathBuf,
    /// The topic's name
    topic: String,
    /// Only this partition (default: every partition, one after the other)
    #[arg(long, allow_hyphen_values = true, value_name = "N")]
    partition: Option<u32>,
    /// Start at this offset of --partition (default 0)
    #[arg(long, value_name = "O", requires = "partition")]
    from_offset: Option<u64>,
    /// Keep printing records as they are appended, until stdin closes or Ctrl-C
    #[arg(long)]
    follow: bool,
    /// One JSON object per record and line instead of text
    #[arg(long)]
    json: bool,
}

/// Runs a `cairn log` command; output on `out`.
pub(crate) fn run(command: LogCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match command {
        LogCommand::Append(args) => append(&args, out),
        LogCommand::Tail(args) => tail(&args, out),
    }
}

fn open_for_append(dir: &Path, name: &str, partitions: Option<u32>) -> anyhow::Result<Topic> {
    let topic = match partitions {
        Some(0) => bail!("--partitions 0: a topic needs at least 1 partition"),
        Some(n) => Topic::open_or_create(dir, name, n).map_err(plain)?,
        None => match Topic::open(dir, name) {
            Ok(topic) => topic,
            // Only a missing descriptor means "create"; anything else is an error.
            Err(_) if !dir.join(name).join("topic.meta").exists() => {
                Topic::create(dir, name, 1).map_err(plain)?
            }
            Err(e) => return Err(plain(e)),
        },
    };
    Ok(topic)
}

/// Counts appended records per partition for the summary.
struct Appended<'a> {
    out: &'a mut dyn Write,
    quiet: bool,
    per_partition: Vec<u64>,
}

impl Appended<'_> {
    fn record(&mut self, partition: u32, offset: u64) -> anyhow::Result<()> {
        if let Some(n) = self.per_partition.get_mut(partition as usize) {
            *n += 1;
        }
        if !self.quiet {
            writeln!(self.out, "partition {partition} offset {offset}")?;
        }
        Ok(())
    }
}

fn append(args: &AppendArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let topic = open_for_append(&args.dir, &args.topic, args.partitions)?;
    if let Some(p) = args.partition {
        topic.partition_path(p).map_err(plain)?;
    }
    let key = args.key.as_deref().map(str::as_bytes);
    let mut appended = Appended {
        out,
        quiet: args.quiet,
        per_partition: vec![0; topic.partitions() as usize],
    };
    let stdin = std::io::stdin();
    let from_stdin = args.records.is_empty();
    // Interactive input is written through line by line (readers see each
    // record at once); piped input is batched.
    let buffer = if from_stdin && !stdin.is_terminal() {
        BULK_BUFFER
    } else {
        0
    };
    let mut writer = topic.writer().map_err(plain)?.buffered(buffer);
    if from_stdin {
        let mut line = Vec::new();
        let mut input = stdin.lock();
        loop {
            line.clear();
            let n = input
                .read_until(b'\n', &mut line)
                .context("reading records from stdin")?;
            if n == 0 {
                break;
            }
            let record = strip_line_end(&line);
            append_one(&mut writer, key, record, args.partition, &mut appended)?;
        }
    } else {
        for record in &args.records {
            append_one(
                &mut writer,
                key,
                record.as_bytes(),
                args.partition,
                &mut appended,
            )?;
        }
    }
    writer.sync().map_err(plain)?;
    if args.quiet {
        let total: u64 = appended.per_partition.iter().sum();
        let parts: Vec<String> = appended
            .per_partition
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| format!("{p}: {n}"))
            .collect();
        writeln!(
            appended.out,
            "appended {total} records to topic {} (per partition: {})",
            topic.name(),
            if parts.is_empty() {
                "none".to_owned()
            } else {
                parts.join(", ")
            }
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

fn strip_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn append_one(
    writer: &mut TopicWriter,
    key: Option<&[u8]>,
    value: &[u8],
    partition: Option<u32>,
    appended: &mut Appended<'_>,
) -> anyhow::Result<()> {
    let (p, offset) = writer.append(key, value, partition).map_err(plain)?;
    appended.record(p, offset)
}

fn tail(args: &TailArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let topic = Topic::open(&args.dir, &args.topic).map_err(plain)?;
    let partitions: Vec<u32> = match args.partition {
        Some(p) => {
            topic.partition_path(p).map_err(plain)?;
            vec![p]
        }
        None => (0..topic.partitions()).collect(),
    };
    let from = args.from_offset.unwrap_or(0);
    let mut readers = partitions
        .iter()
        .map(|&p| topic.reader(p, from))
        .collect::<Result<Vec<_>, _>>()
        .map_err(plain)?;
    let stop = args.follow.then(stop_when_stdin_closes);
    let mut line = String::new();
    loop {
        for reader in &mut readers {
            if !print_available(reader, args.json, &mut line, out)? {
                // stdout was closed (`| head`): nothing more to do.
                return Ok(ExitCode::SUCCESS);
            }
        }
        match &stop {
            None => break,
            Some(stop) if stop.load(Ordering::Acquire) => break,
            Some(_) => {
                flush_or_closed(out)?;
                std::thread::sleep(FOLLOW_POLL);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints what `reader` has now; false if stdout was closed.
fn print_available(
    reader: &mut PartitionReader,
    json: bool,
    line: &mut String,
    out: &mut dyn Write,
) -> anyhow::Result<bool> {
    while let Some(record) = reader.next().map_err(plain)? {
        line.clear();
        format_record(&record, json, line)?;
        match out.write_all(line.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(false),
            Err(e) => return Err(e).context("writing to stdout"),
        }
    }
    Ok(true)
}

fn flush_or_closed(out: &mut dyn Write) -> anyhow::Result<()> {
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn format_record(record: &LogRecord, json: bool, line: &mut String) -> anyhow::Result<()> {
    use std::fmt::Write as _;
    if json {
        let value = serde_json::json!({
            "partition": record.partition,
            "offset": record.offset,
            "timestamp_millis": record.timestamp_millis,
            "key": record.key_str(),
            "value": record.value_str(),
        });
        writeln!(line, "{value}")?;
    } else {
        writeln!(
            line,
            "{}:{}  {}",
            record.partition,
            record.offset,
            record.value_str()
        )?;
    }
    Ok(())
}

/// A flag set once stdin reaches its end (or fails), read on a helper thread.
fn stop_when_stdin_closes() -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("stdin-watch".into())
        .spawn(move || {
            let mut sink = [0u8; 1024];
            let mut stdin = std::io::stdin();
            while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
            flag.store(true, Ordering::Release);
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot watch stdin; --follow runs until interrupted");
    }
    stop
}

/// An executor error as a one-line message; "invalid job: " is dropped from
/// errors that are about the log or its options rather than a job.
pub(crate) fn plain(error: ExecutorError) -> anyhow::Error {
    match error {
        ExecutorError::InvalidJob(message) => anyhow::Error::msg(message),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record read back from a real topic (the cli does not depend on `bytes`).
    fn record(key: Option<&str>, value: &[u8]) -> LogRecord {
        let dir = tempfile::tempdir().unwrap();
        let topic = Topic::create(dir.path(), "t", 1).unwrap();
        let mut writer = topic.writer().unwrap();
        writer
            .append_with_timestamp(7, key.map(str::as_bytes), value, None)
            .unwrap();
        drop(writer);
        topic.reader(0, 0).unwrap().next().unwrap().unwrap()
    }

    #[test]
    fn lines_lose_their_line_ends_only() {
        assert_eq!(strip_line_end(b"a b\r\n"), b"a b");
        assert_eq!(strip_line_end(b"a\n"), b"a");
        assert_eq!(strip_line_end(b"a"), b"a");
        assert_eq!(strip_line_end(b"\n"), b"");
        assert_eq!(strip_line_end(b"a\rb\n"), b"a\rb");
    }

    #[test]
    fn records_print_as_text_or_json_lines() {
        let mut line = String::new();
        format_record(&record(None, b"a c"), false, &mut line).unwrap();
        assert_eq!(line, "0:0  a c\n");
        line.clear();
        format_record(&record(Some("k"), b"v\xff"), true, &mut line).unwrap();
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"partition": 0, "offset": 0, "timestamp_millis": 7,
                               "key": "k", "value": "v\u{fffd}"})
        );
    }

    #[test]
    fn invalid_job_errors_lose_their_prefix() {
        let err = plain(ExecutorError::InvalidJob(
            "topic \"x\" does not exist".into(),
        ));
        assert_eq!(err.to_string(), "topic \"x\" does not exist");
        let err = plain(ExecutorError::Canceled);
        assert_eq!(err.to_string(), "job was cancelled");
    }
}
