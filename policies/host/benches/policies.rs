//! `cargo xtask bench policies`: per-call latency (fresh store + instance + run + output check)
//! and fuel for a trivial tool and for `take_order` against a 200-item menu, plus module load
//! times (cold compile vs. precompiled cache). Prints a Markdown table for BENCHMARKS.md.
//!
//! Needs the modules from `cargo xtask build-wasm` in `target/policies`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pulsara_core::config::{
    Grants, KnowledgeBase, MenuItem, ModifierGroup, ModifierOption, PolicyLimits, RestaurantConfig, ToolBinding,
};
use pulsara_policy_host::abi::CallContext;
use pulsara_policy_host::{HostConfig, Limits, MemorySource, PolicyHost};
use serde_json::json;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn module(name: &str) -> Vec<u8> {
    let path = root().join("target/policies").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask build-wasm` first", path.display()))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

struct Stats {
    p50: Duration,
    p99: Duration,
    max: Duration,
    /// The calling thread's CPU time per call (the run is synchronous on it).
    cpu_p50: Duration,
    cpu_p99: Duration,
    fuel: u64,
}

fn measure(n: usize, mut f: impl FnMut() -> u64) -> Stats {
    for _ in 0..n / 10 {
        f();
    }
    let mut times = Vec::with_capacity(n);
    let mut cpu = Vec::with_capacity(n);
    let mut fuel = 0;
    for _ in 0..n {
        let c = cpu_time::ThreadTime::now();
        let t = Instant::now();
        fuel = f();
        times.push(t.elapsed());
        cpu.push(c.elapsed());
    }
    times.sort();
    cpu.sort();
    Stats {
        p50: percentile(&times, 0.5),
        p99: percentile(&times, 0.99),
        max: *times.last().unwrap(),
        cpu_p50: percentile(&cpu, 0.5),
        cpu_p99: percentile(&cpu, 0.99),
        fuel,
    }
}

/// 200 distinct dishes (10 styles × 20 bases), every other one with a required size choice.
fn big_menu() -> Vec<MenuItem> {
    let styles = ["Smoked", "Grilled", "Roasted", "Fried", "Braised", "Steamed", "Spicy", "Garlic", "Lemon", "Honey"];
    let bases = [
        "Chicken", "Salmon", "Tofu", "Beef", "Pork", "Shrimp", "Duck", "Lamb", "Cod", "Mushrooms", "Aubergine",
        "Halloumi", "Squid", "Turkey", "Venison", "Tuna", "Cauliflower", "Chickpeas", "Octopus", "Quail",
    ];
    let mut menu = Vec::new();
    for (i, style) in styles.iter().enumerate() {
        for (j, base) in bases.iter().enumerate() {
            let n = i * bases.len() + j;
            menu.push(MenuItem {
                id: format!("item-{n}"),
                name: format!("{style} {base}"),
                aliases: vec![format!("{} {}", base.to_lowercase(), style.to_lowercase())],
                category: format!("Category {}", n % 8),
                description: format!("{style} {base} with seasonal vegetables"),
                price_minor: 800 + (n as i64 * 37) % 2000,
                available: n % 17 != 0,
                modifiers: if n % 2 == 0 {
                    vec![ModifierGroup {
                        name: "Size".into(),
                        required: true,
                        min: 1,
                        max: 1,
                        options: vec![
                            ModifierOption { name: "Regular".into(), price_minor: 0, available: true },
                            ModifierOption { name: "Large".into(), price_minor: 300, available: true },
                        ],
                    }]
                } else {
                    Vec::new()
                },
            });
        }
    }
    menu
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let source = Arc::new(MemorySource::new());
    let echo = source.insert(module("test_echo"));
    let take_order = source.insert(module("take_order"));
    let host = PolicyHost::new(HostConfig::default(), source.clone()).expect("host");

    // Trivial tool: instantiate + run + output check.
    let m = host.load(&echo).unwrap();
    let input = serde_json::to_string(&json!({
        "abi_version": pulsara_policy_host::abi::ABI_VERSION, "tool": "echo", "params": {"text": "hi"},
        "context": {"restaurant_id": "r", "local_time": "2026-12-01T12:00:00+00:00", "time_zone": "UTC"}
    }))
    .unwrap();
    let trivial = measure(20_000, || {
        let run = host.run_module(&m, "echo", &input, Limits::DEFAULT, &[]);
        assert!(run.result.is_ok(), "{:?}", run.result.as_ref().err());
        run.record.unwrap().fuel_used
    });

    // take_order on a 200-item menu, through the same path the bridge uses.
    let mut cfg: RestaurantConfig =
        serde_json::from_slice(&std::fs::read(root().join("restaurants/trattoria-roma/restaurant.json")).unwrap()).unwrap();
    cfg.tools = vec![ToolBinding {
        name: "take_order".into(),
        module_sha256: take_order.clone(),
        grants: Grants { menu: true, hours: true, ordering: true, actions: vec!["record_order".into()], ..Default::default() },
        // The defaults, as a restaurant that sets no limits gets them.
        limits: PolicyLimits::default(),
    }];
    let kb = KnowledgeBase { restaurant_id: cfg.id.clone(), version: 1, currency: "EUR".into(), menu: big_menu(), ..Default::default() };
    let set = host.tool_set(&cfg);
    let params = json!({"items": [
        {"name": "grilled chiken", "quantity": 2, "modifiers": ["large"]},
        {"name": "honey quial", "quantity": 1},
        {"name": "chickpeas lemon", "quantity": 3}
    ], "fulfillment": "pickup", "pickup_time": "20:00", "customer_name": "Ada"});
    let ctx = CallContext {
        restaurant_id: cfg.id.clone(),
        restaurant_name: cfg.name.clone(),
        call_sid: "CA1".into(),
        caller: "+390600000000".into(),
        local_time: "2026-12-01T19:10:00+01:00".into(),
        time_zone: cfg.time_zone.clone(),
        earlier_results: Vec::new(),
    };
    let mut input_bytes = 0;
    let order = measure(3_000, || {
        let run = host.call(&set, &cfg, &kb, "take_order", params.clone(), ctx.clone());
        let out = run.result.expect("order ok");
        assert_eq!(out.actions.len(), 1, "{}", out.result);
        let record = run.record.unwrap();
        input_bytes = record.input.get().len();
        record.fuel_used
    });

    // Module load: cold compile vs. a restart that deserialises the precompiled artefact.
    let cache = std::env::temp_dir().join(format!("pulsara-policy-bench-{}", std::process::id()));
    let cfg_cache = HostConfig { cache_dir: Some(cache.clone()), max_concurrent_calls: 16, ..HostConfig::default() };
    let t = Instant::now();
    let cold_host = PolicyHost::new(cfg_cache.clone(), source.clone()).unwrap();
    let _ = cold_host.load(&take_order).unwrap();
    let cold = t.elapsed();
    drop(cold_host);
    let mut warm = Vec::new();
    for _ in 0..20 {
        let h = PolicyHost::new(cfg_cache.clone(), source.clone()).unwrap();
        let t = Instant::now();
        let _ = h.load(&take_order).unwrap();
        warm.push(t.elapsed());
    }
    warm.sort();
    let _ = std::fs::remove_dir_all(&cache);

    println!("## Policies (measured {})", std::env::consts::ARCH);
    println!();
    println!("| case | p50 | p99 | max | CPU p50 | CPU p99 | fuel | target |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| trivial tool (echo), 20,000 calls | {} | {} | {} | {} | {} | {} | p99 < 100 µs |",
        us(trivial.p50), us(trivial.p99), us(trivial.max), us(trivial.cpu_p50), us(trivial.cpu_p99), trivial.fuel
    );
    println!(
        "| take_order, 200-item menu ({} B input), 3,000 calls | {} | {} | {} | {} | {} | {} | p99 < 1 ms |",
        input_bytes, us(order.p50), us(order.p99), us(order.max), us(order.cpu_p50), us(order.cpu_p99), order.fuel
    );
    println!();
    println!(
        "Module load (take_order, {} KB component): cold compile {:.1} ms; from the precompiled cache p50 {} (max {}).",
        module("take_order").len() / 1024,
        cold.as_secs_f64() * 1e3,
        us(percentile(&warm, 0.5)),
        us(*warm.last().unwrap())
    );
    println!("Fuel budget per call: {} (default).", Limits::DEFAULT.fuel);
}
