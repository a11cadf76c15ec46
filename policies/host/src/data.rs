//! Building a tool's input from the restaurant's configuration and knowledge base: only the
//! parts its grant names go in (capabilities, not ambient authority: an empty grant means an
//! empty [`GrantedData`]). Opening hours go in as the call's facts ([`crate::hours`]).

use pulsara_core::config::{
    BookingConfig, FaqDoc, Grants, KnowledgeBase, MenuItem, ModifierGroup, ModifierOption, OrderingConfig,
    RestaurantConfig,
};
use pulsara_policy_abi::{CallContext, GrantedData, HoursFacts, ABI_VERSION};
use serde::ser::SerializeMap;
use serde::Serialize;
use serde_json::Value;

/// [`GrantedData`] borrowed from the restaurant's configuration, serialised without copying the
/// menu and knowledge base for every tool call. The menu is written compactly (fields equal to
/// their defaults left out; the guest's decoder fills them back in): decoding JSON is most of a
/// policy's cost, about 45 fuel per byte.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct GrantedRef<'a> {
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "compact_menu")]
    pub menu: Option<&'a [MenuItem]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub faq: Option<&'a [FaqDoc]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub specials: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hours: Option<&'a HoursFacts>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub booking: Option<&'a BookingConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordering: Option<&'a OrderingConfig>,
}

fn compact_menu<S: serde::Serializer>(menu: &Option<&[MenuItem]>, s: S) -> Result<S::Ok, S::Error> {
    match menu {
        Some(items) => s.collect_seq(items.iter().map(CompactItem)),
        None => s.serialize_none(),
    }
}

/// A [`MenuItem`] without the fields that hold their serde defaults (`available: true`, empty
/// aliases, category, description and modifiers; see `pulsara_core::config`).
struct CompactItem<'a>(&'a MenuItem);

impl Serialize for CompactItem<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let i = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("id", &i.id)?;
        m.serialize_entry("name", &i.name)?;
        if !i.aliases.is_empty() {
            m.serialize_entry("aliases", &i.aliases)?;
        }
        if !i.category.is_empty() {
            m.serialize_entry("category", &i.category)?;
        }
        if !i.description.is_empty() {
            m.serialize_entry("description", &i.description)?;
        }
        m.serialize_entry("price_minor", &i.price_minor)?;
        if !i.available {
            m.serialize_entry("available", &false)?;
        }
        if !i.modifiers.is_empty() {
            m.serialize_entry("modifiers", &CompactGroups(&i.modifiers))?;
        }
        m.end()
    }
}

struct CompactGroups<'a>(&'a [ModifierGroup]);

impl Serialize for CompactGroups<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(CompactGroup))
    }
}

/// A [`ModifierGroup`] without defaults (`required: false`, `min: 0`, `max: 1`; options'
/// `price_minor: 0`, `available: true`).
struct CompactGroup<'a>(&'a ModifierGroup);

impl Serialize for CompactGroup<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let g = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &g.name)?;
        if g.required {
            m.serialize_entry("required", &true)?;
        }
        if g.min != 0 {
            m.serialize_entry("min", &g.min)?;
        }
        if g.max != 1 {
            m.serialize_entry("max", &g.max)?;
        }
        m.serialize_entry("options", &CompactOptions(&g.options))?;
        m.end()
    }
}

struct CompactOptions<'a>(&'a [ModifierOption]);

impl Serialize for CompactOptions<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(CompactOption))
    }
}

struct CompactOption<'a>(&'a ModifierOption);

impl Serialize for CompactOption<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let o = self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("name", &o.name)?;
        if o.price_minor != 0 {
            m.serialize_entry("price_minor", &o.price_minor)?;
        }
        if !o.available {
            m.serialize_entry("available", &false)?;
        }
        m.end()
    }
}

/// The restaurant data `grants` allows a policy to see, borrowed. `hours` are the call's facts
/// ([`crate::hours::granted`]); they go in only when the grant names `hours`.
pub fn granted_ref<'a>(
    grants: &Grants,
    config: &'a RestaurantConfig,
    kb: &'a KnowledgeBase,
    hours: Option<&'a HoursFacts>,
) -> GrantedRef<'a> {
    GrantedRef {
        menu: grants.menu.then_some(kb.menu.as_slice()),
        currency: grants.menu.then_some(kb.currency.as_str()),
        faq: grants.knowledge_base.then_some(kb.faq.as_slice()),
        specials: grants.knowledge_base.then_some(kb.specials.as_slice()),
        hours: hours.filter(|_| grants.hours),
        booking: if grants.booking { config.booking.as_ref() } else { None },
        ordering: if grants.ordering { config.ordering.as_ref() } else { None },
    }
}

/// The restaurant data `grants` allows a policy to see (`hours` as for [`granted_ref`]).
pub fn granted_data(grants: &Grants, config: &RestaurantConfig, kb: &KnowledgeBase, hours: Option<&HoursFacts>) -> GrantedData {
    let r = granted_ref(grants, config, kb, hours);
    GrantedData {
        menu: r.menu.map(<[_]>::to_vec),
        currency: r.currency.map(str::to_owned),
        faq: r.faq.map(<[_]>::to_vec),
        specials: r.specials.map(<[_]>::to_vec),
        hours: r.hours.cloned(),
        booking: r.booking.cloned(),
        ordering: r.ordering.cloned(),
    }
}

