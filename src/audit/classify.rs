//! The conservative read-only classifier behind `audit_statements = write`: a text is
//! read-only only when every statement in it is known to be. Anything unrecognised is a
//! write, so a false positive is possible and a missed write is not (within the rules below).
//!
//! Read-only: SELECT / WITH / VALUES / TABLE / DECLARE ... CURSOR / EXPLAIN (no ANALYZE)
//! that contain none of the words INTO, INSERT, UPDATE, DELETE, MERGE, SHARE, ANALYZE, COPY,
//! CALL, EXECUTE, LOCK, TRUNCATE, NOTIFY, and call no function outside a list of known
//! side-effect-free ones; SHOW; BEGIN / START TRANSACTION / COMMIT / END / ROLLBACK / SAVEPOINT
//! / RELEASE (not ... PREPARED); SET / RESET of ordinary settings (not ROLE or SESSION
//! AUTHORIZATION, also spelled session_authorization); FETCH, MOVE, CLOSE, DEALLOCATE, LISTEN, UNLISTEN, DISCARD.
//! Words inside string literals count too (more false positives, never fewer writes); a `;`
//! inside one does not end a statement (see [`statements`]).

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
    // `U&"!0077ipe" UESCAPE '!'` is the name wipe, spelled in no word here.
    "uescape",
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
    if !sql.iter().any(|&b| b == b';' || b == b'-' || b == b'/') {
        return piece_read_only(sql);
    }
    statements(sql).is_some_and(|pieces| pieces.iter().all(|p| piece_read_only(p)))
}

/// `sql` cut at each `;` that is surely a statement's end, comments (nested `/* */` too)
/// made spaces: a `;`, `--` or `/*` inside a literal, a quoted name or a dollar-quoted text
/// neither cuts nor starts a comment, so no piece starts inside another statement's text
/// (where a SHOW or SET would be taken as a harmless command without its rest being read).
/// Where a literal's end is uncertain (a backslash in `'...'`, which ends it or not depending
/// on standard_conforming_strings, or one that does not end) the rest is kept as it is, and
/// None (a write) when a `;` follows in it, as that may start any statement.
fn statements(b: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut pieces = Vec::new();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let quoted = match (c, b.get(i + 1)) {
            (b';', _) => {
                pieces.push(std::mem::take(&mut out));
                i += 1;
                continue;
            }
            (b'-', Some(b'-')) => {
                i = super::lex::line_comment_end(b, i);
                continue;
            }
            (b'/', Some(b'*')) => {
                i = super::lex::block_comment_end(b, i);
                out.push(b' ');
                continue;
            }
            (b'\'' | b'"', _) => super::lex::quoted_len(b.get(i + 1..)?, c).map(|len| 2 + len),
            // A dollar-quote opener (a `$1` parameter starts with a digit; `x$` is a name).
            (b'$', Some(&n))
                if (n == b'$' || n == b'_' || n.is_ascii_alphabetic() || n >= 0x80)
                    && !i
                        .checked_sub(1)
                        .and_then(|p| b.get(p))
                        .is_some_and(|&p| is_word_byte(p)) =>
            {
                super::lex::dollar_quoted_len(b.get(i..)?)
            }
            _ => {
                out.push(c);
                i += 1;
                continue;
            }
        };
        let Some(len) = quoted else {
            let rest = b.get(i..).unwrap_or_default();
            if rest.contains(&b';') {
                return None;
            }
            out.extend_from_slice(rest);
            break;
        };
        out.extend_from_slice(b.get(i..i + len).unwrap_or_default());
        i += len;
    }
    pieces.push(out);
    Some(pieces)
}

/// Whitespace between tokens: PostgreSQL 15's (space, tab, newline, carriage return, form
/// feed) and the vertical tab, which later versions' lexers also skip (where PostgreSQL 15
/// refuses it, taking it for a space can only make more calls).
fn is_space(b: u8) -> bool {
    b.is_ascii_whitespace() || b == 0x0b
}

/// Identifier bytes: PostgreSQL takes every non-ASCII byte as a letter (`wipeé` is one name).
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// A word of a statement's text.
struct Word<'a> {
    text: &'a [u8],
    /// Followed by `(`: a call (also of a quoted name: `"f"()`).
    call: bool,
    /// Qualified by a schema (`s.f`).
    qualified: bool,
    /// A quoted name, exactly: `"f"`, not part of `"x f"` nor of `"x""f"` (quoted names keep
    /// their case; a doubled quote is a quote inside the name).
    quoted: bool,
    /// A quote between the word and its `(` (a call of a quoted name).
    quote_after: bool,
    /// The last byte before it that is not whitespace.
    before: Option<u8>,
    start: usize,
    end: usize,
}

