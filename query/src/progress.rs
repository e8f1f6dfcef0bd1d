//! The consumer's progress file: the last rollup-log sequence fully applied to every shard.
//!
//! Progress only saves replay work after a restart; correctness comes from the watermarks in
//! the shards, so a lost or stale progress file costs time, never counts.

use std::io::Write;
use std::path::PathBuf;

use beacon_core::error::ResultExt;

use crate::QueryError;

/// `<data_dir>/query/progress-p{partition}`.
#[derive(Debug, Clone)]
pub struct Progress {
    path: PathBuf,
}

impl Progress {
    /// The progress file of `partition` in `dir`.
    pub fn new(dir: PathBuf, partition: u32) -> Self {
        Self {
            path: dir.join(format!("progress-p{partition}")),
        }
    }

    /// The saved sequence; 0 when there is none. An unreadable file is logged and read as 0.
    pub async fn load(&self) -> Result<u64, QueryError> {
        let path = self.path.clone();
        let text = tokio::task::spawn_blocking(move || std::fs::read_to_string(&path)).await?;
        match text {
            Ok(text) => Ok(text.trim().parse().unwrap_or_else(|err| {
                tracing::warn!(path = %self.path.display(), error = %err, "progress file unreadable; replaying the partition");
                0
            })),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(err) => Err(beacon_core::Error::backend(format!("reading {}", self.path.display()), err).into()),
        }
    }

    /// Saves `seq` atomically: temp file, fsync, rename, fsync of the folder.
    pub async fn save(&self, seq: u64) -> Result<(), QueryError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, seq)).await??;
        Ok(())
    }
}

fn write_atomically(path: &std::path::Path, seq: u64) -> Result<(), QueryError> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let temp = path.with_extension("tmp");
    let mut file =
        std::fs::File::create(&temp).context(|| format!("creating {}", temp.display()))?;
    file.write_all(format!("{seq}\n").as_bytes())
        .context(|| format!("writing {}", temp.display()))?;
    file.sync_all()
        .context(|| format!("syncing {}", temp.display()))?;
    drop(file);
    std::fs::rename(&temp, path)
        .context(|| format!("renaming {} to {}", temp.display(), path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .context(|| format!("syncing folder {}", dir.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TempDir;

    #[tokio::test]
    async fn round_trips_and_defaults_to_zero() {
        let dir = TempDir::new("progress");
        let progress = Progress::new(dir.path().join("query"), 3);
        assert_eq!(progress.load().await.expect("load"), 0);
        progress.save(42).await.expect("save");
        progress.save(43).await.expect("save");
        assert_eq!(progress.load().await.expect("load"), 43);
        assert!(dir.path().join("query/progress-p3").exists());
    }

    #[tokio::test]
    async fn garbage_reads_as_zero() {
        let dir = TempDir::new("progress-garbage");
        std::fs::write(dir.path().join("progress-p0"), "not a number").expect("write");
        assert_eq!(
            Progress::new(dir.path().to_owned(), 0)
                .load()
                .await
                .expect("load"),
            0
        );
    }
}
