//! Families whose values are read when `/metrics` is scraped, for the process's one
//! [`prometheus::Registry`].
//!
//! Some numbers are not Prometheus handles: a listener's counters are atomics its accept loop
//! bumps, the outbox's depth is a count in SQLite. A [`ScrapeCollector`] takes one reading of
//! such a source per scrape and turns it into families with fixed names, help, types and
//! constant labels; it registers like any other collector.

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// The Prometheus type of a [`Family`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One family of a [`ScrapeCollector`]: its name, help, type and how to read its value from a
/// reading of type `T`.
pub struct Family<T> {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    pub value: fn(&T) -> f64,
}

impl<T> Family<T> {
    /// A counter family.
    pub const fn counter(name: &'static str, help: &'static str, value: fn(&T) -> f64) -> Self {
        Family {
            name,
            help,
            kind: Kind::Counter,
            value,
        }
    }

    /// A gauge family.
    pub const fn gauge(name: &'static str, help: &'static str, value: fn(&T) -> f64) -> Self {
        Family {
            name,
            help,
            kind: Kind::Gauge,
            value,
        }
    }
}

/// Reads a source once per scrape (`None`: nothing to report this time) and exposes one sample
/// per [`Family`], each with the same constant labels.
pub struct ScrapeCollector<T> {
    descs: Vec<Desc>,
    families: Vec<Family<T>>,
    labels: Vec<LabelPair>,
    read: Box<dyn Fn() -> Option<T> + Send + Sync>,
}

impl<T> ScrapeCollector<T> {
    /// # Errors
    /// A name or label that Prometheus does not accept, or two families of the same name.
    pub fn new(
        families: Vec<Family<T>>,
        const_labels: &[(&str, &str)],
        read: impl Fn() -> Option<T> + Send + Sync + 'static,
    ) -> prometheus::Result<Self> {
        let const_map: HashMap<String, String> = const_labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let descs = families
            .iter()
            .map(|f| {
                Desc::new(
                    f.name.to_owned(),
                    f.help.to_owned(),
                    Vec::new(),
                    const_map.clone(),
                )
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        let mut labels: Vec<LabelPair> = const_labels
            .iter()
            .map(|(k, v)| {
                let mut l = LabelPair::default();
                l.set_name((*k).to_owned());
                l.set_value((*v).to_owned());
                l
            })
            .collect();
        labels.sort_by(|a, b| a.name().cmp(b.name()));
        Ok(ScrapeCollector {
            descs,
            families,
            labels,
            read: Box::new(read),
        })
    }
}

impl<T> Collector for ScrapeCollector<T> {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(reading) = (self.read)() else {
            return Vec::new();
        };
        self.families
            .iter()
            .map(|f| {
                let v = (f.value)(&reading);
                let mut m = Metric::from_label(self.labels.clone());
                let mut mf = MetricFamily::default();
                mf.set_name(f.name.to_owned());
                mf.set_help(f.help.to_owned());
                match f.kind {
                    Kind::Counter => {
                        let mut c = Counter::default();
                        c.set_value(v);
                        m.set_counter(c);
                        mf.set_field_type(MetricType::COUNTER);
                    }
                    Kind::Gauge => {
                        let mut g = Gauge::default();
                        g.set_value(v);
                        m.set_gauge(g);
                        mf.set_field_type(MetricType::GAUGE);
                    }
                }
                mf.set_metric(vec![m]);
                mf
            })
            .collect()
    }
}

/// Renders a registry's families in the Prometheus text format (0.0.4).
pub fn render(registry: &prometheus::Registry) -> String {
    use prometheus::Encoder as _;
    let mut out = Vec::with_capacity(8192);
    if let Err(e) = prometheus::TextEncoder::new().encode(&registry.gather(), &mut out) {
        tracing::warn!(error = %e, "metrics could not be encoded");
    }
    String::from_utf8(out).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_carry_help_type_and_const_labels() {
        let c = ScrapeCollector::new(
            vec![
                Family::counter("x_total", "Things.", |v: &u64| *v as f64),
                Family::gauge("x_now", "Things now.", |v: &u64| (*v / 2) as f64),
            ],
            &[("listener", "bridge")],
            || Some(4u64),
        )
        .unwrap();
        let r = prometheus::Registry::new();
        r.register(Box::new(c)).unwrap();
        let text = render(&r);
        assert!(
            text.contains(
                "# HELP x_total Things.\n# TYPE x_total counter\nx_total{listener=\"bridge\"} 4\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("# TYPE x_now gauge\nx_now{listener=\"bridge\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn an_unreadable_source_reports_nothing() {
        let c = ScrapeCollector::new(
            vec![Family::gauge("y", "Y.", |v: &u64| *v as f64)],
            &[],
            || None,
        )
        .unwrap();
        assert!(c.collect().is_empty());
    }
}
