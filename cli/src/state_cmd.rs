//! `cairn state list|dump|bootstrap`: the offline state tool (Flink's State
//! Processor API on the command line). Reads any backend's checkpoint or
//! savepoint without running the job; writes canonical savepoints a job
//! starts from with `cairn run … --from`.
//!
//! ```text
//! cairn state list <checkpoint|savepoint> [--json]
//! cairn state dump <checkpoint|savepoint> --operator UID --state NAME [--key K] [--key-type T] [--json|--csv]
//! cairn state bootstrap --operator UID --state NAME --input keys.jsonl --out DIR --type T [--kind K] …
//! ```
//!
//! `<checkpoint|savepoint>` is a `chk-<n>` directory, its `_metadata`, or a
//! job or savepoint directory (its newest completed checkpoint). Values are
//! decoded where the state's recorded type is one the tool knows
//! (`state_codec.rs`), else shown as hex. `dump` reads one key group at a
//! time and sorts its entries by key bytes, so its output does not depend
//! on the backend that wrote the checkpoint and its memory does not grow
//! with the state. Errors are one line naming the path, uid, state or
//! option, exit status 2.
//!
//! `list --json`, stable field names:
//!
//! ```text
//! {"checkpoint_id": 7, "job_id": "wc", "dir": "/ck/wc/chk-7", "kind": "full"|"incremental",
//!  "timestamp_millis": 1795306503120, "native_handles_converted": 0,
//!  "operators": [{"uid": "Sum", "parallelism": 2, "max_parallelism": 128,
//!    "keyed_states": [{"name": "reduce", "kind": "value"|"list"|"map"|"reducing"|"aggregating",
//!      "type": "cairn::wordcount::WordCount"|null, "ttl_millis": null|int, "entries": 5,
//!      "entries_per_key_group": {"12": 1, "40": 4}}],
//!    "operator_states": [{"name": "offsets", "mode": "split"|"union", "elements": 2}]}]}
//! ```
//!
//! `dump --json` streams one JSON array of `{"key_group": int, "key": K,
//! "namespace": N|null, "value": V}`; `--csv` the columns `key_group,key,namespace,value`
//! (strings bare, other values as JSON). Keys and namespaces are decoded as
//! `--key-type` when given, else as a string when they are one, else
//! `{"hex": "…"}`; a list's value is the array of its elements, a map's the
//! array of its `[user key, value]` pairs sorted by user key; a TTL state's
//! values are `{"value": …, "last_access_millis": …}`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;
use state_core::backend_support::{
    Record, RecordEntry, put_bytes, put_varint, take_bytes, take_varint,
};
use state_core::{KeyGroupRange, MaxParallelism, OperatorStateMode, StateError, StateLayout};

use crate::state_codec::{Ty, ValueView, key_value, kind_name};
use crate::state_open;
use crate::{human, state_bootstrap};

/// The `cairn state` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum StateCommand {
    /// Operators, keyed states (kind, TTL, type, entries per key group) and operator states of a checkpoint or savepoint
    #[command(after_help = LIST_JSON_HELP)]
    List(ListArgs),
    /// Print the entries of one keyed state, decoded where its type is known (else hex), in constant memory
    #[command(after_help = DUMP_HELP)]
    Dump(DumpArgs),
    /// Write a canonical savepoint holding one keyed state read from a JSON-lines file
    #[command(after_help = state_bootstrap::HELP)]
    Bootstrap(state_bootstrap::BootstrapArgs),
}

const LIST_JSON_HELP: &str = "\
JSON (--json): {\"checkpoint_id\": int, \"job_id\": str, \"dir\": str, \"kind\": \"full\"|\"incremental\",
  \"timestamp_millis\": int, \"native_handles_converted\": int, \"operators\": [{\"uid\": str,
  \"parallelism\": int, \"max_parallelism\": int, \"keyed_states\": [{\"name\": str, \"kind\": str,
  \"type\": str|null, \"ttl_millis\": int|null, \"entries\": int, \"entries_per_key_group\": {kg: int}}],
  \"operator_states\": [{\"name\": str, \"mode\": \"split\"|\"union\", \"elements\": int}]}]}
The path is a chk-<n> directory, its _metadata, or a job or savepoint directory (its newest checkpoint).
Exit status 0, or 2 if the path is not a checkpoint or a file of it cannot be read.";

