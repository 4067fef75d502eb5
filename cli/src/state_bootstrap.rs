//! `cairn state bootstrap`: a canonical savepoint holding one keyed state,
//! from a JSON-lines file of keys and values, which a job then starts from
//! (`cairn run … --from DIR`).
//!
//! Each non-blank line is `{"key": K, "value": V}` (`"namespace": N` too,
//! optionally): `K` of `--key-type`, `V` of `--type` for a value state, an
//! array of `--type` elements for a list state, and for a map state of type
//! `UK => UV` an array of `[user key, value]` pairs (or an object when the
//! user keys are strings). A key given twice is refused naming both lines.
//!
//! The input is read once and spilled into up to 64 temporary files by key
//! group, then each file is sorted in memory and written: memory holds one
//! 64th of the state, not all of it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use clap::{Args, ValueEnum};
use serde_json::Value;
use state_core::backend_support::{put_bytes, put_varint, take_bytes, take_varint};
use state_core::typed::MAP_TYPE_SEPARATOR;
use state_core::{
    CheckpointId, CheckpointStorage, Clock, JobId, KeyGroup, MaxParallelism, OperatorId,
    SavepointWriter, StateDescriptor, StateKind, StateLayout, SystemClock,
};

use crate::human;
use crate::state_codec::Ty;
use crate::state_open;

/// The `--help` text after the options.
pub(crate) const HELP: &str = "\
Input (--input, JSON lines): {\"key\": K, \"value\": V} per line, optionally \"namespace\": N.
  value/reducing/aggregating: V of --type; list: an array of --type elements;
  map (--type \"UK => UV\"): an array of [user key, value] pairs, or an object for string user keys.
Known types: bool, u8..u128, i8..i128, f32, f64, char, alloc::string::String, alloc::vec::Vec<u8>,
  alloc::vec::Vec<T>, core::option::Option<T>, tuples (A, B), cairn::wordcount::WordCount (an object
  {\"word\", \"count\", \"partition\", \"offset\"} or an array of the four).
Example, the state of `cairn run wordcount` (operator Sum, state reduce):
  cairn state bootstrap --operator Sum --state reduce --type cairn::wordcount::WordCount \\
    --input counts.jsonl --out sp/bootstrap-1
  cairn run wordcount --input log --topic words --from sp/bootstrap-1 --checkpoint-dir ck
Exit status 0, or 2 for a bad line (named by number), an unknown type or an --out that is not empty.";

/// Spill files at most; key groups are spread over them in ranges.
const MAX_SPILLS: u32 = 64;

/// The state's kind (`--kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum KindArg {
    /// One value per key
    Value,
    /// A list of elements per key
    List,
    /// A map per key
    Map,
    /// A reducing state's value
    Reducing,
    /// An aggregating state's accumulator
    Aggregating,
}

impl From<KindArg> for StateKind {
    fn from(k: KindArg) -> Self {
        match k {
            KindArg::Value => StateKind::Value,
            KindArg::List => StateKind::List,
            KindArg::Map => StateKind::Map,
            KindArg::Reducing => StateKind::Reducing,
            KindArg::Aggregating => StateKind::Aggregating,
        }
    }
}

/// `cairn state bootstrap` options.
#[derive(Debug, Args)]
pub(crate) struct BootstrapArgs {
    /// The operator's uid
    #[arg(long, value_name = "UID")]
    operator: String,
    /// The keyed state's name
    #[arg(long, value_name = "NAME")]
    state: String,
    /// The JSON-lines file of keys and values
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// The savepoint directory to create (must not exist, or be empty)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// The stored type's name, recorded in the savepoint (element type for lists, "UK => UV" for maps)
    #[arg(long = "type", value_name = "TYPE")]
    type_name: String,
    /// The state's kind
    #[arg(long, value_enum, default_value = "value")]
    kind: KindArg,
    /// The key type
    #[arg(long, value_name = "TYPE", default_value = "alloc::string::String")]
    key_type: String,
    /// The namespace type, for lines that give a namespace
    #[arg(long, value_name = "TYPE", default_value = "alloc::string::String")]
    namespace_type: String,
    /// Key groups (the job's max parallelism; the job keeps the savepoint's)
    #[arg(
        long,
        default_value_t = 128,
        allow_hyphen_values = true,
        value_name = "N"
    )]
    max_parallelism: u32,
    /// Subtasks the state is laid out for (any parallelism restores it)
    #[arg(
        long,
        default_value_t = 1,
        allow_hyphen_values = true,
        value_name = "N"
    )]
    parallelism: u32,
    /// The job id recorded in the savepoint's metadata
    #[arg(long, default_value = "bootstrap", value_name = "ID")]
    job_id: String,
}

