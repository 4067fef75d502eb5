//! The bundled WordCount job of the failure-and-recovery walk-through,
//! shared by `cairn demo` and
//! `cairn run wordcount`.
//!
//! ```text
//! KafkaSource (replayable log) -> Map (split into words)
//!   -> key_by(word) -> Sum (running count per word) -> Check (fail on the poison word) -> sink
//! ```
//!
//! Every record carries the log partition and offset it came from, so the
//! demo can print the walk-through's table. The poison check runs in the keyed stage,
//! right before the sink: outputs of records read before the poison one are
//! written before it fails the task, whatever the batching of the exchange,
//! which makes the printed table deterministic. The Flink original throws in its `map`
//! before `keyBy`; the state and the output are the same.

use std::fmt;

use executor::StreamEnv;
use executor::log::{LogRecord, LogSource};
use executor::sink::SinkFactory;
use serde::{Deserialize, Serialize};
use state_core::BackendFactory;

/// The word whose arrival makes the job fail (the walk-through's dirty record).
pub(crate) const POISON: &str = "ERROR";

/// The operator uids, stable so checkpoints restore into a rebuilt job.
pub(crate) mod uid {
    /// The log source (offsets in union operator state).
    pub(crate) const SOURCE: &str = "KafkaSource";
    /// Drops the poison word (only in a job run with the poison filtered).
    pub(crate) const FILTER: &str = "FilterPoison";
    /// Splits records into words.
    pub(crate) const MAP: &str = "Map";
    /// The keyed running count.
    pub(crate) const SUM: &str = "Sum";
    /// Fails on the poison word.
    pub(crate) const CHECK: &str = "Check";
    /// The sink.
    pub(crate) const SINK: &str = "Print";
}

/// A word's running count, and the log record that last changed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WordCount {
    /// The word.
    pub word: String,
    /// How often it was seen.
    pub count: i64,
    /// The log partition of the record that produced this output.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
}

impl fmt::Display for WordCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({},{})", self.word, self.count)
    }
}

/// Adds the WordCount dataflow to `env`, reading `source`, writing `sink`.
/// With `filter_poison` the poison word is dropped right after the source
/// (how the job is fixed and resumed in the walk-through).
pub(crate) fn build<F, S>(env: &StreamEnv<F>, source: LogSource, filter_poison: bool, sink: S)
where
    F: BackendFactory + 'static,
    S: SinkFactory<WordCount> + 'static,
{
    let records = env.source(uid::SOURCE, source);
    let records = if filter_poison {
        records.filter(uid::FILTER, |r: &LogRecord| {
            Ok(r.value_str().split_whitespace().all(|w| w != POISON))
        })
    } else {
        records
    };
    records
        .flat_map(uid::MAP, |r: LogRecord, out: &mut Vec<WordCount>| {
            let text = r.value_str();
            out.extend(text.split_whitespace().map(|word| WordCount {
                word: word.to_owned(),
                count: 1,
                partition: r.partition,
                offset: r.offset,
            }));
            Ok(())
        })
        .key_by(|wc: &WordCount| wc.word.clone())
        .reduce(uid::SUM, |acc: &WordCount, next: &WordCount| WordCount {
            count: acc.count.saturating_add(next.count),
            ..next.clone()
        })
        .map(uid::CHECK, |wc: WordCount| {
            if wc.word == POISON {
                Err("custom error flag, restart application".into())
            } else {
                Ok(wc)
            }
        })
        .sink(uid::SINK, sink);
}