const DUMP_HELP: &str = "\
Output: text `KEY [@ NAMESPACE] = VALUE` lines; --json one array of {\"key_group\": int, \"key\": K,
  \"namespace\": N|null, \"value\": V}; --csv columns key_group,key,namespace,value.
Entries come key group by key group, sorted by key bytes within one: the same state gives the same
output whichever backend wrote it. Undecodable bytes are {\"hex\": \"..\"} (0x.. in text and CSV).
Exit status 0, or 2 for a path that is not a checkpoint, an unknown --operator or --state, or a damaged file.";

/// `cairn state list` options.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// A checkpoint or savepoint: chk-<n> directory, _metadata, or job/savepoint directory
    path: PathBuf,
    /// Print one JSON document instead of text
    #[arg(long)]
    json: bool,
}

/// `cairn state dump` options.
#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    /// A checkpoint or savepoint: chk-<n> directory, _metadata, or job/savepoint directory
    path: PathBuf,
    /// The operator's uid
    #[arg(long, value_name = "UID")]
    operator: String,
    /// The keyed state's name
    #[arg(long, value_name = "NAME")]
    state: String,
    /// Only this key (a string, or a JSON value of --key-type)
    #[arg(long, value_name = "K")]
    key: Option<String>,
    /// The key type (a Rust type name such as u64 or alloc::string::String; default: strings where keys are strings)
    #[arg(long, value_name = "TYPE")]
    key_type: Option<String>,
    /// One JSON array of entries
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// CSV with a header line
    #[arg(long)]
    csv: bool,
}

/// Runs a `cairn state` subcommand.
pub(crate) fn run(command: StateCommand, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    match command {
        StateCommand::List(a) => list(&a, out),
        StateCommand::Dump(a) => dump(&a, out),
        StateCommand::Bootstrap(a) => state_bootstrap::run(&a, out),
    }
}

#[derive(Debug, Serialize)]
struct Listing {
    checkpoint_id: u64,
    job_id: String,
    dir: String,
    kind: &'static str,
    timestamp_millis: u64,
    native_handles_converted: usize,
    operators: Vec<OperatorListing>,
}

#[derive(Debug, Serialize)]
struct OperatorListing {
    uid: String,
    parallelism: u32,
    max_parallelism: u32,
    keyed_states: Vec<KeyedListing>,
    operator_states: Vec<OperatorStateListing>,
}

#[derive(Debug, Serialize)]
struct KeyedListing {
    name: String,
    kind: &'static str,
    #[serde(rename = "type")]
    type_name: Option<String>,
    ttl_millis: Option<u64>,
    entries: u64,
    entries_per_key_group: BTreeMap<u16, u64>,
}

#[derive(Debug, Serialize)]
struct OperatorStateListing {
    name: String,
    mode: &'static str,
    elements: u64,
}

