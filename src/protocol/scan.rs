//! Streaming message-header scanner for the relay: walks the message boundaries of a byte stream
//! without waiting for whole bodies, so large rows and COPY data stream through a small buffer.

use super::ProtocolError;

/// What the relay does with the message whose header was just seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Forward it and go on.
    Continue,
    /// Do not forward it nor anything after it; stop relaying this direction.
    StopBefore,
    /// As `StopBefore`, and what this scan cleared before it is not forwarded either (the
    /// answers of a request whose end is refused, read together with it), back to the end of
    /// the last message [`Visit::ends_answer`] names: earlier answers, whole, still go.
    Abandon,
}

/// Where a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes from the start of the scanned slice that may be forwarded.
    pub forward: usize,
    /// A message asked to stop: nothing after `forward` is to be forwarded.
    pub stopped: bool,
}

/// What the scanner asks about each message.
pub trait Visit {
    /// Wait for this message's whole body before [`Visit::header`] when it is at most
    /// [`super::MAX_CONTROL_MESSAGE`] bytes; a larger body is streamed through
    /// [`Visit::chunk`] instead (header gets `None`).
    fn want_body(&self, tag: u8) -> bool;
    /// A message that completes an answer (ReadyForQuery): an [`Flow::Abandon`] later in the
    /// same scan keeps what was scanned up to its end. Only messages whose body was wanted
    /// (and came whole) count.
    fn ends_answer(&self, _tag: u8) -> bool {
        false
    }
    /// A message header; `body` is the whole body when wanted and small enough.
    fn header(&mut self, tag: u8, body: Option<&[u8]>) -> Flow;
    /// The next piece of a wanted body too large to wait for; `last` on its final piece.
    /// `StopBefore` keeps this piece (and everything after it) from being forwarded.
    fn chunk(&mut self, _bytes: &[u8], _last: bool) -> Flow {
        Flow::Continue
    }
    /// Called before scanned bytes are forwarded; Pending holds them back (the visitor
    /// arranges the wake-up).
    fn before_forward(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        std::task::Poll::Ready(())
    }
    /// The message [`Visit::header`] stopped at is at the front of `buf` (whole, unless it
    /// is streamed): replace it, or part of it, and go on ([`Rewrite::Done`]: what is at the
    /// front now is scanned and visited again), leave it ([`Rewrite::Stop`]: this direction
    /// stops), or ask for more of it to be read first ([`Rewrite::NeedMore`]).
    fn rewrite(&mut self, _buf: &mut bytes::BytesMut) -> Rewrite {
        Rewrite::Stop
    }
}

/// The length of the message at the front of `buf`, its tag byte included, as its header
/// declares it (None: no whole header, or a negative length).
pub fn front_len(buf: &[u8]) -> Option<usize> {
    let &[_, a, b, c, d] = buf.get(..5)? else {
        return None;
    };
    usize::try_from(i32::from_be_bytes([a, b, c, d]))
        .ok()
        .map(|l| l + 1)
}

/// Put `new` in place of the first `old_len` bytes of `buf` (a [`Visit::rewrite`]).
pub fn replace_front(buf: &mut bytes::BytesMut, old_len: usize, new: &[u8]) {
    let tail = buf.split_off(old_len.min(buf.len()));
    buf.clear();
    buf.reserve(new.len() + tail.len());
    buf.extend_from_slice(new);
    buf.extend_from_slice(&tail);
}

/// What [`Visit::rewrite`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rewrite {
    Done,
    Stop,
    NeedMore,
}

/// A [`Visit`] from two closures (bodies wanted whole only, never streamed).
#[derive(Debug)]
pub struct Closures<W, V> {
    pub want_body: W,
    pub visit: V,
}

impl<W: Fn(u8) -> bool, V: FnMut(u8, &[u8]) -> Flow> Visit for Closures<W, V> {
    fn want_body(&self, tag: u8) -> bool {
        (self.want_body)(tag)
    }
    fn header(&mut self, tag: u8, body: Option<&[u8]>) -> Flow {
        (self.visit)(tag, body.unwrap_or_default())
    }
}

/// Build a [`Closures`] (the bounds let closure parameter lifetimes be inferred).
pub fn closures<W: Fn(u8) -> bool, V: FnMut(u8, &[u8]) -> Flow>(
    want_body: W,
    visit: V,
) -> Closures<W, V> {
    Closures { want_body, visit }
}

/// Remembers how much of the current message's body is still to come.
#[derive(Debug, Clone)]
pub struct Scanner {
    remaining: usize,
    max_body: usize,
    /// The rest of the current body goes to [`Visit::chunk`].
    streaming: bool,
}

impl Scanner {
    /// `max_body`: the largest body accepted (larger is a protocol violation).
    pub fn new(max_body: usize) -> Self {
        Scanner {
            remaining: 0,
            max_body,
            streaming: false,
        }
    }

