//! [`Topic`]: a directory of partition files with its descriptor; creating
//! and opening one. Reading is in `reader.rs`, appending in `writer.rs`.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use state_core::backend_support::{Fs, StdFs, sync_parent, write_atomic};

use super::format::{decode_descriptor, encode_descriptor};
use crate::error::{ExecutorError, Result};

const DESCRIPTOR_FILE: &str = "topic.meta";

/// A topic: a directory of partition files. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    path: PathBuf,
    name: String,
    partitions: u32,
}

fn check_topic_name(name: &str) -> Result<()> {
    if state_core::backend_support::is_safe_file_name(name) {
        Ok(())
    } else {
        Err(ExecutorError::InvalidJob(format!(
            "topic name {name:?} must be 1 to 200 ASCII letters, digits, '-', '_' or '.', not starting with '.'"
        )))
    }
}

impl Topic {
    /// Creates topic `name` with `partitions` empty partitions under `dir`
    /// (created if missing). Fails if the topic exists.
    pub fn create(dir: impl AsRef<Path>, name: &str, partitions: u32) -> Result<Topic> {
        check_topic_name(name)?;
        if partitions == 0 {
            return Err(ExecutorError::InvalidJob(format!(
                "topic {name:?} needs at least 1 partition, got 0"
            )));
        }
        let path = dir.as_ref().join(name);
        let descriptor = path.join(DESCRIPTOR_FILE);
        if descriptor.exists() {
            return Err(ExecutorError::InvalidJob(format!(
                "topic {name:?} already exists at {}",
                path.display()
            )));
        }
        let fs = StdFs;
        fs.create_dir_all(&path)
            .map_err(|e| ExecutorError::io(&path, e))?;
        let topic = Topic {
            path,
            name: name.to_owned(),
            partitions,
        };
        for p in 0..partitions {
            let file = topic.partition_file(p);
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&file)
                .map_err(|e| ExecutorError::io(&file, e))?;
            f.sync_all().map_err(|e| ExecutorError::io(&file, e))?;
        }
        // The descriptor last: a topic exists once its descriptor does.
        write_atomic(&fs, &descriptor, &encode_descriptor(partitions))?;
        sync_parent(&fs, &topic.path)?;
        tracing::info!(topic = name, partitions, path = %topic.path.display(), "created topic");
        Ok(topic)
    }

    /// Opens the existing topic `name` under `dir`.
    pub fn open(dir: impl AsRef<Path>, name: &str) -> Result<Topic> {
        check_topic_name(name)?;
        let path = dir.as_ref().join(name);
        let descriptor = path.join(DESCRIPTOR_FILE);
        let bytes = match std::fs::read(&descriptor) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ExecutorError::InvalidJob(format!(
                    "topic {name:?} does not exist in {} (no {})",
                    dir.as_ref().display(),
                    descriptor.display()
                )));
            }
            Err(e) => return Err(ExecutorError::io(&descriptor, e)),
        };
        let partitions = decode_descriptor(&descriptor, &bytes)?;
        Ok(Topic {
            path,
            name: name.to_owned(),
            partitions,
        })
    }

    /// Opens topic `name`, creating it with `partitions` partitions if it
    /// does not exist. An existing topic with another partition count is an error.
    pub fn open_or_create(dir: impl AsRef<Path>, name: &str, partitions: u32) -> Result<Topic> {
        let dir = dir.as_ref();
        if dir.join(name).join(DESCRIPTOR_FILE).exists() {
            let topic = Topic::open(dir, name)?;
            if topic.partitions != partitions {
                return Err(ExecutorError::InvalidJob(format!(
                    "topic {name:?} has {} partitions, not {partitions}",
                    topic.partitions
                )));
            }
            Ok(topic)
        } else {
            Topic::create(dir, name, partitions)
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The topic's directory (`<dir>/<name>`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn partition_file(&self, partition: u32) -> PathBuf {
        self.path.join(format!("partition-{partition}.log"))
    }

    /// The file of `partition`; an error if the topic has no such partition.
    pub fn partition_path(&self, partition: u32) -> Result<PathBuf> {
        if partition < self.partitions {
            Ok(self.partition_file(partition))
        } else {
            Err(ExecutorError::InvalidJob(format!(
                "topic {:?} has {} partitions; partition {partition} does not exist",
                self.name, self.partitions
            )))
        }
    }
}
