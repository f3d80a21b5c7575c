//! A typed pipeline: a handler that consumes one topic and produces another.
//!
//! Sensor readings (bincode-encoded) are converted to Fahrenheit; readings above a threshold
//! become `Alert`s on their own topic, others are settled with `Settlement::Skip`. A second
//! handler consumes the alerts. Runs on an embedded broker and stops once every alert arrived.
//!
//! ```text
//! cargo run -p examples --example typed_pipeline
//! ```

use std::sync::Arc;
use std::time::Duration;

use rustmq::prelude::*;
use rustmq::testing::TestBroker;
use rustmq::{handler, Topic};
use tokio::sync::mpsc;

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "readings", key = "sensor", codec = "bincode", partitions = 2)]
struct Reading {
    sensor: String,
    celsius: f64,
}

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "alerts", key = "sensor")]
struct Alert {
    sensor: String,
    fahrenheit: f64,
}

/// Stage one: readings in, alerts out.
#[handler(group = "converter")]
async fn convert(
    reading: Reading,
    alerts: TypedProducer<Alert>,
) -> Result<Settlement, ClientError> {
    let fahrenheit = reading.celsius * 9.0 / 5.0 + 32.0;
    if fahrenheit < 100.0 {
        return Ok(Settlement::Skip);
    }
    alerts
        .send(&Alert {
            sensor: reading.sensor,
            fahrenheit,
        })
        .await?;
    Ok(Settlement::Ack)
}

/// Stage two: alerts are reported to the main task.
#[handler(group = "pager")]
async fn page(alert: Alert, meta: Metadata, State(out): State<Arc<mpsc::UnboundedSender<String>>>) {
    let _ = out.send(format!(
        "{} at {:.1}°F (alerts/{}@{})",
        alert.sensor, alert.fahrenheit, meta.partition, meta.offset
    ));
}

#[tokio::main]
async fn main() -> rustmq::Result<()> {
    // Ctrl-C drops the example, and its embedded broker's directory with it.
    examples::interruptible(run()).await
}

async fn run() -> rustmq::Result<()> {
    let broker = TestBroker::start().await?;
    let client = broker.client().await?;

    let readings = client.producer::<Reading>();
    let mut hot = 0;
    for i in 0..20 {
        let celsius = 20.0 + f64::from(i) * 1.5;
        if celsius * 9.0 / 5.0 + 32.0 >= 100.0 {
            hot += 1;
        }
        readings
            .send(&Reading {
                sensor: format!("sensor-{}", i % 4),
                celsius,
            })
            .await?;
    }

    let (tx, mut rx) = mpsc::unbounded_channel();
    let service = Service::with_state(client.clone(), Arc::new(tx))
        .layer(RetryLayer::exponential(3, Duration::from_millis(50)))
        .layer(DeadLetterLayer::default())
        .handler(convert)
        .handler(page)
        .start()
        .await?;
    let mut alerts = 0;
    for _ in 0..hot {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(line)) => {
                println!("ALERT {line}");
                alerts += 1;
            }
            _ => break,
        }
    }
    service.shutdown().await?;
    println!("{hot} of 20 readings were hot");
    client.close().await?;
    if alerts < hot {
        return Err(examples::incomplete(format!(
            "{alerts} of {hot} alerts came within 30 s each"
        )));
    }
    Ok(())
}
