//! Scenario files: one TOML file per simulated call, read by the ElevenLabs emulator (the
//! `[agent]` part, written from the agent's side), by the Twilio caller simulator (the `[caller]`
//! part) and by the demo (`[call]` and `[expect]`).
//!
//! ```toml
//! name = "trattoria-order"                 # unique; used for output file names
//! description = "Takeaway order with a modifier and an 86'd item"
//! restaurant = "trattoria-roma"            # restaurants/<id>; the emulator plays this
//!                                          # script for the agent tagged `restaurant:<id>`
//!
//! [call]
//! from = "+393331110001"                   # caller number (E.164); it also selects this
//!                                          # script in the emulator via the `caller_number`
//!                                          # dynamic variable the bridge sends
//! to = "+390612345678"                     # the restaurant's number
//! at = "2026-12-04T18:30:00Z"              # when the call happens (RFC 3339; the demo's clock
//!                                          # jumps there; equal instants run concurrently)
//!
//! [agent]
//! ping_interval_ms = 2000                  # 0 = no pings
//! response_delay_ms = 0                    # "thinking" time before each reply (user-audio clock)
//!
//! [[agent.turns]]                          # consumed one per caller utterance, in order
//! user = "I'd like a large margherita."    # sent as user_transcript when the utterance ends
//! agent = "Sure. {result}"                 # reply; {result} = last tool result text,
//!                                          # {{name}} = dynamic variable from the bridge
//! [[agent.turns.tool_calls]]               # optional, sent before the reply, in order
//! tool = "take_order"
//! params = { items = [{ name = "Margherita", quantity = 1, modifiers = ["Large"] }], fulfillment = "pickup", pickup_time = "19:30", customer_name = "Marco" }
//! expect_result_contains = ["Margherita"]  # recorded as failures when missing
//! expect_error = false                     # optional: the expected is_error
//!
//! [agent.faults]
//! drop_after_turn = 2                      # drop the socket (no close frame) after turn 2's reply
//! drop_delay_ms = 300
//! refuse_signed_url = 1                    # refuse the first N signed-URL requests for the agent (503)
//! refuse_signed_url_after_drop = 3         # after the drop, refuse the next N (reconnects fail)
//! mute = false                             # replies as text only, no audio
//!
//! [caller]
//! max_duration_ms = 90000
//! [[caller.steps]]                         # run in order; exactly one trigger and one action
//! after_agent_ms = 400                     # trigger: the agent spoke since the previous step
//!                                          # and has been silent (playback empty) this long
//! say = "Hi, I'd like to order for pickup."
//! [[caller.steps]]
//! after_agent_starts_ms = 800              # trigger: agent audio has been playing this long (barge-in)
//! say = "Sorry, actually..."
//! [[caller.steps]]
//! at_ms = 12000                            # trigger: absolute time since the stream started
//! dtmf = "0"
//! [[caller.steps]]
//! after_ms = 500                           # trigger: time since the previous step finished
//! hangup = true
//!
//! [expect]                                 # for the demo's checks; all optional
//! tools = ["take_order"]                   # tool names called, in order
//! transcript_contains = ["Margherita"]
//! transferred = false
//! interrupted = false
//! fallback = false                         # the call ended in the restaurant's fallback
//! edge = "stream"                          # the edge's answer: stream | voicemail | dial | message
//! say_language = "it-IT"                   # every <Say> in the edge's TwiML has this language
//! say_voice = "Polly.Bianca"               # … and this voice (at least one <Say> must exist)
//! ```
//!
//! Everything else about the agent comes from the agent stored in the emulator's workspace (as
//! a sync creates it from the restaurant): its audio formats, first message, `client_events`,
//! override permissions, and the client tools it may call (a scripted call to a tool the agent
//! does not declare, or with arguments its schema refuses, is never made; the conversation
//! records it as a failure). A tool's wait for its result is its `response_timeout_secs`.
//!
//! Audio: caller utterances are synthesized ([`crate::synth`]) with the caller voice as μ-law
//! 8 kHz; agent replies with the agent voice in the agent's output format.
//!
//! Tool parameters follow the tool's schema: `parameters` in the policy's `tool.json`.
use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: String, message: String },
    #[error("scenario {name}: {message}")]
    Invalid { name: String, message: String },
}

/// One simulated call.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub restaurant: String,
    #[serde(default)]
    pub call: CallInfo,
    #[serde(default)]
    pub agent: AgentScript,
    #[serde(default)]
    pub caller: CallerScript,
    #[serde(default)]
    pub expect: Expect,
}

