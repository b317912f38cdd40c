//! One pod on one lab node, from binding to removal: init containers in
//! order, then every container as a process (see `container`), restarted per
//! `restartPolicy` with a capped backoff, probed, and reported truthfully in
//! the pod's status. Deletion: SIGTERM to each container's process group,
//! the grace period, SIGKILL, then the pod object goes.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::container::{self, pod_dir};
use super::probe;
use crate::network::{node_ip, node_name};

/// What the watch tells a pod's worker.
#[derive(Debug)]
pub enum Update {
    Changed(Box<Pod>),
    Gone,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Waiting { reason: String, message: String },
    Running { started: String },
    Terminated { code: i32, reason: String, message: String, started: String, finished: String },
}

#[derive(Debug)]
struct Run {
    spec: Container,
    init: bool,
    child: Option<tokio::process::Child>,
    pid: Option<u32>,
    state: State,
    last: Option<State>,
    restarts: i32,
    ready: bool,
    next_start: Instant,
    backoff: Duration,
    readiness: Streak,
    liveness: Streak,
}

/// Probe results in a row and when the probe is next due.
#[derive(Debug, Default)]
struct Streak {
    ok: u32,
    failed: u32,
    due: Option<Instant>,
}

impl Run {
    fn new(spec: Container, init: bool) -> Self {
        Run {
            spec,
            init,
            child: None,
            pid: None,
            state: State::Waiting { reason: "ContainerCreating".into(), message: String::new() },
            last: None,
            restarts: 0,
            ready: false,
            next_start: Instant::now(),
            backoff: Duration::from_secs(1),
            readiness: Streak::default(),
            liveness: Streak::default(),
        }
    }

    fn exited_ok(&self) -> bool {
        matches!(self.state, State::Terminated { code: 0, .. })
    }
}

fn now() -> String {
    super::time(Timestamp::now())
}

pub struct Worker {
    client: Client,
    lab: PathBuf,
    pod: Pod,
    node: usize,
    runs: Vec<Run>,
    started: String,
    reported: Value,
}