fn known(option: &str, name: &str) -> anyhow::Result<Ty> {
    Ty::parse(name).ok_or_else(|| {
        anyhow!(
            "{option} {name}: not a type this tool encodes (see `cairn state bootstrap --help`)"
        )
    })
}

/// How the values of one line are encoded.
struct Encoders {
    layout: StateLayout,
    key: Ty,
    namespace: Ty,
    value: Ty,
    user_key: Option<Ty>,
}

impl Encoders {
    /// The encoded (key, namespace, payload) of one line; the payload is
    /// the value, or the elements or map entries in the stream's record
    /// encoding (count, then length-prefixed bytes).
    fn line(&self, line: &str) -> anyhow::Result<(Vec<u8>, Vec<u8>, Vec<u8>)> {
        let doc: Value = serde_json::from_str(line).context("not JSON")?;
        let obj = doc
            .as_object()
            .ok_or_else(|| anyhow!("expected an object {{\"key\": .., \"value\": ..}}"))?;
        let field = |name: &str| obj.get(name).ok_or_else(|| anyhow!("no {name:?} field"));
        let mut key = Vec::new();
        self.key.encode(field("key")?, &mut key).context("key")?;
        let mut namespace = Vec::new();
        if let Some(ns) = obj.get("namespace").filter(|v| !v.is_null()) {
            self.namespace
                .encode(ns, &mut namespace)
                .context("namespace")?;
        }
        let value = field("value")?;
        let mut payload = Vec::new();
        match self.layout {
            StateLayout::Value => self.value.encode(value, &mut payload).context("value")?,
            StateLayout::List => {
                let elements = value
                    .as_array()
                    .ok_or_else(|| anyhow!("value: expected an array of list elements"))?;
                if elements.is_empty() {
                    bail!("value: an empty list (a list state holds at least one element)");
                }
                put_varint(&mut payload, elements.len() as u64);
                for e in elements {
                    let mut buf = Vec::new();
                    self.value.encode(e, &mut buf).context("list element")?;
                    put_bytes(&mut payload, &buf);
                }
            }
            StateLayout::Map => {
                let pairs: Vec<(Value, &Value)> = match value {
                    Value::Object(m) => m
                        .iter()
                        .map(|(k, v)| (Value::String(k.clone()), v))
                        .collect(),
                    Value::Array(a) => a
                        .iter()
                        .map(|p| match p.as_array().map(Vec::as_slice) {
                            Some([k, v]) => Ok((k.clone(), v)),
                            _ => Err(anyhow!(
                                "value: map entries are [user key, value] pairs, not {p}"
                            )),
                        })
                        .collect::<anyhow::Result<_>>()?,
                    _ => bail!("value: expected an array of [user key, value] pairs or an object"),
                };
                if pairs.is_empty() {
                    bail!("value: an empty map (a map state holds at least one entry)");
                }
                let user_key = self.user_key.as_ref().unwrap_or(&Ty::String);
                put_varint(&mut payload, pairs.len() as u64);
                for (k, v) in pairs {
                    let (mut kb, mut vb) = (Vec::new(), Vec::new());
                    user_key.encode(&k, &mut kb).context("map user key")?;
                    self.value.encode(v, &mut vb).context("map value")?;
                    put_bytes(&mut payload, &kb);
                    put_bytes(&mut payload, &vb);
                }
            }
        }
        Ok((key, namespace, payload))
    }
}

