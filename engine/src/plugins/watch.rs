//! Notices changed files for hot reload by polling their modification time
//! and size (no watcher dependency; a poll a second is cheap), and debounces:
//! a change counts once the files have stopped changing for one poll, so a
//! file being written is not read half-way.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    time::{Duration, SystemTime},
};

/// What a file looked like at one poll; `None` when it is missing.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

/// A set of files and how they looked when last accepted.
#[derive(Debug, Default)]
pub struct FileWatch {
    seen: BTreeMap<PathBuf, Stamp>,
}

impl FileWatch {
    /// Watches `paths` from their current state.
    pub fn new(paths: impl IntoIterator<Item = PathBuf>) -> Self {
        FileWatch {
            seen: paths.into_iter().map(|p| (p.clone(), stamp(&p))).collect(),
        }
    }

    /// The watched paths.
    pub fn paths(&self) -> impl Iterator<Item = &PathBuf> {
        self.seen.keys()
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, Stamp> {
        self.seen.keys().map(|p| (p.clone(), stamp(p))).collect()
    }

    /// Files that differ from the last accepted state.
    pub fn changed(&self) -> Vec<PathBuf> {
        self.snapshot()
            .into_iter()
            .filter(|(path, now)| self.seen.get(path) != Some(now))
            .map(|(path, _)| path)
            .collect()
    }

    /// Waits until the files stop changing (two polls `interval` apart
    /// agree, at most 10 polls), then accepts their state; returns the
    /// changed files.
    pub async fn settle(&mut self, interval: Duration) -> Vec<PathBuf> {
        let changed = self.changed();
        let mut last = self.snapshot();
        for _ in 0..10 {
            tokio::time::sleep(interval).await;
            let now = self.snapshot();
            if now == last {
                break;
            }
            last = now;
        }
        self.seen = last;
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_rewritten_or_removed_file_is_a_change_until_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.toml"), dir.path().join("b.wasm"));
        std::fs::write(&a, "one").unwrap();
        std::fs::write(&b, "module").unwrap();
        let mut watch = FileWatch::new([a.clone(), b.clone()]);
        assert!(watch.changed().is_empty());

        std::fs::write(&a, "three").unwrap();
        assert_eq!(watch.changed(), std::slice::from_ref(&a));
        assert_eq!(watch.settle(Duration::from_millis(1)).await, std::slice::from_ref(&a));
        assert!(watch.changed().is_empty(), "accepted");

        std::fs::remove_file(&b).unwrap();
        assert_eq!(watch.changed(), std::slice::from_ref(&b));
    }
}
