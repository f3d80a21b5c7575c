//! Units of work and the one failure path all modes share.
//!
//! A unit is one message (individual mode), one batch, one window, or one late message. Each
//! goes through the same steps:
//!
//! ```text
//!  attempt: process / process_batch under processing_timeout (a panic is an error)
//!     ok ──► outputs (to output_topic) ──► sink ──► stored ──► finish: inputs released
//!     error ──► on_error(each member) ──► strategy:
//!         Retry: again after backoff·2^(n-1) while attempts remain (not for decode errors)
//!         Skip (or retries exhausted): finish without outputs
//!         DeadLetter: every member to the dead-letter topic, one record batch, with the
//!                     error, attempts and the unit's member list in headers ──► finish
//!         Stop: the unit stays unfinished (not committed); the session drains and stops
//!  once a unit failed under Stop (this one or another): a unit not yet emitted is given up
//!  unfinished (not processed, or its outputs dropped), so nothing after the failure is
//!  written; it is read again at the next start
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::time::Instant;

use super::claims::{extent, source_headers, Extent, SRC_LATE, SRC_PREFIX};
use super::config::{ErrorStrategy, LatePolicy};
use super::fetch::InFlight;
use super::ledger::Coverage;
use super::metrics::StreamMetrics;
use super::session::Ctx;
use super::sink::Sink;
use super::window::Span;
use super::Tp;
use crate::consumer::{
    DLQ_ATTEMPTS, DLQ_ERROR, DLQ_ORIGINAL_OFFSET, DLQ_ORIGINAL_PARTITION, DLQ_ORIGINAL_TOPIC,
};
use crate::error::{ClientError, Result};
use crate::message::{Message, TopicName};

/// Header on dead-letter records: `failed` (processing failed) or `late` (after its window).
pub const DLQ_KIND: &str = crate::typed::layers::DLQ_HEADER_KIND;
/// Header on dead-letter records: `message`, `batch`, `window:<start>-<end>` or `late`.
pub const DLQ_UNIT: &str = "rustmq.dlq.unit";
/// Header on dead-letter records: every member of the failed unit, as
/// `topic:partition:first-last` runs of consecutive offsets, comma separated.
pub const DLQ_UNIT_MEMBERS: &str = "rustmq.dlq.unit-members";

/// What kind of unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Single,
    Batch,
    Window(Span),
    Late,
}

/// Messages processed (or dead-lettered) together.
#[derive(Debug)]
pub(crate) struct Unit {
    pub(crate) kind: Kind,
    pub(crate) tps: Vec<Tp>,
    pub(crate) messages: Vec<Message>,
    pub(crate) permits: Vec<InFlight>,
}

impl Unit {
    fn extent(&self) -> Extent {
        extent(self.tps.iter().zip(self.messages.iter().map(|m| m.offset)))
    }

    fn coverage(&self, extent: &Extent) -> Coverage {
        match self.kind {
            Kind::Window((_, end)) => Coverage::Window(end),
            _ => Coverage::Members(
                extent
                    .iter()
                    .map(|(tp, (_, last))| (tp.clone(), *last))
                    .collect(),
            ),
        }
    }

    fn label(&self) -> String {
        match self.kind {
            Kind::Single => "message".into(),
            Kind::Batch => "batch".into(),
            Kind::Window((s, e)) => format!("window:{s}-{e}"),
            Kind::Late => "late".into(),
        }
    }

