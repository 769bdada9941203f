//! The dispatcher core under paused tokio time: every error class, linger against a full batch,
//! isolation of bad items by bisection, one auth probe at a time, bounded waits, per-kind parking
//! and retry-aware dedupe. A fake "provider" here is just a function from a batch to an answer.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use tokio::time::{Duration, Instant};

use super::*;
use crate::cache_key::CacheKey;
use crate::coalesce::Origin;

const LINGER: Duration = Duration::from_millis(500);

fn settings(per_call: usize) -> Settings {
    Settings {
        linger: LINGER,
        retry: RetryPolicy {
            backoff: crate::backoff::Backoff::new(
                Duration::from_millis(200),
                Duration::from_secs(30),
            )
            .expect("a valid backoff"),
            max_attempts: 8,
        },
        max_in_flight: 1,
        per_call: [per_call, 20, 20],
        url_flush: false,
        dir_flush: true,
        escalation_min_urls: None,
    }
}

fn item(url: &str, delivery: DeliveryId, kind: Kind) -> Incoming {
    Incoming {
        delivery,
        kind,
        flush: FlushType::Flush,
        headers: None,
        key: CacheKey::from_normalized(url),
        received: Instant::now(),
        origin: Arc::new(Origin::default()),
        priority: Priority::Interactive,
        escalate: 0,
    }
}

fn urls(n: usize) -> Vec<Incoming> {
    (0..n)
        .map(|i| item(&format!("https://a.example/{i}"), i as u64, Kind::Url))
        .collect()
}

fn transient() -> ProviderError {
    ProviderError::Transient {
        code: "InternalError.CdnSystemError".into(),
        message: "boom".into(),
        maybe_applied: false,
    }
}

