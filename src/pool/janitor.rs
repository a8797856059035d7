//! Periodic pool upkeep: close idle connections past server_idle_timeout / server_lifetime and
//! keep min_pool_size connections warm.

use std::sync::Arc;

use tokio::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

use super::release::terminate;
use super::{expired, Pool, Pools};

const PERIOD: Duration = Duration::from_secs(1);

/// Run until `shutdown` fires.
pub async fn run_janitor(pools: Arc<Pools>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for pool in pools.all() {
            pool.evict_expired().await;
            pool.fill_min();
        }
    }
}

impl Pool {
    async fn evict_expired(&self) {
        let settings = self.settings();
        let now = Instant::now();
        let stale: Vec<_> = {
            let mut inner = self.lock();
            let (keep, stale): (Vec<_>, Vec<_>) = inner
                .idle
                .drain(..)
                .partition(|c| !expired(c, &settings, now));
            inner.idle.extend(keep);
            inner.total -= u32::try_from(stale.len()).unwrap_or(0);
            stale
        };
        for conn in stale {
            tracing::debug!(pid = conn.pid(), pool = ?self.key, "closing idle server connection");
            terminate(conn).await;
        }
    }

    /// Open connections in the background until min_pool_size is met.
    fn fill_min(self: &Arc<Self>) {
        let settings = self.settings();
        let missing = {
            let mut inner = self.lock();
            let want = settings.min_size.min(settings.size);
            let missing = want.saturating_sub(inner.total);
            inner.total += missing;
            missing
        };
        for _ in 0..missing {
            let pool = Arc::clone(self);
            let settings = settings.clone();
            tokio::spawn(async move {
                match pool.connect(&[], &settings).await {
                    Ok(conn) => pool.checkin(conn),
                    Err(e) => {
                        tracing::warn!(pool = ?pool.key, error = %e, "min_pool_size connection failed")
                    }
                }
            });
        }
    }
}
