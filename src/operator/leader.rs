//! Leader election over a `coordination.k8s.io/v1` Lease, so that of the
//! operator's replicas exactly one reconciles.
//!
//! ```text
//!   follower ──lease free, or unchanged for a whole lease duration──▶ leader
//!   leader ──renews every duration/6──▶ … ──no renewal within the renew deadline──▶ exits 1
//!   leader ──SIGTERM──▶ releases the lease (the other replica takes over at once)
//! ```
//!
//! As client-go does, expiry is judged by *this* replica's clock: a lease
//! counts as abandoned when its record has not changed for a lease duration
//! since we first saw it, whatever time the holder wrote into it. Writes
//! carry the resourceVersion read, so two candidates cannot both win.
//!
//! No two leaders ever write: the leader counts its lead from the moment it
//! *sent* its last successful renewal and stops acting [`RENEW_DEADLINE`] of
//! a lease duration later, before any follower can have seen the record
//! unchanged for a whole duration. Every write of the reconciler asks
//! [`Leadership::held`] first, so a leader frozen past its lease (SIGSTOP, a
//! long GC pause, a suspended VM) writes nothing when it wakes up.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::info;

/// The share of a lease duration a leader may go without renewing before
/// it stops acting (client-go's default is 10 s of 15 s).
pub const RENEW_DEADLINE: f64 = 2.0 / 3.0;

/// Whether this replica may act as the leader now. Cheap to ask; shared by
/// the elector (which renews it) and the reconciler (which asks it before
/// every write).
#[derive(Debug, Clone)]
pub struct Leadership {
    /// When the last successful claim or renewal was sent.
    renewed: Arc<Mutex<Option<Instant>>>,
    deadline: Duration,
}

impl Leadership {
    fn new(duration: Duration) -> Leadership {
        Leadership { renewed: Arc::default(), deadline: duration.mul_f64(RENEW_DEADLINE) }
    }

    /// The lead is ours and was renewed within the renew deadline.
    pub fn held(&self) -> bool {
        self.renewed.lock().expect("leadership").is_some_and(|sent| sent.elapsed() < self.deadline)
    }

    fn renewed(&self, sent: Instant) {
        *self.renewed.lock().expect("leadership") = Some(sent);
    }

    fn lost(&self) {
        *self.renewed.lock().expect("leadership") = None;
    }
}

#[derive(Debug, Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    leadership: Leadership,
}

/// The lease as last seen, and when this replica saw it change.
#[derive(Debug)]
struct Seen {
    record: Option<(String, Option<MicroTime>)>,
    since: Instant,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api,
            name: name.into(),
            identity: identity.into(),
            duration,
            leadership: Leadership::new(duration),
        }
    }

    /// What the reconciler asks before it writes.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) -> kube::Result<()> {
        let mut seen = Seen { record: None, since: Instant::now() };
        let mut said = false;
        loop {
            let sent = Instant::now();
            if self.try_take(&mut seen).await? {
                self.leadership.renewed(sent);
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

    /// Renews until it cannot within the renew deadline; returns then,
    /// having already stopped [`Leadership::held`] (the caller must exit).
    pub async fn keep(&self) -> String {
        let why = loop {
            tokio::time::sleep(self.duration / 6).await;
            if !self.leadership.held() {
                break format!(
                    "the lease was not renewed within its renew deadline ({:?}): frozen or cut off",
                    self.leadership.deadline
                );
            }
            let sent = Instant::now();
            match self.renew().await {
                Ok(true) => self.leadership.renewed(sent),
                Ok(false) => break "another replica holds the lease".into(),
                Err(e) if !self.leadership.held() => {
                    break format!(
                        "could not renew the lease within its renew deadline ({:?}): {e}",
                        self.leadership.deadline
                    );
                }
                Err(_) => {}
            }
        };
        self.leadership.lost();
        why
    }

    /// Gives the lease up (on shutdown), so a follower need not wait.
    pub async fn release(&self) {
        self.leadership.lost();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lead_ends_at_the_renew_deadline_well_before_the_lease_does() {
        let leadership = Leadership::new(Duration::from_secs(15));
        assert!(!leadership.held(), "not before it was claimed");
        leadership.renewed(Instant::now());
        assert!(leadership.held());
        assert_eq!(leadership.deadline, Duration::from_secs(10));
        // Renewed 11 s ago (say the process was frozen since): no longer.
        leadership.renewed(Instant::now() - Duration::from_secs(11));
        assert!(!leadership.held());
        leadership.renewed(Instant::now() - Duration::from_secs(9));
        assert!(leadership.held());
        leadership.lost();
        assert!(!leadership.held());
    }
}
