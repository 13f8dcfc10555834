//! What the SQL protocols share: a statement's verb from its (possibly truncated) text, and
//! the framing of a byte stream cut into length-prefixed messages, parts of it unseen.

use crate::{Dir, MAX_HELD, OTHER, Output, Role};
use std::collections::VecDeque;

/// The verb of an SQL statement (`SELECT`, `INSERT`, …), from a fixed set; [`OTHER`] when
/// the first word is none of them.
///
/// Leading white space, `--` and `#` line comments, `/* */` block comments and opening
/// parentheses are skipped; a MySQL executable comment (`/*!40101 SET … */`) is read as the
/// statement it holds, as the server does. Case does not matter. `WITH …` gives the verb of
/// the main statement after the common table expressions when the copied text reaches it,
/// else `WITH`. Aliases are folded: `DESC` → `DESCRIBE`, `END` → `COMMIT`, `ABORT` →
/// `ROLLBACK`, `ANALYSE` → `ANALYZE`, and the query forms `TABLE t` and `VALUES …` →
/// `SELECT`.
pub fn verb(sql: &[u8]) -> &'static str {
    let mut lx = Lexer { s: sql, i: 0 };
    lx.skip_leading();
    let Some(word) = lx.word() else {
        return OTHER;
    };
    match known(word) {
        Some("WITH") => lx.main_after_with().unwrap_or("WITH"),
        Some(v) => v,
        None => OTHER,
    }
}