/// Numbers and time of the call.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallInfo {
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// The instant the call happens at (RFC 3339, e.g. `2026-12-04T18:30:00Z`): the demo sets
    /// its clock there, and runs scenarios sharing an instant at the same time.
    #[serde(default)]
    pub at: Option<String>,
}

fn default_ping() -> u64 {
    2000
}
fn default_drop_delay() -> u64 {
    300
}

/// The agent's side of a call, played by the ElevenLabs emulator for the restaurant's agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentScript {
    #[serde(default = "default_ping")]
    pub ping_interval_ms: u64,
    /// "Thinking" time before each reply (not the greeting), on the user-audio clock: the
    /// reply is released once this much more caller audio has arrived. 0 = immediate.
    #[serde(default)]
    pub response_delay_ms: u64,
    #[serde(default)]
    pub turns: Vec<Turn>,
    #[serde(default)]
    pub faults: Faults,
}

impl Default for AgentScript {
    fn default() -> Self {
        AgentScript {
            ping_interval_ms: default_ping(),
            response_delay_ms: 0,
            turns: Vec::new(),
            faults: Faults::default(),
        }
    }
}

/// One exchange: a caller utterance and the agent's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    pub user: String,
    #[serde(default)]
    pub tool_calls: Vec<ScriptedToolCall>,
    pub agent: String,
}

/// A client tool call the agent makes during a turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedToolCall {
    pub tool: String,
    #[serde(default = "empty_object")]
    pub params: serde_json::Value,
    #[serde(default)]
    pub expect_result_contains: Vec<String>,
    #[serde(default)]
    pub expect_error: Option<bool>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Fault injection.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Drop the WebSocket (no close frame) after this turn's reply (1-based).
    #[serde(default)]
    pub drop_after_turn: Option<usize>,
    #[serde(default = "default_drop_delay")]
    pub drop_delay_ms: u64,
    /// Refuse the first N signed-URL requests for this agent with 503.
    #[serde(default)]
    pub refuse_signed_url: u32,
    /// After a `drop_after_turn` drop, refuse the next N signed-URL requests for this agent
    /// (so a client's reconnect fails too and its fallback path runs).
    #[serde(default)]
    pub refuse_signed_url_after_drop: u32,
    /// Send replies as text only, with no audio (a silent agent).
    #[serde(default)]
    pub mute: bool,
}

/// The caller's side, played by the Twilio caller simulator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallerScript {
    #[serde(default = "default_max_duration")]
    pub max_duration_ms: u64,
    /// A step waiting for the agent gives up after this long and proceeds (noted in the result).
    #[serde(default = "default_step_timeout")]
    pub step_timeout_ms: u64,
    #[serde(default)]
    pub steps: Vec<Step>,
}

impl Default for CallerScript {
    fn default() -> Self {
        CallerScript {
            max_duration_ms: default_max_duration(),
            step_timeout_ms: default_step_timeout(),
            steps: Vec::new(),
        }
    }
}

fn default_max_duration() -> u64 {
    120_000
}
fn default_step_timeout() -> u64 {
    20_000
}

/// One caller action with its trigger.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    // Triggers (exactly one).
    #[serde(default)]
    pub at_ms: Option<u64>,
    #[serde(default)]
    pub after_ms: Option<u64>,
    #[serde(default)]
    pub after_agent_ms: Option<u64>,
    #[serde(default)]
    pub after_agent_starts_ms: Option<u64>,
    // Actions (exactly one).
    #[serde(default)]
    pub say: Option<String>,
    #[serde(default)]
    pub dtmf: Option<String>,
    #[serde(default)]
    pub hangup: bool,
}

/// The trigger of a step, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    At(u64),
    After(u64),
    AfterAgent(u64),
    AfterAgentStarts(u64),
}

/// The action of a step, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Say(String),
    Dtmf(String),
    Hangup,
}

impl Step {
    /// The step's trigger and action.
    ///
    /// # Errors
    /// A message when the step has not exactly one trigger and one action.
    pub fn parts(&self) -> Result<(Trigger, Action), String> {
        let triggers: Vec<Trigger> = [
            self.at_ms.map(Trigger::At),
            self.after_ms.map(Trigger::After),
            self.after_agent_ms.map(Trigger::AfterAgent),
            self.after_agent_starts_ms.map(Trigger::AfterAgentStarts),
        ]
        .into_iter()
        .flatten()
        .collect();
        let actions: Vec<Action> = [
            self.say.clone().map(Action::Say),
            self.dtmf.clone().map(Action::Dtmf),
            self.hangup.then_some(Action::Hangup),
        ]
        .into_iter()
        .flatten()
        .collect();
        match (triggers.as_slice(), actions.as_slice()) {
            ([t], [a]) => Ok((*t, a.clone())),
            _ => Err(format!(
                "a step needs exactly one trigger (at_ms, after_ms, after_agent_ms, after_agent_starts_ms) and one action (say, dtmf, hangup); got {} and {}",
                triggers.len(),
                actions.len()
            )),
        }
    }
}

