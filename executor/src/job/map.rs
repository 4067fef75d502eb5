//! [`DataStream::map`] and [`DataStream::flat_map`]: record-at-a-time
//! transformations, chained with the operators around them.

use std::sync::Arc;

use state_core::BackendFactory;

use super::data_stream::DataStream;
use crate::error::{Result, UserError};
use crate::runtime::chain::{FlatMapOp, MapOp};

impl<T: Send + 'static, F: BackendFactory + 'static> DataStream<T, F> {
    /// Transforms every record; an error fails the task.
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
    /// env.source("numbers", items(vec![1, 2]))
    ///     .map("to-text", |n: i32| Ok(format!("#{n}")))
    ///     .sink("collect", sink);
    /// env.execute()?;
    /// assert_eq!(out.snapshot(), ["#1", "#2"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn map<U, M>(self, uid: &str, f: M) -> DataStream<U, F>
    where
        U: Send + 'static,
        M: Fn(T) -> Result<U, UserError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.chain(uid, move |info, next| {
            Box::new(MapOp {
                f: f.clone(),
                info,
                next,
            })
        })
    }

    /// Emits zero or more records per record.
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
    /// env.source("numbers", items(vec![0, 2]))
    ///     .flat_map("repeat", |n: usize, out: &mut Vec<usize>| {
    ///         out.extend(std::iter::repeat_n(n, n));
    ///         Ok(())
    ///     })
    ///     .sink("collect", sink);
    /// env.execute()?;
    /// assert_eq!(out.snapshot(), [2, 2]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn flat_map<U, M>(self, uid: &str, f: M) -> DataStream<U, F>
    where
        U: Send + 'static,
        M: Fn(T, &mut Vec<U>) -> Result<(), UserError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.chain(uid, move |info, next| {
            Box::new(FlatMapOp {
                f: f.clone(),
                info,
                buffer: Vec::new(),
                next,
            })
        })
    }
}
