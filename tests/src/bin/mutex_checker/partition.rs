//! The network partition of a chaos run on S3 (`--partition`): one host (daemon 0) runs in a
//! network namespace of its own and reaches the run's own moto over a veth pair; now and then
//! its link is cut while a client of that host holds a lock, and the checker verifies with
//! records on `CLOCK_MONOTONIC`:
//!
//! - (a) the cut host's holder is told that its lease is lost before the lease runs out
//!   (`createdAt` of its last lock file write, plus the TTL);
//! - (b) a client of another host gets the lock, and only after the lease ran out;
//! - (c) once the link is back, the cut host neither rewrites nor deletes the new holder's
//!   lock file (its `lockId` stays the new holder's while that one holds), and the guarded
//!   resource accepts the new holder's token.
//!
//! Why a namespace: a cut link is the one failure in which a daemon is alive, its clients are
//! alive and connected (Unix sockets are file-system objects, reachable across network
//! namespaces), and only the store is gone: the lease must run out on the clients' clocks and
//! the store's, not because a connection dropped. Why the run's own moto: it must listen on the
//! veth's host-side address, and a cut connection must hang only its own request
//! (`tests/servers/moto_single.py` serializes requests after their bodies are read).
//!
//! Everything is named after the coordinator's pid (`vfslc-<pid>`, `vfh<pid>`/`vfn<pid>`,
//! 10.213.x.y/30) and removed on every way out, a panic included; what a SIGKILLed
//! coordinator left is removed by the next run.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opendal::Operator;
use vfslock::{Client, LockOptions};

use crate::modes::Held;
use crate::records::{now_ns, realtime_ns, Record, RecordLog};
use crate::resource::ResourceClient;
use crate::Rng;

/// How long moto gets to answer after it starts.
const MOTO_START: Duration = Duration::from_secs(60);

/// How often the lock object is read while the new holder is watched.
const WATCH_EVERY: Duration = Duration::from_millis(50);

/// Runs `ip` with `args`; its stderr in the error.
fn ip(args: &[&str]) -> Result<(), String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip {}: {e} (install iproute2)", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// The namespace, veth pair and moto of one run.
pub(crate) struct Network {
    ns: String,
    host_if: String,
    ns_if: String,
    host_addr: Ipv4Addr,
    port: u16,
    moto: Option<Child>,
}