/// What a simulated run did.
#[derive(Debug, Default)]
struct Run {
    calls: usize,
    accepted: usize,
    /// Keys purged, in order.
    purged: Vec<String>,
    /// (error code, key) of dead letters.
    dead: Vec<(&'static str, String)>,
    /// Virtual time when the last good key was purged and when the last dead letter went.
    good_done: Duration,
    dead_done: Duration,
}

/// Drives the core like the shell does (one call at a time, answers at once, time jumps to the
/// next wake-up) until nothing is left or `limit` of virtual time passed.
async fn drive(
    core: &mut Core,
    limit: Duration,
    mut answer: impl FnMut(&[PendingItem]) -> Result<(), ProviderError>,
) -> Run {
    let start = Instant::now();
    let mut run = Run::default();
    while start.elapsed() < limit {
        let now = Instant::now();
        match core.next(now) {
            Next::Send { lane, items } => {
                run.calls += 1;
                let result = answer(&items);
                if result.is_ok() {
                    run.accepted += 1;
                    run.purged.extend(items.iter().map(|i| i.key.to_string()));
                    run.good_done = start.elapsed();
                }
                for e in core.finish(lane, items, result.as_ref().map(|_| ()), now) {
                    if let Effect::DeadLetter {
                        lane, items, error, ..
                    } = e
                    {
                        run.dead
                            .extend(items.iter().map(|i| (error, i.key.to_string())));
                        run.dead_done = start.elapsed();
                        core.settled(lane, items.len(), None, Vec::new(), now);
                    }
                }
            }
            Next::Wait(Some(at)) => tokio::time::advance(at - now).await,
            Next::Wait(None) => break,
        }
    }
    run
}

#[tokio::test(start_paused = true)]
async fn a_batch_leaves_when_full_or_after_the_linger() {
    let mut core = Core::new(settings(3));
    core.add(urls(2));
    let t0 = Instant::now();
    match core.next(t0) {
        Next::Wait(Some(at)) => assert_eq!(at, t0 + LINGER),
        other => panic!("{other:?}"),
    }
    core.add(vec![item("https://a.example/9", 9, Kind::Url)]);
    let Next::Send { items, .. } = core.next(t0) else {
        panic!("a full batch leaves at once")
    };
    assert_eq!(items.len(), 3);
}

#[tokio::test(start_paused = true)]
async fn two_poisoned_urls_are_dead_lettered_and_the_rest_is_purged_in_few_calls() {
    let mut core = Core::new(settings(1000));
    core.add(urls(1000));
    let poison: HashSet<String> = ["https://a.example/17", "https://a.example/640"]
        .map(String::from)
        .into();
    let run = drive(&mut core, Duration::from_secs(3600), |items| {
        if items.iter().any(|i| poison.contains(i.key.as_str())) {
            Err(transient())
        } else {
            Ok(())
        }
    })
    .await;
    eprintln!(
        "1000 urls, 2 poisoned: {} calls ({} accepted, minimum 1), good ones purged after {:?}, both poisoned dead-lettered after {:?}",
        run.calls, run.accepted, run.good_done, run.dead_done
    );
    assert_eq!(run.purged.len(), 998);
    let dead: HashSet<String> = run.dead.iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(dead, poison);
    assert!(run.dead.iter().all(|(e, _)| *e == "provider_failed"));
    // Bisection: about 2 × log2(1000) calls per poisoned item, plus 8 alone each.
    assert!(run.calls <= 60, "{} calls", run.calls);
    assert!(
        run.good_done < Duration::from_secs(5),
        "{:?}",
        run.good_done
    );
    assert!(
        run.dead_done < Duration::from_secs(120),
        "{:?}",
        run.dead_done
    );
    assert!(core.is_idle());
}

#[tokio::test(start_paused = true)]
async fn an_outage_splits_nothing_and_dead_letters_nothing() {
    let mut core = Core::new(settings(1000));
    core.add(urls(50));
    let run = drive(&mut core, Duration::from_secs(3 * 3600), |_| {
        Err(transient())
    })
    .await;
    assert!(run.dead.is_empty(), "{:?}", run.dead);
    // Backoff grows to retry_max: three hours at ≤ 1 call per 15 s (jitter) after the ramp.
    assert!(run.calls < 3 * 3600 / 15 + 20, "{} calls", run.calls);
    assert_eq!(core.items(), 50, "nothing lost");
    // The provider comes back: everything goes, in few calls.
    let run = drive(&mut core, Duration::from_secs(120), |_| Ok(())).await;
    assert_eq!(run.purged.len(), 50);
    assert!(run.calls <= 4, "{} calls", run.calls);
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_clamped_to_retry_max() {
    let mut core = Core::new(settings(10));
    core.add(urls(1));
    let mut first = true;
    let start = Instant::now();
    let run = drive(&mut core, Duration::from_secs(120), |_| {
        if std::mem::take(&mut first) {
            Err(ProviderError::RateLimited {
                code: "429".into(),
                retry_after: Some(Duration::from_secs(10_000_000_000_000_000_000)),
            })
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(run.purged.len(), 1);
    let waited = run.good_done;
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(121));
    // And `later` never panics, whatever the duration.
    assert!(later(Instant::now(), Duration::MAX) >= Instant::now());
}

#[tokio::test(start_paused = true)]
async fn an_item_too_large_even_alone_is_dead_lettered_and_the_cap_grows_back() {
    let mut core = Core::new(settings(8));
    core.add(urls(8));
    let run = drive(&mut core, Duration::from_secs(60), |items| {
        if items
            .iter()
            .any(|i| i.key.as_str() == "https://a.example/3")
        {
            Err(ProviderError::BatchTooLarge {
                code: "LimitExceeded".into(),
            })
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(
        run.dead,
        vec![("item_too_large", "https://a.example/3".to_string())]
    );
    assert_eq!(run.purged.len(), 7);
    // A temporary "too large" shrank the cap; full batches accepted since grow it back.
    assert!(core.lanes[0].cap < 8);
    core.add(
        (10..60)
            .map(|i| item(&format!("https://a.example/{i}"), i, Kind::Url))
            .collect(),
    );
    drive(&mut core, Duration::from_secs(60), |_| Ok(())).await;
    assert_eq!(core.lanes[0].cap, 8);
}

#[tokio::test(start_paused = true)]
async fn a_refused_host_is_dead_lettered_and_the_others_flow() {
    let mut core = Core::new(settings(10));
    let mut items = urls(4);
    items.push(item("https://bad.example/1", 100, Kind::Url));
    items.push(item("https://bad.example/2", 101, Kind::Url));
    core.add(items);
    let run = drive(&mut core, Duration::from_secs(60), |items| {
        if items
            .iter()
            .any(|i| i.key.as_str().starts_with("https://bad.example/"))
        {
            Err(ProviderError::HostRefused {
                code: "UnauthorizedOperation.CdnHostUnauthorized".into(),
                message: "no".into(),
            })
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(run.purged.len(), 4);
    assert_eq!(run.dead.len(), 2);
    assert!(run.dead.iter().all(|(e, _)| *e == "host_refused"));
    assert!(!core.auth_stopped());
    assert_eq!(run.calls, 3, "the mixed call, then one per host");
}

#[tokio::test(start_paused = true)]
async fn invalid_items_are_isolated_or_named() {
    let mut core = Core::new(settings(8));
    core.add(urls(8));
    let bad = "https://a.example/5";
    let run = drive(&mut core, Duration::from_secs(60), |items| {
        if items.iter().any(|i| i.key.as_str() == bad) {
            Err(ProviderError::InvalidItems {
                code: "InvalidParameter.CdnParamError".into(),
                message: "bad".into(),
                items: None,
            })
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(run.dead, vec![("provider_rejected", bad.to_string())]);
    assert_eq!(run.purged.len(), 7);
    assert!(run.calls <= 1 + 2 * 3, "{} calls", run.calls);

    let mut core = Core::new(settings(8));
    core.add(urls(8));
    let run = drive(&mut core, Duration::from_secs(60), |items| {
        if items.len() > 1 && items.iter().any(|i| i.key.as_str() == bad) {
            Err(ProviderError::InvalidItems {
                code: "InvalidPurgeUrl".into(),
                message: "bad".into(),
                items: Some(vec![bad.to_string()]),
            })
        } else {
            Ok(())
        }
    })
    .await;
    assert_eq!(run.dead.len(), 1);
    assert_eq!(
        run.calls, 2,
        "the named item goes at once, the rest in one call"
    );
}

#[tokio::test(start_paused = true)]
async fn auth_failures_stop_calls_and_probe_one_at_a_time() {
    let mut s = settings(1);
    s.max_in_flight = 4;
    let mut core = Core::new(s);
    core.add(urls(6));
    let t0 = Instant::now();
    let Next::Send { lane, items } = core.next(t0) else {
        panic!()
    };
    let auth = ProviderError::Auth {
        code: "AuthFailure.SignatureFailure".into(),
        message: "bad key".into(),
    };
    let effects = core.finish(lane, items, Err(&auth), t0);
    assert!(matches!(effects[..], [Effect::AuthStopped]));
    assert!(matches!(core.next(t0), Next::Wait(Some(at)) if at == t0 + AUTH_PROBE_INTERVAL));
    tokio::time::advance(AUTH_PROBE_INTERVAL).await;
    let t1 = Instant::now();
    let Next::Send { lane, items } = core.next(t1) else {
        panic!("one probe")
    };
    assert!(
        matches!(core.next(t1), Next::Wait(None)),
        "only one probe at a time"
    );
    let effects = core.finish(lane, items, Err(&auth), t1);
    assert!(effects.is_empty(), "still stopped: no second AuthStopped");
    tokio::time::advance(AUTH_PROBE_INTERVAL).await;
    let t2 = Instant::now();
    let Next::Send { lane, items } = core.next(t2) else {
        panic!()
    };
    let effects = core.finish(lane, items, Ok(()), t2);
    assert!(matches!(
        effects[..],
        [Effect::AuthResumed, Effect::Done(_)]
    ));
    // Calls flow again, several at once.
    assert!(matches!(core.next(t2), Next::Send { .. }));
    assert!(matches!(core.next(t2), Next::Send { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_parked_kind_never_holds_up_the_other_kind() {
    let mut core = Core::new(settings(10));
    core.add(urls(3));
    core.add(vec![item("https://a.example/d/", 50, Kind::Dir)]);
    let now = Instant::now();
    // The url quota is spent for an hour.
    assert!(core.park(Kind::Url, 3600, now, 0));
    assert!(
        !core.park(Kind::Url, 3600, now, 0),
        "already parked until then"
    );
    let parkable = core.take_parkable();
    assert_eq!(parkable.len(), 1);
    assert_eq!(parkable[0].2.len(), 3);
    assert_eq!(parkable[0].3, 3600);
    tokio::time::advance(LINGER).await;
    let now = Instant::now();
    let Next::Send { lane, items } = core.next(now) else {
        panic!("the dir item goes")
    };
    assert_eq!(items[0].key.as_str(), "https://a.example/d/");
    core.finish(lane, items, Ok(()), now);
    assert_eq!(
        core.parked_until_unix(Kind::Regex),
        None,
        "regex spends the dir quota"
    );
    // At the reset, the url kind flows again.
    tokio::time::advance(Duration::from_secs(3600)).await;
    core.add(vec![item("https://a.example/new", 60, Kind::Url)]);
    core.next(Instant::now());
    assert_eq!(core.parked_until_unix(Kind::Url), None);
}

#[tokio::test(start_paused = true)]
async fn quota_exhaustion_from_the_provider_asks_to_park() {
    let mut core = Core::new(settings(10));
    core.add(urls(2));
    tokio::time::advance(LINGER).await;
    let now = Instant::now();
    let Next::Send { lane, items } = core.next(now) else {
        panic!()
    };
    let e = ProviderError::QuotaExhausted {
        code: "LimitExceeded".into(),
    };
    let effects = core.finish(lane, items, Err(&e), now);
    assert!(matches!(
        effects[..],
        [Effect::QuotaExhausted { kind: Kind::Url }]
    ));
    assert_eq!(core.items(), 2, "back in the lane until parked");
}

#[tokio::test(start_paused = true)]
async fn a_key_requested_again_while_it_waits_for_a_retry_is_purged_once() {
    let mut core = Core::new(settings(10));
    core.add(vec![item("https://a.example/x", 1, Kind::Url)]);
    tokio::time::advance(LINGER).await;
    let now = Instant::now();
    let Next::Send { lane, items } = core.next(now) else {
        panic!()
    };
    core.finish(lane, items, Err(&transient()), now);
    core.add(vec![item("https://a.example/x", 2, Kind::Url)]);
    let mut done = Vec::new();
    let mut calls = 0;
    loop {
        let now = Instant::now();
        match core.next(now) {
            Next::Send { lane, items } => {
                calls += 1;
                for e in core.finish(lane, items, Ok(()), now) {
                    if let Effect::Done(w) = e {
                        done.extend(w);
                    }
                }
            }
            Next::Wait(Some(at)) => tokio::time::advance(at - now).await,
            Next::Wait(None) => break,
        }
    }
    assert_eq!(calls, 1, "one purge for both requests");
    done.sort();
    assert_eq!(done, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn items_of_dead_deliveries_are_dropped_before_spending_quota() {
    let sessions = crate::ledger::Sessions::default();
    let e1 = sessions.advance();
    let mut core = Core::new(settings(10));
    core.add(
        (0..5)
            .map(|i| {
                item(
                    &format!("https://a.example/{i}"),
                    crate::ledger::Sessions::id(e1, i),
                    Kind::Url,
                )
            })
            .collect(),
    );
    let e2 = sessions.advance();
    core.add(vec![item(
        "https://a.example/0",
        crate::ledger::Sessions::id(e2, 0),
        Kind::Url,
    )]);
    assert_eq!(core.prune(|d| sessions.is_live(d)), 4);
    tokio::time::advance(LINGER).await;
    let Next::Send { items, .. } = core.next(Instant::now()) else {
        panic!()
    };
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0].waiters().collect::<Vec<_>>(),
        vec![crate::ledger::Sessions::id(e2, 0)]
    );
}

#[tokio::test(start_paused = true)]
async fn header_lanes_of_a_parked_kind_are_reused_not_grown() {
    use crate::provider::Header;
    let mut core = Core::new(settings(10));
    let now = Instant::now();
    core.park(Kind::Url, 3600, now, 0);
    for i in 0..100u64 {
        let mut it = item(&format!("https://a.example/h/{i}"), i, Kind::Url);
        it.headers = Some(Arc::from(vec![Header {
            name: "x-variant".into(),
            value: format!("v{i}"),
        }]));
        core.add(vec![it]);
        for (lane, p, items, _) in core.take_parkable() {
            core.settled(lane, items.len(), Some(p), Vec::new(), now);
        }
    }
    assert_eq!(
        core.lanes.len(),
        1,
        "one lane slot recycled for every header set"
    );
}
