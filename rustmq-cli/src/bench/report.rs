//! One result line: throughput, latency percentiles, and the ratio to the raw-QUIC baseline.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::cpu::CpuUse;

/// Latencies in microseconds, 1 µs to 60 s at 3 significant digits.
#[derive(Debug)]
pub(crate) struct Latency(Histogram<u64>);

impl Latency {
    pub(crate) fn new() -> Self {
        Self(
            Histogram::new_with_bounds(1, 60_000_000, 3)
                .expect("static histogram bounds are valid"),
        )
    }

    pub(crate) fn record(&mut self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 60_000_000);
        self.0.saturating_record(us);
    }

    pub(crate) fn len(&self) -> u64 {
        self.0.len()
    }

    pub(crate) fn quantile_us(&self, q: f64) -> u64 {
        self.0.value_at_quantile(q)
    }

    fn percentiles(&self) -> Percentiles {
        Percentiles {
            p50_us: self.0.value_at_quantile(0.50),
            p99_us: self.0.value_at_quantile(0.99),
            p999_us: self.0.value_at_quantile(0.999),
            max_us: self.0.max(),
        }
    }
}

/// What the baseline measured, for the ratios.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Baseline {
    /// Bulk transfer over one QUIC stream, MB/s (10^6 bytes).
    pub(crate) bulk_mb_per_s: f64,
    /// Round trip of a 100-byte frame, median.
    pub(crate) rtt_p50_us: u64,
    /// Round trip of a 100-byte frame, 99th percentile.
    pub(crate) rtt_p99_us: u64,
    /// Round trip of a 100-byte frame on a new stream per request, median.
    pub(crate) stream_rtt_p50_us: u64,
    /// Same, 99th percentile.
    pub(crate) stream_rtt_p99_us: u64,
    /// Round trip on a new stream per request at W4's pace, median.
    pub(crate) paced_rtt_p50_us: u64,
    /// Same, 99th percentile.
    pub(crate) paced_rtt_p99_us: u64,
    /// CPU per back-to-back new-stream round trip, microseconds: the client's side (the
    /// process but the server's thread) and the server's thread.
    pub(crate) stream_client_cpu_us: Option<f64>,
    pub(crate) stream_server_cpu_us: Option<f64>,
}

#[derive(Debug, Clone, Copy, Serialize)]
struct Percentiles {
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
}

/// A workload's result.
#[derive(Debug, Serialize)]
pub(crate) struct Report {
    pub(crate) workload: String,
    pub(crate) messages: u64,
    pub(crate) payload_bytes: usize,
    pub(crate) partitions: u32,
    pub(crate) secs: f64,
    pub(crate) msgs_per_s: f64,
    pub(crate) mb_per_s: f64,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    latency: Option<Percentiles>,
    /// CPU time over the run divided by its wall-clock time (1.0: one core busy throughout):
    /// the client (the process but the embedded broker's thread), and the broker's thread.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cpu_busy: Option<f64>,
    /// CPU time per message, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_cpu_us_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_cpu_busy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    broker_cpu_us_per_msg: Option<f64>,
    /// Producer or consumer settings that matter for the figure.
    pub(crate) settings: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_bulk_mb_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mb_per_s_vs_baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_rtt_p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_rtt_p99_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_vs_baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_vs_baseline: Option<f64>,
    /// Paced workloads (W4): the baseline's round trips at the same pace, and the ratios.
    #[serde(skip)]
    paced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_paced_rtt_p50_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    baseline_paced_rtt_p99_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p50_vs_paced: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p99_vs_paced: Option<f64>,
    /// W7: the untyped workload of the same run this compares with (W1 or W3).
    #[serde(skip_serializing_if = "Option::is_none")]
    untyped: Option<String>,
    /// W7: msgs/s as a fraction of `untyped`'s.
    #[serde(skip_serializing_if = "Option::is_none")]
    vs_untyped: Option<f64>,
}

