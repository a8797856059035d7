//! [`connect`] against a scripted server, for the logins it makes but does not hand over.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::hosts::Observation;
use super::*;
use crate::config::{LoadBalance, SessionAttrs};
use crate::server::BackendPassword;

/// The closes [`connect`] asked for, with their reasons.
#[derive(Default)]
struct Seen(Mutex<Vec<&'static str>>);

impl ConnectReport for Seen {
    fn dial_failed(&self, _: &ServerAddr, _: &ServerError, _: bool) {}

    fn set_aside(&self, conn: ServerConn, reason: &'static str) {
        self.0.lock().unwrap().push(reason);
        // As the pool does (`pool::release::terminate`).
        let mut conn = conn;
        tokio::spawn(async move {
            let io = &mut conn.conn.io;
            io.write_all(&[b'X', 0, 0, 0, 4]).await.unwrap();
            io.shutdown().await.unwrap();
        });
    }
}

/// A monitored set (read-write) of the one host `port`.
fn primary_set(port: u16) -> HostSet {
    let changed = Arc::new(watch::channel(0).0);
    let host = Arc::new(Host::new(
        ServerAddr::new("127.0.0.1", port),
        Arc::clone(&changed),
    ));
    HostSet::new(
        vec![host],
        SessionAttrs::Primary,
        LoadBalance::Disable,
        changed,
    )
}

/// Accept a login, let it in (trust) with `in_hot_standby` = `standby`, then read what the
/// pooler sends until it closes.
async fn let_in_and_listen(listener: &TcpListener, standby: &str) -> Vec<u8> {
    let (mut socket, _): (TcpStream, _) = listener.accept().await.unwrap();
    let len = socket.read_i32().await.unwrap();
    let mut rest = vec![0; usize::try_from(len - 4).unwrap()];
    socket.read_exact(&mut rest).await.unwrap();
    let mut answer = vec![b'R', 0, 0, 0, 8, 0, 0, 0, 0];
    let param = format!("in_hot_standby\0{standby}\0");
    answer.push(b'S');
    answer.extend_from_slice(&i32::try_from(param.len() + 4).unwrap().to_be_bytes());
    answer.extend_from_slice(param.as_bytes());
    answer.extend_from_slice(&[b'K', 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0, 8]);
    answer.extend_from_slice(&[b'Z', 0, 0, 0, 5, b'I']);
    socket.write_all(&answer).await.unwrap();
    let mut got = Vec::new();
    let read = socket.read_to_end(&mut got);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the connection was left open")
        .unwrap();
    got
}

async fn try_connect(set: &HostSet, port: u16, report: &Seen) -> Result<ServerConn, RouteError> {
    let target = ServerTarget {
        addr: ServerAddr::new("127.0.0.1", port),
        dbname: "app".into(),
        user: "u".into(),
        password: BackendPassword::None,
        params: Vec::new(),
        tls: None,
    };
    let dial = crate::net::Dial {
        timeout: Duration::from_secs(10),
        socket: Default::default(),
    };
    connect(set, &target, &[], dial, None, || Duration::ZERO, report).await
}

/// A host the monitor saw as the primary answers as a standby (a demotion not seen yet): the
/// login is not used, and it is closed with a Terminate and a close line, not just dropped.
#[tokio::test]
async fn a_login_reporting_another_role_is_closed_with_terminate() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let set = primary_set(port);
    set.hosts()[0].observe(&Observation::Up {
        role: Role::Primary,
        lag_bytes: None,
        lag: None,
        lagging: false,
    });
    let report = Seen::default();
    let (made, got) = tokio::join!(
        try_connect(&set, port, &report),
        let_in_and_listen(&listener, "on")
    );
    assert!(made.is_err(), "a standby was handed over as the primary");
    assert_eq!(got, [b'X', 0, 0, 0, 4], "no Terminate");
    assert_eq!(*report.0.lock().unwrap(), ["host down or changed role"]);
}

/// A host the monitor cannot log in to takes the session's login: that login is only a probe
/// (the host is re-checked), closed with a Terminate and a close line, not just dropped.
#[tokio::test]
async fn an_unchecked_hosts_login_is_closed_with_terminate() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let set = primary_set(port);
    set.hosts()[0].observe(&Observation::Refused("no password yet".into()));
    let report = Seen::default();
    let (made, got) = tokio::join!(
        try_connect(&set, port, &report),
        let_in_and_listen(&listener, "off")
    );
    assert!(made.is_err(), "an unchecked host was used");
    assert_eq!(got, [b'X', 0, 0, 0, 4], "no Terminate");
    assert_eq!(*report.0.lock().unwrap(), ["host not checked yet"]);
}
