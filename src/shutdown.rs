//! Shutdown modes and the process lifecycle (running / draining), level-triggered so every
//! reader sees the current state: /readyz, the accept path, the drain loop in `App::run`.

use tokio::sync::watch;

/// How to stop, weakest first: a stronger request overrides a weaker one; repeating the mode
/// already in force escalates to [`ShutdownMode::Immediate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ShutdownMode {
    /// SHUTDOWN WAIT_FOR_CLIENTS: refuse new clients, exit once every client has left.
    WaitForClients,
    /// SIGINT, SHUTDOWN WAIT_FOR_SERVERS: refuse new clients, exit once every server
    /// connection is released (in session mode: once clients have left).
    WaitForServers,
    /// SIGTERM: readiness false at once, refuse new clients, wait up to
    /// shutdown_wait_timeout, then end the remaining sessions with 57P01.
    Drain,
    /// SIGQUIT, SHUTDOWN: end every session now (57P01).
    Immediate,
}

impl ShutdownMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ShutdownMode::WaitForClients => "wait_for_clients",
            ShutdownMode::WaitForServers => "wait_for_servers",
            ShutdownMode::Drain => "drain",
            ShutdownMode::Immediate => "immediate",
        }
    }

    /// The mode in force after `next` is requested while `current` is.
    pub fn escalate(current: Option<ShutdownMode>, next: ShutdownMode) -> ShutdownMode {
        match current {
            None => next,
            Some(c) if next > c => next,
            Some(c) if next == c => ShutdownMode::Immediate,
            Some(c) => c,
        }
    }
}

/// Running, or shutting down in some mode.
#[derive(Debug)]
pub struct Lifecycle {
    mode: watch::Sender<Option<ShutdownMode>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            mode: watch::Sender::new(None),
        }
    }
}

impl Lifecycle {
    /// Ask for a shutdown; returns the mode now in force.
    pub fn request(&self, next: ShutdownMode) -> ShutdownMode {
        let mut now = next;
        self.mode.send_modify(|m| {
            now = ShutdownMode::escalate(*m, next);
            *m = Some(now);
        });
        tracing::info!(mode = now.as_str(), "shutdown requested");
        now
    }

    pub fn mode(&self) -> Option<ShutdownMode> {
        *self.mode.borrow()
    }

    /// True once any shutdown was requested: readiness false, new clients refused.
    pub fn draining(&self) -> bool {
        self.mode().is_some()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<ShutdownMode>> {
        self.mode.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::ShutdownMode::*;
    use super::*;

    #[test]
    fn escalation() {
        assert_eq!(ShutdownMode::escalate(None, Drain), Drain);
        assert_eq!(ShutdownMode::escalate(Some(WaitForServers), Drain), Drain);
        assert_eq!(ShutdownMode::escalate(Some(Drain), WaitForServers), Drain);
        assert_eq!(ShutdownMode::escalate(Some(Drain), Drain), Immediate);
        assert_eq!(ShutdownMode::escalate(Some(Immediate), Drain), Immediate);
        let l = Lifecycle::default();
        assert!(!l.draining());
        assert_eq!(l.request(WaitForServers), WaitForServers);
        assert!(l.draining());
        assert_eq!(l.request(WaitForServers), Immediate);
    }
}

/// A periodic tick that ends with the shutdown: `while ticks.next(&shutdown).await { .. }`.
/// A late tick is delayed, never bunched.
#[derive(Debug)]
pub struct Ticks(tokio::time::Interval);

impl Ticks {
    pub fn every(period: std::time::Duration) -> Ticks {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ticks(tick)
    }

    /// Wait for the next tick: false once `shutdown` has fired.
    pub async fn next(&mut self, shutdown: &tokio_util::sync::CancellationToken) -> bool {
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => false,
            _ = self.0.tick() => true,
        }
    }
}
