//! The restaurant configuration and knowledge base, exactly as the dashboard API v1 serves them
//! (`api/openapi.yaml` is the contract). The edge, the bridge and the policies all read these types;
//! the embedded dashboard stores and serves them.
//!
//! Evolution rule: fields are only ever added, with `#[serde(default)]`, so an older reader accepts a
//! newer document.
//!
//! Deserialising checks shapes only; [`RestaurantConfig::validate`] checks the values two vendors
//! must understand (the ElevenLabs agent language and the Twilio `<Say>` locale and voice) and is
//! run wherever a configuration is loaded, so a bad one is refused with an error naming the field.

use std::collections::BTreeMap;

use chrono::{NaiveDate, NaiveTime, Weekday};
use serde::{Deserialize, Serialize};

use crate::twiml::{say_locale, SayError, SayVoice};

/// Everything the phone agent needs to know about one restaurant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestaurantConfig {
    /// Stable identifier (slug), e.g. `"trattoria-roma"`.
    pub id: String,
    /// Monotonic version; bumped by the dashboard on every change. Bound into handoff tokens so a
    /// call uses the configuration it was routed with.
    pub version: u64,
    pub name: String,
    #[serde(default)]
    pub address: String,
    /// The numbers callers dial, in E.164. A restaurant may own several.
    pub phone_numbers: Vec<String>,
    /// IANA time zone name, e.g. `"Europe/Rome"`.
    pub time_zone: String,
    pub hours: OpeningHours,
    /// Where the edge routes open-hours calls (a bridge region, e.g. `"eu-west"`).
    #[serde(default = "default_region")]
    pub region: String,
    pub after_hours: AfterHours,
    /// Staff line for transfers.
    #[serde(default)]
    pub staff_number: Option<String>,
    /// Where calls go when Pulsara itself fails; falls back to `staff_number`.
    #[serde(default)]
    pub fallback_number: Option<String>,
    /// When a human can take a transfer; empty means "whenever the restaurant is open".
    #[serde(default)]
    pub staffed_hours: Vec<WeeklySpan>,
    pub agent: AgentConfig,
    /// DTMF digit → action. Digits not in the map are passed to the agent as context.
    #[serde(default)]
    pub dtmf: BTreeMap<String, DtmfAction>,
    /// The agent's tools, each a policy module.
    #[serde(default)]
    pub tools: Vec<ToolBinding>,
    #[serde(default)]
    pub ordering: Option<OrderingConfig>,
    #[serde(default)]
    pub booking: Option<BookingConfig>,
    #[serde(default)]
    pub notifications: Notifications,
    /// Live calls allowed at once for this restaurant; beyond it callers get `busy`.
    #[serde(default = "default_max_calls")]
    pub max_concurrent_calls: u32,
}

fn default_region() -> String {
    "default".to_owned()
}

fn default_max_calls() -> u32 {
    20
}

impl RestaurantConfig {
    /// The number used when Pulsara cannot handle a call itself.
    pub fn fallback_target(&self) -> Option<&str> {
        self.fallback_number
            .as_deref()
            .or(self.staff_number.as_deref())
    }

    /// Checks the values vendors must understand: `agent.language` is an ElevenLabs agent
    /// language, and the Twilio `<Say>` locale and voice ([`AgentConfig::twilio_say`], or the
    /// defaults for the agent's language) are a known locale and a voice that speaks it.
    ///
    /// # Errors
    /// [`ConfigError`] naming the first offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(f) = &self.agent.audio_format {
            if !crate::agent::AUDIO_FORMATS.contains(&f.as_str()) {
                return Err(ConfigError {
                    field: "agent.audio_format",
                    reason: format!(
                        "{f:?} is not an ElevenLabs audio format ({})",
                        crate::agent::AUDIO_FORMATS.join(", ")
                    ),
                });
            }
        }
        self.agent.resolve_say_voice().map(|_| ())
    }

    /// The language and voice of every `<Say>` Pulsara emits for this restaurant (after hours,
    /// busy, fallbacks): never the ElevenLabs code. See [`AgentConfig::say_voice`].
    pub fn say_voice(&self) -> SayVoice {
        self.agent.say_voice()
    }
}

