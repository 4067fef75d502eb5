//! The subtasks of a `state-size` run, each with its backend, its value
//! state and its key groups, and running work on all of them at once: the
//! plain pieces the run, its checkpoints and its restores share.

use state_core::{KeyGroupRange, StateId};

/// One subtask's backend, its value state and its key groups.
pub(super) struct Subtask<B> {
    pub(super) index: u32,
    pub(super) backend: B,
    pub(super) state: StateId,
    pub(super) range: KeyGroupRange,
}

/// Runs `f` on every subtask, one thread each; the first error wins.
pub(super) fn parallel<B: Send>(
    subtasks: &mut [Subtask<B>],
    f: impl Fn(&mut Subtask<B>) -> anyhow::Result<()> + Sync,
) -> anyhow::Result<()> {
    if let [only] = subtasks {
        return f(only);
    }
    let f = &f;
    std::thread::scope(|scope| {
        let running: Vec<_> = subtasks
            .iter_mut()
            .map(|sub| scope.spawn(move || f(sub)))
            .collect();
        let mut result = Ok(());
        for thread in running {
            let outcome = thread
                .join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a subtask thread panicked")));
            if result.is_ok() {
                result = outcome;
            }
        }
        result
    })
}
