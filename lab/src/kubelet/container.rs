//! One container, from its spec to a running process: the image looked up in
//! the lab's image table, the environment and volumes resolved against the
//! API (ConfigMaps, Secrets, the downward API), and a command line that
//! enters the node's network namespace and a mount namespace of its own with
//! every volume bind-mounted at its mountPath.
//!
//! ```text
//!  ip netns exec node-<i> unshare --mount --propagation private --
//!     sh -c 'mkdir -p M; mount --bind V M; …; exec "$@"' -- command args…
//! ```
//!
//! Each exec keeps the pid, so the pid we start is the container's process.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Volume};
use kube::{Api, Client};

use super::images;
use crate::controlplane::{API_HOST, API_PORT};

/// A container ready to start.
#[derive(Debug, Clone)]
pub struct Launch {
    pub argv: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// (host directory or file, mountPath, read only)
    pub mounts: Vec<(PathBuf, String, bool)>,
    pub workdir: Option<String>,
    pub image_path: PathBuf,
}

/// Where a pod's volumes live on the host.
pub fn pod_dir(lab: &Path, uid: &str) -> PathBuf {
    lab.join("pods").join(uid)
}

fn field(pod: &Pod, path: &str, node_ip: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let label = |map: &Option<BTreeMap<String, String>>, key: &str| {
        map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default()
    };
    let spec = pod.spec.as_ref();
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => {
            spec.and_then(|s| s.service_account_name.clone()).unwrap_or_default()
        }
        "status.hostIP" | "status.podIP" => node_ip.to_string(),
        "metadata.labels" | "metadata.annotations" => {
            let map = if path == "metadata.labels" { &meta.labels } else { &meta.annotations };
            map.iter().flatten().map(|(k, v)| format!("{k}=\"{v}\"\n")).collect()
        }
        p => {
            if let Some(key) =
                p.strip_prefix("metadata.labels['").and_then(|k| k.strip_suffix("']"))
            {
                label(&meta.labels, key)
            } else if let Some(key) =
                p.strip_prefix("metadata.annotations['").and_then(|k| k.strip_suffix("']"))
            {
                label(&meta.annotations, key)
            } else {
                return Err(format!("fieldRef {p} is not supported by the lab kubelet"));
            }
        }
    })
}

/// Where keyed data comes from: a ConfigMap or a Secret.
#[derive(Debug, Clone, Copy)]
enum Source {
    ConfigMap,
    Secret,
}

/// The keys of a ConfigMap or Secret (text and binary alike); `None` when it
/// is missing but `optional`.
async fn keyed(
    client: &Client,
    ns: &str,
    source: Source,
    name: &str,
    optional: Option<bool>,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let (kind, found) = match source {
        Source::ConfigMap => (
            "configmap",
            Api::<ConfigMap>::namespaced(client.clone(), ns).get(name).await.map(|c| {
                let text = c.data.into_iter().flatten().map(|(k, v)| (k, v.into_bytes()));
                text.chain(c.binary_data.into_iter().flatten().map(|(k, v)| (k, v.0))).collect()
            }),
        ),
        Source::Secret => (
            "secret",
            Api::<Secret>::namespaced(client.clone(), ns).get(name).await.map(|s| {
                let binary = s.data.into_iter().flatten().map(|(k, v)| (k, v.0));
                binary
                    .chain(s.string_data.into_iter().flatten().map(|(k, v)| (k, v.into_bytes())))
                    .collect()
            }),
        ),
    };
    match found {
        Ok(data) => Ok(Some(data)),
        Err(_) if optional == Some(true) => Ok(None),
        Err(e) => Err(format!("{kind} \"{name}\" not found: {e}")),
    }
}