/// A configuration value that cannot work, naming the field (`agent.language`,
/// `agent.twilio_say.voice`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: &'static str,
    pub reason: String,
}

/// Weekly opening hours plus exceptions, in the restaurant's time zone.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OpeningHours {
    /// Regular weekly spans. A span whose `close` is not after `open` crosses midnight
    /// (e.g. Fri 18:00–02:00). Several spans per day are allowed.
    pub weekly: Vec<WeeklySpan>,
    /// Holidays and other exceptions.
    #[serde(default)]
    pub closures: Vec<Closure>,
    /// Calls stop being taken this many minutes before a span closes ("last call").
    #[serde(default)]
    pub last_call_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeeklySpan {
    /// `"mon"` … `"sun"`.
    #[serde(with = "weekday_serde")]
    pub day: Weekday,
    /// Local time, `"HH:MM"`.
    pub open: NaiveTime,
    /// Local time, `"HH:MM"`; not after `open` means the next day.
    pub close: NaiveTime,
}

/// Closed from `start` to `end` (inclusive dates). With `from`/`until` only that part of each
/// day is closed (e.g. closing early on Christmas Eve: `from = 15:00`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Closure {
    pub start: NaiveDate,
    pub end: NaiveDate,
    #[serde(default)]
    pub from: Option<NaiveTime>,
    #[serde(default)]
    pub until: Option<NaiveTime>,
    #[serde(default)]
    pub reason: String,
}

/// What a caller gets when the restaurant is closed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum AfterHours {
    /// Speak the message, then hang up.
    Message { message: String },
    /// Speak the message, then record a voicemail.
    Voicemail {
        message: String,
        #[serde(default = "default_voicemail_secs")]
        max_length_secs: u32,
    },
    /// Forward the call (e.g. to a sister restaurant or an answering service).
    Forward {
        #[serde(default)]
        message: Option<String>,
        number: String,
    },
}

fn default_voicemail_secs() -> u32 {
    120
}

/// The restaurant's ElevenLabs agent and how to configure it per call.
///
/// `pulsara agents sync` (or the dashboard's own sync job) provisions the agent from these
/// fields and the restaurant's tools ([`crate::agent`]), then writes `elevenlabs_agent_id` and
/// `synced` back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentConfig {
    /// The provisioned ElevenLabs agent; empty until the first sync creates it.
    #[serde(default)]
    pub elevenlabs_agent_id: String,
    #[serde(default)]
    pub voice_id: Option<String>,
    /// System prompt with `{{variable}}` placeholders filled from the call's dynamic variables.
    pub prompt_template: String,
    pub first_message: String,
    /// The ElevenLabs agent language (`en`, `it`, `ja`, `pt-br`; see [`ELEVENLABS_LANGUAGES`]),
    /// sent to ElevenLabs as the conversation's language. Twilio spells languages differently:
    /// what Twilio itself speaks uses [`AgentConfig::twilio_say`].
    #[serde(default = "default_language")]
    pub language: String,
    /// The Twilio `<Say>` locale and voice for what Twilio speaks for this restaurant
    /// (after-hours, busy and fallback messages). Unset (or a field of it unset): the defaults
    /// for `language`.
    #[serde(default)]
    pub twilio_say: Option<TwilioSay>,
    /// Spoken when the restaurant's concurrency cap is reached.
    #[serde(default)]
    pub busy_message: Option<String>,
    /// Spoken (before voicemail/transfer) when the agent cannot be reached.
    #[serde(default)]
    pub apology_message: Option<String>,
    /// The agent's audio format both ways (an ElevenLabs format, [`crate::agent::AUDIO_FORMATS`]);
    /// unset: `ulaw_8000`, Twilio's own, so audio passes through untouched.
    #[serde(default)]
    pub audio_format: Option<String>,
    /// The agent's LLM, where the restaurant chooses one; unset fields keep ElevenLabs' defaults.
    #[serde(default)]
    pub llm: Option<LlmSettings>,
    /// Turn-taking settings; unset fields keep ElevenLabs' defaults.
    #[serde(default)]
    pub turn: Option<TurnSettings>,
    /// What the last sync left on the agent; unset: never synced (the bridge then sends every
    /// override, and an agent made by hand that does not allow them refuses the call).
    #[serde(default)]
    pub synced: Option<AgentSynced>,
}

