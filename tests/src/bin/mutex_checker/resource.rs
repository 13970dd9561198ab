//! The guarded resource: a server on a Unix socket that takes writes `(target, token, client)`
//! and, per target, rejects a write whose token is lower than the highest it has seen, as a
//! storage system that checks fencing tokens would.
//!
//! Shared holders and semaphore slot holders do not write: they *read*, guarded. The holders of
//! a shared lock on one daemon share one token (their daemon's entry in the lock file), and
//! shared holders on different daemons hold different tokens in no particular order, so two
//! legitimate readers writing one after the other would look like a stale writer; a semaphore's
//! holders are concurrent by design. A guarded read is instead checked against the writes only:
//! it is rejected if its token is lower than the highest token *written* (the newest exclusive
//! holder's): a reader still holding an entry from before that writer came in. A read does not
//! raise the bar for other reads, but a write must be at least as high as every token read
//! before it too: an exclusive holder's token exceeds every token issued before it, shared ones
//! included. Both checks are sound on the records' clock: each operation is answered inside its
//! holder's recorded section, and sections that conflict must not overlap (which the analysis
//! checks apart), so the resource sees them in section order.
//!
//! The protocol is one line each way: `W <target> <token or -> <client>` (write) or
//! `C <target> <token or -> <client>` (guarded read, "check"), and `A` (accepted) or
//! `R <highest token seen>` (rejected).

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
    /// Guarded reads accepted (shared and slot holders).
    pub(crate) reads_accepted: u64,
    /// Guarded reads rejected: a token lower than the highest written for the target, or no
    /// token.
    pub(crate) reads_rejected: u64,
    /// The first rejected writes and reads, described.
    pub(crate) rejections: Vec<String>,
}

#[derive(Default)]
struct State {
    /// Per target, the highest token written, and by whom.
    highest: HashMap<usize, (u64, String)>,
    /// Per target, the highest token read with (a write must not be lower either).
    highest_read: HashMap<usize, u64>,
    stats: ResourceStats,
}

impl State {
    /// Applies one write; `Ok` if accepted, else `Err(highest token seen)`.
    fn write(&mut self, target: usize, token: Option<u64>, client: &str) -> Result<(), u64> {
        let written = self.highest.get(&target).map(|(t, _)| *t);
        let highest = written.max(self.highest_read.get(&target).copied());
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

    /// Applies one guarded read: `Ok` if `token` is not lower than the highest written for
    /// `target`, else `Err(that token)`.
    fn read(&mut self, target: usize, token: Option<u64>, client: &str) -> Result<(), u64> {
        let written = self.highest.get(&target).map(|(t, _)| *t);
        let accepted = match (token, written) {
            (None, _) => false,
            (Some(_), None) => true,
            (Some(token), Some(written)) => token >= written,
        };
        if accepted {
            self.stats.reads_accepted += 1;
            let token = token.expect("accepted");
            let highest = self.highest_read.entry(target).or_default();
            *highest = (*highest).max(token);
            Ok(())
        } else {
            self.stats.reads_rejected += 1;
            if self.stats.rejections.len() < MAX_DESCRIBED {
                let by = self.highest.get(&target).map_or("-", |(_, c)| c.as_str());
                self.stats.rejections.push(format!(
                    "t{target}: {client} read with token {token:?} after {by} wrote with \
                     {written:?}"
                ));
            }
            Err(written.unwrap_or(0))
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

/// What a line asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    /// `W`: a write.
    Write,
    /// `C`: a guarded read.
    Read,
}

fn parse(line: &str) -> Option<(Op, usize, Option<u64>, &str)> {
    let mut words = line.split_whitespace();
    let op = match words.next()? {
        "W" => Op::Write,
        "C" => Op::Read,
        _ => return None,
    };
    let target = words.next()?.parse().ok()?;
    let token = match words.next()? {
        "-" => None,
        token => Some(token.parse().ok()?),
    };
    let client = words.next()?;
    Some((op, target, token, client))
}

fn serve(stream: UnixStream, state: &Mutex<State>) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let answer = match parse(&line) {
            Some((op, target, token, client)) => {
                let mut state = state.lock().expect("resource state");
                let done = match op {
                    Op::Write => state.write(target, token, client),
                    Op::Read => state.read(target, token, client),
                };
                match done {
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
        self.ask("W", target, token, client).await
    }

    /// Reads with `token` (a shared or slot holder); whether the resource accepted the read.
    pub(crate) async fn read(
        &mut self,
        target: usize,
        token: Option<u64>,
        client: &str,
    ) -> std::io::Result<bool> {
        self.ask("C", target, token, client).await
    }

    async fn ask(
        &mut self,
        op: &str,
        target: usize,
        token: Option<u64>,
        client: &str,
    ) -> std::io::Result<bool> {
        let token = token.map_or_else(|| "-".to_owned(), |t| t.to_string());
        self.writer
            .write_all(format!("{op} {target} {token} {client}\n").as_bytes())
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
    fn a_read_is_checked_against_writes_and_bounds_the_next_write() {
        let mut state = State::default();
        // Shared holders of two daemons read in any order of their tokens.
        assert_eq!(state.read(0, Some(4), "a"), Ok(()));
        assert_eq!(state.read(0, Some(6), "b"), Ok(()));
        assert_eq!(state.read(0, Some(5), "a"), Ok(()));
        // A writer must be above every token read before it.
        assert_eq!(state.write(0, Some(5), "c"), Err(6));
        assert_eq!(state.write(0, Some(7), "c"), Ok(()));
        // A reader from before that writer is stale; one after it is not.
        assert_eq!(state.read(0, Some(6), "b"), Err(7));
        assert_eq!(state.read(0, Some(8), "d"), Ok(()));
        assert_eq!(state.read(0, None, "d"), Err(7));
        assert_eq!(state.read(1, Some(1), "d"), Ok(()));
        assert_eq!(
            (state.stats.reads_accepted, state.stats.reads_rejected),
            (5, 2)
        );
        assert_eq!((state.stats.accepted, state.stats.rejected), (1, 1));
        assert_eq!(state.stats.rejections.len(), 3);
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
            assert!(client.read(0, Some(2), "c").await.unwrap());
            assert!(!client.read(0, Some(1), "c").await.unwrap());
        });
        let stats = server.stats();
        assert_eq!((stats.accepted, stats.rejected), (2, 2));
        assert_eq!((stats.reads_accepted, stats.reads_rejected), (1, 1));
    }
}
