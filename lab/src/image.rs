//! The lab's images: real OCI images built by buildah (Debian's, daemonless)
//! and imported into every node's containerd. Nothing is pulled: the
//! public base images the repository's Dockerfile names are made here from
//! Debian's packages under the same names.
//!
//! - `lab/pause:3.4.1`: the sandbox image, Kubernetes' own pause.c (from the
//!   control plane's source tree) compiled statically.
//! - `gcr.io/distroless/cc-debian12:nonroot`: what that image holds, from
//!   this machine's Debian packages: glibc and libgcc (`libc6`,
//!   `libgcc-s1`), the CA bundle (`ca-certificates`), `/etc/passwd` with
//!   root, nobody and nonroot (65532), `/tmp`, user nonroot.
//! - `lab/tools:1`: the distroless equivalent with busybox
//!   (`busybox-static`), gobgpd and gobgp (`gobgpd`) and the lab's kubectl,
//!   as root: for pods that run a script, a BGP speaker or kubectl.
//! - the nonstop image: the repository's Dockerfile, its `prebuilt` binaries
//!   (the build stage needs the `rust` image and crates.io inside the
//!   builder; the binaries are built on the host by the same cargo command).
//!
//! buildah keeps its store in the cache (`~/.cache/nonstop/buildah`); every
//! image the lab uses is also saved as an OCI archive in `<lab>/images`, so
//! a node started later imports them all.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::node::{self, Node, PAUSE_IMAGE};
use crate::process::run;
use crate::{LabError, Result, cache_dir, io};

pub const BASE_IMAGE: &str = "gcr.io/distroless/cc-debian12:nonroot";
pub const TOOLS_IMAGE: &str = "lab/tools:1";
/// The nonstop image the tests and the demo install.
pub const NONSTOP_IMAGE: &str = "ghcr.io/nonstop-dev/nonstop:dev";

/// buildah with the lab's own store.
fn buildah() -> Command {
    let store = cache_dir().join("buildah");
    let mut c = Command::new("buildah");
    c.arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("run"))
        .args(["--storage-driver", "overlay"]);
    c
}

fn exists(image: &str) -> bool {
    buildah().args(["inspect", "--type", "image", image]).output().is_ok_and(|o| o.status.success())
}

/// Serialises image builds: tests build images in parallel.
fn lock() -> Result<fs::File> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(io("creating the cache dir"))?;
    let lock = fs::File::create(cache.join("buildah.lock")).map_err(io("the image lock"))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io("locking the image store")(e.into()))?;
    Ok(lock)
}

/// A working container `from` (an image or `scratch`), its root mounted.
struct Working {
    id: String,
    root: PathBuf,
}

impl Working {
    fn from(image: &str) -> Result<Working> {
        let id = run("buildah from", buildah().args(["from", "--pull-never", image]))?
            .trim()
            .to_string();
        let root = run("buildah mount", buildah().args(["mount", &id]))?.trim().into();
        Ok(Working { id, root })
    }

    fn config(&self, args: &[&str]) -> Result<()> {
        run("buildah config", buildah().arg("config").args(args).arg(&self.id)).map(|_| ())
    }

    fn commit(self, name: &str) -> Result<()> {
        run("buildah commit", buildah().args(["commit", "-q", &self.id, name]))?;
        Ok(())
    }
}

impl Drop for Working {
    fn drop(&mut self) {
        let _ = buildah().args(["rm", &self.id]).output();
    }
}

/// Copies host files (with their directories) into `root`.
fn copy_in(root: &Path, files: &[String]) -> Result<()> {
    let mut tar = Command::new("sh");
    tar.arg("-c")
        .arg(r#"tar -cf - -T - 2>/dev/null | tar -xf - -C "$0""#)
        .arg(root)
        .stdin(std::process::Stdio::piped());
    let mut child = tar.spawn().map_err(io("tar"))?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("piped");
        stdin.write_all(files.join("\n").as_bytes()).map_err(io("tar's file list"))?;
    }
    let status = child.wait().map_err(io("tar"))?;
    if !status.success() {
        return Err(LabError::Failed(format!("copying files into the image: {status}")));
    }
    Ok(())
}

