//! The bridge's own Prometheus families, registered into the process's one
//! [`prometheus::Registry`] (built by [`crate::service::Wiring`], or by [`crate::App::new`] for a
//! bridge on its own). The other parts of the process register theirs into the same registry:
//! the listener ([`pulsara_net::Stats::collector`]), the outbox and the config cache
//! ([`pulsara_dashboard::outbox::OutboxCollector`], `ConfigCache::collector`), the tool runner
//! ([`crate::tools::PolicyToolRunner::collector`]).
//!
//! The hot path (one counter bump and one histogram observation per 20 ms frame per call) uses
//! handles resolved here once, so it is a few atomic adds, never a label lookup.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Mutex;

use prometheus::core::Collector as _;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

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

/// Bucket upper bounds in microseconds for what the caller waits for (first audio, a turn).
const CALLER_WAIT_BUCKETS_US: [u64; 14] = [
    50_000, 100_000, 200_000, 300_000, 500_000, 750_000, 1_000_000, 1_500_000, 2_000_000,
    3_000_000, 5_000_000, 7_500_000, 10_000_000, 20_000_000,
];
/// Distinct restaurants kept as labels of the caller-wait families; the rest count as `other`.
const MAX_LATENCY_RESTAURANTS: usize = 200;

/// Distinct ElevenLabs error types kept as labels; the rest count as `other`.
const MAX_AGENT_ERROR_TYPES: usize = 32;

/// Seconds from microseconds, as histograms and gauges take them.
pub fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// The bridge's metrics; one instance per process, shared by `Arc`.
pub struct Metrics {
    /// `pulsara_frames_total{dir="in_twilio"}`: Twilio `media` messages read.
    pub frames_in_twilio: IntCounter,
    /// `dir="out_twilio"`: `media` messages written to Twilio.
    pub frames_out_twilio: IntCounter,
    /// `dir="in_agent"`: ElevenLabs `audio` events read.
    pub frames_in_agent: IntCounter,
    /// `dir="out_agent"`: `user_audio_chunk` messages written to ElevenLabs.
    pub frames_out_agent: IntCounter,
    pub dropped_frames: IntCounter,
    pub calls_started: IntCounter,
    pub calls_rejected: IntCounter,
    /// Caller → agent: from reading the Twilio frame to having written it to ElevenLabs.
    pub latency_to_agent: Histogram,
    /// Agent → caller: from reading the ElevenLabs frame to having written it to Twilio.
    pub latency_to_caller: Histogram,
    pub tool_latency: Histogram,
    /// From a stream's upgrade to its `start` message being read.
    pub start_wait: Histogram,
    /// Streams upgraded (or upgrading) whose `start` has not been read yet.
    pub streams_pending_start: IntGauge,
    /// The runtime's scheduling lag at the last look, seconds (set at every scrape).
    pub scheduling_lag: Gauge,
    /// New streams refused before the upgrade, by [`crate::overload::Refusal`] (in its order).
    streams_shed: Vec<IntCounter>,
    /// Live calls per restaurant: the one tally admission checks and `pulsara_active_calls` shows.
    pub live: LiveCalls,
    errors: IntCounterVec,
    ended: IntCounterVec,
    /// ElevenLabs `error` event types (or `close_<code>` without one), bounded in number.
    agent_errors: IntCounterVec,
    agent_error_types: BoundedLabels,
    /// `pulsara_caller_wait_seconds{restaurant, wait}`: first audio (from stream start and from
    /// the webhook) and turns, as the caller felt them.
    caller_wait: HistogramVec,
    /// `pulsara_bridge_share_seconds{restaurant, wait}`: the bridge's own part of the first
    /// audio and of each turn, and each barge-in (interruption read to clear written).
    bridge_share: HistogramVec,
    latency_restaurants: BoundedLabels,
}

