//! [`KeyedStream::reduce`] and [`KeyedStream::sum`]: a running value per
//! key, kept in keyed state.

use std::marker::PhantomData;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::BackendFactory;

use super::data_stream::DataStream;
use super::keyed_stream::KeyedStream;
use crate::runtime::keyed::Reduce;

impl<T, K, F> KeyedStream<T, K, F>
where
    T: Send + 'static,
    K: Serialize + DeserializeOwned + Send + 'static,
    F: BackendFactory + 'static,
{
    /// Folds the records of each key with `f` and emits the running value
    /// per record (Flink's `reduce`); the running value is keyed state.
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
    /// env.source("numbers", items(vec![1, 2, 3]))
    ///     .key_by(|_: &i64| 0)
    ///     .reduce("product", |a, b| a * b)
    ///     .sink("collect", sink);
    /// env.execute()?;
    /// assert_eq!(out.snapshot(), [1, 2, 6]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn reduce<R>(self, uid: &str, f: R) -> DataStream<T, F>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
        R: Fn(&T, &T) -> T + Send + Sync + 'static,
    {
        self.process(
            uid,
            Reduce::<T, K> {
                f: Arc::new(f),
                state: None,
                _key: PhantomData,
            },
        )
    }

    /// Sums the field read by `get` per key, emitting the first record of
    /// the key with the field set to the running sum (Flink's `sum`).
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
    /// env.source("sales", items(vec![("tea".to_owned(), 2), ("tea".to_owned(), 3)]))
    ///     .key_by(|(item, _)| item.clone())
    ///     .sum("total", |(_, n)| *n, |(_, n), sum| *n = sum)
    ///     .sink("collect", sink);
    /// env.execute()?;
    /// assert_eq!(out.snapshot(), [("tea".to_owned(), 2), ("tea".to_owned(), 5)]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn sum<G, S>(self, uid: &str, get: G, set: S) -> DataStream<T, F>
    where
        T: Serialize + DeserializeOwned + Clone + Sync,
        G: Fn(&T) -> i64 + Send + Sync + 'static,
        S: Fn(&mut T, i64) + Send + Sync + 'static,
    {
        self.reduce(uid, move |acc, next| {
            let mut out = acc.clone();
            set(&mut out, get(acc).saturating_add(get(next)));
            out
        })
    }
}
