//! auth_hba_file: pg_hba.conf as PgBouncer reads it. Parsing only; matching is `auth::hba`.
//!
//! Record types `local`, `host`, `hostssl`, `hostnossl`. Database field: `all`, `sameuser`,
//! names, `@file` (names read from a file next to the hba file). User field: `all`, names,
//! `@file`. Address: `all`, an IPv4/IPv6 address with `/prefix`, or address and mask columns.
//! Methods: trust, reject, md5, password, scram-sha-256, cert and peer (both with optional
//! `map=NAME` for auth_ident_file; peer on `local` lines only). Keywords are case-sensitive and
//! lose their meaning when quoted, as in PostgreSQL; `#` starts a comment; a trailing `\`
//! continues a line.
//!
//! A valid pg_hba.conf line that pgporter cannot apply as written does not stop the load (an
//! operator points auth_hba_file at a copy of pg_hba.conf, and PgBouncer skips such lines): it
//! is read the cautious way, with a warning, so that it never lets in a connection PostgreSQL
//! would refuse. `replication` matches no pgporter connection (replication is refused); nor
//! does a `hostgssenc` line, and `hostnogssenc` is `host`. A condition pgporter cannot evaluate
//! (`+group` or `samerole` membership, `samehost`/`samenet`, a host name) is taken as true and
//! the line refuses; so does a line with a method or option it cannot carry out (`ident`,
//! `ldap`, `clientcert=` ...). Names in an `@file` keep their meaning. A line that is not valid
//! pg_hba.conf (`HOST`, `Trust`, a bad address) is an error, as PostgreSQL refuses the file.

use std::net::IpAddr;

/// Which connections a line applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnType {
    Local,
    Host,
    HostSsl,
    HostNoSsl,
}

/// One database or user name pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamePattern {
    All,
    /// Database field only: the database named like the user.
    SameUser,
    Name(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaAddress {
    All,
    Cidr { net: IpAddr, prefix: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HbaMethod {
    Trust,
    Reject,
    Md5,
    Password,
    ScramSha256,
    Cert,
    /// `local` lines: the OS user of the connecting process (SO_PEERCRED) must be the user,
    /// or map to it through auth_ident_file (`map=`).
    Peer,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HbaRule {
    /// 1-based line in the hba file, for logs.
    pub line: usize,
    pub conn: ConnType,
    pub databases: Vec<NamePattern>,
    pub users: Vec<NamePattern>,
    /// `None` on `local` lines.
    pub address: Option<HbaAddress>,
    pub method: HbaMethod,
    /// `map=` option (cert).
    pub map: Option<String>,
}

/// A word from the file: its text and whether it was quoted.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Word {
    text: String,
    quoted: bool,
}

/// Parse the hba text; `read_include(name)` returns the contents of an `@name` file.
/// Returns the rules and warnings about lines read the cautious way (see the module doc), or
/// every error; each as (line, message).
pub fn parse_hba(
    text: &str,
    read_include: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(Vec<HbaRule>, LineErrors), LineErrors> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (line, logical) in logical_lines(text) {
        let fields = match split_fields(&logical) {
            Ok(f) => f,
            Err(e) => {
                errors.push((line, e));
                continue;
            }
        };
        if fields.is_empty() {
            continue;
        }
        match parse_rule(line, &fields, read_include) {
            Ok((rule, warning)) => {
                rules.extend(rule);
                warnings.extend(warning.map(|w| (line, w)));
            }
            Err(e) => errors.push((line, e)),
        }
    }
    if errors.is_empty() {
        Ok((rules, warnings))
    } else {
        Err(errors)
    }
}

/// Join backslash-continued lines; yields (first line number, text without comment).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = raw.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            pending = Some((start, acc));
        } else {
            acc.push_str(raw);
            out.push((start, acc));
        }
    }
    out.extend(pending);
    out
}

