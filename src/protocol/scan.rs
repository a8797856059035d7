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
}

/// Where a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scanned {
    /// Bytes from the start of the scanned slice that may be forwarded.
    pub forward: usize,
    /// A message asked to stop: nothing after `forward` is to be forwarded.
    pub stopped: bool,
}

/// Remembers how much of the current message's body is still to come.
#[derive(Debug, Clone)]
pub struct Scanner {
    remaining: usize,
    max_body: usize,
}

impl Scanner {
    /// `max_body`: the largest body accepted (larger is a protocol violation).
    pub fn new(max_body: usize) -> Self {
        Scanner {
            remaining: 0,
            max_body,
        }
    }

    /// True when the scanner sits on a message boundary.
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0
    }

    /// Scan `buf`, which starts where the previous scan's `forward` ended. For each message header
    /// found, `visit(tag, body)` decides; `body` is the whole body when `want_body(tag)` (such
    /// messages must be small and are awaited whole), empty otherwise.
    pub fn scan(
        &mut self,
        buf: &[u8],
        want_body: impl Fn(u8) -> bool,
        mut visit: impl FnMut(u8, &[u8]) -> Flow,
    ) -> Result<Scanned, ProtocolError> {
        let mut pos = 0usize;
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - pos);
                pos += take;
                self.remaining -= take;
                if self.remaining > 0 {
                    return Ok(Scanned {
                        forward: pos,
                        stopped: false,
                    });
                }
            }
            let Some(&[tag, a, b, c, d]) = buf.get(pos..pos + 5) else {
                return Ok(Scanned {
                    forward: pos,
                    stopped: false,
                });
            };
            let len = i32::from_be_bytes([a, b, c, d]);
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
            let body: &[u8] = if want_body(tag) {
                if body_len > super::MAX_CONTROL_MESSAGE {
                    return Err(ProtocolError::TooLong {
                        len: body_len,
                        max: super::MAX_CONTROL_MESSAGE,
                    });
                }
                match buf.get(pos + 5..pos + 5 + body_len) {
                    Some(body) => body,
                    None => {
                        return Ok(Scanned {
                            forward: pos,
                            stopped: false,
                        })
                    }
                }
            } else {
                &[]
            };
            if visit(tag, body) == Flow::StopBefore {
                return Ok(Scanned {
                    forward: pos,
                    stopped: true,
                });
            }
            pos += 5;
            self.remaining = body_len;
        }
    }
}

#[cfg(test)]
#[allow(clippy::indexing_slicing)]
mod tests {
    use super::*;

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
                |_| false,
                |t, _| {
                    seen.push(t);
                    Flow::Continue
                },
            )
            .unwrap();
        assert_eq!(r.forward, 100);
        assert!(!s.at_boundary());
        let r = s
            .scan(&big[100..], |_| false, |_, _| Flow::Continue)
            .unwrap();
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
                |t| t == b'Z',
                |t, b| {
                    if t == b'Z' {
                        status = b.first().copied();
                    }
                    Flow::Continue
                },
            )
            .unwrap();
        assert_eq!(r.forward, buf.len() - 5);
        assert_eq!(status, None);
        let r = s
            .scan(
                &z,
                |t| t == b'Z',
                |t, b| {
                    if t == b'Z' {
                        status = b.first().copied();
                    }
                    Flow::Continue
                },
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
                |_| false,
                |t, _| {
                    if t == b'X' {
                        Flow::StopBefore
                    } else {
                        Flow::Continue
                    }
                },
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

    #[test]
    fn rejects_bad_lengths() {
        let mut s = Scanner::new(100);
        assert!(s
            .scan(b"Q\0\0\0\x02", |_| false, |_, _| Flow::Continue)
            .is_err());
        let mut s = Scanner::new(100);
        assert!(s
            .scan(&msg(b'Q', &[1; 200]), |_| false, |_, _| Flow::Continue)
            .is_err());
    }
}
