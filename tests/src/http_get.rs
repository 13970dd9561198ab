//! One plain HTTP/1.0 GET, over TCP or a Unix socket: how the tests scrape the daemon's
//! metrics listener and ask Prometheus's query API, without an HTTP client crate.

use std::io::{Read, Write};
use std::time::Duration;

/// An answer: the status line's code, the head (status line and headers) and the body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub code: u16,
    /// The status line and the headers, as sent.
    pub head: String,
    /// Everything after the blank line.
    pub body: String,
}

/// GETs `path` from the TCP `address` (`host:port`), with an `Accept` header if given; a
/// failure to connect, to read within `timeout`, or a malformed answer is an error.
pub fn tcp(
    address: &str,
    path: &str,
    accept: Option<&str>,
    timeout: Duration,
) -> std::io::Result<Answer> {
    let stream = std::net::TcpStream::connect(address)?;
    stream.set_read_timeout(Some(timeout))?;
    over(stream, address, path, accept)
}

/// GETs `path` from the HTTP server on the Unix socket `socket`.
#[cfg(unix)]
pub fn unix(socket: &std::path::Path, path: &str, timeout: Duration) -> std::io::Result<Answer> {
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    over(stream, "localhost", path, None)
}

/// GETs `path` over a connected `stream`; HTTP/1.0, so the server closes it after its answer.
pub fn over(
    mut stream: impl Read + Write,
    host: &str,
    path: &str,
    accept: Option<&str>,
) -> std::io::Result<Answer> {
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\n{accept}\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let malformed = || std::io::Error::other(format!("malformed response: {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(malformed)?;
    Ok(Answer {
        code,
        head: head.to_owned(),
        body: body.to_owned(),
    })
}