/// Split into fields; each field is a comma-separated list of words.
fn split_fields(line: &str) -> Result<Vec<Vec<Word>>, String> {
    let mut fields: Vec<Vec<Word>> = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => return Ok(fields),
            _ => {}
        }
        let mut field = Vec::new();
        loop {
            let mut word = Word {
                text: String::new(),
                quoted: false,
            };
            let mut in_quotes = false;
            while let Some(&c) = chars.peek() {
                if in_quotes {
                    chars.next();
                    if c == '"' {
                        if chars.next_if_eq(&'"').is_some() {
                            word.text.push('"');
                        } else {
                            in_quotes = false;
                        }
                    } else {
                        word.text.push(c);
                    }
                } else if c == '"' {
                    chars.next();
                    in_quotes = true;
                    word.quoted = true;
                } else if c.is_whitespace() || c == ',' || c == '#' {
                    break;
                } else {
                    chars.next();
                    word.text.push(c);
                }
            }
            if in_quotes {
                return Err("unterminated quoted string".into());
            }
            field.push(word);
            if chars.next_if_eq(&',').is_none() {
                break;
            }
        }
        fields.push(field);
    }
}

fn single<'a>(field: Option<&'a Vec<Word>>, what: &str) -> Result<&'a Word, String> {
    match field.map(Vec::as_slice) {
        Some([w]) => Ok(w),
        Some(_) => Err(format!("{what} must be a single value")),
        None => Err(format!("missing {what}")),
    }
}

fn keyword(w: &Word, k: &str) -> bool {
    !w.quoted && w.text == k
}

/// What a line asks that pgporter cannot evaluate or carry out (see the module doc).
#[derive(Default)]
struct Caution {
    /// Conditions that hold for a `reject` line and fail for any other.
    unknown: Vec<String>,
    /// A method or option that cannot be carried out: matching connections are refused.
    refuse: Vec<String>,
    /// Why the line matches no pgporter connection at all.
    never: Vec<String>,
}

/// One line: the rule (None: it can match no pgporter connection) and a warning when it was
/// read the cautious way.
fn parse_rule(
    line: usize,
    fields: &[Vec<Word>],
    read_include: &dyn Fn(&str) -> Result<String, String>,
) -> Result<(Option<HbaRule>, Option<String>), String> {
    let kind = single(fields.first(), "connection type")?;
    let mut caution = Caution::default();
    let conn = match kind.text.as_str() {
        "local" => ConnType::Local,
        "host" | "hostnogssenc" => ConnType::Host,
        "hostssl" => ConnType::HostSsl,
        "hostnossl" => ConnType::HostNoSsl,
        "hostgssenc" => {
            caution
                .never
                .push("hostgssenc (no GSSAPI encryption here)".into());
            ConnType::Host
        }
        other => return Err(format!("invalid connection type {other:?}")),
    };
    let databases = names(fields.get(1), "database", true, read_include, &mut caution)?;
    let users = names(fields.get(2), "user", false, read_include, &mut caution)?;
    // (patterns, whether a condition in the field could not be evaluated)
    let mut rest = fields.get(3..).unwrap_or_default();
    let address = if conn == ConnType::Local {
        None
    } else {
        let (address, used) = parse_address(rest, &mut caution)?;
        rest = rest.get(used..).unwrap_or_default();
        Some(address)
    };
    let method_word = single(rest.first(), "authentication method")?;
    let method = match method_word.text.as_str() {
        "trust" => HbaMethod::Trust,
        "reject" => HbaMethod::Reject,
        "md5" => HbaMethod::Md5,
        "password" => HbaMethod::Password,
        "scram-sha-256" => HbaMethod::ScramSha256,
        "cert" => HbaMethod::Cert,
        "peer" => HbaMethod::Peer,
        m @ ("ident" | "gss" | "sspi" | "ldap" | "radius" | "pam" | "bsd") => {
            caution.refuse.push(format!("method {m}"));
            HbaMethod::Reject
        }
        other => return Err(format!("invalid authentication method {other:?}")),
    };
    if method == HbaMethod::Cert && conn != ConnType::HostSsl {
        return Err("cert authentication is only supported on hostssl lines".into());
    }
    if method == HbaMethod::Peer && conn != ConnType::Local {
        return Err("peer authentication is only supported on local sockets".into());
    }
    let mut map = None;
    for option in rest.get(1..).unwrap_or_default() {
        let option = single(Some(option), "option")?;
        match option.text.split_once('=') {
            Some(("map", name))
                if !name.is_empty() && matches!(method, HbaMethod::Cert | HbaMethod::Peer) =>
            {
                map = Some(name.to_string())
            }
            Some(_) if method == HbaMethod::Reject => {}
            // What cert does anyway.
            Some(("clientcert", "verify-full")) if method == HbaMethod::Cert => {}
            Some(_) => caution.refuse.push(format!("option {}", option.text)),
            None => return Err(format!("invalid option {:?}", option.text)),
        }
    }
    // A line with a condition pgporter cannot evaluate, or a method or option it cannot carry
    // out, refuses: taking the condition as false would hand its connections to a later, maybe
    // weaker line (`+admins scram-sha-256` above `all trust`); as true with the line's own
    // method, to a weaker method than PostgreSQL would pick for the others.
    let unknown = databases.1 || users.1 || matches!(address, Some(None));
    let reject_line = method == HbaMethod::Reject && caution.refuse.is_empty();
    let method = if caution.refuse.is_empty() && !unknown {
        method
    } else {
        HbaMethod::Reject
    };
    let warning = caution.warning(reject_line);
    if !caution.never.is_empty() {
        return Ok((None, warning));
    }
    // The conditions pgporter could not evaluate hold: their field matches everything.
    let widen = |(mut names, unknown): (Vec<NamePattern>, bool)| {
        if unknown {
            names.push(NamePattern::All);
        }
        names
    };
    let rule = HbaRule {
        line,
        conn,
        databases: widen(databases),
        users: widen(users),
        // `Some(None)`: an address pgporter could not evaluate.
        address: address.map(|a| a.unwrap_or(HbaAddress::All)),
        method,
        map,
    };
    Ok((Some(rule), warning))
}