/// The files Debian package `pkg` installed (regular files and links),
/// without documentation.
fn package_files(pkg: &str) -> Result<Vec<String>> {
    let list = run(&format!("dpkg -L {pkg}"), Command::new("dpkg").args(["-L", pkg]))?;
    Ok(list
        .lines()
        .filter(|f| !f.starts_with("/usr/share/doc") && !f.starts_with("/usr/share/lintian"))
        .filter(|f| {
            fs::symlink_metadata(f).is_ok_and(|m| m.is_file() || m.file_type().is_symlink())
        })
        .map(String::from)
        .collect())
}

/// A root with Debian's merged /usr layout.
fn usr_merged(root: &Path) -> Result<()> {
    for d in ["bin", "lib", "lib64", "sbin"] {
        fs::create_dir_all(root.join("usr").join(d)).map_err(io("usr/"))?;
        std::os::unix::fs::symlink(format!("usr/{d}"), root.join(d)).map_err(io("usr links"))?;
    }
    Ok(())
}

fn write(root: &Path, path: &str, text: &str) -> Result<()> {
    let file = root.join(path.trim_start_matches('/'));
    fs::create_dir_all(file.parent().expect("a file in a directory")).map_err(io(path))?;
    fs::write(&file, text).map_err(io(format!("writing {path}")))
}

fn pause(k8s_tree: &Path) -> Result<()> {
    let src = k8s_tree.join("build/pause/linux/pause.c");
    let out = cache_dir().join("pause");
    run(
        "compiling pause.c",
        Command::new("gcc").args(["-Os", "-static", "-DVERSION=3.4.1", "-o"]).arg(&out).arg(&src),
    )?;
    let w = Working::from("scratch")?;
    fs::copy(&out, w.root.join("pause")).map_err(io("copying pause"))?;
    w.config(&["--entrypoint", r#"["/pause"]"#, "--user", "65535:65535"])?;
    w.commit(PAUSE_IMAGE)
}

fn distroless() -> Result<()> {
    let w = Working::from("scratch")?;
    usr_merged(&w.root)?;
    let mut files = package_files("libc6")?;
    files.retain(|f| !f.contains("/gconv/"));
    files.extend(package_files("libgcc-s1")?);
    files.push("/etc/ssl/certs/ca-certificates.crt".into());
    files.push("/etc/os-release".into());
    files.push("/usr/lib/os-release".into());
    copy_in(&w.root, &files)?;
    write(
        &w.root,
        "/etc/passwd",
        "root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n\
         nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
    )?;
    write(&w.root, "/etc/group", "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n")?;
    for (dir, mode, owner) in
        [("tmp", 0o1777, 0), ("home/nonroot", 0o700, 65532), ("root", 0o700, 0)]
    {
        let d = w.root.join(dir);
        fs::create_dir_all(&d).map_err(io(dir))?;
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&d, fs::Permissions::from_mode(mode)).map_err(io(dir))?;
        std::os::unix::fs::chown(&d, Some(owner), Some(owner)).map_err(io(dir))?;
    }
    w.config(&[
        "--user",
        "65532",
        "--workingdir",
        "/home/nonroot",
        "--env",
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "--env",
        "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
    ])?;
    w.commit(BASE_IMAGE)
}

/// busybox at `/bin/busybox` with a link for every applet.
fn add_busybox(root: &Path) -> Result<()> {
    let bin = root.join("bin");
    if fs::symlink_metadata(&bin).is_err() {
        fs::create_dir_all(&bin).map_err(io("bin/"))?;
    }
    let target = root.join("usr/bin/busybox");
    fs::create_dir_all(target.parent().expect("usr/bin")).map_err(io("usr/bin"))?;
    fs::copy("/bin/busybox", &target).map_err(io("copying busybox"))?;
    let applets = run("busybox --list", Command::new("/bin/busybox").arg("--list"))?;
    for applet in applets.lines().filter(|a| !a.is_empty()) {
        let link = root.join("usr/bin").join(applet);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io("busybox links"))?;
        }
    }
    Ok(())
}

