//! Building a tool's input from the restaurant's configuration and knowledge base: only the
//! parts its grant names go in (capabilities, not ambient authority: an empty grant means an
//! empty [`GrantedData`]).

use pulsara_core::config::{Grants, KnowledgeBase, RestaurantConfig};
use pulsara_policy_abi::GrantedData;

/// The restaurant data `grants` allows a policy to see.
pub fn granted_data(grants: &Grants, config: &RestaurantConfig, kb: &KnowledgeBase) -> GrantedData {
    GrantedData {
        menu: grants.menu.then(|| kb.menu.clone()),
        currency: grants.menu.then(|| kb.currency.clone()),
        faq: grants.knowledge_base.then(|| kb.faq.clone()),
        specials: grants.knowledge_base.then(|| kb.specials.clone()),
        hours: grants.hours.then(|| config.hours.clone()),
        staffed_hours: grants.hours.then(|| config.staffed_hours.clone()),
        booking: if grants.booking { config.booking.clone() } else { None },
        ordering: if grants.ordering { config.ordering.clone() } else { None },
    }
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
        let d = granted_data(&Grants::default(), &config(), &kb);
        assert_eq!(d, GrantedData::default());
        assert_eq!(serde_json::to_string(&d).unwrap(), "{}");
    }

    #[test]
    fn each_grant_adds_its_part_only() {
        let kb = KnowledgeBase { restaurant_id: "r".into(), currency: "EUR".into(), ..Default::default() };
        let g = Grants { booking: true, ..Default::default() };
        let d = granted_data(&g, &config(), &kb);
        assert!(d.booking.is_some());
        assert!(d.ordering.is_none() && d.menu.is_none() && d.hours.is_none() && d.faq.is_none());
        let g = Grants { menu: true, ordering: true, ..Default::default() };
        let d = granted_data(&g, &config(), &kb);
        assert_eq!(d.currency.as_deref(), Some("EUR"));
        assert!(d.ordering.is_some() && d.booking.is_none());
    }
}