/// Writes key → file, `items` choosing and renaming keys when given.
fn write_keys(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
    mode: i32,
    what: &str,
) -> Result<(), String> {
    let wanted: Vec<(String, String, Option<i32>)> = match items {
        Some(items) => items.iter().map(|i| (i.key.clone(), i.path.clone(), i.mode)).collect(),
        None => data.keys().map(|k| (k.clone(), k.clone(), None)).collect(),
    };
    for (key, path, item_mode) in wanted {
        let value = data.get(&key).ok_or_else(|| format!("{what} has no key \"{key}\""))?;
        if path.split('/').any(|c| c == "..") || path.starts_with('/') {
            return Err(format!("{what}: path \"{path}\" leaves the volume"));
        }
        let file = dir.join(&path);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        fs::write(&file, value).map_err(|e| format!("writing {}: {e}", file.display()))?;
        let mode = item_mode.unwrap_or(mode) as u32 & 0o777;
        fs::set_permissions(&file, fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Where node `node`'s own filesystem lives: each lab node is a machine of
/// its own, so `hostPath: /var/run/x` on node-1 and on node-2 are two
/// directories, as on two real nodes.
pub fn node_root(lab: &Path, node: &str) -> PathBuf {
    lab.join("nodes").join(node).join("root")
}

/// Makes one volume on the host; returns its path.
async fn volume(
    client: &Client,
    lab: &Path,
    pod: &Pod,
    v: &Volume,
    dir: &Path,
    node_ip: &str,
) -> Result<PathBuf, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let path = dir.join("volumes").join(&v.name);
    let fresh = || -> Result<(), String> {
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).map_err(|e| format!("volume {}: {e}", v.name))
    };
    if let Some(h) = &v.host_path {
        let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("unscheduled");
        let p = node_root(lab, node).join(h.path.trim_start_matches('/'));
        match h.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => {
                fs::create_dir_all(&p).map_err(|e| format!("hostPath {}: {e}", h.path))?
            }
            "Directory" if !p.is_dir() => {
                return Err(format!("hostPath {} is not a directory", h.path));
            }
            "File" if !p.is_file() => return Err(format!("hostPath {} is not a file", h.path)),
            "FileOrCreate" if !p.exists() => {
                fs::write(&p, b"").map_err(|e| format!("hostPath {}: {e}", h.path))?
            }
            _ => {}
        }
        return Ok(p);
    }
    if v.empty_dir.is_some() {
        fs::create_dir_all(&path).map_err(|e| format!("emptyDir {}: {e}", v.name))?;
        return Ok(path);
    }
    let keyed_volume = v
        .config_map
        .as_ref()
        .map(|c| (Source::ConfigMap, c.name.clone(), c.items.as_ref(), c.default_mode, c.optional))
        .or_else(|| {
            v.secret.as_ref().map(|s| {
                let name = s.secret_name.clone().unwrap_or_default();
                (Source::Secret, name, s.items.as_ref(), s.default_mode, s.optional)
            })
        });
    if let Some((source, name, items, mode, optional)) = keyed_volume {
        fresh()?;
        if let Some(data) = keyed(client, ns, source, &name, optional).await? {
            let what = format!("{source:?} \"{name}\"");
            write_keys(&path, &data, items, mode.unwrap_or(0o644), &what)?;
        }
        return Ok(path);
    }
    if let Some(d) = &v.downward_api {
        fresh()?;
        for item in d.items.iter().flatten() {
            let Some(f) = &item.field_ref else {
                return Err(format!("volume {}: only fieldRef items are supported", v.name));
            };
            let mut data = BTreeMap::new();
            data.insert(item.path.clone(), field(pod, &f.field_path, node_ip)?.into_bytes());
            write_keys(
                &path,
                &data,
                None,
                item.mode.or(d.default_mode).unwrap_or(0o644),
                "downwardAPI",
            )?;
        }
        return Ok(path);
    }
    if let Some(p) = &v.projected {
        fresh()?;
        for source in p.sources.iter().flatten() {
            let mode = p.default_mode.unwrap_or(0o644);
            if let Some(c) = &source.config_map {
                if let Some(data) =
                    keyed(client, ns, Source::ConfigMap, &c.name, c.optional).await?
                {
                    write_keys(&path, &data, c.items.as_ref(), mode, "configmap")?;
                }
            } else if let Some(s) = &source.secret {
                if let Some(data) = keyed(client, ns, Source::Secret, &s.name, s.optional).await? {
                    write_keys(&path, &data, s.items.as_ref(), mode, "secret")?;
                }
            } else if let Some(d) = &source.downward_api {
                for item in d.items.iter().flatten() {
                    if let Some(f) = &item.field_ref {
                        let mut data = BTreeMap::new();
                        data.insert(
                            item.path.clone(),
                            field(pod, &f.field_path, node_ip)?.into_bytes(),
                        );
                        write_keys(&path, &data, None, mode, "downwardAPI")?;
                    }
                }
            } else {
                return Err(format!(
                    "volume {}: a projected source the lab kubelet cannot make",
                    v.name
                ));
            }
        }
        return Ok(path);
    }
    Err(format!(
        "volume {}: a kind the lab kubelet cannot make (hostPath, emptyDir, configMap, secret, downwardAPI, projected)",
        v.name
    ))
}