/// One spilled entry: its line number, key group, key, namespace and payload.
struct Spilled {
    line: u64,
    key_group: u16,
    key: Vec<u8>,
    namespace: Vec<u8>,
    payload: Vec<u8>,
}

fn spill(w: &mut impl Write, e: &Spilled) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(16 + e.key.len() + e.namespace.len() + e.payload.len());
    put_varint(&mut buf, e.line);
    put_varint(&mut buf, u64::from(e.key_group));
    put_bytes(&mut buf, &e.key);
    put_bytes(&mut buf, &e.namespace);
    put_bytes(&mut buf, &e.payload);
    w.write_all(&buf)
}

fn unspill(bytes: &[u8]) -> anyhow::Result<Vec<Spilled>> {
    let mut input = bytes;
    let mut out = Vec::new();
    let bad = || anyhow!("a temporary spill file is damaged");
    while !input.is_empty() {
        let line = take_varint(&mut input).ok_or_else(bad)?;
        let key_group = u16::try_from(take_varint(&mut input).ok_or_else(bad)?)?;
        let key = take_bytes(&mut input).ok_or_else(bad)?.to_vec();
        let namespace = take_bytes(&mut input).ok_or_else(bad)?.to_vec();
        let payload = take_bytes(&mut input).ok_or_else(bad)?.to_vec();
        out.push(Spilled {
            line,
            key_group,
            key,
            namespace,
            payload,
        });
    }
    Ok(out)
}

/// Splits a list or map payload back into its parts.
fn parts(payload: &[u8], pairs: bool) -> anyhow::Result<Vec<&[u8]>> {
    let mut input = payload;
    let bad = || anyhow!("a temporary spill file is damaged");
    let count = take_varint(&mut input).ok_or_else(bad)?;
    let per = if pairs { 2 } else { 1 };
    let mut out = Vec::new();
    for _ in 0..count * per {
        out.push(take_bytes(&mut input).ok_or_else(bad)?);
    }
    Ok(out)
}

