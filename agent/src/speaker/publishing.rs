//! The speaker's side of published sets (`PUT /announcements`, see
//! [`crate::published`]): a set that reads and checks is announced to every
//! peer at once (only what changed is sent), kept in the state dir for a
//! restart after a crash, and handed to a successor with the sessions.
//!
//! ```text
//!   admin door ──Publish{body}──▶ read + check ──▶ 400 with every problem
//!                                      └──▶ peers: Announce(config ∪ set) ──▶ 200 {version, prefixes, added, removed}
//!                                      └──▶ state dir: published.json
//! ```

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use hyper::StatusCode;
use serde::Serialize;
use tracing::{info, warn};

use super::Speaker;
use super::admin::Publish;
use super::peer::PeerCommand;
use crate::http::Answer;
use crate::published::{self, Published};
use crate::restart;

/// The published set's file in the state dir.
pub const FILE: &str = "published.json";

/// What `PUT /announcements` answers when the set is taken.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Applied<'a> {
    version: &'a str,
    prefixes: usize,
    added: usize,
    removed: usize,
}

/// The set a cold start begins with: the one in force when the last agent
/// in this state dir stopped without decommissioning, if any.
pub fn load(state_dir: &Path) -> Published {
    let Ok(text) = std::fs::read(state_dir.join(FILE)) else { return Published::default() };
    match published::read(&text, &[]) {
        Ok(set) => {
            info!(
                version = set.version,
                prefixes = set.announce.len(),
                "published set from the last run"
            );
            set
        }
        Err(problems) => {
            warn!(
                "{FILE} in the state dir cannot be read, starting without a published set:\n{problems}"
            );
            Published::default()
        }
    }
}

/// Forgets the published set (a decommission: the next agent starts from nothing).
pub fn forget(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(FILE));
}

impl Speaker {
    /// Checks and applies a published set; answers the request.
    pub(super) async fn on_publish(&mut self, request: Publish) {
        let Publish { body, reply } = request;
        let answer = match published::read(&body, &self.config.announce) {
            Err(problems) => {
                warn!("a published set was refused:\n{problems}");
                Answer::text(StatusCode::BAD_REQUEST, format!("refused:\n{problems}\n"))
            }
            Ok(set) => self.apply_published(set).await,
        };
        let _ = reply.send(answer);
    }

    async fn apply_published(&mut self, set: Published) -> Answer {
        let before: HashSet<_> = self.published.announce.iter().map(|a| a.prefix).collect();
        let after: HashSet<_> = set.announce.iter().map(|a| a.prefix).collect();
        let (added, removed) =
            (after.difference(&before).count(), before.difference(&after).count());
        let changed = set.announce != self.published.announce;
        if let Err(e) = restart::write_atomically(
            &self.options.state_dir,
            FILE,
            &serde_json::to_vec(&set).expect("JSON"),
        ) {
            // Announced all the same: only a restart after a crash loses it.
            warn!("cannot keep the published set in the state dir: {e}");
        }
        self.published = Arc::new(set);
        self.standing.lock().expect("standing").published = self.published.clone();
        if changed {
            let list = self.announced();
            for p in self.peers.values() {
                let _ = p.commands.send(PeerCommand::Announce(list.clone())).await;
            }
        }
        let set = &self.published;
        info!(
            version = set.version,
            prefixes = set.announce.len(),
            added,
            removed,
            "published set applied"
        );
        let applied =
            Applied { version: &set.version, prefixes: set.announce.len(), added, removed };
        Answer::ok("application/json", serde_json::to_string(&applied).expect("JSON") + "\n")
    }
}