/// The words of `s`, no allocation.
fn words(s: &[u8]) -> impl Iterator<Item = Word<'_>> {
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
        while s.get(after).is_some_and(|&b| is_space(b) || b == b'"') {
            after += 1;
        }
        // Qualified: a `.` before the name, across quotes and whitespace (comments are
        // already spaces here).
        let before_word = s.get(..start).unwrap_or_default();
        let qualified = before_word
            .iter()
            .rev()
            .find(|&&b| !(is_space(b) || b == b'"'))
            == Some(&b'.');
        Some(Word {
            text: s.get(start..pos).unwrap_or_default(),
            call: s.get(after) == Some(&b'('),
            qualified,
            quoted: before_word.last() == Some(&b'"')
                && start.checked_sub(2).and_then(|p| s.get(p)) != Some(&b'"')
                && s.get(pos) == Some(&b'"')
                && s.get(pos + 1) != Some(&b'"'),
            quote_after: s.get(pos..after).unwrap_or_default().contains(&b'"'),
            before: before_word.iter().rev().find(|&&b| !is_space(b)).copied(),
            start,
            end: pos,
        })
    })
}

/// Keywords after which an expression starts (so a `like(`, `is(`, `join(` there is a call).
const EXPRESSION_STARTS: &[&str] = &[
    "select",
    "where",
    "and",
    "or",
    "not",
    "when",
    "then",
    "else",
    "case",
    "on",
    "having",
    "by",
    "from",
    "distinct",
    "all",
    "any",
    "some",
    "returning",
    "limit",
    "offset",
    "in",
    "using",
    "with",
    "values",
    "between",
    "is",
    "like",
    "ilike",
    "join",
    "similar",
    "escape",
    "lateral",
    "array",
    "group",
    "order",
    "union",
    "intersect",
    "except",
    "as",
    // FETCH FIRST / NEXT n, a window frame's ROWS / RANGE / GROUPS n PRECEDING, SIMILAR TO,
    // AT TIME ZONE, SUBSTRING / OVERLAY / TRIM's FOR / PLACING / BOTH / LEADING / TRAILING,
    // BETWEEN SYMMETRIC, the XML functions' DOCUMENT / CONTENT / PASSING [BY REF | VALUE] /
    // VERSION: an expression follows each (PostgreSQL 15, live: `fetch first like(1) rows
    // only` calls a function like).
    "first",
    "next",
    "rows",
    "range",
    "groups",
    "to",
    "for",
    "zone",
    "placing",
    "both",
    "leading",
    "trailing",
    "symmetric",
    "asymmetric",
    "document",
    "content",
    "passing",
    "ref",
    "value",
    "version",
];

/// Whether a keyword followed by `(` is syntax there rather than a call of a function of
/// that name. PostgreSQL accepts its unreserved and type/function-name keywords as function
/// names (`select filter(1)`, `select like(1)`), so those are syntax only in their place;
/// the others (reserved and column-name keywords) cannot name an unquoted function.
/// `prev`: the word just before and the one before it (only whitespace between each), `first`
/// whether it starts the statement, `distinct_on` whether a DISTINCT ON came before (a `)`
/// then may end its list, where the target list starts: `select distinct on (a) like(1)`
/// calls `like`, PostgreSQL 15, live). A schema-qualified one is always a call (`s.values(1)`:
/// after a `.`, any keyword names a function).
fn keyword_syntax(w: &Word<'_>, prev: [Option<&[u8]>; 2], first: bool, distinct_on: bool) -> bool {
    let prev_is = |list: &[&str]| prev[0].is_some_and(|p| is(p, list));
    let t = w.text;
    let after_paren = w.before == Some(b')') && !distinct_on;
    if w.qualified {
        false
    } else if is(t, &["filter", "over"]) {
        after_paren
    } else if is(t, &["cube", "rollup"]) {
        // Grouping syntax in GROUP BY only: `order by cube(1)` calls a function cube.
        prev_is(&["by"]) && prev[1].is_some_and(|p| is(p, &["group"]))
    } else if is(t, &["sets"]) {
        prev_is(&["grouping"])
    } else if is(t, &["by"]) {
        prev_is(&["group", "order", "partition"])
    } else if is(t, &["varying"]) {
        prev_is(&["character", "bit"])
    } else if is(t, &["explain"]) {
        first
    } else if is(t, &["like", "ilike", "is", "join"]) {
        // After an operand only.
        match w.before {
            Some(b')') => after_paren,
            Some(b']' | b'\'' | b'"') => true,
            Some(b) if is_word_byte(b) => !prev_is(EXPRESSION_STARTS),
            _ => false,
        }
    } else {
        is(t, PAREN_KEYWORDS)
    }
}

