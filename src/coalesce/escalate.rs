//! Directory escalation (issue 11 §2): the choice of the directory that replaces pending bulk URLs
//! of a lane. Pure functions over cache keys, so the rule (deepest directory holding enough
//! URLs, never the host root) is tested on its own.

use std::collections::HashMap;

use super::PendingItem;

/// The directories a URL cache key lies in, shallowest first, never the host root:
/// `https://h/a/b/c.html?q` → `https://h/a/`, `https://h/a/b/`. The query never counts (a
/// directory purge covers every query variant).
pub fn dirs_of(key: &str) -> impl Iterator<Item = &str> {
    let path = key
        .find("://")
        .and_then(|s| key[s + 3..].find('/').map(|p| s + 3 + p));
    let (root, end) = match path {
        Some(root) => (root, key[root..].find('?').map_or(key.len(), |q| root + q)),
        None => (key.len(), key.len()),
    };
    key[..end]
        .char_indices()
        .skip_while(move |(i, _)| *i <= root)
        .filter(|(_, c)| *c == '/')
        .map(move |(i, _)| &key[..=i])
}

/// Per directory: (URLs under it, depth, the domain's threshold).
type Counts<'a> = HashMap<&'a str, (usize, usize, u32), foldhash::fast::RandomState>;

/// Counts the URLs under each directory of `keys` (cache key, the domain's threshold).
fn tally<'a>(keys: impl Iterator<Item = (&'a str, u32)>) -> Counts<'a> {
    let mut counts = Counts::default();
    for (key, threshold) in keys {
        for (depth, dir) in dirs_of(key).enumerate() {
            let e = counts.entry(dir).or_insert((0, depth, threshold));
            e.0 += 1;
        }
    }
    counts
}

/// Whether `n` URLs under one directory are worth a directory purge: at least the domain's
/// threshold (0 = off) and `min_urls`.
fn qualifies(n: usize, threshold: u32, min_urls: u64) -> bool {
    threshold > 0 && n as u64 >= u64::from(threshold).max(min_urls)
}

/// The deepest directory holding at least `max(its items' threshold, min_urls)` of `items` (more
/// URLs, then the smaller name, break ties), with how many it holds.
pub fn choose<'a>(
    items: impl Iterator<Item = &'a PendingItem>,
    min_urls: u64,
) -> Option<(&'a str, usize)> {
    tally(items.map(|it| (it.key.as_str(), it.escalate)))
        .into_iter()
        .filter(|(_, (n, _, threshold))| qualifies(*n, *threshold, min_urls))
        .max_by(|(a, (na, da, _)), (b, (nb, db, _))| {
            da.cmp(db).then(na.cmp(nb)).then_with(|| b.cmp(a))
        })
        .map(|(dir, (n, _, _))| (dir, n))
}

