//! A steady rate of sends, finer than tokio's timer.
//!
//! tokio's timer rounds every deadline up to its next millisecond, so a loop that sleeps until
//! each send's time at 2,000 per second (W4) woke once a millisecond and sent two messages
//! back to back: the second waited for the first one's request, and the run measured that
//! wait besides the path. On Linux the pacer arms a `timerfd` (the kernel's high-resolution
//! timers) for each send's time and waits for it on the task's own runtime, which sleeps in
//! `epoll` until it fires as it would for tokio's timer: no thread of its own, which on a
//! machine of two cores would compete with the client and the broker. Elsewhere it falls back
//! to tokio's timer.
//!
//! Each tick says when its message counts as sent, and a paced measurement times from then. A
//! sender held up (a send waiting for buffer room, a slow request, the machine busy
//! elsewhere) gets the ticks it missed at once; timed from when they came, their wait would be
//! left out of every one of them ("coordinated omission": the measurement slows down with the
//! system it measures, and its percentiles miss the stalls). So a tick already due when it is
//! asked for counts from its due time. A tick the pacer waited for counts from when its timer
//! woke the task: how late a timer wakes an idle thread (tens of microseconds on these VMs,
//! the same for every paced measurement) is the host's and the tool's, not the system's. The
//! cost: should the client's own tasks keep the thread busy past a waited tick's due time,
//! that delay (less than a period, else the next ticks are due already and carry their due
//! times) is left out too.

use std::time::{Duration, Instant};

/// Ticks at a fixed rate; the sending task awaits each with [`Pacer::tick`].
#[derive(Debug)]
pub(crate) struct Pacer {
    period: Duration,
    /// Ticks given so far, and how many there are.
    given: u64,
    n: u64,
    /// When the first tick was due, on the clock latencies are timed with: the i-th is due
    /// `i * period` after it.
    origin: Instant,
    clock: Clock,
}

impl Pacer {
    /// `n` ticks, `rate` per second, the first at once. The i-th tick is due `i / rate`
    /// seconds after the first, however late the ones before it came: a late tick does not
    /// delay the rest, and a sender that falls behind gets the ticks it missed at once.
    /// Called within a tokio runtime.
    pub(crate) fn start(rate: u64, n: u64) -> std::io::Result<Pacer> {
        // Read together with the timer's clock (`Clock::start`): on Linux `Instant` reads
        // that same clock (`CLOCK_MONOTONIC`), so the two origins are nanoseconds apart.
        let origin = Instant::now();
        Ok(Pacer {
            period: Duration::from_secs_f64(1.0 / rate.max(1) as f64),
            given: 0,
            n,
            origin,
            clock: Clock::start()?,
        })
    }

    /// Waits for the next tick and returns when its message counts as sent: its due time for
    /// a tick that was due already (the sender missed it: see the module's docs), else when
    /// the timer woke the task. `None` once all `n` have been given.
    pub(crate) async fn tick(&mut self) -> std::io::Result<Option<Instant>> {
        if self.given == self.n {
            return Ok(None);
        }
        let offset = self.period.mul_f64(self.given as f64);
        self.given += 1;
        let due = self.origin + offset;
        Ok(Some(if self.clock.wait_until(offset).await? {
            Instant::now().max(due)
        } else {
            due
        }))
    }
}

/// A monotonic clock started with the pacer, and a way to wait until an offset from its start.
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Clock {
    start: Duration,
    timer: tokio::io::unix::AsyncFd<Timer>,
}

/// A `timerfd`, as tokio's reactor takes it (by raw descriptor).
#[cfg(target_os = "linux")]
#[derive(Debug)]
struct Timer(nix::sys::timerfd::TimerFd);

#[cfg(target_os = "linux")]
impl std::os::fd::AsRawFd for Timer {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

#[cfg(target_os = "linux")]
impl Clock {
    fn start() -> std::io::Result<Clock> {
        use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
        let start = now()?;
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        // `AsyncFd::new` is deprecated for descriptors that safe code could close while they
        // are registered (a bare `RawFd`); this one is owned by the `AsyncFd` and closed only
        // when it is dropped, after the reactor let go of it: `register`'s safety contract,
        // which holds as long as this module only reaches the timer through `get_ref` (never
        // `get_mut` or `into_inner`). `register` itself is `unsafe`, which this crate does not
        // allow.
        #[allow(deprecated)]
        let timer = tokio::io::unix::AsyncFd::new(Timer(timer))?;
        Ok(Clock { start, timer })
    }