/// The statement verbs, upper case, by the first word's bytes in any case.
fn known(word: &[u8]) -> Option<&'static str> {
    let mut up = [0u8; 12];
    if word.len() > up.len() {
        return None;
    }
    for (u, b) in up.iter_mut().zip(word) {
        *u = b.to_ascii_uppercase();
    }
    Some(match &up[..word.len()] {
        b"SELECT" | b"TABLE" | b"VALUES" => "SELECT",
        b"INSERT" => "INSERT",
        b"UPDATE" => "UPDATE",
        b"DELETE" => "DELETE",
        b"REPLACE" => "REPLACE",
        b"MERGE" => "MERGE",
        b"WITH" => "WITH",
        b"BEGIN" => "BEGIN",
        b"START" => "START",
        b"COMMIT" | b"END" => "COMMIT",
        b"ROLLBACK" | b"ABORT" => "ROLLBACK",
        b"SAVEPOINT" => "SAVEPOINT",
        b"RELEASE" => "RELEASE",
        b"SET" => "SET",
        b"SHOW" => "SHOW",
        b"USE" => "USE",
        b"CREATE" => "CREATE",
        b"ALTER" => "ALTER",
        b"DROP" => "DROP",
        b"TRUNCATE" => "TRUNCATE",
        b"RENAME" => "RENAME",
        b"COMMENT" => "COMMENT",
        b"GRANT" => "GRANT",
        b"REVOKE" => "REVOKE",
        b"EXPLAIN" => "EXPLAIN",
        b"ANALYZE" | b"ANALYSE" => "ANALYZE",
        b"DESCRIBE" | b"DESC" => "DESCRIBE",
        b"CALL" => "CALL",
        b"DO" => "DO",
        b"EXECUTE" => "EXECUTE",
        b"PREPARE" => "PREPARE",
        b"DEALLOCATE" => "DEALLOCATE",
        b"DECLARE" => "DECLARE",
        b"FETCH" => "FETCH",
        b"MOVE" => "MOVE",
        b"CLOSE" => "CLOSE",
        b"COPY" => "COPY",
        b"LOAD" => "LOAD",
        b"LOCK" => "LOCK",
        b"UNLOCK" => "UNLOCK",
        b"VACUUM" => "VACUUM",
        b"REINDEX" => "REINDEX",
        b"CLUSTER" => "CLUSTER",
        b"CHECKPOINT" => "CHECKPOINT",
        b"REFRESH" => "REFRESH",
        b"DISCARD" => "DISCARD",
        b"RESET" => "RESET",
        b"LISTEN" => "LISTEN",
        b"UNLISTEN" => "UNLISTEN",
        b"NOTIFY" => "NOTIFY",
        b"OPTIMIZE" => "OPTIMIZE",
        b"FLUSH" => "FLUSH",
        b"KILL" => "KILL",
        b"HANDLER" => "HANDLER",
        b"XA" => "XA",
        _ => return None,
    })
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Lexer<'a> {
    fn peek(&self, at: usize) -> Option<u8> {
        self.s.get(self.i + at).copied()
    }

    /// Past `--` (and, when `hash`, `#`) line comments and `/* */` block comments; a MySQL
    /// executable comment's opening (`/*!` and its version digits) is passed only when
    /// `enter_exec`, leaving its content to be read.
    fn skip_space(&mut self, hash: bool, enter_exec: bool) {
        while let Some(c) = self.peek(0) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => self.i += 1,
                b'-' if self.peek(1) == Some(b'-') => self.skip_line(),
                b'#' if hash => self.skip_line(),
                b'/' if self.peek(1) == Some(b'*') => {
                    if enter_exec && self.peek(2) == Some(b'!') {
                        self.i += 3;
                        let digits = self.s[self.i..]
                            .iter()
                            .take(6)
                            .take_while(|b| b.is_ascii_digit());
                        self.i += digits.count();
                    } else {
                        self.i += 2;
                        match find2(&self.s[self.i..], b'*', b'/') {
                            Some(at) => self.i += at + 2,
                            None => self.i = self.s.len(),
                        }
                    }
                }
                // The end of an executable comment entered above.
                b'*' if enter_exec && self.peek(1) == Some(b'/') => self.i += 2,
                _ => return,
            }
        }
    }

    fn skip_line(&mut self) {
        match self.s[self.i..].iter().position(|&b| b == b'\n') {
            Some(at) => self.i += at + 1,
            None => self.i = self.s.len(),
        }
    }

    /// Before the first word: space, comments and opening parentheses.
    fn skip_leading(&mut self) {
        loop {
            self.skip_space(true, true);
            if self.peek(0) == Some(b'(') {
                self.i += 1;
            } else {
                return;
            }
        }
    }

    /// An identifier or keyword starting here.
    fn word(&mut self) -> Option<&'a [u8]> {
        let s: &'a [u8] = self.s;
        let start = self.i;
        if !s
            .get(start)
            .is_some_and(|b| b.is_ascii_alphabetic() || *b == b'_')
        {
            return None;
        }
        let len = s[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'_' || **b == b'$')
            .count();
        self.i = start + len;
        Some(&s[start..start + len])
    }

    /// Past the common table expressions of a `WITH`: the verb of the first statement keyword
    /// outside parentheses, if the text reaches it.
    fn main_after_with(&mut self) -> Option<&'static str> {
        let mut depth = 0usize;
        loop {
            self.skip_space(false, false);
            let c = self.peek(0)?;
            match c {
                b'(' => {
                    depth += 1;
                    self.i += 1;
                }
                b')' => {
                    depth = depth.saturating_sub(1);
                    self.i += 1;
                }
                b'\'' | b'"' | b'`' => self.skip_quoted(c),
                b'$' => self.skip_dollar(),
                c if c.is_ascii_alphabetic() || c == b'_' => {
                    let w = self.word()?;
                    if depth == 0
                        && let Some(
                            v @ ("SELECT" | "INSERT" | "UPDATE" | "DELETE" | "MERGE" | "REPLACE"),
                        ) = known(w)
                    {
                        return Some(v);
                    }
                }
                _ => self.i += 1,
            }
        }
    }

    /// A quoted string or identifier: doubled quotes and backslash escapes inside.
    fn skip_quoted(&mut self, q: u8) {
        self.i += 1;
        while let Some(c) = self.peek(0) {
            self.i += 1;
            if c == b'\\' && q == b'\'' {
                self.i += 1;
            } else if c == q {
                if self.peek(0) == Some(q) {
                    self.i += 1;
                } else {
                    return;
                }
            }
        }
        self.i = self.i.min(self.s.len());
    }

    /// PostgreSQL dollar quoting (`$$ … $$`, `$tag$ … $tag$`); a `$1` parameter otherwise.
    fn skip_dollar(&mut self) {
        let rest = &self.s[self.i + 1..];
        let tag = rest
            .iter()
            .enumerate()
            .take_while(|(k, b)| {
                b.is_ascii_alphabetic() || **b == b'_' || (*k > 0 && b.is_ascii_digit())
            })
            .count();
        if rest.get(tag) != Some(&b'$') {
            self.i += 1;
            return;
        }
        let delim = &self.s[self.i..self.i + tag + 2];
        let body = self.i + tag + 2;
        match self.s[body..].windows(delim.len()).position(|w| w == delim) {
            Some(at) => self.i = body + at + delim.len(),
            None => self.i = self.s.len(),
        }
    }
}

