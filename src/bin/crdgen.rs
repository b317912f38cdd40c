//! Writes the BgpGateway CRD to `crds/` and the chart's `crds/`, or to stdout
//! with `crdgen -`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let yaml = nonstop::crd::yaml();
    if std::env::args().nth(1).as_deref() == Some("-") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for relative in nonstop::crd::PATHS {
        let path = root.join(relative);
        let written = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&path, &yaml));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {relative}");
    }
    ExitCode::SUCCESS
}
