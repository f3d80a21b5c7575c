//! `rustmq produce`: one message per line of stdin or a file.

use std::sync::Arc;

use parking_lot::Mutex;
use rustmq::{Message, ProducerBuilder, ProducerConfig, RustMqClient};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::args::{GlobalArgs, ProduceArgs};
use crate::error::CliError;
use crate::progress;

/// Outcome of the sends, filled in by their callbacks.
#[derive(Default)]
struct Outcome {
    failed: u64,
    first_error: Option<String>,
}

pub(crate) async fn run(
    client: &RustMqClient,
    global: &GlobalArgs,
    args: ProduceArgs,
) -> Result<(), CliError> {
    let (input, bar): (Box<dyn AsyncBufRead + Unpin + Send>, _) = match &args.file {
        Some(path) => {
            let file = tokio::fs::File::open(path)
                .await
                .map_err(|e| CliError::io(format!("cannot open {}", path.display()), e))?;
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            (
                Box::new(BufReader::new(file)),
                Some(progress::bytes_bar(global.quiet, len, "producing")),
            )
        }
        None => (Box::new(BufReader::new(tokio::io::stdin())), None),
    };
    let producer = ProducerBuilder::new()
        .topic(&args.topic)
        .client(client.clone())
        .config(ProducerConfig {
            ack_level: args.acks.into(),
            compression: client.config().compression.clone(),
            ..ProducerConfig::default()
        })
        .build()
        .await?;
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut sent = 0u64;
    // The lines before a bad one (unreadable, or a message the producer refuses) are still
    // sent: the producer is closed, sending what it holds, whatever ended the input.
    let read = async {
        let mut lines = input.lines();
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| CliError::io("cannot read input", e))?
        {
            if let Some(bar) = &bar {
                bar.inc(line.len() as u64 + 1);
            }
            let message = message(&args, line)?;
            let outcome = Arc::clone(&outcome);
            producer
                .send_async_with(message, move |result| {
                    if let Err(e) = result {
                        let mut o = outcome.lock();
                        o.failed += 1;
                        o.first_error.get_or_insert_with(|| e.to_string());
                    }
                })
                .await?;
            sent += 1;
        }
        Ok::<(), CliError>(())
    }
    .await;
    let closed = producer.close().await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let outcome = outcome.lock();
    if let Err(e) = read {
        eprintln!(
            "produced {} message(s) to {} before the error",
            sent.saturating_sub(outcome.failed),
            args.topic
        );
        if let Some(first) = &outcome.first_error {
            eprintln!("{} of them failed; first error: {first}", outcome.failed);
        }
        if let Err(closing) = closed {
            eprintln!("closing the producer failed too: {closing}");
        }
        return Err(e);
    }
    if outcome.failed > 0 {
        return Err(CliError::Failed(format!(
            "{} of {sent} messages failed; first error: {}",
            outcome.failed,
            outcome.first_error.as_deref().unwrap_or("unknown")
        )));
    }
    closed?;
    eprintln!("produced {sent} message(s) to {}", args.topic);
    Ok(())
}

fn message(args: &ProduceArgs, line: String) -> Result<Message, CliError> {
    let (key, payload) = match &args.key_separator {
        Some(sep) => match line.split_once(sep.as_str()) {
            Some((k, v)) => (Some(k.to_owned()), v.to_owned()),
            None => (None, line),
        },
        None => (args.key.clone(), line),
    };
    let mut builder = Message::builder()
        .topic(&args.topic)
        .payload(payload)
        .headers(args.headers.iter().cloned());
    if let Some(key) = key {
        builder = builder.key(key);
    }
    if let Some(p) = args.partition {
        builder = builder.partition(p);
    }
    Ok(builder.build()?)
}
