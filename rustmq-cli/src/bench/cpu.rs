//! CPU time over a workload's run, next to its wall-clock figures: how busy the client and the
//! embedded broker's thread were, and what a message cost each. The broker's thread is read on
//! that thread (a task on its runtime); the client is the rest of the process: its runtime's
//! threads, and any other thread, the broker's blocking pool included (an `fdatasync` under
//! acks=all runs there: a few microseconds of CPU per sync, counted as the client's). With a
//! multi-threaded client runtime (`--client-threads`), a worker still running on another core
//! is counted up to its last clock tick, so short runs read a few milliseconds off. On systems
//! without per-thread CPU clocks (anything but Linux here) nothing is measured and the fields
//! are left out.

use std::time::{Duration, Instant};

use tokio::runtime::Handle;

/// CPU time of the calling thread.
#[cfg(target_os = "linux")]
fn thread_cpu() -> Option<Duration> {
    clock(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID).ok()
}

/// CPU time of the whole process.
#[cfg(target_os = "linux")]
fn process_cpu() -> Option<Duration> {
    clock(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID).ok()
}

/// A clock's reading (`clock_gettime`; the CPU-time clocks here, the monotonic one for the
/// pacer's deadlines), none of which is ever negative.
#[cfg(target_os = "linux")]
pub(super) fn clock(id: nix::time::ClockId) -> nix::Result<Duration> {
    nix::time::clock_gettime(id).map(Duration::from)
}

#[cfg(not(target_os = "linux"))]
fn thread_cpu() -> Option<Duration> {
    None
}

#[cfg(not(target_os = "linux"))]
fn process_cpu() -> Option<Duration> {
    None
}

/// Reads the CPU clocks; `server` is the embedded broker's runtime (none for an external one).
#[derive(Debug, Clone)]
pub(crate) struct CpuProbe {
    server: Option<Handle>,
}

/// The clocks at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuMark {
    at: Instant,
    process: Option<Duration>,
    server: Option<Duration>,
}

/// CPU used between two marks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CpuUse {
    /// Wall-clock time between the marks.
    pub(crate) wall: Duration,
    /// The process but the broker's thread.
    pub(crate) client: Duration,
    /// The embedded broker's thread.
    pub(crate) broker: Option<Duration>,
}

impl CpuProbe {
    pub(crate) fn new(server: Option<Handle>) -> Self {
        Self { server }
    }

    /// The clocks now (the broker's read on its own thread).
    pub(crate) async fn mark(&self) -> CpuMark {
        let server = match &self.server {
            _ if !cfg!(target_os = "linux") => None,
            Some(handle) => handle.spawn(async { thread_cpu() }).await.ok().flatten(),
            None => None,
        };
        CpuMark {
            at: Instant::now(),
            process: process_cpu(),
            server,
        }
    }

    /// What was used from `start` until now.
    pub(crate) async fn since(&self, start: &CpuMark) -> Option<CpuUse> {
        start.until(&self.mark().await)
    }
}

impl CpuMark {
    /// What was used from this mark to `end`, if the clocks could be read.
    pub(crate) fn until(&self, end: &CpuMark) -> Option<CpuUse> {
        let process = end.process?.checked_sub(self.process?)?;
        let broker = match (self.server, end.server) {
            (Some(start), Some(end)) => end.checked_sub(start),
            _ => None,
        };
        Some(CpuUse {
            wall: end.at.saturating_duration_since(self.at),
            client: process.saturating_sub(broker.unwrap_or_default()),
            broker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(process_ms: u64, server_ms: Option<u64>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            process: Some(Duration::from_millis(process_ms)),
            server: server_ms.map(Duration::from_millis),
        }
    }

    #[test]
    fn the_client_is_the_process_but_the_broker_thread() {
        let used = mark(1_000, Some(400))
            .until(&mark(1_300, Some(520)))
            .unwrap();
        assert_eq!(used.broker, Some(Duration::from_millis(120)));
        assert_eq!(used.client, Duration::from_millis(180));
        // An external broker: all of it is the client's.
        let used = mark(1_000, None).until(&mark(1_300, None)).unwrap();
        assert_eq!(
            (used.client, used.broker),
            (Duration::from_millis(300), None)
        );
        // Clocks that went backwards, or could not be read: nothing is claimed.
        assert!(mark(1_300, None).until(&mark(1_000, None)).is_none());
        let unread = CpuMark {
            process: None,
            ..mark(0, None)
        };
        assert!(unread.until(&mark(10, None)).is_none());
    }
}

#[cfg(all(test, target_os = "linux"))]
mod linux_tests {
    use super::*;

    /// Busy until this thread has run for `d` (CPU time, whatever else runs on the machine).
    fn spin(d: Duration) {
        let start = thread_cpu().unwrap();
        while thread_cpu().unwrap() - start < d {
            std::hint::spin_loop();
        }
    }

    /// Work on the server's thread counts as the broker's, work on this one as the client's.
    #[test]
    fn each_side_is_charged_its_own_work() {
        let server = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let thread = {
            let handle = server.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let t = std::thread::spawn(move || {
                server.block_on(async {
                    let _ = stopped.await;
                })
            });
            (handle, stop, t)
        };
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let used = client.block_on(async {
            let probe = CpuProbe::new(Some(thread.0.clone()));
            let start = probe.mark().await;
            spin(Duration::from_millis(60));
            thread
                .0
                .spawn(async { spin(Duration::from_millis(120)) })
                .await
                .unwrap();
            start.until(&probe.mark().await).unwrap()
        });
        let _ = thread.1.send(());
        thread.2.join().unwrap();
        let broker = used.broker.expect("the server thread's clock");
        // The broker's thread ran its 120 ms and little else (not the client's 60: that would
        // make it 180). The client's share is the rest of the process, which also holds the
        // other tests of this binary: only a lower bound holds for it.
        assert!(broker >= Duration::from_millis(120), "{used:?}");
        assert!(broker < Duration::from_millis(170), "{used:?}");
        assert!(used.client >= Duration::from_millis(60), "{used:?}");
        assert!(used.wall >= Duration::from_millis(180), "{used:?}");
    }
}
