//! Prometheus metrics for the bridge, hand-written because the set is small and the hot path
//! (one counter bump and one histogram observation per 20 ms frame per call) should be a few
//! relaxed atomic adds, not a label lookup.
//!
//! Exposed at `/metrics` in the Prometheus text format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::Mutex;

/// Bucket upper bounds in microseconds for the added-latency histograms.
const LATENCY_BUCKETS_US: [u64; 14] = [
    50, 100, 200, 300, 500, 750, 1_000, 1_500, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000,
];
/// Bucket upper bounds in microseconds for tool-call latency.
const TOOL_BUCKETS_US: [u64; 10] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000,
];

/// Bucket upper bounds in microseconds for the wait from a stream's upgrade to its `start`.
const START_WAIT_BUCKETS_US: [u64; 12] = [
    1_000, 5_000, 10_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000, 5_000_000,
    10_000_000, 30_000_000,
];

/// A fixed-bucket histogram of microsecond values; also keeps exact counts per bucket so the bench
/// can report quantiles.
pub struct Histogram {
    bounds: &'static [u64],
    counts: Vec<AtomicU64>,
    sum_us: AtomicU64,
    count: AtomicU64,
    max_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }

    pub fn observe_us(&self, us: u64) {
        let i = self
            .bounds
            .iter()
            .position(|&b| us <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
        self.max_us.fetch_max(us, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Relaxed)
    }

    pub fn max_us(&self) -> u64 {
        self.max_us.load(Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cum = 0;
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in self.bounds.iter().enumerate() {
            cum += self.counts[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{}\"}} {cum}",
                *b as f64 / 1e6
            );
        }
        cum += self.counts[self.bounds.len()].load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {}",
            self.sum_us.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count.load(Relaxed));
    }
}

/// All bridge metrics; one instance per process, shared by `Arc`.
pub struct Metrics {
    pub frames_in_twilio: AtomicU64,
    pub frames_out_twilio: AtomicU64,
    pub frames_in_agent: AtomicU64,
    pub frames_out_agent: AtomicU64,
    pub dropped_frames: AtomicU64,
    pub calls_started: AtomicU64,
    pub calls_rejected: AtomicU64,
    /// Caller → agent: from reading the Twilio frame to having written it to ElevenLabs.
    pub latency_to_agent: Histogram,
    /// Agent → caller: from reading the ElevenLabs frame to having written it to Twilio.
    pub latency_to_caller: Histogram,
    pub tool_latency: Histogram,
    /// From a stream's upgrade to its `start` message being read.
    pub start_wait: Histogram,
    /// Streams upgraded (or upgrading) whose `start` has not been read yet.
    pub streams_pending_start: AtomicU64,
    /// New streams refused before the upgrade, by [`crate::overload::Refusal`] (in its order).
    pub streams_shed: [AtomicU64; 4],
    /// The runtime's scheduling lag at the last look, microseconds.
    pub scheduling_lag_us: AtomicU64,
    /// Live calls per restaurant: the one tally admission checks and `pulsara_active_calls` shows.
    pub live: LiveCalls,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    ended: Mutex<BTreeMap<&'static str, u64>>,
    /// ElevenLabs `error` event types (or `close_<code>` without one), bounded in number.
    agent_errors: Mutex<BTreeMap<String, u64>>,
}

/// Live calls per restaurant and in total. Admission adds a call only within both caps
/// ([`LiveCalls::try_add`]); the call's end removes it. A restaurant keeps its entry at zero, so its
/// gauge drops to 0 instead of vanishing (restaurants come from configuration, so they are few).
#[derive(Debug, Default)]
pub struct LiveCalls {
    by_restaurant: Mutex<BTreeMap<String, usize>>,
    total: AtomicUsize,
}

impl LiveCalls {
    /// Counts a new call of `restaurant` if fewer than `max_total` calls are live and fewer than
    /// `restaurant_cap` of the restaurant's; `false` (nothing counted) otherwise.
    pub fn try_add(&self, restaurant: &str, restaurant_cap: usize, max_total: usize) -> bool {
        let mut by = self.by_restaurant.lock().unwrap_or_else(|e| e.into_inner());
        if self.total.load(SeqCst) >= max_total {
            return false;
        }
        let n = by.entry(restaurant.to_owned()).or_insert(0);
        if *n >= restaurant_cap {
            return false;
        }
        *n += 1;
        self.total.fetch_add(1, SeqCst);
        true
    }

