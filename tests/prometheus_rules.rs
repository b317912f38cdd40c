//! The chart's Prometheus rules, checked by Prometheus' own tool: the file
//! parses (`promtool check rules`) and each alert fires on the series that
//! should fire it and not on those that should not (`promtool test rules`,
//! with the cases in tests/prometheus/rules_test.yaml).

use std::path::Path;
use std::process::Command;

fn promtool(args: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root)
        .output()
        .expect("promtool (Debian's prometheus package; script/test installs it)");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn the_rules_parse() {
    let out = promtool(&["check", "rules", "charts/nonstop/files/prometheus-rules.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn each_alert_fires_when_it_should_and_only_then() {
    let out = promtool(&["test", "rules", "tests/prometheus/rules_test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}
