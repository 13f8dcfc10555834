//! HTTP request targets as bounded routes, so that a route can be a label: one
//! `GET /users/*` row for every user rather than one row per user.
//!
//! [`normalize`] keeps the shape of the path and drops what varies per request:
//!
//! - The query (`?…`) and fragment (`#…`) are dropped.
//! - Absolute form (`http://host:8080/a/b`, any scheme) keeps its path only (`/a/b`; `/`
//!   when it has none). The asterisk form `*` (`OPTIONS *`) stays `*`. The authority form
//!   of `CONNECT` (`host:port`: no `/`, a `:`) stays as is, lowercased (`*` past
//!   [`MAX_LEN`] bytes): it is the tunnel's destination, as bounded as the hosts are. Any
//!   other target not starting with `/` is taken as a path and gets a leading `/`.
//! - Runs of `/` count as one, and a trailing `/` is dropped (`/a//b/` is `/a/b`); the
//!   empty path is `/`.
//! - A segment that looks like an identifier becomes `*`:
//!   - all ASCII digits (`/orders/42`);
//!   - a UUID, `8-4-4-4-12` hex digits of either case;
//!   - at least 16 hex digits and nothing else (hashes, object ids, dashless UUIDs);
//!   - a long token: at least 24 bytes, all from the base64/base64url/percent-encoding
//!     alphabet (`A-Z a-z 0-9 - _ + = ~ %`), with at least one digit (random tokens,
//!     encoded keys; a slug made of words only, such as
//!     `how-to-write-a-parser-in-rust`, is kept);
//!   - any segment longer than 64 bytes (no route has one; it is data).
//! - ASCII control characters are replaced by U+FFFD (the HTTP parser already decodes the
//!   target lossily, so odd bytes arrive as U+FFFD too).
//! - At most 16 segments and [`MAX_LEN`] bytes are kept, on segment boundaries; when
//!   something was cut, [`MARKER`] (`/…`) ends the route, within the [`MAX_LEN`] bytes.
//!
//! The result is a fixed point: normalising a normalised route gives it back.

/// Bytes of a route at most, [`MARKER`] included.
pub const MAX_LEN: usize = 256;
/// Ends a route whose later segments were cut off.
pub const MARKER: &str = "/…";
/// Segments of a route at most (the marker's not counted).
const MAX_SEGMENTS: usize = 16;
/// A segment longer than this is data, not part of a route.
const MAX_SEGMENT_LEN: usize = 64;
/// Hex digits from which a segment made of them only is an id.
const LONG_HEX: usize = 16;
/// Bytes from which a token with a digit is an id.
const LONG_TOKEN: usize = 24;

/// An HTTP request target as a bounded route: query dropped, ids replaced by `*`.
pub fn normalize(target: &str) -> String {
    let mut out = String::new();
    normalize_into(target, &mut out);
    out
}

/// [`normalize`] into `out` (cleared first), to reuse its allocation.
pub fn normalize_into(target: &str, out: &mut String) {
    out.clear();
    // `?` and `#` are ASCII: cutting there keeps UTF-8 whole.
    let end = target
        .bytes()
        .position(|b| b == b'?' || b == b'#')
        .unwrap_or(target.len());
    let target = &target[..end];
    let path = if target.starts_with('/') {
        target
    } else if target == "*" {
        out.push('*');
        return;
    } else if let Some(after) = after_scheme(target) {
        match after.find('/') {
            Some(i) => &after[i..],
            None => "",
        }
    } else if !target.contains('/') && target.contains(':') {
        authority(target, out);
        return;
    } else {
        target
    };

    out.reserve(path.len().min(MAX_LEN) + 1);
    let mut cut = false;
    for (segments, seg) in path.split('/').filter(|s| !s.is_empty()).enumerate() {
        let (id, controls) = classify(seg.as_bytes());
        // U+FFFD is 3 bytes where a control character was 1.
        let len = if id { 1 } else { seg.len() + 2 * controls };
        if segments == MAX_SEGMENTS || out.len() + 1 + len > MAX_LEN {
            cut = true;
            break;
        }
        out.push('/');
        if id {
            out.push('*');
        } else if controls == 0 {
            out.push_str(seg);
        } else {
            out.extend(
                seg.chars()
                    .map(|c| if c.is_ascii_control() { '\u{fffd}' } else { c }),
            );
        }
    }
    if cut {
        // Room for the marker: drop whole segments (each is at most 1 + 64 bytes, so the
        // first one always stays).
        while out.len() + MARKER.len() > MAX_LEN {
            match out.rfind('/') {
                Some(i) if i > 0 => out.truncate(i),
                _ => break,
            }
        }
        out.push_str(MARKER);
    } else if out.is_empty() {
        out.push('/');
    }
}

