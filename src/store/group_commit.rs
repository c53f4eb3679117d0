//! Group commit: writes that arrive together share one durable `COMMIT` (one fsync).
//!
//! Every write runs on its caller's thread inside the one open transaction, wrapped in a
//! savepoint so that a failing write leaves nothing behind while the others stay. The write
//! that finds nobody else arriving (or fills the batch) commits; the others wait for that
//! commit and only then return. So no caller is answered before its change and its audit
//! record are on disk, exactly as with one transaction each, but concurrent requests pay for
//! one fsync instead of one each.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use rusqlite::Connection;

use super::{CachedSql, StoreError};

/// The most writes one commit carries: a bound on how long the first of them waits.
const MAX_BATCH: usize = 256;

/// The write connection and the batch open on it.
pub(super) struct GroupCommit {
    state: Mutex<State>,
    /// Writers that want the connection but do not hold it yet.
    arriving: AtomicUsize,
    stats: CommitStats,
}

/// Counters for metrics: commits, the writes they carried, and writes not yet durable.
#[derive(Debug, Default)]
pub struct CommitStats {
    commits: AtomicU64,
    writes: AtomicU64,
    pending: AtomicUsize,
}

impl CommitStats {
    /// Durable commits so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Writes carried by those commits.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Writes queued or running and not yet committed: the audit queue depth.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }
}

/// The connection and its batch bookkeeping; holding the lock means holding the connection.
pub(super) struct State {
    pub(super) conn: Connection,
    open: Option<Batch>,
    last_batch: u64,
}

struct Batch {
    id: u64,
    writes: u64,
    /// Every writer of the batch holds it and waits on it.
    outcome: Arc<Outcome>,
}

/// How a batch ended: set once, when it is committed (`Ok`) or rolled back (`Err`, why).
/// Its own lock, not the connection's: waiters wake without taking the connection from the
/// writers of the next batch.
#[derive(Default)]
struct Outcome {
    result: Mutex<Option<Result<(), String>>>,
    settled: Condvar,
}

impl Outcome {
    fn set(&self, result: Result<(), String>) {
        // A poisoned lock still holds a usable Option; the waiters must be woken either way.
        let mut slot = self.result.lock().unwrap_or_else(|e| e.into_inner());
        slot.get_or_insert(result);
        self.settled.notify_all();
    }

    fn get(&self) -> Option<Result<(), String>> {
        self.result
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Blocks until the batch is settled.
    fn wait(&self) -> Result<(), String> {
        let mut slot = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(result) = slot.as_ref() {
                return result.clone();
            }
            slot = self.settled.wait(slot).unwrap_or_else(|e| e.into_inner());
        }
    }
}

impl GroupCommit {
    pub(super) fn new(conn: Connection) -> GroupCommit {
        GroupCommit {
            state: Mutex::new(State {
                conn,
                open: None,
                last_batch: 0,
            }),
            arriving: AtomicUsize::new(0),
            stats: CommitStats::default(),
        }
    }

    pub(super) fn stats(&self) -> &CommitStats {
        &self.stats
    }

    /// The write connection itself, for reads of a store that has no reader connection.
    pub(super) fn lock(&self) -> Result<MutexGuard<'_, State>, StoreError> {
        self.state.lock().map_err(|_| StoreError::Poisoned)
    }

    /// Runs `f` in the open batch (opening one if needed) and returns once that batch is
    /// durably committed. An error from `f` undoes only `f`'s own changes.
    pub(super) fn write<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        let result = self.write_in_batch(context, f);
        self.stats.pending.fetch_sub(1, Ordering::Relaxed);
        result
    }

    fn write_in_batch<T>(
        &self,
        context: &'static str,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.arriving.fetch_add(1, Ordering::SeqCst);
        let locked = self.state.lock();
        self.arriving.fetch_sub(1, Ordering::SeqCst);
        let mut state = locked.map_err(|_| StoreError::Poisoned)?;
        let outcome = self.open_batch(&mut state, context)?;
        let out = match in_savepoint(&state.conn, context, f) {
            Ok(out) => out,
            Err(broken) => {
                // The savepoint itself failed: nothing in this batch can be trusted.
                self.settle(&mut state, Some(broken.to_string()));
                return Err(broken);
            }
        };
        let writes = state.open.as_mut().map_or(0, |b| {
            b.writes += 1;
            b.writes
        });
        if self.arriving.load(Ordering::SeqCst) == 0 || writes >= MAX_BATCH as u64 {
            let failure = state
                .conn
                .execute_cached("COMMIT", [])
                .err()
                .map(|e| e.to_string());
            self.settle(&mut state, failure);
        } else if out.is_ok() {
            // A writer is arriving and will commit this batch (or fail it).
            drop(state);
            let _ = outcome.wait();
        }
        match (out, outcome.get()) {
            (Ok(_), Some(Err(reason))) => Err(StoreError::CommitFailed {
                context,
                reason: reason.clone(),
            }),
            (out, _) => out,
        }
    }

    /// The open batch's outcome, opening a batch if none is.
    fn open_batch(
        &self,
        state: &mut State,
        context: &'static str,
    ) -> Result<Arc<Outcome>, StoreError> {
        if let Some(batch) = &state.open {
            return Ok(Arc::clone(&batch.outcome));
        }
        state
            .conn
            .execute_cached("BEGIN IMMEDIATE", [])
            .map_err(StoreError::sqlite(context))?;
        state.last_batch += 1;
        let outcome = Arc::new(Outcome::default());
        state.open = Some(Batch {
            id: state.last_batch,
            writes: 0,
            outcome: Arc::clone(&outcome),
        });
        Ok(outcome)
    }

    /// Closes the open batch, committed or (with `failure`) rolled back, and wakes its waiters.
    fn settle(&self, state: &mut State, failure: Option<String>) {
        let Some(batch) = state.open.take() else {
            return;
        };
        if let Some(reason) = failure {
            if !state.conn.is_autocommit() {
                // The connection must not stay inside the failed transaction.
                if let Err(e) = state.conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "cannot roll back a failed registry batch; \
                        later writes will fail until hkms is restarted");
                }
            }
            tracing::error!(batch = batch.id, writes = batch.writes, %reason, "a registry commit failed; its writes were refused");
            batch.outcome.set(Err(reason));
        } else {
            self.stats.commits.fetch_add(1, Ordering::Relaxed);
            self.stats.writes.fetch_add(batch.writes, Ordering::Relaxed);
            batch.outcome.set(Ok(()));
        }
    }
}

