//! [`HandlerFuture`]: a handler call's boxed future, in memory reused from call to call.
//!
//! An `async fn`'s future cannot be named, so an erased handler boxes the future of each call
//! (as axum's handlers do). With the system allocator that allocation and its release were the
//! largest single cost of the framework per message (~130 instructions of ~1,060, callgrind).
//! Here the memory of a finished call is kept by its thread, a few blocks per thread, and the
//! next call whose future has the same layout is made in it. A future is still dropped when its
//! `HandlerFuture` is (a cancelled call releases what it holds at once): only the memory is
//! kept.

#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

use super::settle::{BoxError, Settlement};

type Output = Result<Settlement, BoxError>;
type Erased = dyn Future<Output = Output> + Send;

/// The future of a handler call (and of the services that erase theirs into one): a boxed
/// future whose memory is reused by the thread's next call of the same layout.
pub struct HandlerFuture {
    /// The future, owned: allocated with its own layout (dangling if it has no size), never
    /// moved, and dropped only by `Drop`.
    future: NonNull<Erased>,
}

// SAFETY: the future it owns is `Send`, and nothing else is shared.
unsafe impl Send for HandlerFuture {}

impl HandlerFuture {
    /// `future`, boxed.
    #[inline]
    pub fn new<F>(future: F) -> Self
    where
        F: Future<Output = Output> + Send + 'static,
    {
        Self::make(|| future)
    }

    /// The future `make` returns, boxed; made once its memory is found, so that it can be
    /// written there directly rather than made aside and copied in.
    #[inline(always)]
    pub(crate) fn make<F>(make: impl FnOnce() -> F) -> Self
    where
        F: Future<Output = Output> + Send + 'static,
    {
        let layout = Layout::new::<F>();
        if layout.size() == 0 {
            let place = NonNull::<F>::dangling();
            // SAFETY: a dangling pointer aligned for a zero-sized `F` is valid for writing it.
            unsafe { place.as_ptr().write(make()) };
            return HandlerFuture { future: place };
        }
        let memory = match spare(layout) {
            Some(memory) => memory,
            // SAFETY: the layout's size is not zero.
            None => match NonNull::new(unsafe { alloc::alloc(layout) }) {
                Some(memory) => memory,
                None => alloc::handle_alloc_error(layout),
            },
        };
        // If `make` panics, the memory goes back (it holds nothing yet).
        let reserved = Reserved { layout, memory };
        let place = memory.cast::<F>();
        // SAFETY: `place` is valid for writing an `F` and holds nothing: it is fresh memory of
        // `F`'s layout, or memory of that layout that no future holds any more (`keep`).
        unsafe { place.as_ptr().write(make()) };
        std::mem::forget(reserved);
        HandlerFuture { future: place }
    }
}

/// Memory that holds no future (none written yet, or one just dropped): kept or freed when
/// this is dropped.
struct Reserved {
    layout: Layout,
    memory: NonNull<u8>,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        keep(self.layout, self.memory);
    }
}

impl Future for HandlerFuture {
    type Output = Output;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Output> {
        // SAFETY: the future is valid while `self` lives and never moves (`self` holds only a
        // pointer to it), so pinning it is sound.
        let future = unsafe { Pin::new_unchecked(&mut *self.get_mut().future.as_ptr()) };
        future.poll(cx)
    }
}

impl Drop for HandlerFuture {
    fn drop(&mut self) {
        let place = self.future.as_ptr();
        // SAFETY: the future is valid until it is dropped just below.
        let layout = Layout::for_value(unsafe { &*place });
        if layout.size() == 0 {
            // SAFETY: the future is valid, dropped once, here, and not used afterwards.
            unsafe { std::ptr::drop_in_place(place) };
            return;
        }
        let memory = self.future.cast();
        // Kept (or freed) even if the future's drop panics.
        let reserved = Reserved { layout, memory };
        // SAFETY: as above.
        unsafe { std::ptr::drop_in_place(place) };
        // Not `drop(reserved)`, which does the same: the guard's drop glue is an outlined call
        // (it serves the unwind path too) and cost 14 instructions more per message than
        // `keep` inlined here (framework_callgrind).
        std::mem::forget(reserved);
        keep(layout, memory);
    }
}

impl std::fmt::Debug for HandlerFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandlerFuture")
    }
}

/// Blocks kept per thread: enough for a handler's calls with `concurrency` workers on one
/// thread and the layers that erase their own futures, few enough to hold little memory.
const KEPT: usize = 8;

