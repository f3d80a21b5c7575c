//! `rustmq broker` as a process (with its Prometheus endpoint) and `rustmq bench`.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{rustmq, Run};

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
        ("W7-produce", 2000, 99, 1),
        ("W7-consume", 2000, 99, 1),
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
