//! Working on many hosts at once, with a bound: the one place kubeha fans out.

use futures::stream::{self, StreamExt};

/// Runs `f` for every item, at most `parallel` at a time, and returns the results in the
/// items' order (not completion order), so reports are deterministic.
pub async fn each<'a, I, T, F, Fut>(items: &'a [I], parallel: usize, f: F) -> Vec<(&'a I, T)>
where
    F: Fn(&'a I) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut done: Vec<(usize, T)> = stream::iter(items.iter().enumerate())
        .map(|(i, item)| {
            let fut = f(item);
            async move { (i, fut.await) }
        })
        .buffer_unordered(parallel.max(1))
        .collect()
        .await;
    done.sort_by_key(|(i, _)| *i);
    done.into_iter().map(|(i, t)| (&items[i], t)).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn keeps_order_and_bound() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u64> = (0..12).collect();
        let out = super::each(&items, 3, |n| {
            let (running, peak) = (&running, &peak);
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Later items finish first, so completion order differs from input order.
                tokio::time::sleep(Duration::from_millis(30 - 2 * n)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                n * 10
            }
        })
        .await;
        assert_eq!(
            out.iter().map(|(i, t)| (**i, *t)).collect::<Vec<_>>(),
            (0..12).map(|n| (n, n * 10)).collect::<Vec<_>>()
        );
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }
}
