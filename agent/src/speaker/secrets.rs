//! TCP MD5 passwords, read from Secrets mounted per name
//! (`<secrets dir>/<name>/<key>`), and followed while the agent runs: the
//! kubelet rewrites a mounted Secret in place when it changes, so a fixed
//! password reaches the node without a new pod.
//!
//! ```text
//!   every LOOK_EVERY: read every peer's password file
//!     changed, session not Established ──▶ restart the peer's connection with the new key
//!     changed, session Established ──────▶ keep the key it runs on (said once);
//!                                          taken up when it next goes down, or on SIGHUP
//! ```
//!
//! A working session is never broken by a Secret edit: TCP MD5 cannot change
//! its key under a live connection without the router changing at the same
//! instant.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::{Speaker, sockopt};
use crate::config::Config;

/// How often the mounted Secrets are read again.
pub const LOOK_EVERY: Duration = Duration::from_secs(5);

/// Every peer's TCP MD5 password, or a message naming the peer and the file.
pub fn read_passwords(config: &Config, dir: &Path) -> Result<HashMap<IpAddr, Arc<[u8]>>, String> {
    let mut out = HashMap::new();
    for (i, p) in config.peers.iter().enumerate() {
        let Some(secret) = &p.password_secret_ref else { continue };
        let path = dir.join(&secret.name).join(&secret.key);
        let mut bytes = std::fs::read(&path).map_err(|e| {
            format!("peers[{i}].passwordSecretRef: cannot read {}: {e}", path.display())
        })?;
        // Files written by hand usually end in a newline; Secrets do not.
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        if bytes.is_empty() || bytes.len() > sockopt::MAX_KEY_LEN {
            return Err(format!(
                "peers[{i}].passwordSecretRef: {} holds {} bytes; a TCP MD5 password has 1-{}",
                path.display(),
                bytes.len(),
                sockopt::MAX_KEY_LEN
            ));
        }
        out.insert(p.address, Arc::from(bytes));
    }
    Ok(out)
}

impl Speaker {
    /// Takes up passwords changed on disk; see the module docs.
    pub(super) async fn follow_passwords(&mut self) {
        if self.config.peers.iter().all(|p| p.password_secret_ref.is_none()) {
            return;
        }
        // A Secret being rewritten, or removed: keep what runs, look again.
        let Ok(now) = read_passwords(&self.config, &self.options.secrets_dir) else { return };
        let changed: Vec<IpAddr> = self
            .config
            .peers
            .iter()
            .map(|p| p.address)
            .filter(|a| now.get(a) != self.passwords.get(a))
            .collect();
        let mut restarted = false;
        for address in changed {
            let Some(peer) = self.peers.get(&address) else { continue };
            if peer.status.borrow().state == crate::session::State::Established {
                if self.deferred_passwords.insert(address) {
                    info!(
                        peer = %address,
                        "its password changed in the mounted Secret: the Established session keeps \
                         the key it runs on until it next goes down (SIGHUP applies it now)"
                    );
                }
                continue;
            }
            self.deferred_passwords.remove(&address);
            let config = peer.config.clone();
            match now.get(&address) {
                Some(key) => self.passwords.insert(address, key.clone()),
                None => self.passwords.remove(&address),
            };
            info!(peer = %address, "its password changed in the mounted Secret: connecting with the new one");
            self.restart_peer(config, "nonstop: password changed").await;
            restarted = true;
        }
        if restarted {
            self.publish_views();
        }
    }
}
