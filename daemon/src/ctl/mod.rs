//! `vfslockctl` commands.
/// Placeholder entry.
pub fn main() -> std::process::ExitCode {
    std::process::ExitCode::SUCCESS
}
