//! The control plane: etcd, kube-apiserver (RBAC, ServiceAccount tokens, its
//! own CA so pods can verify it), kube-controller-manager (garbage
//! collection, ServiceAccount tokens) and kube-scheduler, started as lab
//! daemons; the bridge `nslab0` that node namespaces reach the API through;
//! the admin kubeconfig.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::process::{self, run, wait_for};
use crate::{K8S_VERSION, LabError, Result, cache_dir, io};

/// The API server's address on the lab bridge, reachable from every node.
pub const API_HOST: &str = "10.98.0.1";
pub const API_PORT: u16 = 6443;
pub const BRIDGE: &str = "nslab0";
pub const DAEMONS: [&str; 4] =
    ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"];

pub fn binary(name: &str) -> PathBuf {
    cache_dir().join(format!("k8s-{K8S_VERSION}")).join(name)
}

/// The unpacked Kubernetes source the binaries were built from (the lab's
/// pause image is compiled from it too).
pub fn source_tree() -> PathBuf {
    cache_dir().join("k8s-src/gopath/src/k8s.io/kubernetes")
}

pub fn kubeconfig(dir: &Path) -> PathBuf {
    dir.join("kubeconfig")
}

/// Builds (or finds cached) control-plane binaries, printing progress.
pub fn build(repo: &Path) -> Result<()> {
    let status = Command::new(repo.join("lab/build-control-plane"))
        .status()
        .map_err(io("running lab/build-control-plane"))?;
    if !status.success() {
        return Err(LabError::Failed("building the control plane failed (output above)".into()));
    }
    Ok(())
}

fn sh(args: &[&str]) -> Result<String> {
    run(&args.join(" "), Command::new(args[0]).args(&args[1..]))
}