/// What the demo checks after the call. Free-form extra keys are kept for other checkers.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Expect {
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub transcript_contains: Vec<String>,
    #[serde(default)]
    pub transferred: Option<bool>,
    #[serde(default)]
    pub interrupted: Option<bool>,
    #[serde(default)]
    pub fallback: Option<bool>,
    /// The Twilio locale every `<Say>` of the edge's TwiML must carry (`it-IT`, never the
    /// ElevenLabs code `it`).
    #[serde(default)]
    pub say_language: Option<String>,
    /// The voice every `<Say>` of the edge's TwiML must carry (`Polly.Bianca`).
    #[serde(default)]
    pub say_voice: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, toml::Value>,
}

impl Scenario {
    /// Parse and validate one scenario from TOML text.
    ///
    /// # Errors
    /// TOML errors with the location; invalid steps; a DTMF string with non-DTMF characters.
    pub fn from_toml(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: origin.to_owned(),
            message: e.to_string(),
        })?;
        s.validate()?;
        Ok(s)
    }

    /// Load one scenario file.
    ///
    /// # Errors
    /// As [`Scenario::from_toml`], plus I/O errors.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::from_toml(&text, &path.display().to_string())
    }

    /// Load every `*.toml` in a directory, sorted by file name.
    ///
    /// # Errors
    /// The first file that fails, or duplicate scenario names.
    pub fn load_dir(dir: &Path) -> Result<Vec<Scenario>, ScenarioError> {
        let rd = std::fs::read_dir(dir).map_err(|source| ScenarioError::Io {
            path: dir.display().to_string(),
            source,
        })?;
        let mut paths: Vec<_> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut out: Vec<Scenario> = Vec::new();
        for p in paths {
            let s = Scenario::load(&p)?;
            if out.iter().any(|o| o.name == s.name) {
                return Err(ScenarioError::Invalid {
                    name: s.name,
                    message: "duplicate scenario name".into(),
                });
            }
            out.push(s);
        }
        Ok(out)
    }

    /// The script of an agent no scenario covers: the greeting, then "could you say that
    /// again?" to every utterance.
    pub fn unscripted(agent_id: &str) -> Scenario {
        Scenario {
            name: format!("unscripted:{agent_id}"),
            description: String::new(),
            restaurant: String::new(),
            call: CallInfo::default(),
            agent: AgentScript::default(),
            caller: CallerScript::default(),
            expect: Expect::default(),
        }
    }

    fn validate(&self) -> Result<(), ScenarioError> {
        let bad = |message: String| ScenarioError::Invalid {
            name: self.name.clone(),
            message,
        };
        if self.name.is_empty() {
            return Err(bad("name is empty".into()));
        }
        if self.restaurant.is_empty() {
            return Err(bad(
                "restaurant is empty (the emulator plays a script for the agent of its restaurant)"
                    .into(),
            ));
        }
        if let Some(at) = &self.call.at {
            if !looks_like_rfc3339(at) {
                return Err(bad(format!(
                    "call.at `{at}` is not an RFC 3339 instant like 2026-12-04T18:30:00Z"
                )));
            }
        }
        for (i, step) in self.caller.steps.iter().enumerate() {
            let (_, action) = step
                .parts()
                .map_err(|m| bad(format!("caller.steps[{i}]: {m}")))?;
            if let Action::Dtmf(d) = action {
                if d.is_empty()
                    || !d
                        .chars()
                        .all(|c| c.is_ascii_digit() || matches!(c, '*' | '#' | 'A'..='D'))
                {
                    return Err(bad(format!(
                        "caller.steps[{i}]: `{d}` is not a DTMF digit string"
                    )));
                }
            }
        }
        for (i, t) in self.agent.turns.iter().enumerate() {
            for c in &t.tool_calls {
                if !c.params.is_object() {
                    return Err(bad(format!(
                        "agent.turns[{i}]: tool `{}` params must be a table",
                        c.tool
                    )));
                }
            }
        }
        Ok(())
    }
}

