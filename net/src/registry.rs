//! The connections a listener has not served yet, in the order they became unserved.
//!
//! A connection is *waiting* from accept (and again from the end of each response) until its
//! next request head is complete, then *busy* until its response head is ready, and leaves for
//! good when it upgrades or closes. Waiting and busy connections count against the cap; when a
//! newcomer would exceed it, the oldest waiting connection is evicted (the oldest busy one only
//! when none is waiting). The connection task reads its phase to know which deadline applies.
//!
//! Pure bookkeeping: callers pass the instants and do the closing.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What a connection is doing, as far as the deadlines are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No request in progress; closed at `deadline`. `first` until the first request arrived.
    Waiting { deadline: Instant, first: bool },
    /// A request is being handled (the request timeout runs in the service).
    Busy,
    /// Handed off to an upgrade: no longer counted.
    Upgraded,
    /// Evicted or closed.
    Gone,
}

/// One connection's shared state.
#[derive(Debug)]
pub struct Conn {
    state: Mutex<(u64, Phase)>,
    /// Cancelled when the registry evicts the connection.
    pub evicted: CancellationToken,
    /// Signalled on every phase change, so the task re-arms its deadline.
    pub changed: Notify,
}

impl Conn {
    pub fn phase(&self) -> Phase {
        lock(&self.state).1
    }
}

#[derive(Debug, Default)]
struct Inner {
    seq: u64,
    waiting: BTreeMap<u64, Arc<Conn>>,
    busy: BTreeMap<u64, Arc<Conn>>,
}

/// The unserved connections of one listener.
#[derive(Debug)]
pub struct Registry {
    inner: Mutex<Inner>,
    max: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// A registry holding at most `max` (at least 1) unserved connections.
    pub fn new(max: usize) -> Self {
        Registry {
            inner: Mutex::new(Inner::default()),
            max: max.max(1),
        }
    }

    /// Connections waiting or busy now.
    pub fn unserved(&self) -> usize {
        let g = lock(&self.inner);
        g.waiting.len() + g.busy.len()
    }

    /// Registers a new connection, waiting until `deadline`. Returns it and the connections
    /// evicted to make room (already marked [`Phase::Gone`] and cancelled).
    pub fn admit(&self, deadline: Instant) -> (Arc<Conn>, Vec<Arc<Conn>>) {
        let mut g = lock(&self.inner);
        let mut evicted = Vec::new();
        while g.waiting.len() + g.busy.len() >= self.max {
            match evict_oldest(&mut g, true) {
                Some(c) => evicted.push(c),
                None => break,
            }
        }
        let key = g.seq;
        g.seq += 1;
        let conn = Arc::new(Conn {
            state: Mutex::new((
                key,
                Phase::Waiting {
                    deadline,
                    first: true,
                },
            )),
            evicted: CancellationToken::new(),
            changed: Notify::new(),
        });
        g.waiting.insert(key, conn.clone());
        (conn, evicted)
    }

    /// Evicts the oldest *waiting* connection (none busy), e.g. when accept runs out of
    /// descriptors. Returns it, or `None` when nothing is waiting.
    pub fn shed_one(&self) -> Option<Arc<Conn>> {
        evict_oldest(&mut lock(&self.inner), false)
    }

    /// A request head arrived: waiting → busy, keeping its place in line.
    pub fn request_started(&self, conn: &Arc<Conn>) {
        let mut g = lock(&self.inner);
        let mut st = lock(&conn.state);
        if let Phase::Waiting { .. } = st.1 {
            let key = st.0;
            if let Some(c) = g.waiting.remove(&key) {
                g.busy.insert(key, c);
            }
            st.1 = Phase::Busy;
            drop(st);
            conn.changed.notify_one();
        }
    }

    /// The response head is ready. An upgrade leaves the registry; otherwise the connection
    /// waits for its next request until `idle_deadline`, now the newest in line.
    pub fn request_finished(&self, conn: &Arc<Conn>, upgraded: bool, idle_deadline: Instant) {
        let mut g = lock(&self.inner);
        let mut st = lock(&conn.state);
        if st.1 != Phase::Busy {
            return;
        }
        g.busy.remove(&st.0);
        if upgraded {
            st.1 = Phase::Upgraded;
        } else {
            let key = g.seq;
            g.seq += 1;
            *st = (
                key,
                Phase::Waiting {
                    deadline: idle_deadline,
                    first: false,
                },
            );
            g.waiting.insert(key, conn.clone());
        }
        drop(st);
        conn.changed.notify_one();
    }

