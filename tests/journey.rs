//! The README's journey, exactly as it is written: the block after
//! `<!-- journey: … -->` is read from README.md and fed line by line to one
//! bash (so `eval` and variables carry over, as in a user's terminal), each
//! command checked for success. Between the lines, the test looks where a
//! user would: the lab router's table (polled every 200 ms through both
//! upgrades) and its session and UPDATE logs, and after `helm uninstall`
//! that nothing of nonstop is left in the cluster.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use nonstop_lab::router::{RouteEvent, Router, Tally};
use nonstop_lab::testing::{Lab, OPERATOR_NS, Watch, eventually, release_binaries};

const NODES: [&str; 3] = ["node-1", "node-2", "node-3"];
const PREFIXES: [&str; 2] = ["198.51.100.0/24", "203.0.113.0/24"];
/// Lines of the block the test does not run, and why.
const NOT_RUN: [(&str, &str); 2] = [
    ("cargo build", "built before the journey starts (release_binaries)"),
    ("script/lab down", "the rest of the suite uses the lab after this test"),
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_nonstop-operator")).parent().unwrap().to_path_buf()
}

fn uplinks() -> Vec<String> {
    NODES.iter().map(|n| format!("10.99.{}.2", n.trim_start_matches("node-"))).collect()
}

/// The commands of the README's journey block, in order (comments and
/// blank lines dropped).
fn journey() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let (_, after) = readme.split_once("<!-- journey:").expect("README has a journey block");
    let (_, block) = after.split_once("```sh\n").expect("a sh block after the marker");
    let (block, _) = block.split_once("```").expect("the block ends");
    block
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect()
}

/// One bash, fed a line at a time, like a terminal.
struct Shell {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

const DONE: &str = "__journey_step_done__";

impl Shell {
    fn start(dir: &Path, target_dir: &Path) -> Shell {
        let mut child = Command::new("bash")
            .args(["--noprofile", "--norc"])
            .current_dir(dir)
            .env("CARGO_TARGET_DIR", target_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "exec 2>&1").unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Shell { child, stdin, lines }
    }

    /// Runs one line; its output, or the output and exit code as the error.
    fn run(&mut self, line: &str, limit: Duration) -> Result<String, String> {
        writeln!(self.stdin, "{line}\necho \"{DONE} $?\"").map_err(|e| e.to_string())?;
        let deadline = Instant::now() + limit;
        let mut output = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => match l.strip_prefix(DONE) {
                    Some(code) if code.trim() == "0" => return Ok(output),
                    Some(code) => return Err(format!("exit {}:\n{output}", code.trim())),
                    None => {
                        eprintln!("    {l}");
                        output.push_str(&l);
                        output.push('\n');
                    }
                },
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("still running after {limit:?}:\n{output}"));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(format!("bash ended:\n{output}"));
                }
            }
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Puts the lab back for the other tests if the journey stops half-way.
struct Cleanup<'a>(&'a Lab);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.lab(&["helm", "uninstall", "nonstop", "-n", OPERATOR_NS]);
        for node in NODES {
            let _ = self.0.kubectl(&["label", "node", node, "nonstop.dev/gateway-"]);
        }
    }
}

/// The image of each gateway pod not on its way out (a real kubelet takes
/// some seconds to remove a retired agent's pod).
fn gateway_images(lab: &Lab) -> Vec<String> {
    let out = lab.kubectl(&["get", "pods", "-l", "nonstop.dev/gateway=edge", "-o", "json"]);
    let pods: serde_json::Value =
        serde_json::from_str(&out.unwrap_or_default()).unwrap_or_default();
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .filter_map(|p| p["spec"]["containers"][0]["image"].as_str().map(String::from))
        .collect()
}

fn wait_routes(router: &Router, want: &[String]) {
    eventually(Duration::from_secs(30), &format!("every prefix via {want:?}"), || {
        let routes = router.routes()?;
        let ok = PREFIXES.iter().all(|p| routes.get(*p).is_some_and(|hops| hops == want));
        if ok { Ok(()) } else { Err(format!("{routes:?}")) }
    });
}

/// The messages of the gateway's Events with `reason` (this gateway's, not
/// an earlier one's of the same name); with `""`, every Event as
/// `reason: message`.
fn events(lab: &Lab, reason: &str) -> Vec<String> {
    let uid = lab.kubectl(&["get", "bgpgw", "edge", "-o", "jsonpath={.metadata.uid}"]).unwrap();
    let text = lab.kubectl(&["get", "events", "-o", "json"]).unwrap();
    let all: serde_json::Value = serde_json::from_str(&text).unwrap();
    all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["uid"] == uid.as_str())
        .filter(|e| reason.is_empty() || e["reason"] == reason)
        .filter_map(|e| {
            let message = e["message"].as_str()?;
            Some(if reason.is_empty() {
                format!("{}: {message}", e["reason"].as_str().unwrap_or("?"))
            } else {
                message.to_string()
            })
        })
        .collect()
}

