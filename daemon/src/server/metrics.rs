//! The optional HTTP listener Prometheus scrapes (`[metrics] listen`): a TCP address or a
//! Unix socket path, or the socket systemd passed as `metrics` (`vfslockd-metrics.socket`), so
//! that under socket activation the port is open, and a scrape starts the daemon, while the
//! daemon is not running yet: a "daemon down" alert then means the daemon cannot start.
//!
//! It answers `GET /metrics` (any path, in fact: scrapers are configured with one) with the
//! exposition the `Accept` header asks for, and nothing else: no admin, no state changes.

use std::convert::Infallible;
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};

use crate::context::{Context, Stats};
use crate::metrics::{Figures, Format};

/// Scrapes served at once; more wait for a turn (a scraper asks every few seconds).
const CONCURRENT_SCRAPES: usize = 8;
/// A connection that has not sent its request headers within this is closed.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the metrics listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsListenError {
    /// Binding failed.
    #[error("cannot listen for metrics scrapes on {address} ([metrics] listen)")]
    Bind {
        /// The configured address.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A Unix socket path on a system without them.
    #[error(
        "[metrics] listen = {0:?}: a socket path needs a Unix system; give a TCP address such as \
         127.0.0.1:9464"
    )]
    NoUnixSockets(String),
}

/// Where scrapes arrive.
#[derive(Debug)]
pub enum MetricsListener {
    /// A TCP port; `true` when it was passed (by systemd, or the image before a planned
    /// restart), not bound from the config.
    Tcp(tokio::net::TcpListener, bool),
    /// A Unix socket; the path is removed at exit when this daemon bound it (`None` when it
    /// was passed).
    #[cfg(unix)]
    Unix(tokio::net::UnixListener, Option<PathBuf>),
}

impl MetricsListener {
    /// Binds `address`: a path (starting with `/`) is a Unix socket, anything else a TCP
    /// `host:port`.
    pub async fn bind(address: &str) -> Result<MetricsListener, MetricsListenError> {
        let failed = |source| MetricsListenError::Bind {
            address: address.to_owned(),
            source,
        };
        if address.starts_with('/') {
            #[cfg(unix)]
            {
                let path = Path::new(address);
                // A socket file left by a daemon that was killed would refuse the bind.
                if std::fs::symlink_metadata(path).is_ok_and(|m| {
                    use std::os::unix::fs::FileTypeExt;
                    m.file_type().is_socket()
                }) {
                    let _ = std::fs::remove_file(path);
                }
                let listener = tokio::net::UnixListener::bind(path).map_err(failed)?;
                return Ok(MetricsListener::Unix(listener, Some(path.to_owned())));
            }
            #[cfg(not(unix))]
            return Err(MetricsListenError::NoUnixSockets(address.to_owned()));
        }
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(failed)?;
        Ok(MetricsListener::Tcp(listener, false))
    }

    /// Whether it was passed to this process rather than bound from the config.
    pub fn passed(&self) -> bool {
        match self {
            MetricsListener::Tcp(_, passed) => *passed,
            #[cfg(unix)]
            MetricsListener::Unix(_, own) => own.is_none(),
        }
    }

    /// Takes over a listening socket systemd (or the previous image of a planned restart)
    /// passed: TCP or Unix, whichever it is.
    #[cfg(unix)]
    pub fn adopt(fd: std::os::fd::OwnedFd) -> std::io::Result<MetricsListener> {
        use std::os::fd::AsRawFd;
        let unix = {
            // SAFETY: getsockname on a descriptor we own, into storage of the size we pass.
            let mut address: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            let rc = unsafe {
                libc::getsockname(
                    fd.as_raw_fd(),
                    (&mut address as *mut libc::sockaddr_storage).cast(),
                    &mut length,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
            i32::from(address.ss_family) == libc::AF_UNIX
        };
        if unix {
            let listener = std::os::unix::net::UnixListener::from(fd);
            listener.set_nonblocking(true)?;
            Ok(MetricsListener::Unix(
                tokio::net::UnixListener::from_std(listener)?,
                None,
            ))
        } else {
            let listener = std::net::TcpListener::from(fd);
            listener.set_nonblocking(true)?;
            Ok(MetricsListener::Tcp(
                tokio::net::TcpListener::from_std(listener)?,
                true,
            ))
        }
    }

    /// The descriptor, for a planned restart to hand over.
    #[cfg(unix)]
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        match self {
            MetricsListener::Tcp(l, _) => l.as_raw_fd(),
            MetricsListener::Unix(l, _) => l.as_raw_fd(),
        }
    }

    /// Where it listens, for the log.
    pub fn describe(&self) -> String {
        match self {
            MetricsListener::Tcp(l, _) => l
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "a TCP socket".into()),
            #[cfg(unix)]
            MetricsListener::Unix(l, _) => l
                .local_addr()
                .ok()
                .and_then(|a| a.as_pathname().map(|p| p.display().to_string()))
                .unwrap_or_else(|| "a Unix socket".into()),
        }
    }

