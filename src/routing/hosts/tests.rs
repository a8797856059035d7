#![allow(clippy::unwrap_used)]

use super::*;

fn st(liveness: Liveness, role: Role, lagging: bool) -> HostStatus {
    HostStatus {
        liveness,
        role,
        lagging,
        ..HostStatus::default()
    }
}

#[test]
fn eligibility_by_attrs() {
    use Liveness::{Down, Up};
    use Role::{Primary, Standby};
    let hosts = [
        st(Up, Primary, false),
        st(Up, Standby, false),
        st(Up, Standby, true),
        st(Down, Standby, false),
        st(Liveness::Unknown, Role::Unknown, false),
    ];
    assert_eq!(eligible(SessionAttrs::Primary, &hosts), vec![0]);
    assert_eq!(eligible(SessionAttrs::Standby, &hosts), vec![1]);
    assert_eq!(eligible(SessionAttrs::PreferStandby, &hosts), vec![1]);
    assert_eq!(eligible(SessionAttrs::Any, &hosts), vec![0, 1]);
    // No usable standby: prefer-standby falls back to the primary, standby gets nothing.
    let hosts = [st(Up, Primary, false), st(Up, Standby, true)];
    assert_eq!(eligible(SessionAttrs::PreferStandby, &hosts), vec![0]);
    assert!(eligible(SessionAttrs::Standby, &hosts).is_empty());
    // Failover: no primary yet.
    let hosts = [st(Down, Primary, false), st(Up, Standby, false)];
    assert!(eligible(SessionAttrs::Primary, &hosts).is_empty());
    // Split brain: the primary promoted last takes writes; none if none was seen promoted.
    let promoted = |n: u64| HostStatus {
        promoted: n,
        ..st(Up, Primary, false)
    };
    let hosts = [promoted(0), promoted(7), st(Up, Standby, false)];
    assert_eq!(eligible(SessionAttrs::Primary, &hosts), vec![1]);
    assert_eq!(eligible(SessionAttrs::Any, &hosts), vec![1, 2]);
    let hosts = [promoted(0), promoted(0)];
    assert!(eligible(SessionAttrs::Primary, &hosts).is_empty());
    // Draining hosts take no new connections.
    let hosts = [st(Liveness::Draining, Primary, false)];
    assert!(eligible(SessionAttrs::Primary, &hosts).is_empty());
}

fn set(n: u16, attrs: SessionAttrs, balance: LoadBalance) -> HostSet {
    let changed = Arc::new(watch::channel(0).0);
    let hosts = (0..n)
        .map(|i| {
            Arc::new(Host::new(
                ServerAddr::new("127.0.0.1", 5000 + i),
                Arc::clone(&changed),
            ))
        })
        .collect();
    HostSet::new(hosts, attrs, balance, changed)
}

fn up(h: &Host, role: Role) {
    h.observe(&Observation::Up {
        role,
        lag_bytes: None,
        lag: None,
        lagging: false,
    });
}

#[test]
fn round_robin_and_least_connections() {
    let s = set(3, SessionAttrs::Standby, LoadBalance::RoundRobin);
    up(&s.hosts[0], Role::Primary);
    up(&s.hosts[1], Role::Standby);
    up(&s.hosts[2], Role::Standby);
    let picks: Vec<u16> = (0..4)
        .map(|_| match s.choose(&[]).unwrap().0.addr {
            ServerAddr::Tcp { port, .. } => port,
            ServerAddr::Unix { port, .. } => port,
        })
        .collect();
    assert_eq!(picks, vec![5001, 5002, 5001, 5002]);
    assert_eq!(
        s.choose(&[s.hosts[1].addr.clone()]).unwrap().0.addr,
        s.hosts[2].addr
    );

    let s = set(2, SessionAttrs::Any, LoadBalance::LeastConnections);
    up(&s.hosts[0], Role::Primary);
    up(&s.hosts[1], Role::Standby);
    let (h, role, epoch) = s.choose(&[]).unwrap();
    let _tag = h.tag(role, epoch);
    assert_eq!(s.choose(&[]).unwrap().0.addr, s.hosts[1].addr);
}