fn find2(s: &[u8], a: u8, b: u8) -> Option<usize> {
    s.windows(2).position(|w| w[0] == a && w[1] == b)
}

/// Text that could open an SQL statement: its verb is known.
pub(crate) fn looks_like_sql(text: &[u8]) -> bool {
    verb(text) != OTHER
}

/// The most bytes of a message's start the framing gathers for its handler.
pub(crate) const PREFIX_MAX: usize = 4096;
const _: () = assert!(PREFIX_MAX + 8 <= MAX_HELD);

/// What a handler tells the framing after a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    Go,
    /// Inconsistent: framing lost.
    Lost,
    /// The stream turns opaque (TLS, compression, replication): parse no more.
    Stop,
}

/// What one call did to a direction's framing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fed {
    Ok,
    /// Framing was lost in this call (a header among unseen bytes, or an inconsistency).
    Lost,
    Stop,
}

/// A protocol's view of one direction's messages.
pub(crate) trait Framing {
    /// Bytes of the next message's header (1 to 8).
    fn header_len(&mut self) -> usize;
    /// The header is complete: its payload's length and how many of its first bytes to
    /// gather, or `None` when the header is not plausible.
    fn header(&mut self, hdr: &[u8]) -> Option<(u64, usize)>;
    /// A message: its header and the first bytes asked for, fewer when `cut` (the rest of the
    /// call was not copied). The payload's remaining bytes are skipped.
    fn message(&mut self, hdr: &[u8], prefix: &[u8], cut: bool) -> Step;
}

/// One direction's byte stream cut into messages by their length headers: headers and the
/// wanted first bytes of payloads are gathered across calls (at most [`PREFIX_MAX`] + 8
/// bytes held), the rest is skipped by count, unseen bytes included.
#[derive(Debug)]
pub(crate) struct Frames {
    hdr: [u8; 8],
    /// Header length of the message being read; 0 between messages.
    hdr_len: usize,
    hdr_got: usize,
    in_body: bool,
    body: u64,
    want: usize,
    pre: Vec<u8>,
    skip: u64,
    lost: bool,
}

impl Frames {
    pub(crate) fn new(lost: bool) -> Self {
        Self {
            hdr: [0; 8],
            hdr_len: 0,
            hdr_got: 0,
            in_body: false,
            body: 0,
            want: 0,
            pre: Vec::new(),
            skip: 0,
            lost,
        }
    }

    pub(crate) fn lost(&self) -> bool {
        self.lost
    }

    /// Take the start of the next call as a message boundary.
    pub(crate) fn realign(&mut self) {
        *self = Self {
            pre: std::mem::take(&mut self.pre),
            ..Self::new(false)
        };
        self.pre.clear();
    }

    /// Give up on the framing until realigned.
    pub(crate) fn lose(&mut self) -> Fed {
        self.realign();
        self.lost = true;
        Fed::Lost
    }