/// Label values taken from the outside world, kept to the first `max` distinct ones; the rest
/// share `other`, so a family's series stay bounded.
struct BoundedLabels {
    known: Mutex<HashSet<String>>,
    max: usize,
}

impl BoundedLabels {
    fn new(max: usize) -> Self {
        BoundedLabels { known: Mutex::new(HashSet::new()), max }
    }

    fn label<'a>(&self, value: &'a str) -> &'a str {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.contains(value) || known.len() < self.max {
            known.insert(value.to_owned());
            value
        } else {
            "other"
        }
    }
}

impl Default for Metrics {
    /// Metrics registered in a registry of their own (tests, benchmarks).
    fn default() -> Self {
        Metrics::new(&Registry::new()).expect("the bridge's fixed metric names are valid")
    }
}

fn histogram(name: &str, help: &str, bounds_us: &[u64]) -> HistogramOpts {
    HistogramOpts::new(name, help).buckets(bounds_us.iter().map(|b| secs(*b)).collect())
}

impl Metrics {
    /// Creates the bridge's families and registers them into `registry`.
    ///
    /// # Errors
    /// A family of the same name is already registered there.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let active = IntGaugeVec::new(
            Opts::new("pulsara_active_calls", "Live calls per restaurant."),
            &["restaurant"],
        )?;
        let frames = IntCounterVec::new(
            Opts::new(
                "pulsara_frames_total",
                "Media frames by direction and side.",
            ),
            &["dir"],
        )?;
        let dropped_frames = IntCounter::new(
            "pulsara_dropped_frames_total",
            "Media frames dropped (agent not ready, buffer full, after clear).",
        )?;
        let calls_started = IntCounter::new("pulsara_calls_started_total", "Streams accepted.")?;
        let calls_rejected = IntCounter::new(
            "pulsara_calls_rejected_total",
            "Streams refused (bad token, signature, capacity).",
        )?;
        let streams_pending_start = IntGauge::new(
            "pulsara_streams_pending_start",
            "Streams upgraded that have not sent start yet.",
        )?;
        let shed = IntCounterVec::new(
            Opts::new(
                "pulsara_streams_shed_total",
                "New streams refused with 503 before the upgrade, by reason.",
            ),
            &["reason"],
        )?;
        let scheduling_lag = Gauge::new(
            "pulsara_scheduling_lag_seconds",
            "How late the runtime runs a timer that is due.",
        )?;
        let start_wait = Histogram::with_opts(histogram(
            "pulsara_stream_start_wait_seconds",
            "From a stream's upgrade to its start message.",
            &START_WAIT_BUCKETS_US,
        ))?;
        let added = HistogramVec::new(
            histogram(
                "pulsara_added_latency_seconds",
                "Time a frame spends inside the bridge.",
                &LATENCY_BUCKETS_US,
            ),
            &["dir"],
        )?;
        let tool_latency = Histogram::with_opts(histogram(
            "pulsara_tool_call_seconds",
            "Tool call latency.",
            &TOOL_BUCKETS_US,
        ))?;
        let errors = IntCounterVec::new(
            Opts::new("pulsara_errors_total", "Errors by kind."),
            &["kind"],
        )?;
        let agent_errors = IntCounterVec::new(
            Opts::new(
                "pulsara_agent_errors_total",
                "Conversations ElevenLabs refused or ended with an error, by error type (close_<code> when it sent none).",
            ),
            &["type"],
        )?;
        let ended = IntCounterVec::new(
            Opts::new("pulsara_calls_ended_total", "Finished calls by end reason."),
            &["reason"],
        )?;
        let caller_wait = HistogramVec::new(
            histogram(
                "pulsara_caller_wait_seconds",
                "What the caller waited for: first agent audio from the stream start (first_audio) or the voice webhook (first_audio_from_webhook), and the end of their speech to the response (turn).",
                &CALLER_WAIT_BUCKETS_US,
            ),
            &["restaurant", "wait"],
        )?;
        let bridge_share = HistogramVec::new(
            histogram(
                "pulsara_bridge_share_seconds",
                "The bridge's own part of a caller wait (first_audio, turn), and barge-in reaction (interruption read to clear written).",
                &LATENCY_BUCKETS_US,
            ),
            &["restaurant", "wait"],
        )?;

        let m = Metrics {
            frames_in_twilio: frames.with_label_values(&["in_twilio"]),
            frames_out_twilio: frames.with_label_values(&["out_twilio"]),
            frames_in_agent: frames.with_label_values(&["in_agent"]),
            frames_out_agent: frames.with_label_values(&["out_agent"]),
            dropped_frames,
            calls_started,
            calls_rejected,
            latency_to_agent: added.with_label_values(&["to_agent"]),
            latency_to_caller: added.with_label_values(&["to_caller"]),
            tool_latency,
            start_wait,
            streams_pending_start,
            scheduling_lag,
            streams_shed: crate::overload::Refusal::ALL
                .iter()
                .map(|r| shed.with_label_values(&[r.label()]))
                .collect(),
            live: LiveCalls { gauge: active, by_restaurant: Mutex::default(), total: AtomicUsize::new(0) },
            errors,
            ended,
            agent_errors,
            agent_error_types: BoundedLabels::new(MAX_AGENT_ERROR_TYPES),
            caller_wait,
            bridge_share,
            latency_restaurants: BoundedLabels::new(MAX_LATENCY_RESTAURANTS),
        };
        registry.register(Box::new(m.live.gauge.clone()))?;
        registry.register(Box::new(frames))?;
        registry.register(Box::new(m.dropped_frames.clone()))?;
        registry.register(Box::new(m.calls_started.clone()))?;
        registry.register(Box::new(m.calls_rejected.clone()))?;
        registry.register(Box::new(m.streams_pending_start.clone()))?;
        registry.register(Box::new(shed))?;
        registry.register(Box::new(m.scheduling_lag.clone()))?;
        registry.register(Box::new(m.start_wait.clone()))?;
        registry.register(Box::new(added))?;
        registry.register(Box::new(m.tool_latency.clone()))?;
        registry.register(Box::new(m.errors.clone()))?;
        registry.register(Box::new(m.agent_errors.clone()))?;
        registry.register(Box::new(m.ended.clone()))?;
        registry.register(Box::new(m.caller_wait.clone()))?;
        registry.register(Box::new(m.bridge_share.clone()))?;
        Ok(m)
    }

    /// One finished call's waits, under its restaurant (the first
    /// [`MAX_LATENCY_RESTAURANTS`] seen; `other` after them).
    pub fn call_latency(&self, restaurant: &str, l: &pulsara_core::call_record::CallLatency) {
        let label = self.latency_restaurants.label(restaurant);
        let ms = |v: u64| v as f64 / 1e3;
        let wait = |w: &str, v: f64| self.caller_wait.with_label_values(&[label, w]).observe(v);
        let share = |w: &str, us: u64| self.bridge_share.with_label_values(&[label, w]).observe(secs(us));
        if let Some(v) = l.first_audio_ms {
            wait("first_audio", ms(v));
        }
        if let Some(v) = l.first_audio_from_webhook_ms {
            wait("first_audio_from_webhook", ms(v));
        }
        for &v in &l.turn_ms {
            wait("turn", ms(v));
        }
        if let Some(us) = l.first_audio_bridge_us {
            share("first_audio", us);
        }
        for &us in &l.turn_bridge_us {
            share("turn", us);
        }
        for &us in &l.barge_in_us {
            share("barge_in", us);
        }
    }

    pub fn call_started(&self) {
        self.calls_started.inc();
    }

    pub fn call_ended(&self, reason: &'static str) {
        self.ended.with_label_values(&[reason]).inc();
    }

    /// Counts a stream refused before its upgrade.
    pub fn stream_shed(&self, why: crate::overload::Refusal) {
        if let Some(c) = self.shed_counter(why) {
            c.inc();
        }
    }

    /// Streams refused for `why` so far.
    pub fn streams_shed_of(&self, why: crate::overload::Refusal) -> u64 {
        self.shed_counter(why).map_or(0, IntCounter::get)
    }

    fn shed_counter(&self, why: crate::overload::Refusal) -> Option<&IntCounter> {
        let i = crate::overload::Refusal::ALL
            .iter()
            .position(|r| *r == why)?;
        self.streams_shed.get(i)
    }

    pub fn error(&self, kind: &'static str) {
        self.errors.with_label_values(&[kind]).inc();
    }

    /// Counts an ElevenLabs error by its type. Types come from the network: only short
    /// `[a-z0-9_]` names become labels, and only the first [`MAX_AGENT_ERROR_TYPES`] of them.
    pub fn agent_error(&self, kind: &str) {
        let clean = !kind.is_empty()
            && kind.len() <= 48
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        let label = if clean { self.agent_error_types.label(kind) } else { "other" };
        self.agent_errors.with_label_values(&[label]).inc();
    }

    /// How many ElevenLabs errors of `kind` were counted.
    pub fn agent_errors_of(&self, kind: &str) -> u64 {
        counted(&self.agent_errors, kind)
    }

    pub fn errors_of(&self, kind: &str) -> u64 {
        counted(&self.errors, kind)
    }

    /// Live calls over all restaurants.
    pub fn active_total(&self) -> usize {
        self.live.total()
    }
}

