//! A reader of the Prometheus text exposition format (0.0.4), for everything that scrapes a
//! bridge's `/metrics` from outside: the tests, the load harness and the demo. The bridge writes
//! the format with `prometheus`'s encoder; this is the one place that reads it back.
//!
//! ```
//! let text = "# HELP x_total Things.\n# TYPE x_total counter\nx_total{kind=\"a\"} 2\n";
//! let m = pulsara_emulators::exposition::parse(text).unwrap();
//! assert_eq!(m.value("x_total", &[("kind", "a")]), Some(2.0));
//! assert!(m.families_missing_help_or_type().is_empty());
//! ```

use std::collections::BTreeMap;

/// One sample line: a name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    /// The value of label `name`, if the sample has it.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }
}

/// A parsed exposition: the samples in order, and each family's HELP and TYPE.
#[derive(Debug, Clone, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    pub help: BTreeMap<String, String>,
    pub types: BTreeMap<String, String>,
}

/// A line that is not valid exposition text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}: {text}")]
pub struct ParseError {
    pub line: usize,
    pub why: &'static str,
    pub text: String,
}

/// Parses exposition text.
///
/// # Errors
/// The first line that is neither a comment, blank, nor a well-formed sample.
pub fn parse(text: &str) -> Result<Exposition, ParseError> {
    let mut out = Exposition::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let err = |why| ParseError {
            line: i + 1,
            why,
            text: raw.to_owned(),
        };
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            match (words.next(), words.next(), words.next()) {
                (Some("HELP"), Some(name), help) => {
                    out.help
                        .insert(name.to_owned(), help.unwrap_or("").to_owned());
                }
                (Some("TYPE"), Some(name), Some(kind)) => {
                    out.types.insert(name.to_owned(), kind.trim().to_owned());
                }
                (Some("TYPE"), ..) => return Err(err("TYPE without a type")),
                _ => {}
            }
            continue;
        }
        out.samples
            .push(sample(line).ok_or_else(|| err("malformed sample"))?);
    }
    Ok(out)
}

fn sample(line: &str) -> Option<Sample> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, mut rest) = line.split_at(name_end);
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    {
        return None;
    }
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let mut chars = after.strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.insert(key.trim().to_owned(), value);
            rest = &after[1 + end + 1..];
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

impl Exposition {
    /// Every sample named `name`.
    pub fn samples_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| s.name == name)
    }

    /// The value of the sample named `name` with exactly the labels `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples_of(name)
            .find(|s| {
                s.labels.len() == labels.len() && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// The sum over every sample named `name`, whatever its labels (0 when there is none).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples_of(name).map(|s| s.value).sum()
    }

    /// The family a sample belongs to: its name, less `_bucket`/`_sum`/`_count` when that names a
    /// histogram or summary.
    pub fn family_of<'a>(&self, sample: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample.strip_suffix(suffix) {
                if matches!(
                    self.types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                ) {
                    return base;
                }
            }
        }
        sample
    }

    /// The families some sample belongs to that have no `# HELP` or no `# TYPE` line.
    pub fn families_missing_help_or_type(&self) -> Vec<String> {
        let mut missing: Vec<String> = self
            .samples
            .iter()
            .map(|s| self.family_of(&s.name))
            .filter(|f| !self.help.contains_key(*f) || !self.types.contains_key(*f))
            .map(str::to_owned)
            .collect();
        missing.dedup();
        missing
    }

    /// A histogram's cumulative buckets `(le, count)` for the series with `labels` (besides
    /// `le`), in the order of the text.
    pub fn buckets(&self, family: &str, labels: &[(&str, &str)]) -> Vec<(f64, u64)> {
        let name = format!("{family}_bucket");
        self.samples_of(&name)
            .filter(|s| {
                s.labels.len() == labels.len() + 1
                    && labels.iter().all(|(k, v)| s.label(k) == Some(*v))
            })
            .filter_map(|s| {
                let le = match s.label("le")? {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().ok()?,
                };
                Some((le, s.value as u64))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP a_total A.\n# TYPE a_total counter\na_total{kind=\"x\\\"y\",z=\"1\"} 3\n\
        a_total{kind=\"b\"} 4\n# HELP h Latency.\n# TYPE h histogram\nh_bucket{dir=\"in\",le=\"0.5\"} 1\n\
        h_bucket{dir=\"in\",le=\"+Inf\"} 2\nh_sum{dir=\"in\"} 0.7\nh_count{dir=\"in\"} 2\nplain 1.5\n";

    #[test]
    fn samples_labels_and_families() {
        let m = parse(TEXT).unwrap();
        assert_eq!(
            m.value("a_total", &[("kind", "x\"y"), ("z", "1")]),
            Some(3.0)
        );
        assert_eq!(m.value("a_total", &[("kind", "b")]), Some(4.0));
        assert_eq!(m.value("a_total", &[]), None, "labels must match exactly");
        assert_eq!(m.sum("a_total"), 7.0);
        assert_eq!(m.value("plain", &[]), Some(1.5));
        assert_eq!(m.value("h_count", &[("dir", "in")]), Some(2.0));
        assert_eq!(
            m.buckets("h", &[("dir", "in")]),
            [(0.5, 1), (f64::INFINITY, 2)]
        );
        assert_eq!(m.family_of("h_bucket"), "h");
        assert_eq!(m.family_of("a_total"), "a_total");
        assert_eq!(m.families_missing_help_or_type(), ["plain"]);
    }

    #[test]
    fn a_prefix_of_a_name_is_another_name() {
        let m = parse("pulsara_active_calls 12\npulsara_active_calls_x 3\n").unwrap();
        assert_eq!(m.value("pulsara_active_calls", &[]), Some(12.0));
        assert_eq!(m.sum("pulsara_active_calls"), 12.0);
        assert_eq!(m.value("pulsara_missing", &[]), None);
    }

    #[test]
    fn malformed_lines_are_errors() {
        for bad in [
            "x{a=\"1\" 2",
            "x{a=1} 2",
            "x",
            "x{a=\"1\"} nope",
            "# TYPE x",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