    /// Bytes held for a partial message.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.pre.capacity() + self.hdr.len()
    }

    /// One call: `data` copied, then `unseen` bytes not.
    pub(crate) fn feed<F: Framing>(&mut self, data: &[u8], unseen: u64, f: &mut F) -> Fed {
        if self.lost {
            return Fed::Ok;
        }
        let mut i = 0;
        loop {
            if self.skip > 0 {
                let n = self.skip.min((data.len() - i) as u64) as usize;
                i += n;
                self.skip -= n as u64;
                if self.skip > 0 {
                    break;
                }
            }
            if !self.in_body {
                if i == data.len() {
                    break;
                }
                if self.hdr_len == 0 {
                    self.hdr_len = f.header_len().clamp(1, self.hdr.len());
                    self.hdr_got = 0;
                }
                let n = (self.hdr_len - self.hdr_got).min(data.len() - i);
                self.hdr[self.hdr_got..self.hdr_got + n].copy_from_slice(&data[i..i + n]);
                self.hdr_got += n;
                i += n;
                if self.hdr_got < self.hdr_len {
                    break;
                }
                let Some((body, want)) = f.header(&self.hdr[..self.hdr_len]) else {
                    return self.lose();
                };
                self.body = body;
                self.want = (want as u64).min(body).min(PREFIX_MAX as u64) as usize;
                self.in_body = true;
                self.pre.clear();
            }
            let hdr = &self.hdr[..self.hdr_len];
            let step = if self.pre.is_empty() && data.len() - i >= self.want {
                let p = &data[i..i + self.want];
                i += self.want;
                f.message(hdr, p, false)
            } else {
                if self.pre.is_empty() {
                    self.pre.reserve_exact(self.want);
                }
                let n = (self.want - self.pre.len()).min(data.len() - i);
                self.pre.extend_from_slice(&data[i..i + n]);
                i += n;
                if self.pre.len() < self.want {
                    break;
                }
                f.message(hdr, &self.pre, false)
            };
            self.skip = self.body - self.want as u64;
            self.in_body = false;
            self.hdr_len = 0;
            match step {
                Step::Go => {}
                Step::Lost => return self.lose(),
                Step::Stop => return Fed::Stop,
            }
        }
        let mut u = unseen;
        let n = self.skip.min(u);
        self.skip -= n;
        u -= n;
        if u == 0 {
            return Fed::Ok;
        }
        if !self.in_body {
            // The next header is among the unseen bytes.
            return self.lose();
        }
        let step = f.message(&self.hdr[..self.hdr_len], &self.pre, true);
        let rest = self.body - self.pre.len() as u64;
        self.in_body = false;
        self.hdr_len = 0;
        self.pre.clear();
        match step {
            Step::Go if rest >= u => {
                self.skip = rest - u;
                Fed::Ok
            }
            Step::Stop => Fed::Stop,
            Step::Go | Step::Lost => self.lose(),
        }
    }
}

/// What a connection's two directions share, kept by [`drive`] and read by the protocol.
#[derive(Debug, Default)]
pub(crate) struct Link {
    started: bool,
    opaque: bool,
    /// The requests were resynchronised: the next request realigns the responses.
    resync: bool,
    /// The response framing is lost (copy of [`Frames::lost`] for the request side).
    resp_lost: bool,
    req_outage: bool,
    /// A loss of the response framing was counted; cleared when in step again.
    pub(crate) resp_outage: bool,
}

impl Link {
    /// Whether a request queued now is where the responses realign (the requests were
    /// resynchronised or the responses are lost, and no request waiting is marked yet).
    pub(crate) fn mark<P: Pending>(&mut self, queue: &VecDeque<P>) -> bool {
        let realign = (self.resync || self.resp_lost) && !queue.iter().any(P::realign);
        self.resync = false;
        realign
    }
}

/// A request waiting for its response.
pub(crate) trait Pending {
    /// A request was emitted: its response must be.
    fn emit(&self) -> bool;
    /// Responses resume at the start of the first call after this request.
    fn realign(&self) -> bool;
    fn unmark(&mut self);
}

/// An SQL protocol's connection state, as [`drive`] runs it.
pub(crate) trait Session {
    type Pending: Pending;
    /// Requests waiting past this many: the responses are given up.
    const MAX_QUEUE: usize;
    fn role(&self) -> Role;
    fn link(&mut self) -> &mut Link;
    fn queue(&mut self) -> &mut VecDeque<Self::Pending>;
    /// The first call (`req`: in the request direction) opens the connection: its state
    /// is set for it.
    fn opens(&mut self, req: bool, data: &[u8]) -> bool;
    /// A call in the request direction starting with plausible requests.
    fn requests_start(data: &[u8], unseen: u64) -> bool;
    /// The requests' (`req`) or the responses' framing starts over: forget what was
    /// partly read.
    fn realigned(&mut self, req: bool);
    /// The front request's response is complete.
    fn complete(&mut self, error: bool, code: Option<Box<str>>, out: &mut Output);
    /// The responses can no longer be followed: forget what was partly read of them.
    fn responses_gone(&mut self);
    /// One call of requests through their framing.
    fn requests(&mut self, f: &mut Frames, data: &[u8], unseen: u64, out: &mut Output) -> Fed;
    /// One call of responses through their framing.
    fn responses(&mut self, f: &mut Frames, data: &[u8], unseen: u64, out: &mut Output) -> Fed;
}