/// Nothing of nonstop left in the cluster (but the CRD, which Helm keeps).
fn leftovers(lab: &Lab) -> Result<(), String> {
    let mut left = Vec::new();
    let mut look = |args: &[&str]| -> Result<(), String> {
        let out = lab.kubectl(args)?;
        left.extend(
            out.lines()
                .filter(|l| !l.is_empty() && *l != "serviceaccount/default")
                .map(|l| format!("{}: {l}", args.join(" "))),
        );
        Ok(())
    };
    look(&["get", "bgpgw", "-A", "-o", "name"])?;
    look(&["get", "pods,configmaps", "-A", "-l", "nonstop.dev/gateway", "-o", "name"])?;
    look(&["-n", OPERATOR_NS, "get", "all,lease,serviceaccount,role,rolebinding", "-o", "name"])?;
    let chart = "app.kubernetes.io/instance=nonstop";
    look(&["get", "clusterrole,clusterrolebinding", "-l", chart, "-o", "name"])?;
    if lab.lab(&["helm", "list", "-n", OPERATOR_NS])?.contains("\"nonstop\"") {
        left.push("the Helm release".into());
    }
    if left.is_empty() { Ok(()) } else { Err(left.join("; ")) }
}

#[test]
fn the_readme_journey_from_helm_install_to_helm_uninstall() {
    let lab = Lab::attach(bin_dir().join("lab").to_str().unwrap());
    release_binaries(&root()).unwrap();
    let router = lab.router();
    let steps = journey();
    for must in [
        "script/lab helm install nonstop charts/nonstop",
        "kubectl apply -f examples/lab-gateway.yaml",
        "--set agent.image.tag=0.2.0",
        "kubectl patch bgpgw edge",
        "script/lab helm uninstall nonstop",
    ] {
        assert!(steps.iter().any(|s| s.contains(must)), "the journey lost `{must}`: {steps:#?}");
    }
    // The chart is installed by the journey itself: none from other tests.
    if lab.lab(&["helm", "list", "-n", OPERATOR_NS]).unwrap().contains("\"nonstop\"") {
        lab.lab(&["helm", "uninstall", "nonstop", "-n", OPERATOR_NS]).unwrap();
    }
    let _cleanup = Cleanup(&lab);

    let mut shell = Shell::start(&root(), bin_dir().parent().unwrap());
    let mut watching: Option<(Watch, Tally)> = None;
    let mut rollouts =
        ["ghcr.io/nonstop-dev/nonstop:0.2.0", "ghcr.io/nonstop-dev/nonstop:0.3.0"].into_iter();
    let mut uninstalled = false;
    let started = Instant::now();
    for step in &steps {
        if let Some((_, why)) = NOT_RUN.iter().find(|(prefix, _)| step.starts_with(prefix)) {
            eprintln!("[{:5.1}s] (not run: {why}) $ {step}", started.elapsed().as_secs_f64());
            continue;
        }
        let uninstall = step.starts_with("script/lab helm uninstall");
        let before_uninstall = uninstall.then(|| Tally::of(&router, &uplinks()));
        if uninstall {
            // Both upgrades are behind us: the router saw nothing of them.
            let (watch, before) = watching.take().expect("the gateway was watched");
            let misses = watch.finish();
            assert!(misses.is_empty(), "routes missing during the upgrades: {misses:?}");
            let seen = Tally::of(&router, &uplinks()).since(&before);
            assert!(seen.is_empty(), "the router saw during the upgrades: {seen:?}");
        }

        eprintln!("[{:5.1}s] $ {step}", started.elapsed().as_secs_f64());
        shell.run(step, Duration::from_secs(300)).unwrap_or_else(|e| panic!("`{step}`: {e}"));

        if step.contains("--for=condition=Ready") {
            wait_routes(&router, &uplinks());
            let watch = Watch::start(router.clone(), &PREFIXES, &uplinks(), NODES.len());
            watching = Some((watch, Tally::of(&router, &uplinks())));
        }
        if step.contains("status.rollout}'=Complete") {
            let image = rollouts.next().expect("two rollouts in the journey");
            let images = gateway_images(&lab);
            assert_eq!(images, [image; 3], "after the rollout to {image}");
            // Each node's handoff is an Event of its own, in each rollout.
            let retired = events(&lab, "Retire");
            let rollout = if image.ends_with("0.2.0") { 1 } else { 2 };
            for node in NODES {
                let n = retired.iter().filter(|m| m.contains(&format!("node {node}:"))).count();
                assert_eq!(
                    n,
                    rollout,
                    "{node}'s Retire Events; all Events: {:#?}",
                    events(&lab, "")
                );
            }
        }
        if let Some(before) = before_uninstall {
            // Each node re-announced its routes (GRACEFUL_SHUTDOWN) before
            // it withdrew them and closed its session; nothing is left.
            let routes = router.routes().unwrap();
            assert!(PREFIXES.iter().all(|p| !routes.contains_key(*p)), "{routes:?}");
            let seen = Tally::of(&router, &uplinks()).since(&before);
            for hop in uplinks() {
                let again = seen
                    .announcements
                    .iter()
                    .filter(
                        |e| matches!(e, RouteEvent::Announced { neighbor, .. } if *neighbor == hop),
                    )
                    .count();
                assert!(again >= PREFIXES.len(), "{hop} did not drain first: {seen:?}");
            }
            // A real kubelet removes a pod some seconds after its process
            // ended (its status sync runs every 10 s), and CI runs on 2 cores.
            eventually(Duration::from_secs(120), "nothing of nonstop left", || leftovers(&lab));
            uninstalled = true;
        }
    }
    assert!(rollouts.next().is_none(), "the journey has two rollouts");
    assert!(uninstalled, "the journey ends with helm uninstall");
    eprintln!("journey done in {:.1} s", started.elapsed().as_secs_f64());
}
