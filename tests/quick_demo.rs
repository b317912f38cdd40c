//! `script/demo --quick` as a user runs it (the binary the script execs):
//! two agent binaries and gobgpd in network namespaces, no Kubernetes. The
//! report must say the router saw nothing, and nothing may be left behind.

use std::path::Path;
use std::process::Command;

#[test]
fn the_quick_demo_reports_a_hitless_agent_upgrade() {
    let bin = Path::new(env!("CARGO_BIN_EXE_nonstop-operator")).parent().unwrap();
    let out = Command::new(bin.join("nonstop-demo"))
        .args(["--quick", "--agent", bin.join("nonstop-agent").to_str().unwrap()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", String::from_utf8_lossy(&out.stderr));
    for line in [
        "session resets:  0",
        "withdrawals:     0",
        "UPDATEs from the gateway during the upgrade: 0",
        "routes before:   1002 prefixes via 10.97.0.2",
        "routes after:    1002 prefixes via 10.97.0.2 (identical)",
        "1 session, 2 listeners",
    ] {
        assert!(report.contains(line), "{line}: {report}");
    }
    let pause = report.split("handoff pause ").nth(1).and_then(|r| r.split(" ms").next());
    assert!(pause.and_then(|p| p.parse::<f64>().ok()).is_some(), "no pause: {report}");
    let namespaces = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let left = String::from_utf8_lossy(&namespaces.stdout);
    assert!(!left.contains("quick-"), "namespaces left behind: {left}");
}
