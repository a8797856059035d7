//! `Control`: what operators ask of a running pgporter, from Unix signals or the admin console,
//! and the one place each request is carried out ([`apply`]).
//!
//! Signals: SIGHUP reload, SIGINT safe shutdown (wait for servers), SIGTERM drain (readiness
//! off, bounded wait, then 57P01), SIGQUIT immediate, SIGUSR1 pause, SIGUSR2 resume.

use std::sync::Arc;

use tokio::time::Duration;

use crate::app::Shared;
use crate::config::diff::{keep_unreloadable, ConfigDiff};
use crate::shutdown::ShutdownMode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    Reload,
    /// Stop handing out server connections (all databases when None) and wait until the ones
    /// in use are released.
    Pause(Option<String>),
    Resume(Option<String>),
    /// Refuse new clients for a database.
    Disable(String),
    Enable(String),
    /// Close server connections as they are released.
    Reconnect(Option<String>),
    /// Wait until no server connection in use is marked to close (after RECONNECT, RELOAD).
    WaitClose(Option<String>),
    /// Drop every client and server connection of a database (all when None), and pause it.
    Kill(Option<String>),
    KillClient(u64),
    Shutdown(ShutdownMode),
    /// Change one `[pgbouncer]` setting of the running configuration (admin `SET`), as a
    /// reload would; until the next RELOAD re-reads the file.
    Set {
        key: String,
        value: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("no such database: {0}")]
    NoSuchDatabase(String),
    /// A per-database command naming the console's own database (PgBouncer's words).
    #[error("cannot {action} admin db: {db}")]
    AdminDatabase { action: &'static str, db: String },
    #[error("database {0} is not paused")]
    NotPaused(String),
    #[error("pooler is not paused")]
    PoolerNotPaused,
    #[error("pooler is already paused")]
    AlreadyPaused,
    #[error("pooler is shutting down")]
    ShuttingDown,
    #[error("client not found")]
    NoSuchClient,
    #[error("RELOAD failed: {0}")]
    Reload(String),
    #[error("SET failed: {0}")]
    Set(String),
}

/// Carry out `c`. PAUSE returns once the paused databases' server connections are released.
pub async fn apply(shared: &Arc<Shared>, c: Control) -> Result<(), ControlError> {
    match c {
        Control::Reload => {
            // One reload at a time, each RELOADING=1 followed by its READY=1: a SIGHUP or
            // RELOAD while one runs waits for it. The reloads were serialized by the change
            // lock alone, so the second one's RELOADING=1 went out during the first, and
            // systemd took the first one's READY=1 as the end of both.
            let change = shared.config.change().await;
            // Log rotation: reopen the logs whether or not the new config loads.
            shared.audit.reopen();
            if let Some(log) = shared.log_file.get() {
                log.reopen();
            }
            // Queued, in order, for the thread that waits for room at systemd's end.
            shared.systemd.reloading();
            let result = reload(shared, &change).await;
            shared.systemd.ready();
            drop(change);
            result
        }
        Control::Set { key, value } => set(shared, key, value).await,
        Control::Pause(db) => pause(shared, db).await,
        Control::Resume(db) => resume(shared, db),
        Control::Disable(db) => {
            not_the_console(&db, "disable")?;
            known_or_auto_db(shared, &db)?;
            tracing::info!(db, "DISABLE");
            shared.gates.update(|g| {
                g.disabled.insert(db);
            });
            Ok(())
        }
        Control::Enable(db) => {
            not_the_console(&db, "enable")?;
            known_db(shared, &db)?;
            tracing::info!(db, "ENABLE");
            shared.gates.update(|g| {
                g.disabled.remove(&db);
            });
            Ok(())
        }
        Control::Reconnect(db) => {
            if let Some(d) = &db {
                not_the_console(d, "reconnect")?;
                known_or_auto_db(shared, d)?;
            }
            tracing::info!(db = db.as_deref().unwrap_or("*"), "RECONNECT");
            let now = shared.stats.now_us();
            for pool in pools_of(shared, db.as_deref()) {
                shared
                    .stats
                    .pool(&pool.key.db, &pool.key.user)
                    .reconnect_before_us
                    .store(now, std::sync::atomic::Ordering::Relaxed);
                fast_close(shared, &pool.key, now);
                // PgBouncer 1.18's words for RECONNECT's idle connections (live).
                pool.close_idle("database configuration changed").await;
            }
            Ok(())
        }
        Control::WaitClose(db) => wait_close(shared, db).await,
        Control::Kill(db) => {
            if let Some(d) = &db {
                not_the_console(d, "kill")?;
                known_or_auto_db(shared, d)?;
            }
            tracing::info!(db = db.as_deref().unwrap_or("*"), "KILL");
            // The gates first: a session registered after `kill_database` passed it sees the
            // KILL there (an auth_query login that saw its database paused, see
            // `GateState::kill_mark`).
            shared.gates.update(|g| g.kill(db.as_deref()));
            shared.sessions.kill_database(db.as_deref());
            shared.lobby.nudge();
            for pool in pools_of(shared, db.as_deref()) {
                // As PgBouncer 1.18 closes a killed database's server logins at once (live:
                // `closing because: database removed`, a stopped postmaster holding the login).
                pool.abort_logins();
                // PgBouncer 1.18's words for KILL's (live).
                pool.close_idle("database removed").await;
            }
            Ok(())
        }
        Control::KillClient(id) => {
            let s = shared
                .sessions
                .get(id)
                .filter(|s| !s.admin)
                .ok_or(ControlError::NoSuchClient)?;
            tracing::info!(id, user = %s.user, db = %s.database, "KILL_CLIENT");
            s.kill_for(crate::sessions::KillReason::Client);
            shared.lobby.nudge();
            Ok(())
        }
        Control::Shutdown(mode) => {
            shared.lifecycle.request(mode);
            Ok(())
        }
    }
}

