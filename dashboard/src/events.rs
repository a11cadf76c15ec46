//! The webhook events the dashboard sends to edges and bridges (Standard Webhooks body):
//! `{"type":"restaurant.updated"|"knowledge_base.updated"|"policy.updated","data":{"restaurant_id":"…","version":N}}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "restaurant.updated")]
    RestaurantUpdated,
    #[serde(rename = "knowledge_base.updated")]
    KnowledgeBaseUpdated,
    #[serde(rename = "policy.updated")]
    PolicyUpdated,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventData {
    pub restaurant_id: String,
    /// The new version of the restaurant configuration (restaurant/policy) or knowledge base.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub data: EventData,
}

impl DashboardEvent {
    pub fn new(kind: EventType, restaurant_id: &str, version: u64) -> Self {
        Self {
            kind,
            data: EventData {
                restaurant_id: restaurant_id.to_owned(),
                version,
            },
        }
    }
}