/// What follows `scheme://` when `target` is in absolute form.
fn after_scheme(target: &str) -> Option<&str> {
    let colon = target.find("://")?;
    let scheme = &target.as_bytes()[..colon];
    let ok = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    ok.then(|| &target[colon + 3..])
}

/// `CONNECT`'s `host:port`, lowercased and bounded.
fn authority(target: &str, out: &mut String) {
    if target.len() > MAX_LEN {
        out.push('*');
        return;
    }
    out.extend(target.chars().map(|c| {
        if c.is_ascii_control() {
            '\u{fffd}'
        } else {
            c.to_ascii_lowercase()
        }
    }));
}

const DIGIT: u8 = 1;
const HEX: u8 = 2;
/// The base64/base64url/percent-encoding alphabet.
const TOKEN: u8 = 4;
const CONTROL: u8 = 8;

/// Each byte's classes.
static CLASSES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT | HEX | TOKEN
        } else if c.is_ascii_hexdigit() {
            HEX | TOKEN
        } else if c.is_ascii_alphabetic() || matches!(c, b'-' | b'_' | b'+' | b'=' | b'~' | b'%') {
            TOKEN
        } else if c.is_ascii_control() {
            CONTROL
        } else {
            0
        };
        b += 1;
    }
    t
};

/// Whether a (non-empty) segment names one object rather than a kind of them, and the
/// control characters in it.
fn classify(seg: &[u8]) -> (bool, usize) {
    let (mut all, mut digits, mut controls) = (DIGIT | HEX | TOKEN, 0, 0);
    for &b in seg {
        let class = CLASSES[usize::from(b)];
        all &= class;
        digits += usize::from(class & DIGIT);
        controls += usize::from(class >> 3);
    }
    let n = seg.len();
    let id = n + 2 * controls > MAX_SEGMENT_LEN
        || all & DIGIT != 0
        || (n >= LONG_HEX && all & HEX != 0)
        || (n == 36 && is_uuid(seg))
        || (n >= LONG_TOKEN && digits > 0 && all & TOKEN != 0);
    (id, controls)
}

