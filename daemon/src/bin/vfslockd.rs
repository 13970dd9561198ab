//! `vfslockd`: the per-host lock daemon. Parses arguments, sets up logging, runs the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vfslockd::config::{LogFormat, Settings};
use vfslockd::error::Chain;

/// The vfslock per-host lock daemon.
// The doc comment, not the crate's description (which names vfslockctl too), is the first
// line of `--help` and the man page's NAME.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// Config file (TOML). Without one, the embedded default serves file:// and mem://.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Socket path. Default: $VFSLOCK_SOCKET, else /run/vfslock/vfslockd.sock for root and
    /// $XDG_RUNTIME_DIR/vfslock/vfslockd.sock otherwise.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Host identity written into lock files as `hostname` (default: the config's `host-id`,
    /// else the machine's hostname). Daemons sharing a store must have different ones.
    #[arg(long, value_name = "NAME")]
    host_id: Option<String>,
    /// Directory of the crash journal (default: the config's `state-dir`, else
    /// $STATE_DIRECTORY under systemd, /var/lib/vfslock for root, $XDG_STATE_HOME/vfslock).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// How log lines are written on stderr: `text` or `json` (one JSON object per line).
    /// Default: the config's `log-format`, else `text`.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
    /// Check the configuration as a start would, without starting: parse it, resolve the
    /// [[access]] users and groups, read the env: secrets and the stores' key and credential
    /// files (as the user running this). Prints the problem, or "ok"; exits 78 or 0. Does not
    /// contact the stores or bind the socket.
    #[arg(long, conflicts_with = "print_config")]
    check_config: bool,
    /// Print this manual page (roff, section 8) and exit; for packages (daemon/debian/build.sh).
    #[arg(long, hide = true, conflicts_with_all = ["print_config", "check_config"])]
    man_page: bool,
    /// Tests only: move this daemon's wall clock by a signed duration (`+1h`, `-30s`).
    #[arg(long, hide = true, value_name = "OFFSET", allow_hyphen_values = true)]
    clock_offset: Option<String>,
}

/// Parses `+1h`, `-30s` or `5m` into signed nanoseconds.
fn parse_offset(text: &str) -> Result<i64, String> {
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text.strip_prefix('+').unwrap_or(text)),
    };
    let duration = vfslockd::duration::parse(magnitude)?;
    i64::try_from(duration.as_nanos())
        .map(|ns| sign * ns)
        .map_err(|_| format!("`{text}` is too large a clock offset"))
}

