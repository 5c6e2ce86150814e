//! The W3C Trace Context `traceparent` a sender may send with an event (an AMQP header, an
//! HTTP header), read as the W3C Recommendation "Trace Context" defines it
//! (https://www.w3.org/TR/trace-context/#traceparent-header and
//! https://www.w3.org/TR/trace-context/#versioning-of-traceparent):
//! `version "-" trace-id "-" parent-id "-" trace-flags`, lower-case hex only, version `ff`
//! invalid, an all-zero trace-id or parent-id invalid; version `00` exactly 55 characters; a
//! later version read by its first 55 characters, which must then end or be followed by `-`.
//! What is kept is the version-00 form (a vendor propagates the version it speaks).
//! A value that breaks a rule is refused whole: the event is processed without a trace.
//!
//! mailboxd's own spans (`span!` with [`SPANS`] as target: intake, a job's attempt, an
//! Exchange batch, an outcome's publication) continue the sender's trace ([`continues`]);
//! they are exported over OTLP when `[telemetry]` says where (`otlp`), and then the outcome
//! carries mailboxd's own span back ([`own`]). Without export they cost a disabled callsite
//! and the outcome carries the sender's `traceparent` as it came.

use std::fmt;

use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The target of the spans that are exported (and of no log line: the log's filter leaves
/// them out, so log lines read as they did).
pub(crate) const SPANS: &str = "mailboxd::spans";

/// The name of the header, in AMQP headers and HTTP alike.
pub(crate) const HEADER: &str = "traceparent";

/// A header longer than this is not read (a version-00 value is 55 characters; later
/// versions may append fields, but not kilobytes).
const MAX_LEN: usize = 512;

/// A valid `traceparent`, in its version-00 form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceParent {
    trace_id: String,
    parent_id: String,
    flags: String,
}

/// Why a `traceparent` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TraceError {
    #[error("over {MAX_LEN} characters")]
    TooLong,
    #[error(
        "not version-trace_id-parent_id-flags in lower-case hex (2-32-16-2 digits, W3C Trace Context)"
    )]
    Format,
    #[error("version ff is invalid (W3C Trace Context)")]
    VersionFf,
    #[error("version 00 is exactly 55 characters")]
    Length,
    #[error("an all-zero trace-id or parent-id is invalid (W3C Trace Context)")]
    Zero,
}

