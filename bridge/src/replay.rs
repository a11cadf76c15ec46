//! Single use of handoff tokens: a bounded memory of the tokens already accepted, each kept until it
//! expires. When full, the oldest entry is forgotten first (it is the closest to expiry anyway).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// A bounded replay cache keyed by [`pulsara_core::handoff::HandoffClaims::replay_key`].
pub struct ReplayCache {
    inner: Mutex<Inner>,
    cap: usize,
}

struct Inner {
    seen: HashMap<String, i64>,
    order: VecDeque<(String, i64)>,
}

impl ReplayCache {
    pub fn new(cap: usize) -> Self {
        ReplayCache {
            inner: Mutex::new(Inner {
                seen: HashMap::new(),
                order: VecDeque::new(),
            }),
            cap: cap.max(1),
        }
    }

    /// Records `key` (valid until `exp`, unix seconds); `false` if it was already used.
    pub fn first_use(&self, key: &str, exp: i64, now: i64) -> bool {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let inner = &mut *g;
        while let Some((k, e)) = inner.order.front() {
            if *e >= now - pulsara_core::handoff::CLOCK_SKEW_SECS && inner.order.len() < self.cap {
                break;
            }
            inner.seen.remove(k);
            inner.order.pop_front();
        }
        if inner.seen.contains_key(key) {
            return false;
        }
        inner.seen.insert(key.to_owned(), exp);
        inner.order.push_back((key.to_owned(), exp));
        true
    }

    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .seen
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_second_use_and_stays_bounded() {
        let c = ReplayCache::new(3);
        assert!(c.first_use("a", 100, 50));
        assert!(!c.first_use("a", 100, 51));
        for k in ["b", "c", "d", "e"] {
            assert!(c.first_use(k, 100, 52));
        }
        assert!(c.len() <= 3);
        // Expired entries are pruned.
        let c = ReplayCache::new(10);
        c.first_use("x", 10, 0);
        c.first_use("y", 1000, 100);
        assert_eq!(c.len(), 1);
    }
}
