//! Counting what goes on the wire: every HTTP request an object store's operator sends.
//!
//! `vfslockctl status` reports a store's request count, and operators budget it (each request
//! is billed on the cloud stores). Counting per operation would be an estimate that silently
//! drifts whenever OpenDAL changes how it lowers an operation (a GCS conditional write was two
//! requests, counted as one). So the count comes from the one place all of the operator's HTTP
//! traffic passes: its transport, wrapped here. Credential fetches and redirects followed by the
//! transport are requests too, and are counted. SFTP speaks no HTTP; its round trips are still
//! counted per operation (see `request.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opendal::{Buffer, HttpBody, HttpTransport, HttpTransporter, Operator, Result};

/// The operator's own HTTP transport, counting each request before it is sent.
struct CountingTransport {
    inner: HttpTransporter,
    sent: Arc<AtomicU64>,
}

impl HttpTransport for CountingTransport {
    async fn fetch(&self, req: http::Request<Buffer>) -> Result<http::Response<HttpBody>> {
        // Counted before sending: a request that fails in transit may still have reached the
        // store (and been billed).
        self.sent.fetch_add(1, Ordering::Relaxed);
        self.inner.fetch(req).await
    }
}

/// `operator` with every HTTP request it sends counted in `sent`.
pub(super) fn counted(operator: Operator, sent: Arc<AtomicU64>) -> Operator {
    let context = operator.context().clone();
    let inner = context.http_transport().clone();
    let transport = HttpTransporter::new(CountingTransport { inner, sent });
    operator.with_context(context.with_http_transport(transport))
}
