//! Commands inside a network namespace (`ip netns exec`).

use std::process::Command;

/// `args` to run inside namespace `ns`.
pub fn exec(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// Runs `cmd`: its standard output, or an error that starts with `what`
/// and carries what the command said on failure.
pub fn output(what: &str, mut cmd: Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            String::from_utf8_lossy(&out.stdout).trim()
        ))
    }
}