    /// True when the scanner sits on a message boundary.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Scan `buf`, which starts where the previous scan's `forward` ended, asking `v` about
    /// each message header found.
    pub fn scan(&mut self, buf: &[u8], v: &mut impl Visit) -> Result<Scanned, ProtocolError> {
        let mut pos = 0usize;
        // The end of the last whole answer scanned (what an Abandon still forwards).
        let mut answered = 0usize;
        let stop = |forward| Scanned {
            forward,
            stopped: true,
        };
        let go = |forward| Scanned {
            forward,
            stopped: false,
        };
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - pos);
                if self.streaming && take > 0 {
                    let piece = buf.get(pos..pos + take).unwrap_or_default();
                    match v.chunk(piece, take == self.remaining) {
                        Flow::Continue => {}
                        Flow::StopBefore => return Ok(stop(pos)),
                        Flow::Abandon => return Ok(stop(answered)),
                    }
                }
                pos += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(go(pos));
                }
                self.streaming = false;
            }
            let Some(&[tag, a, b, c, d]) = buf.get(pos..pos + 5) else {
                return Ok(go(pos));
            };
            // A malformed header is an error only when it comes first in `buf`; after valid
            // messages the scan stops before it, so those are forwarded first and the next scan
            // reports it. What reaches the peer before the error then does not depend on how
            // the stream was split into reads (PostgreSQL, too, acts on each message before it
            // reads the next).
            let body_len = match self.body_len([a, b, c, d]) {
                Ok(len) => len,
                Err(e) if pos == 0 => return Err(e),
                Err(_) => return Ok(go(pos)),
            };
            let mut streaming = false;
            let body = if !v.want_body(tag) {
                None
            } else if body_len > super::MAX_CONTROL_MESSAGE {
                streaming = true;
                None
            } else {
                match buf.get(pos + 5..pos + 5 + body_len) {
                    Some(body) => Some(body),
                    None => return Ok(go(pos)),
                }
            };
            match v.header(tag, body) {
                Flow::Continue => {}
                Flow::StopBefore => return Ok(stop(pos)),
                Flow::Abandon => return Ok(stop(answered)),
            }
            pos += 5;
            if body.is_some() && v.ends_answer(tag) {
                answered = pos + body_len;
            }
            self.remaining = body_len;
            self.streaming = streaming;
        }
    }

    /// The body length a header's length word declares, if acceptable.
    fn body_len(&self, len: [u8; 4]) -> Result<usize, ProtocolError> {
        let len = i32::from_be_bytes(len);
        let body_len = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(4))
            .ok_or(ProtocolError::BadLength(len.into()))?;
        if body_len > self.max_body {
            return Err(ProtocolError::TooLong {
                len: body_len,
                max: self.max_body,
            });
        }
        Ok(body_len)
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn none() -> impl Visit {
        closures(|_| false, |_, _| Flow::Continue)
    }

    /// Wants every body; records headers and streamed chunks.
    #[derive(Default)]
    struct Rec {
        headers: Vec<(u8, Option<usize>)>,
        chunks: Vec<(usize, bool)>,
        stop_in_chunk: bool,
    }

    impl Visit for Rec {
        fn want_body(&self, _: u8) -> bool {
            true
        }
        fn header(&mut self, tag: u8, body: Option<&[u8]>) -> Flow {
            self.headers.push((tag, body.map(<[u8]>::len)));
            Flow::Continue
        }
        fn chunk(&mut self, bytes: &[u8], last: bool) -> Flow {
            self.chunks.push((bytes.len(), last));
            if self.stop_in_chunk {
                Flow::StopBefore
            } else {
                Flow::Continue
            }
        }
    }

    #[test]
    fn streams_large_wanted_bodies_to_chunk() {
        let big = msg(b'Q', &vec![b'x'; crate::protocol::MAX_CONTROL_MESSAGE + 10]);
        let mut s = Scanner::new(1 << 20);
        let mut rec = Rec::default();
        let r = s.scan(&big[..1000], &mut rec).unwrap();
        assert_eq!(r.forward, 1000);
        let r = s.scan(&big[1000..], &mut rec).unwrap();
        assert_eq!(r.forward, big.len() - 1000);
        assert_eq!(rec.headers, vec![(b'Q', None)]);
        assert_eq!(rec.chunks, vec![(995, false), (big.len() - 1000, true)]);
        // Stopping inside a chunk keeps that chunk back.
        let mut s = Scanner::new(1 << 20);
        let mut rec = Rec {
            stop_in_chunk: true,
            ..Rec::default()
        };
        let r = s.scan(&big, &mut rec).unwrap();
        assert_eq!(
            r,
            Scanned {
                forward: 5,
                stopped: true
            }
        );
    }

    #[test]
    fn abandon_forwards_nothing_of_the_scan() {
        let mut buf = msg(b'C', b"BEGIN\0");
        buf.extend(msg(b'Z', b"T"));
        let stop_at_z = |tag: u8, flow: Flow| {
            let mut s = Scanner::new(1 << 20);
            let mut v = closures(
                |_| false,
                |t, _| if t == tag { flow } else { Flow::Continue },
            );
            s.scan(&buf, &mut v).unwrap()
        };
        let r = stop_at_z(b'Z', Flow::StopBefore);
        assert_eq!((r.forward, r.stopped), (11, true));
        let r = stop_at_z(b'Z', Flow::Abandon);
        assert_eq!((r.forward, r.stopped), (0, true));
    }

    /// Answers ended (by a ReadyForQuery) before the abandoned one in the same read still go.
    #[test]
    fn abandon_keeps_whole_answers_before_it() {
        struct Refuse;
        impl Visit for Refuse {
            fn want_body(&self, tag: u8) -> bool {
                tag == b'Z'
            }
            fn ends_answer(&self, tag: u8) -> bool {
                tag == b'Z'
            }
            fn header(&mut self, tag: u8, body: Option<&[u8]>) -> Flow {
                match (tag, body) {
                    (b'Z', Some(b"T")) => Flow::Abandon,
                    _ => Flow::Continue,
                }
            }
        }
        let mut buf = msg(b'C', b"SELECT 1\0");
        buf.extend(msg(b'Z', b"I"));
        let first = buf.len();
        buf.extend(msg(b'C', b"BEGIN\0"));
        buf.extend(msg(b'Z', b"T"));
        let r = Scanner::new(1 << 20).scan(&buf, &mut Refuse).unwrap();
        assert_eq!((r.forward, r.stopped), (first, true));
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn streams_large_bodies_in_pieces() {
        let mut s = Scanner::new(1 << 20);
        let big = msg(b'D', &vec![7u8; 1000]);
        let mut seen = vec![];
        let r = s
            .scan(
                &big[..100],
                &mut closures(
                    |_| false,
                    |t, _| {
                        seen.push(t);
                        Flow::Continue
                    },
                ),
            )
            .unwrap();
        assert_eq!(r.forward, 100);
        assert!(!s.at_boundary());
        let r = s.scan(&big[100..], &mut none()).unwrap();
        assert_eq!(r.forward, big.len() - 100);
        assert!(s.at_boundary());
        assert_eq!(seen, vec![b'D']);
    }

    #[test]
    fn waits_for_wanted_bodies_and_partial_headers() {
        let mut s = Scanner::new(1 << 20);
        let mut buf = msg(b'C', b"SELECT 1\0");
        let z = msg(b'Z', b"I");
        buf.extend_from_slice(&z[..5]);
        let mut status = None;
        let r = s
            .scan(
                &buf,
                &mut closures(
                    |t| t == b'Z',
                    |t, b: &[u8]| {
                        if t == b'Z' {
                            status = b.first().copied();
                        }
                        Flow::Continue
                    },
                ),
            )
            .unwrap();
        assert_eq!(r.forward, buf.len() - 5);
        assert_eq!(status, None);
        let r = s
            .scan(
                &z,
                &mut closures(
                    |t| t == b'Z',
                    |t, b: &[u8]| {
                        if t == b'Z' {
                            status = b.first().copied();
                        }
                        Flow::Continue
                    },
                ),
            )
            .unwrap();
        assert_eq!(r.forward, z.len());
        assert_eq!(status, Some(b'I'));
    }

    #[test]
    fn stops_before_terminate() {
        let mut s = Scanner::new(100);
        let mut buf = msg(b'Q', b"select 1\0");
        let q = buf.len();
        buf.extend_from_slice(&msg(b'X', b""));
        let r = s
            .scan(
                &buf,
                &mut closures(
                    |_| false,
                    |t, _| {
                        if t == b'X' {
                            Flow::StopBefore
                        } else {
                            Flow::Continue
                        }
                    },
                ),
            )
            .unwrap();
        assert_eq!(
            r,
            Scanned {
                forward: q,
                stopped: true
            }
        );
    }

    /// Regression (found by the `frames` fuzz target): valid messages before a bad header used
    /// to be dropped with the error when they arrived in the same read, but forwarded when the
    /// read boundary fell between them.
    #[test]
    fn forwards_valid_messages_before_a_bad_header() {
        let mut s = Scanner::new(100);
        let mut buf = msg(0, b"");
        buf.extend_from_slice(&[23, 0, 0, 0, 0, 0, 0]);
        let r = s.scan(&buf, &mut none()).unwrap();
        assert_eq!(r.forward, 5);
        assert!(s.scan(&buf[5..], &mut none()).is_err());
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut s = Scanner::new(100);
        assert!(s.scan(b"Q\0\0\0\x02", &mut none()).is_err());
        let mut s = Scanner::new(100);
        assert!(s.scan(&msg(b'Q', &[1; 200]), &mut none()).is_err());
    }
}