impl Network {
    /// Creates the namespace and the veth pair, and starts moto on the host side; `dir`
    /// gets moto's log. Needs root and `ip` (iproute2).
    pub(crate) fn create(dir: &Path) -> Result<Network, String> {
        remove_leftovers();
        let pid = std::process::id();
        // A /30 per pid: 10.213.<n/64>.<(n%64)*4> with n = pid mod 16384.
        let n = pid % 16_384;
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + (n / 64) * 256 + (n % 64) * 4;
        let mut net = Network {
            ns: format!("vfslc-{pid}"),
            host_if: format!("vfh{pid}"),
            ns_if: format!("vfn{pid}"),
            host_addr: Ipv4Addr::from(base + 1),
            port: 0,
            moto: None,
        };
        let ns_addr = Ipv4Addr::from(base + 2);
        // From here on, Drop removes whatever part exists.
        ip(&["netns", "add", &net.ns])?;
        ip(&[
            "link",
            "add",
            &net.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &net.ns_if,
            "netns",
            &net.ns,
        ])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/30", net.host_addr),
            "dev",
            &net.host_if,
        ])?;
        ip(&["link", "set", &net.host_if, "up"])?;
        ip(&[
            "-n",
            &net.ns,
            "addr",
            "add",
            &format!("{ns_addr}/30"),
            "dev",
            &net.ns_if,
        ])?;
        ip(&["-n", &net.ns, "link", "set", &net.ns_if, "up"])?;
        ip(&["-n", &net.ns, "link", "set", "lo", "up"])?;
        net.start_moto(dir)?;
        Ok(net)
    }

    /// Starts `tests/servers/moto_single.py` on the host side of the veth pair and creates
    /// the bucket.
    fn start_moto(&mut self, dir: &Path) -> Result<(), String> {
        let servers = Path::new(env!("CARGO_MANIFEST_DIR")).join("servers");
        let python = std::env::var_os("VFSLOCK_TEST_MOTO_PYTHON")
            .map_or_else(|| servers.join(".venv-moto/bin/python"), PathBuf::from);
        if !python.is_file() {
            return Err(format!(
                "{} not found: tests/servers/start.sh installs moto (or set \
                 VFSLOCK_TEST_MOTO_PYTHON)",
                python.display()
            ));
        }
        // A free port on that address (a race with another binder is harmless: moto would
        // fail to start, and the run with it).
        self.port = TcpListener::bind(SocketAddrV4::new(self.host_addr, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a port on {}: {e}", self.host_addr))?
            .port();
        let log = std::fs::File::create(dir.join("moto.log")).map_err(|e| e.to_string())?;
        let mut command = Command::new(&python);
        command
            .arg(servers.join("moto_single.py"))
            .arg("--host")
            .arg(self.host_addr.to_string())
            .arg("--port")
            .arg(self.port.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        crate::coordinator::die_with_parent(&mut command, libc::SIGTERM);
        let mut child = command
            .spawn()
            .map_err(|e| format!("start {}: {e}", python.display()))?;
        let address = SocketAddrV4::new(self.host_addr, self.port);
        let start = Instant::now();
        loop {
            if TcpStream::connect_timeout(&address.into(), Duration::from_secs(1)).is_ok() {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!(
                    "moto exited with {status}: see {}",
                    dir.join("moto.log").display()
                ));
            }
            if start.elapsed() > MOTO_START {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("moto did not answer within {MOTO_START:?}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.moto = Some(child);
        // moto takes an unsigned bucket creation.
        let answer = http_put(address, &format!("/{}", crate::store::PRIVATE_S3_BUCKET))?;
        if !answer.starts_with("HTTP/1.1 200") && !answer.starts_with("HTTP/1.0 200") {
            return Err(format!(
                "creating the bucket: {}",
                answer.lines().next().unwrap_or("")
            ));
        }
        Ok(())
    }

    /// The S3 endpoint, on the host side of the veth pair.
    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host_addr, self.port)
    }

    /// The namespace's file, for `setns(2)`.
    pub(crate) fn netns_path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.ns)
    }

    /// Cuts the link: the namespace's end goes down, so its host can no longer reach moto.
    pub(crate) fn cut(&self) -> Result<(), String> {
        ip(&["-n", &self.ns, "link", "set", &self.ns_if, "down"])
    }

    /// Brings the link back.
    pub(crate) fn restore(&self) -> Result<(), String> {
        ip(&["-n", &self.ns, "link", "set", &self.ns_if, "up"])
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if let Some(mut moto) = self.moto.take() {
            let _ = moto.kill();
            let _ = moto.wait();
        }
        // Deleting one end of a veth pair deletes both; deleting the namespace would too.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// Removes the namespaces and veth pairs of earlier runs whose coordinator is gone (killed
/// before its clean-up ran).
fn remove_leftovers() {
    let Ok(output) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("vfslc-")
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["link", "del", &format!("vfh{pid}")]);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// One plain HTTP PUT with an empty body; the answer's head.
fn http_put(address: SocketAddrV4, path: &str) -> Result<String, String> {
    let mut stream = TcpStream::connect_timeout(&address.into(), Duration::from_secs(5))
        .map_err(|e| format!("connect {address}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        stream,
        "PUT {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("PUT {path}: {e}"))?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    Ok(answer)
}

/// `createdAt` as the daemon writes it (Go's RFC 3339 in UTC with up to nine fractional
/// digits, `2026-11-27T10:00:00.5Z`), in nanoseconds since the Unix epoch.
pub(crate) fn parse_go_time(text: &str) -> Option<i128> {
    let text = text.strip_suffix('Z')?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, fraction),
        None => (time, ""),
    };
    let mut clock = clock.splitn(3, ':').map(|p| p.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nanos: i64 = format!("{fraction:0<9}").parse().ok()?;
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(i128::from(seconds) * 1_000_000_000 + i128::from(nanos))
}

/// What the partition cycles found.
#[derive(Clone, Debug, Default)]
pub(crate) struct PartitionReport {
    /// Cycles in which the link was cut while the cut host held the lock.
    pub(crate) partitions: u64,
    /// Holders of the cut host told of the loss before their lease ran out (check a).
    pub(crate) lost_before_ttl: u64,
    /// Locks another host got, after the cut holder's lease ran out (check b).
    pub(crate) taken_after_ttl: u64,
    /// New holders whose lock file the healed host left alone (check c).
    pub(crate) untouched_after_heal: u64,
    /// Cycles that did not start: the cut host's client could not get the lock (injected
    /// faults, say) before the run ended.
    pub(crate) skipped: u64,
    /// Violated checks, described.
    pub(crate) failures: Vec<String>,
    /// The record logs of the cycles' clients: identity, incarnation, path.
    pub(crate) logs: Vec<(String, u32, PathBuf)>,
}

/// What the partition thread needs.
pub(crate) struct Plan {
    pub(crate) net: Arc<Network>,
    /// The cut host's daemon socket (daemon 0).
    pub(crate) cut_socket: PathBuf,
    /// The other daemons' sockets (daemon 1, 2, …).
    pub(crate) other_sockets: Vec<PathBuf>,
    /// The guarded resource.
    pub(crate) resource: PathBuf,
    /// The partition target's URL and its index in the records.
    pub(crate) target: String,
    pub(crate) target_index: usize,
    /// Its lock object's key.
    pub(crate) key: String,
    pub(crate) ttl: Duration,
    /// Pause between cycles.
    pub(crate) gap: Duration,
    /// Where the cycles' record logs go.
    pub(crate) logs: PathBuf,
    /// Held for a whole cycle: no daemon is killed meanwhile.
    pub(crate) gate: Arc<Mutex<()>>,
    /// Set when the chaos phase is over: no new cycle starts.
    pub(crate) stop: Arc<AtomicBool>,
}

/// Runs partition cycles on a thread of its own until `plan.stop`; then takes the partition
/// target once more (with the store healed) so that a lock file an injected fault left behind
/// is cleaned up as any stale lock is.
pub(crate) fn spawn(plan: Plan) -> std::thread::JoinHandle<PartitionReport> {
    std::thread::Builder::new()
        .name("partition".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(drive(plan))
        })
        .expect("spawn the partition thread")
}

// The gate is held across the whole cycle on purpose. A std mutex is right here: the only
// other party is the coordinator's main thread, which only ever `try_lock`s it (and skips a
// daemon kill when it is taken), so no task of this runtime can block on it.
#[allow(clippy::await_holding_lock)]
async fn drive(plan: Plan) -> PartitionReport {
    let mut report = PartitionReport::default();
    let operator = match crate::store::private_s3_operator(&plan.net.endpoint()) {
        Ok(operator) => operator,
        Err(e) => {
            report.failures.push(e);
            return report;
        }
    };
    let mut rng = Rng::seeded();
    let mut cycle_no = 0u32;
    'cycles: loop {
        let pause_end = Instant::now() + plan.gap;
        while Instant::now() < pause_end {
            if plan.stop.load(Ordering::SeqCst) {
                break 'cycles;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let gate = plan.gate.clone();
        let _no_daemon_kills = gate.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(failure) = cycle(&plan, cycle_no, &mut rng, &operator, &mut report).await {
            eprintln!("mutex-checker: partition {cycle_no}: FAIL: {failure}");
            report
                .failures
                .push(format!("partition {cycle_no}: {failure}"));
        }
        cycle_no += 1;
    }
    settle(&plan, &operator, &mut report).await;
    report
}

/// Connects to a daemon, retrying while it (re)starts.
async fn connect(socket: &Path) -> Result<Client, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Client::connect(socket).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => {
                return Err(format!("connect to {}: {e}", socket.display()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The lock object's `lockId` and `createdAt` (ns since the epoch), if it exists now;
/// `Err` if the store did not answer.
async fn read_lock(operator: &Operator, key: &str) -> Result<Option<(String, i128)>, String> {
    match tokio::time::timeout(Duration::from_secs(5), operator.read(key)).await {
        Err(_) => Err(format!("read {key}: no answer in 5 s")),
        Ok(Err(e)) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
        Ok(Err(e)) => Err(format!("read {key}: {e}")),
        Ok(Ok(body)) => {
            let meta: serde_json::Value = serde_json::from_slice(&body.to_vec())
                .map_err(|e| format!("{key} is not JSON: {e}"))?;
            let lock_id = meta["lockId"].as_str().unwrap_or_default().to_owned();
            let created = meta["createdAt"]
                .as_str()
                .and_then(parse_go_time)
                .ok_or_else(|| format!("{key}: no createdAt in {meta}"))?;
            Ok(Some((lock_id, created)))
        }
    }
}

/// Reads the lock object, retrying a store that does not answer for up to 5 s.
async fn read_lock_retrying(
    operator: &Operator,
    key: &str,
) -> Result<Option<(String, i128)>, String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match read_lock(operator, key).await {
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            Ok(seen) => return Ok(seen),
        }
    }
}

/// Brings the link back when a cycle ends early.
struct RestoreOnDrop<'a> {
    net: &'a Network,
    armed: bool,
}

impl Drop for RestoreOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.net.restore() {
                eprintln!("mutex-checker: cannot restore the partitioned link: {e}");
            }
        }
    }
}