    /// Waits until `offset` after the start; whether it had to wait (`false`: it was due).
    async fn wait_until(&mut self, offset: Duration) -> std::io::Result<bool> {
        use nix::sys::time::TimeSpec;
        use nix::sys::timerfd::{Expiration, TimerSetTimeFlags};
        let due = self.start + offset;
        if due <= now()? {
            return Ok(false);
        }
        self.timer.get_ref().0.set(
            Expiration::OneShot(TimeSpec::from_duration(due)),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        )?;
        loop {
            let mut ready = self.timer.readable().await?;
            // Not expired yet (a wake-up left over from before): `EAGAIN`, cleared by `try_io`.
            match ready.try_io(|timer| timer.get_ref().0.wait().map_err(std::io::Error::from)) {
                Ok(expired) => return expired.map(|()| true),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The monotonic clock the timer counts in (`CLOCK_MONOTONIC`).
#[cfg(target_os = "linux")]
fn now() -> std::io::Result<Duration> {
    Ok(super::cpu::clock(nix::time::ClockId::CLOCK_MONOTONIC)?)
}

/// Elsewhere: tokio's timer, whose deadlines fall on whole milliseconds.
#[cfg(not(target_os = "linux"))]
#[derive(Debug)]
struct Clock {
    start: tokio::time::Instant,
}

#[cfg(not(target_os = "linux"))]
impl Clock {
    fn start() -> std::io::Result<Clock> {
        Ok(Clock {
            start: tokio::time::Instant::now(),
        })
    }

    async fn wait_until(&mut self, offset: Duration) -> std::io::Result<bool> {
        let due = self.start + offset;
        // A tick already due comes at once, as on Linux (tokio's timer would first wait for
        // its next turn).
        if due > tokio::time::Instant::now() {
            tokio::time::sleep_until(due).await;
            return Ok(true);
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Ticks are never early, and they come one at a time: at 2,000 a second, tokio's timer
    /// gave two at once every millisecond (half its gaps ~0); here three in four gaps are at
    /// least 150 us. A tick that comes late on a loaded machine (a CI run of every test
    /// binary at once) is followed by a short gap, by design, so the spacing gets three
    /// tries; tokio's pairs fail every one of them. Earliness fails at once.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn ticks_come_one_at_a_time_and_never_early() {
        let period = Duration::from_micros(500);
        let mut quarters = Vec::new();
        for _ in 0..3 {
            let begun = Instant::now();
            let mut pacer = Pacer::start(2_000, 200).unwrap();
            let mut times = Vec::new();
            while pacer.tick().await.unwrap().is_some() {
                times.push(Instant::now());
            }
            assert_eq!(times.len(), 200);
            for (i, at) in times.iter().enumerate() {
                let due = begun + period * i as u32;
                assert!(*at >= due, "tick {i} came {:?} early", due - *at);
            }
            let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
            gaps.sort();
            let quarter = gaps[gaps.len() / 4];
            if quarter >= Duration::from_micros(150) {
                return;
            }
            quarters.push(quarter);
        }
        panic!("in each of three runs a quarter of the gaps were short: {quarters:?}");
    }

    /// A sender that falls behind gets the ticks it missed at once (each of the 19 ready when
    /// first asked for, where waiting a period for each would take 19 ms), then the rate again.
    #[tokio::test]
    async fn missed_ticks_come_at_once() {
        use futures::FutureExt;
        let begun = Instant::now();
        let mut pacer = Pacer::start(1_000, 30).unwrap();
        assert!(pacer.tick().await.unwrap().is_some());
        std::thread::sleep(Duration::from_millis(20));
        for missed in 1..20 {
            let tick = pacer.tick().now_or_never();
            assert!(tick
                .unwrap_or_else(|| panic!("missed tick {missed} had to be waited for"))
                .unwrap()
                .is_some());
        }
        for _ in 0..10 {
            assert!(pacer.tick().await.unwrap().is_some());
        }
        // The last tick is due 29 ms after the first.
        assert!(begun.elapsed() >= Duration::from_millis(29));
        assert_eq!(pacer.tick().await.unwrap(), None);
    }

    /// A tick given late says when it was due, not when it came: each missed tick is due one
    /// period after the one before, however long ago, so that a latency timed from it counts
    /// the time the sender was held up (coordinated omission).
    #[tokio::test]
    async fn a_late_tick_reports_its_due_time() {
        use futures::FutureExt;
        let mut pacer = Pacer::start(1_000, 10).unwrap();
        let first = pacer.tick().await.unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let asked = Instant::now();
        for i in 1..10u32 {
            let due = pacer
                .tick()
                .now_or_never()
                .expect("a missed tick comes at once")
                .unwrap()
                .unwrap();
            let after = due - first;
            let want = Duration::from_millis(1) * i;
            assert!(
                after.abs_diff(want) < Duration::from_micros(1),
                "tick {i} is due {after:?} after the first"
            );
            assert!(
                asked - due >= Duration::from_millis(10),
                "tick {i} was due {:?} before it was asked for",
                asked - due
            );
        }
        assert!(first <= Instant::now());
    }

    /// A tick the pacer waited for counts from when it came, not from its due time: how late
    /// the timer woke the task is the host's, not the measured system's.
    #[tokio::test]
    async fn a_tick_waited_for_counts_from_when_it_came() {
        // Long enough that the second tick is waited for even on a loaded machine (a tick
        // already due when asked for counts from its due time, exactly).
        let period = Duration::from_millis(200);
        let mut pacer = Pacer::start(5, 2).unwrap();
        let first = pacer.tick().await.unwrap().unwrap();
        let second = pacer.tick().await.unwrap().unwrap();
        let came = Instant::now();
        assert!(
            second > first + period,
            "stamped with its due time, not its wake-up"
        );
        assert!(second <= came);
    }
}
