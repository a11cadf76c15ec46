//! A slow disk must delay SQLite work, not the tokio workers that pump calls' audio. The slow
//! disk is another connection holding the database's write lock (`BEGIN IMMEDIATE`): every
//! write then waits in SQLite's busy handler (up to its 5 s timeout). Meanwhile a task ticks
//! every 20 ms like a media pump on a runtime with few workers; its ticks must stay on time,
//! and once the lock goes everything waiting completes with nothing lost.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pulsara_dashboard::notify::SendError;
use pulsara_dashboard::outbox::{
    self, Deliver, EntryKind, NewEntry, Outbox, OutboxEntry, RetryPolicy,
};
use rusqlite::Connection;
use tokio::sync::watch;

use common::{record, start_dashboard, BRIDGE_SECRET};

/// Ticks like a media pump sending a frame every 20 ms; counts ticks and keeps the worst lateness.
struct Pump {
    ticks: watch::Receiver<u64>,
    max_late_us: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Pump {
    fn start() -> Self {
        let (tx, ticks) = watch::channel(0u64);
        let max_late_us = Arc::new(AtomicU64::new(0));
        let worst = max_late_us.clone();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(20));
            loop {
                let due = every.tick().await;
                worst.fetch_max(due.elapsed().as_micros() as u64, Ordering::Relaxed);
                tx.send_modify(|n| *n += 1);
            }
        });
        Self {
            ticks,
            max_late_us,
            task,
        }
    }

    /// Waits until `n` more frames have been sent.
    async fn frames(&mut self, n: u64) {
        let from = *self.ticks.borrow();
        self.ticks.wait_for(|t| *t >= from + n).await.unwrap();
    }

    fn max_late(&self) -> Duration {
        Duration::from_micros(self.max_late_us.load(Ordering::Relaxed))
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Lateness a 20 ms media pump tolerates (a jitter buffer's worth).
const TOLERATED: Duration = Duration::from_millis(100);

/// Holds the write lock of the SQLite file at `path`, as a slow disk or another writer would.
fn lock_for_writes(path: &std::path::Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    c
}

/// Delivers everything once `gate` opens; keeps the keys it was given per lane, and counts them.
struct Recording {
    lanes: Mutex<BTreeMap<String, Vec<String>>>,
    count: watch::Sender<usize>,
    gate: watch::Receiver<bool>,
}

impl Deliver for Recording {
    async fn deliver(&self, entry: &OutboxEntry) -> Result<(), SendError> {
        self.lanes
            .lock()
            .unwrap()
            .entry(entry.lane.clone())
            .or_default()
            .push(entry.idempotency_key.clone());
        self.count.send_modify(|n| *n += 1);
        let _ = self.gate.clone().wait_for(|open| *open).await;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_locked_outbox_file_delays_deliveries_not_the_media_pump() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.db");
    let ob = Outbox::open(&path).unwrap();
    let mut want = BTreeMap::new();
    let mut entries = Vec::new();
    for lane in ["roma", "sakura", "taqueria"] {
        for i in 0..3 {
            let key = format!("CA-{lane}-{i}");
            want.entry(lane.to_owned())
                .or_insert_with(Vec::new)
                .push(key.clone());
            entries.push(NewEntry {
                kind: EntryKind::CallRecord,
                lane: lane.into(),
                idempotency_key: key,
                payload: "{}".into(),
            });
        }
    }
    ob.enqueue(&entries, outbox::now_ms()).unwrap();

    let mut pump = Pump::start();
    let (count, mut delivered) = watch::channel(0usize);
    let (open, gate) = watch::channel(false);
    let deliverer = Arc::new(Recording {
        lanes: Mutex::default(),
        count,
        gate,
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(outbox::run(
        ob.clone(),
        deliverer.clone(),
        RetryPolicy::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    // The lane heads are being delivered; the disk turns slow before their outcome is recorded
    // (a write, which now waits for the lock).
    delivered.wait_for(|n| *n >= 3).await.unwrap();
    let locker = lock_for_writes(&path);
    open.send(true).unwrap();
    pump.frames(25).await;
    let stuck = pump.max_late();
    assert!(
        stuck < TOLERATED,
        "media frames were {stuck:?} late while the outbox waited for its file"
    );
    assert_eq!(
        *delivered.borrow(),
        3,
        "the three lane heads, nothing after them"
    );
    let left: i64 = locker
        .query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 9, "no delivery recorded while the file is locked");

    locker.execute_batch("ROLLBACK").unwrap();
    delivered.wait_for(|n| *n >= 9).await.unwrap();
    stop.send(()).unwrap();
    run.await.unwrap();
    let st = ob.stats_async(outbox::now_ms()).await.unwrap();
    assert_eq!(
        (st.depth, st.parked, st.delivered_total),
        (0, 0, 9),
        "{st:?}"
    );
    assert_eq!(
        *deliverer.lanes.lock().unwrap(),
        want,
        "each once, in lane order"
    );
    let late = pump.max_late();
    assert!(late < TOLERATED, "media frames were {late:?} late");
    println!("outbox: media frames at most {stuck:?} late while locked, {late:?} overall");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_dashboard_database_delays_its_requests_not_the_media_pump() {
    let d = start_dashboard().await;
    let bridge = d.client("bridge1", BRIDGE_SECRET);
    let locker = lock_for_writes(&d.dir.path().join("dashboard.db"));
    let mut pump = Pump::start();

    // More concurrent writes than workers (each signed request also writes its nonce).
    let sids: Vec<String> = (0..4).map(|i| format!("CA-slow-{i}")).collect();
    let posts: Vec<_> = sids
        .iter()
        .map(|sid| {
            let (bridge, sid) = (bridge.clone(), sid.clone());
            let body =
                serde_json::to_vec(&record(&sid, "trattoria-roma", "A table for two.")).unwrap();
            tokio::spawn(async move { bridge.post_call_record(&body, &sid).await })
        })
        .collect();
    pump.frames(25).await;
    // A request that needs no storage is answered meanwhile.
    let health = reqwest::get(format!("{}/healthz", d.url())).await.unwrap();
    assert_eq!(health.text().await.unwrap(), "ok");
    let stuck = pump.max_late();
    assert!(
        stuck < TOLERATED,
        "media frames were {stuck:?} late while the dashboard waited for its database"
    );
    assert!(
        posts.iter().all(|p| !p.is_finished()),
        "the writes wait for the lock"
    );

    locker.execute_batch("ROLLBACK").unwrap();
    for p in posts {
        assert_eq!(
            p.await.unwrap().unwrap(),
            pulsara_dashboard::client::PostOutcome::Created
        );
    }
    for sid in &sids {
        assert!(d.dash.store.call(sid).unwrap().is_some(), "{sid} stored");
    }
    let late = pump.max_late();
    assert!(late < TOLERATED, "media frames were {late:?} late");
    println!("dashboard: media frames at most {stuck:?} late while locked, {late:?} overall");
}
