//! The OTLP exporter of [`super::trace`]: OpenTelemetry's SDK with its
//! batch span processor (a bounded queue on its own thread; a full queue
//! drops spans, never blocks a stage) and the OTLP/HTTP JSON exporter,
//! posting to `<otlp_endpoint>/v1/traces` with a small blocking HTTP/1.1
//! client (plain http: a collector beside Vigil, as usual).

use std::io::{Read, Write};
use std::time::Duration;

use opentelemetry::trace::{
    Link, SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider};

use super::trace::{EventSpans, Sink, TraceContext};

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The endpoint is not `http://host:port[/path]`.
    #[error("otlp_endpoint {0:?} is not an http:// URL (https is not supported: export to a local collector)")]
    Endpoint(String),
    /// The exporter refused its settings.
    #[error("the OTLP exporter cannot start: {0}")]
    Build(String),
}

/// Starts exporting spans to `endpoint` (a base URL such as
/// `http://127.0.0.1:4318`) under `service_name`.
pub fn start(endpoint: &str, service_name: &str) -> Result<(), OtlpError> {
    let base = endpoint.trim_end_matches('/');
    let url = url::Url::parse(base).map_err(|_| OtlpError::Endpoint(endpoint.into()))?;
    if url.scheme() != "http" || url.host_str().is_none() {
        return Err(OtlpError::Endpoint(endpoint.into()));
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(format!("{base}/v1/traces"))
        .with_timeout(Duration::from_secs(10))
        .with_http_client(PlainHttp)
        .build()
        .map_err(|e| OtlpError::Build(e.to_string()))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_string())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("vigil");
    super::trace::install(Box::new(Otlp { provider, tracer }));
    Ok(())
}

struct Otlp {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

fn span_context(c: &TraceContext) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(c.trace_id),
        SpanId::from_bytes(c.span_id),
        TraceFlags::SAMPLED,
        true,
        TraceState::default(),
    )
}

impl Sink for Otlp {
    fn record(&self, spans: EventSpans) {
        let (Some(first), Some(last)) = (spans.stages.first(), spans.stages.last()) else {
            return;
        };
        let attributes: Vec<KeyValue> = spans
            .attributes
            .iter()
            .map(|(k, v)| KeyValue::new(*k, v.clone()))
            .collect();
        let parent = Context::new().with_remote_span_context(span_context(&spans.parent));
        let mut root = self
            .tracer
            .span_builder(spans.name)
            .with_kind(SpanKind::Internal)
            .with_start_time(first.start)
            .with_attributes(attributes.clone());
        if let Some(link) = &spans.link {
            root = root.with_links(vec![Link::with_context(span_context(link))]);
        }
        let root = root.start_with_context(&self.tracer, &parent);
        let cx = parent.with_span(root);
        for stage in spans.stages.iter().filter(|_| spans.stages.len() > 1) {
            let mut child = self
                .tracer
                .span_builder(stage.name)
                .with_kind(SpanKind::Internal)
                .with_start_time(stage.start)
                .with_attributes(attributes.clone())
                .start_with_context(&self.tracer, &cx);
            opentelemetry::trace::Span::end_with_timestamp(&mut child, stage.end);
        }
        cx.span().end_with_timestamp(last.end);
    }

    fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!("OTLP exporter: the last spans may not have been sent: {e}");
        }
    }
}

/// A blocking HTTP/1.1 client for the exporter's thread.
#[derive(Debug, Clone, Copy)]
struct PlainHttp;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for PlainHttp {
    async fn send_bytes(
        &self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Result<
        opentelemetry_http::Response<opentelemetry_http::Bytes>,
        opentelemetry_http::HttpError,
    > {
        let uri = request.uri().clone();
        let host = uri.host().ok_or("no host")?.to_string();
        let port = uri.port_u16().unwrap_or(80);
        let mut stream = std::net::TcpStream::connect((host.as_str(), port))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
            uri.path_and_query().map_or("/", |p| p.as_str()),
            request.body().len()
        );
        for (name, value) in request.headers() {
            if name != "content-length" && name != "host" {
                head.push_str(&format!("{name}: {}\r\n", value.to_str().unwrap_or("")));
            }
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(request.body())?;
        let mut answer = Vec::new();
        stream.take(1 << 20).read_to_end(&mut answer)?;
        let text = String::from_utf8_lossy(&answer);
        let status: u16 = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or("the collector's answer is not HTTP")?;
        let body = text
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        Ok(opentelemetry_http::Response::builder()
            .status(status)
            .body(opentelemetry_http::Bytes::from(body))?)
    }
}