fn list(args: &ListArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let opened = state_open::open(&args.path, None)?;
    let reader = &opened.reader;
    let metadata = reader.metadata();
    let mut operators = Vec::new();
    for op in &metadata.operators {
        let uid = op.operator_id.0.as_str();
        let has_keyed = op.subtasks.iter().any(|s| !s.keyed.is_empty());
        let mut keyed_states = Vec::new();
        if has_keyed {
            let states = reader.states(uid).map_err(human::anyhow)?;
            let mut counts: BTreeMap<String, BTreeMap<u16, u64>> = BTreeMap::new();
            reader
                .read_keyed(uid, None, &mut |d, r| {
                    *counts
                        .entry(d.name.clone())
                        .or_default()
                        .entry(r.key_group.0)
                        .or_default() += 1;
                    Ok(())
                })
                .map_err(human::anyhow)?;
            for d in states {
                let per_kg = counts.remove(&d.name).unwrap_or_default();
                keyed_states.push(KeyedListing {
                    entries: per_kg.values().sum(),
                    entries_per_key_group: per_kg,
                    kind: kind_name(d.kind),
                    type_name: d.type_name,
                    ttl_millis: d.ttl.map(|t| t.ttl_millis),
                    name: d.name,
                });
            }
        }
        let mut operator_states: Vec<OperatorStateListing> = Vec::new();
        for info in op.subtasks.iter().filter_map(|s| s.operator.as_ref()) {
            for s in &info.states {
                match operator_states.iter_mut().find(|o| o.name == s.name) {
                    Some(o) => o.elements += s.elements,
                    None => operator_states.push(OperatorStateListing {
                        name: s.name.clone(),
                        mode: match s.mode {
                            OperatorStateMode::Split => "split",
                            OperatorStateMode::Union => "union",
                        },
                        elements: s.elements,
                    }),
                }
            }
        }
        operators.push(OperatorListing {
            uid: uid.to_owned(),
            parallelism: op.parallelism,
            max_parallelism: op.max_parallelism,
            keyed_states,
            operator_states,
        });
    }
    let listing = Listing {
        checkpoint_id: metadata.checkpoint_id.get(),
        job_id: metadata.job_id.as_str().to_owned(),
        dir: opened.dir.display().to_string(),
        kind: crate::list::kind_name(metadata.kind),
        timestamp_millis: metadata.timestamp_millis,
        native_handles_converted: opened.converted,
        operators,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut *out, &listing)?;
        writeln!(out)?;
    } else {
        print_listing(&listing, out)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_listing(l: &Listing, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "checkpoint {} of job {} ({}, {}): {}",
        l.checkpoint_id,
        l.job_id,
        l.kind,
        human::timestamp(l.timestamp_millis),
        l.dir
    )?;
    if l.native_handles_converted > 0 {
        writeln!(
            out,
            "  ({} native snapshots read through a temporary backend)",
            l.native_handles_converted
        )?;
    }
    for op in &l.operators {
        writeln!(
            out,
            "operator {}: parallelism {}, max parallelism {}",
            op.uid, op.parallelism, op.max_parallelism
        )?;
        for s in &op.keyed_states {
            writeln!(
                out,
                "  keyed state {}: {}, type {}, {}, {} entries in {} key groups",
                s.name,
                s.kind,
                s.type_name.as_deref().unwrap_or("not recorded"),
                match s.ttl_millis {
                    Some(ms) => format!("TTL {ms} ms"),
                    None => "no TTL".to_owned(),
                },
                s.entries,
                s.entries_per_key_group.len()
            )?;
            if !s.entries_per_key_group.is_empty() {
                let groups: Vec<String> = s
                    .entries_per_key_group
                    .iter()
                    .map(|(kg, n)| format!("{kg}:{n}"))
                    .collect();
                writeln!(out, "    entries per key group: {}", groups.join(" "))?;
            }
        }
        for s in &op.operator_states {
            writeln!(
                out,
                "  operator state {}: {}, {} elements",
                s.name, s.mode, s.elements
            )?;
        }
    }
    Ok(())
}

/// How `dump` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Text,
    Json,
    Csv,
}

/// Prints the entries of one key group at a time, sorted by (key,
/// namespace) bytes. A key group's records are kept as bytes in one arena
/// (about the size of its decompressed block) with an index, and rendered
/// as they are printed: memory holds one key group, a `1/max_parallelism`
/// share of the state, never the state.
struct Printer<'a> {
    out: &'a mut dyn Write,
    format: Format,
    key_type: Option<Ty>,
    view: ValueView,
    /// The current key group's records: key, namespace, then the entry
    /// (tag 0 value, 1 list, 2 map, in the stream's record encoding).
    arena: Vec<u8>,
    /// Where each record starts in `arena`.
    starts: Vec<usize>,
    key_group: Option<u16>,
    printed: u64,
}

/// An entry as kept in the arena.
enum Kept<'b> {
    Value(&'b [u8]),
    List(Vec<&'b [u8]>),
    Map(Vec<(&'b [u8], &'b [u8])>),
}

/// The key, namespace and entry of the record at the front of `input`.
fn take_kept<'b>(input: &mut &'b [u8]) -> Option<(&'b [u8], &'b [u8], Kept<'b>)> {
    let key = take_bytes(input)?;
    let ns = take_bytes(input)?;
    let (&tag, rest) = input.split_first()?;
    *input = rest;
    let kept = match tag {
        0 => Kept::Value(take_bytes(input)?),
        1 => {
            let n = take_varint(input)?;
            Kept::List((0..n).map(|_| take_bytes(input)).collect::<Option<_>>()?)
        }
        _ => {
            let n = take_varint(input)?;
            Kept::Map(
                (0..n)
                    .map(|_| Some((take_bytes(input)?, take_bytes(input)?)))
                    .collect::<Option<_>>()?,
            )
        }
    };
    Some((key, ns, kept))
}