/// `conversation_config.agent.prompt` LLM settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LlmSettings {
    /// An ElevenLabs LLM name, e.g. `gemini-2.0-flash`.
    #[serde(default)]
    pub model: Option<String>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<i64>,
}

/// `conversation_config.turn` settings.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TurnSettings {
    /// Seconds of caller silence before the agent speaks again.
    #[serde(default)]
    pub turn_timeout_secs: Option<f64>,
    /// Seconds of silence after which the agent ends the call.
    #[serde(default)]
    pub silence_end_call_timeout_secs: Option<f64>,
}

/// The synced state of a restaurant's agent, written by the sync.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AgentSynced {
    /// The override fields the agent allows (`agent.first_message`, `agent.language`,
    /// `agent.prompt.prompt`, `tts.voice_id`): the bridge sends only these.
    #[serde(default)]
    pub overrides: Vec<String>,
    /// Tool name → ElevenLabs tool id of the client tools made for this restaurant.
    #[serde(default)]
    pub tool_ids: BTreeMap<String, String>,
    /// sha256 of the agent specification the agent was last brought to ([`crate::agent`]).
    #[serde(default)]
    pub spec_sha256: String,
}

fn default_language() -> String {
    "en".to_owned()
}

/// The Twilio `<Say>` language and voice a restaurant chooses instead of the defaults for its
/// agent language, e.g. `{"language": "it-IT", "voice": "Polly.Bianca"}`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct TwilioSay {
    /// A Twilio locale from [`crate::twiml::SAY_LOCALES`] (`it-IT`, `ja-JP`, `pt-BR`); unset: the
    /// default for the agent's language.
    #[serde(default)]
    pub language: Option<String>,
    /// `Polly.<Name>` or `Google.<locale>-<model>-<variant>`, a voice that speaks `language`;
    /// unset: the locale's default voice.
    #[serde(default)]
    pub voice: Option<String>,
}

/// The languages ElevenLabs agents speak (the codes of `conversation_config_override.agent
/// .language`: the Flash/Turbo v2.5 languages plus `pt-br`), each with the Twilio `<Say>` locale
/// used by default for what Twilio speaks. `None`: Twilio has no voice for it, so the restaurant
/// must name a locale in `agent.twilio_say.language`.
pub const ELEVENLABS_LANGUAGES: &[(&str, Option<&str>)] = &[
    ("en", Some("en-US")),
    ("ja", Some("ja-JP")),
    ("zh", Some("cmn-CN")),
    ("de", Some("de-DE")),
    ("hi", Some("hi-IN")),
    ("fr", Some("fr-FR")),
    ("ko", Some("ko-KR")),
    ("pt", Some("pt-PT")),
    ("pt-br", Some("pt-BR")),
    ("it", Some("it-IT")),
    ("es", Some("es-ES")),
    ("id", Some("id-ID")),
    ("nl", Some("nl-NL")),
    ("tr", Some("tr-TR")),
    ("fil", Some("fil-PH")),
    ("pl", Some("pl-PL")),
    ("sv", Some("sv-SE")),
    ("bg", Some("bg-BG")),
    ("ro", Some("ro-RO")),
    ("ar", Some("arb")),
    ("cs", Some("cs-CZ")),
    ("el", Some("el-GR")),
    ("fi", Some("fi-FI")),
    ("hr", None),
    ("ms", Some("ms-MY")),
    ("sk", Some("sk-SK")),
    ("da", Some("da-DK")),
    ("ta", Some("ta-IN")),
    ("uk", Some("uk-UA")),
    ("ru", Some("ru-RU")),
    ("hu", Some("hu-HU")),
    ("no", Some("nb-NO")),
    ("vi", Some("vi-VN")),
];

