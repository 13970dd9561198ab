//! `vfslockctl`: the admin and shell tool of `vfslockd`. Everything lives in the library's
//! [`vfslockd::ctl`] module, where it can be documented and tested.

use std::process::ExitCode;

fn main() -> ExitCode {
    vfslockd::ctl::main()
}
