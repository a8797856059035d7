//! TCP options of client and server sockets: keepalive (PgBouncer's `tcp_keepalive`,
//! `tcp_keepidle`, `tcp_keepintvl`, `tcp_keepcnt`) and `tcp_user_timeout`, so a peer that
//! vanished without a FIN (a node gone, a dropped NAT entry) is noticed instead of holding a
//! pool slot for good; and `tcp_socket_buffer`.

use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};

use crate::config::Settings;

/// Keepalive timing; `None` fields keep the operating system's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Keepalive {
    pub idle: Option<Duration>,
    pub interval: Option<Duration>,
    pub retries: Option<u32>,
}

impl Keepalive {
    /// From the settings; `None` when `tcp_keepalive` is off. Zero means the OS default, as
    /// in PgBouncer.
    pub fn from_settings(s: &Settings) -> Option<Keepalive> {
        let nonzero = |d: Duration| (!d.is_zero()).then_some(d);
        s.tcp_keepalive.then(|| Keepalive {
            idle: nonzero(s.tcp_keepidle),
            interval: nonzero(s.tcp_keepintvl),
            retries: (s.tcp_keepcnt > 0).then_some(s.tcp_keepcnt),
        })
    }

    /// Turn keepalive on for `socket` with this timing.
    pub fn apply<S>(&self, socket: &S) -> std::io::Result<()>
    where
        for<'a> SockRef<'a>: From<&'a S>,
    {
        let mut k = TcpKeepalive::new();
        if let Some(idle) = self.idle {
            k = k.with_time(idle);
        }
        if let Some(interval) = self.interval {
            k = k.with_interval(interval);
        }
        if let Some(retries) = self.retries {
            k = k.with_retries(retries);
        }
        SockRef::from(socket).set_tcp_keepalive(&k)
    }
}

/// The options set on every client and server TCP socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SocketOptions {
    pub keepalive: Option<Keepalive>,
    /// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the connection
    /// is dropped (`tcp_user_timeout`; None = the OS default).
    pub user_timeout: Option<Duration>,
    /// SO_SNDBUF and SO_RCVBUF (`tcp_socket_buffer`; None = the OS default).
    pub buffer: Option<usize>,
}

impl SocketOptions {
    pub fn from_settings(s: &Settings) -> SocketOptions {
        SocketOptions {
            keepalive: Keepalive::from_settings(s),
            user_timeout: (!s.tcp_user_timeout.is_zero()).then_some(s.tcp_user_timeout),
            buffer: usize::try_from(s.tcp_socket_buffer).ok().filter(|&b| b > 0),
        }
    }

    pub fn apply<S>(&self, socket: &S) -> std::io::Result<()>
    where
        for<'a> SockRef<'a>: From<&'a S>,
    {
        if let Some(k) = &self.keepalive {
            k.apply(socket)?;
        }
        if self.user_timeout.is_some() {
            SockRef::from(socket).set_tcp_user_timeout(self.user_timeout)?;
        }
        if let Some(bytes) = self.buffer {
            let sock = SockRef::from(socket);
            sock.set_send_buffer_size(bytes)?;
            sock.set_recv_buffer_size(bytes)?;
        }
        Ok(())
    }
}

/// How to open a server connection: the connect + login deadline and the socket options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dial {
    pub timeout: Duration,
    pub socket: SocketOptions,
}

impl Dial {
    pub fn new(s: &Settings) -> Dial {
        Dial {
            timeout: crate::config::Config::limit(s.server_connect_timeout),
            socket: SocketOptions::from_settings(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_to_a_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let k = Keepalive {
            idle: Some(Duration::from_secs(42)),
            interval: Some(Duration::from_secs(7)),
            retries: Some(3),
        };
        k.apply(&tcp).unwrap();
        let sock = SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(42));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(7)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
    }

    #[test]
    fn user_timeout_from_settings() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let s = Settings {
            tcp_user_timeout: Duration::from_millis(2500),
            tcp_keepalive: false,
            tcp_socket_buffer: 65536,
            ..Settings::default()
        };
        let opts = SocketOptions::from_settings(&s);
        assert_eq!(opts.keepalive, None);
        opts.apply(&tcp).unwrap();
        let sock = SockRef::from(&tcp);
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_millis(2500))
        );
        assert!(!sock.keepalive().unwrap());
        // Linux doubles what it is given (for its bookkeeping).
        assert_eq!(sock.send_buffer_size().unwrap(), 2 * 65536);
        assert_eq!(sock.recv_buffer_size().unwrap(), 2 * 65536);
    }
}