impl Caution {
    fn warning(&self, reject_line: bool) -> Option<String> {
        let list = |v: &[String]| v.join(", ");
        if !self.never.is_empty() {
            return Some(format!(
                "{}: the line matches no connection here",
                list(&self.never)
            ));
        }
        let refused = (!self.refuse.is_empty()).then(|| {
            format!(
                "{} not supported: connections matching the line are refused",
                list(&self.refuse)
            )
        });
        match (self.unknown.is_empty(), reject_line) {
            (true, _) => refused,
            (false, true) => Some(format!(
                "{} cannot be evaluated here: taken as true for this reject line",
                list(&self.unknown)
            )),
            (false, false) => Some(format!(
                "{}{} cannot be evaluated here: the line refuses every connection it could \
                 match (list the members, with @file, or the addresses instead)",
                refused.map(|r| r + "; ").unwrap_or_default(),
                list(&self.unknown)
            )),
        }
    }
}

fn names(
    field: Option<&Vec<Word>>,
    what: &str,
    database: bool,
    read_include: &dyn Fn(&str) -> Result<String, String>,
    caution: &mut Caution,
) -> Result<(Vec<NamePattern>, bool), String> {
    let field = field.ok_or_else(|| format!("missing {what} field"))?;
    let unknown_before = caution.unknown.len();
    let mut reader = NameReader {
        what,
        database,
        read_include,
        caution,
        out: Vec::new(),
        replication: false,
    };
    for w in field {
        reader.word(w, 0)?;
    }
    let NameReader {
        out, replication, ..
    } = reader;
    let unknown = caution.unknown.len() > unknown_before;
    if replication && out.is_empty() && !unknown {
        caution
            .never
            .push("replication (pgporter refuses replication connections)".into());
    }
    Ok((out, unknown))
}

/// The words of one database or user field, `@file` contents included: as in PostgreSQL the
/// names in an included file keep their meaning (`all`, `+group`, a nested `@file`).
struct NameReader<'a, 'c> {
    what: &'a str,
    database: bool,
    read_include: &'a dyn Fn(&str) -> Result<String, String>,
    caution: &'c mut Caution,
    out: Vec<NamePattern>,
    replication: bool,
}