/// One record log of a cycle's client.
fn open_log(
    plan: &Plan,
    report: &mut PartitionReport,
    client: &str,
    cycle_no: u32,
) -> Result<RecordLog, String> {
    let path = plan.logs.join(format!("{client}.{cycle_no}.jsonl"));
    let mut log = RecordLog::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    report.logs.push((client.to_owned(), cycle_no, path));
    log.append(&Record::Start {
        t: now_ns(),
        client: client.to_owned(),
        pid: std::process::id(),
    });
    Ok(log)
}

/// One resource write, recorded.
async fn write_resource(
    plan: &Plan,
    log: &mut RecordLog,
    token: Option<u64>,
    client: &str,
) -> Result<(), String> {
    let mut resource = ResourceClient::connect(&plan.resource)
        .await
        .map_err(|e| format!("connect to the resource: {e}"))?;
    let accepted = resource
        .write(plan.target_index, token, client)
        .await
        .map_err(|e| format!("write to the resource: {e}"))?;
    log.append(&Record::Write {
        t: now_ns(),
        target: plan.target_index,
        token,
        accepted: Some(accepted),
    });
    if accepted {
        Ok(())
    } else {
        Err(format!("the resource refused {client}'s token {token:?}"))
    }
}

/// One partition: the cut host takes the lock, its link is cut, (a) and (b) are checked,
/// the link comes back, (c) is checked. `Err` describes a violated check.
async fn cycle(
    plan: &Plan,
    cycle_no: u32,
    rng: &mut Rng,
    operator: &Operator,
    report: &mut PartitionReport,
) -> Result<(), String> {
    let ttl_ns = plan.ttl.as_nanos() as i128;
    let other = rng.below(plan.other_sockets.len() as u64) as usize;
    let (a_id, b_id) = ("part-h0".to_owned(), format!("part-h{}", other + 1));
    let mut log_a = open_log(plan, report, &a_id, cycle_no)?;
    let mut log_b = open_log(plan, report, &b_id, cycle_no)?;
    let client_a = connect(&plan.cut_socket).await?;
    let client_b = connect(&plan.other_sockets[other]).await?;
    let options = |id: &str| LockOptions::default().ttl(plan.ttl).owner_id(id.to_owned());

    // The cut host takes the lock (injected faults may fail an attempt or two).
    let mut lock_a = client_a.new_lock(plan.target.clone(), options(&a_id));
    let mut attempts = 0;
    loop {
        match lock_a.acquire_timeout(plan.ttl * 4).await {
            Ok(()) => break,
            Err(e) => {
                log_a.append(&Record::AcquireError {
                    t: now_ns(),
                    target: plan.target_index,
                    kind: format!("{:?}", e.kind()),
                    message: e.message().to_owned(),
                });
                attempts += 1;
                if attempts == 5 || plan.stop.load(Ordering::SeqCst) {
                    report.skipped += 1;
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let token_a = lock_a.token();
    let lock_id_a = lock_a.lock_id().unwrap_or_default().to_owned();
    log_a.append(&Record::Enter {
        t: now_ns(),
        target: plan.target_index,
        client: a_id.clone(),
        token: token_a,
        mode: Held::Exclusive,
    });
    write_resource(plan, &mut log_a, token_a, &a_id).await?;

    plan.net.cut()?;
    let mut restore = RestoreOnDrop {
        net: &plan.net,
        armed: true,
    };
    report.partitions += 1;

    // The cut holder waits for its loss; another host's client waits for the lock.
    let mut lock_b = client_b.new_lock(plan.target.clone(), options(&b_id));
    let b_deadline = Instant::now() + plan.ttl * 3 + Duration::from_secs(15);
    let hear_loss = async {
        let lost = tokio::time::timeout(plan.ttl + Duration::from_secs(5), lock_a.lost()).await;
        let heard = now_ns();
        // Read right away: nobody may replace the file before the lease ran out, and the cut
        // host cannot write any more, so this is its last write.
        let seen = read_lock_retrying(operator, &plan.key).await;
        let offset = realtime_ns() as i128 - now_ns() as i128;
        (lost, heard, seen, offset)
    };
    let take_over = async {
        loop {
            match tokio::time::timeout_at(b_deadline.into(), lock_b.acquire_wait()).await {
                Err(_) => return None,
                Ok(Ok(())) => return Some(now_ns()),
                Ok(Err(e)) => {
                    log_b.append(&Record::AcquireError {
                        t: now_ns(),
                        target: plan.target_index,
                        kind: format!("{:?}", e.kind()),
                        message: e.message().to_owned(),
                    });
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    };
    let ((lost, heard, seen, offset), taken) = tokio::join!(hear_loss, take_over);

    // (a) told before the lease ran out.
    let reason = lost.map_err(|_| {
        format!(
            "{a_id} was not told that its lease was lost within the TTL ({:?}) + 5 s of the cut",
            plan.ttl
        )
    })?;
    log_a.append(&Record::Lost {
        t: heard,
        target: plan.target_index,
        reason: reason.clone(),
    });
    let (seen_id, created) = seen?.ok_or_else(|| {
        format!(
            "the lock object {} was gone when {a_id} heard of its loss",
            plan.key
        )
    })?;
    if seen_id != lock_id_a {
        return Err(format!(
            "the lock object held {seen_id}, not {a_id}'s {lock_id_a}, when {a_id} heard of \
             its loss (before its TTL could have run out)"
        ));
    }
    // The lease's end on CLOCK_MONOTONIC: its last write plus the TTL.
    let lease_end = created - offset + ttl_ns;
    let margin_ms = (lease_end - heard as i128) as f64 / 1e6;
    if (heard as i128) >= lease_end {
        return Err(format!(
            "{a_id} heard of its loss ({reason}) {:.1} ms after its lease ran out",
            -margin_ms
        ));
    }
    report.lost_before_ttl += 1;
    eprintln!(
        "mutex-checker: partition {cycle_no}: {a_id} told of its loss {margin_ms:.0} ms before \
         its lease ran out ({reason})"
    );

    // (b) another host got it, after the lease ran out.
    let entered = taken
        .ok_or_else(|| format!("{b_id} did not get the lock within 3 × TTL + 15 s of the cut"))?;
    let token_b = lock_b.token();
    log_b.append(&Record::Enter {
        t: entered,
        target: plan.target_index,
        client: b_id.clone(),
        token: token_b,
        mode: Held::Exclusive,
    });
    if (entered as i128) < lease_end {
        return Err(format!(
            "{b_id} entered {:.1} ms before {a_id}'s lease ran out",
            (lease_end - entered as i128) as f64 / 1e6
        ));
    }
    report.taken_after_ttl += 1;
    write_resource(plan, &mut log_b, token_b, &b_id).await?;
    let lock_id_b = lock_b.lock_id().unwrap_or_default().to_owned();

    // (c) the link comes back; the healed host must leave the new holder's file alone.
    restore.armed = false;
    plan.net.restore()?;
    let released = lock_a.release().await;
    log_a.append(&Record::released(plan.target_index, released));
    let watch_end = Instant::now() + plan.ttl.max(Duration::from_secs(2));
    while Instant::now() < watch_end {
        if !lock_b.is_held() {
            return Err(format!(
                "{b_id} lost the lock while the healed host was watched: {}",
                lock_b.lost().await
            ));
        }
        match read_lock(operator, &plan.key).await {
            Ok(Some((id, _))) if id == lock_id_b => {}
            Ok(Some((id, _))) => {
                return Err(format!(
                    "{b_id}'s lock file was replaced (lockId {id}) while it held the lock"
                ))
            }
            Ok(None) => {
                return Err(format!(
                    "{b_id}'s lock file was deleted while it held the lock"
                ))
            }
            // The coordinator's own read failed: no evidence either way.
            Err(_) => {}
        }
        tokio::time::sleep(WATCH_EVERY).await;
    }
    report.untouched_after_heal += 1;
    log_b.append(&Record::Exit {
        t: now_ns(),
        target: plan.target_index,
    });
    let released = lock_b.release().await;
    log_b.append(&Record::released(plan.target_index, released));
    Ok(())
}

/// After the last cycle: if the partition target's lock file is still there (an injected
/// fault failed a release), another host takes it once, as any stale lock is taken, and
/// releases it. Recorded as a client of its own.
async fn settle(plan: &Plan, operator: &Operator, report: &mut PartitionReport) {
    if !matches!(read_lock_retrying(operator, &plan.key).await, Ok(Some(_))) {
        return;
    }
    let id = "part-settle".to_owned();
    let outcome = async {
        let mut log = open_log(plan, report, &id, 0)?;
        let client = connect(&plan.other_sockets[0]).await?;
        let mut lock = client.new_lock(
            plan.target.clone(),
            LockOptions::default().ttl(plan.ttl).owner_id(id.clone()),
        );
        lock.acquire_timeout(plan.ttl * 3 + Duration::from_secs(10))
            .await
            .map_err(|e| format!("{id}: {e}"))?;
        log.append(&Record::Enter {
            t: now_ns(),
            target: plan.target_index,
            client: id.clone(),
            token: lock.token(),
            mode: Held::Exclusive,
        });
        write_resource(plan, &mut log, lock.token(), &id).await?;
        log.append(&Record::Exit {
            t: now_ns(),
            target: plan.target_index,
        });
        let released = lock.release().await;
        log.append(&Record::Released {
            t: now_ns(),
            target: plan.target_index,
            lease_lost: false,
            error: released.err().map(|e| format!("{:?}: {e}", e.kind())),
        });
        Ok::<(), String>(())
    }
    .await;
    if let Err(e) = outcome {
        eprintln!("mutex-checker: warning: settling the partition target: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_times_parse_to_nanoseconds_since_the_epoch() {
        assert_eq!(parse_go_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_go_time("1970-01-02T00:00:01.5Z"),
            Some(86_401_500_000_000)
        );
        // 2000-03-01 is day 11017 (a leap year's February behind it).
        assert_eq!(
            parse_go_time("2000-03-01T00:00:00.000000001Z"),
            Some(11_017 * 86_400 * 1_000_000_000 + 1)
        );
        assert_eq!(parse_go_time("2000-03-01T00:00:00"), None);
        assert_eq!(parse_go_time("2000-03-01T00:00:00.1234567890Z"), None);
    }
}
