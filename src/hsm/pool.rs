//! A fixed pool of read-write sessions on one logged-in token. A PKCS#11 session must not be
//! used by two threads at once, so each request checks one out and gives it back on drop.
//!
//! The pool has a generation: when its sessions are lost (see `recovery.rs`) it is marked
//! broken, hands nothing out, and closes every session that comes back; a refill starts the
//! next generation. So a session of a dead generation is never reused.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use cryptoki::session::Session;

use super::HsmError;

pub(crate) struct SessionPool {
    state: Mutex<State>,
    /// A session went back to `idle`: wakes one waiting request (waking them all made every
    /// waiter fight for the lock at each return, a fifth of the server's CPU under load).
    freed: Condvar,
    /// A session came back or the pool changed: wakes `take_all` and `wait_until_returned`.
    returned: Condvar,
    size: usize,
    wait: Duration,
}

struct State {
    idle: Vec<Session>,
    /// Bumped by every refill; a session remembers the generation it was handed out in.
    generation: u64,
    /// The sessions are lost; nothing is handed out until the next refill.
    broken: bool,
    /// Sessions checked out (of any generation). A refill waits until it is zero, so no
    /// session of an old generation is alive when the module is initialised again.
    lent: usize,
    /// Threads waiting on `returned`.
    draining: usize,
}

/// A session checked out of the pool; it goes back when dropped.
pub(crate) struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
    generation: u64,
}

impl SessionPool {
    pub(crate) fn new(sessions: Vec<Session>, wait: Duration) -> SessionPool {
        SessionPool {
            size: sessions.len(),
            state: Mutex::new(State {
                idle: sessions,
                generation: 0,
                broken: false,
                lent: 0,
                draining: 0,
            }),
            freed: Condvar::new(),
            returned: Condvar::new(),
            wait,
        }
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, HsmError> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// The current generation (see the module doc).
    pub(crate) fn generation(&self) -> u64 {
        self.lock().map(|s| s.generation).unwrap_or(u64::MAX)
    }

    /// Whether the sessions are lost and not rebuilt yet.
    pub(crate) fn is_broken(&self) -> bool {
        self.lock().map(|s| s.broken).unwrap_or(true)
    }

    /// How many sessions the pool holds when whole.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Waits up to the pool's timeout for a free session; fails at once while broken.
    pub(crate) fn get(&self) -> Result<PooledSession<'_>, HsmError> {
        let start = Instant::now();
        let mut state = self.lock()?;
        loop {
            if state.broken {
                return Err(HsmError::Reconnecting {
                    detail: "the session pool is being rebuilt".into(),
                });
            }
            if let Some(session) = state.idle.pop() {
                state.lent += 1;
                return Ok(PooledSession {
                    pool: self,
                    session: Some(session),
                    generation: state.generation,
                });
            }
            let left = self.wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(HsmError::PoolTimeout {
                    size: self.size,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            state = self
                .freed
                .wait_timeout(state, left)
                .map_err(|_| poisoned())?
                .0;
        }
    }

    /// Marks generation `seen` broken and closes its idle sessions. Returns true only for the
    /// first caller, so one loss is handled (and logged) once however many requests saw it.
    pub(crate) fn mark_broken(&self, seen: u64) -> bool {
        let Ok(mut state) = self.lock() else {
            return false;
        };
        if state.broken || state.generation != seen {
            return false;
        }
        state.broken = true;
        state.idle.clear();
        // Waiters for a free session wake up and fail instead of waiting for nothing.
        self.wake_all();
        true
    }

    /// Waits up to the pool's timeout until every lent session has come back (and, being of
    /// a broken generation, was closed).
    pub(crate) fn wait_until_returned(&self) -> Result<(), HsmError> {
        let start = Instant::now();
        let mut state = self.lock()?;
        while state.lent > 0 {
            let left = self.wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(HsmError::Reconnecting {
                    detail: format!(
                        "{} requests still hold sessions of the lost one",
                        state.lent
                    ),
                });
            }
            state = self.wait_returned(state, left)?;
        }
        Ok(())
    }

    /// Waits on `returned` (see `draining`).
    fn wait_returned<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        left: Duration,
    ) -> Result<MutexGuard<'a, State>, HsmError> {
        state.draining += 1;
        let mut state = self
            .returned
            .wait_timeout(state, left)
            .map_err(|_| poisoned())?
            .0;
        state.draining -= 1;
        Ok(state)
    }

    /// Wakes every waiter of both kinds: for changes that free many sessions, or none.
    fn wake_all(&self) {
        self.freed.notify_all();
        self.returned.notify_all();
    }

    /// Puts fresh sessions in and starts a new generation; returns it.
    pub(crate) fn refill(&self, sessions: Vec<Session>) -> Result<u64, HsmError> {
        let mut state = self.lock()?;
        state.idle = sessions;
        state.generation += 1;
        state.broken = false;
        self.wake_all();
        Ok(state.generation)
    }

    /// Takes a session back: kept if its generation is current and whole, closed otherwise.
    fn give_back(&self, session: Session, generation: u64) {
        if let Ok(mut state) = self.state.lock() {
            if !state.broken && state.generation == generation {
                state.idle.push(session);
                self.freed.notify_one();
            } else {
                drop(session);
            }
            state.lent = state.lent.saturating_sub(1);
            if state.draining > 0 {
                self.returned.notify_all();
            }
        }
    }
}