impl Printer<'_> {
    fn begin(&mut self) -> std::io::Result<()> {
        match self.format {
            Format::Text => Ok(()),
            Format::Json => write!(self.out, "["),
            Format::Csv => writeln!(self.out, "key_group,key,namespace,value"),
        }
    }

    /// Keeps `record`, printing the previous key group first when the
    /// record's is another.
    fn add(&mut self, record: &Record<'_>) -> std::io::Result<()> {
        let kg = record.key_group.0;
        if self.key_group != Some(kg) {
            self.flush_group()?;
            self.key_group = Some(kg);
        }
        self.starts.push(self.arena.len());
        let a = &mut self.arena;
        put_bytes(a, record.key);
        put_bytes(a, record.namespace);
        match record.entry {
            RecordEntry::Value(v) => {
                a.push(0);
                put_bytes(a, v);
            }
            RecordEntry::List(elements) => {
                a.push(1);
                put_varint(a, elements.len() as u64);
                for e in elements {
                    put_bytes(a, e);
                }
            }
            RecordEntry::Map(entries) => {
                a.push(2);
                put_varint(a, entries.len() as u64);
                for (k, v) in entries {
                    put_bytes(a, k);
                    put_bytes(a, v);
                }
            }
        }
        Ok(())
    }

    /// The JSON value of a kept entry (a map's pairs sorted by user key).
    fn entry_value(&self, kept: Kept<'_>) -> Value {
        match kept {
            Kept::Value(v) => self.view.value(v),
            Kept::List(elements) => {
                Value::Array(elements.iter().map(|e| self.view.value(e)).collect())
            }
            Kept::Map(mut entries) => {
                entries.sort_by_key(|(k, _)| *k);
                Value::Array(
                    entries
                        .into_iter()
                        .map(|(k, v)| Value::Array(vec![self.view.user_key(k), self.view.value(v)]))
                        .collect(),
                )
            }
        }
    }

    fn flush_group(&mut self) -> std::io::Result<()> {
        let Some(kg) = self.key_group else {
            return Ok(());
        };
        let arena = std::mem::take(&mut self.arena);
        let mut starts = std::mem::take(&mut self.starts);
        let head = |start: usize| {
            let mut input = arena.get(start..).unwrap_or_default();
            (take_bytes(&mut input), take_bytes(&mut input))
        };
        starts.sort_by(|a, b| head(*a).cmp(&head(*b)));
        for start in &starts {
            let mut input = arena.get(*start..).unwrap_or_default();
            let Some((key, ns, kept)) = take_kept(&mut input) else {
                continue;
            };
            let k = key_value(self.key_type.as_ref(), key);
            let ns = key_value(None, ns);
            let value = self.entry_value(kept);
            match self.format {
                Format::Text => {
                    let ns = if ns.is_null() {
                        String::new()
                    } else {
                        format!(" @ {}", text(&ns))
                    };
                    writeln!(self.out, "{}{ns} = {}", text(&k), text(&value))?;
                }
                Format::Json => {
                    let sep = if self.printed == 0 { "\n" } else { ",\n" };
                    let doc = serde_json::json!({
                        "key_group": kg, "key": k, "namespace": ns, "value": value,
                    });
                    write!(self.out, "{sep}{doc}")?;
                }
                Format::Csv => writeln!(
                    self.out,
                    "{kg},{},{},{}",
                    csv_field(&k),
                    if ns.is_null() {
                        String::new()
                    } else {
                        csv_field(&ns)
                    },
                    csv_field(&value)
                )?,
            }
            self.printed += 1;
        }
        // Keep the buffers' capacity for the next key group.
        self.arena = arena;
        self.arena.clear();
        starts.clear();
        self.starts = starts;
        Ok(())
    }

    fn end(&mut self) -> std::io::Result<()> {
        self.flush_group()?;
        if self.format == Format::Json {
            writeln!(self.out, "{}]", if self.printed == 0 { "" } else { "\n" })?;
        }
        Ok(())
    }
}

