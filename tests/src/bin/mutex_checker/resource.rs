//! The guarded resource: a server on a Unix socket that takes writes `(target, token, client)`
//! and, per target, rejects a write whose token is lower than the highest it has seen, as a
//! storage system that checks fencing tokens would.
//!
//! The protocol is one line each way: `W <target> <token or -> <client>` and `A` (accepted)
//! or `R <highest token seen>` (rejected).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// How many rejected writes are described in full.
const MAX_DESCRIBED: usize = 20;

/// What the resource saw.
#[derive(Clone, Debug, Default)]
pub(crate) struct ResourceStats {
    /// Writes accepted.
    pub(crate) accepted: u64,
    /// Writes rejected: a token lower than the highest seen for the target, or no token.
    pub(crate) rejected: u64,
    /// The first rejected writes, described.
    pub(crate) rejections: Vec<String>,
}

#[derive(Default)]
struct State {
    highest: HashMap<usize, (u64, String)>,
    stats: ResourceStats,
}

impl State {
    /// Applies one write; `Ok` if accepted, else `Err(highest token seen)`.
    fn write(&mut self, target: usize, token: Option<u64>, client: &str) -> Result<(), u64> {
        let highest = self.highest.get(&target).map(|(t, _)| *t);
        let accepted = match (token, highest) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(token), Some(highest)) => token >= highest,
        };
        if accepted {
            self.stats.accepted += 1;
            self.highest
                .insert(target, (token.expect("accepted"), client.to_owned()));
            Ok(())
        } else {
            self.stats.rejected += 1;
            if self.stats.rejections.len() < MAX_DESCRIBED {
                let by = self.highest.get(&target).map_or("-", |(_, c)| c.as_str());
                self.stats.rejections.push(format!(
                    "t{target}: {client} wrote with token {token:?} after {by} wrote with \
                     {highest:?}"
                ));
            }
            Err(highest.unwrap_or(0))
        }
    }
}

/// The running server (its threads end with the process).
pub(crate) struct ResourceServer {
    state: Arc<Mutex<State>>,
}

impl ResourceServer {
    /// Listens on `path` and serves each connection on a thread of its own.
    pub(crate) fn start(path: &Path) -> std::io::Result<ResourceServer> {
        let listener = UnixListener::bind(path)?;
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        std::thread::Builder::new()
            .name("resource-accept".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    let state = shared.clone();
                    let _ = std::thread::Builder::new()
                        .name("resource-conn".into())
                        .spawn(move || serve(stream, &state));
                }
            })?;
        Ok(ResourceServer { state })
    }

    /// What the resource saw so far.
    pub(crate) fn stats(&self) -> ResourceStats {
        self.state.lock().expect("resource state").stats.clone()
    }
}

fn parse(line: &str) -> Option<(usize, Option<u64>, &str)> {
    let mut words = line.split_whitespace();
    if words.next()? != "W" {
        return None;
    }
    let target = words.next()?.parse().ok()?;
    let token = match words.next()? {
        "-" => None,
        token => Some(token.parse().ok()?),
    };
    let client = words.next()?;
    Some((target, token, client))
}

fn serve(stream: UnixStream, state: &Mutex<State>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let answer = match parse(&line) {
            Some((target, token, client)) => {
                match state
                    .lock()
                    .expect("resource state")
                    .write(target, token, client)
                {
                    Ok(()) => "A\n".to_owned(),
                    Err(highest) => format!("R {highest}\n"),
                }
            }
            None => "E\n".to_owned(),
        };
        if out.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A worker's connection to the resource.
pub(crate) struct ResourceClient {
    reader: tokio::io::BufReader<tokio::net::unix::OwnedReadHalf>,
    writer: tokio::net::unix::OwnedWriteHalf,
}

impl ResourceClient {
    /// Connects to the resource at `path`.
    pub(crate) async fn connect(path: &Path) -> std::io::Result<ResourceClient> {
        let (read, writer) = tokio::net::UnixStream::connect(path).await?.into_split();
        Ok(ResourceClient {
            reader: tokio::io::BufReader::new(read),
            writer,
        })
    }

    /// Writes with `token`; whether the resource accepted the write.
    pub(crate) async fn write(
        &mut self,
        target: usize,
        token: Option<u64>,
        client: &str,
    ) -> std::io::Result<bool> {
        let token = token.map_or_else(|| "-".to_owned(), |t| t.to_string());
        self.writer
            .write_all(format!("W {target} {token} {client}\n").as_bytes())
            .await?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        match answer.trim_end() {
            "A" => Ok(true),
            a if a.starts_with("R ") => Ok(false),
            other => Err(std::io::Error::other(format!(
                "the resource answered {other:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lower_token_is_rejected_per_target() {
        let mut state = State::default();
        assert_eq!(state.write(0, Some(3), "a"), Ok(()));
        assert_eq!(state.write(0, Some(3), "a"), Ok(()));
        assert_eq!(state.write(0, Some(5), "b"), Ok(()));
        assert_eq!(state.write(0, Some(4), "a"), Err(5));
        assert_eq!(state.write(1, Some(1), "a"), Ok(()));
        assert_eq!(state.write(1, None, "a"), Err(1));
        assert_eq!(state.stats.accepted, 4);
        assert_eq!(state.stats.rejected, 2);
        assert_eq!(state.stats.rejections.len(), 2);
    }

    #[test]
    fn the_server_answers_over_its_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resource.sock");
        let server = ResourceServer::start(&path).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut client = ResourceClient::connect(&path).await.unwrap();
            assert!(client.write(0, Some(2), "a").await.unwrap());
            assert!(!client.write(0, Some(1), "b").await.unwrap());
            assert!(!client.write(0, None, "b").await.unwrap());
            assert!(client.write(1, Some(1), "b").await.unwrap());
        });
        let stats = server.stats();
        assert_eq!((stats.accepted, stats.rejected), (2, 2));
    }
}