/// Prints the man page of these arguments: a daemon's page is in section 8.
fn print_man_page() -> ExitCode {
    use clap::CommandFactory;
    use std::io::Write;
    let mut page = Vec::new();
    let rendered = clap_mangen::Man::new(Args::command())
        .section("8")
        .render(&mut page)
        .and_then(|()| std::io::stdout().lock().write_all(&page));
    match rendered {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfslockd: cannot print the man page: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `sysexits.h`'s EX_CONFIG: systemd should not restart a daemon whose config is wrong.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let args = Args::parse();
    if args.man_page {
        return print_man_page();
    }
    // Whether stderr is the journal does not depend on the config, so even a config error
    // carries the journal's error priority.
    let journal = vfslockd::systemd::logs_to_journal();
    let error = vfslockd::systemd::error_prefix(journal);
    // The config comes before logging, since it chooses the log format; nothing logs until
    // then, and its errors are printed as plain lines (no format is known yet).
    let mut settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("{error}vfslockd: {}", Chain(&e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some(dir) = args.state_dir {
        settings.daemon.state_dir = Some(dir);
    }
    if let Some(host_id) = args.host_id.filter(|h| !h.is_empty()) {
        settings.daemon.host_id = Some(host_id);
    }
    // Read here rather than by clap, so that a bad value exits 78 with the config file's
    // message instead of clap's usage error (exit 2).
    if let Some(format) = args.log_format {
        match LogFormat::parse(&format) {
            Ok(format) => settings.daemon.log_format = format,
            Err(e) => {
                eprintln!("{error}vfslockd: --log-format: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    if let Some(offset) = args.clock_offset {
        match parse_offset(&offset) {
            Ok(ns) => settings.faults.clock_offset_ns = ns,
            Err(e) => {
                eprintln!("{error}vfslockd: --clock-offset: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
    }
    let format = settings.daemon.log_format;
    set_up_logging(format, journal);
    if args.print_config {
        print!("{}", settings.to_toml());
        return ExitCode::SUCCESS;
    }
    if args.check_config {
        return check_config(&settings);
    }
    let socket = args
        .socket
        .or_else(|| settings.daemon.socket.clone())
        .unwrap_or_else(vfslock::socket::daemon_default_socket_path);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            print_fatal(format, journal, &format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(vfslockd::run(settings, socket));
    // Only once the runtime is gone can no task start another ssh master: end those still
    // running (the SFTP store's; see `store::object::ssh`), however `run` ended.
    drop(runtime);
    #[cfg(unix)]
    vfslockd::store::object::ssh::end_masters();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_fatal(format, journal, &format!("cannot start: {}", Chain(&e)));
            if e.is_config() {
                ExitCode::from(EXIT_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Writes the events `RUST_LOG` enables (default: `info` and above) to stderr in `format`.
///
/// Under the journal each line carries its `<N>` priority ([`vfslockd::systemd::JournalFormat`]);
/// elsewhere the text format has colours only when stderr is a terminal, so that a log
/// redirected to a file holds no escape sequences. JSON never has colours.
fn set_up_logging(format: LogFormat, journal: bool) {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::format::JsonFields;
    use vfslockd::systemd::{json_format, JournalFormat};

    let logging = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    match (format, journal) {
        (LogFormat::Text, false) => logging.with_ansi(std::io::stderr().is_terminal()).init(),
        (LogFormat::Text, true) => logging
            .with_ansi(false)
            .event_format(JournalFormat::text())
            .init(),
        // The JSON event format reads the spans' fields as JSON: they must be recorded by
        // `JsonFields` too.
        (LogFormat::Json, false) => logging
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(json_format())
            .init(),
        (LogFormat::Json, true) => logging
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(JournalFormat::json())
            .init(),
    }
}

/// Prints why the daemon stops, once logging is set up: as a line of the log's `format`, so
/// that a collector that reads a JSON log line by line reads this one too, with the journal's
/// error priority when stderr is the journal. Printed directly rather than through `tracing`,
/// so that no `RUST_LOG` filter can hide why the daemon exited.
fn print_fatal(format: LogFormat, journal: bool, message: &str) {
    let prefix = vfslockd::systemd::error_prefix(journal);
    match format {
        LogFormat::Text => eprintln!("{prefix}vfslockd: {message}"),
        LogFormat::Json => eprintln!("{prefix}{}", fatal_json(message)),
    }
}

/// The JSON object of an error event of target `vfslockd` with this message, as
/// [`vfslockd::systemd::json_format`] writes one (timestamp included, in the same form).
fn fatal_json(message: &str) -> serde_json::Value {
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};

    let mut timestamp = String::new();
    // Only a failing `fmt::Write` makes this fail, and a `String` never does.
    let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
    serde_json::json!({
        "timestamp": timestamp,
        "level": "ERROR",
        "fields": { "message": message },
        "target": "vfslockd",
    })
}

/// `--check-config`: the checks of a start that change nothing ([`vfslockd::startup::check`]),
/// their problem on stderr or "ok" on stdout. Warnings go to stderr and do not fail the check.
fn check_config(settings: &Settings) -> ExitCode {
    if let Err(e) = vfslockd::startup::check(settings) {
        eprintln!("vfslockd: {}", Chain(&e));
        return ExitCode::from(EXIT_CONFIG);
    }
    for warning in vfslockd::startup::warnings(settings) {
        eprintln!("vfslockd: warning: {warning}");
    }
    println!("ok");
    ExitCode::SUCCESS
}