fn poisoned() -> HsmError {
    HsmError::Unexpected {
        what: "state of the session pool (a thread panicked while holding it)".into(),
    }
}

/// Every session of the pool, held so that no request runs meanwhile (security-officer work
/// changes the login state of the whole application). They go back on drop.
pub(crate) struct AllSessions<'a> {
    pool: &'a SessionPool,
    sessions: Vec<Session>,
    generation: u64,
}

impl SessionPool {
    /// Waits until every session is free and takes them all (as they come free, so a stream
    /// of short requests cannot starve it); fails at once while broken.
    pub(crate) fn take_all(&self) -> Result<AllSessions<'_>, HsmError> {
        let start = Instant::now();
        let mut state = self.lock()?;
        let mut taken = Vec::with_capacity(self.size);
        loop {
            if state.broken {
                // What we hold is of the lost generation: close it.
                state.lent = state.lent.saturating_sub(taken.len());
                taken.clear();
                self.wake_all();
                return Err(HsmError::Reconnecting {
                    detail: "the session pool is being rebuilt".into(),
                });
            }
            state.lent += state.idle.len();
            taken.append(&mut state.idle);
            if taken.len() >= self.size {
                return Ok(AllSessions {
                    pool: self,
                    sessions: taken,
                    generation: state.generation,
                });
            }
            let left = self.wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                // Give back what we hold before failing.
                state.lent = state.lent.saturating_sub(taken.len());
                state.idle.append(&mut taken);
                self.wake_all();
                return Err(HsmError::PoolTimeout {
                    size: self.size,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            state = self.wait_returned(state, left)?;
        }
    }
}

impl AllSessions<'_> {
    /// Closes every held session, then puts the sessions `reopen` makes (after initialising
    /// the module again) in their place as a new generation, which it returns. If `reopen`
    /// fails, the pool is left broken for the recovery to rebuild.
    pub(crate) fn replace(
        mut self,
        reopen: impl FnOnce() -> Result<Vec<Session>, HsmError>,
    ) -> Result<u64, HsmError> {
        let held = self.sessions.len();
        // Closed here, before any C_Finalize: no old handle may outlive the module.
        self.sessions.clear();
        let fresh = reopen();
        let mut state = self.pool.lock()?;
        state.lent = state.lent.saturating_sub(held);
        let out = match fresh {
            Ok(sessions) => {
                state.idle = sessions;
                state.generation += 1;
                Ok(state.generation)
            }
            Err(e) => {
                state.broken = true;
                state.idle.clear();
                Err(e)
            }
        };
        self.pool.wake_all();
        out
    }

    /// One of the held sessions.
    pub(crate) fn first(&self) -> Result<&Session, HsmError> {
        self.sessions.first().ok_or_else(|| HsmError::Unexpected {
            what: "an empty session pool".into(),
        })
    }
}

impl Drop for AllSessions<'_> {
    fn drop(&mut self) {
        for session in self.sessions.drain(..) {
            self.pool.give_back(session, self.generation);
        }
    }
}

impl std::ops::Deref for PooledSession<'_> {
    type Target = Session;
    fn deref(&self) -> &Session {
        // The option is only emptied in drop.
        self.session
            .as_ref()
            .unwrap_or_else(|| unreachable!("session taken before drop"))
    }
}

impl Drop for PooledSession<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool.give_back(session, self.generation);
        }
    }
}

impl PooledSession<'_> {
    /// The pool generation this session belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }
}

impl SessionPool {
    /// (sessions checked out, pool size), for metrics.
    pub(crate) fn use_counts(&self) -> (usize, usize) {
        let lent = self.lock().map_or(0, |state| state.lent);
        (lent, self.size)
    }
}
