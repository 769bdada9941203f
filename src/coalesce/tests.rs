#![allow(clippy::unwrap_used)]
use super::*;
use crate::cache_key::CacheKey;
use crate::provider::{FlushType, Header, Kind};

fn key(s: &str) -> CacheKey {
    CacheKey::from_normalized(s)
}

fn url_lane(cap: usize) -> Lane {
    Lane::new(
        LaneKey {
            kind: Kind::Url,
            flush: FlushType::Flush,
            headers: None,
        },
        cap,
    )
}

fn waiters(items: &[PendingItem]) -> Vec<Vec<DeliveryId>> {
    items.iter().map(|i| i.waiters().collect()).collect()
}

#[tokio::test(start_paused = true)]
async fn dedupes_pending_keys_and_batches_by_cap_and_linger() {
    let linger = Duration::from_millis(500);
    let o = Arc::new(Origin::default());
    let mut lane = url_lane(3);
    let t0 = Instant::now();
    assert!(lane.add(key("https://a/1"), 1, &o, t0));
    assert!(
        !lane.add(key("https://a/1"), 2, &o, t0),
        "duplicate joins the pending item"
    );
    assert_eq!(lane.due_at(linger, false, ALL_CLASSES), Some(t0 + linger));
    assert_eq!(
        lane.due_at(linger, true, ALL_CLASSES),
        Some(t0),
        "draining skips the linger"
    );
    assert!(lane.add(key("https://a/2"), 3, &o, t0));
    assert!(lane.add(key("https://a/3"), 4, &o, t0));
    assert_eq!(
        lane.due_at(linger, false, ALL_CLASSES),
        Some(t0),
        "a full batch is due at once"
    );
    let b = lane.take(t0).unwrap();
    assert_eq!(b.len(), 3);
    assert_eq!(b[0].waiters().collect::<Vec<_>>(), vec![1, 2]);
    // After the batch left, the same key is pending again (purged again).
    assert!(lane.add(key("https://a/1"), 5, &o, t0));
    lane.retry(b, t0);
    // a/1 was requested again while in flight: the put-back copy merges into the new one.
    assert_eq!(lane.waiting(), 3);
    let first = lane.take(t0).unwrap();
    assert_eq!(waiters(&first), vec![vec![3], vec![4]], "retries go first");
    assert_eq!(waiters(&lane.take(t0).unwrap()), vec![vec![5, 1, 2]]);
    assert!(lane.take(t0).is_none());
}

#[tokio::test(start_paused = true)]
async fn a_key_waiting_for_its_retry_takes_new_requests_along() {
    let o = Arc::new(Origin::default());
    let mut lane = url_lane(10);
    let t0 = Instant::now();
    lane.add(key("https://a/1"), 1, &o, t0);
    let b = lane.take(t0).unwrap();
    let later = t0 + Duration::from_secs(5);
    lane.retry(b, later);
    assert!(
        !lane.add(key("https://a/1"), 2, &o, t0),
        "joins the item waiting for its retry"
    );
    assert_eq!(lane.due_at(Duration::ZERO, false, ALL_CLASSES), Some(later));
    assert!(lane.take(t0).is_none(), "not before its time");
    let b = lane.take(later).unwrap();
    assert_eq!(waiters(&b), vec![vec![1, 2]]);
    // Once sent again, a new request is a new purge (the stale rule).
    assert!(lane.add(key("https://a/1"), 3, &o, later));
}

#[tokio::test(start_paused = true)]
async fn a_failed_batch_goes_behind_other_retries_and_restore_goes_first() {
    let o = Arc::new(Origin::default());
    let mut lane = url_lane(1);
    let t0 = Instant::now();
    for i in 0..3 {
        lane.add(key(&format!("https://a/{i}")), i, &o, t0);
    }
    let a = lane.take(t0).unwrap();
    let b = lane.take(t0).unwrap();
    lane.retry(a, t0);
    lane.retry(b, t0);
    let again = lane.take(t0).unwrap();
    assert_eq!(again[0].first, 0);
    lane.retry(again, t0);
    assert_eq!(
        lane.take(t0).unwrap()[0].first,
        1,
        "the failed one went behind"
    );
    let c = lane.take(t0).unwrap();
    assert_eq!(c[0].first, 0);
    lane.restore(c, t0);
    assert_eq!(lane.take(t0).unwrap()[0].first, 0, "restored first in line");
}

