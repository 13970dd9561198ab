//! Metrics (issue 18): after a scripted workload on the real daemon (grants at once and after a
//! wait, a try that finds the lock held, a timeout, a steal of a stale file, a lease broken
//! under its holder, a store error injected by the `faults` layer), its HTTP listener and
//! `vfslockctl metrics` report exactly the counts the workload must produce. The text passes
//! Debian's `promtool check metrics`, the shipped alerting rules pass `promtool check rules`,
//! and Debian's Prometheus server, started on loopback with the shipped scrape config, scrapes
//! the daemon and answers queries for its series.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vfslock::{ErrorKind, LockOptions};
use vfslock_tests::{http_get, vfslockctl, within, Daemon, DEADLINE, TEST_CONFIG};

/// The repository's `docs/prometheus/`, where the scrape config and the rules ship.
fn shipped(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/prometheus")
        .join(name)
}

/// A TCP port nobody listens on now (bound and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One plain HTTP/1.0 GET: the status line's code, the headers and the body.
fn http_get(address: &str, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let answer = http_get::tcp(address, path, accept, DEADLINE)
        .unwrap_or_else(|e| panic!("GET {address}{path}: {e}"));
    (answer.code, answer.head, answer.body)
}

/// The samples of an exposition, by series (`name{labels}` as written).
fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample line");
            (series.to_owned(), value.parse().expect("a number"))
        })
        .collect()
}

