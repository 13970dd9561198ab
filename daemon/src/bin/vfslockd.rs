//! `vfslockd`: the per-host lock daemon. Parses arguments, sets up logging, runs the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use vfslockd::config::Settings;

/// The vfslock per-host lock daemon.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Config file (TOML). Without one, the embedded default serves file:// and mem://.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Socket path. Default: $VFSLOCK_SOCKET, else /run/vfslock/vfslockd.sock for root and
    /// $XDG_RUNTIME_DIR/vfslock/vfslockd.sock otherwise.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// Print the effective configuration and exit.
    #[arg(long)]
    print_config: bool,
}

/// `sysexits.h`'s EX_CONFIG: systemd should not restart a daemon whose config is wrong.
const EXIT_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let settings = match Settings::load(args.config.as_deref()) {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("vfslockd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if args.print_config {
        print!("{}", settings.to_toml());
        return ExitCode::SUCCESS;
    }
    let socket = args
        .socket
        .or_else(|| settings.socket.clone())
        .unwrap_or_else(vfslock::socket::daemon_default_socket_path);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("vfslockd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(vfslockd::run(settings, socket)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vfslockd: {e}");
            ExitCode::FAILURE
        }
    }
}
