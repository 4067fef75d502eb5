//! [`KeyedStream::process`]: a [`KeyedProcessFunction`] over a keyed stream,
//! behind the keyed exchange that routes each key to its subtask.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use state_core::BackendFactory;

use super::data_stream::DataStream;
use super::env_core::Partial;
use super::keyed_stream::KeyedStream;
use crate::error::ExecutorError;
use crate::process::KeyedProcessFunction;
use crate::runtime::barrier::BarrierHandler;
use crate::runtime::chain::{ExchangeOut, RouteFn};
use crate::runtime::graph::{Edge, MakeTask, channels_for};
use crate::runtime::keyed::{KeyedOp, KeyedOpSetup};
use crate::runtime::task::ExchangeTask;

impl<T, K, F> KeyedStream<T, K, F>
where
    T: Send + 'static,
    K: Serialize + DeserializeOwned + Send + 'static,
    F: BackendFactory + 'static,
{
    /// Runs a [`KeyedProcessFunction`] with keyed state and timers: one
    /// clone of `function` per subtask and attempt, its state restored from
    /// the checkpoint the job restarts from.
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
    /// use executor::UserError;
    /// use executor::process::{KeyedContext, KeyedProcessFunction};
    /// use state_core::KeyedStateBackend;
    /// use state_core::typed::{KeyedState, ValueState, ValueStateDescriptor};
    ///
    ///     /// Emits each key's first record only.
    /// #[derive(Clone, Default)]
    /// struct First(Option<ValueState<bool>>);
    ///
    /// impl<B: KeyedStateBackend> KeyedProcessFunction<B> for First {
    ///     type Key = char;
    ///     type In = &'static str;
    ///     type Out = &'static str;
    ///     fn open(&mut self, state: &mut KeyedState<B>) -> Result<(), UserError> {
    ///         self.0 = Some(state.value_state(&ValueStateDescriptor::new("seen"))?);
    ///         Ok(())
    ///     }
    ///     fn process_element(
    ///         &mut self,
    ///         word: &'static str,
    ///         ctx: &mut KeyedContext<'_, B, char>,
    ///         out: &mut Vec<&'static str>,
    ///     ) -> Result<(), UserError> {
    ///         let seen = self.0.as_ref().ok_or("not opened")?;
    ///         if seen.value(ctx.state())?.is_none() {
    ///             seen.update(ctx.state(), &true)?;
    ///             out.push(word);
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// let (sink, out) = CollectSink::new();
    /// env.source("words", items(vec!["apple", "avocado", "banana"]))
    ///     .key_by(|word: &&str| word.chars().next().unwrap_or(' '))
    ///     .process("first-per-letter", First::default())
    ///     .sink("collect", sink);
    /// env.execute()?;
    /// let mut firsts = out.snapshot();
    /// firsts.sort();
    /// assert_eq!(firsts, ["apple", "banana"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn process<P>(self, uid: &str, function: P) -> DataStream<P::Out, F>
    where
        P: KeyedProcessFunction<F::Backend, Key = K, In = T>,
    {
        let core = self.upstream.core.clone();
        let mut graph = core.graph.borrow_mut();
        let edge = graph.edges.len();
        let stage = graph.add_stage(Some(edge));
        graph.edges.push(Edge {
            from: self.upstream.stage,
            to: stage,
            make_channels: channels_for::<T>(),
        });
        let id = graph.add_operator(uid, stage);
        // Close the upstream chain with the keyed exchange.
        let key = self.key;
        let route_key = key.clone();
        let route: RouteFn<T> = Arc::new(move |record, scratch| {
            let encoded = postcard::to_extend(&route_key(record), std::mem::take(scratch))
                .map_err(|e| {
                    ExecutorError::InvalidJob(format!("a key cannot be serialized: {e}"))
                })?;
            *scratch = encoded;
            Ok(())
        });
        let prev = self.upstream.partial;
        let up_make: MakeTask = Arc::new(move |env| {
            let senders = env.take_outputs::<T>()?;
            let batch_size = env.shared.batch_size;
            let out = ExchangeOut {
                route: route.clone(),
                max_parallelism: env.shared.max_parallelism,
                buffers: (0..senders.len())
                    .map(|_| Vec::with_capacity(batch_size))
                    .collect(),
                senders,
                batch_size,
                scratch: Vec::new(),
                cancel: env.shared.cancel.clone(),
            };
            prev(env, Box::new(out))
        });
        if let Some(up) = graph.stages.get_mut(self.upstream.stage) {
            up.output_edge = Some(edge);
            up.make = Some(up_make);
        }
        drop(graph);
        let factory = core.factory.clone();
        let partial: Partial<P::Out> = Arc::new(move |env, next| {
            let inputs = env.take_inputs::<T>()?;
            let setup = KeyedOpSetup {
                factory: factory.as_ref(),
                info: env.op_info(&id),
                clock: env.shared.clock.clone(),
                restore: env.shared.restore.as_deref(),
                mode: env.shared.snapshot_mode,
                savepoints: env.shared.savepoints.clone(),
            };
            let op = KeyedOp::create(setup, function.clone(), key.clone(), next)?;
            let barriers = BarrierHandler::new(env.shared.mode, inputs.len());
            Ok(Box::new(ExchangeTask::new(inputs, barriers, Box::new(op))))
        });
        DataStream {
            core,
            stage,
            partial,
        }
    }
}
