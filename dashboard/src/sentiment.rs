//! Sentiment of what the caller said, per utterance and per call, with VADER (a lexicon and
//! rule-based model built for short conversational text: it handles negation, intensifiers
//! ("very", "extremely"), "but" shifts, capitals and punctuation emphasis). We use the
//! `vader_sentiment` port of the reference implementation and the reference thresholds:
//! compound ≥ 0.05 positive, ≤ −0.05 negative, otherwise neutral.
//!
//! Only caller lines are scored: the agent is always polite, so including it would hide an
//! unhappy caller. The call score is the mean of the caller's non-empty utterances, but a call
//! where any utterance is strongly negative (≤ −0.5) is labelled negative regardless, because
//! one clear complaint is what the restaurant needs to hear about.

use pulsara_core::call_record::{CallRecord, Role};
use serde::{Deserialize, Serialize};
use vader_sentiment::SentimentIntensityAnalyzer;

/// Reference VADER thresholds.
pub const POSITIVE_THRESHOLD: f64 = 0.05;
pub const NEGATIVE_THRESHOLD: f64 = -0.05;
/// One utterance at or below this makes the whole call negative.
pub const STRONGLY_NEGATIVE: f64 = -0.5;
/// Longest utterance scored, in bytes; the rest is ignored (bounds CPU per line).
pub const MAX_UTTERANCE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Positive,
    Neutral,
    Negative,
}

impl Label {
    pub fn from_score(compound: f64) -> Self {
        if compound >= POSITIVE_THRESHOLD {
            Label::Positive
        } else if compound <= NEGATIVE_THRESHOLD {
            Label::Negative
        } else {
            Label::Neutral
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Score {
    /// VADER compound score in [-1, 1].
    pub score: f64,
    pub label: Label,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UtteranceSentiment {
    pub at_ms: u64,
    pub text: String,
    pub score: f64,
    pub label: Label,
}

/// What ends up in `CallRecord.sentiment`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSentiment {
    pub model: String,
    pub score: f64,
    pub label: Label,
    /// Lowest utterance score (the worst moment of the call).
    pub min: f64,
    pub utterances: Vec<UtteranceSentiment>,
}

/// Scores one piece of text.
pub fn score_text(text: &str) -> Score {
    let mut end = text.len().min(MAX_UTTERANCE_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let analyzer = SentimentIntensityAnalyzer::new();
    let scores = analyzer.polarity_scores(&text[..end]);
    let compound = scores.get("compound").copied().unwrap_or(0.0);
    let compound = if compound.is_finite() {
        compound.clamp(-1.0, 1.0)
    } else {
        0.0
    };
    Score {
        score: compound,
        label: Label::from_score(compound),
    }
}

/// Scores every caller utterance of a record and the call as a whole. A call with no caller
/// speech is neutral with score 0.
pub fn analyze(record: &CallRecord) -> CallSentiment {
    let utterances: Vec<UtteranceSentiment> = record
        .transcript
        .iter()
        .filter(|l| l.role == Role::Caller && !l.text.trim().is_empty())
        .map(|l| {
            let s = score_text(&l.text);
            UtteranceSentiment {
                at_ms: l.at_ms,
                text: l.text.clone(),
                score: s.score,
                label: s.label,
            }
        })
        .collect();
    let (mean, min) = if utterances.is_empty() {
        (0.0, 0.0)
    } else {
        let sum: f64 = utterances.iter().map(|u| u.score).sum();
        let min = utterances
            .iter()
            .map(|u| u.score)
            .fold(f64::INFINITY, f64::min);
        (sum / utterances.len() as f64, min)
    };
    let label = if min <= STRONGLY_NEGATIVE {
        Label::Negative
    } else {
        Label::from_score(mean)
    };
    CallSentiment {
        model: "vader".into(),
        score: (mean * 1000.0).round() / 1000.0,
        label,
        min,
        utterances,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_core::call_record::TranscriptLine;

    fn line(role: Role, text: &str, at_ms: u64) -> TranscriptLine {
        TranscriptLine {
            role,
            text: text.into(),
            at_ms,
            heard: true,
            cut: false,
            full_text: None,
        }
    }

    /// Labelled examples (written for restaurant calls), including negation and intensifiers.
    #[test]
    fn labelled_examples() {
        let cases = [
            ("The food was great, thank you so much!", Label::Positive),
            ("Perfect, that sounds lovely.", Label::Positive),
            ("Two margherita pizzas for pickup at seven.", Label::Neutral),
            ("What time do you close on Sunday?", Label::Neutral),
            (
                "My order was cold and the driver was rude.",
                Label::Negative,
            ),
            ("This is terrible, I want a refund.", Label::Negative),
            ("The pasta was not good.", Label::Negative),
            ("The pasta was not bad at all.", Label::Positive),
            ("I am not happy with my delivery.", Label::Negative),
        ];
        let mut wrong = Vec::new();
        for (text, want) in cases {
            let got = score_text(text);
            if got.label != want {
                wrong.push(format!(
                    "{text:?}: want {want:?}, got {:?} ({})",
                    got.label, got.score
                ));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    fn negation_flips_and_intensifiers_strengthen() {
        let good = score_text("The service was good.").score;
        let not_good = score_text("The service was not good.").score;
        let very_good = score_text("The service was very good.").score;
        let extremely_good = score_text("The service was extremely good!!").score;
        assert!(
            good > 0.0 && not_good < 0.0,
            "good={good} not_good={not_good}"
        );
        assert!(very_good > good, "very_good={very_good} good={good}");
        assert!(
            extremely_good > very_good,
            "{extremely_good} vs {very_good}"
        );
        let bad = score_text("The wait was bad.").score;
        let not_bad = score_text("The wait was not bad.").score;
        assert!(bad < 0.0 && not_bad > bad, "bad={bad} not_bad={not_bad}");
        assert_eq!(score_text("The wait was very bad.").label, Label::Negative);
    }

    #[test]
    fn call_scores_only_the_caller_and_a_strong_complaint_dominates() {
        let mut rec = CallRecord::default();
        rec.transcript = vec![
            line(
                Role::Agent,
                "Thank you for calling, wonderful to hear from you!",
                0,
            ),
            line(Role::Caller, "Hi, I'd like to book a table.", 1000),
            line(Role::Caller, "Thanks, that's great.", 5000),
        ];
        let s = analyze(&rec);
        assert_eq!(s.utterances.len(), 2);
        assert_eq!(s.label, Label::Positive);

        rec.transcript.push(line(
            Role::Caller,
            "Actually my last order was awful and disgusting.",
            9000,
        ));
        let s = analyze(&rec);
        assert_eq!(s.label, Label::Negative, "{s:?}");
        assert!(s.min <= STRONGLY_NEGATIVE);
    }

    #[test]
    fn empty_and_huge_input_are_safe() {
        assert_eq!(analyze(&CallRecord::default()).label, Label::Neutral);
        let huge = "é".repeat(10_000);
        let s = score_text(&huge);
        assert!(s.score.is_finite());
    }
}
