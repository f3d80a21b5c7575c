//! `rustmq broker` as a process (with its Prometheus endpoint) and `rustmq bench`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{json_lines, rustmq, Run, TestBroker};

/// A TCP port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(addr: &str) -> String {
    try_http_get(addr).unwrap()
}

fn try_http_get(addr: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body)
}

/// The value of the first sample line starting with `series`.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn broker_command_serves_clients_and_prometheus_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_rustmq"))
        .args([
            "broker",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            &metrics_addr,
            "--data-dir",
        ])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the broker prints where it listens")
            .unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so that the broker never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let cert = dir.path().join("tls").join("cert.pem");
    let connect = |args: &[&str]| {
        let mut all = vec![
            "--broker",
            &addr,
            "--ca-cert",
            cert.to_str().unwrap(),
            "--server-name",
            "localhost",
        ];
        all.extend_from_slice(args);
        Run::new(all.iter().map(|s| (*s).to_owned()).collect())
    };
    connect(&["produce", "metered"])
        .stdin("a\nb\n")
        .output()
        .success();

    let metrics = http_get(&metrics_addr);
    // Idle connections to the endpoint do not take the broker's descriptors: past a few at
    // once, they are closed as they come, and a scrape after they are gone is served.
    let open_files = || {
        std::fs::read_dir(format!("/proc/{}/fd", child.id()))
            .unwrap()
            .count()
    };
    let before = open_files();
    let idle: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&metrics_addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = open_files();
    drop(idle);
    // Served again once the broker has seen the idle ones go (a scrape finding every slot
    // taken is closed unanswered: tried again).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let again = loop {
        let answer = try_http_get(&metrics_addr).unwrap_or_default();
        if answer.starts_with("HTTP/1.1 200") || std::time::Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        during <= before + 16 + 4,
        "{before} open files before 100 idle scrape connections, {during} with them"
    );
    assert!(again.starts_with("HTTP/1.1 200"), "{again}");
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            "rustmq_broker_produce_records_total{topic=\"metered\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "rustmq_broker_requests_total{kind=\"Produce\"}").unwrap_or(0.0) >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("# HELP rustmq_broker_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rustmq_broker_request_duration_seconds_bucket"),
        "{metrics}"
    );
}

#[test]
fn bench_prints_one_json_line_per_workload_with_baseline_ratios() {
    let out = rustmq(&[
        "bench",
        "--workload",
        "all",
        "--messages",
        "2000",
        "--baseline",
        "--quiet",
    ])
    .output()
    .success();
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let names: Vec<&str> = lines
        .iter()
        .map(|l| l["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "baseline",
            "W1",
            "W2",
            "W3",
            "W4",
            "W5",
            "W6",
            "W7-produce",
            "W7-consume"
        ],
        "{out}"
    );
    assert!(lines[0]["bulk_mb_per_s"].as_f64().unwrap() > 0.0);
    // CPU figures where the system has per-thread CPU clocks (Linux), and none elsewhere.
    let linux = cfg!(target_os = "linux");
    for side in ["client", "server"] {
        let cpu = lines[0][format!("stream_{side}_cpu_us")].as_f64();
        assert_eq!(cpu.is_some_and(|us| us > 0.0), linux, "{side} {}", lines[0]);
    }
    let expected = [
        ("W1", 2000, 100, 1),
        ("W2", 400, 1024, 8),
        ("W3", 2000, 100, 1),
        ("W4", 100, 100, 1),
        ("W5", 100, 100, 1),
        ("W6", 2000, 100, 1),
        // The mean size of the events: 99 bytes of JSON for seq 0..10, 100 to 100, 101 to
        // 1000, 102 to 2000.
        ("W7-produce", 2000, 101, 1),
        ("W7-consume", 2000, 101, 1),
    ];
    for (line, (name, messages, bytes, partitions)) in lines[1..].iter().zip(expected) {
        assert_eq!(line["workload"], name);
        assert_eq!(line["messages"], messages, "{line}");
        assert_eq!(line["payload_bytes"], bytes, "{line}");
        assert_eq!(line["partitions"], partitions, "{line}");
        assert!(line["msgs_per_s"].as_f64().unwrap() > 0.0, "{line}");
        assert!(
            line["mb_per_s_vs_baseline"].as_f64().unwrap() > 0.0,
            "{line}"
        );
        // Both sides used CPU (the embedded broker's thread is read on its own).
        for side in ["client", "broker"] {
            let busy = line[format!("{side}_cpu_busy")].as_f64();
            let per_msg = line[format!("{side}_cpu_us_per_msg")].as_f64();
            assert_eq!(busy.is_some_and(|b| b > 0.0), linux, "{side} {line}");
            assert_eq!(per_msg.is_some_and(|us| us > 0.0), linux, "{side} {line}");
        }
        let timed = matches!(name, "W4" | "W5");
        assert_eq!(line.get("p99_us").is_some(), timed, "{line}");
        if timed {
            assert!(line["p50_us"].as_u64().unwrap() <= line["p999_us"].as_u64().unwrap());
            assert!(line["p50_vs_baseline"].as_f64().unwrap() > 0.0);
        }
    }
    assert!(
        lines[6]["settings"].as_str().unwrap().contains("acks=All"),
        "{out}"
    );
    // W7 is reported against the untyped workload of the same run.
    for (line, untyped) in lines[7..].iter().zip(["W1", "W3"]) {
        assert_eq!(line["untyped"], untyped, "{line}");
        assert!(line["vs_untyped"].as_f64().unwrap() > 0.0, "{line}");
    }
}

