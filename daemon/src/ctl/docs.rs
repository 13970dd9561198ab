//! `vfslockctl completions SHELL` and `vfslockctl man`: shell completions and a man page,
//! generated from the same argument definitions that parse the command line, so they never
//! drift from it.

use std::io::Write;

use clap::CommandFactory;
use clap_complete::Shell;

use super::{Cli, Failure};

/// Prints the completion script for `shell`.
pub(super) fn completions(shell: Shell) -> Result<u8, Failure> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command, "vfslockctl", &mut out);
    write_out(&out)
}

/// Prints the man page (roff) of `vfslockctl`, or of one subcommand.
pub(super) fn man(subcommand: Option<&str>) -> Result<u8, Failure> {
    let command = Cli::command();
    let page = match subcommand {
        None => command,
        Some(name) => command
            .find_subcommand(name)
            .cloned()
            .ok_or_else(|| Failure::new(super::EXIT_USAGE, format!("no subcommand `{name}`")))?,
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| Failure::software(format!("cannot render the man page: {e}")))?;
    write_out(&out)
}

fn write_out(bytes: &[u8]) -> Result<u8, Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Failure::software(format!("cannot write: {e}"))),
    }
}