/// The default Twilio `<Say>` locale for an ElevenLabs agent language: `Err` when the code is
/// not an ElevenLabs agent language, `Ok(None)` when Twilio has no voice for it.
fn elevenlabs_default_locale(code: &str) -> Result<Option<&'static str>, ()> {
    ELEVENLABS_LANGUAGES
        .iter()
        .find(|(c, _)| *c == code)
        .map(|(_, locale)| *locale)
        .ok_or(())
}

impl AgentConfig {
    /// The `<Say>` language and voice for this agent: `twilio_say` where it is set, otherwise
    /// the default locale of `language` ([`ELEVENLABS_LANGUAGES`]) and that locale's default
    /// voice ([`crate::twiml::SayLocale::default_voice`]).
    ///
    /// # Errors
    /// [`ConfigError`] for `agent.language` when it is not an ElevenLabs agent language;
    /// `agent.twilio_say.language` for an unknown Twilio locale, or none given where the agent
    /// language has no default; `agent.twilio_say.voice` for a voice that does not speak the locale.
    pub fn resolve_say_voice(&self) -> Result<SayVoice, ConfigError> {
        let default_locale = elevenlabs_default_locale(&self.language).map_err(|()| {
            let mut reason = format!(
                "{:?} is not an ElevenLabs agent language; use one of {}",
                self.language,
                ELEVENLABS_LANGUAGES
                    .iter()
                    .map(|(c, _)| *c)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if say_locale(&self.language).is_some() {
                reason.push_str(&format!(
                    " ({:?} is a Twilio <Say> locale: it belongs in agent.twilio_say.language)",
                    self.language
                ));
            }
            ConfigError {
                field: "agent.language",
                reason,
            }
        })?;
        let chosen = self.twilio_say.clone().unwrap_or_default();
        let locale = match (chosen.language.as_deref(), default_locale) {
            (Some(l), _) => l,
            (None, Some(l)) => l,
            (None, None) => {
                return Err(ConfigError {
                    field: "agent.twilio_say.language",
                    reason: format!(
                        "Twilio <Say> has no voice for the ElevenLabs language {:?}; name the Twilio locale Twilio should speak for this restaurant (for example en-US)",
                        self.language
                    ),
                })
            }
        };
        SayVoice::new(locale, chosen.voice.as_deref()).map_err(|e| ConfigError {
            field: match e {
                SayError::UnknownLanguage(_) => "agent.twilio_say.language",
                SayError::VoiceMismatch { .. } => "agent.twilio_say.voice",
            },
            reason: e.to_string(),
        })
    }

    /// [`AgentConfig::resolve_say_voice`] for a configuration that was validated when it was
    /// loaded. For one that was not, it keeps what is usable (a known override locale, else the
    /// agent language's default locale, with that locale's default voice) and otherwise falls
    /// back to [`SayVoice::default`], so a document can always be spoken.
    pub fn say_voice(&self) -> SayVoice {
        self.resolve_say_voice().unwrap_or_else(|_| {
            let chosen = self
                .twilio_say
                .as_ref()
                .and_then(|t| t.language.as_deref())
                .filter(|l| say_locale(l).is_some());
            chosen
                .or_else(|| elevenlabs_default_locale(&self.language).ok().flatten())
                .and_then(|l| SayVoice::new(l, None).ok())
                .unwrap_or_default()
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum DtmfAction {
    TransferToStaff,
    /// Send this text to the agent as a contextual update.
    Say {
        text: String,
    },
    EndCall,
}

/// One tool the agent may call, implemented by a policy module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolBinding {
    /// The tool name the ElevenLabs agent uses in `client_tool_call`.
    pub name: String,
    /// Hex sha256 of the policy module (`GET /v1/policies/{sha256}`).
    pub module_sha256: String,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub limits: PolicyLimits,
}

/// What a policy may see and do. An empty grant means nothing.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Grants {
    #[serde(default)]
    pub menu: bool,
    #[serde(default)]
    pub knowledge_base: bool,
    #[serde(default)]
    pub hours: bool,
    #[serde(default)]
    pub booking: bool,
    #[serde(default)]
    pub ordering: bool,
    /// Action kinds the policy may return, e.g. `["record_order"]`.
    #[serde(default)]
    pub actions: Vec<String>,
}

/// Per-call sandbox limits; `None` means the host default. The host clamps them to its maxima.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct PolicyLimits {
    #[serde(default)]
    pub fuel: Option<u64>,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub memory_bytes: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderingConfig {
    #[serde(default = "yes")]
    pub pickup: bool,
    #[serde(default)]
    pub delivery: Option<DeliveryConfig>,
    /// Tax in basis points (e.g. 825 = 8.25 %).
    #[serde(default)]
    pub tax_rate_bps: u32,
    /// Most units of one item per order.
    #[serde(default = "default_max_qty")]
    pub max_quantity_per_item: u32,
    /// Minutes between order and earliest pickup.
    #[serde(default = "default_prep")]
    pub prep_minutes: u32,
}

fn yes() -> bool {
    true
}

fn default_max_qty() -> u32 {
    20
}

fn default_prep() -> u32 {
    20
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeliveryConfig {
    pub min_order_minor: i64,
    pub fee_minor: i64,
    pub postcodes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingConfig {
    pub slot_minutes: u32,
    /// Covers (seats) per slot.
    pub capacity_per_slot: u32,
    pub max_party_size: u32,
    /// Bookings must be made at least this long ahead.
    #[serde(default)]
    pub min_lead_minutes: u32,
    #[serde(default = "default_days_ahead")]
    pub max_days_ahead: u32,
    /// Covers already booked per slot start (`"YYYY-MM-DDTHH:MM"` local) — supplied by the dashboard.
    #[serde(default)]
    pub booked: BTreeMap<String, u32>,
}

fn default_days_ahead() -> u32 {
    60
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Notifications {
    /// Restaurant staff addresses for call emails.
    #[serde(default)]
    pub email: Vec<String>,
    /// Send the caller an SMS confirmation for orders and bookings.
    #[serde(default)]
    pub sms_confirmations: bool,
    /// The Twilio number (or messaging service) SMS are sent from.
    #[serde(default)]
    pub sms_from: Option<String>,
}

/// Menu and FAQ, versioned separately from the configuration because it changes more often.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct KnowledgeBase {
    pub restaurant_id: String,
    pub version: u64,
    #[serde(default)]
    pub currency: String,
    #[serde(default)]
    pub menu: Vec<MenuItem>,
    #[serde(default)]
    pub faq: Vec<FaqDoc>,
    /// Today's specials and other short notes for the agent's opening context.
    #[serde(default)]
    pub specials: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MenuItem {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub description: String,
    pub price_minor: i64,
    /// `false` = "86'd": not available today.
    #[serde(default = "yes")]
    pub available: bool,
    #[serde(default)]
    pub modifiers: Vec<ModifierGroup>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModifierGroup {
    pub name: String,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub min: u32,
    #[serde(default = "one")]
    pub max: u32,
    pub options: Vec<ModifierOption>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModifierOption {
    pub name: String,
    #[serde(default)]
    pub price_minor: i64,
    #[serde(default = "yes")]
    pub available: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaqDoc {
    pub id: String,
    pub title: String,
    pub body: String,
}

mod weekday_serde {
    use chrono::Weekday;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    const NAMES: [(&str, Weekday); 7] = [
        ("mon", Weekday::Mon),
        ("tue", Weekday::Tue),
        ("wed", Weekday::Wed),
        ("thu", Weekday::Thu),
        ("fri", Weekday::Fri),
        ("sat", Weekday::Sat),
        ("sun", Weekday::Sun),
    ];

    pub fn serialize<S: Serializer>(day: &Weekday, s: S) -> Result<S::Ok, S::Error> {
        let name = NAMES
            .iter()
            .find(|(_, d)| d == day)
            .map(|(n, _)| *n)
            .unwrap_or("mon");
        s.serialize_str(name)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Weekday, D::Error> {
        let raw = String::deserialize(d)?;
        let key = raw.to_ascii_lowercase();
        NAMES
            .iter()
            .find(|(n, _)| key.starts_with(n))
            .map(|(_, d)| *d)
            .ok_or_else(|| D::Error::custom(format!("unknown weekday {raw:?}; use mon..sun")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let json = r#"{
            "id": "r1", "version": 3, "name": "R1", "phone_numbers": ["+15550001111"],
            "time_zone": "America/New_York",
            "hours": {"weekly": [{"day": "fri", "open": "18:00:00", "close": "02:00:00"}]},
            "after_hours": {"mode": "voicemail", "message": "Closed"},
            "agent": {"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "hi"}
        }"#;
        let cfg: RestaurantConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.hours.weekly[0].day, Weekday::Fri);
        assert_eq!(cfg.max_concurrent_calls, 20);
        assert_eq!(cfg.region, "default");
        assert!(matches!(
            cfg.after_hours,
            AfterHours::Voicemail {
                max_length_secs: 120,
                ..
            }
        ));
        let back: RestaurantConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
    }

    fn agent(language: &str, twilio_say: Option<(Option<&str>, Option<&str>)>) -> AgentConfig {
        AgentConfig {
            elevenlabs_agent_id: "a".into(),
            voice_id: None,
            prompt_template: "p".into(),
            first_message: "hi".into(),
            language: language.into(),
            twilio_say: twilio_say.map(|(l, v)| TwilioSay {
                language: l.map(str::to_owned),
                voice: v.map(str::to_owned),
            }),
            busy_message: None,
            apology_message: None,
            audio_format: None,
            llm: None,
            turn: None,
            synced: None,
        }
    }

    fn said(a: &AgentConfig) -> (String, String) {
        let v = a.resolve_say_voice().unwrap_or_else(|e| panic!("{e}"));
        (v.language().to_owned(), v.voice().to_owned())
    }

    #[test]
    fn agent_languages_map_to_twilio_locales_with_a_voice() {
        let pair = |l: &str, v: &str| (l.to_owned(), v.to_owned());
        assert_eq!(said(&agent("en", None)), pair("en-US", "Polly.Joanna"));
        assert_eq!(said(&agent("it", None)), pair("it-IT", "Polly.Bianca"));
        assert_eq!(said(&agent("ja", None)), pair("ja-JP", "Polly.Mizuki"));
        assert_eq!(said(&agent("pt-br", None)), pair("pt-BR", "Polly.Camila"));
        assert_eq!(said(&agent("pt", None)), pair("pt-PT", "Polly.Ines"));
        assert_eq!(said(&agent("zh", None)), pair("cmn-CN", "Polly.Zhiyu"));
        assert_eq!(said(&agent("no", None)), pair("nb-NO", "Polly.Liv"));
        assert_eq!(
            said(&agent("vi", None)),
            pair("vi-VN", "Google.vi-VN-Standard-A")
        );
        // Every default locale is one the <Say> table knows, so each mapped language resolves.
        for (code, locale) in ELEVENLABS_LANGUAGES {
            match locale {
                Some(l) => assert_eq!(said(&agent(code, None)).0, *l, "{code}"),
                None => assert!(agent(code, None).resolve_say_voice().is_err(), "{code}"),
            }
        }
        // An override wins, field by field.
        assert_eq!(
            said(&agent("it", Some((None, Some("Polly.Giorgio"))))),
            pair("it-IT", "Polly.Giorgio")
        );
        assert_eq!(
            said(&agent("en", Some((Some("en-GB"), None)))),
            pair("en-GB", "Polly.Amy")
        );
        assert_eq!(
            said(&agent("hr", Some((Some("en-US"), Some("Polly.Matthew"))))),
            pair("en-US", "Polly.Matthew")
        );
    }

    #[test]
    fn validation_errors_name_the_field() {
        let field = |a: AgentConfig| a.resolve_say_voice().unwrap_err().field;
        assert_eq!(field(agent("xx", None)), "agent.language");
        assert_eq!(field(agent("IT", None)), "agent.language");
        let err = agent("it-IT", None).resolve_say_voice().unwrap_err();
        assert_eq!(err.field, "agent.language");
        assert!(
            err.to_string().contains("agent.twilio_say.language"),
            "{err}"
        );
        // The ElevenLabs code is not a Twilio locale.
        assert_eq!(
            field(agent("it", Some((Some("it"), None)))),
            "agent.twilio_say.language"
        );
        assert_eq!(field(agent("hr", None)), "agent.twilio_say.language");
        let err = agent("it", Some((Some("it-IT"), Some("Polly.Mizuki"))))
            .resolve_say_voice()
            .unwrap_err();
        assert_eq!(err.field, "agent.twilio_say.voice");
        let text = err.to_string();
        assert!(
            text.starts_with("agent.twilio_say.voice: ") && text.contains("Polly.Bianca"),
            "{text}"
        );
        // A voice of another locale than the default one is refused too.
        assert_eq!(
            field(agent("ja", Some((None, Some("Polly.Bianca"))))),
            "agent.twilio_say.voice"
        );
    }

    #[test]
    fn a_loaded_config_is_validated_and_speaks_its_twilio_locale() {
        let json = |agent: &str| {
            format!(
                r#"{{"id": "r1", "version": 1, "name": "R1", "phone_numbers": ["+390600000001"],
                    "time_zone": "Europe/Rome", "hours": {{"weekly": []}},
                    "after_hours": {{"mode": "message", "message": "Siamo chiusi"}},
                    "agent": {{"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "Ciao", {agent}}}}}"#
            )
        };
        let cfg: RestaurantConfig = serde_json::from_str(&json(r#""language": "it""#)).unwrap();
        cfg.validate().unwrap();
        let doc = cfg.say_voice().after_hours(&cfg.after_hours, "");
        assert!(
            doc.contains(r#"<Say language="it-IT" voice="Polly.Bianca">Siamo chiusi</Say>"#),
            "{doc}"
        );
        let cfg: RestaurantConfig = serde_json::from_str(&json(
            r#""language": "it", "twilio_say": {"language": "it-IT", "voice": "Polly.Carla"}"#,
        ))
        .unwrap();
        assert_eq!(cfg.say_voice().voice(), "Polly.Carla");
        let back: RestaurantConfig =
            serde_json::from_str(&serde_json::to_string(&cfg).unwrap()).unwrap();
        assert_eq!(back, cfg);
        // Invalid documents still parse (older readers, newer writers) but do not validate, and
        // what Twilio speaks stays a real locale with a voice.
        let cfg: RestaurantConfig = serde_json::from_str(&json(
            r#""language": "it", "twilio_say": {"voice": "Polly.Joanna"}"#,
        ))
        .unwrap();
        assert_eq!(cfg.validate().unwrap_err().field, "agent.twilio_say.voice");
        assert_eq!(
            (cfg.say_voice().language(), cfg.say_voice().voice()),
            ("it-IT", "Polly.Bianca")
        );
        let cfg: RestaurantConfig =
            serde_json::from_str(&json(r#""language": "klingon""#)).unwrap();
        assert_eq!(cfg.validate().unwrap_err().field, "agent.language");
        assert_eq!(cfg.say_voice(), SayVoice::default());
    }

    #[test]
    fn unknown_weekday_is_a_clear_error() {
        let err = serde_json::from_str::<WeeklySpan>(
            r#"{"day":"funday","open":"10:00:00","close":"11:00:00"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown weekday"), "{err}");
    }
}
