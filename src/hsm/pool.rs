//! A fixed pool of read-write sessions on one logged-in token. A PKCS#11 session must not be
//! used by two threads at once, so each request checks one out and gives it back on drop.

use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use cryptoki::session::Session;

use super::HsmError;

pub(crate) struct SessionPool {
    idle: Mutex<Vec<Session>>,
    freed: Condvar,
    size: usize,
    wait: Duration,
}

/// A session checked out of the pool; it goes back when dropped.
pub(crate) struct PooledSession<'a> {
    pool: &'a SessionPool,
    session: Option<Session>,
}

impl SessionPool {
    pub(crate) fn new(sessions: Vec<Session>, wait: Duration) -> SessionPool {
        SessionPool {
            size: sessions.len(),
            idle: Mutex::new(sessions),
            freed: Condvar::new(),
            wait,
        }
    }

    /// Waits up to the pool's timeout for a free session.
    pub(crate) fn get(&self) -> Result<PooledSession<'_>, HsmError> {
        let start = Instant::now();
        let mut idle = self.idle.lock().map_err(|_| poisoned())?;
        loop {
            if let Some(session) = idle.pop() {
                return Ok(PooledSession {
                    pool: self,
                    session: Some(session),
                });
            }
            let left = self.wait.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Err(HsmError::PoolTimeout {
                    size: self.size,
                    waited_ms: start.elapsed().as_millis(),
                });
            }
            idle = self
                .freed
                .wait_timeout(idle, left)
                .map_err(|_| poisoned())?
                .0;
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
}

impl SessionPool {
    /// Waits until every session is free and takes them all.
    pub(crate) fn take_all(&self) -> Result<AllSessions<'_>, HsmError> {
        let start = Instant::now();
        let mut taken = Vec::with_capacity(self.size);
        while taken.len() < self.size {
            let mut idle = self.idle.lock().map_err(|_| poisoned())?;
            taken.append(&mut idle);
            if taken.len() < self.size {
                let left = self.wait.saturating_sub(start.elapsed());
                if left.is_zero() {
                    // Give back what we hold before failing.
                    idle.append(&mut taken);
                    self.freed.notify_all();
                    return Err(HsmError::PoolTimeout {
                        size: self.size,
                        waited_ms: start.elapsed().as_millis(),
                    });
                }
                drop(
                    self.freed
                        .wait_timeout(idle, left)
                        .map_err(|_| poisoned())?,
                );
            }
        }
        Ok(AllSessions {
            pool: self,
            sessions: taken,
        })
    }
}

impl AllSessions<'_> {
    /// One of the held sessions.
    pub(crate) fn first(&self) -> Result<&Session, HsmError> {
        self.sessions.first().ok_or_else(|| HsmError::Unexpected {
            what: "an empty session pool".into(),
        })
    }
}

impl Drop for AllSessions<'_> {
    fn drop(&mut self) {
        if let Ok(mut idle) = self.pool.idle.lock() {
            idle.append(&mut self.sessions);
            self.pool.freed.notify_all();
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
        if let (Some(session), Ok(mut idle)) = (self.session.take(), self.pool.idle.lock()) {
            idle.push(session);
            self.pool.freed.notify_one();
        }
    }
}

impl SessionPool {
    /// (sessions checked out, pool size), for metrics.
    pub(crate) fn use_counts(&self) -> (usize, usize) {
        let idle = self.idle.lock().map_or(0, |idle| idle.len());
        (self.size.saturating_sub(idle), self.size)
    }
}