    /// Uncounts a call [`LiveCalls::try_add`] counted.
    pub fn remove(&self, restaurant: &str) {
        let mut by = self.by_restaurant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by.get_mut(restaurant).filter(|n| **n > 0) {
            *n -= 1;
            self.total.fetch_sub(1, SeqCst);
        }
    }

    /// Live calls in all restaurants.
    pub fn total(&self) -> usize {
        self.total.load(SeqCst)
    }

    /// Live calls of `restaurant`.
    pub fn of(&self, restaurant: &str) -> usize {
        let by = self.by_restaurant.lock().unwrap_or_else(|e| e.into_inner());
        by.get(restaurant).copied().unwrap_or(0)
    }

    /// Every restaurant seen, with its live calls, sorted by id.
    pub fn by_restaurant(&self) -> Vec<(String, usize)> {
        let by = self.by_restaurant.lock().unwrap_or_else(|e| e.into_inner());
        by.iter().map(|(r, n)| (r.clone(), *n)).collect()
    }
}

/// Distinct ElevenLabs error types kept as labels; the rest count as `other`.
const MAX_AGENT_ERROR_TYPES: usize = 32;

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            frames_in_twilio: AtomicU64::new(0),
            frames_out_twilio: AtomicU64::new(0),
            frames_in_agent: AtomicU64::new(0),
            frames_out_agent: AtomicU64::new(0),
            dropped_frames: AtomicU64::new(0),
            calls_started: AtomicU64::new(0),
            calls_rejected: AtomicU64::new(0),
            latency_to_agent: Histogram::new(&LATENCY_BUCKETS_US),
            latency_to_caller: Histogram::new(&LATENCY_BUCKETS_US),
            tool_latency: Histogram::new(&TOOL_BUCKETS_US),
            start_wait: Histogram::new(&START_WAIT_BUCKETS_US),
            streams_pending_start: AtomicU64::new(0),
            streams_shed: Default::default(),
            scheduling_lag_us: AtomicU64::new(0),
            live: LiveCalls::default(),
            errors: Mutex::new(BTreeMap::new()),
            ended: Mutex::new(BTreeMap::new()),
            agent_errors: Mutex::new(BTreeMap::new()),
        }
    }
}

impl Metrics {
    pub fn call_started(&self) {
        self.calls_started.fetch_add(1, Relaxed);
    }

