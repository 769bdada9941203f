//! Pause and resume in the core: a paused provider sends nothing, hands every waiting item (of
//! every lane, parked kinds included) to its paused queue, and flows again on resume, with the
//! backoff or auth stop that was in force kept.
#![allow(clippy::unwrap_used)]

use tokio::time::{Duration, Instant};

use super::tests::item;
use super::*;

fn settings() -> Settings {
    Settings {
        linger: Duration::from_millis(100),
        max_in_flight: 4,
        ..super::tests::settings(10)
    }
}

#[tokio::test(start_paused = true)]
async fn a_paused_provider_sends_nothing_and_parks_every_lane() {
    let mut core = Core::new(settings());
    core.add(vec![
        item("https://a.example/1", 1, Kind::Url),
        item("https://a.example/2", 2, Kind::Url),
        item("https://a.example/d/", 3, Kind::Dir),
    ]);
    // The dir quota is spent too: a pause takes its items all the same.
    assert!(core.park(Kind::Dir, 3600, Instant::now(), 0));
    assert!(core.set_paused(true));
    assert!(!core.set_paused(true), "pausing twice changes nothing");
    tokio::time::advance(Duration::from_secs(10)).await;
    assert!(matches!(core.next(Instant::now()), Next::Wait(None)));
    let mut parked = core.take_parkable();
    parked.sort_by_key(|(lane, ..)| *lane);
    assert_eq!(parked.len(), 2);
    assert!(parked.iter().all(|(_, _, _, why)| *why == ParkFor::Pause));
    assert_eq!(parked.iter().map(|(_, _, i, _)| i.len()).sum::<usize>(), 3);
    assert!(
        core.take_parkable().is_empty(),
        "one publish per lane at a time"
    );
    for (lane, priority, items, _) in parked {
        core.settled(
            lane,
            items.len(),
            Some(priority),
            Vec::new(),
            Instant::now(),
        );
    }
    assert!(core.is_idle());

    // Items that arrive while paused wait for the next pump's parking, never for a call.
    core.add(vec![item("https://a.example/3", 4, Kind::Url)]);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(matches!(core.next(Instant::now()), Next::Wait(None)));
    assert!(core.set_paused(false));
    let Next::Send { items, .. } = core.next(Instant::now()) else {
        panic!("a resumed provider sends again")
    };
    assert_eq!(items[0].key.as_str(), "https://a.example/3");
}

#[tokio::test(start_paused = true)]
async fn resume_keeps_the_backoff_that_was_in_force() {
    let mut core = Core::new(settings());
    core.add(vec![item("https://a.example/1", 1, Kind::Url)]);
    let until = Instant::now() + Duration::from_secs(5);
    core.hold(until);
    core.set_paused(true);
    core.set_paused(false);
    assert!(matches!(core.next(Instant::now()), Next::Wait(Some(at)) if at == until));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(matches!(core.next(Instant::now()), Next::Send { .. }));
}