/// Pools of different people list the same hosts; each makes one connection. Sharing the
/// rotation, their first connections take turns over the standbys instead of all going to
/// the first one.
#[test]
fn sets_sharing_a_rotation_take_turns() {
    let alice = set(3, SessionAttrs::Standby, LoadBalance::RoundRobin);
    up(&alice.hosts[0], Role::Primary);
    up(&alice.hosts[1], Role::Standby);
    up(&alice.hosts[2], Role::Standby);
    let rotation = Arc::new(AtomicUsize::new(0));
    let people: Vec<HostSet> = (0..4)
        .map(|_| {
            HostSet::new(
                alice.hosts.clone(),
                SessionAttrs::Standby,
                LoadBalance::RoundRobin,
                Arc::clone(&alice.changed),
            )
            .with_rotation(Arc::clone(&rotation))
        })
        .collect();
    let firsts: Vec<ServerAddr> = people
        .iter()
        .map(|s| s.choose(&[]).unwrap().0.addr.clone())
        .collect();
    let want: Vec<ServerAddr> = [1, 2, 1, 2]
        .iter()
        .map(|&i| alice.hosts[i].addr.clone())
        .collect();
    assert_eq!(firsts, want);
}

#[test]
fn tags_go_stale_on_role_change_and_down() {
    let s = set(2, SessionAttrs::Primary, LoadBalance::Disable);
    assert!(s.choose(&[]).is_none(), "unchecked hosts are not used");
    up(&s.hosts[0], Role::Primary);
    up(&s.hosts[1], Role::Standby);
    let (h, role, epoch) = s.choose(&[]).unwrap();
    let tag = h.tag(role, epoch);
    assert!(s.accepts(Some(&tag)));
    assert_eq!(h.connections(), 1);
    // The primary dies: its tag is stale and its sessions are told.
    assert!(s.hosts[0].observe(&Observation::Down).is_some());
    assert!(tag.gone().is_cancelled());
    assert!(!s.accepts(Some(&tag)));
    // The standby is promoted.
    up(&s.hosts[1], Role::Primary);
    let (h2, role2, _) = s.choose(&[]).unwrap();
    assert_eq!(
        (h2.addr.clone(), role2),
        (s.hosts[1].addr.clone(), Role::Primary)
    );
    // The old primary comes back (a new epoch): the old tag stays stale.
    up(&s.hosts[0], Role::Primary);
    assert!(!s.accepts(Some(&tag)));
    drop(tag);
    assert_eq!(h.connections(), 0);
    // Unmonitored sets accept anything.
    assert!(HostSet::single(ServerAddr::new("/tmp", 1)).accepts(None));
}

#[tokio::test(start_paused = true)]
async fn an_outage_is_timed_from_its_start_for_every_client() {
    let s = set(2, SessionAttrs::Primary, LoadBalance::Disable);
    let t0 = tokio::time::Instant::now();
    assert_eq!(s.outage_started(t0), t0);
    // A client meeting it later, while others keep looking, shares its start.
    let t1 = t0 + Duration::from_millis(400);
    assert_eq!(s.outage_started(t1), t0);
    let t2 = t1 + Duration::from_millis(900);
    assert_eq!(s.outage_started(t2), t0);
    // Nobody looked for a while (or a connect succeeded): a new outage.
    let t3 = t2 + Duration::from_secs(5);
    assert_eq!(s.outage_started(t3), t3);
    s.outage_over();
    let t4 = t3 + Duration::from_millis(10);
    assert_eq!(s.outage_started(t4), t4);
}

#[test]
fn split_brain_is_seen_across_entries_listing_a_subset() {
    let all = set(3, SessionAttrs::Primary, LoadBalance::Disable);
    for h in &all.hosts {
        h.add_peers(&all.hosts);
    }
    // An entry listing only the third host.
    let changed = Arc::clone(&all.changed);
    let only_c = HostSet::new(
        vec![Arc::clone(&all.hosts[2])],
        SessionAttrs::Primary,
        LoadBalance::Disable,
        changed,
    );
    up(&all.hosts[2], Role::Primary);
    up(&all.hosts[0], Role::Standby);
    assert_eq!(only_c.choose(&[]).unwrap().0.addr, all.hosts[2].addr);
    // The first host is promoted while the third comes back as a primary too.
    up(&all.hosts[0], Role::Primary);
    assert_eq!(all.choose(&[]).unwrap().0.addr, all.hosts[0].addr);
    assert!(
        only_c.choose(&[]).is_none(),
        "the superseded primary took writes through a narrower entry"
    );
}