fn lower_hex(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl TraceParent {
    /// Reads a header value (optional white space around it, as HTTP allows).
    pub(crate) fn parse(value: &[u8]) -> Result<TraceParent, TraceError> {
        if value.len() > MAX_LEN {
            return Err(TraceError::TooLong);
        }
        let text = std::str::from_utf8(value).map_err(|_| TraceError::Format)?;
        let text = text.trim_matches([' ', '\t']);
        let version = text.get(..2).ok_or(TraceError::Format)?;
        if !lower_hex(version, 2) {
            return Err(TraceError::Format);
        }
        if version == "ff" {
            return Err(TraceError::VersionFf);
        }
        // Version 00 is exactly 55 characters; a later one may go on after a '-'.
        match (version, text.len()) {
            ("00", 55) => {}
            ("00", _) => return Err(TraceError::Length),
            (_, 55) => {}
            (_, n) if n > 55 && text.as_bytes()[55] == b'-' => {}
            _ => return Err(TraceError::Format),
        }
        let fields: Vec<&str> = text[..55].split('-').collect();
        let [_, trace_id, parent_id, flags] = fields[..] else {
            return Err(TraceError::Format);
        };
        if !(lower_hex(trace_id, 32) && lower_hex(parent_id, 16) && lower_hex(flags, 2)) {
            return Err(TraceError::Format);
        }
        if trace_id.bytes().all(|b| b == b'0') || parent_id.bytes().all(|b| b == b'0') {
            return Err(TraceError::Zero);
        }
        Ok(TraceParent {
            trace_id: trace_id.to_owned(),
            parent_id: parent_id.to_owned(),
            flags: flags.to_owned(),
        })
    }

    /// The trace's id: 32 lower-case hex digits, what a tracing back end searches by.
    pub(crate) fn trace_id(&self) -> &str {
        &self.trace_id
    }

    /// The sender's span, as OpenTelemetry names it (a remote parent).
    fn span_context(&self) -> SpanContext {
        // Checked by `parse`: 32 and 16 lower-case hex digits, not all zero; 2 for the flags.
        let flags = u8::from_str_radix(&self.flags, 16).unwrap_or(0);
        SpanContext::new(
            TraceId::from_hex(&self.trace_id).unwrap_or(TraceId::INVALID),
            SpanId::from_hex(&self.parent_id).unwrap_or(SpanId::INVALID),
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        )
    }

    /// The version-00 value naming `cx`'s span, if it is a valid one.
    fn of(cx: &SpanContext) -> Option<TraceParent> {
        cx.is_valid().then(|| TraceParent {
            trace_id: cx.trace_id().to_string(),
            parent_id: cx.span_id().to_string(),
            flags: format!("{:02x}", cx.trace_flags().to_u8()),
        })
    }
}

/// Makes `span` (not yet entered) a child of the sender's span, when the event came with one.
pub(crate) fn continues(span: &tracing::Span, parent: Option<&TraceParent>) {
    if let Some(p) = parent {
        let cx = opentelemetry::Context::new().with_remote_span_context(p.span_context());
        // Err only when the span is not exported (no `[telemetry]`): nothing to continue.
        let _ = span.set_parent(cx);
    }
}

/// `span`'s own `traceparent` (the trace it continues, its own span id): what mailboxd
/// sends on in its place. `None` when spans are not exported.
pub(crate) fn own(span: &tracing::Span) -> Option<TraceParent> {
    TraceParent::of(&span.context().span().span_context().clone())
}

/// A claimed job's span (one per attempt), carried with the job until its outcome is
/// recorded; none when the job was read for anything else.
#[derive(Debug, Clone)]
pub(crate) struct JobSpan(pub(crate) tracing::Span);

impl Default for JobSpan {
    fn default() -> Self {
        JobSpan(tracing::Span::none())
    }
}

/// Links `from` to `to` (both directions are the caller's choice): a batch runs the jobs of
/// several traces, so it is no child of any of them.
pub(crate) fn link(from: &tracing::Span, to: &tracing::Span) {
    let cx = to.context().span().span_context().clone();
    from.add_link(cx);
}

/// The version-00 header value.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// A header value as it is kept: the valid trace, or `None` with a warning saying why the
/// value was refused (never the value itself, which the sender chose).
pub(crate) fn accept(value: Option<&[u8]>, from: &str) -> Option<TraceParent> {
    match TraceParent::parse(value?) {
        Ok(t) => Some(t),
        Err(why) => {
            tracing::warn!(from = %from, reason = %why, "a traceparent was refused; the event goes on without a trace");
            metrics::counter!("mailboxd_traceparent_refused_total").increment(1);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_is_read_and_kept_as_it_came() {
        let t = TraceParent::parse(GOOD.as_bytes()).unwrap();
        assert_eq!(t.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.to_string(), GOOD);
        assert_eq!(TraceParent::parse(format!(" {GOOD}\t").as_bytes()), Ok(t));
    }

    #[test]
    fn a_later_version_is_read_by_its_first_55_characters_and_kept_as_version_00() {
        let later = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(
            TraceParent::parse(later.as_bytes()).unwrap().to_string(),
            GOOD
        );
        let glued = "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(
            TraceParent::parse(glued.as_bytes()),
            Err(TraceError::Format)
        );
    }

    #[test]
    fn hostile_and_invalid_values_are_refused() {
        let refused = [
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceError::VersionFf,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceError::Format,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceError::Zero,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceError::Zero,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
                TraceError::Length,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
                TraceError::Format,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0\n",
                TraceError::Format,
            ),
            ("0", TraceError::Format),
            ("", TraceError::Format),
            (
                "é0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceError::Format,
            ),
        ];
        for (value, why) in refused {
            assert_eq!(TraceParent::parse(value.as_bytes()), Err(why), "{value:?}");
        }
        assert_eq!(TraceParent::parse(b"\xff\xfe"), Err(TraceError::Format));
        let long = format!("cc-{}", "a".repeat(MAX_LEN));
        assert_eq!(
            TraceParent::parse(long.as_bytes()),
            Err(TraceError::TooLong)
        );
    }

    #[test]
    fn a_span_continues_the_senders_trace_and_its_traceparent_names_the_span_itself() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let sender = TraceParent::parse(GOOD.as_bytes()).unwrap();
        let unsampled = GOOD.replace("-01", "-00");
        let unsampled = TraceParent::parse(unsampled.as_bytes()).unwrap();
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let span = tracing::info_span!(target: SPANS, parent: None, "job");
            continues(&span, Some(&sender));
            let own = own(&span).expect("a span of its own");
            assert_eq!(own.trace_id(), sender.trace_id());
            assert_ne!(own.parent_id, sender.parent_id);
            assert_eq!(own.flags, "01");
            // The sender's sampling decision is kept (parent-based).
            let span = tracing::info_span!(target: SPANS, parent: None, "job");
            continues(&span, Some(&unsampled));
            assert_eq!(own_flags(&span), Some("00".into()));
        });
        // Without export: no span of its own, so the sender's traceparent goes on as it came.
        let span = tracing::info_span!(target: SPANS, parent: None, "job");
        continues(&span, Some(&sender));
        assert_eq!(own(&span), None);
    }

    fn own_flags(span: &tracing::Span) -> Option<String> {
        own(span).map(|t| t.flags)
    }
}