fn tools() -> Result<()> {
    let w = Working::from(BASE_IMAGE)?;
    add_busybox(&w.root)?;
    let bin = w.root.join("usr/bin");
    for (from, name) in [
        (PathBuf::from("/usr/bin/gobgpd"), "gobgpd"),
        (PathBuf::from("/usr/bin/gobgp"), "gobgp"),
        (crate::controlplane::binary("kubectl"), "kubectl"),
    ] {
        let _ = fs::remove_file(bin.join(name));
        fs::copy(&from, bin.join(name)).map_err(io(format!("copying {}", from.display())))?;
    }
    w.config(&["--user", "0", "--workingdir", "/", "--cmd", "/bin/sh"])?;
    w.commit(TOOLS_IMAGE)
}

/// The lab's own images (pause, the distroless equivalent, shell), built
/// once into the cache, and saved for the nodes.
pub fn base(lab: &Path, k8s_tree: &Path) -> Result<()> {
    let _lock = lock()?;
    let made: [(&str, &dyn Fn() -> Result<()>); 3] =
        [(PAUSE_IMAGE, &|| pause(k8s_tree)), (BASE_IMAGE, &distroless), (TOOLS_IMAGE, &tools)];
    for (name, build) in made {
        if !exists(name) {
            println!("==> building image {name}");
            build()?;
        }
        if !archive(lab, name).exists() {
            save(lab, name)?;
        }
    }
    Ok(())
}

fn archive(lab: &Path, image: &str) -> PathBuf {
    let safe: String = image
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' })
        .collect();
    lab.join("images").join(format!("{safe}.oci.tar"))
}

/// The name a kubelet asks containerd for: Docker's normalisation, which
/// puts a short name under docker.io (and a one-word one under library/).
pub fn normalized(image: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    let has_registry =
        image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_registry {
        image.to_string()
    } else if image.contains('/') {
        format!("docker.io/{image}")
    } else {
        format!("docker.io/library/{image}")
    }
}

/// Saves `image` as an OCI archive for the nodes, named as kubelets ask.
fn save(lab: &Path, image: &str) -> Result<()> {
    let path = archive(lab, image);
    fs::create_dir_all(path.parent().expect("images/")).map_err(io("creating images/"))?;
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    run(
        &format!("buildah push {image}"),
        buildah().args(["push", "-q", image]).arg(format!(
            "oci-archive:{}:{}",
            tmp.display(),
            normalized(image)
        )),
    )?;
    fs::rename(&tmp, &path).map_err(io("saving the image archive"))
}

/// Imports one archive into a node's containerd.
fn import(node: &Node, path: &Path) -> Result<()> {
    run(
        &format!("importing {} into {}", path.display(), node.name()),
        node.command("ctr").args(["images", "import"]).arg(path),
    )
    .map(|_| ())
}

/// Every image the lab has saved, into `node`.
pub fn load_all(lab: &Path, node: &Node) -> Result<()> {
    for entry in fs::read_dir(lab.join("images")).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "tar") {
            import(node, &path)?;
        }
    }
    Ok(())
}

/// What an image was last built from (`<lab>/images/NAME.stamp`): when it
/// has not changed, the image is not built again.
fn stamp_path(lab: &Path, image: &str) -> PathBuf {
    archive(lab, image).with_extension("stamp")
}

fn fresh(lab: &Path, image: &str, stamp: &str) -> bool {
    archive(lab, image).exists()
        && fs::read_to_string(stamp_path(lab, image)).is_ok_and(|s| s == stamp)
}

/// Size and modification time of each file: what a rebuild changes.
fn file_stamp(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| match fs::metadata(f).and_then(|m| Ok((m.len(), m.modified()?))) {
            Ok((len, t)) => format!("{} {len} {t:?}\n", f.display()),
            Err(_) => format!("{} missing\n", f.display()),
        })
        .collect()
}

/// Saves `image` and imports it into every node of the lab.
pub fn publish(lab: &Path, image: &str) -> Result<()> {
    save(lab, image)?;
    for node in node::existing(lab) {
        import(&node, &archive(lab, image))?;
    }
    Ok(())
}