impl Worker {
    pub fn new(client: Client, lab: PathBuf, pod: Pod, node: usize) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let mut runs: Vec<Run> =
            spec.init_containers.iter().flatten().cloned().map(|c| Run::new(c, true)).collect();
        runs.extend(spec.containers.iter().cloned().map(|c| Run::new(c, false)));
        Worker { client, lab, pod, node, runs, started: now(), reported: Value::Null }
    }

    fn name(&self) -> String {
        format!(
            "{}/{}",
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.pod.metadata.name.as_deref().unwrap_or("")
        )
    }

    fn policy(&self) -> String {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.restart_policy.clone())
            .unwrap_or_else(|| "Always".into())
    }

    fn log_path(&self, container: &str) -> PathBuf {
        super::log_path(
            &self.lab,
            self.pod.metadata.namespace.as_deref().unwrap_or("default"),
            self.pod.metadata.name.as_deref().unwrap_or(""),
            container,
        )
    }

    /// Runs the pod until it is deleted.
    pub async fn run(mut self, mut updates: mpsc::Receiver<Update>) {
        info!(pod = self.name(), node = self.node, "pod bound here");
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                u = updates.recv() => match u {
                    Some(Update::Changed(pod)) => self.pod = *pod,
                    Some(Update::Gone) | None => {
                        self.terminate(Duration::ZERO).await;
                        self.cleanup();
                        return;
                    }
                },
                _ = tick.tick() => {}
            }
            if let Some(grace) = self.deleting() {
                self.terminate(grace).await;
                self.report().await;
                self.remove().await;
                self.cleanup();
                return;
            }
            self.step().await;
            self.report().await;
        }
    }

    fn deleting(&self) -> Option<Duration> {
        self.pod.metadata.deletion_timestamp.as_ref()?;
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref()?.termination_grace_period_seconds)
            .unwrap_or(30);
        Some(Duration::from_secs(secs.max(0) as u64))
    }

    /// SIGTERM every container, wait up to `grace` for them all, SIGKILL.
    async fn terminate(&mut self, grace: Duration) {
        for r in self.runs.iter().filter(|r| r.pid.is_some()) {
            signal(r.pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + grace;
        loop {
            self.reap();
            if self.runs.iter().all(|r| r.pid.is_none()) {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for r in self.runs.iter_mut() {
            if r.pid.is_some() {
                warn!(container = r.spec.name, "still running after the grace period: SIGKILL");
                signal(r.pid, rustix::process::Signal::KILL);
                if let Some(c) = r.child.as_mut() {
                    let _ = c.wait().await;
                }
            }
        }
        self.reap();
    }

    async fn remove(&self) {
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: self.pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match pods.delete(&name, &dp).await {
            Ok(_) => info!(pod = self.name(), "removed"),
            Err(e) => warn!(pod = self.name(), "removing: {e}"),
        }
    }

    fn cleanup(&self) {
        let _ = fs::remove_dir_all(pod_dir(
            &self.lab,
            self.pod.metadata.uid.as_deref().unwrap_or("nouid"),
        ));
    }

    /// Notes containers that ended.
    fn reap(&mut self) {
        let logs: Vec<PathBuf> = self.runs.iter().map(|r| self.log_path(&r.spec.name)).collect();
        for (r, log) in self.runs.iter_mut().zip(logs) {
            let Some(child) = r.child.as_mut() else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                use std::os::unix::process::ExitStatusExt;
                let code = status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                let started = match &r.state {
                    State::Running { started } => started.clone(),
                    _ => now(),
                };
                let reason = if code == 0 { "Completed" } else { "Error" };
                // terminationMessagePolicy FallbackToLogsOnError: a failed
                // container's last words (the kubelet's 80 lines / 2 KiB).
                let fallback =
                    r.spec.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
                let message = if code != 0 && fallback { log_tail(&log) } else { String::new() };
                info!(container = r.spec.name, code, "container exited");
                // The container ends with its main process, as a runtime
                // ends its cgroup: nothing it started lives on.
                signal(r.pid, rustix::process::Signal::KILL);
                r.state = State::Terminated {
                    code,
                    reason: reason.into(),
                    message,
                    started,
                    finished: now(),
                };
                r.child = None;
                r.pid = None;
                r.ready = false;
            }
        }
    }

    /// Starts, restarts and probes containers.
    async fn step(&mut self) {
        self.reap();
        let policy = self.policy();
        // Init containers one at a time, each to success, before the rest.
        let init_pending = self.runs.iter().position(|r| r.init && !r.exited_ok());
        let eligible: Vec<usize> = match init_pending {
            Some(i) => vec![i],
            None => (0..self.runs.len()).filter(|i| !self.runs[*i].init).collect(),
        };
        for i in eligible {
            let r = &self.runs[i];
            let restart = match &r.state {
                State::Waiting { .. } => true,
                State::Running { .. } => false,
                State::Terminated { code, .. } => match policy.as_str() {
                    "Never" => false,
                    "OnFailure" => *code != 0,
                    _ => !r.init || *code != 0,
                },
            };
            if restart && Instant::now() >= r.next_start {
                self.start(i).await;
            }
        }
        self.probe_all().await;
    }

    async fn start(&mut self, i: usize) {
        let netns = node_name(self.node);
        let ip = node_ip(self.node);
        let spec = self.runs[i].spec.clone();
        let log_path = self.log_path(&spec.name);
        let launch = container::prepare(&self.client, &self.lab, &self.pod, &spec, &ip).await;
        let r = &mut self.runs[i];
        let was_terminated = matches!(r.state, State::Terminated { .. });
        let launch = match launch {
            Ok(l) => l,
            Err((reason, message)) => {
                if r.state != (State::Waiting { reason: reason.into(), message: message.clone() }) {
                    warn!(container = spec.name, "{reason}: {message}");
                }
                r.state = State::Waiting { reason: reason.into(), message };
                r.next_start = Instant::now() + Duration::from_secs(2);
                return;
            }
        };
        if let Some(parent) = log_path.parent() {
            let _ = fs::create_dir_all(parent);
        }
        let log = fs::OpenOptions::new().create(true).append(true).open(&log_path);
        let mut cmd = container::command(&launch, &netns);
        if let Ok(log) = log
            && let Ok(err) = log.try_clone()
        {
            cmd.stdout(log).stderr(err);
        }
        cmd.stdin(std::process::Stdio::null());
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let mut cmd = tokio::process::Command::from(cmd);
        cmd.kill_on_drop(false);
        match cmd.spawn() {
            Ok(child) => {
                if was_terminated {
                    r.last = Some(r.state.clone());
                    r.restarts += 1;
                    r.backoff = (r.backoff * 2).min(Duration::from_secs(30));
                }
                r.pid = child.id();
                r.child = Some(child);
                r.state = State::Running { started: now() };
                r.ready = false;
                r.readiness = Streak::default();
                r.liveness = Streak::default();
                r.next_start = Instant::now() + r.backoff;
                info!(
                    container = spec.name,
                    pid = r.pid,
                    image = launch.image_path.display().to_string(),
                    "container started"
                );
            }
            Err(e) => {
                r.state =
                    State::Waiting { reason: "RunContainerError".into(), message: e.to_string() };
                r.next_start = Instant::now() + Duration::from_secs(2);
            }
        }
    }

    async fn probe_all(&mut self) {
        let netns = node_name(self.node);
        let ip = node_ip(self.node);
        let grace =
            self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
        for r in self.runs.iter_mut().filter(|r| !r.init) {
            let (Some(pid), State::Running { .. }) = (r.pid, &r.state) else { continue };
            let ports: Vec<(String, i32)> = r
                .spec
                .ports
                .iter()
                .flatten()
                .map(|p| (p.name.clone().unwrap_or_default(), p.container_port))
                .collect();
            match r.spec.readiness_probe.clone() {
                None => r.ready = true,
                Some(p) => {
                    if let Some(ok) = due(&mut r.readiness, &p, &netns, &ip, pid, &ports).await {
                        let t = probe::timing(&p);
                        if ok && r.readiness.ok >= t.success_threshold {
                            r.ready = true;
                        } else if !ok && r.readiness.failed >= t.failure_threshold {
                            r.ready = false;
                        }
                    }
                }
            }
            if let Some(p) = r.spec.liveness_probe.clone()
                && due(&mut r.liveness, &p, &netns, &ip, pid, &ports).await == Some(false)
                && r.liveness.failed >= probe::timing(&p).failure_threshold
            {
                warn!(container = r.spec.name, "liveness probe failed: restarting");
                signal(r.pid, rustix::process::Signal::TERM);
                let deadline = Instant::now() + Duration::from_secs(grace.max(0) as u64);
                if let Some(c) = r.child.as_mut() {
                    while Instant::now() < deadline {
                        if let Ok(Some(_)) = c.try_wait() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                signal(r.pid, rustix::process::Signal::KILL);
                r.liveness = Streak::default();
            }
        }
    }

    /// The pod's status as it stands, patched when it changed.
    async fn report(&mut self) {
        let status = self.status();
        if status == self.reported {
            return;
        }
        let ns = self.pod.metadata.namespace.as_deref().unwrap_or("default");
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let name = self.pod.metadata.name.clone().unwrap_or_default();
        match pods
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status})))
            .await
        {
            Ok(_) => self.reported = status,
            Err(e) => warn!(pod = self.name(), "status: {e}"),
        }
    }

    fn status(&self) -> Value {
        let state_json = |s: &State| match s {
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            State::Running { started } => json!({"running": {"startedAt": started}}),
            State::Terminated { code, reason, message, started, finished } => {
                json!({"terminated": {
                "exitCode": code, "reason": reason, "message": message,
                "startedAt": started, "finishedAt": finished}})
            }
        };
        let statuses = |init: bool| -> Vec<Value> {
            self.runs
                .iter()
                .filter(|r| r.init == init)
                .map(|r| {
                    json!({
                        "name": r.spec.name,
                        "image": r.spec.image.clone().unwrap_or_default(),
                        "imageID": format!("lab://{}", r.spec.image.clone().unwrap_or_default()),
                        "containerID": r.pid.map(|p| format!("lab://{p}")),
                        "ready": r.ready,
                        "started": matches!(r.state, State::Running { .. }),
                        "restartCount": r.restarts,
                        "state": state_json(&r.state),
                        "lastState": r.last.as_ref().map(state_json).unwrap_or(json!({})),
                    })
                })
                .collect()
        };
        let mains: Vec<&Run> = self.runs.iter().filter(|r| !r.init).collect();
        let initialized = self.runs.iter().filter(|r| r.init).all(Run::exited_ok);
        let all_ready = initialized && mains.iter().all(|r| r.ready);
        let policy = self.policy();
        let ended = |r: &&Run| matches!(r.state, State::Terminated { .. }) && r.pid.is_none();
        let phase = if !mains.is_empty()
            && mains.iter().all(|r| r.exited_ok())
            && policy != "Always"
        {
            "Succeeded"
        } else if policy == "Never" && !mains.is_empty() && mains.iter().all(ended)
            || policy == "Never" && self.runs.iter().any(|r| r.init && ended(&r) && !r.exited_ok())
        {
            "Failed"
        } else if initialized && mains.iter().any(|r| !matches!(r.state, State::Waiting { .. })) {
            "Running"
        } else {
            "Pending"
        };
        let cond = |t: &str, ok: bool| json!({"type": t, "status": if ok { "True" } else { "False" }, "lastTransitionTime": self.started});
        let ip = node_ip(self.node);
        json!({
            "phase": phase,
            "hostIP": ip,
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": self.started,
            "conditions": [
                cond("PodScheduled", true),
                cond("Initialized", initialized),
                cond("ContainersReady", all_ready),
                cond("Ready", all_ready),
            ],
            "initContainerStatuses": statuses(true),
            "containerStatuses": statuses(false),
        })
    }
}