    /// The members as runs of consecutive offsets: `topic:partition:first-last,...`.
    fn member_list(&self) -> String {
        let mut positions: Vec<(&Tp, u64)> = self
            .tps
            .iter()
            .zip(self.messages.iter().map(|m| m.offset))
            .collect();
        positions.sort();
        let mut runs: Vec<(&Tp, u64, u64)> = Vec::new();
        for (tp, o) in positions {
            match runs.last_mut() {
                Some(r) if r.0 == tp && r.2 + 1 == o => r.2 = o,
                _ => runs.push((tp, o, o)),
            }
        }
        runs.iter()
            .map(|(tp, a, b)| format!("{}:{}:{a}-{b}", tp.topic, tp.partition))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Releases the unit's inputs in the ledger: they are finished.
fn finish(ctx: &Ctx, unit: Unit) {
    {
        let mut ledger = ctx.ledger.lock();
        let members = unit.tps.iter().zip(&unit.messages);
        if let Kind::Window((_, end)) = unit.kind {
            let members = members.map(|(tp, m)| (tp.clone(), m.offset)).collect();
            ledger.window_done(end, members);
        } else {
            for (tp, m) in members {
                ledger.adjust(tp, m.offset, -1);
            }
        }
    }
    drop(unit.permits);
    ctx.unit_finished();
}

/// Gives the unit up unfinished (not committed): the stream failed.
fn give_up(ctx: &Ctx, unit: Unit) {
    drop(unit);
    ctx.unit_finished();
}

/// Runs a callback of the user's processor; a panic in it is an error (as a server built on
/// tower catches a handler's panic), so that it goes through the error strategy rather than
/// kill the worker.
async fn guarded<T>(callback: &str, call: impl Future<Output = Result<T>>) -> Result<T> {
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => Err(ClientError::InvalidMessage(format!(
            "the stream processor's {callback} panicked: {}",
            crate::error::panic_message(&*panic)
        ))),
    }
}

/// `timeout` after `start` (far off for `Duration::MAX`: no limit).
fn deadline_after(start: Instant, timeout: Duration) -> Instant {
    Instant::from_std(crate::transport::deadline_after(start.into_std(), timeout))
}

/// [`guarded`], given up at `deadline`: a call still running then fails with a timeout of
/// `timeout` (what the deadline was set from).
async fn guarded_until<T>(
    callback: &str,
    call: impl Future<Output = Result<T>>,
    deadline: Instant,
    timeout: Duration,
) -> Result<T> {
    tokio::time::timeout_at(deadline, guarded(callback, call))
        .await
        .unwrap_or_else(|_| Err(ClientError::timeout(timeout)))
}

/// Runs the processor on the unit once, bounded by the processing timeout.
async fn attempt(ctx: &Ctx, unit: &Unit) -> Result<Vec<Message>> {
    let started = Instant::now();
    let callback = match unit.kind {
        Kind::Single => "process",
        _ => "process_batch",
    };
    let call = async {
        match unit.kind {
            Kind::Single => Ok(ctx
                .processor
                .process(&unit.messages[0])
                .await?
                .into_iter()
                .collect()),
            _ => Ok(ctx
                .processor
                .process_batch(&unit.messages)
                .await?
                .into_iter()
                .flatten()
                .collect()),
        }
    };
    let timeout = ctx.config.processing_timeout;
    let deadline = deadline_after(started, timeout);
    let result = guarded_until(callback, call, deadline, timeout).await;
    ctx.metrics.record_call(started.elapsed());
    result
}

/// Sets the output topic and, for exactly-once, checks that the outputs go to one topic (they
/// are stored as one record batch: [`Sink::unstorable`] checks its size) and sets the source
/// headers.
fn prepare_outputs(
    ctx: &Ctx,
    unit: &Unit,
    extent: &Extent,
    mut outputs: Vec<Message>,
) -> Result<Vec<Message>> {
    if let Some(topic) = &ctx.config.output_topic {
        let topic = TopicName::from(topic);
        for m in &mut outputs {
            m.topic = topic.clone();
        }
    }
    if ctx.config.exactly_once {
        if let Some(first) = outputs.first().map(|m| m.topic.clone()) {
            if outputs.iter().any(|m| m.topic != first) {
                return Err(ClientError::InvalidMessage(
                    "an exactly-once stream's outputs of one unit must all go to one topic".into(),
                ));
            }
        }
        let window = match unit.kind {
            Kind::Window(span) => Some(span),
            _ => None,
        };
        let headers = source_headers(&ctx.group, extent, window, unit.kind == Kind::Batch);
        for m in &mut outputs {
            set_source_headers(&mut m.headers, &headers);
        }
    }
    Ok(outputs)
}

fn dead_letters(
    ctx: &Ctx,
    unit: &Unit,
    extent: &Extent,
    topic: &str,
    kind: &str,
    error: &str,
    attempts: u32,
) -> Vec<Message> {
    let members = unit.member_list();
    let label = unit.label();
    let source = ctx.config.exactly_once.then(|| {
        let window = match unit.kind {
            Kind::Window(span) => Some(span),
            _ => None,
        };
        let mut headers = source_headers(&ctx.group, extent, window, unit.kind == Kind::Batch);
        if unit.kind == Kind::Late {
            // Claims the dead letter, not the message (see `claims`).
            headers.push((SRC_LATE.to_owned(), "1".to_owned()));
        }
        headers
    });
    let topic = TopicName::from(topic);
    unit.messages
        .iter()
        .map(|original| {
            let mut m = original.clone();
            m.topic = topic.clone();
            m.headers.extend([
                (DLQ_ORIGINAL_TOPIC.to_owned(), original.topic.to_string()),
                (
                    DLQ_ORIGINAL_PARTITION.to_owned(),
                    original.partition.to_string(),
                ),
                (DLQ_ORIGINAL_OFFSET.to_owned(), original.offset.to_string()),
                (DLQ_ATTEMPTS.to_owned(), attempts.to_string()),
                (DLQ_ERROR.to_owned(), error.to_owned()),
                (DLQ_KIND.to_owned(), kind.to_owned()),
                (DLQ_UNIT.to_owned(), label.clone()),
                (DLQ_UNIT_MEMBERS.to_owned(), members.clone()),
            ]);
            if let Some(source) = &source {
                set_source_headers(&mut m.headers, source);
            }
            m
        })
        .collect()
}

/// Replaces every source header of an output (copied from its input, which may be an
/// exactly-once stream's output itself) with `source`: a claim read back on a restart must
/// be this stream's whole claim, not one mixed with an upstream stream's ranges or window.
fn set_source_headers(headers: &mut HashMap<String, String>, source: &[(String, String)]) {
    headers.retain(|name, _| !name.starts_with(SRC_PREFIX));
    headers.extend(source.iter().cloned());
}

/// The counter of [`StreamMetrics`] a unit's messages are added to once its records are
/// stored (not before: a unit whose write fails is processed again, and counted then).
type Counter = fn(&StreamMetrics) -> &AtomicU64;

/// Sends `records` through the sink; the unit is finished once they are stored (and its
/// messages added to `counter`). Dead letters of a unit always go together (one partition,
/// one record batch); outputs only for exactly-once.
async fn emit(
    ctx: &Arc<Ctx>,
    unit: Unit,
    records: Vec<Message>,
    coverage: Coverage,
    dead_letters: bool,
    counter: Option<Counter>,
) {
    if ctx.failed() {
        // Nothing after a failure under `ErrorStrategy::Stop` is written.
        give_up(ctx, unit);
        return;
    }
    let fallback = unit.messages.first().map_or(0, |m| m.partition);
    let together = ctx.config.exactly_once || dead_letters;
    let coverage = ctx.config.exactly_once.then_some(coverage);
    let finisher = Arc::clone(ctx);
    let on_done = Box::new(move || {
        if let Some(counter) = counter {
            StreamMetrics::add(counter(&finisher.metrics), unit.messages.len());
        }
        finish(&finisher, unit);
    });
    if let Err(e) = Sink::emit(
        ctx,
        records,
        together,
        dead_letters,
        fallback,
        coverage,
        on_done,
    )
    .await
    {
        // The unit stays unfinished: the session goes down without committing it.
        ctx.abort(e);
    }
}

/// Processes one unit with the stream's error strategy.
pub(crate) async fn run(ctx: &Arc<Ctx>, unit: Unit) {
    if ctx.failed() {
        // A unit failed under `ErrorStrategy::Stop`: this one (queued behind it, or later in
        // its partition) is not processed; it is read again at the next start.
        give_up(ctx, unit);
        return;
    }
    let n = unit.messages.len();
    let extent = unit.extent();
    let coverage = unit.coverage(&extent);
    if unit.kind == Kind::Late {
        if let LatePolicy::DeadLetter { topic } = &ctx.window_options.late_messages {
            let records = dead_letters(
                ctx,
                &unit,
                &extent,
                topic,
                "late",
                "arrived after its window closed",
                0,
            );
            emit(ctx, unit, records, coverage, true, None).await;
        } else {
            finish(ctx, unit);
        }
        return;
    }
    let mut attempts = 0u32;
    let error = loop {
        attempts += 1;
        let result = match attempt(ctx, &unit)
            .await
            .and_then(|outputs| prepare_outputs(ctx, &unit, &extent, outputs))
        {
            Ok(outputs) => match Sink::unstorable(ctx, &outputs).await {
                Some(e) => Err(e),
                None => Ok(outputs),
            },
            Err(e) => Err(e),
        };
        if ctx.failed() {
            // Another unit failed under `ErrorStrategy::Stop` meanwhile.
            give_up(ctx, unit);
            return;
        }
        let error = match result {
            Ok(outputs) => {
                let processed: Counter = |m| &m.messages_processed;
                emit(ctx, unit, outputs, coverage, false, Some(processed)).await;
                return;
            }
            Err(e) => e,
        };
        StreamMetrics::add(&ctx.metrics.processing_errors, 1);
        // The unit's `on_error` calls together are bounded as one processor call is: calls
        // that never end would hold the worker (and a stop waiting for it) for ever; those
        // left at the deadline are not made.
        let timeout = ctx.config.processing_timeout;
        let deadline = deadline_after(Instant::now(), timeout);
        for m in &unit.messages {
            if Instant::now() >= deadline {
                tracing::warn!(unit = %unit.label(), ?timeout, "the unit's on_error calls outlasted the processing timeout: its other members get none");
                break;
            }
            let call = ctx.processor.on_error(m, &error);
            if let Err(e) = guarded_until("on_error", call, deadline, timeout).await {
                tracing::warn!(error = %e, "on_error failed");
            }
        }
        match &ctx.config.error_strategy {
            ErrorStrategy::Retry {
                max_attempts,
                backoff_ms,
            } if attempts < *max_attempts
                && !matches!(error, ClientError::Deserialization(_))
                && !super::processor::is_batches_only(&error) =>
            {
                let delay = Duration::from_millis(
                    backoff_ms.saturating_mul(1u64 << (attempts - 1).min(20)),
                );
                tracing::debug!(unit = %unit.label(), attempts, ?delay, error = %error, "retrying");
                tokio::time::sleep(delay).await;
            }
            _ => break error,
        }
    };
    StreamMetrics::add(&ctx.metrics.messages_failed, n);
    let first = &unit.messages[0];
    tracing::warn!(unit = %unit.label(), topic = %first.topic, partition = first.partition, offset = first.offset, messages = n, attempts, error = %error, "processing failed");
    // A processor implementing only `process_batch`, run one message at a time, would fail
    // every message alike: skipping or dead-lettering them all would lose the topic. The
    // stream stops, as under `Stop`, whatever the strategy.
    let strategy = if super::processor::is_batches_only(&error) {
        &ErrorStrategy::Stop
    } else {
        &ctx.config.error_strategy
    };
    match strategy {
        ErrorStrategy::DeadLetter { topic } => {
            let records = dead_letters(
                ctx,
                &unit,
                &extent,
                topic,
                "failed",
                &error.to_string(),
                attempts,
            );
            let dead_lettered: Counter = |m| &m.messages_dead_lettered;
            emit(ctx, unit, records, coverage, true, Some(dead_lettered)).await;
        }
        ErrorStrategy::Stop => {
            ctx.fail(error);
            ctx.unit_finished();
        }
        ErrorStrategy::Skip | ErrorStrategy::Retry { .. } => {
            StreamMetrics::add(&ctx.metrics.messages_skipped, n);
            finish(ctx, unit);
        }
    }
}