/// Memory of finished futures, by layout, freed when the thread ends.
struct Spares(Vec<(Layout, NonNull<u8>)>);

impl Drop for Spares {
    fn drop(&mut self) {
        for (layout, memory) in self.0.drain(..) {
            // SAFETY: allocated with this layout by `HandlerFuture::make`, and held by nothing.
            unsafe { alloc::dealloc(memory.as_ptr(), layout) };
        }
    }
}

thread_local! {
    static SPARES: RefCell<Spares> = const { RefCell::new(Spares(Vec::new())) };
}

/// A kept block of `layout`, if this thread has one. (No other code runs while the list is
/// borrowed, here or in `keep`.)
#[inline]
fn spare(layout: Layout) -> Option<NonNull<u8>> {
    SPARES
        .try_with(|spares| {
            let list = &mut spares.borrow_mut().0;
            let at = list.iter().rposition(|(kept, _)| *kept == layout)?;
            Some(list.swap_remove(at).1)
        })
        .ok()
        .flatten()
}

/// Keeps `memory` (of `layout`, holding nothing) for a later call, freeing one of the oldest
/// blocks kept if there are already `KEPT` (the list is in the order blocks were kept, but
/// for those taken back out of it), or frees it if the thread is ending.
#[inline]
fn keep(layout: Layout, memory: NonNull<u8>) {
    let kept = SPARES
        .try_with(|spares| {
            let list = &mut spares.borrow_mut().0;
            let room = list.len() < KEPT;
            if room {
                list.push((layout, memory));
            }
            room
        })
        .unwrap_or(false);
    if !kept {
        keep_in_place_of_oldest(layout, memory);
    }
}