impl NameReader<'_, '_> {
    fn word(&mut self, w: &Word, depth: u8) -> Result<(), String> {
        let (database, what) = (self.database, self.what);
        if w.text.is_empty() && !w.quoted {
            return Err(format!("empty {what} name"));
        }
        if keyword(w, "all") {
            self.out.push(NamePattern::All);
        } else if database && keyword(w, "sameuser") {
            self.out.push(NamePattern::SameUser);
        } else if database && keyword(w, "replication") {
            // Only replication connections match it, and pgporter refuses those.
            self.replication = true;
        } else if database && (keyword(w, "samerole") || keyword(w, "samegroup")) {
            self.caution
                .unknown
                .push(format!("{} (role membership)", w.text));
        } else if let Some(group) = w.text.strip_prefix('+').filter(|_| !w.quoted) {
            self.caution
                .unknown
                .push(format!("+{group} (role membership)"));
        } else if let Some(file) = w.text.strip_prefix('@').filter(|_| !w.quoted) {
            if depth >= 10 {
                return Err(format!("@{file}: includes nested more than 10 deep"));
            }
            let text = (self.read_include)(file)?;
            for line in text.lines() {
                for name in split_fields(line)?.into_iter().flatten() {
                    if !name.text.is_empty() || name.quoted {
                        self.word(&name, depth + 1)?;
                    }
                }
            }
        } else {
            self.out.push(NamePattern::Name(w.text.clone()));
        }
        Ok(())
    }
}

/// None: an address pgporter cannot evaluate (`samehost`, `samenet`, a host name), noted in
/// `caution`.
fn parse_address(
    fields: &[Vec<Word>],
    caution: &mut Caution,
) -> Result<(Option<HbaAddress>, usize), String> {
    let word = single(fields.first(), "address")?;
    if keyword(word, "all") {
        return Ok((Some(HbaAddress::All), 1));
    }
    if keyword(word, "samehost") || keyword(word, "samenet") {
        caution.unknown.push(format!("address {}", word.text));
        return Ok((None, 1));
    }
    if let Some((addr, prefix)) = word.text.split_once('/') {
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("invalid IP address {addr:?}"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("invalid CIDR mask {prefix:?}"))?;
        return Ok((Some(HbaAddress::Cidr { net, prefix }), 1));
    }
    let Ok(net) = word.text.parse::<IpAddr>() else {
        // A host name (PostgreSQL resolves it and checks the reverse lookup); a name followed
        // by a mask column is a bad address.
        let mask_follows = fields
            .get(1)
            .and_then(|f| f.first())
            .is_some_and(|w| w.text.parse::<IpAddr>().is_ok());
        if mask_follows || word.text.contains(':') {
            return Err(format!("invalid IP address {:?}", word.text));
        }
        caution.unknown.push(format!("host name {}", word.text));
        return Ok((None, 1));
    };
    let mask: IpAddr = single(fields.get(1), "IP mask")?
        .text
        .parse()
        .map_err(|_| "invalid IP mask".to_string())?;
    let prefix = mask_prefix(mask).ok_or("IP mask is not contiguous")?;
    if mask.is_ipv4() != net.is_ipv4() {
        return Err("IP address and mask do not match in family".into());
    }
    Ok((Some(HbaAddress::Cidr { net, prefix }), 2))
}

fn mask_prefix(mask: IpAddr) -> Option<u8> {
    let (bits, width) = match mask {
        IpAddr::V4(m) => (u128::from(u32::from(m)) << 96, 32),
        IpAddr::V6(m) => (u128::from(m), 128),
    };
    let ones = bits.leading_ones();
    u8::try_from(ones)
        .ok()
        .filter(|_| bits.checked_shl(ones).unwrap_or(0) == 0 && ones <= width)
}

/// One auth_ident_file line: certificate name `cert_name` may log in as `user` under `map`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentEntry {
    pub map: String,
    pub cert_name: String,
    pub user: String,
}

/// Problems found in a file: (1-based line, message).
pub type LineErrors = Vec<(usize, String)>;

/// auth_ident_file: `MAPNAME SYSTEM-USERNAME PG-USERNAME` per line (a subset of
/// pg_ident.conf: exact names only, no regular expressions).
pub fn parse_ident(text: &str) -> Result<Vec<IdentEntry>, LineErrors> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let words = match split_fields(line) {
            Ok(f) => f,
            Err(e) => {
                errors.push((i + 1, e));
                continue;
            }
        };
        let words: Vec<Word> = words.into_iter().flatten().collect();
        match words.as_slice() {
            [] => {}
            [map, system, pg] if !system.text.starts_with('/') => out.push(IdentEntry {
                map: map.text.clone(),
                cert_name: system.text.clone(),
                user: pg.text.clone(),
            }),
            [_, _, _] => errors.push((i + 1, "regular expressions are not supported".into())),
            _ => errors.push((i + 1, "expected MAPNAME SYSTEM-USERNAME PG-USERNAME".into())),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