/// The lab bridge with the API's address; idempotent.
pub fn bridge() -> Result<()> {
    if Command::new("ip").args(["link", "show", BRIDGE]).output().is_ok_and(|o| o.status.success())
    {
        return Ok(());
    }
    sh(&["ip", "link", "add", BRIDGE, "type", "bridge"])?;
    sh(&["ip", "addr", "add", &format!("{API_HOST}/16"), "dev", BRIDGE])?;
    sh(&["ip", "link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// A CA, the API server's certificate (for its bridge address, loopback and
/// the `kubernetes` service names), the ServiceAccount key pair and the admin
/// token; made once per lab dir.
pub fn pki(dir: &Path) -> Result<String> {
    let pki = dir.join("pki");
    let token_file = pki.join("admin.token");
    if let Ok(token) = fs::read_to_string(&token_file) {
        return Ok(token.trim().to_string());
    }
    fs::create_dir_all(&pki).map_err(io("creating the pki dir"))?;
    let p = |f: &str| pki.join(f).display().to_string();
    sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("ca.key"),
        "-out",
        &p("ca.crt"),
        "-days",
        "365",
        "-subj",
        "/CN=nonstop-lab-ca",
    ])?;
    sh(&[
        "openssl",
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        &p("apiserver.key"),
        "-out",
        &p("apiserver.csr"),
        "-subj",
        "/CN=kube-apiserver",
    ])?;
    let sans = format!(
        "subjectAltName=IP:{API_HOST},IP:127.0.0.1,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,\
         DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
    );
    fs::write(pki.join("san.cnf"), sans).map_err(io("san.cnf"))?;
    sign(&pki, &p("apiserver.csr"), &p("apiserver.crt"), &["-extfile", &p("san.cnf")])?;
    sh(&["openssl", "genrsa", "-out", &p("sa.key"), "2048"])?;
    sh(&["openssl", "rsa", "-in", &p("sa.key"), "-pubout", "-out", &p("sa.pub")])?;
    let mut bytes = [0u8; 16];
    use std::io::Read;
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(io("/dev/urandom"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    fs::write(pki.join("tokens.csv"), format!("{token},admin,admin,system:masters\n"))
        .map_err(io("tokens.csv"))?;
    client_cert(
        dir,
        "apiserver-kubelet-client",
        "kube-apiserver-kubelet-client",
        "system:masters",
    )?;
    client_cert(dir, "kube-proxy", "system:kube-proxy", "nonstop-lab")?;
    fs::write(&token_file, &token).map_err(io("admin.token"))?;
    Ok(token)
}

/// A client certificate signed by the lab CA (`pki/NAME.crt`, `.key`) for
/// user `cn` in group `org`; made once.
pub fn client_cert(dir: &Path, name: &str, cn: &str, org: &str) -> Result<(PathBuf, PathBuf)> {
    let pki = dir.join("pki");
    let (crt, key) = (pki.join(format!("{name}.crt")), pki.join(format!("{name}.key")));
    if crt.exists() && key.exists() {
        return Ok((crt, key));
    }
    let p = |f: &str| pki.join(f).display().to_string();
    let csr = p(&format!("{name}.csr"));
    let subject = format!("/O={org}/CN={cn}");
    let key_path = key.display().to_string();
    sh(&[
        "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key_path, "-out", &csr,
        "-subj", &subject,
    ])?;
    let tmp = p(&format!(".{name}.crt"));
    sign(&pki, &csr, &tmp, &[])?;
    fs::rename(&tmp, &crt).map_err(io(format!("writing {}", crt.display())))?;
    Ok((crt, key))
}

/// Signs `csr` with the lab CA into `out` (a year).
fn sign(pki: &Path, csr: &str, out: &str, extra: &[&str]) -> Result<()> {
    let (ca, ca_key) = (pki.join("ca.crt"), pki.join("ca.key"));
    let mut args = vec!["openssl", "x509", "-req", "-in", csr, "-out", out, "-days", "365"];
    let (ca, ca_key) = (ca.display().to_string(), ca_key.display().to_string());
    args.extend(["-CA", &ca, "-CAkey", &ca_key, "-CAcreateserial"]);
    args.extend(extra);
    sh(&args).map(|_| ())
}

fn write_kubeconfig(dir: &Path, token: &str) -> Result<()> {
    let ca = dir.join("pki/ca.crt");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://{API_HOST}:{API_PORT}\n    \
         certificate-authority: {}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: lab\n  \
         context: {{cluster: lab, user: admin, namespace: default}}\ncurrent-context: lab\n",
        ca.display()
    );
    fs::write(kubeconfig(dir), text).map_err(io("writing the kubeconfig"))
}

/// The API answers /readyz.
pub fn ready(dir: &Path) -> std::result::Result<(), String> {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig(dir))
        .args(["get", "--raw", "/readyz", "--request-timeout=3s"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Starts whatever part of the control plane is not running.
pub fn start(dir: &Path) -> Result<()> {
    bridge()?;
    let token = pki(dir)?;
    write_kubeconfig(dir, &token)?;
    let p = |f: &str| dir.join("pki").join(f).display().to_string();
    let etcd_dir = dir.join("etcd");
    let mut etcd = Command::new("etcd");
    etcd.args(["--data-dir", &etcd_dir.display().to_string()])
        .args([
            "--listen-client-urls",
            "http://127.0.0.1:2379",
            "--advertise-client-urls",
            "http://127.0.0.1:2379",
        ])
        .args(["--listen-peer-urls", "http://127.0.0.1:2380"]);
    process::start(dir, "etcd", etcd)?;

    let mut api = Command::new(binary("kube-apiserver"));
    api.args(["--etcd-servers=http://127.0.0.1:2379", &format!("--bind-address={API_HOST}")])
        .args([
            &format!("--secure-port={API_PORT}"),
            &format!("--advertise-address={API_HOST}"),
            "--insecure-port=0",
        ])
        .args([
            format!("--tls-cert-file={}", p("apiserver.crt")),
            format!("--tls-private-key-file={}", p("apiserver.key")),
        ])
        .args([
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--token-auth-file={}", p("tokens.csv")),
        ])
        // Kubelets as a real cluster has them: each with its node's own
        // identity, limited by the Node authorizer and NodeRestriction; the
        // API reaches them (logs, exec) at their InternalIP with its own
        // client certificate.
        .args([
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc",
        ])
        .args([
            format!("--kubelet-client-certificate={}", p("apiserver-kubelet-client.crt")),
            format!("--kubelet-client-key={}", p("apiserver-kubelet-client.key")),
        ])
        .args([
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
        ])
        .args(["--service-cluster-ip-range=10.96.0.0/16", "--allow-privileged=true"]);
    process::start(dir, "kube-apiserver", api)?;
    wait_for("the API server", Duration::from_secs(90), || ready(dir))?;

    let config = kubeconfig(dir).display().to_string();
    let mut cm = Command::new(binary("kube-controller-manager"));
    cm.args([
        format!("--kubeconfig={config}"),
        format!("--service-account-private-key-file={}", p("sa.key")),
    ])
    .args([
        format!("--root-ca-file={}", p("ca.crt")),
        "--use-service-account-credentials=true".into(),
    ])
    .args(["--leader-elect=false", "--bind-address=127.0.0.1", "--port=0"])
    // A node whose kubelet stops is NotReady after 20 s, not 40: the
    // tests of a lost node wait for that.
    .args(["--node-monitor-grace-period=20s", "--node-monitor-period=2s"]);
    process::start(dir, "kube-controller-manager", cm)?;
    let mut sched = Command::new(binary("kube-scheduler"));
    sched.args([
        format!("--kubeconfig={config}"),
        "--leader-elect=false".into(),
        "--bind-address=127.0.0.1".into(),
        "--port=0".into(),
    ]);
    process::start(dir, "kube-scheduler", sched)?;
    Ok(())
}

pub fn stop(dir: &Path) {
    for name in DAEMONS.iter().rev() {
        process::stop(dir, name, Duration::from_secs(10));
    }
    process::kill_all(&process::strays(&dir.display().to_string()));
    let _ = Command::new("ip").args(["link", "del", BRIDGE]).output();
}
