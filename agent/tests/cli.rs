//! `nonstop-agent` as a person runs it from a shell.

use std::process::Command;

fn agent(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_nonstop-agent")).args(args).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn check_accepts_the_shipped_example() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agent.yaml");
    let (code, text) = agent(&["check", "--config", example]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("AS 65001, 1 peer(s), 1 announced prefix(es): OK"), "{text}");
}

#[test]
fn check_refuses_a_bad_file_with_every_reason_and_exit_code_2() {
    let dir = std::env::temp_dir().join(format!("nonstop-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "asn: 65001\npeers:\n  - address: 192.0.2.1\n    asn: 65000\n    holdTime: 2\n\
         announce:\n  - prefix: 10.0.0.0/8\n    nextHop: 2001:db8::1\n",
    )
    .unwrap();
    let (code, text) = agent(&["check", "--config", path.to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("breaks 2 rule(s)"), "{text}");
    assert!(text.contains("peers[0].holdTime: holdTime must be 0"), "{text}");
    assert!(text.contains("announce[0].nextHop: 2001:db8::1 is not of the same family"), "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn help_lists_the_commands() {
    let (code, text) = agent(&["--help"]);
    assert_eq!(code, 0);
    assert!(text.contains("check"), "{text}");
}

#[test]
fn json_logs_are_one_object_per_line_and_an_unknown_format_is_refused() {
    // `run` with a missing config: its failure, as a log line.
    let run = |format: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_nonstop-agent"))
            .args(["run", "--config", "/nonexistent/agent.yaml", "--state-dir", "/nonexistent"])
            .env("NONSTOP_LOG_FORMAT", format)
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, text) = run("logfmt");
    assert_eq!(code, 2, "{text}");
    assert_eq!(text.trim(), "error: NONSTOP_LOG_FORMAT must be text or json, got \"logfmt\"");
    let (code, text) = run("json");
    assert_eq!(code, 2, "{text}");
    let logged: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!logged.is_empty(), "no JSON line in {text}");
    assert_eq!(logged.len(), text.lines().count(), "a line that is not JSON: {text}");
    let last = logged.last().unwrap();
    assert!(last["timestamp"].is_string(), "{last}");
    assert_eq!(last["level"], "ERROR", "{last}");
    assert_eq!(last["fields"]["message"], "nonstop-agent stopped on an error", "{last}");
    let error = last["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("cannot read config /nonexistent/agent.yaml"), "{last}");
}

#[test]
fn an_api_token_too_short_to_guess_is_refused_at_start() {
    let dir = std::env::temp_dir().join(format!("nonstop-cli-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "short\n").unwrap();
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/agent.yaml");
    let state = dir.join("state");
    let args = ["run", "--config", config, "--state-dir", state.to_str().unwrap()];
    let (code, text) = agent(&[&args[..], &["--api-token-file", token.to_str().unwrap()]].concat());
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("the token must be at least 16 characters"), "{text}");
    assert!(!state.exists(), "the agent started before refusing its token");
    let (code, text) = agent(&["publish", "set.json"]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--state-dir"), "publish names where to send: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}
