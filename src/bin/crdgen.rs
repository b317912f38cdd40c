//! Writes the CRDs to `crds/` and the chart's `crds/`, or to stdout with
//! `crdgen -`.

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("-") {
        print!("{}", nonstop::crd::documents());
        return ExitCode::SUCCESS;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for dir in nonstop::crd::DIRS {
        for (file, yaml) in nonstop::crd::all() {
            let relative = format!("{dir}/{file}");
            let path = root.join(&relative);
            let written =
                std::fs::create_dir_all(root.join(dir)).and_then(|()| std::fs::write(&path, &yaml));
            if let Err(e) = written {
                eprintln!("error: cannot write {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
            println!("wrote {relative}");
        }
    }
    ExitCode::SUCCESS
}