/// A database the console may name in RESUME and ENABLE (PgBouncer's `find_database`): a
/// `[databases]` entry, one with a pool, or one reached through `*` that an earlier PAUSE,
/// KILL, DISABLE, RECONNECT or WAIT_CLOSE named (PgBouncer registered it then).
fn known_db(shared: &Shared, db: &str) -> Result<(), ControlError> {
    if shared.config.load().databases.contains_key(db)
        || !pools_of(shared, Some(db)).is_empty()
        || shared.gates.state().names(db)
    {
        Ok(())
    } else {
        Err(ControlError::NoSuchDatabase(db.to_string()))
    }
}

/// A database PAUSE, KILL, DISABLE, RECONNECT and WAIT_CLOSE may name (PgBouncer's
/// `find_or_register_database`): a known one, or with a `*` entry any other name but the
/// console's, as clients could reach it, which is then registered (see
/// [`crate::gates::GateState::registered`]). With CloudNativePG's generated configuration,
/// `*` alone, `PAUSE app` before app's first client (or after its pool was freed) was refused.
fn known_or_auto_db(shared: &Shared, db: &str) -> Result<(), ControlError> {
    let config = shared.config.load();
    let auto = config.fallback_database.is_some()
        && !config.databases.contains_key(db)
        && !crate::admin::is_admin_database(db);
    if !auto {
        return known_db(shared, db);
    }
    if !shared.gates.state().registered.contains(db) {
        shared.gates.update(|g| {
            g.registered.insert(db.to_string());
        });
    }
    Ok(())
}

/// The console's own database (`pgbouncer`, or the alias `pgporter`) cannot be paused,
/// disabled, enabled, killed, reconnected or waited in: PgBouncer's error, whether or not a
/// `*` entry would take the name (it used to be `no such database`).
fn not_the_console(db: &str, action: &'static str) -> Result<(), ControlError> {
    if crate::admin::is_admin_database(db) {
        Err(ControlError::AdminDatabase {
            action,
            db: db.to_string(),
        })
    } else {
        Ok(())
    }
}

fn pools_of(shared: &Shared, db: Option<&str>) -> Vec<Arc<crate::pool::Pool>> {
    shared
        .pools
        .all()
        .into_iter()
        .filter(|p| db.map_or(true, |d| *d == *p.key.db))
        .collect()
}

