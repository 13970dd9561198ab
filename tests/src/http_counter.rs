//! A proxy on loopback that forwards HTTP/1.1 to a test server and logs every request line it
//! passes: the count of what went on the wire, to check the daemon's own request counters
//! against, and which kinds of request it sent.
//!
//! Requests are framed by their `Content-Length` or chunked encoding, so a keep-alive connection
//! carrying many requests is counted exactly; answers are copied back untouched, except the one
//! to a request chosen by [`HttpCounter::lose_answer_to`]: that request reaches the server, and
//! its answer is dropped with the connection, as a network cut after the server applied it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Picks, by its request line, a request whose answer is to be lost.
type Chooser = Box<dyn Fn(&str) -> bool + Send>;

/// What the connections of one proxy share.
#[derive(Default)]
struct Shared {
    seen: Mutex<Vec<String>>,
    lose: Mutex<Option<Chooser>>,
}

/// A running counting proxy; it stops when dropped.
pub struct HttpCounter {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl HttpCounter {
    /// Starts a proxy to the server `endpoint` names (`http://host:port[/path]`).
    pub async fn start(endpoint: &str) -> HttpCounter {
        let upstream = authority(endpoint)
            .parse::<SocketAddr>()
            .unwrap_or_else(|e| panic!("{endpoint}: not http://<ip>:<port>: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let for_connections = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let shared = for_connections.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        relay(client, server, shared).await;
                    }
                });
            }
        });
        HttpCounter {
            addr,
            shared,
            accept,
        }
    }

    /// The next request whose line `choose` picks is sent on to the server, and then its
    /// connection is closed instead of relaying the answer.
    pub fn lose_answer_to(&self, choose: impl Fn(&str) -> bool + Send + 'static) {
        *self.shared.lose.lock().expect("chooser") = Some(Box::new(choose));
    }

    /// `endpoint` with its host and port replaced by the proxy's.
    pub fn endpoint_for(&self, endpoint: &str) -> String {
        endpoint.replacen(authority(endpoint), &self.addr.to_string(), 1)
    }

    /// The request lines (`METHOD target HTTP/1.1`) passed so far, in order.
    pub fn requests(&self) -> Vec<String> {
        self.shared.seen.lock().expect("request log").clone()
    }
}

impl Drop for HttpCounter {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// `host:port` of `http://host:port/...`.
fn authority(endpoint: &str) -> &str {
    let rest = endpoint
        .strip_prefix("http://")
        .unwrap_or_else(|| panic!("{endpoint}: only http:// endpoints can be proxied"));
    rest.split('/').next().unwrap_or(rest)
}

async fn relay(client: TcpStream, server: TcpStream, shared: Arc<Shared>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    // Set before a chosen request goes out: HTTP/1.1 clients wait for each answer before the
    // next request, so every earlier answer has been relayed by then.
    let cut = Arc::new(AtomicBool::new(false));
    let answers_cut = cut.clone();
    let answers = tokio::spawn(async move {
        let mut chunk = [0u8; 8192];
        while let Ok(n @ 1..) = from_server.read(&mut chunk).await {
            if answers_cut.load(Ordering::SeqCst) || to_client.write_all(&chunk[..n]).await.is_err()
            {
                break;
            }
        }
        let _ = to_client.shutdown().await;
    });
    let mut requests = Requests {
        buffer: Vec::new(),
        read: &mut from_client,
    };
    while let Some(request) = requests.next().await {
        let line = String::from_utf8_lossy(&request.line).into_owned();
        shared.seen.lock().expect("request log").push(line.clone());
        {
            let mut lose = shared.lose.lock().expect("chooser");
            if lose.as_ref().is_some_and(|choose| choose(&line)) {
                *lose = None;
                cut.store(true, Ordering::SeqCst);
            }
        }
        if to_server.write_all(&request.bytes).await.is_err() {
            break;
        }
    }
    let _ = to_server.shutdown().await;
    let _ = answers.await;
}

/// One whole request: its first line, and all its bytes as received.
struct Request {
    line: Vec<u8>,
    bytes: Vec<u8>,
}

/// Splits a client's byte stream into requests.
struct Requests<'a, R> {
    buffer: Vec<u8>,
    read: &'a mut R,
}

impl<R: tokio::io::AsyncRead + Unpin> Requests<'_, R> {
    /// Reads until `buffer` holds at least `len` bytes; false at end of stream.
    async fn fill(&mut self, len: usize) -> bool {
        let mut chunk = [0u8; 8192];
        while self.buffer.len() < len {
            match self.read.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
        true
    }

    /// Reads until `needle` occurs at or after `from`; its offset, or `None` at end of stream.
    async fn find(&mut self, from: usize, needle: &[u8]) -> Option<usize> {
        loop {
            if let Some(at) = self.buffer[from.min(self.buffer.len())..]
                .windows(needle.len())
                .position(|w| w == needle)
            {
                return Some(from + at);
            }
            let more = self.buffer.len() + 1;
            if !self.fill(more).await {
                return None;
            }
        }
    }

    async fn next(&mut self) -> Option<Request> {
        let head_end = self.find(0, b"\r\n\r\n").await? + 4;
        let head = String::from_utf8_lossy(&self.buffer[..head_end]).into_owned();
        let line = head.lines().next().unwrap_or_default().as_bytes().to_vec();
        let header = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (key, value) = l.split_once(':')?;
                key.trim()
                    .eq_ignore_ascii_case(name)
                    .then(|| value.trim().to_owned())
            })
        };
        let end = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            let mut at = head_end;
            loop {
                let size_end = self.find(at, b"\r\n").await?;
                let size = String::from_utf8_lossy(&self.buffer[at..size_end]).into_owned();
                let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
                if size == 0 {
                    // Trailers, then the empty line.
                    break self.find(size_end, b"\r\n\r\n").await? + 4;
                }
                at = size_end + 2 + size + 2;
                if !self.fill(at).await {
                    return None;
                }
            }
        } else {
            let length = header("content-length").map_or(Some(0), |v| v.parse().ok())?;
            let end = head_end + length;
            if !self.fill(end).await {
                return None;
            }
            end
        };
        let bytes = self.buffer.drain(..end).collect();
        Some(Request { line, bytes })
    }
}