/// Runs a probe if it is due; Some(result) when it ran.
async fn due(
    streak: &mut Streak,
    p: &k8s_openapi::api::core::v1::Probe,
    netns: &str,
    ip: &str,
    pid: u32,
    ports: &[(String, i32)],
) -> Option<bool> {
    let t = probe::timing(p);
    let now = Instant::now();
    let at = *streak.due.get_or_insert(now + t.initial_delay);
    if now < at {
        return None;
    }
    streak.due = Some(now + t.period);
    let (p, netns, ip, ports) = (p.clone(), netns.to_string(), ip.to_string(), ports.to_vec());
    let result = tokio::task::spawn_blocking(move || probe::run(&p, &netns, &ip, pid, &ports))
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
    match result {
        Ok(()) => {
            streak.ok += 1;
            streak.failed = 0;
            Some(true)
        }
        Err(why) => {
            tracing::debug!(pid, "probe failed: {why}");
            streak.failed += 1;
            streak.ok = 0;
            Some(false)
        }
    }
}

/// SIGTERM goes to the container's main process, as a runtime sends it to
/// PID 1; SIGKILL to its whole process group, as a runtime ends a cgroup.
fn signal(pid: Option<u32>, sig: rustix::process::Signal) {
    if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
        let _ = if sig == rustix::process::Signal::KILL {
            rustix::process::kill_process_group(pid, sig)
        } else {
            rustix::process::kill_process(pid, sig)
        };
    }
}

/// The end of a container's log, as the kubelet keeps it for a termination
/// message: the last 80 lines, at most 2048 bytes.
fn log_tail(path: &std::path::Path) -> String {
    let text = fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(80)..].join("\n");
    let cut = tail.len().saturating_sub(2048);
    let start = (cut..=tail.len()).find(|&i| tail.is_char_boundary(i)).unwrap_or(tail.len());
    tail[start..].to_string()
}
