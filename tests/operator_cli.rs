//! `nonstop-operator` as a person runs it from a shell.

use std::process::Command;

#[test]
fn crd_subcommand_prints_the_committed_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_nonstop-operator")).arg("crd").output().unwrap();
    assert!(out.status.success());
    let committed: String = ["bgpgateways", "bgpgatewayrollouts", "bgpaddresspools"]
        .map(|name| {
            let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/crds/");
            std::fs::read_to_string(format!("{dir}{name}.nonstop.dev.yaml")).unwrap()
        })
        .concat();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), committed);
}