/// Shape check for `YYYY-MM-DDTHH:MM:SS` followed by `Z` or `±HH:MM` (the demo parses it fully).
fn looks_like_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let base = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && (b[10] == b'T' || b[10] == b't')
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !base {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return false;
        }
        rest = &frac[n..];
    }
    rest == "Z" || rest == "z" || {
        let r = rest.as_bytes();
        r.len() == 6
            && (r[0] == b'+' || r[0] == b'-')
            && r[3] == b':'
            && r[1..3].iter().chain(&r[4..6]).all(u8::is_ascii_digit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
name = "t"
restaurant = "r1"
[call]
from = "+15550001"
to = "+15550002"
[agent]
response_delay_ms = 20
[[agent.turns]]
user = "hi"
agent = "hello {result}"
[[agent.turns.tool_calls]]
tool = "book_table"
params = { date = "2026-12-05", time = "19:30", party_size = 4, name = "Kim" }
expect_result_contains = ["19:30"]
[caller]
[[caller.steps]]
after_agent_ms = 300
say = "hi"
[[caller.steps]]
after_ms = 100
dtmf = "0"
[expect]
tools = ["book_table"]
custom_check = 3
"#;

    #[test]
    fn parses_the_documented_shape() {
        let s = Scenario::from_toml(EXAMPLE, "inline").unwrap();
        assert_eq!(
            (s.restaurant.as_str(), s.agent.response_delay_ms),
            ("r1", 20)
        );
        assert_eq!(s.agent.ping_interval_ms, 2000);
        assert_eq!(s.agent.turns[0].tool_calls[0].params["party_size"], 4);
        assert_eq!(
            s.caller.steps[0].parts().unwrap(),
            (Trigger::AfterAgent(300), Action::Say("hi".into()))
        );
        assert_eq!(
            s.caller.steps[1].parts().unwrap(),
            (Trigger::After(100), Action::Dtmf("0".into()))
        );
        assert_eq!(s.expect.tools, vec!["book_table"]);
        assert_eq!(s.expect.extra["custom_check"].as_integer(), Some(3));
    }

    #[test]
    fn rejects_bad_files() {
        let two_actions = EXAMPLE.replace("dtmf = \"0\"", "dtmf = \"0\"\nsay = \"x\"");
        assert!(matches!(
            Scenario::from_toml(&two_actions, "x"),
            Err(ScenarioError::Invalid { .. })
        ));
        let bad_dtmf = EXAMPLE.replace("dtmf = \"0\"", "dtmf = \"0x\"");
        assert!(matches!(
            Scenario::from_toml(&bad_dtmf, "x"),
            Err(ScenarioError::Invalid { .. })
        ));
        // The agent's formats are the stored agent's, not the script's.
        let fmt = EXAMPLE.replace("response_delay_ms = 20", "output_format = \"pcm_16000\"");
        assert!(matches!(
            Scenario::from_toml(&fmt, "x"),
            Err(ScenarioError::Parse { .. })
        ));
        let no_restaurant = EXAMPLE.replace("restaurant = \"r1\"", "");
        assert!(matches!(
            Scenario::from_toml(&no_restaurant, "x"),
            Err(ScenarioError::Invalid { .. })
        ));
        let bad_at = EXAMPLE.replace(
            "to = \"+15550002\"",
            "to = \"+15550002\"\nat = \"tomorrow\"",
        );
        assert!(matches!(
            Scenario::from_toml(&bad_at, "x"),
            Err(ScenarioError::Invalid { .. })
        ));
        let good_at = EXAMPLE.replace(
            "to = \"+15550002\"",
            "to = \"+15550002\"\nat = \"2026-12-04T19:30:00+01:00\"",
        );
        assert_eq!(
            Scenario::from_toml(&good_at, "x")
                .unwrap()
                .call
                .at
                .as_deref(),
            Some("2026-12-04T19:30:00+01:00")
        );
        let typo = EXAMPLE.replace("after_agent_ms = 300", "after_agnt_ms = 300");
        assert!(matches!(
            Scenario::from_toml(&typo, "x"),
            Err(ScenarioError::Parse { .. })
        ));
    }

    #[test]
    fn shipped_scenarios_load() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
        let all = Scenario::load_dir(&dir).unwrap();
        assert!(all.len() >= 6, "{} scenarios", all.len());
        for s in &all {
            assert!(!s.caller.steps.is_empty(), "{}", s.name);
            assert!(!s.call.from.is_empty(), "{}", s.name);
            assert!(s.call.at.is_some(), "{} has no instant", s.name);
        }
        // Every caller number picks exactly one script per restaurant.
        let mut seen = std::collections::HashSet::new();
        for s in &all {
            assert!(
                seen.insert((s.restaurant.clone(), s.call.from.clone())),
                "{} reuses a caller number",
                s.name
            );
        }
    }
}
