//! `rustmq produce`: one message per line of stdin or a file.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use rustmq::{ClientError, Message, ProducerBuilder, ProducerConfig, RustMqClient};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};

use crate::args::{Acks, GlobalArgs, ProduceArgs};
use crate::error::CliError;
use crate::interrupt::Interrupt;
use crate::progress;

/// Outcome of the sends, filled in by their callbacks.
#[derive(Default)]
struct Outcome {
    failed: u64,
    first_error: Option<String>,
}

/// Why the reading stopped.
enum Ended {
    /// The input ended.
    Input,
    /// Ctrl-C.
    Interrupted,
}

pub(crate) async fn run(
    client: &RustMqClient,
    global: &GlobalArgs,
    args: ProduceArgs,
) -> Result<(), CliError> {
    // Before anything is read: a Ctrl-C from now on stops the reading, not the process.
    let interrupt = Interrupt::install()?;
    let (mut input, bar): (Box<dyn AsyncBufRead + Unpin + Send>, _) = match &args.file {
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
            // A batch sent again after a lost answer (a timeout, a dropped connection) is
            // stored once. With acks=none no batch is sent again, and idempotence would send
            // each partition's batches one at a time, waiting for every answer.
            idempotent: args.acks != Acks::None,
            ..ProducerConfig::default()
        })
        .build()
        .await?;
    let max_message = producer.config().max_message_size;
    // The longest line, its "\r\n" included, that can still make a message: the payload and
    // key (the separator is not sent) of at most `max_message` bytes.
    let max_line = max_message + args.key_separator.as_ref().map_or(0, String::len) + 2;
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut sent = 0u64;
    // The lines before a bad one (unreadable, too long, or a message the producer refuses)
    // are still sent: the producer is closed, sending what it holds, whatever ended the input.
    let read = async {
        let mut buf = Vec::new();
        let mut number = 0u64;
        loop {
            // Ctrl-C first: a fast input must not keep it waiting.
            let more = tokio::select! {
                biased;
                () = interrupt.wait() => return Ok(Ended::Interrupted),
                more = read_line(&mut input, &mut buf, max_line) => {
                    more.map_err(|e| CliError::io("cannot read input", e))?
                }
            };
            if !more {
                return Ok(Ended::Input);
            }
            number += 1;
            if let Some(bar) = &bar {
                bar.inc(buf.len() as u64);
            }
            if buf.len() > max_line {
                return Err(CliError::LineTooLong {
                    line: number,
                    max: max_message,
                });
            }
            let line = Bytes::from(std::mem::take(&mut buf));
            let in_line = |source| CliError::Line {
                line: number,
                source,
            };
            let message = message(&args, line).map_err(in_line)?;
            let outcome = Arc::clone(&outcome);
            producer
                .send_async_with(message, move |result| {
                    if let Err(e) = result {
                        let mut o = outcome.lock();
                        o.failed += 1;
                        o.first_error.get_or_insert_with(|| e.to_string());
                    }
                })
                .await
                .map_err(in_line)?;
            sent += 1;
        }
    }
    .await;
    let closed = producer.close().await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // With acks=none the sends resolve before the broker answers: its refusals are only
    // counted (close() waited for every answer).
    let refused = producer
        .metrics()
        .await
        .messages_failed
        .load(Ordering::Acquire);
    let outcome = outcome.lock();
    let failed = outcome.failed.max(refused);
    let failure = || {
        match &outcome.first_error {
        Some(first) => format!("{failed} of {sent} messages failed; first error: {first}"),
        None => format!(
            "the broker refused {failed} of {sent} message(s) (acks=none: the warnings above say why)"
        ),
    }
    };
    let ended = match read {
        Ok(ended) => ended,
        Err(e) => {
            eprintln!(
                "produced {} message(s) to {} before the error",
                sent.saturating_sub(failed),
                args.topic
            );
            if failed > 0 {
                eprintln!("{}", failure());
            }
            if let Err(closing) = closed {
                eprintln!("closing the producer failed too: {closing}");
            }
            return Err(e);
        }
    };
    if failed > 0 {
        return Err(CliError::Failed(failure()));
    }
    closed?;
    eprintln!("produced {sent} message(s) to {}", args.topic);
    match ended {
        Ended::Input => Ok(()),
        Ended::Interrupted => Err(CliError::Interrupted(
            "interrupted (Ctrl-C) before the end of the input: the lines read were sent".into(),
        )),
    }
}

/// Reads the next line into `buf` (emptied first), its "\n" included; `Ok(false)` at the end
/// of the input. At most `max_line + 1` bytes are read: a longer line is not read whole.
async fn read_line<R: AsyncBufRead + Unpin + ?Sized>(
    input: &mut R,
    buf: &mut Vec<u8>,
    max_line: usize,
) -> std::io::Result<bool> {
    buf.clear();
    let limit = u64::try_from(max_line)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let n = (&mut *input).take(limit).read_until(b'\n', buf).await?;
    Ok(n > 0)
}

/// The message of one line (its "\n" or "\r\n" still there): the line's bytes, split into key
/// and payload at the first --key-separator.
fn message(args: &ProduceArgs, mut line: Bytes) -> Result<Message, ClientError> {
    if line.ends_with(b"\n") {
        line.truncate(line.len() - 1);
        if line.ends_with(b"\r") {
            line.truncate(line.len() - 1);
        }
    }
    let (key, payload) = match &args.key_separator {
        Some(sep) => {
            let sep = sep.as_bytes();
            match line.windows(sep.len()).position(|w| w == sep) {
                Some(at) => (Some(line.slice(..at)), line.slice(at + sep.len()..)),
                None => (None, line),
            }
        }
        None => (args.key.as_ref().map(|k| Bytes::from(k.clone())), line),
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
    builder.build()
}