#[tokio::test(start_paused = true)]
async fn a_new_set_settles_until_every_host_was_checked_or_for_two_seconds() {
    let s = set(2, SessionAttrs::Standby, LoadBalance::RoundRobin);
    assert!(s.settling());
    up(&s.hosts[0], Role::Standby);
    assert!(s.settling(), "one host still unchecked");
    up(&s.hosts[1], Role::Standby);
    assert!(!s.settling());
    let never = set(2, SessionAttrs::Standby, LoadBalance::RoundRobin);
    up(&never.hosts[0], Role::Standby);
    tokio::time::advance(SETTLE_TIME).await;
    assert!(
        !never.settling(),
        "a host never checked holds nothing up for long"
    );
    let single = set(1, SessionAttrs::Any, LoadBalance::Disable);
    assert!(!single.settling(), "unmonitored sets do not wait");
}

/// A host whose monitor cannot log in was checked as far as it goes: no settling for it,
/// and it is unverifiable (sessions ask it themselves) until a check succeeds.
#[test]
fn a_host_the_monitor_cannot_log_in_to_is_unverifiable() {
    let s = set(2, SessionAttrs::Primary, LoadBalance::RoundRobin);
    up(&s.hosts[0], Role::Primary);
    let seen = *s.changed.borrow();
    assert_eq!(
        s.hosts[1].observe(&Observation::Refused("refused".into())),
        None
    );
    assert!(*s.changed.borrow() != seen, "waiters are told");
    assert!(!s.settling());
    let addrs = |v: Vec<Arc<Host>>| v.iter().map(|h| h.addr.clone()).collect::<Vec<_>>();
    assert_eq!(addrs(s.unverifiable()), [s.hosts[1].addr.clone()]);
    // Refused after it was seen up: it stays as last seen, checked.
    assert_eq!(
        s.hosts[0].observe(&Observation::Refused("refused".into())),
        None
    );
    assert_eq!(addrs(s.unverifiable()), [s.hosts[1].addr.clone()]);
    up(&s.hosts[1], Role::Standby);
    assert!(s.unverifiable().is_empty());
}

/// SCRAM passthrough at start: the monitors have no password until a client logs in, so the
/// hosts are unverifiable; the keys that client brings make each host "not checked yet"
/// again, and a burst of sessions waiting meanwhile settles for every check, not only the
/// first to report (each person's first session all went to one standby).
#[tokio::test(start_paused = true)]
async fn a_credential_brought_for_unchecked_hosts_makes_a_new_set_settle_again() {
    let s = set(2, SessionAttrs::Standby, LoadBalance::RoundRobin);
    for h in &s.hosts {
        h.observe(&Observation::Refused("user alice: no password yet".into()));
    }
    assert!(!s.settling());
    assert_eq!(s.unverifiable().len(), 2);
    for h in &s.hosts {
        h.add_login(ServerTarget {
            addr: h.addr.clone(),
            dbname: "db".into(),
            user: "alice".into(),
            password: BackendPassword::Plain("pw".into()),
            params: Vec::new(),
            tls: None,
        });
    }
    assert!(s.unverifiable().is_empty(), "the checks are coming");
    assert!(s.settling());
    up(&s.hosts[0], Role::Standby);
    assert!(s.settling(), "the other host's check is still coming");
    up(&s.hosts[1], Role::Standby);
    assert!(!s.settling());
}

/// A failed TLS handshake forgets what the monitor knew (learned under a TLS setup no longer
/// in force, or from a server that changed): the host is unverifiable, sessions on it go on.
#[test]
fn a_failed_tls_handshake_makes_a_host_unverifiable() {
    let s = set(2, SessionAttrs::Primary, LoadBalance::RoundRobin);
    up(&s.hosts[0], Role::Primary);
    up(&s.hosts[1], Role::Standby);
    let tag = s.hosts[0].tag(Role::Primary, s.hosts[0].status().epoch);
    let seen = *s.changed.borrow();
    let why = "TLS handshake with the server failed: invalid peer certificate: UnknownIssuer";
    let old = s.hosts[0].observe(&Observation::TlsFailed(why.into()));
    assert_eq!(
        old.map(|o| (o.liveness, o.role)),
        Some((Liveness::Up, Role::Primary))
    );
    assert!(*s.changed.borrow() != seen, "waiters are told");
    let now = s.hosts[0].status();
    assert_eq!((now.liveness, now.role), (Liveness::Unknown, Role::Unknown));
    assert_eq!(now.refused.as_deref(), Some(why));
    assert_eq!(s.unverifiable().len(), 1);
    assert!(s.choose(&[]).is_none());
    assert!(!tag.gone().is_cancelled(), "the session on it goes on");
    // The next checks within the back-off report the same reason; a check that works heals.
    assert_eq!(s.hosts[0].observe(&Observation::Refused(why.into())), None);
    assert_eq!(s.hosts[0].status().liveness, Liveness::Unknown);
    up(&s.hosts[0], Role::Primary);
    assert_eq!(s.hosts[0].status().refused, None);
    assert!(s.unverifiable().is_empty());
}

