//! The real binary under systemd: `Type=notify` notifications (Debian's pgbouncer.service is a
//! notify unit, `notify`) and socket activation (`LISTEN_FDS`, Debian's pgbouncer.socket,
//! `activation`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::HANG;

mod activation;
mod notify;

fn kill(sig: &str, pid: u32) {
    assert!(Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill")
        .success());
}

/// SIGINT to `child`, which must exit successfully within [`HANG`].
async fn interrupt(child: std::process::Child) {
    kill("-INT", child.id());
    let status = wait_exit(child).await;
    assert!(status.success(), "exit status {status}");
}

/// The exit status of `child`, which must exit within [`HANG`].
async fn wait_exit(mut child: std::process::Child) -> std::process::ExitStatus {
    let exited = tokio::time::timeout(HANG, async {
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    exited.unwrap_or_else(|_| {
        let _ = child.kill();
        let _ = child.wait();
        panic!("pgporter did not exit within {HANG:?}")
    })
}

/// A connection through a socket systemd-socket-activate passes, retried while it is refused:
/// the unix socket's file exists from its bind(), before the listen() (a connect in between
/// was refused with the machine loaded).
async fn connect_once_listening(
    connstring: &str,
) -> Result<
    (
        tokio_postgres::Client,
        tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
    ),
    tokio_postgres::Error,
> {
    let deadline = tokio::time::Instant::now() + HANG;
    loop {
        let attempt = tokio::time::timeout(
            HANG,
            tokio_postgres::connect(connstring, tokio_postgres::NoTls),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer through the passed socket: {connstring}"));
        let refused = attempt.as_ref().err().is_some_and(|e| {
            std::error::Error::source(e)
                .and_then(|s| s.downcast_ref::<std::io::Error>())
                .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused)
        });
        if !refused || tokio::time::Instant::now() > deadline {
            return attempt;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `dir`/pgporter.ini: one database nobody reaches, listen_port `port` on 127.0.0.1 (0: any),
/// no unix socket, `extra`; and `dir`/userlist.txt with user `u`, password `pw`.
fn minimal_ini(dir: &Path, port: u16, extra: &str) -> PathBuf {
    std::fs::write(dir.join("userlist.txt"), "\"u\" \"pw\"\n").expect("userlist");
    let ini = dir.join("pgporter.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\nx = host=127.0.0.1 port=1\n[pgbouncer]\nlisten_addr = 127.0.0.1\n\
             listen_port = {port}\nunix_socket_dir =\nauth_file = userlist.txt\n{extra}"
        ),
    )
    .expect("ini");
    ini
}
