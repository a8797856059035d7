//! The lobby: logged-in clients that have gone quiet wait here, without a task of their own.
//!
//! A tokio task per client costs about a kilobyte even when it only waits (the task, its
//! future, the reactor's registration). A parked client is one slot in a table and one entry
//! in the lobby's own epoll set; one thread waits on that set and hands a client back (into a
//! new task) when its socket has something to say (a request, EOF) or when it must end
//! (killed, shutdown). This is how PgBouncer keeps an idle client in under a
//! kilobyte: a small struct and an fd in an event loop.

use std::io;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use tokio_util::task::task_tracker::TaskTrackerToken;

/// Whatever waits in the lobby with a socket.
pub trait Guest: Send + 'static {
    /// Must leave now, though its client said nothing (killed).
    fn ended(&self) -> bool;
    /// Back to work with its socket (nonblocking, registered nowhere). Called on the lobby's
    /// thread (inside the runtime's context) or a client's task: it spawns, never blocks.
    fn leave(self, socket: TcpStream);
}

/// The waker's token (guests' tokens are their seat numbers).
const WAKE: Token = Token(usize::MAX);

#[derive(Debug)]
pub struct Lobby<G> {
    registry: Registry,
    /// Taken by the lobby's thread.
    poll: Mutex<Option<Poll>>,
    waker: Waker,
    seats: Mutex<Seats<G>>,
    /// Some guest may have ended: look.
    look: AtomicBool,
    /// Send everyone back and stop.
    closing: AtomicBool,
}

/// The parked guests, by token; freed slots are reused.
#[derive(Debug)]
struct Seats<G> {
    slots: Vec<Option<(TcpStream, G)>>,
    free: Vec<usize>,
    /// While the lobby is not running (before its start, after its close), guests are sent
    /// straight back.
    closed: bool,
}

impl<G: Guest + std::fmt::Debug> Lobby<G> {
    pub fn new() -> io::Result<Lobby<G>> {
        let poll = Poll::new()?;
        Ok(Lobby {
            registry: poll.registry().try_clone()?,
            waker: Waker::new(poll.registry(), WAKE)?,
            poll: Mutex::new(Some(poll)),
            seats: Mutex::new(Seats {
                slots: Vec::new(),
                free: Vec::new(),
                // Until the thread runs, guests are sent straight back.
                closed: true,
            }),
            look: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        })
    }

    /// Start the lobby's thread. Guests leave into tasks on `runtime`; `alive` (a task tracker
    /// token) is held until every guest has left after [`Lobby::close`], so a shutdown that
    /// waits for the tracker's tasks waits for theirs too.
    pub fn start(
        self: &Arc<Self>,
        runtime: tokio::runtime::Handle,
        alive: TaskTrackerToken,
    ) -> io::Result<()> {
        let Some(poll) = lock(&self.poll).take() else {
            return Ok(());
        };
        let lobby = Arc::clone(self);
        lock(&self.seats).closed = false;
        let spawned = std::thread::Builder::new()
            .name("pgporter-lobby".into())
            .spawn(move || {
                let _context = runtime.enter();
                lobby.watch(poll);
                lobby.close_doors();
                drop(alive);
            });
        if spawned.is_err() {
            lock(&self.seats).closed = true;
        }
        spawned.map(drop)
    }

    /// Park `guest` until `socket` is readable. A closed lobby, an ended guest or a failed
    /// registration sends it back at once.
    pub fn park(&self, socket: TcpStream, guest: G) {
        let mut seats = lock(&self.seats);
        // Checked under the lock that the nudged scan takes too: a kill either shows here or
        // finds the guest seated.
        if seats.closed || guest.ended() {
            drop(seats);
            return guest.leave(socket);
        }
        let token = match seats.free.pop() {
            Some(t) => t,
            None => {
                seats.slots.push(None);
                seats.slots.len() - 1
            }
        };
        // Registered with the table locked: the lobby cannot see the event before the seat.
        let fd = socket.as_raw_fd();
        match self
            .registry
            .register(&mut SourceFd(&fd), Token(token), Interest::READABLE)
        {
            Ok(()) => seats.slots[token] = Some((socket, guest)),
            Err(e) => {
                seats.free.push(token);
                drop(seats);
                tracing::warn!(error = %e, "lobby: cannot watch a client socket; serving it");
                guest.leave(socket);
            }
        }
    }

    /// Some guest may have ended (KILL, KILL_CLIENT): send the ended ones back.
    pub fn nudge(&self) {
        self.look.store(true, Ordering::Release);
        self.wake();
    }