/// `x` rounded to `digits` decimals, as the report's figures are.
pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl Report {
    /// A throughput result; `latency` where it was measured.
    pub(crate) fn new(
        workload: &str,
        messages: u64,
        payload_bytes: usize,
        partitions: u32,
        elapsed: Duration,
        latency: Option<&Latency>,
        settings: String,
    ) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            workload: workload.to_owned(),
            messages,
            payload_bytes,
            partitions,
            secs: round(secs, 3),
            msgs_per_s: round(messages as f64 / secs, 0),
            mb_per_s: round(messages as f64 * payload_bytes as f64 / secs / 1e6, 2),
            latency: latency.filter(|l| l.len() > 0).map(Latency::percentiles),
            client_cpu_busy: None,
            client_cpu_us_per_msg: None,
            broker_cpu_busy: None,
            broker_cpu_us_per_msg: None,
            settings,
            baseline_bulk_mb_per_s: None,
            mb_per_s_vs_baseline: None,
            baseline_rtt_p50_us: None,
            baseline_rtt_p99_us: None,
            p50_vs_baseline: None,
            p99_vs_baseline: None,
            paced: false,
            baseline_paced_rtt_p50_us: None,
            baseline_paced_rtt_p99_us: None,
            p50_vs_paced: None,
            p99_vs_paced: None,
            untyped: None,
            vs_untyped: None,
        }
    }

    /// A throughput result of messages of different sizes, `total_bytes` in all (W7's events,
    /// which grow with their sequence number): `mb_per_s` counts every byte, and
    /// `payload_bytes` is the mean size, rounded.
    pub(crate) fn with_total_bytes(
        workload: &str,
        messages: u64,
        total_bytes: u64,
        partitions: u32,
        elapsed: Duration,
        settings: String,
    ) -> Self {
        let mean = (total_bytes as f64 / messages.max(1) as f64).round() as usize;
        let secs = elapsed.as_secs_f64().max(1e-9);
        Self {
            mb_per_s: round(total_bytes as f64 / secs / 1e6, 2),
            ..Self::new(
                workload, messages, mean, partitions, elapsed, None, settings,
            )
        }
    }

    /// Adds the CPU the run used (where the clocks could be read).
    pub(crate) fn with_cpu(mut self, cpu: Option<CpuUse>) -> Self {
        let Some(cpu) = cpu else { return self };
        let wall = cpu.wall.as_secs_f64().max(1e-9);
        let messages = self.messages.max(1) as f64;
        let busy = |d: Duration| round(d.as_secs_f64() / wall, 3);
        let per_msg = |d: Duration| round(d.as_secs_f64() * 1e6 / messages, 2);
        self.client_cpu_busy = Some(busy(cpu.client));
        self.client_cpu_us_per_msg = Some(per_msg(cpu.client));
        self.broker_cpu_busy = cpu.broker.map(busy);
        self.broker_cpu_us_per_msg = cpu.broker.map(per_msg);
        self
    }

    /// Marks a workload whose messages are paced (W4): its latency is also compared with the
    /// baseline's round trips at the same pace.
    pub(crate) fn paced(mut self) -> Self {
        self.paced = true;
        self
    }

    /// Compares a typed run with the untyped `reference` of the same run (W7 against W1/W3).
    pub(crate) fn versus(mut self, reference: Option<&Report>) -> Self {
        if let Some(r) = reference {
            self.untyped = Some(r.workload.clone());
            self.vs_untyped = Some(round(self.msgs_per_s / r.msgs_per_s.max(1e-9), 3));
        }
        self
    }

    /// Adds the ratios to the baseline: throughput against bulk MB/s for every workload, and
    /// latency percentiles against the round trip where latency was measured (a ratio of 2.0
    /// means twice the raw round trip), and for a paced workload against the paced round trip
    /// too.
    pub(crate) fn with_baseline(mut self, b: Option<Baseline>) -> Self {
        let Some(b) = b else { return self };
        self.baseline_bulk_mb_per_s = Some(b.bulk_mb_per_s);
        self.mb_per_s_vs_baseline = Some(round(self.mb_per_s / b.bulk_mb_per_s.max(1e-9), 4));
        if let Some(l) = self.latency {
            let ratio = |ours: u64, raw: u64| round(ours as f64 / raw.max(1) as f64, 2);
            self.baseline_rtt_p50_us = Some(b.rtt_p50_us);
            self.baseline_rtt_p99_us = Some(b.rtt_p99_us);
            self.p50_vs_baseline = Some(ratio(l.p50_us, b.rtt_p50_us));
            self.p99_vs_baseline = Some(ratio(l.p99_us, b.rtt_p99_us));
            if self.paced {
                self.baseline_paced_rtt_p50_us = Some(b.paced_rtt_p50_us);
                self.baseline_paced_rtt_p99_us = Some(b.paced_rtt_p99_us);
                self.p50_vs_paced = Some(ratio(l.p50_us, b.paced_rtt_p50_us));
                self.p99_vs_paced = Some(ratio(l.p99_us, b.paced_rtt_p99_us));
            }
        }
        self
    }

    pub(crate) fn print(&self) {
        println!(
            "{}",
            serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One sample of each whole number of microseconds from 1 to 1,000.
    fn one_to_a_thousand_us() -> Latency {
        let mut l = Latency::new();
        for us in 1..=1000u64 {
            l.record(Duration::from_micros(us));
        }
        l
    }

    #[test]
    fn rates_percentiles_and_ratios() {
        let l = one_to_a_thousand_us();
        let r = Report::new(
            "W",
            1_000_000,
            100,
            1,
            Duration::from_secs(2),
            Some(&l),
            String::new(),
        )
        .with_baseline(Some(Baseline {
            bulk_mb_per_s: 100.0,
            rtt_p50_us: 250,
            rtt_p99_us: 990,
            stream_rtt_p50_us: 300,
            stream_rtt_p99_us: 1200,
            paced_rtt_p50_us: 400,
            paced_rtt_p99_us: 1000,
            stream_client_cpu_us: None,
            stream_server_cpu_us: None,
        }));
        assert_eq!(r.msgs_per_s, 500_000.0);
        assert_eq!(r.mb_per_s, 50.0);
        assert_eq!(r.mb_per_s_vs_baseline, Some(0.5));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["p50_us"], 500);
        assert_eq!(json["max_us"], 1000);
        assert_eq!(json["p50_vs_baseline"], 2.0);
        assert!(json["p999_us"].as_u64().unwrap() >= 999);
        assert!(json.get("p50_vs_paced").is_none(), "not a paced workload");
    }

    #[test]
    fn a_paced_workload_is_also_compared_with_the_paced_round_trip() {
        let l = one_to_a_thousand_us();
        let r = Report::new(
            "W4",
            1_000,
            100,
            1,
            Duration::from_secs(1),
            Some(&l),
            String::new(),
        )
        .paced()
        .with_baseline(Some(Baseline {
            bulk_mb_per_s: 100.0,
            rtt_p50_us: 50,
            rtt_p99_us: 99,
            stream_rtt_p50_us: 60,
            stream_rtt_p99_us: 120,
            paced_rtt_p50_us: 250,
            paced_rtt_p99_us: 495,
            stream_client_cpu_us: None,
            stream_server_cpu_us: None,
        }));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(json["p50_vs_baseline"], 10.0);
        assert_eq!(json["baseline_paced_rtt_p50_us"], 250);
        assert_eq!(json["p50_vs_paced"], 2.0);
        assert_eq!(json["p99_vs_paced"], 2.0);
        assert!(json.get("paced").is_none());
    }

    #[test]
    fn cpu_is_reported_as_busy_fractions_and_per_message() {
        let report = |broker| {
            let r = Report::new(
                "W",
                1_000,
                100,
                1,
                Duration::from_secs(2),
                None,
                String::new(),
            )
            .with_cpu(Some(CpuUse {
                wall: Duration::from_secs(2),
                client: Duration::from_millis(1_500),
                broker,
            }));
            serde_json::to_value(&r).unwrap()
        };
        let json = report(Some(Duration::from_millis(500)));
        assert_eq!(json["client_cpu_busy"], 0.75);
        assert_eq!(json["client_cpu_us_per_msg"], 1500.0);
        assert_eq!(json["broker_cpu_busy"], 0.25);
        assert_eq!(json["broker_cpu_us_per_msg"], 500.0);
        // An external broker: the client's figures only.
        let json = report(None);
        assert_eq!(json["client_cpu_busy"], 0.75);
        assert!(json.get("broker_cpu_busy").is_none());
        // Clocks that could not be read: no CPU fields at all.
        let r =
            Report::new("W", 1, 1, 1, Duration::from_secs(1), None, String::new()).with_cpu(None);
        let json = serde_json::to_value(&r).unwrap();
        assert!(json.get("client_cpu_busy").is_none());
    }

    /// Messages of different sizes: the throughput counts every byte, the size shown is the
    /// mean.
    #[test]
    fn a_total_of_bytes_gives_the_throughput_and_the_mean_size() {
        let r = Report::with_total_bytes(
            "W7",
            1_000,
            101_600,
            1,
            Duration::from_secs(1),
            String::new(),
        );
        assert_eq!(r.payload_bytes, 102);
        assert_eq!(r.mb_per_s, 0.1);
        let r = Report::with_total_bytes(
            "W7",
            1_000_000,
            103_888_890,
            1,
            Duration::from_secs(2),
            String::new(),
        );
        // W7's 1,000,000 JSON events: 99 bytes at seq 0 to 104 from seq 100,000.
        assert_eq!(r.payload_bytes, 104);
        assert_eq!(r.mb_per_s, 51.94);
        assert_eq!(r.msgs_per_s, 500_000.0);
    }

    #[test]
    fn no_latency_fields_without_samples() {
        let r = Report::new(
            "W",
            2_000_000,
            1,
            1,
            Duration::from_secs(1),
            None,
            String::new(),
        )
        .with_baseline(Some(Baseline {
            bulk_mb_per_s: 1.0,
            rtt_p50_us: 1,
            rtt_p99_us: 1,
            stream_rtt_p50_us: 1,
            stream_rtt_p99_us: 1,
            paced_rtt_p50_us: 1,
            paced_rtt_p99_us: 1,
            stream_client_cpu_us: None,
            stream_server_cpu_us: None,
        }));
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert!(json.get("p50_us").is_none());
        assert!(json.get("p50_vs_baseline").is_none());
        assert_eq!(json["mb_per_s_vs_baseline"], 2.0);
    }
}
