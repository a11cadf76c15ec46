//! `GET /v1/restaurants`: the id and version of every restaurant, in pages, for every reader
//! scope; bad page sizes are refused with a clear error.

mod common;

use common::*;
use pulsara_core::request_auth;
use pulsara_core::secret::Secret;
use pulsara_dashboard::client::{ClientError, RestaurantSummary};
use serde_json::Value;

#[tokio::test]
async fn lists_every_restaurant_with_its_version_across_pages() {
    let d = start_dashboard().await;
    let mut want: Vec<RestaurantSummary> = d
        .dash
        .store
        .restaurant_ids()
        .unwrap()
        .into_iter()
        .map(|id| {
            let version = d.dash.store.restaurant(&id).unwrap().unwrap().version;
            RestaurantSummary { id, version }
        })
        .collect();
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(want.len(), 3);

    for (kid, secret) in [("edge1", EDGE_SECRET), ("bridge1", BRIDGE_SECRET)] {
        let c = d.client(kid, secret);
        assert_eq!(c.restaurants(100).await.unwrap(), want, "{kid}");
    }
    let c = d.client("bridge1", BRIDGE_SECRET);
    // The bound is enforced, not ignored.
    assert!(matches!(
        c.restaurants(2).await,
        Err(ClientError::InvalidInput(_))
    ));

    // Paging by hand: two, then one, then the end.
    let http = reqwest::Client::new();
    let url = d.url();
    let nonce = std::sync::atomic::AtomicU64::new(0);
    let get = |q: String, signed: bool| {
        let path = format!("/v1/restaurants{q}");
        let n = nonce.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let headers = if signed {
            request_auth::sign(
                "bridge1",
                &Secret::new(BRIDGE_SECRET),
                "GET",
                &path,
                d.clock.now(),
                &format!("n-list-{n}"),
                b"",
            )
        } else {
            Vec::new()
        };
        let mut req = http.get(format!("{url}{path}"));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let signed = |q: String| get(q, true);
    assert_eq!(get("?limit=2".into(), false).await.0, 401);
    let (status, first) = signed("?limit=2".into()).await;
    assert_eq!(status, 200);
    assert_eq!(first["restaurants"].as_array().unwrap().len(), 2);
    assert_eq!(first["next_after"], want[1].id.as_str());
    let (_, second) = signed(format!("?limit=2&after={}", want[1].id)).await;
    assert_eq!(second["restaurants"][0]["id"], want[2].id.as_str());
    assert_eq!(second["restaurants"][0]["version"], want[2].version);
    assert!(second["next_after"].is_null());
    for bad in ["?limit=0", "?limit=501", "?limit=many"] {
        let (status, body) = signed(bad.into()).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
}
