//! [`DataStream`]: a stream of records and the chain of operators it runs in.

use std::rc::Rc;
use std::sync::Arc;

use state_core::{BackendFactory, OperatorId};

use super::env_core::{EnvCore, Partial};
use crate::runtime::chain::{OpInfo, Output};

/// A stream of records of type `T` in a job whose keyed state lives in
/// backends made by `F` (Flink's `DataStream`).
///
/// Its operators, each in its own module of `job/`: `map` and `flat_map`,
/// `filter`, `key_by` (to a [`KeyedStream`](crate::KeyedStream)), `sink`. Operators since the
/// source or the last `key_by` run chained on one thread per subtask.
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
/// env.source("lines", items(vec!["a b", "c"]))
///     .flat_map("split", |line: &str, words: &mut Vec<String>| {
///         words.extend(line.split(' ').map(str::to_owned));
///         Ok(())
///     })
///     .filter("not-c", |word: &String| Ok(word != "c"))
///     .sink("collect", sink);
/// env.execute()?;
/// assert_eq!(out.snapshot(), ["a", "b"]);
/// # Ok(())
/// # }
/// ```
pub struct DataStream<T, F: BackendFactory + 'static> {
    pub(super) core: Rc<EnvCore<F>>,
    pub(super) stage: usize,
    pub(super) partial: Partial<T>,
}

impl<T, F: BackendFactory + 'static> std::fmt::Debug for DataStream<T, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataStream")
            .field("stage", &self.stage)
            .finish()
    }
}

impl<T: Send + 'static, F: BackendFactory + 'static> DataStream<T, F> {
    /// Adds operator `uid` to this stream's stage.
    pub(super) fn register(&self, uid: &str) -> OperatorId {
        self.core.graph.borrow_mut().add_operator(uid, self.stage)
    }

    /// Appends a chained operator: `wrap` builds it around the output of the
    /// operators after it.
    pub(super) fn chain<U: Send + 'static>(
        self,
        uid: &str,
        wrap: impl Fn(OpInfo, Box<dyn Output<U>>) -> Box<dyn Output<T>> + Send + Sync + 'static,
    ) -> DataStream<U, F> {
        let id = self.register(uid);
        let prev = self.partial;
        DataStream {
            core: self.core,
            stage: self.stage,
            partial: Arc::new(move |env, next| {
                let info = env.op_info(&id);
                prev(env, wrap(info, next))
            }),
        }
    }

    /// Sets the parallelism of this stream's chain (the operators since the
    /// source or the last `key_by`, which run together on one thread per subtask).
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
    ///     .parallelism(2)
    ///     .sink("collect", sink);
    /// env.execute()?;
    /// // Each of the two source subtasks read all the items.
    /// assert_eq!(out.len(), 4);
    /// # Ok(())
    /// # }
    /// ```
    pub fn parallelism(self, parallelism: u32) -> Self {
        if let Some(stage) = self.core.graph.borrow_mut().stages.get_mut(self.stage) {
            stage.parallelism = Some(parallelism);
        }
        self
    }
}