fn is(w: &[u8], list: &[&str]) -> bool {
    list.iter().any(|x| w.eq_ignore_ascii_case(x.as_bytes()))
}

fn piece_read_only(piece: &[u8]) -> bool {
    // A Unicode-escaped name (`U&"\0061nalyze"`) may spell any word: an EXPLAIN option
    // (`explain (U&"\0061nalyze") create table t as ...` runs it: PostgreSQL 15, live), a
    // setting (`set U&"rol\0065" = x`).
    if piece.windows(2).any(|p| p == b"&\"") {
        return false;
    }
    let Some(Word { text: first, .. }) = words(piece).next() else {
        return piece.iter().all(|&c| is_space(c) || c == b'(' || c == b')');
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
        !words(piece).any(|w| is(w.text, &["prepared"]))
    } else if is(first, &["set", "reset"]) {
        !words(piece).any(|w| is(w.text, &["role", "authorization", "session_authorization"]))
    } else {
        false
    }
}

fn query_read_only(piece: &[u8]) -> bool {
    // The words before the last one's end, each with only whitespace up to the next.
    let mut chain: [Option<&[u8]>; 2] = [None, None];
    let mut last_end: Option<usize> = None;
    let mut first = true;
    let mut distinct_on = false;
    words(piece).all(|w| {
        let adjacent = if last_end
            .and_then(|end| piece.get(end..w.start))
            .is_some_and(|gap| gap.iter().all(|&b| is_space(b)))
        {
            chain
        } else {
            [None, None]
        };
        let ok = if is(w.text, WRITE_WORDS) {
            false
        } else if !w.call {
            true
        } else if w.quote_after {
            // A quoted name is that name exactly: only a pure function's own lowercase name.
            w.quoted && !w.qualified && PURE_FUNCTIONS.iter().any(|f| w.text == f.as_bytes())
        } else {
            // A schema-qualified call may be anyone's function of that name.
            keyword_syntax(&w, adjacent, first, distinct_on)
                || (!w.qualified && is(w.text, PURE_FUNCTIONS))
        };
        distinct_on |= is(w.text, &["on"]) && adjacent[0].is_some_and(|p| is(p, &["distinct"]));
        chain = [Some(w.text), adjacent[0]];
        last_end = Some(w.end);
        first = false;
        ok
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
        // The same setting by its GUC name (checked live on PostgreSQL 15: it switches user).
        assert!(!ro("set session_authorization = 'bob'"));
        assert!(!ro("SET \"session_authorization\" TO bob"));
        assert!(!ro("reset session_authorization"));
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
        // A carriage return ends a `--` comment, as a newline does (PostgreSQL 15, live).
        assert!(!ro("select 1 --c\r, wipe()"));
        assert!(!ro("select 1 --c\r; delete from t"));
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

    #[test]
    fn a_semicolon_inside_a_literal_or_comment_does_not_start_a_statement() {
        // The text after such a `;` is not a SHOW / SET / BEGIN whose rest goes unread.
        assert!(!ro("select 'a;show', wipe()"));
        assert!(!ro("select 1 as \"a;set\", wipe()"));
        assert!(!ro("select $q$;begin$q$, wipe()"));
        assert!(!ro("select 1 /* ;show */ , wipe()"));
        assert!(!ro("select 1 -- ;discard\n, wipe()"));
        // A backslash makes the literal's end uncertain: a later `;` may start anything.
        assert!(!ro("select 'a\\'; show x; delete from t; --'"));
        assert!(!ro("set application_name = 'a\\'; delete from t; --'"));
        // Real statements still split.
        assert!(ro("select 'a;b'; show x; select \"c;d\" from t"));
        assert!(ro("select 1 /* ; */; -- ;\nselect 2"));
        assert!(ro("select E'a\\nb'"));
    }

    #[test]
    fn non_ascii_and_quoted_function_names() {
        // Non-ASCII bytes are identifier bytes.
        assert!(!ro("select wipe\u{e9}()"));
        assert!(!ro("select \u{fc}()"));
        assert!(ro("select count(*) from \u{fc}bersicht"));
        // A quoted name is one name, case and all: "Count" and "x count" are not count.
        assert!(!ro("select \"Count\"(x) from t"));
        assert!(!ro("select \"x count\"(1)"));
        assert!(!ro("select \"wipe-count\"(1)"));
        assert!(!ro("select \"in\"(1)"));
        assert!(ro("select \"count\"(x) from t"));
    }

    #[test]
    fn keywords_that_can_also_name_a_function() {
        // Unreserved keywords PostgreSQL accepts as function names, called as such.
        assert!(!ro("select filter(1)"));
        assert!(!ro("select over(1)"));
        assert!(!ro("select cube(1)"));
        assert!(!ro("select 1, rollup(2)"));
        assert!(!ro("select cursor(1)"));
        assert!(!ro("select * from explain(1)"));
        assert!(!ro("select within(1)"));
        assert!(!ro("select sets(1)"));
        assert!(!ro("select by(1)"));
        assert!(!ro("select varying(1)"));
        // ... and where they are syntax.
        assert!(ro(
            "select count(*) filter (where x > 1) over (partition by (y)) from t"
        ));
        assert!(ro("select x from t group by cube(a)"));
        assert!(ro("select x from t group by rollup(a)"));
        assert!(ro("select x from t group by grouping sets ((a), (b))"));
        assert!(ro(
            "select * from a join (select 1) b on true left join (select 2) c on true"
        ));
        assert!(ro("select x from t where y like ('a')"));
        // Only right after BY: a later `, cube(` is logged (a read logged, not a write missed).
        assert!(!ro("select x from t group by a, cube(b)"));
        assert!(ro("select cast(x as character varying(10)) from t"));
        assert!(ro("explain (costs off) select 1"));
    }

    #[test]
    fn keyword_named_calls_where_an_expression_or_a_qualified_name_goes() {
        // Each calls a user function of that name (PostgreSQL 15, live).
        assert!(!ro("select public.values(1)"));
        assert!(!ro("select s.in(1), s.\"from\"(2)"));
        assert!(!ro("select 1 order by cube(1)"));
        assert!(!ro("select count(*) over (partition by rollup(1))"));
        assert!(!ro("select 1 fetch first like(1) rows only"));
        assert!(!ro("select 1 offset 0 fetch next ilike(1) rows only"));
        assert!(!ro("select 'a' similar to like(1)::text"));
        assert!(!ro("select now() at time zone like(1)::text"));
        assert!(!ro("select substring('abc' from 1 for like(1))"));
        assert!(!ro("select trim(both like(1)::text from 'x')"));
        assert!(!ro("select 1 between symmetric like(1) and 2"));
        assert!(!ro(
            "select count(*) over (rows like(1) preceding) from (values (1)) v"
        ));
        // A quoted name with a doubled quote is another name: x"count, "count, count".
        assert!(!ro("select \"x\"\"count\"(1)"));
        assert!(!ro("select \"\"\"count\"(1)"));
        assert!(!ro("select \"count\"\"\"(1)"));
        // A Unicode-escaped name: wipe, role.
        assert!(!ro("select U&\"!0077ipe\" UESCAPE '!'()"));
        assert!(!ro("set U&\"rol\\0065\" = admin"));
        assert!(!ro("reset u&\"rol\\0065\""));
        // After DISTINCT ON's list the target list starts: a call there.
        assert!(!ro("select distinct on (1) like(1)"));
        assert!(!ro("select distinct on (x) filter(1), over(2) from t"));
        // A vertical tab between a name and its `(` (whitespace to PostgreSQL 17's lexer).
        assert!(!ro("select wipe\u{b}()"));
        assert!(!ro(
            "explain (U&\"\\0061nalyze\") create table t2 as select 1"
        ));
        // Still syntax in their place.
        assert!(ro("select x from t group by cube(a)"));
        assert!(ro("select x from t where y like ('a') or z ilike ('b')"));
        assert!(ro("select \"count\"(x) from t"));
        assert!(ro("set application_name = 'a&b'"));
    }
}