/// One call of a connection in either direction: the first call starts at the opening or
/// mid-stream (at requests, the responses realigned at the first call after them) or lost.
/// Lost requests realign at a call that starts with plausible requests (one malformed per
/// outage); responses at the first call after the request marked for it, the requests
/// before it answered at once. Lost responses answer all waiting requests at once.
pub(crate) fn drive<S: Session>(
    req: &mut Frames,
    resp: &mut Frames,
    st: &mut S,
    dir: Dir,
    data: &[u8],
    unseen: u64,
    out: &mut Output,
) {
    if st.link().opaque || (data.is_empty() && unseen == 0) {
        return;
    }
    let is_req = dir == st.role().request_dir();
    if !st.link().started {
        st.link().started = true;
        if st.opens(is_req, data) {
            // At the opening: both directions in step.
        } else if is_req && S::requests_start(data, unseen) {
            resp.lose();
            st.link().resync = true;
            st.link().resp_outage = true;
        } else {
            req.lose();
            resp.lose();
            st.link().req_outage = true;
            st.link().resp_outage = true;
        }
    }
    if is_req {
        if req.lost() {
            if !S::requests_start(data, unseen) {
                return;
            }
            req.realign();
            st.realigned(true);
            st.link().resync = true;
            st.link().req_outage = false;
        }
        st.link().resp_lost = resp.lost();
        match st.requests(req, data, unseen, out) {
            Fed::Ok => {}
            Fed::Lost => {
                let link = st.link();
                if !link.req_outage {
                    link.req_outage = true;
                    out.malformed += 1;
                }
            }
            Fed::Stop => st.link().opaque = true,
        }
        if st.queue().len() > S::MAX_QUEUE {
            resp.lose();
            resp_gone(st, out);
        }
    } else {
        if let Some(at) = st.queue().iter().position(S::Pending::realign) {
            for _ in 0..at {
                st.complete(false, None, out);
            }
            st.queue()[0].unmark();
            resp.realign();
            st.realigned(false);
        } else if resp.lost() {
            return;
        }
        match st.responses(resp, data, unseen, out) {
            Fed::Ok => {}
            Fed::Lost => resp_gone(st, out),
            Fed::Stop => st.link().opaque = true,
        }
    }
}

/// The front request's response is complete: emitted when the request was.
pub(crate) fn answer<P: Pending>(
    queue: &mut VecDeque<P>,
    emitted: &mut usize,
    error: bool,
    code: Option<Box<str>>,
    out: &mut Output,
) {
    if let Some(p) = queue.pop_front()
        && p.emit()
    {
        let mut m = crate::Message::response(0, error);
        m.code = code;
        out.messages.push(m);
        *emitted -= 1;
    }
}

/// The responses can no longer be followed: the waiting requests get theirs now.
fn resp_gone<S: Session>(st: &mut S, out: &mut Output) {
    let link = st.link();
    if !link.resp_outage {
        link.resp_outage = true;
        out.malformed += 1;
    }
    while !st.queue().is_empty() {
        st.complete(false, None, out);
    }
    st.responses_gone();
}

