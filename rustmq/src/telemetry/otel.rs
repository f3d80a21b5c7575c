//! OpenTelemetry glue (feature `opentelemetry`): W3C trace context between `tracing` spans
//! (through `tracing-opentelemetry`) and message headers.
//!
//! The producer calls [`inject`] on every message it accepts, and [`TraceLayer`](crate::TraceLayer)
//! calls [`set_parent_from_headers`] on its `handle` span. A consumer loop that does not use
//! the typed layer can call the latter on its own span:
//!
//! ```no_run
//! # async fn demo(consumer: rustmq::Consumer) -> rustmq::Result<()> {
//! while let Some(delivery) = consumer.receive().await? {
//!     let span = tracing::info_span!("process", offset = delivery.message.offset);
//!     rustmq::telemetry::otel::set_parent_from_headers(&span, &delivery.message.headers);
//!     // ... work inside `span` ...
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! Nothing here installs a subscriber, a tracer provider or a propagator: the application sets
//! up `tracing-opentelemetry` as it likes; without it both functions do nothing.

use std::collections::HashMap;
use std::str::FromStr;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use opentelemetry::Context;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::registry::LookupSpan;

use super::trace_context::{valid_tracestate, TraceParent, TRACEPARENT_HEADER, TRACESTATE_HEADER};

/// Writes the current span's trace context into `headers` as `traceparent` (and `tracestate`
/// when there is one). The current span wins over a header already present, so that a message
/// forwarded from inside a handler continues the handler's trace. A current span that
/// OpenTelemetry does not track (a per-layer filter leaves it out while another layer keeps
/// it) passes on the context of its nearest ancestor that it does, as that span's children
/// would. Does nothing outside an OpenTelemetry-tracked span.
pub fn inject(headers: &mut HashMap<String, String>) {
    let Some(cx) = tracked_context() else {
        return;
    };
    let span = cx.span();
    let sc = span.span_context();
    let parent = TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    };
    headers.insert(TRACEPARENT_HEADER.to_owned(), parent.to_string());
    let state = sc.trace_state().header();
    if state.is_empty() {
        headers.remove(TRACESTATE_HEADER);
    } else {
        headers.insert(TRACESTATE_HEADER.to_owned(), state);
    }
}

/// The OpenTelemetry context of the current span, or of its nearest ancestor that
/// OpenTelemetry tracks; `None` when there is none (or OpenTelemetry has no entered span on
/// this thread).
fn tracked_context() -> Option<Context> {
    let valid = |cx: &Context| cx.span().span_context().is_valid();
    let current = tracing::Span::current();
    let cx = current.context();
    if valid(&cx) {
        return Some(cx);
    }
    // A span that OpenTelemetry tracks, once entered, is the thread's current OpenTelemetry
    // context (tracing-opentelemetry's context activation, on by default): without one there
    // is no ancestor to find, and no OpenTelemetry at all costs one thread-local read here,
    // not a walk up the spans. (With activation turned off, this fallback is lost.)
    if !Context::map_current(|cx| cx.has_active_span()) {
        return None;
    }
    current
        .with_subscriber(|(id, dispatch)| {
            // `tracing-opentelemetry` sits on a registry (it needs one to keep its data):
            // its parents, unfiltered, are the registry's.
            let registry = dispatch.downcast_ref::<tracing_subscriber::Registry>()?;
            let span = registry.span(id)?;
            span.scope().skip(1).find_map(|ancestor| {
                tracing_opentelemetry::get_otel_context(&ancestor.id(), dispatch).filter(valid)
            })
        })
        .flatten()
}

/// Makes the span described by the `traceparent` header (if any, and well formed) the parent
/// of `span`. Call it before `span` is first entered.
pub fn set_parent_from_headers(span: &tracing::Span, headers: &HashMap<String, String>) {
    let Some(parent) = headers
        .get(TRACEPARENT_HEADER)
        .and_then(|h| TraceParent::parse(h))
    else {
        return;
    };
    // Checked here, not only by `TraceState`'s parser, which takes duplicate keys, control
    // characters and ~16 KB: what is taken is copied into every message sent downstream.
    let state = headers
        .get(TRACESTATE_HEADER)
        .filter(|s| valid_tracestate(s))
        .and_then(|s| TraceState::from_str(s).ok())
        .unwrap_or_default();
    let remote = SpanContext::new(
        TraceId::from_bytes(parent.trace_id),
        SpanId::from_bytes(parent.span_id),
        TraceFlags::new(parent.flags),
        true,
        state,
    );
    if let Err(e) = span.set_parent(Context::new().with_remote_span_context(remote)) {
        tracing::trace!(error = %e, "cannot set the parent of a handle span");
    }
}
