//! Newtypes for the ids of jobs, operators and states (checkpoint ids are
//! in `checkpoint_id.rs`, which the error type uses).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id of a job; names the job's directory in checkpoint storage.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(String);

impl JobId {
    /// A job id. Only ASCII letters, digits, `-` and `_` are accepted, so the
    /// id is always a safe single path component.
    pub fn new(id: impl Into<String>) -> crate::Result<Self> {
        let id = id.into();
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(JobId(id))
        } else {
            Err(crate::StateError::invalid(format!(
                "job id {id:?} must be 1 to 128 ASCII letters, digits, '-' or '_'"
            )))
        }
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The stable id of an operator (its `uid`), which keys its state in checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct OperatorId(pub String);

impl fmt::Display for OperatorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The index of a registered state within one backend instance, returned by
/// [`crate::KeyedStateBackend::register_state`]. Only meaningful for the
/// backend that returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateId(pub u32);

impl StateId {
    /// The id as an index into a backend's table of states.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_safe_path_components() {
        assert!(JobId::new("job-1_a").is_ok());
        for bad in ["", "..", "a/b", "a b", "é"] {
            assert!(JobId::new(bad).is_err(), "{bad}");
        }
    }
}
