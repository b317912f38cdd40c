//! The rollout's record: when the spec's revision changes a rollout
//! starts (numbered, with who changed the spec), it ends Succeeded when
//! every node runs the revision or Failed when the rollout stops, and a
//! retry (a new value of the `nonstop.dev/retry` annotation) resumes a
//! failed one. Pure: what the plan reports in `status.lastRollout`; the
//! reconciler writes it, with each node's upgrade, to the rollout's
//! `BgpGatewayRollout` ([`crate::operator::rollouts`]).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, Time};
use kube::ResourceExt;

use super::{Input, Note, Reason};
use crate::api::history::{RETRY_ANNOTATION, Retry, Rollout, RolloutResult, stored};
use crate::api::{BgpGateway, BgpGatewayStatus, ConditionType};

/// Retries a rollout keeps, the newest.
const RETRIES_KEPT: usize = 10;

/// A value of the retry annotation the status has not acted on yet.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct NewRetry {
    pub value: String,
    /// The field manager that set it.
    pub by: Option<String>,
}

pub(super) fn new_retry(gw: &BgpGateway, before: &BgpGatewayStatus) -> Option<NewRetry> {
    let value = gw.annotations().get(RETRY_ANNOTATION)?;
    (before.observed_retry.as_ref() != Some(value)).then(|| NewRetry {
        value: value.clone(),
        by: changed_by(gw, &["f:metadata", "f:annotations", &format!("f:{RETRY_ANNOTATION}")]),
    })
}

/// The rollout as it stands after this plan, and the one a new spec
/// replaced before it finished (to be recorded Superseded).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct History {
    pub current: Option<Rollout>,
    pub superseded: Option<Rollout>,
}

/// Where the rollout stands: `status` is what the plan reports, `failure`
/// the failure that stops the rollout at this revision, if one does.
pub(super) fn history(
    input: &Input,
    before: &BgpGatewayStatus,
    status: &BgpGatewayStatus,
    failure: Option<&(Reason, String)>,
    retry: Option<&NewRetry>,
) -> History {
    let Input { gateway: gw, revision, now, .. } = *input;
    let now = stored(now).0;
    let last = before.last_rollout.as_ref();
    if last.is_some_and(|l| l.to_revision == revision) {
        let mut rollout = last.cloned().expect("checked");
        if let Some(retry) = retry.filter(|_| rollout.result == RolloutResult::Failed) {
            rollout.retries.push(Retry {
                time: Time(now),
                by: retry.by.clone(),
                after: rollout.reason.take(),
            });
            let extra = rollout.retries.len().saturating_sub(RETRIES_KEPT);
            rollout.retries.drain(..extra);
            rollout.result = RolloutResult::Progressing;
            rollout.finished = None;
        }
        if rollout.result == RolloutResult::Progressing {
            if let Some((_, message)) = failure {
                rollout.result = RolloutResult::Failed;
                rollout.reason = Some(message.clone());
                rollout.finished = Some(Time(now));
            } else if status.rollout.as_deref() == Some("Complete") {
                rollout.result = RolloutResult::Succeeded;
                rollout.finished = Some(Time(now));
            }
        }
        return History { current: Some(rollout), superseded: None };
    }
    // A gateway at rest whose status predates rollout records: nothing to record.
    if last.is_none() && before.current_revision.as_deref() == Some(revision) {
        return History::default();
    }
    let superseded = last.filter(|l| l.result == RolloutResult::Progressing).map(|l| Rollout {
        result: RolloutResult::Superseded,
        finished: Some(Time(now)),
        ..l.clone()
    });
    let started = Rollout {
        number: last.map_or(1, |l| l.number + 1),
        from_revision: before.current_revision.clone(),
        from_image: before.current_revision.as_ref().and_then(|_| before.image.clone()),
        to_revision: revision.into(),
        image: gw.spec.image.clone(),
        started: Time(now),
        finished: None,
        result: RolloutResult::Progressing,
        reason: None,
        triggered_by: changed_by(gw, &["f:spec"]),
        retries: Vec::new(),
    };
    History { current: Some(started), superseded }
}

/// The field manager that last wrote the field at `path` (in the
/// `fieldsV1` notation), as the API server recorded it.
pub(super) fn changed_by(gw: &BgpGateway, path: &[&str]) -> Option<String> {
    let owns = |entry: &&ManagedFieldsEntry| {
        let fields = entry.fields_v1.as_ref().map(|f| &f.0);
        fields.and_then(|f| path.iter().try_fold(f, |at, key| at.get(*key))).is_some()
    };
    gw.metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(owns)
        // The latest; entries of one second keep the list's order.
        .max_by_key(|entry| entry.time.as_ref().map(|t| t.0))
        .and_then(|entry| entry.manager.clone())
}

/// The Event of a retry: what failed, who retried.
pub(super) fn retried(before: &BgpGatewayStatus, retry: &NewRetry) -> Note {
    let by = retry.by.as_deref().map(|b| format!(" by {b}")).unwrap_or_default();
    let failure = before
        .conditions
        .iter()
        .find(|c| c.type_ == ConditionType::Degraded.as_str() && c.status == "True")
        .map_or_else(|| "nothing had failed".to_string(), |c| format!("after: {}", c.message));
    Note {
        warning: false,
        reason: Reason::Retry,
        message: format!("rollout retried{by} ({failure})"),
        related: None,
    }
}
