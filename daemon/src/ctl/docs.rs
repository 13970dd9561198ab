//! `vfslockctl completions SHELL` and `vfslockctl man`: shell completions and man pages,
//! generated from the same argument definitions that parse the command line, so they never
//! drift from it.

use std::io::Write;
use std::path::Path;

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

/// The command the pages describe. Built, so that a subcommand's page is titled
/// `vfslockctl-run` (the name the main page refers to) rather than `run`; without the `help`
/// subcommand, which has no page of its own.
fn documented() -> clap::Command {
    let mut command = Cli::command().disable_help_subcommand(true);
    command.build();
    command
}

/// Prints the man page (roff) of `vfslockctl`, or of one subcommand.
pub(super) fn man(subcommand: Option<&str>) -> Result<u8, Failure> {
    let command = documented();
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

/// Writes `vfslockctl.1` and a `vfslockctl-SUBCOMMAND.1` per subcommand into `dir`.
pub(super) fn man_pages_to(dir: &Path) -> Result<u8, Failure> {
    clap_mangen::generate_to(documented(), dir).map_err(|e| {
        Failure::software(format!(
            "cannot write the man pages into {}: {e}",
            dir.display()
        ))
    })?;
    Ok(0)
}

fn write_out(bytes: &[u8]) -> Result<u8, Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(0),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
        Err(e) => Err(Failure::software(format!("cannot write: {e}"))),
    }
}