/// The nonstop image from the repository's Dockerfile, the binaries in
/// `binaries` (a cargo `release` dir), tagged with each of `tags`.
pub fn nonstop(lab: &Path, repo: &Path, binaries: &Path, tags: &[String]) -> Result<()> {
    let _lock = lock()?;
    let stamp = file_stamp(&[
        binaries.join("nonstop-operator"),
        binaries.join("nonstop-agent"),
        repo.join("Dockerfile"),
    ]);
    if tags.iter().all(|t| fresh(lab, t, &stamp)) {
        return Ok(());
    }
    let context = cache_dir().join("image-context");
    let release = context.join("target/release");
    let _ = fs::remove_dir_all(&context);
    fs::create_dir_all(&release).map_err(io("the build context"))?;
    for bin in ["nonstop-operator", "nonstop-agent"] {
        let from = binaries.join(bin);
        fs::copy(&from, release.join(bin)).map_err(io(format!(
            "{} (build it first: cargo build --release --workspace)",
            from.display()
        )))?;
    }
    let version = run(
        "nonstop-agent --version",
        Command::new(binaries.join("nonstop-agent")).arg("--version"),
    )?;
    let version = version.split_whitespace().last().unwrap_or("0.0.0").to_string();
    let revision = Command::new("git")
        .args(["-C"])
        .arg(repo)
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mut bud = buildah();
    bud.args(["bud", "--pull-never", "--layers=false", "--build-arg", "BINARIES=prebuilt"])
        .args(["--build-arg", &format!("VERSION={version}")])
        .args(["--build-arg", &format!("REVISION={revision}")])
        .arg("-f")
        .arg(repo.join("Dockerfile"));
    for tag in tags {
        bud.args(["-t", tag]);
    }
    bud.arg(&context);
    run("buildah bud (the repository's Dockerfile)", &mut bud)?;
    for tag in tags {
        publish(lab, tag)?;
        fs::write(stamp_path(lab, tag), &stamp).map_err(io("writing the image stamp"))?;
    }
    Ok(())
}

/// A test image: `from` with busybox and `script` in front of the agent
/// (`/usr/local/bin/nonstop-agent`, the real one moved to `….real`).
pub fn wrap(lab: &Path, from: &str, tag: &str, script: &Path) -> Result<()> {
    let _lock = lock()?;
    let text = fs::read_to_string(script).map_err(io(format!("reading {}", script.display())))?;
    let base = fs::read_to_string(stamp_path(lab, from)).unwrap_or_default();
    let stamp = format!("{from}\n{base}{text}");
    if fresh(lab, tag, &stamp) {
        return Ok(());
    }
    let w = Working::from(from)?;
    add_busybox(&w.root)?;
    let bin = w.root.join("usr/local/bin");
    fs::rename(bin.join("nonstop-agent"), bin.join("nonstop-agent.real"))
        .map_err(io(format!("{from} has no /usr/local/bin/nonstop-agent")))?;
    fs::copy(script, bin.join("nonstop-agent")).map_err(io("copying the script"))?;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(bin.join("nonstop-agent"), fs::Permissions::from_mode(0o755))
        .map_err(io("chmod"))?;
    w.commit(tag)?;
    publish(lab, tag)?;
    fs::write(stamp_path(lab, tag), &stamp).map_err(io("writing the image stamp"))
}

/// What node-1's containerd holds.
pub fn list(lab: &Path) -> Result<String> {
    let node = node::existing(lab)
        .into_iter()
        .next()
        .ok_or_else(|| LabError::Failed("no node: lab up first".into()))?;
    run("ctr images ls", node.command("ctr").args(["images", "ls", "-q"]))
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn names_are_normalised_as_a_kubelet_asks_for_them() {
        let cases = [
            ("ghcr.io/nonstop-dev/nonstop:dev", "ghcr.io/nonstop-dev/nonstop:dev"),
            ("lab/pause:3.4.1", "docker.io/lab/pause:3.4.1"),
            ("nonstop-agent:v1", "docker.io/library/nonstop-agent:v1"),
            ("localhost/x:1", "localhost/x:1"),
            ("registry:5000/x:1", "registry:5000/x:1"),
        ];
        for (name, want) in cases {
            assert_eq!(normalized(name), want, "{name}");
        }
    }
}
