//! The tag a routed server connection carries: its host, role and epoch.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Poll, Waker};

use tokio_util::sync::CancellationToken;

use super::{Host, Role};

/// Which host, role and epoch a server connection was made for. Counts the connection on
/// its host while it lives.
#[derive(Debug)]
pub struct HostTag {
    pub(super) host: Arc<Host>,
    pub(super) role: Role,
    pub(super) epoch: u64,
    pub(super) gone: CancellationToken,
}

impl HostTag {
    pub fn role(&self) -> Role {
        self.role
    }

    /// Cancelled when the host is seen down.
    pub fn gone(&self) -> &CancellationToken {
        &self.gone
    }

    /// Resolves once the host is seen down ([`Self::gone`]). Cheap to poll again: a relay
    /// polls it on every wake, and once the token's notification holds this task's waker
    /// only the flag is read (the token's own future polls its notification every time too).
    pub async fn went_down(&self) {
        let mut cancelled = std::pin::pin!(self.gone.cancelled());
        let mut holds: Option<Waker> = None;
        std::future::poll_fn(|cx| {
            if self.gone.is_cancelled() {
                return Poll::Ready(());
            }
            if !holds.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                // Registers (or replaces) the waker; `cancel` sets the flag, then wakes it.
                if cancelled.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                holds = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
    }

    /// Does a reported `in_hot_standby` contradict the role this connection was made for?
    /// Then the host is re-checked now.
    pub fn contradicted_by(&self, hot_standby: Option<bool>) -> bool {
        let seen = match hot_standby {
            Some(true) => Role::Standby,
            Some(false) => Role::Primary,
            None => return false,
        };
        let wrong = self.role != Role::Unknown && seen != self.role;
        if wrong {
            self.host.poke();
        }
        wrong
    }
}

impl Drop for HostTag {
    fn drop(&mut self) {
        self.host.connections.fetch_sub(1, Ordering::Relaxed);
    }
}
