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
//! still sync under `NORMAL`; so does the WAL header and its directory
//! entry). Two differences, both accepted: a commit is *visible* to readers
//! (this connection, other processes) a moment before it is durable, so a
//! read-only answer given in that window may show a write that a power cut
//! then loses — never one that was acknowledged; and `FULL` pads a commit's
//! last frame to a sector boundary on devices without power-safe overwrite,
//! which SQLite's Linux VFS assumes by default anyway.
//!
//! A failed fsync is sticky: the store refuses every later write rather than
//! acknowledge one it cannot make durable (after a failed fsync the kernel
//! may have dropped the dirty pages). Failing to open the WAL is not: that
//! write fails, the next one tries again.

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
            let file = match st.file.take() {
                Some(f) => f,
                None => match File::options().read(true).write(true).open(&self.wal) {
                    Ok(f) => f,
                    // Not sticky: nothing was lost, the next write retries.
                    Err(e) => return Err(self.failure(e)),
                },
            };
            st.syncing = true;
            drop(st);
            let synced = file.sync_data();
            st = self.lock();
            st.syncing = false;
            st.file = Some(file);
            match synced {
                Ok(()) => st.durable = st.durable.max(target),
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
    fn a_wal_that_cannot_be_opened_fails_that_write_only() {
        let (dir, _) = wal();
        let path = dir.join("late.db-wal");
        let d = Durability::new(path.clone());
        let seq = d.committed();
        assert!(matches!(d.wait(seq), Err(StoreError::Io { .. })));
        // Once it exists, writes go through again.
        std::fs::write(&path, b"frames").unwrap();
        let seq = d.committed();
        d.wait(seq).unwrap();
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_failed_fsync_refuses_every_later_write() {
        let (dir, wal) = wal();
        let d = Durability::new(wal);
        d.lock().failed = true;
        let seq = d.committed();
        assert!(matches!(d.wait(seq), Err(StoreError::Io { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
