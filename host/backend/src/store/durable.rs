//! Group commit for the on-disk store.
//!
//! With `synchronous = FULL` every commit waits for its own fsync of the
//! WAL (about 130 µs on this project's machines), and commits queue behind
//! each other's fsyncs while holding the connection. Instead, the store runs
//! with `synchronous = NORMAL` — a commit is written to the WAL but not yet
//! synced — and a write returns only after [`Durability::wait`] saw the WAL
//! fsynced past its commit. Whoever finds their commit not yet durable and
//! no fsync running starts one covering every commit made so far; callers
//! that commit meanwhile wait for it or the next. One fsync thus covers all
//! commits that queued during the previous one, and the connection is free
//! while the disk works.
//!
//! Durability is unchanged: nothing is acknowledged before the WAL frames
//! holding its commit are on disk, which is exactly what `FULL` guarantees
//! in WAL mode (SQLite's checkpoints, which copy the WAL into the database,
//! still sync under `NORMAL`). A failed fsync is sticky: the store refuses
//! every later write rather than acknowledge one it cannot make durable
//! (after a failed fsync the kernel may have dropped the dirty pages).

use super::StoreError;
use std::fs::File;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

pub(crate) struct Durability {
    wal: PathBuf,
    state: Mutex<State>,
    synced: Condvar,
}

#[derive(Default)]
struct State {
    /// Commits made (numbered in commit order).
    committed: u64,
    /// Every commit up to this number is on disk.
    durable: u64,
    /// An fsync is running.
    syncing: bool,
    /// An fsync failed: nothing is acknowledged any more.
    failed: bool,
    /// The WAL, opened at the first fsync (SQLite creates it lazily).
    file: Option<File>,
}

impl Durability {
    pub(crate) fn new(wal: PathBuf) -> Durability {
        Durability {
            wal,
            state: Mutex::new(State::default()),
            synced: Condvar::new(),
        }
    }

    /// Number a commit that just returned. Called with the connection still
    /// held, so numbers follow the order of commits in the WAL.
    pub(crate) fn committed(&self) -> u64 {
        let mut st = self.lock();
        st.committed += 1;
        st.committed
    }

    /// Return once commit `seq` is on disk.
    pub(crate) fn wait(&self, seq: u64) -> Result<(), StoreError> {
        let mut st = self.lock();
        loop {
            if st.failed {
                return Err(self.failure(std::io::Error::other(
                    "an earlier fsync of the write-ahead log failed",
                )));
            }
            if st.durable >= seq {
                return Ok(());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            // Every commit numbered so far has returned from SQLite, so its
            // frames are in the WAL file: one fsync covers them all.
            let target = st.committed;
            st.syncing = true;
            let file = match st.file.take() {
                Some(f) => Ok(f),
                None => File::options().read(true).write(true).open(&self.wal),
            };
            drop(st);
            let result = file.and_then(|f| f.sync_data().map(|()| f));
            st = self.lock();
            st.syncing = false;
            match result {
                Ok(f) => {
                    st.file = Some(f);
                    st.durable = st.durable.max(target);
                }
                Err(e) => {
                    st.failed = true;
                    self.synced.notify_all();
                    return Err(self.failure(e));
                }
            }
            self.synced.notify_all();
        }
    }

    fn failure(&self, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: self.wal.clone(),
            source,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a few counters, consistent between statements.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn wal() -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!(
            "edgeward-durable-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let wal = dir.join("x.db-wal");
        std::fs::write(&wal, b"frames").unwrap();
        (dir, wal)
    }

    #[test]
    fn every_commit_waits_for_an_fsync_that_covers_it() {
        let (dir, wal) = wal();
        let d = Arc::new(Durability::new(wal));
        let a = d.committed();
        let b = d.committed();
        d.wait(b).unwrap();
        // Covered by the same fsync.
        d.wait(a).unwrap();
        assert_eq!(d.lock().durable, 2);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let d = Arc::clone(&d);
                std::thread::spawn(move || {
                    let seq = d.committed();
                    d.wait(seq).unwrap();
                    assert!(d.lock().durable >= seq);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(d.lock().durable, 10);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_fsync_refuses_every_later_write() {
        let (dir, _) = wal();
        // No such file: the fsync cannot happen.
        let d = Durability::new(dir.join("missing.db-wal"));
        let seq = d.committed();
        assert!(matches!(d.wait(seq), Err(StoreError::Io { .. })));
        let seq = d.committed();
        assert!(matches!(d.wait(seq), Err(StoreError::Io { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
