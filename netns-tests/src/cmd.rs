//! Running the helper commands (`ip`, `sysctl`, ...) the harness drives.
//!
//! Every command's failure carries its full command line and stderr, because "exit status 2"
//! alone says nothing about which of the dozens of `ip` calls in a topology went wrong.

use std::ffi::OsStr;
use std::process::{Command, Output};

use anyhow::{bail, Context, Result};

/// Runs `program args...`, failing on a non-zero exit; returns stdout as text.
pub fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = output(&mut cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            describe(&cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip netns exec NS program args...`, failing on a non-zero exit.
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", full)
}

/// Runs `ip args...` (use `-n NS` in `args` to target a namespace).
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Runs a command and returns its raw output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.output()
        .with_context(|| format!("cannot run `{}`", describe(cmd)))
}

/// The command line, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Whether `program` is on `PATH`, for clear "run scripts/install-deps.sh" errors.
pub fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Fails with an install hint when a needed program is missing.
pub fn require(program: &str) -> Result<()> {
    if have(program) {
        Ok(())
    } else {
        bail!("`{program}` is not installed: run scripts/install-deps.sh as root")
    }
}
