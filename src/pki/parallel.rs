//! Running independent jobs at once: key generation (RSA above all) keeps every core busy on a
//! first `certs generate`, and the fsyncs of an atomic write mostly wait for the disk, where
//! concurrent fsyncs share journal commits. Each certificate is independent of the others.

use std::sync::atomic::{AtomicUsize, Ordering};

/// At least this many threads, so that waits for the disk overlap even on a 2-core machine.
const MIN_THREADS: usize = 8;

/// `items.iter().map(f)`, spread over threads; results keep the order of `items`.
pub(crate) fn map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.max(MIN_THREADS).min(items.len());
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, R)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(item) = items.get(i) else { break done };
                        done.push((i, f(item)));
                    }
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}