pub(crate) fn run(args: &BootstrapArgs, out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let kind = StateKind::from(args.kind);
    let layout = kind.layout();
    let (user_key, value) = if layout == StateLayout::Map {
        let (k, v) = args
            .type_name
            .split_once(MAP_TYPE_SEPARATOR)
            .ok_or_else(|| {
                anyhow!(
                    "--type {}: a map state's type is \"USER_KEY{MAP_TYPE_SEPARATOR}VALUE\"",
                    args.type_name
                )
            })?;
        (Some(known("--type", k)?), known("--type", v)?)
    } else {
        (None, known("--type", &args.type_name)?)
    };
    let encoders = Encoders {
        layout,
        key: known("--key-type", &args.key_type)?,
        namespace: known("--namespace-type", &args.namespace_type)?,
        value,
        user_key,
    };
    let max = MaxParallelism::new(args.max_parallelism)
        .map_err(human::anyhow)
        .with_context(|| format!("--max-parallelism {}", args.max_parallelism))?;
    if args.parallelism == 0 || args.parallelism > max.get() {
        bail!(
            "--parallelism {}: must be between 1 and --max-parallelism {max}",
            args.parallelism
        );
    }
    let job_id = JobId::new(&args.job_id)
        .map_err(human::anyhow)
        .context("--job-id")?;
    let input =
        File::open(&args.input).with_context(|| format!("--input {}", args.input.display()))?;
    state_open::check_new_dir(&args.out)?;

    // Pass 1: encode every line and spill it by key-group range.
    let tmp = tempfile::Builder::new()
        .prefix("cairn-bootstrap-")
        .tempdir()
        .context("creating a temporary directory for the input's spill files")?;
    let spills = MAX_SPILLS.min(max.get());
    let spill_of = |kg: KeyGroup| u32::from(kg.0) * spills / max.get();
    let mut writers: HashMap<u32, BufWriter<File>> = HashMap::new();
    let mut lines = 0u64;
    for (n, line) in BufReader::new(input).lines().enumerate() {
        let number = n as u64 + 1;
        let where_ = || format!("--input {} line {number}", args.input.display());
        let line = line.with_context(where_)?;
        if line.trim().is_empty() {
            continue;
        }
        let (key, namespace, payload) = encoders.line(&line).with_context(where_)?;
        let key_group = max.key_group_of(&key);
        let s = spill_of(key_group);
        let w = match writers.entry(s) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let f = File::create(tmp.path().join(format!("spill-{s}")))
                    .context("creating a spill file")?;
                e.insert(BufWriter::new(f))
            }
        };
        let entry = Spilled {
            line: number,
            key_group: key_group.0,
            key,
            namespace,
            payload,
        };
        spill(w, &entry).context("writing a spill file")?;
        lines += 1;
    }
    for (_, mut w) in writers.drain() {
        w.flush().context("writing a spill file")?;
    }

    // Pass 2: each spill file sorted by key group and key, then written.
    let state = StateDescriptor::new(&args.state, kind).with_type_name(&args.type_name);
    let storage: Arc<dyn CheckpointStorage> = Arc::new(state_open::savepoint_dir(&args.out)?);
    let mut writer =
        SavepointWriter::new(storage, job_id, CheckpointId(1), SystemClock.now_millis())
            .map_err(human::anyhow)?;
    let mut keyed = writer
        .keyed_operator(
            OperatorId(args.operator.clone()),
            max,
            args.parallelism,
            std::slice::from_ref(&state),
        )
        .map_err(human::anyhow)?;
    for s in 0..spills {
        let path = tmp.path().join(format!("spill-{s}"));
        if !path.exists() {
            continue;
        }
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .context("reading a spill file")?;
        let mut entries = unspill(&bytes)?;
        drop(bytes);
        entries.sort_by(|a, b| {
            (a.key_group, &a.key, &a.namespace, a.line).cmp(&(
                b.key_group,
                &b.key,
                &b.namespace,
                b.line,
            ))
        });
        if let Some(pair) = entries.windows(2).find(|w| {
            (w[0].key_group, &w[0].key, &w[0].namespace)
                == (w[1].key_group, &w[1].key, &w[1].namespace)
        }) {
            bail!(
                "--input {}: lines {} and {} give the same key",
                args.input.display(),
                pair[0].line,
                pair[1].line
            );
        }
        let mut current = None;
        for e in &entries {
            if current != Some(e.key_group) {
                keyed
                    .begin_key_group(KeyGroup(e.key_group))
                    .map_err(human::anyhow)?;
                current = Some(e.key_group);
            }
            let written = match layout {
                StateLayout::Value => keyed.write_value(0, &e.key, &e.namespace, &e.payload),
                StateLayout::List => {
                    let elements = parts(&e.payload, false)?;
                    keyed.write_list(0, &e.key, &e.namespace, elements.iter().copied())
                }
                StateLayout::Map => {
                    let flat = parts(&e.payload, true)?;
                    let pairs: Vec<(&[u8], &[u8])> =
                        flat.chunks_exact(2).map(|c| (c[0], c[1])).collect();
                    keyed.write_map(0, &e.key, &e.namespace, pairs.iter().copied())
                }
            };
            written.map_err(human::anyhow)?;
        }
    }
    keyed.finish().map_err(human::anyhow)?;
    let metadata = writer.finish().map_err(human::anyhow)?;
    writeln!(
        out,
        "wrote savepoint {} (checkpoint {}): operator {} state {} ({}, type {}), {lines} keys in {} key groups at parallelism {}",
        args.out.display(),
        metadata.checkpoint_id,
        args.operator,
        args.state,
        crate::state_codec::kind_name(kind),
        args.type_name,
        max,
        args.parallelism
    )?;
    Ok(ExitCode::SUCCESS)
}
