//! [`KeyedStream`] and [`DataStream::key_by`], which makes one: the keyed
//! exchange between two stages.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::BackendFactory;

use super::data_stream::DataStream;
use crate::runtime::keyed::KeyFn;

impl<T: Send + 'static, F: BackendFactory + 'static> DataStream<T, F> {
    /// Partitions the stream by key: records with the same key go to the
    /// same subtask of the next operator (by key group).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use backend_heap::HeapBackendFactory;
    /// # use executor::sink::collect::CollectSink;
    /// # use executor::source::{Source, SourceContext, SourceFactory, SourcePoll};
    /// # use executor::{JobConfig, StreamEnv};
    /// # use state_core::OperatorStateStore;
    /// # use state_core::{JobId, MemoryCheckpointStorage};
    /// # struct Items<T>(std::vec::IntoIter<T>);
    /// # impl<T: Send> Source<T> for Items<T> {
    /// #     fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> executor::Result<()> { Ok(()) }
    /// #     fn poll_next(&mut self) -> executor::Result<SourcePoll<T>> {
    /// #         Ok(self.0.next().map_or(SourcePoll::End, SourcePoll::Record))
    /// #     }
    /// #     fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> executor::Result<()> { Ok(()) }
    /// # }
    /// #     /// A bounded source of `items` (not checkpointed: a restart reads them again).
    /// # fn items<T: Clone + Send + Sync + 'static>(items: Vec<T>) -> impl SourceFactory<T> {
    /// #     move |_: SourceContext| Ok(Box::new(Items(items.clone().into_iter())) as Box<dyn Source<T>>)
    /// # }
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let storage = Arc::new(MemoryCheckpointStorage::default());
    /// # let env = StreamEnv::new(JobConfig::new(JobId::new("example")?), HeapBackendFactory::default(), storage);
    /// let (sink, out) = CollectSink::new();
    /// env.source("words", items(vec!["a", "b", "a"]))
    ///     .map("pair", |w: &str| Ok((w.to_owned(), 1)))
    ///     .key_by(|(word, _)| word.clone())
    ///     .sum("count", |(_, n)| *n, |(_, n), sum| *n = sum)
    ///     .sink("collect", sink);
    /// env.execute()?;
    /// let mut counts = out.snapshot();
    /// counts.sort();
    /// assert_eq!(counts, [("a".to_owned(), 1), ("a".to_owned(), 2), ("b".to_owned(), 1)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn key_by<K, KF>(self, key: KF) -> KeyedStream<T, K, F>
    where
        K: Serialize + DeserializeOwned + Send + 'static,
        KF: Fn(&T) -> K + Send + Sync + 'static,
    {
        KeyedStream {
            upstream: self,
            key: Arc::new(key),
        }
    }
}

/// A stream partitioned by key `K` (see [`DataStream::key_by`]): its
/// operators, [`KeyedStream::process`], [`KeyedStream::reduce`] and
/// [`KeyedStream::sum`], see the records of each key in one subtask, with
/// keyed state in the job's backend.
///
/// ```
/// # use std::sync::Arc;
/// # use backend_heap::HeapBackendFactory;
/// # use executor::sink::collect::CollectSink;
/// # use executor::source::{Source, SourceContext, SourceFactory, SourcePoll};
/// # use executor::{JobConfig, StreamEnv};
/// # use state_core::OperatorStateStore;
/// # use state_core::{JobId, MemoryCheckpointStorage};
/// # struct Items<T>(std::vec::IntoIter<T>);
/// # impl<T: Send> Source<T> for Items<T> {
/// #     fn open(&mut self, _: SourceContext, _: Option<&OperatorStateStore>) -> executor::Result<()> { Ok(()) }
/// #     fn poll_next(&mut self) -> executor::Result<SourcePoll<T>> {
/// #         Ok(self.0.next().map_or(SourcePoll::End, SourcePoll::Record))
/// #     }
/// #     fn snapshot_state(&mut self, _: &mut OperatorStateStore) -> executor::Result<()> { Ok(()) }
/// # }
/// # /// A bounded source of `items` (not checkpointed: a restart reads them again).
/// # fn items<T: Clone + Send + Sync + 'static>(items: Vec<T>) -> impl SourceFactory<T> {
/// #     move |_: SourceContext| Ok(Box::new(Items(items.clone().into_iter())) as Box<dyn Source<T>>)
/// # }
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let storage = Arc::new(MemoryCheckpointStorage::default());
/// # let env = StreamEnv::new(JobConfig::new(JobId::new("example")?), HeapBackendFactory::default(), storage);
/// let (sink, out) = CollectSink::new();
/// env.source("numbers", items(vec![1, 2, 3, 4]))
///     .key_by(|n: &i32| n % 2)
///     .reduce("max", |a, b| *a.max(b))
///     .sink("collect", sink);
/// env.execute()?;
/// let mut maxima = out.snapshot();
/// maxima.sort();
/// assert_eq!(maxima, [1, 2, 3, 4]);
/// # Ok(())
/// # }
/// ```
pub struct KeyedStream<T, K, F: BackendFactory + 'static> {
    pub(super) upstream: DataStream<T, F>,
    pub(super) key: KeyFn<T, K>,
}

impl<T, K, F: BackendFactory + 'static> std::fmt::Debug for KeyedStream<T, K, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedStream")
            .field("upstream", &self.upstream)
            .finish()
    }
}