/// The W7 events' mean size times their rate is the throughput: every event's bytes count,
/// not the first one's.
#[test]
fn w7_throughput_counts_every_events_bytes() {
    let out = rustmq(&["bench", "-w", "W7", "-n", "2000", "--quiet"])
        .output()
        .success();
    let lines = json_lines(&out);
    let w7: Vec<&Value> = lines
        .iter()
        .filter(|l| l["workload"].as_str().unwrap().starts_with("W7"))
        .collect();
    assert_eq!(w7.len(), 2, "{out}");
    for line in w7 {
        // Bytes per message as the throughput counts them (both figures from the same
        // elapsed time): the events' mean, 202,890 / 2,000 = 101.4 (it was the first event's
        // 99). `mb_per_s` has two decimals: a few tenths of a byte either way.
        let mb_per_s = line["mb_per_s"].as_f64().unwrap();
        let msgs_per_s = line["msgs_per_s"].as_f64().unwrap();
        let bytes = mb_per_s * 1e6 / msgs_per_s;
        assert!(
            (100.5..102.5).contains(&bytes),
            "{bytes} bytes a message: {line}"
        );
    }
}

/// The topics in the broker whose names start with `bench`.
fn bench_topics(broker: &TestBroker) -> Vec<String> {
    broker.block_on(async {
        let client = broker.client().await;
        let topics = client.list_topics().await.unwrap();
        let _ = client.close().await;
        topics
            .into_iter()
            .map(|t| t.name)
            .filter(|n| n.starts_with("bench"))
            .collect()
    })
}

/// Against --broker, the topics a run created are deleted when it ends (W3 still reads W1's,
/// within the run); with --keep-topics they stay.
#[test]
fn a_bench_deletes_its_topics_unless_asked_to_keep_them() {
    let broker = TestBroker::start();
    let out = broker
        .rustmq(&["bench", "-w", "W1,W3,W4,W7", "-n", "1000", "--quiet"])
        .output()
        .success();
    let names: Vec<String> = json_lines(&out)
        .iter()
        .map(|l| l["workload"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["W1", "W3", "W4", "W7-produce", "W7-consume"],
        "{out}"
    );
    assert_eq!(bench_topics(&broker), Vec::<String>::new());

    broker
        .rustmq(&[
            "bench",
            "-w",
            "W1,W4",
            "-n",
            "500",
            "--keep-topics",
            "--quiet",
        ])
        .output()
        .success();
    let kept = bench_topics(&broker);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(kept.iter().any(|t| t.starts_with("bench-w1-")), "{kept:?}");
    assert!(kept.iter().any(|t| t.starts_with("bench-w4-")), "{kept:?}");
}

/// `bench e2e --rate R --baseline` compares its latency with the baseline's round trips at
/// R per second, not at W4's pace.
#[test]
fn an_e2e_run_is_compared_with_a_baseline_at_its_own_pace() {
    let out = rustmq(&[
        "bench",
        "e2e",
        "-n",
        "200",
        "--rate",
        "1000",
        "--baseline",
        "--quiet",
    ])
    .output()
    .success();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["workload"], "baseline");
    assert_eq!(lines[0]["paced_per_s"], 1000, "{out}");
    let e2e = &lines[1];
    assert_eq!(e2e["workload"], "e2e");
    assert_eq!(e2e["messages"], 200);
    assert_eq!(
        e2e["baseline_paced_rtt_p50_us"], lines[0]["paced_rtt_p50_us"],
        "{out}"
    );
    assert!(e2e["p50_vs_paced"].as_f64().unwrap() > 0.0, "{out}");
}

/// The entries of `dir`, by name.
fn entries(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits (up to 60 s) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A bench run that Ctrl-C stops exits with 130 and leaves nothing in the temporary
/// directory: the embedded broker's data (hundreds of MB on a default run) and the
/// baseline's certificate are removed.
fn interrupted_bench_leaves_nothing(args: &[&str], running: impl Fn(&std::path::Path) -> bool) {
    let tmp = tempfile::tempdir().unwrap();
    let mut all = vec!["bench", "--quiet"];
    all.extend_from_slice(args);
    let run = rustmq(&all).env("TMPDIR", tmp.path()).spawn();
    wait_until("the run is under way", || running(tmp.path()));
    run.interrupt();
    let done = run.wait(Duration::from_secs(60));
    let err = done.failure(130);
    assert!(err.contains("interrupted"), "{err}");
    assert_eq!(entries(tmp.path()), Vec::<String>::new(), "{err}");
}

#[test]
fn ctrl_c_during_a_workload_removes_the_brokers_data() {
    // W4 at 2,000 a second: 100,000 messages take 50 s.
    interrupted_bench_leaves_nothing(&["-w", "W4", "-n", "10000000"], |tmp| {
        entries(tmp).iter().any(|d| {
            let topics = tmp.join(d).join("topics");
            topics.is_dir() && entries(&topics).iter().any(|t| t.starts_with("bench-w4-"))
        })
    });
}

#[test]
fn ctrl_c_during_the_baseline_removes_its_certificate_and_the_brokers_data() {
    // The baseline (a GiB over one stream, then 100,000 round trips) runs while the broker's
    // directory and the baseline's both exist.
    interrupted_bench_leaves_nothing(&["-w", "W1", "-n", "10000000", "--baseline"], |tmp| {
        entries(tmp).len() >= 2
    });
}
