//! What `cairn run` removes before the job starts, with the job directory's
//! lock held (so no other process runs it and no checkpoint is in progress):
//!
//! - the job directory's orphans ([`backend_fs::sweep_orphans`]): torn
//!   `chk-<n>` directories, uploads in `shared/` that no checkpoint
//!   references, stray files; each is logged at `info`;
//! - what dead rocks backend instances (killed processes) left in the job's
//!   local directory, `<local-dir>/<job-id>`, except their local copies of
//!   the checkpoints the job directory retains (and of the one restored with
//!   `--from`), which local recovery may restore from
//!   ([`cairn_cli::backend::sweep_dead_local_state`]).

use anyhow::Context;
use cairn_cli::backend::{self, LocalState};
use cairn_cli::human;
use cairn_cli::job_args::JobArgs;
use state_core::{CheckpointId, JobId};

use crate::job_dir::{HeldLock, JobLocation};

/// Sweeps the job location `location` (locked by `lock`: a job directory or
/// an object-store location) and the job's rocks local directory;
/// `restored` is the checkpoint the job starts from.
pub(crate) fn before_start(
    location: &JobLocation,
    lock: &HeldLock,
    job: &JobArgs,
    job_id: &JobId,
    restored: Option<CheckpointId>,
) -> anyhow::Result<()> {
    let job_dir = location.display();
    let swept = location
        .sweep(lock)
        .with_context(|| format!("removing orphans of {job_dir}"))?;
    if !swept.orphans.is_empty() {
        tracing::info!(
            job_dir = %job_dir,
            orphans = swept.orphans.len(),
            bytes = swept.bytes(),
            "removed files no retained checkpoint references"
        );
    }
    if let Some(why) = &swept.held_back {
        tracing::warn!(job_dir = %job_dir, "{why}");
    }
    let mut retained = location
        .storage()
        .list_checkpoints()
        .map_err(human::anyhow)?;
    retained.extend(restored);
    backend::sweep_dead_local_state(job.backend, &LocalState::from_args(job), job_id, &retained)
}
