//! `answer_question`: finds the passages of the restaurant's knowledge base (FAQ documents,
//! specials, menu items, opening hours) most relevant to the caller's question, ranked with BM25,
//! for the agent to answer from. When nothing scores, it says so plainly so the agent does not
//! make something up.
//!
//! The hours passage says what the agent was told at the start of the call (its next opening)
//! and each day of the week ahead, from the host's hours facts.
//!
//! Grants: `knowledge_base` and/or `menu` and/or `hours` (whatever is granted is searched); no
//! actions.

use std::collections::HashMap;

use pulsara_policy_sdk::money::format_minor;
use pulsara_policy_sdk::text::tokens;
use pulsara_policy_sdk::time::{self, Hours};
use pulsara_policy_sdk::{json, params, Tool, ToolError, ToolInput, ToolOutput};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Params {
    question: String,
}

/// Passages returned at most.
const TOP: usize = 3;
/// Passage text is cut to this many characters in the result.
const MAX_PASSAGE: usize = 600;
/// BM25 parameters (the usual defaults).
const K1: f64 = 1.2;
const B: f64 = 0.75;
/// Words that carry no meaning for retrieval.
const STOP: &[&str] = &[
    "a", "an", "the", "is", "are", "do", "does", "you", "your", "i", "we", "me", "my", "can", "could", "of", "to",
    "in", "on", "for", "and", "or", "it", "what", "how", "have", "ha", "there", "any", "with", "at", "be", "this",
    "that", "would", "like", "please", "about", "tell", "will", "if", "from", "our", "us", "hi", "hello", "much",
];

struct Passage {
    title: String,
    text: String,
    tokens: Vec<String>,
}

pub struct AnswerQuestion;

impl Tool for AnswerQuestion {
    fn run(input: &ToolInput) -> Result<ToolOutput, ToolError> {
        let p: Params = params(input)?;
        let passages = corpus(input);
        if passages.is_empty() {
            return Err(ToolError::new("this tool has no knowledge base, menu or hours granted"));
        }
        let query: Vec<String> = tokens(&p.question).into_iter().filter(|t| !STOP.contains(&t.as_str())).collect();
        let ranked = bm25(&passages, &query);
        let hits: Vec<(f64, &Passage)> = ranked.into_iter().filter(|(s, _)| *s > 0.0).take(TOP).collect();
        if hits.is_empty() {
            return Ok(ToolOutput {
                result: "Nothing in the restaurant's information answers this. Say you don't know and offer to take a message or transfer to staff.".into(),
                data: Some(json!({"found": false, "passages": []})),
                actions: Vec::new(),
            });
        }
        let mut result = String::from("From the restaurant's information (best match first):");
        let mut out = Vec::new();
        for (score, passage) in &hits {
            let text: String = passage.text.chars().take(MAX_PASSAGE).collect();
            result.push_str(&format!("\n- {}: {}", passage.title, text));
            out.push(json!({"title": passage.title, "text": text, "score": (score * 1000.0).round() / 1000.0}));
        }
        Ok(ToolOutput { result, data: Some(json!({"found": true, "passages": out})), actions: Vec::new() })
    }
}

fn passage(title: String, text: String) -> Passage {
    let tokens = tokens(&format!("{title} {text}")).into_iter().filter(|t| !STOP.contains(&t.as_str())).collect();
    Passage { title, text, tokens }
}

fn corpus(input: &ToolInput) -> Vec<Passage> {
    let mut out = Vec::new();
    if let Some(faq) = &input.data.faq {
        for doc in faq {
            out.push(passage(doc.title.clone(), doc.body.clone()));
        }
    }
    if let Some(specials) = &input.data.specials {
        if !specials.is_empty() {
            out.push(passage("Today's specials".into(), specials.join("; ")));
        }
    }
    if let Some(menu) = &input.data.menu {
        let currency = input.data.currency.clone().unwrap_or_default();
        for item in menu {
            let mut text = format!("{} ({}), {}", item.name, item.category, format_minor(item.price_minor, &currency));
            if !item.description.is_empty() {
                text.push_str(". ");
                text.push_str(&item.description);
            }
            if !item.aliases.is_empty() {
                text.push_str(&format!(". Also called {}", item.aliases.join(", ")));
            }
            for g in &item.modifiers {
                let opts: Vec<String> = g
                    .options
                    .iter()
                    .map(|o| if o.price_minor > 0 { format!("{} (+{})", o.name, format_minor(o.price_minor, &currency)) } else { o.name.clone() })
                    .collect();
                text.push_str(&format!(". {}: {}", g.name, opts.join(", ")));
            }
            text.push_str(if item.available { ". Available today." } else { ". Sold out today (not available)." });
            out.push(passage(format!("Menu: {}", item.name), text));
        }
    }
    if let Some(facts) = &input.data.hours {
        if let Ok(now) = time::now(&input.context) {
            // The agent's own words for now (its `next_opening` variable), then the week.
            let hours = Hours::opening(facts);
            let now = now.to_utc();
            let today = hours.local(now).date_naive();
            let mut lines = vec![format!("Next opening: {}", hours.describe_next_open(now))];
            for d in 0..7 {
                let day = today + pulsara_policy_sdk::chrono::Duration::days(d);
                lines.push(format!("{}: {}", time::spoken_date(day), hours.describe_day(day)));
            }
            for c in facts.closures.iter().filter(|c| c.end >= today) {
                let part = if c.partial { " (part of each day)" } else { "" };
                let why = if c.reason.is_empty() { String::new() } else { format!(" ({})", c.reason) };
                lines.push(format!("Closed {} to {}{part}{why}", c.start, c.end));
            }
            out.push(passage("Opening hours (open, close, times, today, tomorrow, week)".into(), lines.join("; ")));
        }
    }
    out
}

/// BM25 scores of every passage for `query`, best first.
fn bm25<'a>(passages: &'a [Passage], query: &[String]) -> Vec<(f64, &'a Passage)> {
    let n = passages.len() as f64;
    let avg = passages.iter().map(|p| p.tokens.len()).sum::<usize>() as f64 / n.max(1.0);
    let mut df: HashMap<&str, usize> = HashMap::new();
    for p in passages {
        let mut seen: Vec<&str> = p.tokens.iter().map(String::as_str).collect();
        seen.sort_unstable();
        seen.dedup();
        for t in seen {
            *df.entry(t).or_default() += 1;
        }
    }
    let mut scored: Vec<(f64, &Passage)> = passages
        .iter()
        .map(|p| {
            let len = p.tokens.len() as f64;
            let score = query
                .iter()
                .map(|q| {
                    let f = p.tokens.iter().filter(|t| *t == q).count() as f64;
                    if f == 0.0 {
                        return 0.0;
                    }
                    let d = *df.get(q.as_str()).unwrap_or(&0) as f64;
                    let idf = ((n - d + 0.5) / (d + 0.5) + 1.0).ln();
                    idf * f * (K1 + 1.0) / (f + K1 * (1.0 - B + B * len / avg.max(1.0)))
                })
                .sum::<f64>();
            (score, p)
        })
        .collect();
    scored.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
    scored
}

pulsara_policy_sdk::export_tool!(AnswerQuestion);
