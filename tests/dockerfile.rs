//! The image's layout, read from the Dockerfile (no container engine here):
//! a build stage and a distroless runtime stage holding both binaries, a
//! non-root user, the operator as entrypoint, labels naming the source and a
//! version that matches the crate and the chart. script/test runs the build
//! stage's cargo command; when its binaries are there, they are checked too.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// (instruction, arguments) of every instruction, continuation lines joined.
fn instructions() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let joined = text.replace("\\\n", " ");
    joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (op, rest) = l.split_once(' ').unwrap_or((l, ""));
            (op.to_uppercase(), rest.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

fn label(all: &[(String, String)], key: &str) -> Option<String> {
    all.iter().filter(|(op, _)| op == "LABEL").find_map(|(_, args)| {
        let at = args.find(&format!("{key}="))? + key.len() + 1;
        let value = args[at..].trim_start_matches('"');
        Some(value[..value.find('"').unwrap_or(value.len())].to_string())
    })
}

#[test]
fn the_image_is_two_stages_with_both_binaries_non_root() {
    let all = instructions();
    let froms: Vec<&String> = all.iter().filter(|(op, _)| op == "FROM").map(|(_, a)| a).collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage: {froms:?}");
    assert!(froms[0].ends_with("AS build"), "{}", froms[0]);
    assert!(froms[1].starts_with("gcr.io/distroless/"), "a small runtime base: {}", froms[1]);
    // Only what runs: the two binaries from the build stage, nothing else.
    let copies: Vec<&String> = all
        .iter()
        .filter(|(op, a)| op == "COPY" && a.starts_with("--from="))
        .map(|(_, a)| a)
        .collect();
    assert_eq!(
        copies,
        [
            "--from=build /src/target/release/nonstop-operator /src/target/release/nonstop-agent /usr/local/bin/"
        ]
    );
    let run: Vec<&String> = all.iter().filter(|(op, _)| op == "RUN").map(|(_, a)| a).collect();
    assert_eq!(
        run,
        ["cargo build --release --locked --workspace --bin nonstop-operator --bin nonstop-agent"],
        "the one build command (script/test runs it as is)"
    );
    let user = all.iter().rev().find(|(op, _)| op == "USER").map(|(_, a)| a.as_str());
    assert_eq!(user, Some("nonroot"), "the runtime user");
    let entry = all.iter().rev().find(|(op, _)| op == "ENTRYPOINT").map(|(_, a)| a.as_str());
    assert_eq!(entry, Some(r#"["/usr/local/bin/nonstop-operator"]"#));
    // The chart runs `nonstop-operator` and the agent pods `nonstop-agent`
    // by name: both must be on the runtime PATH (/usr/local/bin).
}

#[test]
fn the_labels_name_the_source_and_the_version_everything_else_uses() {
    let all = instructions();
    assert_eq!(
        label(&all, "org.opencontainers.image.source").as_deref(),
        Some("https://github.com/nonstop-dev/nonstop")
    );
    assert_eq!(label(&all, "org.opencontainers.image.version").as_deref(), Some("${VERSION}"));
    let version = all
        .iter()
        .find_map(|(op, a)| (op == "ARG").then(|| a.strip_prefix("VERSION=")).flatten())
        .expect("ARG VERSION=<default>");
    assert_eq!(version, env!("CARGO_PKG_VERSION"), "the image's default version is the crate's");
    let chart = std::fs::read_to_string(root().join("charts/nonstop/Chart.yaml")).unwrap();
    assert!(
        chart.contains(&format!("appVersion: \"{version}\"")),
        "the chart's image tag: {chart}"
    );
}

#[test]
fn the_build_stage_binaries_run_when_built() {
    // script/test runs the build stage's command before the tests and says
    // so (NONSTOP_RELEASE_BUILT); a plain `cargo nextest` run may not have.
    let required = std::env::var_os("NONSTOP_RELEASE_BUILT").is_some();
    let debug = Path::new(env!("CARGO_BIN_EXE_nonstop-operator")).parent().unwrap();
    let release = debug.parent().unwrap().join("release");
    for binary in ["nonstop-operator", "nonstop-agent"] {
        let path = release.join(binary);
        if !path.exists() {
            assert!(!required, "{} is missing after the build stage ran", path.display());
            eprintln!("{} not built (script/test builds it): skipped", path.display());
            continue;
        }
        let out = Command::new(&path).arg("--version").output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(env!("CARGO_PKG_VERSION")), "{text}");
    }
}
