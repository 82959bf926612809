//! Independent filesystem work on a few scoped threads (copying and hashing a large
//! context, which is mostly the kernel creating inodes or reading pages).
//!
//! Not rayon: its pool's threads outlive the call, and the builder goes on to clone
//! container processes, which must not happen in a process with threads running
//! (DESIGN, process model). Scoped threads are gone when [`map`] returns.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Runs `f` on every item, on up to four threads (one where there is one core or one
/// item), and returns the results in the items' order, or the first error.
pub fn map<T: Sync, R: Send, E: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R, E> + Sync,
) -> Result<Vec<R>, E> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(items.len());
    if workers <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let parts: Vec<Result<Vec<(usize, R)>, E>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else {
                            return Ok(done);
                        };
                        done.push((i, f(item)?));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut indexed = Vec::with_capacity(items.len());
    for part in parts {
        indexed.extend(part?);
    }
    indexed.sort_unstable_by_key(|(i, _)| *i);
    Ok(indexed.into_iter().map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn results_keep_the_items_order_and_errors_surface() {
        let items: Vec<u32> = (0..1000).collect();
        let doubled = super::map(&items, |i| Ok::<_, String>(i * 2)).unwrap();
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let err = super::map(&items, |i| if *i == 500 { Err("bad") } else { Ok(*i) });
        assert_eq!(err, Err("bad"));
        assert_eq!(super::map(&[] as &[u32], |i| Ok::<_, ()>(*i)), Ok(vec![]));
    }
}
