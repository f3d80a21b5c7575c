//! The IO-free batch policy of [`StreamMode::Batch`](super::StreamMode::Batch): a batch is
//! closed when it holds `batch_size` items or `batch_timeout` after its first item arrived,
//! whichever comes first.

use std::time::Duration;

use tokio::time::Instant;

/// Accumulates items into batches.
#[derive(Debug)]
pub(crate) struct Batcher<T> {
    size: usize,
    timeout: Duration,
    items: Vec<T>,
    opened: Option<Instant>,
}

impl<T> Batcher<T> {
    pub(crate) fn new(size: usize, timeout: Duration) -> Self {
        Self {
            size,
            timeout,
            items: Vec::new(),
            opened: None,
        }
    }

    /// Adds an item; returns the batch if it is now full.
    pub(crate) fn push(&mut self, item: T, now: Instant) -> Option<Vec<T>> {
        self.opened.get_or_insert(now);
        self.items.push(item);
        (self.items.len() >= self.size)
            .then(|| self.flush())
            .flatten()
    }

    /// Whether a batch is open (holds an item).
    pub(crate) fn is_open(&self) -> bool {
        self.opened.is_some()
    }

    /// Items in the open batch.
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// When the open batch is due, if there is one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        // A timeout past what an `Instant` can hold (`Duration::MAX`) is as good as never.
        const FAR: Duration = Duration::from_secs(30 * 365 * 86_400);
        self.opened
            .map(|t| t.checked_add(self.timeout).unwrap_or_else(|| t + FAR))
    }

    /// The open batch if its time is up.
    pub(crate) fn take_due(&mut self, now: Instant) -> Option<Vec<T>> {
        match self.deadline() {
            Some(d) if d <= now => self.flush(),
            _ => None,
        }
    }

    /// The open batch, whatever its size.
    pub(crate) fn flush(&mut self) -> Option<Vec<T>> {
        self.opened = None;
        (!self.items.is_empty()).then(|| std::mem::take(&mut self.items))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_no_instant_can_hold_is_never_due() {
        let t0 = Instant::now();
        let mut b = Batcher::new(3, Duration::MAX);
        assert!(b.push(1, t0).is_none());
        assert!(b.deadline().is_some_and(|d| d > t0));
        assert!(b.take_due(t0 + Duration::from_secs(86_400)).is_none());
    }

    #[test]
    fn closes_on_size_or_timeout_whichever_first() {
        let t0 = Instant::now();
        let mut b = Batcher::new(3, Duration::from_millis(100));
        assert!(b.push(1, t0).is_none());
        assert!(b.push(2, t0 + Duration::from_millis(10)).is_none());
        assert_eq!(
            b.push(3, t0 + Duration::from_millis(20)),
            Some(vec![1, 2, 3])
        );
        assert_eq!(b.deadline(), None);
        assert!(b.push(4, t0 + Duration::from_millis(30)).is_none());
        assert_eq!(b.deadline(), Some(t0 + Duration::from_millis(130)));
        assert!(b.take_due(t0 + Duration::from_millis(129)).is_none());
        assert_eq!(b.take_due(t0 + Duration::from_millis(130)), Some(vec![4]));
        assert!(b.flush().is_none());
    }
}