    /// The connection closed: forget it.
    pub fn closed(&self, conn: &Arc<Conn>) {
        let mut g = lock(&self.inner);
        let mut st = lock(&conn.state);
        g.waiting.remove(&st.0);
        g.busy.remove(&st.0);
        st.1 = Phase::Gone;
    }
}

fn evict_oldest(g: &mut Inner, busy_too: bool) -> Option<Arc<Conn>> {
    let conn = match g.waiting.pop_first() {
        Some((_, c)) => c,
        None if busy_too => g.busy.pop_first()?.1,
        None => return None,
    };
    lock(&conn.state).1 = Phase::Gone;
    conn.evicted.cancel();
    Some(conn)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> Instant {
        // A fixed base keeps the arithmetic readable; the registry never reads the clock.
        static BASE: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *BASE.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn a_full_registry_evicts_the_oldest_waiting_connection_not_the_newcomer() {
        let r = Registry::new(3);
        let (a, ev) = r.admit(at(10));
        assert!(ev.is_empty());
        let (b, _) = r.admit(at(10));
        let (c, _) = r.admit(at(10));
        // b is busy (its request head arrived), so a and c wait; a is the oldest.
        r.request_started(&b);
        let (d, ev) = r.admit(at(10));
        assert_eq!(ev.len(), 1);
        assert!(Arc::ptr_eq(&ev[0], &a));
        assert!(a.evicted.is_cancelled() && a.phase() == Phase::Gone);
        assert_eq!(r.unserved(), 3);
        // Next to go is c (waiting) before b (busy, though older).
        let (_e, ev) = r.admit(at(10));
        assert!(Arc::ptr_eq(&ev[0], &c));
        assert!(!b.evicted.is_cancelled() && !d.evicted.is_cancelled());
    }

    #[test]
    fn busy_connections_are_evicted_only_when_none_waits() {
        let r = Registry::new(2);
        let (a, _) = r.admit(at(1));
        let (b, _) = r.admit(at(1));
        r.request_started(&a);
        r.request_started(&b);
        let (_c, ev) = r.admit(at(1));
        assert!(Arc::ptr_eq(&ev[0], &a));
        // shed_one never touches busy connections.
        let r = Registry::new(2);
        let (a, _) = r.admit(at(1));
        r.request_started(&a);
        assert!(r.shed_one().is_none());
        let (b, _) = r.admit(at(1));
        assert!(Arc::ptr_eq(&r.shed_one().unwrap(), &b));
    }

    #[test]
    fn upgraded_connections_leave_and_kept_alive_ones_rejoin_as_newest() {
        let r = Registry::new(2);
        let (ws, _) = r.admit(at(1));
        let (ka, _) = r.admit(at(1));
        r.request_started(&ws);
        r.request_finished(&ws, true, at(99));
        assert_eq!(ws.phase(), Phase::Upgraded);
        assert_eq!(r.unserved(), 1);
        r.request_started(&ka);
        r.request_finished(&ka, false, at(500));
        assert_eq!(
            ka.phase(),
            Phase::Waiting {
                deadline: at(500),
                first: false
            }
        );
        let (n, _) = r.admit(at(1));
        // ka was the only one waiting besides the newcomer: room for both.
        assert_eq!(r.unserved(), 2);
        let (_m, ev) = r.admit(at(1));
        assert!(
            Arc::ptr_eq(&ev[0], &ka),
            "the kept-alive connection is older than n"
        );
        assert!(!ws.evicted.is_cancelled() && !n.evicted.is_cancelled());
        r.closed(&n);
        assert_eq!(r.unserved(), 1);
        // A finish after eviction or close changes nothing.
        r.request_finished(&ka, false, at(1));
        assert_eq!(ka.phase(), Phase::Gone);
    }
}
