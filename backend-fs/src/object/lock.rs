//! [`ObjectJobLock`]: one writer at a time per job location in an object store.
//!
//! Object stores have no OS lock. The lock is the object `<job>/_lock`,
//! created with a conditional create (`PutMode::Create`) and naming its
//! owner (pid, host, start time) like the filesystem lock file; a clean
//! release deletes it. Nothing releases it when its owner is killed, so a
//! lock object is taken over (with a conditional update on the version read,
//! so two takers cannot both win) only when it names a process of this host
//! that no longer runs; a lock of another host, or of a live process, is
//! refused naming the owner and the object to delete once that owner is
//! known to be gone.
//!
//! The lock keeps cooperating `cairn` processes apart (the orphan sweep at
//! start would otherwise delete a running job's uploads). It is not what
//! keeps checkpoints consistent: that is the conditional create of every
//! `_metadata`, which refuses a second writer of a checkpoint id even
//! without the lock.

use object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use state_core::{Result, StateError};

use super::retry::to_state;
use super::storage::ObjectCheckpointStorage;
use crate::lock::{LOCK_FILE_NAME, LockOwner, LockState, host_name};

/// The lock of one job location in an object store, held until dropped.
#[derive(Debug)]
pub struct ObjectJobLock {
    storage: ObjectCheckpointStorage,
    stale: Option<LockOwner>,
}

/// Whether the process `pid` of this host still runs (`/proc/<pid>`;
/// without `/proc` every process is taken to run).
fn runs(pid: u32) -> bool {
    let proc = std::path::Path::new("/proc");
    !proc.is_dir() || proc.join(pid.to_string()).exists()
}

impl ObjectJobLock {
    /// Takes the lock of `storage`'s job location for `owner`.
    ///
    /// Errors: [`StateError::InvalidArgument`] naming the location, the
    /// owner and the lock object when another writer holds it;
    /// [`StateError::Io`] when the store cannot be reached.
    pub fn acquire(storage: &ObjectCheckpointStorage, owner: &LockOwner) -> Result<Self> {
        let shared = storage.shared().clone();
        let key = shared.key(LOCK_FILE_NAME)?;
        let url = shared.url_of(LOCK_FILE_NAME);
        let body = owner.encode();
        let s = shared.clone();
        let (k, b) = (key.clone(), body.clone());
        let created = shared.block_on(async move {
            let opts = PutOptions {
                mode: PutMode::Create,
                ..PutOptions::default()
            };
            s.store.put_opts(&k, PutPayload::from(b), opts).await
        })?;
        let taken = match created {
            Ok(_) => None,
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => {
                let s = shared.clone();
                let k = key.clone();
                let (text, version) = shared
                    .block_on(async move {
                        let got = s.store.get(&k).await?;
                        let version = UpdateVersion {
                            e_tag: got.meta.e_tag.clone(),
                            version: got.meta.version.clone(),
                        };
                        let bytes = got.bytes().await?;
                        Ok::<_, object_store::Error>((bytes, version))
                    })?
                    .map_err(|e| to_state(&url, e))?;
                let holder = LockOwner::decode(&String::from_utf8_lossy(&text));
                let stale = holder.as_ref().filter(|h| {
                    h.host == host_name() && h.pid != std::process::id() && !runs(h.pid)
                });
                let Some(stale) = stale.cloned() else {
                    let who =
                        holder.map_or_else(|| "an unknown owner".to_owned(), |h| h.to_string());
                    return Err(StateError::invalid(format!(
                        "job location {} is in use by {who} (lock object {url}); stop that job \
                         first, two processes must not run one job location (if it is gone for \
                         good, delete {url})",
                        shared.job_url
                    )));
                };
                let s = shared.clone();
                let updated = shared.block_on(async move {
                    let opts = PutOptions {
                        mode: PutMode::Update(version),
                        ..PutOptions::default()
                    };
                    let payload = PutPayload::from(body);
                    match s.store.put_opts(&key, payload.clone(), opts).await {
                        // A store without conditional updates (the local
                        // one): delete, then create, which a racing taker's
                        // create can still refuse.
                        Err(object_store::Error::NotImplemented { .. }) => {
                            s.store.delete(&key).await?;
                            let create = PutOptions {
                                mode: PutMode::Create,
                                ..PutOptions::default()
                            };
                            s.store.put_opts(&key, payload, create).await
                        }
                        other => other,
                    }
                })?;
                match updated {
                    Ok(_) => {}
                    Err(
                        object_store::Error::Precondition { .. }
                        | object_store::Error::AlreadyExists { .. },
                    ) => {
                        return Err(StateError::invalid(format!(
                            "job location {} was taken over by another process while this one \
                             took over the stale lock of {stale} ({url})",
                            shared.job_url
                        )));
                    }
                    Err(e) => return Err(to_state(&url, e)),
                }
                tracing::warn!(lock = %url, previous_pid = stale.pid, previous_host = %stale.host,
                    "taking over the stale lock of {stale}: it ended without releasing it");
                Some(stale)
            }
            Err(e) => return Err(to_state(&url, e)),
        };
        Ok(ObjectJobLock {
            storage: storage.clone(),
            stale: taken,
        })
    }

    /// Whether a writer holds the lock of `storage`'s job location, without
    /// taking it: [`LockState::Held`] with the owner the lock object names
    /// while it exists (on an object store a killed owner's lock stays
    /// until it is taken over), [`LockState::Free`] when there is none.
    ///
    /// Errors: [`StateError::Io`] when the store cannot be reached.
    pub fn probe(storage: &ObjectCheckpointStorage) -> Result<LockState> {
        let shared = storage.shared().clone();
        let key = shared.key(LOCK_FILE_NAME)?;
        let url = shared.url_of(LOCK_FILE_NAME);
        let s = shared.clone();
        let got = shared.block_on(async move { s.store.get(&key).await?.bytes().await })?;
        match got {
            Ok(text) => Ok(LockState::Held(LockOwner::decode(
                &String::from_utf8_lossy(&text),
            ))),
            Err(object_store::Error::NotFound { .. }) => Ok(LockState::Free),
            Err(e) => Err(to_state(&url, e)),
        }
    }

    /// The previous owner, when it ended without releasing the lock.
    pub fn taken_over_from(&self) -> Option<&LockOwner> {
        self.stale.as_ref()
    }

    /// The job location this lock holds.
    pub fn storage(&self) -> &ObjectCheckpointStorage {
        &self.storage
    }
}

impl Drop for ObjectJobLock {
    fn drop(&mut self) {
        if let Err(e) = self.storage.delete_objects(&[LOCK_FILE_NAME.to_owned()]) {
            tracing::warn!(lock = %self.storage.shared().url_of(LOCK_FILE_NAME), error = %e, "cannot release the job lock");
        }
    }
}