/// `$(VAR)` references, expanded as the kubelet does (`$$` escapes).
pub fn expand(s: &str, env: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(')
            && let Some(end) = body.find(')')
            && let Some(value) = env.get(&body[..end])
        {
            out.push_str(value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Everything a container needs, or why it cannot start
/// (CreateContainerConfigError / ErrImagePull).
pub async fn prepare(
    client: &Client,
    lab: &Path,
    pod: &Pod,
    c: &Container,
    node_ip: &str,
) -> Result<Launch, (&'static str, String)> {
    let config_err = |e: String| ("CreateContainerConfigError", e);
    let image = c.image.clone().unwrap_or_default();
    let image_path = images::lookup(lab, &image).map_err(|e| ("ErrImagePull", e))?;
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let spec = pod.spec.clone().unwrap_or_default();

    let mut env = BTreeMap::new();
    let path_dir = image_path.parent().map(|p| p.display().to_string()).unwrap_or_default();
    env.insert(
        "PATH".into(),
        format!("{path_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    );
    // What a container runtime sets for root: without it, tools write their
    // dotfiles into the kubelet's working directory.
    env.insert("HOME".into(), "/root".into());
    env.insert(
        "HOSTNAME".into(),
        if spec.host_network == Some(true) {
            spec.node_name.clone().unwrap_or_default()
        } else {
            pod.metadata.name.clone().unwrap_or_default()
        },
    );
    env.insert("KUBERNETES_SERVICE_HOST".into(), API_HOST.into());
    env.insert("KUBERNETES_SERVICE_PORT".into(), API_PORT.to_string());
    env.insert("KUBERNETES_SERVICE_PORT_HTTPS".into(), API_PORT.to_string());
    env.insert("KUBERNETES_PORT".into(), format!("tcp://{API_HOST}:{API_PORT}"));
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let refs = [
            from.config_map_ref.as_ref().map(|r| (Source::ConfigMap, &r.name, r.optional)),
            from.secret_ref.as_ref().map(|r| (Source::Secret, &r.name, r.optional)),
        ];
        for (source, name, optional) in refs.into_iter().flatten() {
            let data = keyed(client, ns, source, name, optional).await.map_err(config_err)?;
            for (k, v) in data.into_iter().flatten() {
                env.insert(format!("{prefix}{k}"), String::from_utf8_lossy(&v).into_owned());
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            expand(v, &env)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field(pod, &f.field_path, node_ip).map_err(config_err)?
            } else if let Some((source, k)) = from
                .secret_key_ref
                .as_ref()
                .map(|k| (Source::Secret, (&k.name, &k.key, k.optional)))
                .or_else(|| {
                    let k = from.config_map_key_ref.as_ref()?;
                    Some((Source::ConfigMap, (&k.name, &k.key, k.optional)))
                })
            {
                let (name, key, optional) = k;
                let data = keyed(client, ns, source, name, optional).await.map_err(config_err)?;
                match data.map(|mut d| d.remove(key)) {
                    Some(Some(v)) => String::from_utf8_lossy(&v).into_owned(),
                    _ if optional == Some(true) => continue,
                    _ => {
                        return Err(config_err(format!(
                            "{source:?} \"{name}\" has no key \"{key}\""
                        )));
                    }
                }
            } else {
                return Err(config_err(format!(
                    "env {}: resourceFieldRef is not supported by the lab kubelet",
                    e.name
                )));
            }
        } else {
            String::new()
        };
        env.insert(e.name.clone(), value);
    }

    let dir = pod_dir(lab, pod.metadata.uid.as_deref().unwrap_or("nouid"));
    let mut mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let v =
            spec.volumes.iter().flatten().find(|v| v.name == m.name).ok_or_else(|| {
                config_err(format!("volumeMount {}: no volume of that name", m.name))
            })?;
        let host = volume(client, lab, pod, v, &dir, node_ip).await.map_err(config_err)?;
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) if sub.split('/').any(|c| c == "..") => {
                return Err(config_err(format!(
                    "volumeMount {}: subPath leaves the volume",
                    m.name
                )));
            }
            Some(sub) => host.join(sub),
            None => host,
        };
        mounts.push((host, m.mount_path.clone(), m.read_only == Some(true)));
    }

    let mut argv: Vec<String> = match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => {
            cmd.iter().chain(args.iter().flatten()).cloned().collect()
        }
        (_, args) => std::iter::once(image_path.display().to_string())
            .chain(args.iter().flatten().cloned())
            .collect(),
    };
    for a in &mut argv {
        *a = expand(a, &env);
    }
    Ok(Launch { argv, env, mounts, workdir: c.working_dir.clone(), image_path })
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The command that runs the container in node `ns`.
pub fn command(launch: &Launch, netns: &str) -> Command {
    let mut script = String::from("set -e\n");
    for (host, target, ro) in &launch.mounts {
        let t = quote(target);
        if host.is_dir() {
            script += &format!("mkdir -p {t}\n");
        } else {
            script += &format!("mkdir -p \"$(dirname {t})\"; [ -e {t} ] || : > {t}\n");
        }
        script += &format!("mount --bind {} {t}\n", quote(&host.display().to_string()));
        if *ro {
            script += &format!("mount -o remount,bind,ro {t}\n");
        }
    }
    if let Some(w) = &launch.workdir {
        script += &format!("mkdir -p {0}; cd {0}\n", quote(w));
    }
    script += "exec \"$@\"\n";
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        netns,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        &script,
        "--",
    ]);
    cmd.args(&launch.argv);
    // A container starts in `/` unless its workingDir says otherwise.
    cmd.env_clear().envs(&launch.env).current_dir("/");
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_expand_like_the_kubelet() {
        let env: BTreeMap<String, String> =
            [("NODE".to_string(), "node-1".to_string())].into_iter().collect();
        let cases = [
            ("--id=$(NODE)", "--id=node-1"),
            ("$(NODE)/$(NODE)", "node-1/node-1"),
            ("$$(NODE)", "$(NODE)"),
            ("$(MISSING)", "$(MISSING)"),
            ("cost $5", "cost $5"),
            ("$(NODE", "$(NODE"),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, &env), want, "{input}");
        }
    }
}
