//! Leader election over a `coordination.k8s.io/v1` Lease, so that of the
//! operator's replicas exactly one reconciles.
//!
//! ```text
//!   follower ──lease free, or unchanged for a whole lease duration──▶ leader
//!   leader ──renews every duration/3──▶ … ──cannot renew for a duration──▶ exits 1
//!   leader ──SIGTERM──▶ releases the lease (the other replica takes over at once)
//! ```
//!
//! As client-go does, expiry is judged by *this* replica's clock: a lease
//! counts as abandoned when its record has not changed for a lease duration
//! since we first saw it, whatever time the holder wrote into it. Writes
//! carry the resourceVersion read, so two candidates cannot both win.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::info;

#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

/// The lease as last seen, and when this replica saw it change.
#[derive(Debug)]
struct Seen {
    record: Option<(String, Option<MicroTime>)>,
    since: Instant,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self { api, name: name.into(), identity: identity.into(), duration }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) -> kube::Result<()> {
        let mut seen = Seen { record: None, since: Instant::now() };
        let mut said = false;
        loop {
            if self.try_take(&mut seen).await? {
                info!(identity = %self.identity, lease = %self.name, "became the leader");
                return Ok(());
            }
            if !said {
                let holder = seen.record.as_ref().map_or("", |r| r.0.as_str());
                info!(holder, "another replica leads; waiting for its lease to lapse");
                said = true;
            }
            tokio::time::sleep(self.duration / 4).await;
        }
    }

    /// Renews until it fails for a whole lease duration; returns then
    /// (the caller must stop acting as leader at once).
    pub async fn keep(&self) -> String {
        let mut last_ok = Instant::now();
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.renew().await {
                Ok(true) => last_ok = Instant::now(),
                Ok(false) => return "another replica holds the lease".into(),
                Err(e) if last_ok.elapsed() >= self.duration => {
                    return format!("could not renew the lease for {:?}: {e}", self.duration);
                }
                Err(_) => {}
            }
        }
    }

    /// Gives the lease up (on shutdown), so a follower need not wait.
    pub async fn release(&self) {
        if let Ok(mut lease) = self.api.get(&self.name).await {
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() == Some(&self.identity) {
                spec.holder_identity = None;
                spec.renew_time = None;
                let _ = self.api.replace(&self.name, &PostParams::default(), &lease).await;
            }
        }
    }

    async fn renew(&self) -> kube::Result<bool> {
        let mut lease = self.api.get(&self.name).await?;
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(false);
        }
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn try_take(&self, seen: &mut Seen) -> kube::Result<bool> {
        let now = MicroTime(Timestamp::now());
        let seconds = self.duration.as_secs().max(1) as i32;
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let record = Some((holder.clone(), spec.renew_time.clone()));
        if seen.record != record {
            seen.record = record;
            seen.since = Instant::now();
        }
        let free = holder.is_empty() || holder == self.identity;
        if !free && seen.since.elapsed() < self.duration {
            return Ok(false);
        }
        if holder != self.identity {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(seconds);
        spec.renew_time = Some(now);
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }
}
