//! The rolling 24-hour quota (Wangsu) on the real Redis: never more than the limit in any 24 hours,
//! spending comes back 24 hours after its 5-minute bucket ends (late by at most 5 minutes, never
//! early), refunds go back to the bucket they came from, and `free_at` says when to retry.

use crate::support::*;
use purge_worker::config::QuotaWindow;
use purge_worker::provider::Kind;
use purge_worker::quota::{QuotaPolicy, QuotaStore, ROLLING_BUCKET_SECS};

const DAY: i64 = 86_400;
const ROLLING: QuotaPolicy = QuotaPolicy {
    window: QuotaWindow::Rolling24h,
    utc_offset_secs: 0,
};

#[tokio::test]
async fn rolling_window_counts_any_24_hours() {
    let env = TestEnv::new("rolling").await;
    let q = QuotaStore::connect(REDIS_URL, &env.prefix).expect("redis client");
    // A bucket boundary plus 10 s, so the arithmetic below is exact.
    let t0 = 1_800_000_000 - 1_800_000_000 % ROLLING_BUCKET_SECS + 10;
    let limit = 100;

    let r = q
        .reserve("ws", Kind::Url, limit, 60, t0, ROLLING)
        .await
        .unwrap();
    assert_eq!((r.granted, r.used), (60, 60));
    // Eight hours later, only what is left of the 24 hours is granted: a partial grant.
    let t1 = t0 + 8 * 3600;
    let r1 = q
        .reserve("ws", Kind::Url, limit, 60, t1, ROLLING)
        .await
        .unwrap();
    assert_eq!((r1.granted, r1.used), (40, 100));
    let none = q
        .reserve("ws", Kind::Url, limit, 1, t1 + 60, ROLLING)
        .await
        .unwrap();
    assert_eq!(none.granted, 0, "full");
    // The oldest spending (bucket of t0) frees 24 h after that bucket ends.
    let bucket_end = t0 - 10 + ROLLING_BUCKET_SECS;
    assert_eq!(none.free_at, bucket_end + DAY);

    // Exactly 24 h after t0 it still counts (a calendar day would have reset by now)...
    let r = q
        .reserve("ws", Kind::Url, limit, 1, t0 + DAY, ROLLING)
        .await
        .unwrap();
    assert_eq!(r.granted, 0, "24 h after t0 the first 60 still count");
    // ...and once its bucket has aged out, those 60 come back, but not t1's 40.
    let r = q
        .reserve("ws", Kind::Url, limit, 100, bucket_end + DAY, ROLLING)
        .await
        .unwrap();
    assert_eq!((r.granted, r.used), (60, 100));

    // A refund goes back to the reservation's bucket.
    q.refund(&r, 25).await.unwrap();
    let u = q
        .used("ws", Kind::Url, bucket_end + DAY, ROLLING)
        .await
        .unwrap();
    assert_eq!(u.used, 75);

    // Kinds are separate; exhaust fills what is left and says when it frees.
    let t2 = bucket_end + DAY;
    let d = q.exhaust("ws", Kind::Dir, 20, t2, ROLLING).await.unwrap();
    assert_eq!(d.used, 20);
    assert_eq!(d.free_at, t2 + ROLLING_BUCKET_SECS + DAY);
    let u = q.used("ws", Kind::Url, t2, ROLLING).await.unwrap();
    assert_eq!(
        u.used, 75,
        "the url window was not touched by the dir exhaust"
    );
    env.cleanup().await;
}

#[tokio::test]
async fn concurrent_reservations_never_exceed_the_limit() {
    let env = TestEnv::new("rolling-race").await;
    let q = QuotaStore::connect(REDIS_URL, &env.prefix).expect("redis client");
    let now = 1_800_000_000;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let q = q.clone();
            tokio::spawn(async move {
                q.reserve("ws", Kind::Url, 50, 7, now + i, ROLLING)
                    .await
                    .unwrap()
                    .granted
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 50, "20 × 7 asked, exactly the limit granted");
    env.cleanup().await;
}
