//! Per-user identity on shared accounts: what a server session is tagged with, and the
//! text check that keeps a client from changing its own tag (42501).
//!
//! Tagging mechanism: the identity GUCs travel in the startup packet of the server
//! connection (PostgreSQL takes unknown startup parameters as GUC settings, and custom
//! `prefix.name` GUCs are allowed). A startup value is the session default, so the client's
//! own RESET ALL / DISCARD ALL / RESET of the GUC / SET ROLE / SET SESSION AUTHORIZATION all
//! leave it in place, with no extra round trip. A server connection therefore carries one
//! identity; the pool prefers connections whose [`Tag::key`] matches the client.

use std::net::IpAddr;
use std::sync::Arc;

use crate::config::IdentitySettings;

/// The address as tagged: the IP (no port, so that connections can be reused by the same
/// person), or `local` for a unix socket.
pub fn addr_text(addr: Option<IpAddr>) -> String {
    let mut text = String::with_capacity(15);
    push_addr(&mut text, addr);
    text
}

/// Append [`addr_text`]'s form of `addr` to `out`. IPv4 (the usual client) is written by
/// hand: `Ipv4Addr`'s `Display` goes through the formatter's padding machinery, about ten
/// times the instructions, and this runs at every checkout.
fn push_addr(out: &mut String, addr: Option<IpAddr>) {
    match addr {
        None => out.push_str("local"),
        Some(IpAddr::V4(v4)) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        Some(v6 @ IpAddr::V6(_)) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// The pool matching key of `user` connecting from `addr`: a server connection tagged with
/// another key is not handed to this client. It names the GUCs too, so that connections
/// tagged under other names (before an identity_guc change) are not handed out. `None` when
/// tagging is off.
pub fn tag_key(settings: &IdentitySettings, user: &str, addr: Option<IpAddr>) -> Option<Arc<str>> {
    if !settings.identity_tagging {
        return None;
    }
    let (guc, addr_guc) = (&settings.identity_guc, &settings.identity_addr_guc);
    // `guc \0 user`, or `guc \0 addr_guc \0 user \0 addr`, built in place.
    let mut key = String::with_capacity(guc.len() + addr_guc.len() + user.len() + 48);
    key.push_str(guc);
    key.push('\0');
    if addr_guc.is_empty() {
        key.push_str(user);
    } else {
        key.push_str(addr_guc);
        key.push('\0');
        key.push_str(user);
        key.push('\0');
        push_addr(&mut key, addr);
    }
    Some(Arc::from(key))
}

/// The startup parameters that carry the tag, for a new server connection (built only when
/// one is opened: most checkouts reuse a connection).
pub fn tag_params(
    settings: &IdentitySettings,
    user: &str,
    addr: Option<IpAddr>,
) -> Vec<(String, String)> {
    if !settings.identity_tagging {
        return Vec::new();
    }
    let mut params = vec![(settings.identity_guc.clone(), user.to_string())];
    if !settings.identity_addr_guc.is_empty() {
        params.push((settings.identity_addr_guc.clone(), addr_text(addr)));
    }
    params
}

/// The identity GUC names, for the spoof check. A GUC `prefix.name` counts as mentioned when
/// both `prefix` and `name` appear (ASCII case-insensitively) anywhere in the text, which also
/// catches `"prefix"."name"`, `prefix . name` and `'prefix.' || 'name'`. It is a text check:
/// SQL that builds the name from smaller pieces evades it (see README).
#[derive(Debug, Clone, Default)]
pub struct GucNames {
    /// Distinct lower-cased name components. Shared: every relay holds a copy.
    parts: Arc<[Box<[u8]>]>,
    /// For each GUC, the bit mask of its components in `parts`.
    gucs: Arc<[u64]>,
    /// The whole names, lower-cased.
    names: Arc<[Box<[u8]>]>,
    longest: usize,
}

impl GucNames {
    pub fn new(settings: &IdentitySettings) -> GucNames {
        if !settings.identity_tagging {
            return GucNames::default();
        }
        let (mut parts, mut gucs, mut longest) = (Vec::<Box<[u8]>>::new(), Vec::new(), 0);
        let mut names = Vec::new();
        for guc in [&settings.identity_guc, &settings.identity_addr_guc] {
            if guc.is_empty() {
                continue;
            }
            names.push(guc.to_ascii_lowercase().into_bytes().into_boxed_slice());
            let mut mask = 0u64;
            for part in guc.split('.') {
                let part = part.to_ascii_lowercase().into_bytes().into_boxed_slice();
                let i = match parts.iter().position(|p| *p == part) {
                    Some(i) => i,
                    None => {
                        longest = longest.max(part.len());
                        parts.push(part);
                        parts.len() - 1
                    }
                };
                mask |= 1 << i;
            }
            gucs.push(mask);
        }
        GucNames {
            parts: parts.into(),
            gucs: gucs.into(),
            names: names.into(),
            longest,
        }
    }

    /// Does `value` (a Bind parameter, a FunctionCall argument) hold an identity GUC's whole
    /// dotted name, in any case (`set_config($1, ...)`, or `$1` an array, JSON or padded text
    /// the name is cut from)? A value is data: prose that mentions both parts apart is not
    /// refused.
    pub fn in_value(&self, value: &[u8]) -> bool {
        self.names.iter().any(|n| contains_ci(value, n))
    }

    /// True when there is nothing to check.
    pub fn is_empty(&self) -> bool {
        self.gucs.is_empty()
    }

    fn found(&self, text: &[u8]) -> u64 {
        let mut mask = 0;
        for (i, part) in self.parts.iter().enumerate() {
            if contains_ci(text, part) {
                mask |= 1 << i;
            }
        }
        mask
    }

    fn complete(&self, mask: u64) -> bool {
        self.gucs.iter().any(|g| g & mask == *g)
    }

    /// Does `text` (a whole message body) name an identity GUC? Also through backslash and
    /// Unicode escapes (`U&"pgp\006Frter"`, `E'\x70gporter'`): where the text has any, it is
    /// checked again with them decoded, and with a `UESCAPE` clause (a custom escape
    /// character) any one part of a name counts.
    pub fn mentioned(&self, text: &[u8]) -> bool {
        if self.mentioned_plain(text) {
            return true;
        }
        if memchr::memchr2(b'\\', b'&', text).is_none() {
            return false;
        }
        if contains_ci(text, b"uescape") && self.parts.iter().any(|p| contains_ci(text, p)) {
            return true;
        }
        self.mentioned_plain(&decode_escapes(text, Escapes::Unicode))
            || self.mentioned_plain(&decode_escapes(text, Escapes::EString))
    }

    fn mentioned_plain(&self, text: &[u8]) -> bool {
        // Every statement passes through here: a GUC is given up at its first missing part
        // and each part is searched for at most once (usually one search, for the prefix).
        let (mut searched, mut found) = (0u64, 0u64);
        self.gucs.iter().any(|&guc| {
            self.parts.iter().enumerate().all(|(i, part)| {
                let bit = 1 << i;
                if guc & bit == 0 {
                    return true;
                }
                if searched & bit == 0 {
                    searched |= bit;
                    if contains_ci(text, part) {
                        found |= bit;
                    }
                }
                found & bit != 0
            })
        })
    }

    /// A matcher for a body seen in chunks.
    pub fn stream(&self) -> GucStream {
        GucStream {
            found: 0,
            carry: Vec::new(),
        }
    }

    /// Feed the next chunk; true once an identity GUC has been named.
    pub fn feed(&self, stream: &mut GucStream, chunk: &[u8]) -> bool {
        if self.is_empty() {
            return false;
        }
        stream.carry.extend_from_slice(chunk);
        stream.found |= self.found(&stream.carry);
        let keep = self.longest.saturating_sub(1);
        let cut = stream.carry.len().saturating_sub(keep);
        stream.carry.drain(..cut);
        self.complete(stream.found)
    }
}

/// State of a chunked match (see [`GucNames::feed`]).
#[derive(Debug, Clone, Default)]
pub struct GucStream {
    found: u64,
    carry: Vec<u8>,
}

/// How backslash escapes are read: in `U&'...'` / `U&"..."` (`\XXXX`, `\+XXXXXX`), or in
/// escape strings `E'...'` (`\xHH`, `\ooo`, `\uXXXX`, `\UXXXXXXXX`). A text is decoded both
/// ways: which applies where is the parser's business, not this check's.
#[derive(Clone, Copy)]
enum Escapes {
    Unicode,
    EString,
}

/// `text` with backslash escapes decoded where they stand for ASCII; anything else is kept.
fn decode_escapes(text: &[u8], mode: Escapes) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        i += 1;
        if b != b'\\' {
            out.push(b);
            continue;
        }
        let rest = text.get(i..).unwrap_or_default();
        // The value of exactly `n` (or, with `up_to`, 1..=n) digits after `skip` bytes.
        let digits = |radix: u32, skip: usize, n: usize, up_to: bool| {
            let run: Vec<u8> = rest
                .iter()
                .skip(skip)
                .take(n)
                .take_while(|c| char::from(**c).is_digit(radix))
                .copied()
                .collect();
            if run.is_empty() || (!up_to && run.len() < n) {
                return None;
            }
            let value = std::str::from_utf8(&run)
                .ok()
                .and_then(|t| u32::from_str_radix(t, radix).ok())?;
            Some((value, skip + run.len()))
        };
        let decoded = match (mode, rest.first()) {
            (Escapes::Unicode, Some(b'+')) => digits(16, 1, 6, false),
            (Escapes::Unicode, Some(_)) => digits(16, 0, 4, false),
            (Escapes::EString, Some(b'x')) => digits(16, 1, 2, true),
            (Escapes::EString, Some(b'u')) => digits(16, 1, 4, false),
            (Escapes::EString, Some(b'U')) => digits(16, 1, 8, false),
            (Escapes::EString, Some(_)) => digits(8, 0, 3, true),
            (_, None) => None,
        };
        match decoded.and_then(|(v, used)| Some((u8::try_from(v).ok().filter(u8::is_ascii)?, used)))
        {
            Some((c, used)) => {
                out.push(c);
                i += used;
            }
            None => out.push(b),
        }
    }
    out
}