#[tokio::test(start_paused = true)]
async fn a_batch_given_back_unsent_is_topped_up_but_a_failed_one_is_not() {
    let o = Arc::new(Origin::default());
    let mut lane = url_lane(4);
    let t0 = Instant::now();
    lane.add(key("https://a/1"), 1, &o, t0);
    let b = lane.take(t0).unwrap();
    lane.restore(b, t0);
    for i in 2..=6 {
        lane.add(key(&format!("https://a/{i}")), i, &o, t0);
    }
    let firsts: Vec<u64> = lane.take(t0).unwrap().iter().map(|i| i.first).collect();
    assert_eq!(
        firsts,
        vec![1, 2, 3, 4],
        "topped up to the cap from pending"
    );
    let failed = lane.take(t0).unwrap();
    assert_eq!(failed.len(), 2);
    lane.retry(failed, t0);
    lane.add(key("https://a/7"), 7, &o, t0);
    assert_eq!(
        lane.take(t0).unwrap().len(),
        2,
        "a failed batch keeps its split"
    );
}

#[tokio::test(start_paused = true)]
async fn dedupe_stays_exact_after_partial_takes() {
    let o = Arc::new(Origin::default());
    let mut lane = url_lane(2);
    let now = Instant::now();
    for i in 0..5u64 {
        assert!(lane.add(key(&format!("https://a/{i}")), i, &o, now));
    }
    assert_eq!(lane.take(now).unwrap().len(), 2); // 0 and 1 leave
    assert!(
        !lane.add(key("https://a/3"), 30, &o, now),
        "3 is still pending"
    );
    assert!(
        lane.add(key("https://a/0"), 40, &o, now),
        "0 was sent: pending again"
    );
    let order: Vec<Vec<u64>> = std::iter::from_fn(|| lane.take(now))
        .flatten()
        .map(|i| i.waiters().collect())
        .collect();
    assert_eq!(order, vec![vec![2], vec![3, 30], vec![4], vec![40]]);
    assert_eq!(lane.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn prune_drops_dead_waiters_and_items_nobody_waits_for() {
    let o = Arc::new(Origin::default());
    let mut lane = url_lane(10);
    let now = Instant::now();
    // Odd ids are "dead".
    lane.add(key("https://a/1"), 1, &o, now);
    lane.add(key("https://a/1"), 2, &o, now);
    lane.add(key("https://a/2"), 3, &o, now);
    lane.add(key("https://a/3"), 5, &o, now);
    let b = lane.take(now).unwrap();
    lane.retry(b, now);
    lane.add(key("https://a/4"), 7, &o, now);
    lane.add(key("https://a/5"), 8, &o, now);
    assert_eq!(lane.waiting(), 5);
    assert_eq!(lane.prune(|d| d % 2 == 0), 3);
    assert_eq!(lane.waiting(), 2);
    let all: Vec<Vec<u64>> = std::iter::from_fn(|| lane.take(now))
        .flatten()
        .map(|i| i.waiters().collect())
        .collect();
    assert_eq!(all, vec![vec![2], vec![8]]);
    // Dedupe still works on the rebuilt pending queue.
    assert!(lane.add(key("https://a/6"), 10, &o, now));
    assert!(!lane.add(key("https://a/6"), 12, &o, now));
}

#[tokio::test(start_paused = true)]
async fn a_lane_is_idle_only_when_it_holds_nothing() {
    let o = Arc::new(Origin::default());
    let headers: HeaderSet = Some(Arc::from(vec![Header {
        name: "x-device".into(),
        value: "mobile".into(),
    }]));
    let mut lane = Lane::new(
        LaneKey {
            kind: Kind::Url,
            flush: FlushType::Flush,
            headers,
        },
        10,
    );
    assert!(lane.is_idle());
    lane.add(key("https://a/1"), 1, &o, Instant::now());
    assert!(!lane.is_idle(), "waiting");
    let b = lane.take(Instant::now()).unwrap();
    lane.in_flight += b.len();
    assert!(!lane.is_idle(), "in flight");
    lane.in_flight -= b.len();
    assert!(lane.is_idle());
    lane.parking[1] = true;
    assert!(!lane.is_idle(), "being parked");
}

fn add_class(lane: &mut Lane, url: &str, d: DeliveryId, p: Priority, escalate: u32) -> bool {
    let o = Arc::new(Origin::default());
    lane.add_item(key(url), d, &o, Instant::now(), p, escalate)
}

#[tokio::test(start_paused = true)]
async fn interactive_items_go_first_and_bulk_fills_what_is_left() {
    let mut lane = url_lane(4);
    for i in 0..3 {
        add_class(&mut lane, &format!("https://a/b{i}"), i, Priority::Bulk, 0);
    }
    add_class(&mut lane, "https://a/i0", 10, Priority::Interactive, 0);
    add_class(&mut lane, "https://a/i1", 11, Priority::Interactive, 0);
    let b = lane.take(Instant::now()).unwrap();
    let firsts: Vec<u64> = b.iter().map(|i| i.first).collect();
    assert_eq!(
        firsts,
        vec![10, 11, 0, 1],
        "interactive first, then the oldest bulk"
    );
    assert_eq!(b[0].priority, Priority::Interactive);
    assert_eq!(b[3].priority, Priority::Bulk);
    // Only interactive when bulk is parked.
    add_class(&mut lane, "https://a/i2", 12, Priority::Interactive, 0);
    let only = lane.take_allowed(Instant::now(), [true, false]).unwrap();
    assert_eq!(waiters(&only), vec![vec![12]]);
    assert!(lane.take_allowed(Instant::now(), [true, false]).is_none());
    assert_eq!(lane.waiting_of(Priority::Bulk), 1);
}

#[tokio::test(start_paused = true)]
async fn a_bulk_key_asked_for_interactively_becomes_interactive() {
    let mut lane = url_lane(1);
    add_class(&mut lane, "https://a/x", 1, Priority::Bulk, 0);
    add_class(&mut lane, "https://a/y", 2, Priority::Bulk, 0);
    assert!(
        !add_class(&mut lane, "https://a/y", 3, Priority::Interactive, 0),
        "deduplicated"
    );
    let b = lane.take(Instant::now()).unwrap();
    assert_eq!(waiters(&b), vec![vec![2, 3]], "the upgraded key goes first");
    assert_eq!(b[0].priority, Priority::Interactive);
    // Restored unsent: first in line of its class again, still interactive.
    lane.restore(b, Instant::now());
    assert_eq!(lane.waiting_of(Priority::Interactive), 1);
    // A key waiting for a retry is upgraded too.
    let b = lane.take(Instant::now()).unwrap();
    lane.retry(b, Instant::now());
    let x = lane.take(Instant::now()).unwrap();
    assert_eq!(
        x[0].first, 2,
        "the interactive retry goes before the bulk item"
    );
    lane.retry(x, Instant::now());
    let bulk = lane.take_all_of(Priority::Bulk);
    assert_eq!(waiters(&bulk), vec![vec![1]]);
    assert_eq!(lane.waiting(), 1);
}

#[tokio::test(start_paused = true)]
async fn escalation_replaces_bulk_urls_of_the_deepest_directory_by_one_item() {
    let mut lane = url_lane(1000);
    for i in 0..120u64 {
        add_class(
            &mut lane,
            &format!("https://h/cat/a/{i}"),
            i,
            Priority::Bulk,
            100,
        );
    }
    for i in 0..30u64 {
        add_class(
            &mut lane,
            &format!("https://h/cat/b/{i}"),
            500 + i,
            Priority::Bulk,
            100,
        );
    }
    // Interactive URLs under the directory are never escalated.
    add_class(
        &mut lane,
        "https://h/cat/a/editor",
        900,
        Priority::Interactive,
        100,
    );
    let formed = lane.escalate(0);
    assert_eq!(
        formed.len(),
        1,
        "/cat/a/ (120) qualifies, /cat/b/ (30) does not"
    );
    let (dir, n) = &formed[0];
    assert_eq!(dir.key.as_str(), "https://h/cat/a/");
    assert_eq!(*n, 120);
    assert_eq!(
        dir.waiters().count(),
        120,
        "every delivery waits on the directory"
    );
    assert_eq!(dir.priority, Priority::Bulk);
    assert_eq!(lane.waiting(), 31);
    assert!(lane.escalate(0).is_empty(), "nothing new arrived");
    // A URL that arrives after the escalation is pending again (the stale rule).
    assert!(add_class(
        &mut lane,
        "https://h/cat/a/1",
        1000,
        Priority::Bulk,
        100
    ));
}