/// Runs `f` inside a savepoint: released on success, rolled back on error. The outer error is
/// for the savepoint itself (or a panic in `f`, which must not leave the batch's waiters
/// hanging); the inner one is `f`'s.
fn in_savepoint<T>(
    conn: &Connection,
    context: &'static str,
    f: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<Result<T, StoreError>, StoreError> {
    conn.execute_cached("SAVEPOINT hkms_write", [])
        .map_err(StoreError::sqlite(context))?;
    let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(conn)))
        .map_err(|_| StoreError::WritePanicked { context })?;
    if out.is_err() {
        conn.execute_cached("ROLLBACK TO hkms_write", [])
            .map_err(StoreError::sqlite(context))?;
    }
    conn.execute_cached("RELEASE hkms_write", [])
        .map_err(StoreError::sqlite(context))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use super::*;

    type Job = Box<dyn FnOnce(&Connection) -> Result<(), StoreError> + Send>;

    fn writer(dir: &tempfile::TempDir) -> Arc<GroupCommit> {
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; CREATE TABLE t (n INTEGER UNIQUE)",
        )
        .unwrap();
        Arc::new(GroupCommit::new(conn))
    }

    fn insert(conn: &Connection, n: i64) -> Result<(), StoreError> {
        conn.execute("INSERT INTO t (n) VALUES (?1)", [n])
            .map(|_| ())
            .map_err(StoreError::sqlite("test insert"))
    }

    fn rows(dir: &tempfile::TempDir) -> Vec<i64> {
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        let mut stmt = conn.prepare("SELECT n FROM t ORDER BY n").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    /// Starts one writer thread per job while the connection is held, waits until all of
    /// them are queued, then lets them go: they must land in one batch.
    fn run_queued(gc: &Arc<GroupCommit>, jobs: Vec<Job>) -> Vec<Result<(), StoreError>> {
        let count = jobs.len();
        let held = gc.lock().unwrap();
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|job| {
                let gc = Arc::clone(gc);
                std::thread::spawn(move || gc.write("test write", job))
            })
            .collect();
        let start = Instant::now();
        while gc.arriving.load(Ordering::SeqCst) < count {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "writers never queued"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(held);
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn queued_writes_share_one_commit_and_are_all_durable() {
        let dir = tempfile::tempdir().unwrap();
        let gc = writer(&dir);
        let jobs = (1..=8)
            .map(|n| Box::new(move |c: &Connection| insert(c, n)) as Box<_>)
            .collect();
        for result in run_queued(&gc, jobs) {
            result.unwrap();
        }
        assert_eq!((gc.stats().commits(), gc.stats().writes()), (1, 8));
        assert_eq!(gc.stats().pending(), 0);
        // Another connection (as after a crash) sees every acknowledged write.
        assert_eq!(rows(&dir), (1..=8).collect::<Vec<_>>());
    }

    #[test]
    fn a_failing_write_is_undone_alone() {
        let dir = tempfile::tempdir().unwrap();
        let gc = writer(&dir);
        gc.write("test write", |c| insert(c, 0)).unwrap();
        let mut jobs: Vec<Job> = (1..=4)
            .map(|n| Box::new(move |c: &Connection| insert(c, n)) as Box<_>)
            .collect();
        jobs.push(Box::new(|c: &Connection| {
            insert(c, 100)?;
            insert(c, 0) // duplicate: fails after one insert of its own
        }));
        let results = run_queued(&gc, jobs);
        assert_eq!(results.iter().filter(|r| r.is_err()).count(), 1);
        assert_eq!(rows(&dir), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_panicking_write_fails_its_batch_without_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let gc = writer(&dir);
        let jobs: Vec<Job> = vec![
            Box::new(|c: &Connection| insert(c, 1)),
            Box::new(|_: &Connection| panic!("bug inside a write")),
        ];
        let results = run_queued(&gc, jobs);
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::WritePanicked { .. })))
        );
        // Nothing of a broken batch is kept, and its other writer was told so (or, if it
        // committed before the panic, its row is there).
        let kept = rows(&dir);
        let told = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(kept.len(), told);
        // The writer works again afterwards.
        gc.write("test write", |c| insert(c, 2)).unwrap();
        assert!(rows(&dir).contains(&2));
    }

    #[test]
    fn sequential_writes_commit_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let gc = writer(&dir);
        for n in 0..3 {
            gc.write("test write", |c| insert(c, n)).unwrap();
        }
        assert_eq!((gc.stats().commits(), gc.stats().writes()), (3, 3));
        assert_eq!(rows(&dir), vec![0, 1, 2]);
    }
}
