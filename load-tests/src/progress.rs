//! Progress bars on a terminal; hidden in CI or when stderr is not a terminal.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub fn visible() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

pub fn bar(len: u64, phase: &str) -> ProgressBar {
    if !visible() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr_with_hz(4));
    pb.set_style(
        ProgressStyle::with_template("{prefix:>18} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .expect("valid template"),
    );
    pb.set_prefix(phase.to_string());
    pb
}

/// Prints a line without tearing a visible bar (plain stderr otherwise).
pub fn say(msg: impl AsRef<str>) {
    eprintln!("{}", msg.as_ref());
}
