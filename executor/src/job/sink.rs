//! [`DataStream::sink`]: where a stream ends.

use std::sync::Arc;

use state_core::BackendFactory;

use super::data_stream::DataStream;
use crate::runtime::chain::SinkOp;
use crate::runtime::graph::MakeTask;
use crate::sink::{SinkContext, SinkFactory};

impl<T: Send + 'static, F: BackendFactory + 'static> DataStream<T, F> {
    /// Writes the stream into a sink with a stable `uid`; `factory` creates
    /// one writer per subtask at every (re)start. This ends the stream.
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
    /// use executor::sink::print::PrintSink;
    ///
    /// env.source("numbers", items(vec![1, 2])).sink("print", PrintSink::stdout());
    /// env.execute()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn sink<S>(self, uid: &str, factory: S)
    where
        S: SinkFactory<T> + 'static,
    {
        let id = self.register(uid);
        let factory = Arc::new(factory);
        let prev = self.partial;
        let make: MakeTask = Arc::new(move |env| {
            let info = env.op_info(&id);
            let context = SinkContext::new(env.subtask, env.parallelism)
                .with_checkpointing(env.shared.checkpointing)
                .restored_from(
                    env.shared
                        .restore
                        .as_ref()
                        .map(|r| r.metadata.checkpoint_id),
                );
            let mut sink = factory.create(context)?;
            let restored = env.restored_operator_state(&id)?;
            sink.open(context, restored.as_ref())?;
            let mut state = restored.unwrap_or_default();
            state.set_stream_name(&info.operator_stream_name())?;
            prev(env, Box::new(SinkOp { sink, state, info }))
        });
        if let Some(stage) = self.core.graph.borrow_mut().stages.get_mut(self.stage) {
            stage.make = Some(make);
        }
    }
}
