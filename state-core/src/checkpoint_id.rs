//! [`CheckpointId`]: the id of a checkpoint, plain data that errors, metadata
//! and storage all name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id of a checkpoint, increasing by one per triggered checkpoint of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CheckpointId(pub u64);

impl CheckpointId {
    /// The id as a number.
    pub fn get(self) -> u64 {
        self.0
    }

    /// The name of this checkpoint's directory in filesystem storage (`chk-<n>`).
    pub fn dir_name(self) -> String {
        format!("chk-{}", self.0)
    }

    /// The checkpoint a canonical `chk-<n>` directory name stands for.
    /// `chk-007` is not canonical (it would not be found again as `chk-7`).
    pub fn from_dir_name(name: &str) -> Option<Self> {
        let digits = name.strip_prefix("chk-")?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let id = CheckpointId(digits.parse().ok()?);
        (id.dir_name() == name).then_some(id)
    }
}

impl fmt::Display for CheckpointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_dir_names_round_trip() {
        assert_eq!(CheckpointId::from_dir_name("chk-7"), Some(CheckpointId(7)));
        assert_eq!(CheckpointId::from_dir_name("chk-0"), Some(CheckpointId(0)));
        for bad in [
            "chk-",
            "chk-007",
            "chk-x",
            "chk--1",
            "chk-1 ",
            "7",
            "chk-99999999999999999999999",
        ] {
            assert_eq!(CheckpointId::from_dir_name(bad), None, "{bad}");
        }
        assert_eq!(
            CheckpointId::from_dir_name(&CheckpointId(42).dir_name()),
            Some(CheckpointId(42))
        );
    }
}
