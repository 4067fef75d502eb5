//! [`DataStream::filter`]: drops the records a predicate rejects.

use std::sync::Arc;

use state_core::BackendFactory;

use super::data_stream::DataStream;
use crate::error::{Result, UserError};
use crate::runtime::chain::FilterOp;

impl<T: Send + 'static, F: BackendFactory + 'static> DataStream<T, F> {
    /// Keeps the records for which `f` is true; an error fails the task.
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
    /// env.source("numbers", items(vec![1, 2, 3, 4]))
    ///     .filter("even", |n: &i32| Ok(n % 2 == 0))
    ///     .sink("collect", sink);
    /// env.execute()?;
    /// assert_eq!(out.snapshot(), [2, 4]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn filter<M>(self, uid: &str, f: M) -> DataStream<T, F>
    where
        M: Fn(&T) -> Result<bool, UserError> + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.chain(uid, move |info, next| {
            Box::new(FilterOp {
                f: f.clone(),
                info,
                next,
            })
        })
    }
}
