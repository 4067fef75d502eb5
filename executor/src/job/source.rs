//! [`StreamEnv::source`]: where a stream starts.

use std::sync::Arc;

use state_core::BackendFactory;

use super::data_stream::DataStream;
use super::env_core::Partial;
use super::stream_env::StreamEnv;
use crate::runtime::task::SourceTask;
use crate::source::{SourceContext, SourceFactory};

impl<F: BackendFactory + 'static> StreamEnv<F> {
    /// Adds a source with a stable `uid`; `factory` creates one reader per
    /// subtask at every (re)start of the job.
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
    /// env.source("words", items(vec!["a", "b"])).sink("collect", sink);
    /// env.execute()?;
    /// assert_eq!(out.snapshot(), ["a", "b"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn source<T, S>(&self, uid: &str, factory: S) -> DataStream<T, F>
    where
        T: Send + 'static,
        S: SourceFactory<T> + 'static,
    {
        let mut graph = self.core.graph.borrow_mut();
        let stage = graph.add_stage(None);
        let id = graph.add_operator(uid, stage);
        let factory = Arc::new(factory);
        let partial: Partial<T> = Arc::new(move |env, head| {
            let info = env.op_info(&id);
            let context = SourceContext {
                subtask: env.subtask,
                parallelism: env.parallelism,
            };
            let mut source = factory.create(context)?;
            let restored = env.restored_operator_state(&id)?;
            source.open(context, restored.as_ref())?;
            let mut state = restored.unwrap_or_default();
            state.set_stream_name(&info.operator_stream_name())?;
            Ok(Box::new(SourceTask {
                source,
                state,
                info,
                head,
                stopped_at: None,
            }))
        });
        DataStream {
            core: self.core.clone(),
            stage,
            partial,
        }
    }
}