async fn pause(shared: &Arc<Shared>, db: Option<String>) -> Result<(), ControlError> {
    if let Some(d) = &db {
        not_the_console(d, "pause")?;
        known_or_auto_db(shared, d)?;
    }
    // As PgBouncer: nothing more to pause under a bare PAUSE (a database paused then would
    // stay paused after the bare RESUME).
    if shared.gates.state().all_paused {
        return Err(ControlError::AlreadyPaused);
    }
    tracing::info!(db = db.as_deref().unwrap_or("*"), "PAUSE");
    shared.gates.update(|g| match &db {
        Some(d) => {
            g.paused.insert(d.clone());
        }
        None => g.all_paused = true,
    });
    // Session mode: a server connection is released when its client leaves. A session turns
    // idle as its relay ends, before its connection is reset and back in the pool: the pools'
    // count of connections lent out says when that is done (PgBouncer waits for its servers
    // being reset too). Without it, PAUSE returned while the reset ran, and the connection then
    // went to the idle list of the paused pool and stayed.
    // A RESUME while PAUSE waits lifts the pause: the PAUSE ends then, answered as done
    // (the answer PgBouncer 1.18 gives it only when a later pause completes), and closes
    // nothing of the resumed database.
    let in_force = || {
        let g = shared.gates.state();
        match &db {
            Some(d) => g.paused.contains(d),
            None => g.all_paused,
        }
    };
    loop {
        if !in_force() {
            tracing::info!(
                db = db.as_deref().unwrap_or("*"),
                "PAUSE lifted by RESUME before it was done"
            );
            return Ok(());
        }
        let busy = shared.sessions.all().iter().any(|s| {
            !s.admin
                && s.state() == crate::sessions::ClientState::Active
                && db.as_deref().map_or(true, |d| d == &*s.database)
        }) || pools_of(shared, db.as_deref()).iter().any(|p| p.lent() > 0);
        if !busy {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for pool in pools_of(shared, db.as_deref()) {
        if !in_force() {
            break;
        }
        // PgBouncer 1.18's words (live).
        pool.close_idle("pause mode").await;
    }
    Ok(())
}

/// server_fast_close: sessions of pool `key` holding a connection opened before `before_us`
/// end once it is idle.
fn fast_close(shared: &Shared, key: &crate::pool::PoolKey, before_us: u64) {
    if !shared.config.load().settings.server_fast_close {
        return;
    }
    for s in shared.sessions.all() {
        if !s.admin
            && *s.database == *key.db
            && *s.pool_user == *key.user
            && s.endpoint == key.endpoint
            && s.ask_close(before_us)
        {
            tracing::debug!(session = s.id, "server_fast_close asked");
        }
    }
}

async fn wait_close(shared: &Arc<Shared>, db: Option<String>) -> Result<(), ControlError> {
    if let Some(d) = &db {
        not_the_console(d, "wait in")?;
        known_or_auto_db(shared, d)?;
    }
    let close_needed = |s: &crate::sessions::SessionInfo| {
        let stats = shared.stats.pool(&s.database, &s.pool_user);
        let before = stats
            .reconnect_before_us
            .load(std::sync::atomic::Ordering::Relaxed);
        s.server().is_some_and(|link| link.created_us < before)
    };
    let mine = |s: &crate::sessions::SessionInfo| {
        !s.admin && db.as_deref().map_or(true, |d| d == &*s.database)
    };
    // And connections being reset that RECONNECT (or KILL) cut short: closed at once, but
    // still there for a moment.
    while shared
        .sessions
        .all()
        .iter()
        .any(|s| mine(s) && close_needed(s))
        || pools_of(shared, db.as_deref())
            .iter()
            .any(|p| p.resets_cut_short())
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

fn resume(shared: &Shared, db: Option<String>) -> Result<(), ControlError> {
    if shared.lifecycle.draining() {
        return Err(ControlError::ShuttingDown);
    }
    // As PgBouncer: a bare RESUME lifts a bare PAUSE, `RESUME db` a `PAUSE db`; each is an
    // error when there is no such pause (a database paused on its own stays paused).
    let state = shared.gates.state();
    match &db {
        None if !state.all_paused => return Err(ControlError::PoolerNotPaused),
        Some(d) if !state.paused.contains(d) => {
            // The console's database exists, and is never paused (as PgBouncer answers).
            if !crate::admin::is_admin_database(d) {
                known_db(shared, d)?;
            }
            return Err(ControlError::NotPaused(d.clone()));
        }
        _ => {}
    }
    tracing::info!(db = db.as_deref().unwrap_or("*"), "RESUME");
    shared.gates.update(|g| match &db {
        Some(d) => {
            g.paused.remove(d);
            g.killed.remove(d);
        }
        None => {
            g.all_paused = false;
            g.all_killed = 0;
        }
    });
    Ok(())
}

/// Re-read the ini and auth_file into a whole new snapshot, or keep the old one. Connected
/// clients stay connected: pools are resized in place; a database whose connection string
/// changed (or that was removed) gets a fresh pool for new sessions, and the old pool's idle
/// server connections are closed. TLS files are read again too (certificates renewed in place,
/// as cert-manager and CloudNativePG do): see [`install`]. The files are read off the async
/// workers: the auth_file's plaintext lines cost a PBKDF2 each (`scram_iterations` rounds).
/// The caller holds off other changes (`_change`, see [`crate::config::ConfigHandle::change`]).
async fn reload(
    shared: &Arc<Shared>,
    _change: &tokio::sync::MutexGuard<'_, ()>,
) -> Result<(), ControlError> {
    let old = shared.config.load();
    let rejected = |errors: Vec<String>| {
        shared
            .stats
            .reloads_failed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        for e in &errors {
            tracing::error!(error = %e, "reload rejected; keeping the running configuration");
        }
        ControlError::Reload(errors.into_iter().next().unwrap_or_default())
    };
    let path = old.path.clone();
    let mut new = tokio::task::spawn_blocking(move || crate::config::load(&path))
        .await
        .map_err(|e| rejected(vec![format!("reading the configuration failed: {e}")]))?
        .map_err(|errors| rejected(errors.iter().map(|e| e.to_string()).collect()))?;
    let diff = ConfigDiff::between(&old, &new);
    for key in &diff.refused {
        tracing::warn!(
            key,
            "changing this setting needs a restart; keeping the running value"
        );
    }
    keep_unreloadable(&old, &mut new);
    for w in &new.warnings {
        tracing::warn!("{}:{}: {}: {}", w.file, w.line, w.key, w.message);
    }
    let tls = install(shared, new).map_err(|e| rejected(vec![e]))?;
    tracing::info!(
        added = ?diff.added,
        removed = ?diff.removed,
        changed = ?diff.changed,
        client_tls_reloaded = tls.client,
        server_tls_reloaded = tls.server,
        "configuration reloaded"
    );
    Ok(())
}

/// Admin `SET key = value` on a setting of ours: the running snapshot with that one value
/// changed, installed as a reload installs; a setting that needs a restart is refused. Built
/// off the async workers, as a new `scram_iterations` builds the plaintext verifiers again.
async fn set(shared: &Arc<Shared>, key: String, value: String) -> Result<(), ControlError> {
    let _change = shared.config.change().await;
    let old = shared.config.load();
    let (snapshot, k, v) = (Arc::clone(&old), key.clone(), value.clone());
    let built = tokio::task::spawn_blocking(move || snapshot.with_setting(&k, &v))
        .await
        .map_err(|e| ControlError::Set(format!("building the configuration failed: {e}")))?;
    let new = match built {
        Ok(Some(new)) => new,
        Ok(None) => return Err(ControlError::Set(format!("unknown setting {key}"))),
        Err(e) => return Err(ControlError::Set(e)),
    };
    let diff = ConfigDiff::between(&old, &new);
    if let Some(refused) = diff.refused.first() {
        return Err(ControlError::Set(format!(
            "{refused} cannot change while running (restart pgporter)"
        )));
    }
    install(shared, new).map_err(ControlError::Set)?;
    tracing::info!(key, value, "SET");
    Ok(())
}

/// Make `new` the running configuration: pools follow their new settings, and a pool whose
/// database entry changed or went away is replaced (its idle connections closed). The TLS
/// contexts are rebuilt first where their settings or files changed (later clients get the
/// new certificate; a new server context replaces every pool, as a changed entry does); a TLS
/// file that does not load refuses the whole change.
fn install(
    shared: &Arc<Shared>,
    new: crate::config::Config,
) -> Result<crate::tls::Rebuilt, String> {
    let (tls, rebuilt) = shared.tls.load().rebuild(&new)?;
    let old = shared.config.load();
    shared.tls.store(Arc::new(tls));
    shared.config.store(new);
    let tls = shared.tls.load();
    let config = shared.config.load();
    // Sessions holding a server connection take new timeouts at once (as PgBouncer, whose
    // janitor applies the current values to every session): each session's as resolved for
    // its pool user, so a change in [users] reaches it as one in [pgbouncer] does.
    let limits = |c: &crate::config::Config| {
        let s = &c.settings;
        (
            s.query_timeout,
            s.idle_transaction_timeout,
            s.transaction_timeout,
        )
    };
    if limits(&old) != limits(&config) || old.users != config.users {
        for s in shared.sessions.all() {
            if old.session_timeouts(&s.pool_user) != config.session_timeouts(&s.pool_user) {
                s.ask_retime();
            }
        }
    }
    for pool in shared.pools.all() {
        let wanted = crate::client::pool_plan(&config, &pool.key, tls.server.as_ref());
        // Its hosts, their order, target_session_attrs and load_balance_hosts too.
        let same_routing = config.database(&pool.key.db).is_some_and(|entry| {
            let endpoint = pool.key.endpoint;
            pool.hosts.matches(
                &crate::routing::Endpoint::hosts_of(entry),
                endpoint.attrs(entry),
                endpoint.balance(entry),
            )
        });
        // A removed (or changed) `user=`: its sessions must not go on as that user, though the
        // pool (of a user that may also log in as itself) looks the same.
        let forced = |c: &crate::config::Config| {
            c.database(&pool.key.db)
                .and_then(|e| e.user.as_deref())
                .is_some_and(|u| *u == *pool.key.user)
        };
        let unforced = forced(&old) && !forced(&config);
        // PgBouncer's words for its idle connections' close lines.
        let why = match &wanted {
            None => "database removed",
            Some(_) => "database configuration changed",
        };
        match wanted {
            Some((target, settings))
                if target == pool.target
                    && same_routing
                    && !unforced
                    && settings.mode == pool.settings().mode =>
            {
                pool.update_settings(settings)
            }
            _ => {
                // Its connections in use are closed when released (close_needed, WAIT_CLOSE),
                // or once idle with server_fast_close.
                let now = shared.stats.now_us();
                shared
                    .stats
                    .pool(&pool.key.db, &pool.key.user)
                    .reconnect_before_us
                    .store(now, std::sync::atomic::Ordering::Relaxed);
                fast_close(shared, &pool.key, now);
                shared.pools.remove(&pool.key);
                pool.retire();
                pool.close_idle_later(why);
            }
        }
    }
    if rebuilt.server {
        // The health monitors log in afresh with the new context at once.
        shared.routing.recheck_all();
    }
    shared
        .stats
        .reloads_ok
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Ok(rebuilt)
}

/// Map Unix signals to [`Control`] requests until the receiver is gone: the handlers are
/// installed by this call, the future it returns forwards what they catch. Call it before
/// anyone may signal the process (before the pidfile is written and READY=1 is sent): a
/// SIGHUP before the handler is in place kills the process, as `systemctl reload` right after
/// the start did while the handlers were installed by the spawned task itself.
pub fn forward_signals(
    tx: crate::app::ControlSender,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ];
    let (sig_tx, sig_rx) = tokio::sync::mpsc::unbounded_channel();
    for (kind, name) in kinds {
        let Ok(mut s) = signal(kind) else {
            tracing::warn!(signal = name, "cannot install signal handler");
            continue;
        };
        let sig_tx = sig_tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if sig_tx.send(name).is_err() {
                    return;
                }
            }
        });
    }
    drop(sig_tx);
    forward(tx, sig_rx)
}

async fn forward(
    tx: crate::app::ControlSender,
    mut sig_rx: tokio::sync::mpsc::UnboundedReceiver<&'static str>,
) {
    while let Some(name) = sig_rx.recv().await {
        tracing::info!(signal = name, "signal received");
        let c = match name {
            "SIGHUP" => Control::Reload,
            "SIGINT" => Control::Shutdown(ShutdownMode::WaitForServers),
            "SIGTERM" => Control::Shutdown(ShutdownMode::Drain),
            "SIGQUIT" => Control::Shutdown(ShutdownMode::Immediate),
            "SIGUSR1" => Control::Pause(None),
            _ => Control::Resume(None),
        };
        if tx.send(c).is_err() {
            return;
        }
    }
}
