//! [`LogSource`]: reads a topic in a job, with its offsets in operator state.

use std::collections::BTreeMap;
use std::path::PathBuf;

use state_core::OperatorStateMode;
use state_core::OperatorStateStore;
use state_core::StateError;

use super::reader::PartitionReader;
use super::record::LogRecord;
use super::topic::Topic;
use crate::error::{ExecutorError, Result};
use crate::source::{Source, SourceContext, SourceFactory, SourcePoll};

/// The union operator state holding `(partition, next offset)` pairs.
pub const OFFSETS_STATE: &str = "partition-offsets";

/// Where a source starts reading partitions that have no checkpointed offset.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StartPosition {
    /// The first record of every partition (Kafka's `earliest`).
    #[default]
    Earliest,
    /// The end of every partition as of the source's start: only records
    /// appended later are read (Kafka's `latest`).
    Latest,
    /// These `(partition, offset)` pairs; partitions not listed start at the
    /// earliest record.
    Offsets(Vec<(u32, u64)>),
}

/// What [`LogSource`] reads and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSourceOptions {
    /// The directory holding the topic.
    pub dir: PathBuf,
    /// The topic's name.
    pub topic: String,
    /// Stop at the end of every partition as of the start (`true`) or keep
    /// tailing while the job runs (`false`).
    pub bounded: bool,
    /// Where to start without checkpointed offsets.
    pub start: StartPosition,
}

impl LogSourceOptions {
    /// Options for an unbounded source of `topic` in `dir` starting at the
    /// earliest records.
    pub fn new(dir: impl Into<PathBuf>, topic: impl Into<String>) -> Self {
        LogSourceOptions {
            dir: dir.into(),
            topic: topic.into(),
            bounded: false,
            start: StartPosition::Earliest,
        }
    }
}

/// A replayable source over a [`Topic`] (like Flink's Kafka consumer).
///
/// Subtask `i` of `n` reads the partitions `p` with `p % n == i`, round-robin.
/// Its next offset per partition is saved in the union operator state
/// [`OFFSETS_STATE`] at every checkpoint; on restore, every subtask sees all
/// pairs and takes those of its own partitions, so offsets survive a change
/// of parallelism. A bounded source ends when all its partitions reach the
/// end offsets they had when it opened; an unbounded one reports
/// [`SourcePoll::Idle`] when there is nothing new.
#[derive(Debug, Clone)]
pub struct LogSource {
    options: LogSourceOptions,
}

impl LogSource {
    /// A source reading as `options` say; the topic is opened by each subtask.
    pub fn new(options: LogSourceOptions) -> Self {
        LogSource { options }
    }

    /// The options.
    pub fn options(&self) -> &LogSourceOptions {
        &self.options
    }
}

impl From<LogSourceOptions> for LogSource {
    fn from(options: LogSourceOptions) -> Self {
        LogSource::new(options)
    }
}

impl SourceFactory<LogRecord> for LogSource {
    fn create(&self, _context: SourceContext) -> Result<Box<dyn Source<LogRecord>>> {
        Ok(Box::new(LogSourceReader {
            options: self.options.clone(),
            partitions: Vec::new(),
            next: 0,
        }))
    }
}

#[derive(Debug)]
struct AssignedPartition {
    reader: PartitionReader,
    /// Bounded: the end offset at open; records from it on are not read.
    end: Option<u64>,
}

impl AssignedPartition {
    fn finished(&self) -> bool {
        self.end.is_some_and(|end| self.reader.offset() >= end)
    }
}

/// One subtask's reader.
#[derive(Debug)]
struct LogSourceReader {
    options: LogSourceOptions,
    partitions: Vec<AssignedPartition>,
    /// Index into `partitions` polled first next time.
    next: usize,
}

fn restored_offsets(
    restored: Option<&OperatorStateStore>,
    topic: &str,
) -> Result<Option<BTreeMap<u32, u64>>> {
    let Some(store) = restored else {
        return Ok(None);
    };
    if !store.states().iter().any(|(name, _)| name == OFFSETS_STATE) {
        return Ok(None);
    }
    let pairs: Vec<(u32, u64)> = store.get_typed(OFFSETS_STATE)?;
    let mut offsets = BTreeMap::new();
    for (p, o) in pairs {
        if let Some(old) = offsets.insert(p, o)
            && old != o
        {
            return Err(StateError::corrupted(
                format!("operator state {OFFSETS_STATE:?} of the source of topic {topic:?}"),
                format!("partition {p} has two offsets, {old} and {o}"),
            )
            .into());
        }
    }
    Ok(Some(offsets))
}

impl Source<LogRecord> for LogSourceReader {
    fn open(
        &mut self,
        context: SourceContext,
        restored: Option<&OperatorStateStore>,
    ) -> Result<()> {
        if context.parallelism == 0 || context.subtask >= context.parallelism {
            return Err(ExecutorError::InvalidJob(format!(
                "log source subtask {} of parallelism {}",
                context.subtask, context.parallelism
            )));
        }
        let topic = Topic::open(&self.options.dir, &self.options.topic)?;
        let restored = restored_offsets(restored, topic.name())?;
        self.partitions.clear();
        self.next = 0;
        for p in (context.subtask..topic.partitions()).step_by(context.parallelism as usize) {
            let checkpointed = restored.as_ref().and_then(|r| r.get(&p).copied());
            let offset = match (checkpointed, &self.options.start) {
                (Some(o), _) => {
                    tracing::info!(topic = topic.name(), "Seeking partition {p} to offset {o}");
                    o
                }
                (None, StartPosition::Earliest) => 0,
                (None, StartPosition::Latest) => topic.end_offset(p)?,
                (None, StartPosition::Offsets(list)) => {
                    list.iter().find(|(lp, _)| *lp == p).map_or(0, |(_, o)| *o)
                }
            };
            let reader = PartitionReader::open(&topic, p, offset)?;
            let end = if self.options.bounded {
                Some(topic.end_offset(p)?)
            } else {
                None
            };
            self.partitions.push(AssignedPartition { reader, end });
        }
        tracing::debug!(
            topic = topic.name(),
            subtask = context.subtask,
            partitions = self.partitions.len(),
            bounded = self.options.bounded,
            "log source opened"
        );
        Ok(())
    }

    fn poll_next(&mut self) -> Result<SourcePoll<LogRecord>> {
        let n = self.partitions.len();
        let mut all_finished = true;
        for i in 0..n {
            let idx = (self.next + i) % n;
            let Some(part) = self.partitions.get_mut(idx) else {
                continue;
            };
            if part.finished() {
                continue;
            }
            all_finished = false;
            if let Some(record) = part.reader.next()? {
                self.next = (idx + 1) % n;
                return Ok(SourcePoll::Record(record));
            }
        }
        if self.options.bounded && all_finished {
            Ok(SourcePoll::End)
        } else {
            Ok(SourcePoll::Idle)
        }
    }

    fn snapshot_state(&mut self, state: &mut OperatorStateStore) -> Result<()> {
        state.register(OFFSETS_STATE, OperatorStateMode::Union)?;
        let offsets: Vec<(u32, u64)> = self
            .partitions
            .iter()
            .map(|p| (p.reader.partition(), p.reader.offset()))
            .collect();
        state.update_typed(OFFSETS_STATE, &offsets)?;
        Ok(())
    }
}
