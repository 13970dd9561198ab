//! A client process for the restart tests: holds locks and waits for others through the
//! client library, as an application would, and says what happens on stdout, one line each.
//!
//! ```text
//! lock_holder --socket PATH --api async|blocking [--hold TARGET]... [--wait TARGET]...
//! ```
//!
//! Takes every `--hold` target (a try; exits 1 if one fails), printing `held TARGET LOCK_ID
//! TOKEN`; then waits for every `--wait` target (a 300 s timeout), printing `queued TARGET
//! POSITION` each time the daemon names a place, and, once granted, `granted TARGET LOCK_ID
//! TOKEN`, then releases it and prints `released TARGET`. A wait that fails prints `failed
//! TARGET ERROR`. When stdin says `release`, each held lock is checked (`lost TARGET` if its
//! lease was lost meanwhile) and released; once every wait is over too it prints `done` and
//! exits.

use std::io::{BufRead, Write};
use std::time::Duration;

use vfslock::LockOptions;

const WAIT: Duration = Duration::from_secs(300);

struct Args {
    socket: String,
    blocking: bool,
    hold: Vec<String>,
    wait: Vec<String>,
}

fn parse() -> Args {
    let mut args = Args {
        socket: String::new(),
        blocking: false,
        hold: Vec::new(),
        wait: Vec::new(),
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        let value = words
            .next()
            .unwrap_or_else(|| panic!("{word} needs a value"));
        match word.as_str() {
            "--socket" => args.socket = value,
            "--api" => args.blocking = value == "blocking",
            "--hold" => args.hold.push(value),
            "--wait" => args.wait.push(value),
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

/// One line on stdout, flushed at once: the test reads them as they come.
fn say(text: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// `WHAT TARGET LOCK_ID TOKEN`.
fn line(what: &str, target: &str, lock_id: Option<&str>, token: Option<u64>) -> String {
    format!(
        "{what} {target} {} {}",
        lock_id.unwrap_or(""),
        token.unwrap_or(0)
    )
}

fn waiter_options(target: &str) -> LockOptions {
    let target = target.to_owned();
    LockOptions::default()
        .on_queue_position(move |position| say(format!("queued {target} {position}")))
}

/// Blocks until stdin says `release` (or closes).
fn until_release() {
    for line in std::io::stdin().lock().lines() {
        match line {
            Ok(line) if line.trim() == "release" => return,
            Ok(_) => {}
            Err(_) => return,
        }
    }
}

fn main() {
    let args = parse();
    if args.blocking {
        run_blocking(args)
    } else {
        tokio::runtime::Runtime::new()
            .expect("a runtime")
            .block_on(run_async(args))
    }
    say("done".into());
}

async fn run_async(args: Args) {
    let client = vfslock::Client::connect(&args.socket)
        .await
        .expect("connect");
    let mut held = Vec::new();
    for target in &args.hold {
        let mut lock = client.new_lock(target, LockOptions::default());
        if let Err(e) = lock.acquire().await {
            say(format!("failed {target} {e}"));
            std::process::exit(1);
        }
        say(line("held", target, lock.lock_id(), lock.token()));
        held.push(lock);
    }
    let mut waits = Vec::new();
    for target in args.wait {
        let mut lock = client.new_lock(&target, waiter_options(&target));
        waits.push(tokio::spawn(async move {
            match lock.acquire_timeout(WAIT).await {
                Ok(()) => {
                    say(line("granted", &target, lock.lock_id(), lock.token()));
                    match lock.release().await {
                        Ok(()) => say(format!("released {target}")),
                        Err(e) => say(format!("failed {target} {e}")),
                    }
                }
                Err(e) => say(format!("failed {target} {e}")),
            }
        }));
    }
    tokio::task::spawn_blocking(until_release)
        .await
        .expect("stdin");
    for mut lock in held {
        if !lock.is_held() {
            say(format!("lost {}", lock.target()));
        }
        if let Err(e) = lock.release().await {
            say(format!("failed {} {e}", lock.target()));
        }
    }
    for wait in waits {
        wait.await.expect("a waiter");
    }
}

fn run_blocking(args: Args) {
    let client = vfslock::blocking::Client::connect(&args.socket).expect("connect");
    let mut held = Vec::new();
    for target in &args.hold {
        let mut lock = client.new_lock(target, LockOptions::default());
        if let Err(e) = lock.acquire() {
            say(format!("failed {target} {e}"));
            std::process::exit(1);
        }
        say(line("held", target, lock.lock_id(), lock.token()));
        held.push((target.clone(), lock));
    }
    let waits: Vec<_> = args
        .wait
        .into_iter()
        .map(|target| {
            let socket = args.socket.clone();
            std::thread::spawn(move || {
                let client = vfslock::blocking::Client::connect(&socket).expect("connect");
                let mut lock = client.new_lock(&target, waiter_options(&target));
                match lock.acquire_timeout(WAIT) {
                    Ok(()) => {
                        say(line("granted", &target, lock.lock_id(), lock.token()));
                        match lock.release() {
                            Ok(()) => say(format!("released {target}")),
                            Err(e) => say(format!("failed {target} {e}")),
                        }
                    }
                    Err(e) => say(format!("failed {target} {e}")),
                }
            })
        })
        .collect();
    until_release();
    for (target, mut lock) in held {
        if !lock.is_held() {
            say(format!("lost {target}"));
        }
        if let Err(e) = lock.release() {
            say(format!("failed {target} {e}"));
        }
    }
    for wait in waits {
        wait.join().expect("a waiter");
    }
}
