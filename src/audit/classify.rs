//! The conservative read-only classifier behind `audit_statements = write`: a text is
//! read-only only when every statement in it is known to be. Anything unrecognised is a
//! write, so a false positive is possible and a missed write is not (within the rules below).
//!
//! Read-only: SELECT / WITH / VALUES / TABLE / DECLARE ... CURSOR / EXPLAIN (no ANALYZE)
//! that contain none of the words INTO, INSERT, UPDATE, DELETE, MERGE, SHARE, ANALYZE, COPY,
//! CALL, EXECUTE, LOCK, TRUNCATE, NOTIFY, and call no function outside a list of known
//! side-effect-free ones; SHOW; BEGIN / START TRANSACTION / COMMIT / END / ROLLBACK / SAVEPOINT
//! / RELEASE (not ... PREPARED); SET / RESET of ordinary settings (not ROLE or SESSION
//! AUTHORIZATION); FETCH, MOVE, CLOSE, DEALLOCATE, LISTEN, UNLISTEN, DISCARD.
//! Words inside string literals count too (more false positives, never fewer writes).

/// Words that make an otherwise read-only statement a write (or worth logging).
const WRITE_WORDS: &[&str] = &[
    "into",
    "insert",
    "update",
    "delete",
    "merge",
    "share",
    "analyze",
    "analyse",
    "copy",
    "call",
    "execute",
    "lock",
    "truncate",
    "notify",
    "prepared",
    "role",
    "authorization",
    "do",
];

/// Words that may precede `(` without being a function call.
const PAREN_KEYWORDS: &[&str] = &[
    "in",
    "values",
    "as",
    "exists",
    "any",
    "all",
    "some",
    "on",
    "using",
    "over",
    "filter",
    "within",
    "from",
    "join",
    "where",
    "and",
    "or",
    "not",
    "select",
    "case",
    "when",
    "then",
    "else",
    "interval",
    "array",
    "row",
    "by",
    "lateral",
    "numeric",
    "decimal",
    "varchar",
    "char",
    "character",
    "varying",
    "timestamp",
    "time",
    "with",
    "cube",
    "rollup",
    "sets",
    "is",
    "like",
    "ilike",
    "between",
    "distinct",
    "explain",
    "limit",
    "offset",
    "having",
    "group",
    "order",
    "union",
    "intersect",
    "except",
    "returning",
    "cursor",
    "for",
    "float",
    "bit",
];

/// Functions known not to change data.
const PURE_FUNCTIONS: &[&str] = &[
    "count",
    "sum",
    "min",
    "max",
    "avg",
    "coalesce",
    "nullif",
    "greatest",
    "least",
    "lower",
    "upper",
    "length",
    "char_length",
    "octet_length",
    "substr",
    "substring",
    "trim",
    "btrim",
    "ltrim",
    "rtrim",
    "concat",
    "concat_ws",
    "format",
    "replace",
    "position",
    "strpos",
    "left",
    "right",
    "now",
    "version",
    "current_setting",
    "abs",
    "round",
    "floor",
    "ceil",
    "ceiling",
    "mod",
    "power",
    "sqrt",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
    "json_build_object",
    "jsonb_build_object",
    "to_char",
    "to_date",
    "to_timestamp",
    "date_trunc",
    "extract",
    "date_part",
    "age",
    "cast",
    "row_number",
    "rank",
    "dense_rank",
    "lag",
    "lead",
    "first_value",
    "last_value",
    "array_length",
    "unnest",
    "generate_series",
    "pg_backend_pid",
    "pg_is_in_recovery",
    "has_table_privilege",
    "format_type",
    "pg_get_expr",
    "pg_table_is_visible",
    "obj_description",
    "col_description",
    "pg_get_indexdef",
    "pg_get_constraintdef",
    "pg_encoding_to_char",
    "quote_ident",
    "quote_literal",
    "array_to_string",
    "regexp_replace",
    "md5",
    "encode",
    "decode",
    "bool_and",
    "bool_or",
    "every",
    "pg_typeof",
    "current_schema",
    "current_database",
    "to_regclass",
    "split_part",
    "jsonb_array_elements",
    "json_array_elements",
    "string_to_array",
    "statement_timestamp",
    "clock_timestamp",
    "transaction_timestamp",
    "random",
];