/// Live calls per restaurant and in total. Admission adds a call only within both caps
/// ([`LiveCalls::try_add`]); the call's end removes it. A restaurant keeps its series at zero, so
/// its gauge drops to 0 instead of vanishing (restaurants come from configuration, so they are few).
#[derive(Debug)]
pub struct LiveCalls {
    gauge: IntGaugeVec,
    by_restaurant: Mutex<BTreeMap<String, usize>>,
    total: AtomicUsize,
}

impl Default for LiveCalls {
    /// A tally with a gauge of its own, in no registry (tests).
    fn default() -> Self {
        let gauge = IntGaugeVec::new(Opts::new("pulsara_active_calls", "Live calls per restaurant."), &["restaurant"])
            .expect("a valid fixed family");
        LiveCalls { gauge, by_restaurant: Mutex::default(), total: AtomicUsize::new(0) }
    }
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
        self.gauge.with_label_values(&[restaurant]).set(i64::try_from(*n).unwrap_or(i64::MAX));
        true
    }

    /// Uncounts a call [`LiveCalls::try_add`] counted.
    pub fn remove(&self, restaurant: &str) {
        let mut by = self.by_restaurant.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = by.get_mut(restaurant).filter(|n| **n > 0) {
            *n -= 1;
            self.total.fetch_sub(1, SeqCst);
            self.gauge.with_label_values(&[restaurant]).set(i64::try_from(*n).unwrap_or(i64::MAX));
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

/// The count of a one-label counter family at `label`, without creating the series.
fn counted(family: &IntCounterVec, label: &str) -> u64 {
    family
        .collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .find(|m| m.get_label().first().is_some_and(|l| l.value() == label))
        .map_or(0, |m| m.get_counter().get_value() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_waits_by_restaurant_with_bounded_labels() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        let l = pulsara_core::call_record::CallLatency {
            first_audio_ms: Some(850),
            first_audio_from_webhook_ms: Some(1400),
            first_audio_bridge_us: Some(420),
            turn_ms: vec![600, 900],
            turn_bridge_us: vec![30, 45],
            barge_in_us: vec![70],
            ..Default::default()
        };
        for i in 0..MAX_LATENCY_RESTAURANTS + 5 {
            m.call_latency(&format!("r{i}"), &l);
        }
        let text = pulsara_net::metrics::render(&registry);
        assert!(text.contains("pulsara_caller_wait_seconds_bucket{restaurant=\"r0\",wait=\"first_audio\",le=\"1\"} 1"), "{text}");
        assert!(text.contains("pulsara_caller_wait_seconds_bucket{restaurant=\"r0\",wait=\"first_audio\",le=\"0.75\"} 0"));
        assert!(text.contains("pulsara_caller_wait_seconds_count{restaurant=\"r0\",wait=\"turn\"} 2"));
        assert!(text.contains("pulsara_caller_wait_seconds_count{restaurant=\"r0\",wait=\"first_audio_from_webhook\"} 1"));
        assert!(text.contains("pulsara_bridge_share_seconds_count{restaurant=\"r0\",wait=\"barge_in\"} 1"));
        assert!(text.contains("pulsara_bridge_share_seconds_bucket{restaurant=\"r0\",wait=\"first_audio\",le=\"0.0005\"} 1"));
        // Past the bound, restaurants share one label.
        assert!(text.contains("pulsara_caller_wait_seconds_count{restaurant=\"other\",wait=\"first_audio\"} 5"), "{text}");
        assert!(!text.contains(&format!("restaurant=\"r{}\"", MAX_LATENCY_RESTAURANTS)));
    }

    #[test]
    fn renders_counters_gauges_and_histograms() {
        let registry = Registry::new();
        let m = Metrics::new(&registry).unwrap();
        m.call_started();
        assert!(m.live.try_add("r\"1", 1, 10));
        m.latency_to_agent.observe(secs(120));
        m.latency_to_agent.observe(secs(3_000_000));
        m.error("handoff_rejected");
        let text = pulsara_net::metrics::render(&registry);
        assert!(
            text.contains("pulsara_active_calls{restaurant=\"r\\\"1\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pulsara_added_latency_seconds_bucket{dir=\"to_agent\",le=\"0.0002\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pulsara_added_latency_seconds_bucket{dir=\"to_agent\",le=\"+Inf\"} 2")
        );
        assert!(text.contains("pulsara_errors_total{kind=\"handoff_rejected\"} 1"));
        m.stream_shed(crate::overload::Refusal::StartBacklog);
        m.streams_pending_start.add(3);
        m.scheduling_lag.set(secs(1_500_000));
        m.start_wait.observe(secs(20_000));
        let text = pulsara_net::metrics::render(&registry);
        assert!(
            text.contains("pulsara_streams_shed_total{reason=\"start_backlog\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("pulsara_streams_shed_total{reason=\"scheduling_lag\"} 0"),
            "{text}"
        );
        assert!(text.contains("pulsara_streams_pending_start 3"), "{text}");
        assert!(
            text.contains("pulsara_scheduling_lag_seconds 1.5"),
            "{text}"
        );
        assert!(
            text.contains("pulsara_stream_start_wait_seconds_bucket{le=\"0.05\"} 1"),
            "{text}"
        );
        assert_eq!(m.errors_of("handoff_rejected"), 1);
        assert_eq!(m.errors_of("never_counted"), 0);
        assert!(!pulsara_net::metrics::render(&registry).contains("never_counted"));
        m.live.remove("r\"1");
        m.call_ended("caller_hung_up");
        assert_eq!(m.active_total(), 0);
        let text = pulsara_net::metrics::render(&registry);
        assert!(text.contains("pulsara_active_calls{restaurant=\"r\\\"1\"} 0"), "{text}");
    }

    #[test]
    fn live_calls_keep_both_caps() {
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

    #[test]
    fn agent_error_types_are_bounded_and_cleaned() {
        let m = Metrics::default();
        for i in 0..MAX_AGENT_ERROR_TYPES + 5 {
            m.agent_error(&format!("type_{i}"));
        }
        m.agent_error("Bad Type!");
        m.agent_error("type_0");
        assert_eq!(m.agent_errors_of("type_0"), 2);
        assert_eq!(m.agent_errors_of("other"), 6);
    }
}
