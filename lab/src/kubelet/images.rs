//! The lab's image table: an image reference (`nonstop-agent:v2`) names a
//! binary on this machine, so bumping a pod's image runs another binary.
//! Kept in `<lab dir>/images.json`; `lab image add NAME PATH` writes it.
//! `lab/shell:1` is always there (`/bin/sh`), for pods that only run a script.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const SHELL_IMAGE: &str = "lab/shell:1";

fn table_path(lab: &Path) -> PathBuf {
    lab.join("images.json")
}

/// Every image the lab knows, with its binary.
pub fn table(lab: &Path) -> BTreeMap<String, PathBuf> {
    let mut t: BTreeMap<String, PathBuf> = fs::read(table_path(lab))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    t.entry(SHELL_IMAGE.into()).or_insert_with(|| "/bin/sh".into());
    t
}

/// Adds or moves an image; the binary must exist and be executable.
pub fn add(lab: &Path, image: &str, binary: &Path) -> Result<(), String> {
    if image.is_empty() || image.contains(char::is_whitespace) {
        return Err(format!("{image:?} is not an image reference"));
    }
    let binary = fs::canonicalize(binary).map_err(|e| format!("{}: {e}", binary.display()))?;
    let mode = fs::metadata(&binary).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    if !mode.is_file() || mode.permissions().mode() & 0o111 == 0 {
        return Err(format!("{} is not an executable file", binary.display()));
    }
    let mut t = table(lab);
    t.insert(image.to_string(), binary);
    fs::create_dir_all(lab).map_err(|e| e.to_string())?;
    let text = serde_json::to_vec_pretty(&t).expect("a map of strings serialises");
    fs::write(table_path(lab), text).map_err(|e| e.to_string())
}

/// The binary behind an image, or a message saying how to add it.
pub fn lookup(lab: &Path, image: &str) -> Result<PathBuf, String> {
    let t = table(lab);
    let path = t.get(image).ok_or_else(|| {
        format!(
            "image {image:?} is not in the lab's image table (known: {}); add it with `lab image add {image} /path/to/binary`",
            t.keys().cloned().collect::<Vec<_>>().join(", ")
        )
    })?;
    if path.is_file() {
        Ok(path.clone())
    } else {
        Err(format!("image {image:?} names {}, which does not exist", path.display()))
    }
}