/// True when `sql` is known to be read-only (see the module docs).
pub fn is_read_only(sql: &[u8]) -> bool {
    // Splitting inside literals only makes more pieces; every real statement still starts one.
    if sql.windows(2).any(|w| w == b"--" || w == b"/*") {
        let text = String::from_utf8_lossy(sql).into_owned();
        return text
            .split(';')
            .all(|piece| piece_read_only(strip_comments(piece).as_bytes()));
    }
    sql.split(|&b| b == b';').all(piece_read_only)
}

/// `s` without its comments (nested `/* */` too), where they are surely comments: a `--` or
/// `/*` inside a literal or a quoted name stays. Where a literal's end is uncertain (a backslash
/// in `'...'`, which ends it or not depending on standard_conforming_strings) the rest is kept
/// as it is: keeping a comment can only make a statement look like a write, removing code
/// could hide one.
fn strip_comments(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match (c, b.get(i + 1)) {
            (b'-', Some(b'-')) => i = super::lex::line_comment_end(b, i),
            (b'/', Some(b'*')) => {
                i = super::lex::block_comment_end(b, i);
                out.push(b' ');
            }
            (b'\'' | b'"', _) => {
                let body = b.get(i + 1..).unwrap_or_default();
                let Some(len) = super::lex::quoted_len(body, c) else {
                    // Unterminated, or a backslash: keep the rest untouched.
                    out.extend_from_slice(b.get(i..).unwrap_or_default());
                    break;
                };
                out.extend_from_slice(b.get(i..i + 2 + len).unwrap_or_default());
                i += 2 + len;
            }
            (b'$', Some(&n)) if n == b'$' || n == b'_' || n.is_ascii_alphabetic() || n >= 0x80 => {
                // A dollar-quote opener (a `$1` parameter starts with a digit).
                match super::lex::dollar_quoted_len(b.get(i..).unwrap_or_default()) {
                    Some(len) => {
                        out.extend_from_slice(b.get(i..i + len).unwrap_or_default());
                        i += len;
                    }
                    None => {
                        // Unterminated or not a tag after all: keep the rest untouched.
                        out.extend_from_slice(b.get(i..).unwrap_or_default());
                        break;
                    }
                }
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$'
}

/// (word, followed by `(` (a call, also of a quoted name: `"f"()`), qualified by a schema
/// (`s.f`)), no allocation.
fn words(s: &[u8]) -> impl Iterator<Item = (&[u8], bool, bool)> {
    let mut pos = 0;
    std::iter::from_fn(move || {
        while s.get(pos).is_some_and(|&b| !is_word_byte(b)) {
            pos += 1;
        }
        let start = pos;
        while s.get(pos).is_some_and(|&b| is_word_byte(b)) {
            pos += 1;
        }
        if start == pos {
            return None;
        }
        let mut after = pos;
        while s
            .get(after)
            .is_some_and(|&b| b.is_ascii_whitespace() || b == b'"')
        {
            after += 1;
        }
        // Qualified: a `.` before the name, across quotes and whitespace (comments are
        // already spaces here).
        let before = s.get(..start).unwrap_or_default();
        let qualified = before
            .iter()
            .rev()
            .find(|&&b| !(b.is_ascii_whitespace() || b == b'"'))
            == Some(&b'.');
        Some((
            s.get(start..pos).unwrap_or_default(),
            s.get(after) == Some(&b'('),
            qualified,
        ))
    })
}

fn is(w: &[u8], list: &[&str]) -> bool {
    list.iter().any(|x| w.eq_ignore_ascii_case(x.as_bytes()))
}

fn piece_read_only(piece: &[u8]) -> bool {
    let Some((first, _, _)) = words(piece).next() else {
        return piece
            .iter()
            .all(|&c| c.is_ascii_whitespace() || c == b'(' || c == b')');
    };
    if is(
        first,
        &["select", "with", "values", "table", "declare", "explain"],
    ) {
        query_read_only(piece)
    } else if is(
        first,
        &[
            "show",
            "fetch",
            "move",
            "close",
            "deallocate",
            "listen",
            "unlisten",
            "discard",
            "savepoint",
            "release",
        ],
    ) {
        true
    } else if is(
        first,
        &["begin", "start", "commit", "end", "rollback", "abort"],
    ) {
        !words(piece).any(|(w, _, _)| is(w, &["prepared"]))
    } else if is(first, &["set", "reset"]) {
        !words(piece).any(|(w, _, _)| is(w, &["role", "authorization"]))
    } else {
        false
    }
}

fn query_read_only(piece: &[u8]) -> bool {
    words(piece).all(|(w, call, qualified)| {
        if is(w, WRITE_WORDS) {
            return false;
        }
        // A schema-qualified call may be anyone's function of that name.
        !call || is(w, PAREN_KEYWORDS) || (!qualified && is(w, PURE_FUNCTIONS))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ro(s: &str) -> bool {
        is_read_only(s.as_bytes())
    }

    #[test]
    fn read_only() {
        assert!(ro("SELECT abalance FROM pgbench_accounts WHERE aid = $1;"));
        assert!(ro("select count(*), max(x) from t where y in (1,2)"));
        assert!(ro("  -- hi\n/* c */ SELECT 1"));
        assert!(ro("show search_path"));
        assert!(ro("BEGIN; select 1; COMMIT"));
        assert!(ro("set statement_timeout = 5"));
        assert!(ro("explain select * from t"));
        assert!(ro("(select 1) union (select 2)"));
        assert!(ro(""));
        assert!(ro("SELECT Count(*) FROM T"));
    }

    #[test]
    fn writes() {
        assert!(!ro("insert into t values (1)"));
        assert!(!ro("select 1; delete from t"));
        assert!(!ro("SELECT * INTO new_t FROM t"));
        assert!(!ro("select * from t for update"));
        assert!(!ro("select * from t for no key update"));
        assert!(!ro("with x as (delete from t returning *) select * from x"));
        assert!(!ro("explain analyze delete from t"));
        assert!(!ro("select nextval('s')"));
        assert!(!ro("select my_func(1)"));
        assert!(!ro("copy t from stdin"));
        assert!(!ro("create table t (x int)"));
        assert!(!ro("set role admin"));
        assert!(!ro("SET SESSION AUTHORIZATION bob"));
        assert!(!ro("commit prepared 'x'"));
        assert!(!ro("vacuum"));
        assert!(!ro("update t set x = 1"));
        assert!(!ro("SELECT * FROM t -- c\n FOR UPDATE"));
        assert!(!ro("Insert Into t Values (1)"));
        // Comment markers inside literals and quoted names are not comments.
        assert!(!ro("select '--', wipe()"));
        assert!(!ro("select '/*', wipe(), '*/'"));
        assert!(!ro("select \"--\", wipe() from t"));
        assert!(!ro("select $$--$$, wipe()"));
        // A backslash makes a literal's end uncertain: nothing after it is dropped.
        assert!(!ro("select 'a\\', wipe(), '--'"));
        // Quoted and schema-qualified calls.
        assert!(!ro("select \"wipe\"()"));
        assert!(!ro("select \"Wipe2\" ()"));
        assert!(!ro("select s.random()"));
        assert!(!ro("select \"s\".\"count\"(x) from t"));
        assert!(!ro("select s . random()"));
        assert!(!ro("select s./**/random()"));
        assert!(!ro("select $\u{e9}$ -- $\u{e9}$, wipe()"));
        assert!(!ro("select $x$ -- unterminated, wipe()"));
    }
}