/// A login the monitor lacked a password for is replaced, not added to, when a pool learns
/// SCRAM passthrough keys (and again when they change), and is flagged to be tried at once.
#[test]
fn learned_keys_replace_a_login_without_a_password() {
    let host = Host::new(
        ServerAddr::new("127.0.0.1", 5432),
        Arc::new(watch::channel(0).0),
    );
    let login = |user: &str, password: BackendPassword| ServerTarget {
        addr: ServerAddr::new("127.0.0.1", 5432),
        dbname: "db".into(),
        user: user.into(),
        password,
        params: Vec::new(),
        tls: None,
    };
    let keys = |k: u8| {
        BackendPassword::ScramKeys(crate::auth::passthrough::ScramKeys {
            client_key: [k; 32],
            server_key: [k; 32],
        })
    };
    let password = |i: usize| host.login(i).map(|(t, n)| (t.user, t.password, n));
    host.add_login(login("alice", BackendPassword::None));
    host.add_login(login("bob", BackendPassword::Plain("pw".into())));
    assert!(host.new_login.swap(false, Ordering::Relaxed));
    host.add_login(login("alice", BackendPassword::None));
    assert!(!host.new_login.load(Ordering::Relaxed), "nothing new");
    host.add_login(login("alice", keys(1)));
    assert!(host.new_login.swap(false, Ordering::Relaxed));
    assert_eq!(password(0), Some(("alice".into(), keys(1), 2)));
    host.add_login(login("alice", keys(2)));
    assert_eq!(password(0), Some(("alice".into(), keys(2), 2)));
    assert_eq!(
        password(1),
        Some(("bob".into(), BackendPassword::Plain("pw".into()), 2))
    );
}

/// A failover under way: the primary is seen down and none is up. A cluster whose primary
/// pgporter never saw (only standbys listed) is never taken for one.
#[test]
fn primary_down_is_a_failover_under_way() {
    let s = set(3, SessionAttrs::Standby, LoadBalance::RoundRobin);
    for h in &s.hosts {
        h.add_peers(&s.hosts);
    }
    up(&s.hosts[0], Role::Primary);
    up(&s.hosts[1], Role::Standby);
    up(&s.hosts[2], Role::Standby);
    assert!(!s.hosts[1].primary_down());
    s.hosts[0].observe(&Observation::Down);
    assert!(s.hosts[1].primary_down());
    up(&s.hosts[2], Role::Primary);
    assert!(!s.hosts[1].primary_down(), "a new primary is up");
    let standbys = set(2, SessionAttrs::Standby, LoadBalance::RoundRobin);
    for h in &standbys.hosts {
        h.add_peers(&standbys.hosts);
    }
    up(&standbys.hosts[0], Role::Standby);
    standbys.hosts[1].observe(&Observation::Down);
    assert!(!standbys.hosts[0].primary_down());
}

#[tokio::test]
async fn went_down_wakes_a_waiting_relay_and_answers_at_once_after() {
    let s = set(1, SessionAttrs::Any, LoadBalance::Disable);
    up(&s.hosts[0], Role::Primary);
    let (h, role, epoch) = s.choose(&[]).unwrap();
    let tag = h.tag(role, epoch);
    let mut down = std::pin::pin!(tag.went_down());
    // Polled as a relay polls it on every wake: pending while the host is up.
    for _ in 0..3 {
        let polled = futures_util::poll!(down.as_mut());
        assert!(polled.is_pending());
    }
    let woken = tokio::spawn({
        let host = Arc::clone(&s.hosts[0]);
        async move { host.observe(&Observation::Down).is_some() }
    });
    assert!(woken.await.unwrap());
    tokio::time::timeout(std::time::Duration::from_secs(5), down)
        .await
        .expect("the waiting future saw the host go down");
    // Once down, a new wait ends at its first poll.
    tokio::time::timeout(std::time::Duration::from_secs(5), tag.went_down())
        .await
        .expect("already down");
}
