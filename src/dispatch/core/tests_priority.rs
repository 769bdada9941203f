//! The core's priority rules under paused time: interactive lanes first, gates per kind and
//! class (parked bulk never blocks interactive items), and directory escalation into the
//! directory lane.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use tokio::time::{Duration, Instant};

use super::*;
use crate::cache_key::CacheKey;
use crate::coalesce::Origin;

const LINGER: Duration = Duration::from_millis(500);

fn settings(min_urls: Option<u64>) -> Settings {
    Settings {
        linger: LINGER,
        retry: RetryPolicy {
            backoff: crate::backoff::Backoff::new(
                Duration::from_millis(200),
                Duration::from_secs(30),
            )
            .expect("valid backoff"),
            max_attempts: 8,
        },
        max_in_flight: 4,
        per_call: [1000, 20, 20],
        url_flush: false,
        dir_flush: true,
        escalation_min_urls: min_urls,
    }
}

fn item(url: &str, d: u64, kind: Kind, priority: Priority, escalate: u32) -> Incoming {
    Incoming {
        delivery: d,
        kind,
        flush: FlushType::Flush,
        headers: None,
        key: CacheKey::from_normalized(url),
        received: Instant::now(),
        origin: Arc::new(Origin::default()),
        priority,
        escalate,
    }
}

#[tokio::test(start_paused = true)]
async fn parked_bulk_never_blocks_interactive_items_of_the_same_kind() {
    let mut core = Core::new(settings(None));
    core.add(
        (0..5)
            .map(|i| item(&format!("https://a/b/{i}"), i, Kind::Url, Priority::Bulk, 0))
            .collect(),
    );
    let now = Instant::now();
    assert!(core.park_class(Kind::Url, Priority::Bulk, 3600, now, 0));
    assert_eq!(
        core.parked_until_unix(Kind::Url),
        None,
        "interactive not parked"
    );
    let parkable = core.take_parkable();
    assert_eq!(parkable.len(), 1);
    assert_eq!(parkable[0].1, Priority::Bulk);
    assert_eq!(parkable[0].2.len(), 5);
    core.settled(parkable[0].0, 5, Some(Priority::Bulk), Vec::new(), now);
    core.add(vec![
        item("https://a/i", 9, Kind::Url, Priority::Interactive, 0),
        item("https://a/b/late", 10, Kind::Url, Priority::Bulk, 0),
    ]);
    tokio::time::advance(LINGER).await;
    let Next::Send { items, .. } = core.next(Instant::now()) else {
        panic!("the interactive item goes while bulk is parked")
    };
    assert_eq!(
        items.len(),
        1,
        "no bulk item rides along while bulk is parked"
    );
    assert_eq!(items[0].key.as_str(), "https://a/i");
    assert_eq!(
        core.take_parkable()[0].2.len(),
        1,
        "the late bulk item parks too"
    );
}

#[tokio::test(start_paused = true)]
async fn a_lane_with_interactive_items_gets_the_call_slot_first() {
    let mut core = Core::new(settings(None));
    core.add(vec![item("https://a/d/", 1, Kind::Dir, Priority::Bulk, 0)]);
    tokio::time::advance(Duration::from_millis(100)).await;
    core.add(vec![item(
        "https://a/x",
        2,
        Kind::Url,
        Priority::Interactive,
        0,
    )]);
    tokio::time::advance(LINGER).await;
    let Next::Send { items, .. } = core.next(Instant::now()) else {
        panic!("both are due")
    };
    assert_eq!(
        items[0].key.as_str(),
        "https://a/x",
        "interactive first, though younger"
    );
}

#[tokio::test(start_paused = true)]
async fn escalation_moves_the_urls_deliveries_onto_one_directory_item() {
    let mut core = Core::new(settings(Some(101)));
    let mut batch: Vec<Incoming> = (0..300)
        .map(|i| {
            item(
                &format!("https://h/c/{}/{i}", i % 2),
                i,
                Kind::Url,
                Priority::Bulk,
                100,
            )
        })
        .collect();
    // 60 under /c/2/: below the quota floor of 101.
    batch.extend((0..60).map(|i| {
        item(
            &format!("https://h/c/2/{i}"),
            1000 + i,
            Kind::Url,
            Priority::Bulk,
            100,
        )
    }));
    core.add(batch);
    // A full lane of escalable URLs waits for the linger (the burst is seen whole).
    assert!(matches!(core.next(Instant::now()), Next::Wait(Some(_))));
    tokio::time::advance(LINGER).await;
    let mut sent = Vec::new();
    while let Next::Send { lane, items } = core.next(Instant::now()) {
        sent.push((core.lanes[lane].key.kind, items));
    }
    assert_eq!(core.escalations, 2);
    let dirs: Vec<&str> = sent
        .iter()
        .filter(|(k, _)| *k == Kind::Dir)
        .flat_map(|(_, items)| items.iter().map(|i| i.key.as_str()))
        .collect();
    assert_eq!(dirs.len(), 2);
    assert!(dirs.contains(&"https://h/c/0/") && dirs.contains(&"https://h/c/1/"));
    let dir_waiters: usize = sent
        .iter()
        .filter(|(k, _)| *k == Kind::Dir)
        .flat_map(|(_, items)| items.iter().map(|i| i.waiters().count()))
        .sum();
    assert_eq!(dir_waiters, 300);
    let urls: usize = sent
        .iter()
        .filter(|(k, _)| *k == Kind::Url)
        .map(|(_, items)| items.len())
        .sum();
    assert_eq!(urls, 60, "/c/2/ is purged URL by URL");
}
