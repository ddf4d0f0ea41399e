//! Watching the rule directory for changes, debounced.
//!
//! Editors and `kubectl`-style tools write a file in several steps (truncate, write, rename), and a
//! `git pull` touches many files at once. The watcher records when the first change of a burst
//! happened and reports the burst only once the directory has been quiet for the debounce interval,
//! so one burst yields one recompile, and the time from the first change to enforcement can be
//! measured from that first event.

use anyhow::Context;
use notify::{RecursiveMode, Watcher};
use std::path::Path;
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

/// Reports debounced bursts of changes below a directory.
#[derive(Debug)]
pub struct DirWatcher {
    _watcher: notify::RecommendedWatcher,
    events: Receiver<Instant>,
    /// First and last event of the burst not yet reported.
    pending: Option<(Instant, Instant)>,
}

impl DirWatcher {
    pub fn new(dir: &Path) -> anyhow::Result<DirWatcher> {
        let (tx, events) = channel();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            // Access events (open/read) change nothing; everything else may change the rules.
            if event.is_ok_and(|e| !e.kind.is_access()) {
                let _ = tx.send(Instant::now());
            }
        })
        .context("creating a file watcher")?;
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .with_context(|| format!("watching {} for changes", dir.display()))?;
        Ok(DirWatcher { _watcher: watcher, events, pending: None })
    }

    /// When a burst of changes ended at least `debounce` ago, returns the time of its first change.
    pub fn settled(&mut self, debounce: Duration) -> Option<Instant> {
        while let Ok(at) = self.events.try_recv() {
            self.pending = Some(match self.pending {
                Some((first, _)) => (first, at),
                None => (at, at),
            });
        }
        match self.pending {
            Some((first, last)) if last.elapsed() >= debounce => {
                self.pending = None;
                Some(first)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_reported_once_after_it_settles() {
        let dir = std::env::temp_dir().join(format!("moat-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut watcher = DirWatcher::new(&dir).unwrap();
        assert_eq!(watcher.settled(Duration::ZERO), None, "no change yet");
        let before = Instant::now();
        for i in 0..5 {
            std::fs::write(dir.join("a.acl"), format!("deny any any any # {i}\n")).unwrap();
        }
        // Liveness bound only: inotify delivers within milliseconds.
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            if let Some(first) = watcher.settled(Duration::from_millis(20)) {
                break first;
            }
            assert!(Instant::now() < deadline, "no change reported");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(first >= before);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(watcher.settled(Duration::from_millis(20)), None, "one burst, one report");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