/// Keeps `memory` in a full list in place of the first block (one of the oldest), which is
/// freed, so that a burst of some other layout does not take the places of the usual one for
/// good; or frees `memory` if the thread is ending.
#[cold]
fn keep_in_place_of_oldest(layout: Layout, memory: NonNull<u8>) {
    let freed = SPARES
        .try_with(|spares| {
            let list = &mut spares.borrow_mut().0;
            let oldest = list.remove(0);
            list.push((layout, memory));
            oldest
        })
        .unwrap_or((layout, memory));
    // SAFETY: allocated with this layout by `HandlerFuture::make`, and held by nothing.
    unsafe { alloc::dealloc(freed.1.as_ptr(), freed.0) };
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    /// Counts its drops; settles as `Ack` when polled, or waits forever if `pending`.
    struct Probe {
        drops: Arc<AtomicUsize>,
        pending: bool,
        _size: [u64; 8],
    }

    impl Future for Probe {
        type Output = Output;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Output> {
            if self.pending {
                Poll::Pending
            } else {
                Poll::Ready(Ok(Settlement::Ack))
            }
        }
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn probe(drops: &Arc<AtomicUsize>, pending: bool) -> Probe {
        Probe {
            drops: Arc::clone(drops),
            pending,
            _size: [0; 8],
        }
    }

    fn address(future: &HandlerFuture) -> *const u8 {
        future.future.as_ptr().cast::<u8>()
    }

    /// The layouts of the blocks this thread keeps.
    fn kept() -> Vec<Layout> {
        SPARES.with_borrow(|spares| spares.0.iter().map(|(layout, _)| *layout).collect())
    }

    /// A finished call's memory is reused by the next call of the same layout on the thread;
    /// each future is dropped exactly once, when its `HandlerFuture` is, finished or not.
    #[test]
    fn memory_is_reused_and_every_future_is_dropped_once() {
        let drops = Arc::new(AtomicUsize::new(0));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);

        let mut first = HandlerFuture::new(probe(&drops, false));
        assert!(matches!(
            Pin::new(&mut first).poll(&mut cx),
            Poll::Ready(Ok(Settlement::Ack))
        ));
        let at = address(&first);
        drop(first);
        assert_eq!(drops.load(Ordering::SeqCst), 1);

        // A cancelled call (never finished) is dropped at once, and its memory reused too.
        let pending = HandlerFuture::new(probe(&drops, true));
        assert_eq!(address(&pending), at, "the finished call's memory");
        let mut pending = pending;
        assert!(Pin::new(&mut pending).poll(&mut cx).is_pending());
        drop(pending);
        assert_eq!(drops.load(Ordering::SeqCst), 2);

        // Another layout gets its own memory; both are kept, and each goes to its own layout.
        let small = HandlerFuture::new(std::future::ready(Ok(Settlement::Skip)));
        let again = HandlerFuture::new(probe(&drops, false));
        assert_eq!(address(&again), at);
        assert_ne!(address(&small), at);
        drop((small, again));
        assert_eq!(drops.load(Ordering::SeqCst), 3);

        // Zero-sized futures need no memory.
        struct Nothing;
        impl Future for Nothing {
            type Output = Output;
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Output> {
                Poll::Ready(Ok(Settlement::Ack))
            }
        }
        let mut nothing = HandlerFuture::new(Nothing);
        assert!(Pin::new(&mut nothing).poll(&mut cx).is_ready());
    }

    /// A call whose future panics while it is made gives its memory back.
    #[test]
    fn memory_taken_for_a_panicking_call_is_kept() {
        let drops = Arc::new(AtomicUsize::new(0));
        let first = HandlerFuture::new(probe(&drops, false));
        let at = address(&first);
        drop(first);
        let made = std::panic::catch_unwind(|| {
            HandlerFuture::make(|| -> Probe { panic!("the handler panics when called") })
        });
        assert!(made.is_err());
        let next = HandlerFuture::new(probe(&drops, false));
        assert_eq!(
            address(&next),
            at,
            "the memory the panicking call had taken"
        );
    }

    /// More finished calls than the thread keeps: the oldest blocks are freed and the newest
    /// kept, so a burst of another layout does not crowd out the usual one for good; a future
    /// dropped on another thread gives its memory to that thread. (That surplus memory is
    /// freed rather than leaked is for AddressSanitizer to see; docs/PERFORMANCE-HISTORY.md
    /// has the run.)
    #[test]
    fn the_newest_blocks_are_kept_and_memory_moves_with_the_drop() {
        let drops = Arc::new(AtomicUsize::new(0));
        let usual = Layout::new::<Probe>();
        drop(HandlerFuture::new(probe(&drops, false)));
        assert_eq!(kept(), [usual]);
        let burst: Vec<_> = (0..KEPT * 2)
            .map(|_| HandlerFuture::new(std::future::ready(Ok(Settlement::Skip))))
            .collect();
        drop(burst);
        let other = Layout::new::<std::future::Ready<Output>>();
        assert_eq!(kept(), [other; KEPT], "the burst's newest blocks");
        let many: Vec<_> = (0..KEPT * 2)
            .map(|_| HandlerFuture::new(probe(&drops, false)))
            .collect();
        let addresses: Vec<_> = many.iter().map(address).collect();
        drop(many);
        assert_eq!(drops.load(Ordering::SeqCst), 1 + KEPT * 2);
        assert_eq!(kept(), [usual; KEPT]);
        // The blocks kept are the last dropped: the next calls get them back.
        let again = HandlerFuture::new(probe(&drops, false));
        assert!(addresses[KEPT..].contains(&address(&again)));
        drop(again);

        let elsewhere = HandlerFuture::new(probe(&drops, true));
        let kept_there = std::thread::spawn(move || {
            drop(elsewhere);
            kept()
        })
        .join()
        .unwrap();
        assert_eq!(drops.load(Ordering::SeqCst), 2 + KEPT * 2 + 1);
        assert_eq!(kept_there, [usual], "the dropping thread keeps the memory");
        assert_eq!(kept().len(), KEPT - 1, "this thread did not get it back");
    }

    /// A future whose own drop panics still gives its memory back.
    #[test]
    fn memory_of_a_future_whose_drop_panics_is_kept() {
        /// Panics when dropped if `explodes`.
        struct Fragile {
            explodes: bool,
            _size: [u64; 8],
        }
        impl Future for Fragile {
            type Output = Output;
            fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Output> {
                Poll::Ready(Ok(Settlement::Ack))
            }
        }
        impl Drop for Fragile {
            fn drop(&mut self) {
                if self.explodes {
                    panic!("a handler's future panics when dropped");
                }
            }
        }
        let fragile = |explodes| Fragile {
            explodes,
            _size: [0; 8],
        };
        let exploding = HandlerFuture::new(fragile(true));
        let at = address(&exploding);
        let dropped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(exploding)));
        assert!(dropped.is_err());
        let next = HandlerFuture::new(fragile(false));
        assert_eq!(
            address(&next),
            at,
            "the memory of the future whose drop panicked"
        );
    }
}