    /// Send every guest back and stop watching (shutdown); later guests go straight back.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.wake();
    }

    /// How many clients are parked.
    pub fn parked(&self) -> usize {
        let seats = lock(&self.seats);
        seats.slots.len() - seats.free.len()
    }

    fn wake(&self) {
        if let Err(e) = self.waker.wake() {
            tracing::error!(error = %e, "lobby: cannot wake its thread");
        }
    }

    /// The lobby's thread: wait for parked sockets to speak until closed.
    fn watch(&self, mut poll: Poll) {
        let mut events = Events::with_capacity(256);
        loop {
            if let Err(e) = poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(error = %e, "lobby: epoll_wait failed; closing the lobby");
                return;
            }
            if self.closing.load(Ordering::Acquire) {
                return;
            }
            let ready = events.iter().map(|e| e.token()).filter(|t| *t != WAKE);
            let mut seats = lock(&self.seats);
            let mut leaving = self.unseat(&mut seats, ready.map(|t| t.0));
            if self.look.swap(false, Ordering::AcqRel) {
                let ended: Vec<usize> = (seats.slots.iter().enumerate())
                    .filter(|(_, s)| s.as_ref().is_some_and(|(_, g)| g.ended()))
                    .map(|(token, _)| token)
                    .collect();
                leaving.extend(self.unseat(&mut seats, ended));
            }
            drop(seats);
            send_back(leaving);
        }
    }

    /// Closed: everyone leaves, and later guests are sent straight back.
    fn close_doors(&self) {
        let mut seats = lock(&self.seats);
        seats.closed = true;
        let n = seats.slots.len();
        let everyone = self.unseat(&mut seats, 0..n);
        drop(seats);
        send_back(everyone);
    }

    /// Take the guests at `tokens` out of the table and out of the epoll set (before their
    /// tokens can be reused).
    fn unseat(
        &self,
        seats: &mut Seats<G>,
        tokens: impl IntoIterator<Item = usize>,
    ) -> Vec<(TcpStream, G)> {
        let mut out = Vec::new();
        for token in tokens {
            let Some((socket, guest)) = seats.slots.get_mut(token).and_then(Option::take) else {
                continue;
            };
            if let Err(e) = self.registry.deregister(&mut SourceFd(&socket.as_raw_fd())) {
                tracing::debug!(error = %e, "lobby: deregister failed");
            }
            seats.free.push(token);
            out.push((socket, guest));
        }
        out
    }
}

/// Guests out of the table go back to work (outside the table's lock).
fn send_back<G: Guest>(leaving: Vec<(TcpStream, G)>) {
    leaving
        .into_iter()
        .for_each(|(socket, guest)| guest.leave(socket));
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Reports its name when it leaves.
    #[derive(Debug)]
    struct Probe {
        name: &'static str,
        ended: Arc<AtomicBool>,
        left: mpsc::Sender<&'static str>,
    }

    impl Guest for Probe {
        fn ended(&self) -> bool {
            self.ended.load(Ordering::SeqCst)
        }
        fn leave(self, _socket: TcpStream) {
            let _ = self.left.send(self.name);
        }
    }

    /// A connected pair: (our end, the parked end).
    fn pair(listener: &std::net::TcpListener) -> (TcpStream, TcpStream) {
        let ours = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (theirs, _) = listener.accept().expect("accept");
        theirs.set_nonblocking(true).expect("nonblocking");
        (ours, theirs)
    }

    #[test]
    fn guests_leave_when_they_speak_are_killed_or_the_lobby_closes() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let tracker = tokio_util::task::TaskTracker::new();
        let lobby = Arc::new(Lobby::new().expect("lobby"));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let (tx, left) = mpsc::channel();
        let probe = |name| Probe {
            name,
            ended: Arc::new(AtomicBool::new(false)),
            left: tx.clone(),
        };
        let wait = || {
            left.recv_timeout(Duration::from_secs(10))
                .expect("a guest left")
        };

        // Not started yet: straight back.
        let (_a, parked) = pair(&listener);
        lobby.park(parked, probe("early"));
        assert_eq!(wait(), "early");

        lobby
            .start(runtime.handle().clone(), tracker.token())
            .expect("start");
        let (mut a, parked) = pair(&listener);
        lobby.park(parked, probe("speaks"));
        let (_b, parked) = pair(&listener);
        let quiet = probe("killed");
        let killed = Arc::clone(&quiet.ended);
        lobby.park(parked, quiet);
        let (_c, parked) = pair(&listener);
        lobby.park(parked, probe("stays"));
        assert_eq!(lobby.parked(), 3);

        a.write_all(b"Q").expect("write");
        assert_eq!(wait(), "speaks");
        killed.store(true, Ordering::SeqCst);
        lobby.nudge();
        assert_eq!(wait(), "killed");
        assert_eq!(lobby.parked(), 1);

        // A guest already killed when it is parked leaves at once.
        let (_d, parked) = pair(&listener);
        let dead = probe("dead on arrival");
        dead.ended.store(true, Ordering::SeqCst);
        lobby.park(parked, dead);
        assert_eq!(wait(), "dead on arrival");

        lobby.close();
        assert_eq!(wait(), "stays");
        tracker.close();
        runtime.block_on(tracker.wait());
        let (_e, parked) = pair(&listener);
        lobby.park(parked, probe("late"));
        assert_eq!(wait(), "late");
        assert_eq!(lobby.parked(), 0);
    }
}
