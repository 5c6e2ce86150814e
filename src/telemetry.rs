//! Logging: human-readable on a terminal, JSON lines for log shippers.
//!
//! A logged value may come from outside (an event, a typed user name, a peer's error text).
//! JSON escapes it; the human format writes it as it is, so a newline in a value would
//! start what looks like a log line of its own. The human format's writer escapes every
//! control character of an event but its final newline: one event is one line.

use std::io::{self, Write};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layer, SubscriberExt as _};
use tracing_subscriber::registry::Registry;
use tracing_subscriber::util::SubscriberInitExt as _;

use crate::config;
use crate::otlp::{self, Exporting, OtlpError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// `RUST_LOG` overrides `default` (e.g. `info`). With `otlp` naming a collector, mailboxd's
/// spans (`trace::SPANS`) are exported too; the returned export is to be shut down at the
/// end. Without it no span is recorded at all.
pub fn init(
    format: LogFormat,
    default: &str,
    otlp: Option<&config::Telemetry>,
) -> Result<Option<Exporting>, OtlpError> {
    // The OpenTelemetry crates' own lines repeat each failed export: `otlp` logs once.
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{default},sqlx=warn,lapin=warn,amq_protocol=warn,opentelemetry=off"
        ))
    });
    // mailboxd's spans are exported only: never log lines (`without_spans`), and disabled
    // call sites altogether when there is no export. The filter is the subscriber's own, not
    // the log layer's: an `EnvFilter` as a per-layer filter lost every event after the first
    // one it filtered out (nothing logged at all with the default `sqlx=warn`).
    let spans = if otlp.is_some_and(|t| t.otlp_endpoint.is_some()) {
        "info"
    } else {
        "off"
    };
    let filter = match format!("{}={spans}", crate::trace::SPANS).parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let without_spans = || {
        Targets::new()
            .with_default(LevelFilter::TRACE)
            .with_target(crate::trace::SPANS, LevelFilter::OFF)
    };
    // Colours only for a person at a terminal, never into files or log shippers.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(OneLine { ansi })
            .with_filter(without_spans())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_filter(without_spans())
            .boxed(),
    };
    let mut layers = vec![log];
    // A setting the export refuses still gets the log, to say why the daemon stops.
    let exporting = match otlp.map(otlp::start).transpose() {
        Ok(started) => started.flatten(),
        Err(e) => {
            let _ = tracing_subscriber::registry()
                .with(layers)
                .with(filter)
                .try_init();
            return Err(e);
        }
    };
    let exporting = exporting.map(|(tracer, exporting)| {
        let spans = Targets::new().with_target(crate::trace::SPANS, LevelFilter::INFO);
        layers.push(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_filter(spans)
                .boxed(),
        );
        exporting
    });
    let _ = tracing_subscriber::registry()
        .with(layers)
        .with(filter)
        .try_init();
    if let Some(e) = &exporting {
        e.announce();
    }
    Ok(exporting)
}

/// Stderr, one escaped line per event (the formatter hands over each event whole, in one
/// `write_all`). With colours on, ESC is kept: the colour codes are the formatter's.
#[derive(Debug, Clone, Copy)]
struct OneLine {
    ansi: bool,
}

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = Escaping<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping {
            inner: io::stderr(),
            ansi: self.ansi,
        }
    }
}

pub(crate) struct Escaping<W> {
    inner: W,
    ansi: bool,
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(one_line(buf, self.ansi).as_bytes())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `event` with every control character escaped but its final newline: one line.
pub(crate) fn one_line(event: &[u8], ansi: bool) -> String {
    let text = String::from_utf8_lossy(event);
    match text.strip_suffix('\n') {
        Some(body) => escape_controls(body, ansi) + "\n",
        None => escape_controls(&text, ansi),
    }
}

/// `text` with control characters and Unicode line breaks escaped (`\n`, `\u{1b}`), tabs
/// kept, and ESC kept when `ansi`.
pub(crate) fn escape_controls(text: &str, ansi: bool) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push(c),
            '\u{1b}' if ansi => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') => {
                out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_with_a_newline_cannot_forge_a_log_line() {
        let event = b"2026-12-07T06:00:00Z  WARN audit: dashboard sign-in refused user=x\n2026-12-07T06:00:01Z  INFO audit: signed in actor=admin\n";
        let line = one_line(event, false);
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.ends_with("actor=admin\n"));
        assert!(line.contains("user=x\\n2026"));
        assert_eq!(one_line(b"a\x1b[31mb\r\n", false), "a\\u{1b}[31mb\\r\n");
        assert_eq!(one_line(b"a\x1b[31mb\n", true), "a\x1b[31mb\n");
    }
}