/// Every directory that repeated [`choose`] (as the lane's `escalate` runs it: pick, take the
/// URLs under it, pick again) selects when all of `keys` (distinct cache keys with their
/// domain's threshold) wait at once, with how many URLs each replaces, deepest first; for
/// `purge-worker plan`. The same result in O(keys × depth) instead of one tally per pick:
/// taking the URLs under a directory only lowers the counts of its ancestors, and directories
/// of one depth are disjoint, so deciding depth by depth, deepest first, picks the same set.
pub fn cover<'a>(keys: &[(&'a str, u32)], min_urls: u64) -> Vec<(&'a str, usize)> {
    let mut counts = tally(keys.iter().copied());
    let mut sorted: Vec<&'a str> = keys.iter().map(|(k, _)| *k).collect();
    sorted.sort_unstable();
    sorted.dedup();
    let mut covered = vec![false; sorted.len()];
    let mut order: Vec<(usize, &'a str)> = counts
        .iter()
        .filter(|(_, (n, _, t))| qualifies(*n, *t, min_urls))
        .map(|(dir, (_, depth, _))| (*depth, *dir))
        .collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    let mut out = Vec::new();
    for (_, dir) in order {
        let Some(&(n, _, threshold)) = counts.get(dir) else {
            continue;
        };
        if !qualifies(n, threshold, min_urls) {
            continue;
        }
        // Keys under `dir` start with it: one contiguous run of the sorted keys.
        let start = sorted.partition_point(|k| *k < dir);
        let mut taken = 0;
        for i in start..sorted.len() {
            let key = sorted[i];
            if !key.starts_with(dir) {
                break;
            }
            if std::mem::replace(&mut covered[i], true) {
                continue;
            }
            taken += 1;
            for d in dirs_of(key) {
                if let Some(e) = counts.get_mut(d) {
                    e.0 -= 1;
                }
            }
        }
        out.push((dir, taken));
    }
    out
}

/// The fewest URLs one directory purge must replace to save quota as a share of each daily
/// limit: one directory unit is `1/dirs_per_day` of its window, `n` URL units are
/// `n/urls_per_day`; escalating pays only when `n/urls_per_day > 1/dirs_per_day`. `None` when
/// there is no directory quota at all.
pub fn min_urls(urls_per_day: u64, dirs_per_day: u64) -> Option<u64> {
    (dirs_per_day > 0).then(|| urls_per_day / dirs_per_day + 1)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Arc;

    use tokio::time::Instant;

    use super::*;
    use crate::cache_key::CacheKey;
    use crate::coalesce::Origin;

    fn item(key: &str, escalate: u32) -> PendingItem {
        let mut it = PendingItem::new(
            CacheKey::from_normalized(key),
            1,
            Arc::new(Origin::default()),
            Instant::now(),
        );
        it.escalate = escalate;
        it
    }

    #[test]
    fn directories_of_a_key_never_include_the_host_root() {
        let d: Vec<&str> = dirs_of("https://h.example/a/b/c.html?x=/y/").collect();
        assert_eq!(d, vec!["https://h.example/a/", "https://h.example/a/b/"]);
        assert_eq!(dirs_of("https://h.example/top.html").count(), 0);
        assert_eq!(dirs_of("https://h.example/").count(), 0);
        assert_eq!(dirs_of("not a url").count(), 0);
        let d: Vec<&str> = dirs_of("https://h.example/a/b/").collect();
        assert_eq!(d, vec!["https://h.example/a/", "https://h.example/a/b/"]);
    }

    #[test]
    fn the_deepest_directory_with_enough_urls_is_chosen() {
        let mut items: Vec<PendingItem> = (0..5)
            .map(|i| item(&format!("https://h/a/b/{i}"), 3))
            .collect();
        items.extend((0..2).map(|i| item(&format!("https://h/a/c/{i}"), 3)));
        items.push(item("https://h/a/b/deep/x", 3));
        // /a/ holds 8, /a/b/ holds 6, /a/b/deep/ only 1: the deepest with ≥ 3 is /a/b/.
        assert_eq!(choose(items.iter(), 0), Some(("https://h/a/b/", 6)));
        // A higher floor from the quota ratio: only /a/ has 8.
        assert_eq!(choose(items.iter(), 7), Some(("https://h/a/", 8)));
        assert_eq!(choose(items.iter(), 9), None);
    }

    #[test]
    fn the_host_root_is_never_chosen_and_zero_means_off() {
        let items: Vec<PendingItem> = (0..50)
            .map(|i| item(&format!("https://h/{i}"), 2))
            .collect();
        assert_eq!(choose(items.iter(), 0), None, "all at the root");
        let off: Vec<PendingItem> = (0..50)
            .map(|i| item(&format!("https://h/a/{i}"), 0))
            .collect();
        assert_eq!(choose(off.iter(), 0), None, "dir_escalation = 0");
    }

    #[test]
    fn escalation_must_save_quota_as_a_share_of_each_limit() {
        // Tencent: 100 dirs, 10,000 URLs a day: 100 URLs are as much as one directory.
        assert_eq!(min_urls(10_000, 100), Some(101));
        assert_eq!(min_urls(5000, 20), Some(251));
        assert_eq!(min_urls(10, 100), Some(1));
        assert_eq!(min_urls(10_000, 0), None);
    }

    /// `cover` picks what repeated `choose` picks, taking the URLs under each pick.
    #[test]
    fn cover_is_repeated_choose() {
        let mut seed = 7u64;
        let mut next = move |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        let mut picked = 0;
        for round in 0..40 {
            let threshold = 2 + next(4) as u32;
            let min_urls = next(5);
            let mut keys: Vec<String> = (0..200)
                .map(|_| {
                    let depth = next(4);
                    let mut k = format!("https://h{}/", next(2));
                    for _ in 0..depth {
                        k.push_str(&format!("d{}/", next(3)));
                    }
                    k.push_str(&format!("f{}", next(40)));
                    k
                })
                .collect();
            keys.sort();
            keys.dedup();
            let mut pending: Vec<PendingItem> = keys.iter().map(|k| item(k, threshold)).collect();
            let mut want = Vec::new();
            while let Some((dir, n)) = choose(pending.iter(), min_urls) {
                let dir = dir.to_string();
                pending.retain(|i| !i.key.as_str().starts_with(&dir));
                want.push((dir, n));
            }
            let pairs: Vec<(&str, u32)> = keys.iter().map(|k| (k.as_str(), threshold)).collect();
            let mut got: Vec<(String, usize)> = cover(&pairs, min_urls)
                .into_iter()
                .map(|(d, n)| (d.to_string(), n))
                .collect();
            want.sort();
            got.sort();
            assert_eq!(got, want, "round {round}");
            picked += usize::from(!want.is_empty());
        }
        assert!(picked > 20, "the trace escalates: {picked} of 40 rounds");
    }
}