/// The value of `series` (0 when absent: a counter not yet made).
fn value(samples: &BTreeMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

/// Runs `promtool` with `args` on stdin `input`; fails the test with its output unless it
/// passes.
fn promtool(args: &[&str], input: &str) {
    let mut child = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool: {e}; install it with `apt-get install prometheus`")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A daemon whose metrics listener is at the returned address, with the fault layer armed by
/// the returned switch file.
fn daemon_with_listener() -> (Daemon, String, PathBuf) {
    let address = format!("127.0.0.1:{}", free_port());
    let switch = std::env::temp_dir().join(format!(
        "vfslock-metrics-faults-{}-{}",
        std::process::id(),
        free_port()
    ));
    let _ = std::fs::remove_file(&switch);
    let config = format!(
        "{TEST_CONFIG}\n[metrics]\nlisten = \"{address}\"\n\n[faults]\nerror-rate = 1.0\n\
         switch-file = \"{}\"\n",
        switch.display()
    );
    (Daemon::start_with(&config), address, switch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_workload_is_counted_exactly_on_the_listener_and_through_the_socket() {
    let (daemon, address, switch) = daemon_with_listener();
    let client = daemon.client().await;
    let options = || LockOptions::default().ttl(Duration::from_secs(30));

    // mem: granted at once, then granted after a wait (handed over at the release).
    let mut first = client.new_lock("mem:///metrics/one", options());
    within("first grant", first.acquire()).await.unwrap();
    let (queued_tx, mut queued_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut second = client.new_lock(
        "mem:///metrics/one",
        options().on_queue_position(move |p| {
            let _ = queued_tx.send(p);
        }),
    );
    let waiting =
        tokio::spawn(async move { second.acquire_timeout(DEADLINE).await.map(|()| second) });
    within("the waiter queues", queued_rx.recv()).await;
    first.release().await.unwrap();
    let mut second = within("the waiter's grant", waiting)
        .await
        .unwrap()
        .unwrap();
    second.release().await.unwrap();

    // mem: a try that finds the lock held, and a wait that times out.
    let mut holder = client.new_lock("mem:///metrics/two", options());
    holder.acquire().await.unwrap();
    let mut tried = client.new_lock("mem:///metrics/two", options());
    assert_eq!(
        tried.acquire().await.unwrap_err().kind(),
        ErrorKind::AlreadyHeld
    );
    let mut timed = client.new_lock("mem:///metrics/two", options());
    assert_eq!(
        timed
            .acquire_timeout(Duration::from_millis(100))
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Timeout
    );

    // file: a stale Go lock file is taken over.
    let stale = daemon.stale_go_target("stale.csv");
    let mut stealer = client.new_lock(stale.as_str(), options());
    stealer.acquire().await.unwrap();
    stealer.release().await.unwrap();

    // file: a lease broken under its holder, which hears of it.
    let broken = daemon.file_target("broken.csv");
    let mut victim = client.new_lock(broken.as_str(), options());
    victim.acquire().await.unwrap();
    let out = vfslockctl(
        &daemon,
        None,
        &["break", &broken, "--reason", "metrics test"],
    );
    assert!(out.status.success(), "{out:?}");
    within("the holder hears of the break", victim.lost()).await;

    // mem: a store error, injected.
    std::fs::write(&switch, b"").unwrap();
    let mut failing = client.new_lock("mem:///metrics/three", options());
    let error = failing.acquire().await.unwrap_err();
    std::fs::remove_file(&switch).unwrap();
    assert_eq!(error.kind(), ErrorKind::Store, "{error}");

    // A shared holding, held while the daemon is scraped.
    let mut reader = client.new_lock("mem:///metrics/shared", options().shared());
    reader.acquire().await.unwrap();

    let (code, head, body) = http_get(&address, "/metrics", None);
    assert_eq!(code, 200, "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    let over_socket = client.metrics().await.unwrap();
    for text in [&body, &over_socket] {
        let s = samples(text);
        let acquisitions = |store: &str, outcome: &str| {
            value(
                &s,
                &format!("vfslockd_acquisitions_total{{store=\"{store}\",outcome=\"{outcome}\"}}"),
            )
        };
        // first, holder, failing's neighbours: `first`, `holder`, `reader`.
        assert_eq!(acquisitions("mem", "granted_at_once"), 3.0, "{text}");
        assert_eq!(acquisitions("mem", "granted_after_wait"), 1.0, "{text}");
        assert_eq!(acquisitions("mem", "held"), 1.0, "{text}");
        assert_eq!(acquisitions("mem", "timed_out"), 1.0, "{text}");
        assert_eq!(acquisitions("mem", "error"), 1.0, "{text}");
        assert_eq!(acquisitions("file", "granted_at_once"), 2.0, "{text}");
        // Granted (4) and timed out (1) on mem; granted (2) on file.
        assert_eq!(value(&s, "vfslockd_wait_seconds_count{store=\"mem\"}"), 5.0);
        assert_eq!(
            value(&s, "vfslockd_wait_seconds_count{store=\"file\"}"),
            2.0
        );
        // Released or lost: first, second on mem (holder and reader still hold); stealer and
        // victim on file.
        assert_eq!(
            value(&s, "vfslockd_hold_seconds_count{store=\"mem\"}"),
            2.0,
            "{text}"
        );
        assert_eq!(
            value(&s, "vfslockd_hold_seconds_count{store=\"file\"}"),
            2.0,
            "{text}"
        );
        assert_eq!(
            value(&s, "vfslockd_stale_locks_stolen_total{store=\"file\"}"),
            1.0
        );
        assert_eq!(
            value(
                &s,
                "vfslockd_leases_lost_total{store=\"file\",cause=\"stolen_or_broken\"}"
            ),
            1.0
        );
        assert_eq!(value(&s, "vfslockd_handoffs_total{store=\"mem\"}"), 1.0);
        assert_eq!(
            value(
                &s,
                "vfslockd_store_errors_total{store=\"mem\",operation=\"create\",kind=\"failed\"}"
            ),
            1.0,
            "{text}"
        );
        assert_eq!(
            value(&s, "vfslockd_locks_held{store=\"mem\",mode=\"exclusive\"}"),
            1.0
        );
        assert_eq!(
            value(&s, "vfslockd_locks_held{store=\"mem\",mode=\"shared\"}"),
            1.0
        );
        assert_eq!(
            value(&s, "vfslockd_locks_held{store=\"file\",mode=\"exclusive\"}"),
            0.0
        );
        assert!(
            value(
                &s,
                "vfslockd_store_request_seconds_count{store=\"file\",operation=\"create\"}"
            ) >= 2.0,
            "{text}"
        );
        assert!(value(&s, "vfslockd_sessions") >= 1.0);
        assert!(
            s.keys().any(|k| k.starts_with("vfslockd_build_info{")
                && k.contains(&format!(
                    "protocol=\"{}\"",
                    vfslock_proto::handshake::PROTOCOL_VERSION
                ))),
            "{text}"
        );
        // No series is labelled by a target.
        assert!(!text.contains("metrics/one"), "{text}");
        promtool(&["check", "metrics"], text);
    }

    // A scraper that asks for OpenMetrics gets it.
    let (code, head, open) = http_get(
        &address,
        "/metrics",
        Some("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"),
    );
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(open.trim_end().ends_with("# EOF"), "{open}");

    // `vfslockctl metrics` prints the same families.
    let out = vfslockctl(&daemon, None, &["metrics"]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed.contains("# TYPE vfslockd_acquisitions_total counter"),
        "{printed}"
    );
    drop((holder, reader));
}

#[tokio::test]
async fn metrics_turned_off_are_refused_with_the_key_to_turn_them_on() {
    let daemon = Daemon::start_with(&format!("{TEST_CONFIG}\n[metrics]\nenabled = false\n"));
    let error = daemon.client().await.metrics().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unsupported);
    assert!(
        error.message().contains("[metrics] enabled = false"),
        "{error}"
    );
    let out = vfslockctl(&daemon, None, &["metrics"]);
    assert_eq!(out.status.code(), Some(70), "{out:?}");
}

#[tokio::test]
async fn the_listener_serves_on_a_unix_socket_path_and_removes_it_at_exit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.sock");
    let mut daemon = Daemon::start_with(&format!(
        "{TEST_CONFIG}\n[metrics]\nlisten = \"{}\"\n",
        path.display()
    ));
    daemon.client().await.ping().await.unwrap();
    let answer = http_get::unix(&path, "/metrics", DEADLINE).expect("the metrics socket");
    assert_eq!(answer.code, 200, "{answer:?}");
    assert!(answer.body.contains("vfslockd_sessions"), "{answer:?}");
    assert!(daemon.terminate().success());
    assert!(
        !path.exists(),
        "the daemon's own metrics socket is removed at exit"
    );
}

#[test]
fn the_shipped_alerting_rules_and_scrape_config_pass_promtool() {
    let rules = shipped("vfslockd.rules.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool (apt-get install prometheus)");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("4 rules found"), "{text}");
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(shipped("prometheus.yml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Debian's Prometheus server, with the shipped scrape config pointed at the test's daemon,
/// scraping every 200 ms: `up` is 1 and a lock series is there, through its HTTP query API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_daemon_with_the_shipped_config() {
    let (daemon, address, _switch) = daemon_with_listener();
    let client = daemon.client().await;
    let mut lock = client.new_lock("mem:///metrics/prometheus", LockOptions::default());
    lock.acquire().await.unwrap();
    lock.release().await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let config = std::fs::read_to_string(shipped("prometheus.yml"))
        .unwrap()
        .replace("127.0.0.1:9464", &address)
        .replace("scrape_interval: 15s", "scrape_interval: 200ms")
        .replace("evaluation_interval: 15s", "evaluation_interval: 200ms");
    assert!(
        config.contains(&address),
        "the shipped config names its target"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    std::fs::copy(
        shipped("vfslockd.rules.yml"),
        dir.path().join("vfslockd.rules.yml"),
    )
    .unwrap();
    let web = format!("127.0.0.1:{}", free_port());
    let mut server = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run prometheus: {e}; apt-get install prometheus"));
    let query = |expr: &str| -> Option<serde_json::Value> {
        let path = format!("/api/v1/query?query={}", expr.replace(' ', "%20"));
        let answer = http_get::tcp(&web, &path, None, DEADLINE).ok()?;
        (answer.code == 200).then(|| serde_json::from_str(&answer.body).ok())?
    };
    let start = Instant::now();
    let found = loop {
        let up = query("up{job=\"vfslockd\"}");
        let series =
            query("vfslockd_acquisitions_total{store=\"mem\",outcome=\"granted_at_once\"}");
        let first_value = |v: &Option<serde_json::Value>| {
            v.as_ref()
                .and_then(|v| v["data"]["result"].get(0).cloned())
                .and_then(|r| r["value"][1].as_str().map(str::to_owned))
        };
        if let (Some(up), Some(acquired)) = (first_value(&up), first_value(&series)) {
            break (up, acquired);
        }
        if start.elapsed() > DEADLINE * 2 {
            let _ = server.kill();
            let log =
                std::fs::read_to_string(dir.path().join("prometheus.log")).unwrap_or_default();
            panic!("Prometheus did not find the daemon's series; its log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(found.0, "1", "up");
    assert_eq!(found.1, "1", "the one acquisition");
}