fn is_uuid(seg: &[u8]) -> bool {
    seg.len() == 36
        && seg.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str)] = &[
            ("", "/"),
            ("/", "/"),
            ("*", "*"),
            ("*?x", "*"),
            ("/a/b", "/a/b"),
            ("/a/b/", "/a/b"),
            ("//a///b//", "/a/b"),
            ("/a/b?q=1&r=/x", "/a/b"),
            ("/a/b#frag", "/a/b"),
            ("/a?x#y", "/a"),
            ("?x", "/"),
            ("/users/12345", "/users/*"),
            ("/users/12345/orders/7", "/users/*/orders/*"),
            ("/v1/users/0", "/v1/users/*"),
            ("/api/v2", "/api/v2"),
            ("/o/550e8400-e29b-41d4-a716-446655440000", "/o/*"),
            ("/o/550E8400-E29B-41D4-A716-446655440000/x", "/o/*/x"),
            // Not a UUID, but a long token with digits all the same.
            ("/o/550e8400-e29b-41d4-a716-44665544000", "/o/*"),
            ("/o/abcd-ef", "/o/abcd-ef"),
            ("/o/550e8400e29b41d4a716446655440000", "/o/*"),
            ("/commit/0123456789abcdef", "/commit/*"),
            ("/commit/0123456789abcde", "/commit/0123456789abcde"),
            ("/blob/deadbeefDEADBEEF", "/blob/*"),
            ("/t/dGhpcyBpcyBhIHRva2VuMTIzNDU2", "/t/*"),
            ("/t/aB3_-xYz9QwErTyUiOpAsDfG", "/t/*"),
            ("/t/aB3_-xYz9QwErTyUiOpAsDf", "/t/aB3_-xYz9QwErTyUiOpAsDf"),
            (
                "/t/aBc_-xYzQwErTyUiOpAsDfGhJk",
                "/t/aBc_-xYzQwErTyUiOpAsDfGhJk",
            ),
            ("/s/caf%C3%A9-au-lait-et-croissant", "/s/*"),
            (
                "/blog/how-to-write-a-parser-in-rust",
                "/blog/how-to-write-a-parser-in-rust",
            ),
            ("/static/app.3f2a.js", "/static/app.3f2a.js"),
            ("/static/main.css", "/static/main.css"),
            ("http://example.com/a/1?x", "/a/*"),
            ("HTTPS://Example.COM:8443/A/b", "/A/b"),
            ("http://example.com", "/"),
            ("http://example.com?x=/y", "/"),
            ("http://user@h/p", "/p"),
            ("example.com:443", "example.com:443"),
            ("Example.COM:443", "example.com:443"),
            ("index.html", "/index.html"),
            ("a/b/1", "/a/b/*"),
            ("/caf\u{e9}/\u{fffd}\u{fffd}", "/caf\u{e9}/\u{fffd}\u{fffd}"),
            ("/a\u{1}b/c", "/a\u{fffd}b/c"),
            ("/a b/c", "/a b/c"),
            ("/*/x", "/*/x"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), *want, "{input:?}");
        }
    }

    #[test]
    fn long_segments_and_caps() {
        // A segment past 64 bytes is data.
        let seg = "z".repeat(65);
        assert_eq!(normalize(&format!("/x/{seg}/y")), "/x/*/y");
        let seg = "z".repeat(64);
        assert_eq!(normalize(&format!("/x/{seg}")), format!("/x/{seg}"));
        // Control characters count as the 3 bytes they become.
        let seg = format!("{}\u{1}", "z".repeat(62));
        assert_eq!(normalize(&format!("/{seg}")), "/*");

        // 16 segments kept, then the marker.
        let many: String = (0..40)
            .map(|i| format!("/s{}", (b'a' + i % 26) as char))
            .collect();
        let got = normalize(&many);
        assert_eq!(got.matches('/').count(), 17, "{got}");
        assert!(got.ends_with(MARKER));
        assert!(got.starts_with("/sa/sb/sc"));
        let exactly: String = many
            .split('/')
            .skip(1)
            .take(16)
            .map(|s| format!("/{s}"))
            .collect();
        assert_eq!(normalize(&exactly), exactly);

        // Bytes: whole segments, marker within MAX_LEN.
        let seg = "y".repeat(60);
        let long = format!("/{seg}").repeat(10);
        let got = normalize(&long);
        assert!(got.len() <= MAX_LEN, "{}", got.len());
        assert!(got.ends_with(MARKER));
        assert_eq!(got, format!("{}{MARKER}", format!("/{seg}").repeat(4)));

        // Huge input stays bounded and quick.
        let huge = "/abc".repeat(10_000);
        let got = normalize(&huge);
        assert!(got.len() <= MAX_LEN);
    }

    #[test]
    fn fixed_point() {
        let mut inputs: Vec<String> = [
            "/a/1/b",
            "http://h/x/y?z",
            "host:80",
            "*",
            "",
            "/a\u{1}\u{2}/b",
            "/\u{2026}/x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        inputs.push("/xyz".repeat(100));
        inputs.push(format!("/{}", "q".repeat(63)).repeat(8));
        inputs.push(format!("/{}\u{1}", "q".repeat(40)).repeat(8));
        inputs.push((0..17).map(|i| format!("/{i}a")).collect());
        // Pseudo-random paths over a small alphabet.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2000 {
            let mut s = String::new();
            let n = (x % 300) as usize;
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let alphabet = [
                    '/', '/', 'a', 'F', '0', '9', '-', '_', '\u{1}', '\u{e9}', '…', ':', '%',
                ];
                s.push(alphabet[(x % alphabet.len() as u64) as usize]);
            }
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            inputs.push(s);
        }
        for input in &inputs {
            let once = normalize(input);
            assert!(once.len() <= MAX_LEN, "{input:?} -> {once:?}");
            assert_eq!(normalize(&once), once, "{input:?}");
        }
    }
}