    pub fn call_ended(&self, reason: &'static str) {
        *self
            .ended
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason)
            .or_insert(0) += 1;
    }

    /// Counts a stream refused before its upgrade.
    pub fn stream_shed(&self, why: crate::overload::Refusal) {
        let i = crate::overload::Refusal::ALL
            .iter()
            .position(|r| *r == why)
            .unwrap_or(0);
        self.streams_shed[i].fetch_add(1, Relaxed);
    }

    /// Streams refused for `why` so far.
    pub fn streams_shed_of(&self, why: crate::overload::Refusal) -> u64 {
        crate::overload::Refusal::ALL
            .iter()
            .position(|r| *r == why)
            .map_or(0, |i| self.streams_shed[i].load(Relaxed))
    }

    pub fn error(&self, kind: &'static str) {
        *self
            .errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(kind)
            .or_insert(0) += 1;
    }

    /// Counts an ElevenLabs error by its type. Types come from the network: only short
    /// `[a-z0-9_]` names become labels, and only the first [`MAX_AGENT_ERROR_TYPES`] of them.
    pub fn agent_error(&self, kind: &str) {
        let mut m = self.agent_errors.lock().unwrap_or_else(|e| e.into_inner());
        let clean = !kind.is_empty()
            && kind.len() <= 48
            && kind.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let key = if clean && (m.contains_key(kind) || m.len() < MAX_AGENT_ERROR_TYPES) {
            kind.to_owned()
        } else {
            "other".to_owned()
        };
        *m.entry(key).or_insert(0) += 1;
    }

    /// How many ElevenLabs errors of `kind` were counted.
    pub fn agent_errors_of(&self, kind: &str) -> u64 {
        self.agent_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    pub fn errors_of(&self, kind: &str) -> u64 {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    /// Live calls in all restaurants.
    pub fn active_total(&self) -> usize {
        self.live.total()
    }

    /// Approximate quantile (upper bucket bound, µs) of a histogram; exact enough for reports.
    pub fn quantile_us(h: &Histogram, q: f64) -> u64 {
        let total = h.count();
        if total == 0 {
            return 0;
        }
        let target = ((total as f64) * q).ceil() as u64;
        let mut cum = 0;
        for (i, b) in h.bounds.iter().enumerate() {
            cum += h.counts[i].load(Relaxed);
            if cum >= target {
                return *b;
            }
        }
        h.max_us()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut o = String::with_capacity(4096);
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        o.push_str("# HELP pulsara_active_calls Live calls per restaurant.\n# TYPE pulsara_active_calls gauge\n");
        for (r, n) in self.live.by_restaurant() {
            let _ = writeln!(
                o,
                "pulsara_active_calls{{restaurant=\"{}\"}} {n}",
                escape(&r)
            );
        }
        o.push_str("# HELP pulsara_frames_total Media frames by direction and side.\n# TYPE pulsara_frames_total counter\n");
        for (dir, v) in [
            ("in_twilio", &self.frames_in_twilio),
            ("out_twilio", &self.frames_out_twilio),
            ("in_agent", &self.frames_in_agent),
            ("out_agent", &self.frames_out_agent),
        ] {
            let _ = writeln!(
                o,
                "pulsara_frames_total{{dir=\"{dir}\"}} {}",
                v.load(Relaxed)
            );
        }
        counter(
            &mut o,
            "pulsara_dropped_frames_total",
            "Media frames dropped (agent not ready, buffer full, after clear).",
            self.dropped_frames.load(Relaxed),
        );
        counter(
            &mut o,
            "pulsara_calls_started_total",
            "Streams accepted.",
            self.calls_started.load(Relaxed),
        );
        counter(
            &mut o,
            "pulsara_calls_rejected_total",
            "Streams refused (bad token, signature, capacity).",
            self.calls_rejected.load(Relaxed),
        );
        let _ = writeln!(
            o,
            "# HELP pulsara_streams_pending_start Streams upgraded that have not sent start yet.\n# TYPE pulsara_streams_pending_start gauge\npulsara_streams_pending_start {}",
            self.streams_pending_start.load(Relaxed)
        );
        o.push_str("# HELP pulsara_streams_shed_total New streams refused with 503 before the upgrade, by reason.\n# TYPE pulsara_streams_shed_total counter\n");
        for (why, n) in crate::overload::Refusal::ALL.iter().zip(&self.streams_shed) {
            let _ = writeln!(
                o,
                "pulsara_streams_shed_total{{reason=\"{}\"}} {}",
                why.label(),
                n.load(Relaxed)
            );
        }
        let _ = writeln!(
            o,
            "# HELP pulsara_scheduling_lag_seconds How late the runtime runs a timer that is due.\n# TYPE pulsara_scheduling_lag_seconds gauge\npulsara_scheduling_lag_seconds {}",
            self.scheduling_lag_us.load(Relaxed) as f64 / 1e6
        );
        o.push_str("# HELP pulsara_stream_start_wait_seconds From a stream's upgrade to its start message.\n# TYPE pulsara_stream_start_wait_seconds histogram\n");
        self.start_wait
            .render(&mut o, "pulsara_stream_start_wait_seconds", "");
        o.push_str("# HELP pulsara_added_latency_seconds Time a frame spends inside the bridge.\n# TYPE pulsara_added_latency_seconds histogram\n");
        self.latency_to_agent
            .render(&mut o, "pulsara_added_latency_seconds", "dir=\"to_agent\"");
        self.latency_to_caller
            .render(&mut o, "pulsara_added_latency_seconds", "dir=\"to_caller\"");
        o.push_str("# HELP pulsara_tool_call_seconds Tool call latency.\n# TYPE pulsara_tool_call_seconds histogram\n");
        self.tool_latency
            .render(&mut o, "pulsara_tool_call_seconds", "");
        o.push_str(
            "# HELP pulsara_errors_total Errors by kind.\n# TYPE pulsara_errors_total counter\n",
        );
        for (k, v) in self.errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "pulsara_errors_total{{kind=\"{k}\"}} {v}");
        }
        o.push_str("# HELP pulsara_agent_errors_total Conversations ElevenLabs refused or ended with an error, by error type (close_<code> when it sent none).\n# TYPE pulsara_agent_errors_total counter\n");
        for (k, v) in self.agent_errors.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "pulsara_agent_errors_total{{type=\"{k}\"}} {v}");
        }
        o.push_str("# HELP pulsara_calls_ended_total Finished calls by end reason.\n# TYPE pulsara_calls_ended_total counter\n");
        for (k, v) in self.ended.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(o, "pulsara_calls_ended_total{{reason=\"{k}\"}} {v}");
        }
        o
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let m = Metrics::default();
        m.call_started();
        assert!(m.live.try_add("r\"1", 1, 10));
        m.latency_to_agent.observe_us(120);
        m.latency_to_agent.observe_us(3_000_000);
        m.error("handoff_rejected");
        let text = m.render();
        assert!(
            text.contains("pulsara_active_calls{restaurant=\"r\\\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pulsara_added_latency_seconds_bucket{dir=\"to_agent\",le=\"0.0002\"} 1")
        );
        assert!(
            text.contains("pulsara_added_latency_seconds_bucket{dir=\"to_agent\",le=\"+Inf\"} 2")
        );
        assert!(text.contains("pulsara_errors_total{kind=\"handoff_rejected\"} 1"));
        m.stream_shed(crate::overload::Refusal::StartBacklog);
        m.streams_pending_start.fetch_add(3, Relaxed);
        m.scheduling_lag_us.store(1_500_000, Relaxed);
        m.start_wait.observe_us(20_000);
        let text = m.render();
        assert!(text.contains("pulsara_streams_shed_total{reason=\"start_backlog\"} 1"), "{text}");
        assert!(text.contains("pulsara_streams_shed_total{reason=\"scheduling_lag\"} 0"), "{text}");
        assert!(text.contains("pulsara_streams_pending_start 3"), "{text}");
        assert!(text.contains("pulsara_scheduling_lag_seconds 1.5"), "{text}");
        assert!(
            text.contains("pulsara_stream_start_wait_seconds_bucket{le=\"0.05\"} 1"),
            "{text}"
        );
        m.call_ended("caller_hung_up");
        m.live.remove("r\"1");
        assert_eq!(m.active_total(), 0);
        assert!(m.render().contains("pulsara_active_calls{restaurant=\"r\\\"1\"} 0"));
        assert_eq!(Metrics::quantile_us(&m.latency_to_agent, 0.5), 200);
    }

    #[test]
    fn live_calls_respect_both_caps_and_count_each_call_once() {
        let live = LiveCalls::default();
        assert!(live.try_add("a", 2, 3));
        assert!(live.try_add("a", 2, 3));
        assert!(!live.try_add("a", 2, 3), "restaurant cap");
        assert!(live.try_add("b", 5, 3));
        assert!(!live.try_add("b", 5, 3), "process cap");
        assert_eq!((live.total(), live.of("a"), live.of("b")), (3, 2, 1));
        live.remove("a");
        assert!(live.try_add("b", 5, 3));
        live.remove("zzz");
        live.remove("b");
        live.remove("b");
        live.remove("b");
        assert_eq!((live.total(), live.of("a"), live.of("b")), (1, 1, 0));
        assert_eq!(live.by_restaurant(), [("a".to_owned(), 1), ("b".to_owned(), 0)]);
        assert!(!live.try_add("c", 0, 3), "a restaurant capped at 0 takes no calls");
    }
}