/// A value for people: strings bare, hex as `0x…`, the rest as JSON.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        Value::Object(m) if m.len() == 1 && m.contains_key("hex") => {
            format!(
                "0x{}",
                m.get("hex").and_then(Value::as_str).unwrap_or_default()
            )
        }
        other => other.to_string(),
    }
}

/// A CSV field: strings bare, other values as JSON; quoted when needed.
fn csv_field(v: &Value) -> String {
    let raw = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if raw.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", raw.replace('"', "\"\""))
    } else {
        raw
    }
}

/// The encoded key `--key` names: as `--key-type` (the argument parsed as
/// JSON, or taken as a string), else as a string.
fn encode_key(key: &str, key_type: Option<&Ty>) -> anyhow::Result<Vec<u8>> {
    let ty = key_type.unwrap_or(&Ty::String);
    let value = match ty {
        Ty::String => Value::String(key.to_owned()),
        _ => serde_json::from_str(key).unwrap_or_else(|_| Value::String(key.to_owned())),
    };
    let mut out = Vec::new();
    ty.encode(&value, &mut out)
        .with_context(|| format!("--key {key}"))?;
    Ok(out)
}

fn dump(args: &DumpArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let key_type = args
        .key_type
        .as_deref()
        .map(|t| {
            Ty::parse(t).ok_or_else(|| {
                anyhow!(
                    "--key-type {t}: not a type this tool decodes (see `cairn state dump --help`)"
                )
            })
        })
        .transpose()?;
    let key = args
        .key
        .as_deref()
        .map(|k| encode_key(k, key_type.as_ref()))
        .transpose()?;
    let opened = state_open::open(&args.path, Some(&args.operator))?;
    let reader = &opened.reader;
    let op = reader.operator(&args.operator).map_err(human::anyhow)?;
    let max = MaxParallelism::new(op.max_parallelism).map_err(human::anyhow)?;
    let range = key.as_deref().map(|k| {
        let kg = max.key_group_of(k);
        KeyGroupRange::new(kg, kg)
    });
    let descriptor = reader
        .states(&args.operator)
        .map_err(human::anyhow)?
        .into_iter()
        .find(|d| d.name == args.state);
    let Some(descriptor) = descriptor else {
        // read_state names the state and lists the operator's.
        reader
            .read_state(&args.operator, &args.state, None, &mut |_| Ok(()))
            .map_err(human::anyhow)?;
        bail!("no state {:?} in operator {:?}", args.state, args.operator);
    };
    let view = ValueView::new(
        descriptor.type_name.as_deref(),
        descriptor.kind.layout() == StateLayout::Map,
        descriptor.ttl.is_some(),
    );
    let mut printer = Printer {
        out,
        format: if args.json {
            Format::Json
        } else if args.csv {
            Format::Csv
        } else {
            Format::Text
        },
        key_type,
        view,
        arena: Vec::new(),
        starts: Vec::new(),
        key_group: None,
        printed: 0,
    };
    let io = |e: std::io::Error| StateError::io("standard output", e);
    printer.begin().map_err(io).map_err(human::anyhow)?;
    reader
        .read_state(&args.operator, &args.state, range, &mut |r: &Record<'_>| {
            if key.as_deref().is_some_and(|k| k != r.key) {
                return Ok(());
            }
            printer.add(r).map_err(io)
        })
        .map_err(human::anyhow)?;
    printer.end().map_err(io).map_err(human::anyhow)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_text_fields() {
        assert_eq!(csv_field(&Value::String("a,b".into())), "\"a,b\"");
        assert_eq!(
            csv_field(&serde_json::json!({"w": "x"})),
            "\"{\"\"w\"\":\"\"x\"\"}\""
        );
        assert_eq!(text(&serde_json::json!({"hex": "00ff"})), "0x00ff");
        assert_eq!(text(&Value::String("tea".into())), "\"tea\"");
    }

    #[test]
    fn keys_encode_by_type() {
        assert_eq!(
            encode_key("tea", None).unwrap(),
            postcard::to_stdvec("tea").unwrap()
        );
        assert_eq!(
            encode_key("300", Some(&Ty::U64)).unwrap(),
            postcard::to_stdvec(&300u64).unwrap()
        );
        assert!(encode_key("x", Some(&Ty::U64)).is_err());
    }
}