/// Insert into a map bounded to `cap` entries: a new key past it starts the map over.
pub(crate) fn bounded_insert<K: std::hash::Hash + Eq, V>(
    map: &mut std::collections::HashMap<K, V>,
    cap: usize,
    key: K,
    value: V,
) {
    if map.len() >= cap && !map.contains_key(&key) {
        map.clear();
    }
    map.insert(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    #[test]
    fn sql_verbs() {
        let cases: &[(&str, &str)] = &[
            ("SELECT 1", "SELECT"),
            ("select * from t", "SELECT"),
            ("  \n\tSeLeCt 1", "SELECT"),
            ("insert into t values (1)", "INSERT"),
            ("UPDATE t SET a=1", "UPDATE"),
            ("delete from t", "DELETE"),
            ("REPLACE INTO t VALUES (1)", "REPLACE"),
            (
                "MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING",
                "MERGE",
            ),
            ("BEGIN", "BEGIN"),
            ("start transaction", "START"),
            ("COMMIT", "COMMIT"),
            ("end", "COMMIT"),
            ("abort", "ROLLBACK"),
            ("rollback to savepoint a", "ROLLBACK"),
            ("SAVEPOINT a", "SAVEPOINT"),
            ("release savepoint a", "RELEASE"),
            ("SET NAMES utf8mb4", "SET"),
            ("show tables", "SHOW"),
            ("use db", "USE"),
            ("CREATE TABLE t (a int)", "CREATE"),
            ("alter table t add b int", "ALTER"),
            ("drop table t", "DROP"),
            ("truncate t", "TRUNCATE"),
            ("grant all on t to u", "GRANT"),
            ("revoke all on t from u", "REVOKE"),
            ("explain analyze select 1", "EXPLAIN"),
            ("analyze t", "ANALYZE"),
            ("ANALYSE t", "ANALYZE"),
            ("call p()", "CALL"),
            ("execute s(1)", "EXECUTE"),
            ("prepare s as select 1", "PREPARE"),
            ("deallocate s", "DEALLOCATE"),
            ("declare c cursor for select 1", "DECLARE"),
            ("fetch 10 from c", "FETCH"),
            ("close c", "CLOSE"),
            ("copy t from stdin", "COPY"),
            ("lock tables t write", "LOCK"),
            ("unlock tables", "UNLOCK"),
            ("vacuum full", "VACUUM"),
            ("listen ch", "LISTEN"),
            ("notify ch", "NOTIFY"),
            ("do $$ begin end $$", "DO"),
            ("load data local infile 'x' into table t", "LOAD"),
            ("describe t", "DESCRIBE"),
            ("desc t", "DESCRIBE"),
            ("table t", "SELECT"),
            ("values (1), (2)", "SELECT"),
            ("SELECT", "SELECT"),
            ("SELECT;", "SELECT"),
            ("select\n1", "SELECT"),
            ("select*from t", "SELECT"),
        ];
        for (sql, want) in cases {
            assert_eq!(verb(sql.as_bytes()), *want, "{sql:?}");
        }
    }

    #[test]
    fn sql_comments_and_parentheses() {
        let cases: &[(&str, &str)] = &[
            ("-- a comment\nSELECT 1", "SELECT"),
            ("--\n--x\n  update t set a = 1", "UPDATE"),
            ("# mysql comment\ninsert into t values(1)", "INSERT"),
            ("/* c */ delete from t", "DELETE"),
            ("/* multi\nline */\n/* two */SELECT 1", "SELECT"),
            ("/*!40101 SET NAMES utf8 */", "SET"),
            (
                "/*!50001 CREATE ALGORITHM=UNDEFINED VIEW v AS SELECT 1 */",
                "CREATE",
            ),
            ("/*!*/ /* x */ select 1", "SELECT"),
            ("/*!40000 */ select 1", "SELECT"),
            ("((SELECT 1) UNION (SELECT 2))", "SELECT"),
            ("( ( /* x */ select 1))", "SELECT"),
            ("/* unterminated select", OTHER),
            ("-- only a comment", OTHER),
            ("", OTHER),
            ("   ", OTHER),
            ("(((", OTHER),
            ("selectx 1", OTHER),
            ("frobnicate", OTHER),
            ("1 + 1", OTHER),
            ("SELECTSELECTSELECT", OTHER),
            ("\u{0}SELECT", OTHER),
        ];
        for (sql, want) in cases {
            assert_eq!(verb(sql.as_bytes()), *want, "{sql:?}");
        }
    }

    #[test]
    fn sql_with_main_verb() {
        let cases: &[(&str, &str)] = &[
            ("WITH a AS (SELECT 1) SELECT * FROM a", "SELECT"),
            (
                "with a as (select 1), b as (select 2) insert into t select * from a",
                "INSERT",
            ),
            (
                "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n+1 FROM r) SELECT n FROM r",
                "SELECT",
            ),
            (
                "with d as (delete from t returning *) insert into u select * from d",
                "INSERT",
            ),
            (
                "WITH x AS MATERIALIZED (SELECT ')' AS p) UPDATE t SET a = 1",
                "UPDATE",
            ),
            ("WITH x AS (SELECT $$ ) $$) DELETE FROM t", "DELETE"),
            (
                "WITH x AS (SELECT $q$ ) select $q$) DELETE FROM t",
                "DELETE",
            ),
            ("WITH x AS (SELECT 'it''s )' , \"a)\" ) SELECT 1", "SELECT"),
            ("WITH x AS (SELECT 'a\\') b' ) MERGE INTO t", "MERGE"),
            ("WITH x AS (SELECT 1 /* ) */ -- )\n) SELECT 1", "SELECT"),
            ("WITH x AS (SELECT $1) SELECT 1", "SELECT"),
            // Truncated before the main statement.
            ("WITH a AS (SELECT 1 FROM big_table WHERE", "WITH"),
            ("WITH a AS (SELECT 1) ", "WITH"),
            ("WITH", "WITH"),
            ("WITH x AS (SELECT '", "WITH"),
            ("WITH x AS (SELECT $$", "WITH"),
        ];
        for (sql, want) in cases {
            assert_eq!(verb(sql.as_bytes()), *want, "{sql:?}");
        }
    }

    #[test]
    fn sql_truncated_anywhere_never_panics() {
        let sql = b"/*!40101 x */ -- c\n # d\n ((WITH r AS (SELECT 'a''b\\'c', \"q\", `b`, $t$x$t$, $$y$$, $1 /* z */) UPDATE t SET a = 1";
        for end in 0..=sql.len() {
            let v = verb(&sql[..end]);
            assert!(known(v.as_bytes()).is_some() || v == OTHER);
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let alphabet = b"/*!-#\n '\"`$()selectwithSELECTWITHupdate1";
        for _ in 0..20_000 {
            let mut buf = [0u8; 48];
            let n = (rng.0 % 48) as usize;
            for b in buf.iter_mut().take(n) {
                let x = rng.next();
                *b = if x & 1 == 0 {
                    alphabet[(x >> 8) as usize % alphabet.len()]
                } else {
                    (x >> 16) as u8
                };
            }
            let _ = verb(&buf[..n]);
        }
    }

    struct Rec {
        msgs: Vec<(Vec<u8>, Vec<u8>, bool)>,
        want: usize,
    }

    impl Framing for Rec {
        fn header_len(&mut self) -> usize {
            2
        }
        fn header(&mut self, hdr: &[u8]) -> Option<(u64, usize)> {
            (hdr[0] == b'M').then_some((hdr[1] as u64, self.want))
        }
        fn message(&mut self, hdr: &[u8], prefix: &[u8], cut: bool) -> Step {
            self.msgs.push((hdr.to_vec(), prefix.to_vec(), cut));
            Step::Go
        }
    }

    #[test]
    fn sql_frames_split_skip_and_unseen() {
        let stream = b"M\x03abcM\x00M\x05hello";
        for split in 0..=stream.len() {
            let mut f = Frames::new(false);
            let mut r = Rec {
                msgs: vec![],
                want: 2,
            };
            assert_eq!(f.feed(&stream[..split], 0, &mut r), Fed::Ok);
            assert_eq!(f.feed(&stream[split..], 0, &mut r), Fed::Ok);
            let got: Vec<_> = r.msgs.iter().map(|m| (m.1.clone(), m.2)).collect();
            assert_eq!(
                got,
                vec![
                    (b"ab".to_vec(), false),
                    (vec![], false),
                    (b"he".to_vec(), false)
                ]
            );
        }
        // A payload running into unseen bytes and on into the next call.
        let mut f = Frames::new(false);
        let mut r = Rec {
            msgs: vec![],
            want: 4,
        };
        assert_eq!(f.feed(b"M\x0aab", 3, &mut r), Fed::Ok);
        assert_eq!(r.msgs, vec![(b"M\x0a".to_vec(), b"ab".to_vec(), true)]);
        assert_eq!(f.feed(b"xyzwvM\x01q", 0, &mut r), Fed::Ok);
        assert_eq!(r.msgs.len(), 2);
        // A header among unseen bytes: lost, and nothing more until realigned.
        assert_eq!(f.feed(b"M\x01q", 5, &mut r), Fed::Lost);
        assert!(f.lost());
        assert_eq!(f.feed(b"M\x01q", 0, &mut r), Fed::Ok);
        assert_eq!(r.msgs.len(), 3);
        f.realign();
        assert_eq!(f.feed(b"M\x01q", 0, &mut r), Fed::Ok);
        assert_eq!(r.msgs.len(), 4);
        // A bad header.
        assert_eq!(f.feed(b"X\x01q", 0, &mut r), Fed::Lost);
    }
}