/// ASCII case-insensitive substring test; `needle` is lower case.
fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else {
        return true;
    };
    // Every statement passes through here: find the candidates for the first byte with
    // memchr's vectorised search, then compare the rest.
    let (lower, upper) = (first.to_ascii_lowercase(), first.to_ascii_uppercase());
    memchr::memchr2_iter(lower, upper, hay).any(|i| {
        hay.get(i + 1..i + needle.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(rest))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> GucNames {
        GucNames::new(&IdentitySettings::default())
    }

    #[test]
    fn detects_names_in_any_case_and_spelling() {
        let n = names();
        assert!(n.mentioned(b"SET pgporter.client_user = 'bob'"));
        assert!(n.mentioned(b"set PGPORTER.CLIENT_ADDR to '1.2.3.4'"));
        assert!(n.mentioned(b"SET \"pgporter\".\"client_user\" = 'bob'"));
        assert!(n.mentioned(b"select set_config('pgporter.' || 'client_user', 'x', false)"));
        assert!(!n.mentioned(b"select client_user from t"));
        assert!(!n.mentioned(b"select 'pgporter'"));
        assert!(!n.mentioned(b""));
    }

    #[test]
    fn a_value_names_a_guc_by_its_whole_dotted_name() {
        let n = names();
        assert!(n.in_value(b"pgporter.client_user"));
        assert!(n.in_value(b" PGPORTER.Client_Addr\n"));
        assert!(n.in_value(b"{\"n\":\"pgporter.client_user\"}"));
        assert!(n.in_value(b"Xpgporter.client_user"));
        assert!(!n.in_value(b"note: client_addr is recorded by pgporter"));
        assert!(!GucNames::default().in_value(b"pgporter.client_user"));
    }

    #[test]
    fn escaped_spellings_are_caught() {
        let n = names();
        assert!(n.mentioned(br#"SET U&"pgp\006Frter".client_user = 'x'"#));
        assert!(n.mentioned(br#"SET U&"pgporter"."client\+00005Fuser" = 'x'"#));
        assert!(n.mentioned(br"select set_config(E'pg\x70orter.client_user', 'x', false)"));
        assert!(n.mentioned(br"select set_config(E'pg\160orter.client_user', 'x', false)"));
        assert!(n.mentioned(br#"SET U&"pgp!006Frter".client_user = 'x' UESCAPE '!'"#));
        assert!(n.mentioned(br"select set_config(E'\u0070gporter.client_user', 'x', false)"));
        assert!(n.mentioned(br"select set_config(E'\U00000070gporter.client_user', 'x', false)"));
        assert!(n.mentioned(br"select set_config(E'pgpor\164er.client_user', 'x', false)"));
        assert!(n.mentioned(br"select set_config(E'pgporter.client\137user', 'x', false)"));
        assert!(!n.mentioned(br"select E'a\nb', 'x & y'"));
        assert!(!n.mentioned(br"select E'\x70'"));
    }

    #[test]
    fn streaming_across_chunk_boundaries() {
        let n = names();
        let text = b"select 1; set pgporter.client_user = 'mallory'";
        for split in 0..text.len() {
            let mut s = n.stream();
            let a = n.feed(&mut s, &text[..split]);
            let b = n.feed(&mut s, &text[split..]);
            assert!(a || b, "split at {split}");
        }
        let mut s = n.stream();
        assert!(!n.feed(&mut s, b"select client_"));
        assert!(!n.feed(&mut s, b"user"));
    }

    #[test]
    fn addresses_read_as_their_display_form() {
        for text in [
            "0.0.0.0",
            "10.0.0.7",
            "127.0.0.1",
            "192.168.100.255",
            "::1",
            "fe80::1:2",
        ] {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(addr_text(Some(ip)), ip.to_string());
        }
        for octet in 0..=255u8 {
            let ip = IpAddr::from([octet, 9, 10, 99]);
            assert_eq!(addr_text(Some(ip)), ip.to_string());
        }
        assert_eq!(addr_text(None), "local");
    }

    #[test]
    fn tags_and_keys() {
        let s = IdentitySettings::default();
        let ip = Some("10.0.0.7".parse().unwrap());
        assert_eq!(
            tag_params(&s, "alice", ip),
            vec![
                ("pgporter.client_user".to_string(), "alice".to_string()),
                ("pgporter.client_addr".to_string(), "10.0.0.7".to_string())
            ]
        );
        assert_eq!(
            tag_key(&s, "alice", ip).as_deref(),
            Some("pgporter.client_user\u{0}pgporter.client_addr\u{0}alice\u{0}10.0.0.7")
        );
        assert_eq!(
            tag_key(&s, "alice", None).as_deref(),
            Some("pgporter.client_user\u{0}pgporter.client_addr\u{0}alice\u{0}local")
        );
        let user_only = IdentitySettings {
            identity_addr_guc: String::new(),
            ..IdentitySettings::default()
        };
        assert_eq!(
            tag_key(&user_only, "alice", ip).as_deref(),
            Some("pgporter.client_user\u{0}alice")
        );
        assert_eq!(tag_params(&user_only, "alice", ip).len(), 1);
        let off = IdentitySettings {
            identity_tagging: false,
            ..IdentitySettings::default()
        };
        assert!(tag_key(&off, "alice", None).is_none());
        assert!(tag_params(&off, "alice", None).is_empty());
        assert!(GucNames::new(&off).is_empty());
    }

    proptest::proptest! {
        #[test]
        fn contains_ci_agrees_with_a_plain_window_search(
            hay in proptest::collection::vec(proptest::sample::select(b"aApP.x_".to_vec()), 0..40),
            needle in proptest::collection::vec(proptest::sample::select(b"ap._".to_vec()), 1..4),
        ) {
            let plain = hay
                .windows(needle.len())
                .any(|w| w.eq_ignore_ascii_case(&needle));
            proptest::prop_assert_eq!(contains_ci(&hay, &needle), plain);
        }

        #[test]
        fn mentioned_agrees_with_searching_every_part(
            words in proptest::collection::vec(proptest::sample::select(vec![
                "pgporter", "Client_User", "client_addr", "tenant", ".", " ", "x", "client_",
            ]), 0..6),
            addr_guc in proptest::sample::select(vec!["", "pgporter.client_addr", "tenant.client_user"]),
        ) {
            let settings = IdentitySettings {
                identity_addr_guc: addr_guc.to_string(),
                ..IdentitySettings::default()
            };
            let n = GucNames::new(&settings);
            let text = words.concat().into_bytes();
            proptest::prop_assert_eq!(n.mentioned(&text), n.complete(n.found(&text)));
        }
    }
}