/// The [`pulsara_policy_abi::ToolInput`] document for one call, serialised straight from
/// borrowed parts (it decodes to exactly the owned `ToolInput`; the menu is written compactly).
///
/// # Errors
/// When a part cannot be serialised (not expected for these types).
pub fn input_json(tool: &str, params: &Value, context: &CallContext, data: GrantedRef<'_>) -> serde_json::Result<String> {
    #[derive(Serialize)]
    struct InputRef<'a> {
        abi_version: u32,
        tool: &'a str,
        params: &'a Value,
        context: &'a CallContext,
        data: GrantedRef<'a>,
    }
    serde_json::to_string(&InputRef { abi_version: ABI_VERSION, tool, params, context, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RestaurantConfig {
        serde_json::from_value(serde_json::json!({
            "id": "r", "version": 1, "name": "R", "phone_numbers": [], "time_zone": "UTC",
            "hours": {"weekly": []},
            "after_hours": {"mode": "message", "message": "closed"},
            "agent": {"elevenlabs_agent_id": "a", "prompt_template": "p", "first_message": "f"},
            "booking": {"slot_minutes": 30, "capacity_per_slot": 10, "max_party_size": 6},
            "ordering": {"tax_rate_bps": 100}
        }))
        .unwrap()
    }

    #[test]
    fn empty_grant_gives_nothing() {
        let kb = KnowledgeBase { restaurant_id: "r".into(), currency: "EUR".into(), ..Default::default() };
        let facts = crate::hours::facts_at(&config(), "2026-12-01T12:00:00Z", None).unwrap();
        let d = granted_data(&Grants::default(), &config(), &kb, Some(&facts));
        assert_eq!(d, GrantedData::default());
        assert_eq!(serde_json::to_string(&d).unwrap(), "{}");
    }

    #[test]
    fn each_grant_adds_its_part_only() {
        let kb = KnowledgeBase { restaurant_id: "r".into(), currency: "EUR".into(), ..Default::default() };
        let g = Grants { booking: true, ..Default::default() };
        let d = granted_data(&g, &config(), &kb, None);
        assert!(d.booking.is_some());
        assert!(d.ordering.is_none() && d.menu.is_none() && d.hours.is_none() && d.faq.is_none());
        let g = Grants { menu: true, ordering: true, ..Default::default() };
        let d = granted_data(&g, &config(), &kb, None);
        assert_eq!(d.currency.as_deref(), Some("EUR"));
        assert!(d.ordering.is_some() && d.booking.is_none());
    }

    #[test]
    fn borrowed_compact_input_decodes_to_the_owned_one() {
        let mut kb = KnowledgeBase { restaurant_id: "r".into(), currency: "EUR".into(), ..Default::default() };
        kb.menu = serde_json::from_value(serde_json::json!([
            {"id": "1", "name": "Pizza", "price_minor": 900, "aliases": ["pie"], "category": "pizza",
             "description": "tomato", "modifiers": [
                {"name": "Size", "required": true, "min": 1, "max": 1, "options": [
                    {"name": "Small"}, {"name": "Large", "price_minor": 300, "available": false}]},
                {"name": "Extras", "max": 3, "options": [{"name": "Basil", "price_minor": 50}]},
                {"name": "Cut", "min": 0, "options": []}]},
            {"id": "2", "name": "Tiramisu", "price_minor": 600, "available": false},
            {"id": "3", "name": "", "price_minor": 0}
        ]))
        .unwrap();
        kb.specials = vec!["Soup".into()];
        let config = config();
        let context = CallContext { restaurant_id: "r".into(), caller: "+15550100".into(), ..Default::default() };
        let params = serde_json::json!({"items": [{"name": "pizza"}]});
        let all = Grants { menu: true, knowledge_base: true, hours: true, booking: true, ordering: true, ..Default::default() };
        for grants in [Grants::default(), all, Grants { menu: true, ..Default::default() }] {
            let hours = crate::hours::granted(&grants, &config, "2026-12-01T12:00:00+00:00").unwrap();
            let owned = pulsara_policy_abi::ToolInput {
                abi_version: ABI_VERSION,
                tool: "take_order".into(),
                params: params.clone(),
                context: context.clone(),
                data: granted_data(&grants, &config, &kb, hours.as_ref()),
            };
            let borrowed = input_json("take_order", &params, &context, granted_ref(&grants, &config, &kb, hours.as_ref())).unwrap();
            let decoded: pulsara_policy_abi::ToolInput = serde_json::from_str(&borrowed).unwrap();
            assert_eq!(decoded, owned);
            let full = serde_json::to_string(&owned).unwrap();
            if grants.menu {
                assert!(borrowed.len() < full.len(), "the menu is written compactly");
                assert!(!borrowed.contains("\"available\":true") && !borrowed.contains("\"aliases\":[]"));
            } else {
                assert_eq!(borrowed, full);
            }
        }
    }
}
