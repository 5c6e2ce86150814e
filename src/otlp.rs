//! Span export over OTLP/HTTP with protobuf (`[telemetry]`), with the OpenTelemetry SDK.
//!
//! Provisioning never waits for the collector: a span that ends is handed to a bounded
//! queue (`Bounded`) and exported in batches by the SDK's own thread; when the queue is
//! full the span is dropped, counted, and the drops are logged once per outage; an export
//! that fails (the collector down, a refusal) drops its batch the same way (`Counted`). The
//! requests go out on the daemon's reqwest (ring rustls, system roots plus `otlp_ca_file`)
//! on the daemon's runtime (`OnRuntime`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::HttpClient;
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use secrecy::ExposeSecret;

use crate::config;

/// Why export could not start; the daemon does not start either (the setting is wrong).
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    #[error("telemetry.otlp_ca_file: {0}")]
    Ca(String),
    #[error("cannot build the OTLP HTTP client: {0} (check [telemetry])")]
    Client(String),
    #[error("cannot build the OTLP exporter: {0} (check telemetry.otlp_endpoint)")]
    Exporter(String),
    #[error("span export needs the async runtime: {0}")]
    Runtime(String),
}

/// The running export: shut it down at the end to send what is still queued.
pub struct Exporting {
    provider: SdkTracerProvider,
    url: String,
}

impl Exporting {
    /// Says where spans go (once the log is in place), and warns of plain HTTP.
    pub fn announce(&self) {
        if self.url.starts_with("http:") {
            tracing::warn!(endpoint = %self.url, "telemetry.otlp_allow_http is set: spans and the export headers cross the network in clear text");
        }
        tracing::info!(endpoint = %self.url, "exporting spans over OTLP/HTTP");
    }

    /// Sends the queued spans (within the export deadline) and stops the export thread.
    /// Blocks: call it outside the runtime's worker threads (`spawn_blocking`).
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "span export did not finish cleanly at shutdown");
        }
    }
}

/// The tracer the log subscriber's OpenTelemetry layer uses, and its export; `None` when
/// `[telemetry]` names no endpoint.
pub fn start(cfg: &config::Telemetry) -> Result<Option<(SdkTracer, Exporting)>, OtlpError> {
    let Some(url) = cfg.traces_url() else {
        return Ok(None);
    };
    let runtime =
        tokio::runtime::Handle::try_current().map_err(|e| OtlpError::Runtime(e.to_string()))?;
    winrm::tls::install_provider();
    let mut builder = reqwest::Client::builder()
        .timeout(cfg.otlp_timeout)
        .no_proxy();
    if let Some(path) = &cfg.otlp_ca_file {
        builder = winrm::tls::trust_ca_file(builder, "telemetry.otlp_ca_file", path)
            .map_err(OtlpError::Ca)?;
    }
    let client = builder
        .build()
        .map_err(|e| OtlpError::Client(e.to_string()))?;
    let headers: HashMap<String, String> = cfg
        .otlp_headers
        .iter()
        .map(|(n, v)| (n.clone(), v.expose_secret().to_owned()))
        .collect();
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(url.as_str())
        .with_timeout(cfg.otlp_timeout)
        .with_headers(headers)
        .with_http_client(OnRuntime { client, runtime })
        .build()
        .map_err(|e| OtlpError::Exporter(e.to_string()))?;
    let queue = Arc::new(Queue::new(cfg.otlp_max_queue));
    let batch = BatchConfigBuilder::default()
        // The SDK's queue never fills: `Bounded` drops first, and counts.
        .with_max_queue_size(cfg.otlp_max_queue + EXPORT_BATCH)
        .with_max_export_batch_size(EXPORT_BATCH)
        .build();
    let processor = BatchSpanProcessor::builder(Counted {
        inner: exporter,
        queue: queue.clone(),
    })
    .with_batch_config(batch)
    .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(cfg.service_name.clone())
        .with_attribute(opentelemetry::KeyValue::new(
            "service.version",
            env!("CARGO_PKG_VERSION"),
        ))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Bounded {
            inner: processor,
            queue,
        })
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("mailboxd");
    Ok(Some((tracer, Exporting { provider, url })))
}

/// Spans per export request (the SDK's default).
const EXPORT_BATCH: usize = 512;

/// The spans between their end and the end of their export, bounded; and whether drops or
/// failed exports are being logged (once per outage).
#[derive(Debug)]
struct Queue {
    held: AtomicUsize,
    max: usize,
    full: AtomicBool,
    failing: AtomicBool,
}

impl Queue {
    fn new(max: usize) -> Queue {
        Queue {
            held: AtomicUsize::new(0),
            max,
            full: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    /// Takes a place for one span; false (counted, logged once) when the queue is full.
    fn take(&self) -> bool {
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            metrics::counter!("mailboxd_otlp_spans_dropped_total", "reason" => "queue_full")
                .increment(1);
            if !self.full.swap(true, Ordering::AcqRel) {
                tracing::warn!(
                    max = self.max,
                    "the span export queue is full (the collector is slow or down): spans are dropped and counted in mailboxd_otlp_spans_dropped_total; provisioning goes on"
                );
            }
        }
        taken
    }

    /// `n` spans left the queue, exported or not.
    fn release(&self, n: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |h| {
                Some(h.saturating_sub(n))
            });
        self.full.store(false, Ordering::Release);
    }
}

/// The SDK's batch processor behind a bound of our own, so that drops are counted as they
/// happen (the SDK counts them only at shutdown).
#[derive(Debug)]
struct Bounded<P> {
    inner: P,
    queue: Arc<Queue>,
}

impl<P: SpanProcessor> SpanProcessor for Bounded<P> {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queue.take() {
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, its results counted: exported spans, spans of a failed export
/// (dropped: the exporter already retried within `otlp_timeout`), one warning per outage.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queue: Arc<Queue>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queue.release(n);
        match &result {
            Ok(()) => {
                metrics::counter!("mailboxd_otlp_spans_exported_total").increment(n as u64);
                if self.queue.failing.swap(false, Ordering::AcqRel) {
                    tracing::info!("span export to the collector works again");
                }
            }
            Err(e) => {
                metrics::counter!("mailboxd_otlp_spans_dropped_total", "reason" => "export_failed")
                    .increment(n as u64);
                if !self.queue.failing.swap(true, Ordering::AcqRel) {
                    tracing::warn!(error = %e, spans = n, "span export to the collector failed: spans are dropped and counted in mailboxd_otlp_spans_dropped_total until it answers again (logged once); provisioning goes on");
                }
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The exporter runs on the SDK's own thread, outside any async runtime; reqwest needs one.
/// Each request is sent on the daemon's runtime and awaited from that thread.
#[derive(Debug)]
struct OnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            .map_err(|e| Box::new(e) as opentelemetry_http::HttpError)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_holds_at_most_its_bound_and_frees_what_an_export_took_exported_or_not() {
        let q = Queue::new(2);
        assert!(q.take() && q.take());
        assert!(!q.take(), "over the bound: dropped");
        assert!(q.full.load(Ordering::Acquire));
        q.release(1);
        assert!(!q.full.load(Ordering::Acquire));
        assert!(q.take());
        assert!(!q.take());
        // A release never goes below empty, whatever the SDK reports.
        q.release(10);
        assert_eq!(q.held.load(Ordering::Acquire), 0);
    }

    #[test]
    fn no_endpoint_no_export() {
        let off = crate::config::Telemetry::default();
        assert!(start(&off).expect("off is no error").is_none());
    }
}
