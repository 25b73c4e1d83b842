//! What every request shares: the configuration, the live key set, the upstream kinds and
//! the transport under them.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::body::Budget;
use crate::config::Config;
use crate::keys::LiveKeys;
use crate::kinds::Kinds;
use crate::upstream::Upstream;

/// Shared by the connections of one worker thread; each worker has its own `upstream`.
#[derive(Clone)]
pub struct State {
    pub config: Config,
    /// The key set in force, swapped whole when `API_KEYS_FILE` changes; the only live copy.
    pub keys: Arc<LiveKeys>,
    /// Each kind's own state, shared by the workers where it must be.
    pub kinds: Kinds,
    pub upstream: Upstream,
    /// Reported as `created` in model objects.
    pub started_at: u64,
    /// `MAX_BUFFERED_BYTES` and each key's share of it, shared by every worker.
    pub budget: Budget,
}

impl State {
    pub fn new(config: Config, kinds: Kinds, upstream: Upstream) -> State {
        let started_at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        State {
            keys: Arc::new(LiveKeys::new(config.initial_keys.clone())),
            budget: Budget::new(config.max_buffered_bytes, config.max_buffered_bytes_per_key),
            config,
            kinds,
            upstream,
            started_at,
        }
    }

    /// The same state for another worker thread: the same live keys, its own upstream
    /// connections and token slot.
    pub fn for_worker(&self) -> State {
        State {
            upstream: self.upstream.for_worker(),
            ..self.clone()
        }
    }
}