    /// Serves scrapes until the task is aborted; removes its own socket file then.
    pub fn serve(self, ctx: Arc<Context>) -> tokio::task::JoinHandle<()> {
        tracing::info!(listen = %self.describe(), "serving metrics scrapes");
        tokio::spawn(async move {
            let _remove = RemoveOnDrop(self.own_path());
            let turns = Arc::new(tokio::sync::Semaphore::new(CONCURRENT_SCRAPES));
            loop {
                let accepted = match &self {
                    MetricsListener::Tcp(l, _) => l
                        .accept()
                        .await
                        .map(|(s, _)| Box::new(s) as Box<dyn Connection>),
                    #[cfg(unix)]
                    MetricsListener::Unix(l, _) => l
                        .accept()
                        .await
                        .map(|(s, _)| Box::new(s) as Box<dyn Connection>),
                };
                let stream = match accepted {
                    Ok(stream) => stream,
                    Err(e) => {
                        // Out of descriptors, most likely: back off instead of spinning.
                        tracing::warn!(error = %e, "cannot accept a metrics scrape");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(turn) = turns.clone().acquire_owned().await else {
                    return;
                };
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let _turn = turn;
                    let service = hyper::service::service_fn(move |request| {
                        let ctx = ctx.clone();
                        async move { Ok::<_, Infallible>(answer(&ctx, request).await) }
                    });
                    let served = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(HEADER_TIMEOUT)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "a metrics scrape's connection failed");
                    }
                });
            }
        })
    }

    fn own_path(&self) -> Option<PathBuf> {
        match self {
            MetricsListener::Tcp(..) => None,
            #[cfg(unix)]
            MetricsListener::Unix(_, path) => path.clone(),
        }
    }
}

/// A scrape's connection, TCP or Unix.
trait Connection: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Connection for T {}

/// Removes the listener's own socket file when serving ends.
struct RemoveOnDrop(Option<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn answer(ctx: &Context, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        if let Ok(value) = content_type.parse() {
            response
                .headers_mut()
                .insert(hyper::header::CONTENT_TYPE, value);
        }
        response
    };
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "only GET: this listener serves metrics scrapes\n".into(),
        );
    }
    let accept = request
        .headers()
        .get(hyper::header::ACCEPT)
        .and_then(|v| v.to_str().ok());
    let format = Format::for_accept(accept);
    match scrape(ctx, format).await {
        Some(body) => reply(StatusCode::OK, format.content_type(), body),
        None => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain; charset=utf-8",
            format!("{OFF}\n"),
        ),
    }
}

/// What a scrape of a daemon with metrics off is told.
pub const OFF: &str = "metrics are off in this daemon's config ([metrics] enabled = false): \
                       set it to true and restart the daemon";

/// The exposition in `format`, with the daemon's own figures read now; `None` when metrics are
/// off.
pub async fn scrape(ctx: &Context, format: Format) -> Option<String> {
    let metrics = ctx.metrics.as_ref()?;
    let figures = Figures {
        sessions: Stats::get(&ctx.stats.sessions),
        targets: Stats::get(&ctx.stats.targets),
        journal: ctx.journal.as_ref().map(|j| j.size()),
        restarts: ctx.restarts.snapshot(std::time::Instant::now()),
    };
    Some(metrics.encode(&figures, format).await)
}
