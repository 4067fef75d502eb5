//! [`CollectSink`]: every record of every subtask and restart in one shared
//! vector, read through [`Collected`]. For tests and demos.

use std::fmt;
use std::sync::{Arc, Mutex};

use state_core::OperatorStateStore;

use super::{Sink, SinkContext, SinkFactory, lock};
use crate::error::Result;

/// Collects every record of every subtask and every restart into one shared
/// vector; read it through the [`Collected`] handle. For tests and demos.
pub struct CollectSink<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T> fmt::Debug for CollectSink<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CollectSink")
            .field("records", &lock(&self.records).len())
            .finish()
    }
}

impl<T: Clone + Send + 'static> CollectSink<T> {
    /// A sink and the handle reading what it collected.
    #[allow(clippy::new_ret_no_self)] // returns the sink with its reading handle
    pub fn new() -> (CollectSink<T>, Collected<T>) {
        let records = Arc::new(Mutex::new(Vec::new()));
        (
            CollectSink {
                records: records.clone(),
            },
            Collected { records },
        )
    }
}

impl<T: Clone + Send + 'static> SinkFactory<T> for CollectSink<T> {
    fn create(&self, _context: SinkContext) -> Result<Box<dyn Sink<T>>> {
        Ok(Box::new(CollectWriter {
            records: self.records.clone(),
        }))
    }
}

struct CollectWriter<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T: Send> Sink<T> for CollectWriter<T> {
    fn open(
        &mut self,
        _context: SinkContext,
        _restored: Option<&OperatorStateStore>,
    ) -> Result<()> {
        Ok(())
    }

    fn write(&mut self, record: T) -> Result<()> {
        lock(&self.records).push(record);
        Ok(())
    }
}

/// What a [`CollectSink`] collected so far; clones share the same records.
pub struct Collected<T> {
    records: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Collected<T> {
    fn clone(&self) -> Self {
        Collected {
            records: self.records.clone(),
        }
    }
}

impl<T> fmt::Debug for Collected<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Collected")
            .field("len", &self.len())
            .finish()
    }
}

impl<T: Clone> Collected<T> {
    /// A copy of the records collected so far, in arrival order.
    pub fn snapshot(&self) -> Vec<T> {
        lock(&self.records).clone()
    }
}

impl<T> Collected<T> {
    /// How many records were collected.
    pub fn len(&self) -> usize {
        lock(&self.records).len()
    }

    /// Whether nothing was collected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(subtask: u32, parallelism: u32) -> SinkContext {
        SinkContext::new(subtask, parallelism)
    }

    #[test]
    fn collect_sink_shares_records_across_subtasks_and_restarts() {
        let (sink, collected) = CollectSink::<u32>::new();
        let view = collected.clone();
        assert!(view.is_empty());
        for attempt in 0..2u32 {
            for subtask in 0..2 {
                let mut s = sink.create(ctx(subtask, 2)).unwrap();
                s.open(ctx(subtask, 2), None).unwrap();
                s.write(attempt * 10 + subtask).unwrap();
                s.finish().unwrap();
            }
        }
        assert_eq!(view.len(), 4);
        assert_eq!(collected.snapshot(), vec![0, 1, 10, 11]);
    }
}
