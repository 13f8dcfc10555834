//! Keeps the kernel module's probe table, `ks_tracepoints[]` in `kmod-c/ks_probes.c`,
//! equal to the table of kinds, `event_abi::kinds::KINDS`: the same tracepoints (each
//! kind's own and its entry hook's), each with the same record kind and the probe the
//! Rust row names, in any order; and every probe checked (`KS_CHECK_PROBE`) against the
//! prototype of the tracepoint it is registered on.
//!
//! The C rows are read from the source and compiled with `cc` (or `$CC`) against
//! `kmod-c/ksight_abi.h`, so the kind is whatever value the C expression has (a
//! `KSIGHT_KIND_*` name, a number), not a spelling. A missing C compiler fails the test.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use event_abi::kinds::{self, KINDS, Signal};

fn kmod_c() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kmod-c")
}

/// One initializer of `ks_tracepoints[]`, as written: name, kind, probe.
#[derive(Debug, PartialEq)]
struct CRow {
    name: String,
    kind: String,
    probe: String,
}

/// The rows of `static struct ks_tracepoint ks_tracepoints[] = { ... };`.
fn c_rows(source: &str) -> Result<Vec<CRow>, String> {
    let start = source
        .find("ks_tracepoints[] = {")
        .ok_or("no `ks_tracepoints[] = {` in ks_probes.c")?;
    let body = &source[start + "ks_tracepoints[] = {".len()..];
    let end = body
        .find("};")
        .ok_or("`ks_tracepoints[]` is not closed by `};`")?;
    let body = strip_comments(&body[..end]);
    let mut rows = Vec::new();
    let mut rest = body.as_str();
    while let Some(open) = rest.find('{') {
        let close = rest[open..]
            .find('}')
            .ok_or("unbalanced braces in `ks_tracepoints[]`")?
            + open;
        let fields: Vec<&str> = rest[open + 1..close].split(',').map(str::trim).collect();
        let [name, kind, probe] = fields[..] else {
            return Err(format!(
                "a `ks_tracepoints[]` row has {} fields, not 3 (name, kind, probe): {{{}}}",
                fields.len(),
                &rest[open + 1..close]
            ));
        };
        let name = name
            .strip_prefix('"')
            .and_then(|n| n.strip_suffix('"'))
            .ok_or_else(|| format!("the tracepoint name {name} is not a string literal"))?;
        rows.push(CRow {
            name: name.to_string(),
            kind: kind.to_string(),
            probe: probe.to_string(),
        });
        rest = &rest[close + 1..];
    }
    Ok(rows)
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("*/").map_or("", |j| &rest[i + j + 2..]);
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `KS_CHECK_PROBE(tracepoint, probe)` pairs in the source.
fn checked_probes(source: &str) -> BTreeSet<(String, String)> {
    source
        .lines()
        .filter_map(|l| l.trim().strip_prefix("KS_CHECK_PROBE("))
        .filter_map(|l| l.split(')').next())
        .filter_map(|args| {
            let (tp, probe) = args.split_once(',')?;
            Some((tp.trim().to_string(), probe.trim().to_string()))
        })
        .collect()
}

/// Compiles the rows against ksight_abi.h and returns (name, kind value, probe).
fn evaluate(rows: &[CRow]) -> BTreeSet<(String, u16, String)> {
    let mut c =
        String::from("#include <stdio.h>\n#include \"ksight_abi.h\"\n\nint main(void)\n{\n");
    for r in rows {
        writeln!(
            c,
            "\tprintf(\"%s %lld %s\\n\", \"{}\", (long long)({}), \"{}\");",
            r.name, r.kind, r.probe
        )
        .unwrap();
    }
    c.push_str("\treturn fflush(stdout) != 0;\n}\n");

    let dir = std::env::temp_dir().join(format!(
        "ksight-kinds-c-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("kinds.c");
    let exe = dir.join("kinds");
    std::fs::write(&src, &c).unwrap();
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(kmod_c())
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the C compiler {cc:?}: {e}; this test needs one (install gcc or set CC)"
            )
        });
    assert!(
        out.status.success(),
        "compiling the rows of ks_tracepoints[] against ksight_abi.h failed (a kind that is \
         not a KSIGHT_KIND_* of the header?):\n{}\n{c}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let _ = std::fs::remove_dir_all(&dir);
    String::from_utf8(run.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let mut w = l.split(' ');
            let name = w.next().unwrap().to_string();
            let kind = w.next().unwrap().parse().expect("a kind that fits u16");
            let probe = w.next().unwrap().to_string();
            (name, kind, probe)
        })
        .collect()
}

/// Every hook of every kind as (tracepoint, kind, module probe): the kind's own, then
/// its entry hook's.
fn rust_rows() -> BTreeSet<(String, u16, String)> {
    KINDS
        .iter()
        .flat_map(|k| {
            let own = (
                k.tracepoint.name.to_string(),
                k.kind,
                k.kmod_probe.to_string(),
            );
            let entry = k.entry.map(|e| {
                (
                    e.tracepoint.name.to_string(),
                    k.kind,
                    e.kmod_probe.to_string(),
                )
            });
            std::iter::once(own).chain(entry)
        })
        .collect()
}

/// What differs between the two tables, both ways.
fn differences(
    c: &BTreeSet<(String, u16, String)>,
    rust: &BTreeSet<(String, u16, String)>,
) -> Vec<String> {
    let show = |(n, k, p): &(String, u16, String)| format!("{{ \"{n}\", {k}, {p} }}");
    c.difference(rust)
        .map(|r| format!("only in ks_probes.c: {}", show(r)))
        .chain(
            rust.difference(c)
                .map(|r| format!("only in event_abi::kinds::KINDS: {}", show(r))),
        )
        .collect()
}

#[test]
fn the_module_probe_table_is_the_table_of_kinds() {
    let path = kmod_c().join("ks_probes.c");
    let source = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let rows = c_rows(&source).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let hooks = rust_rows();
    assert_eq!(
        rows.len(),
        hooks.len(),
        "ks_tracepoints[] has {} rows, KINDS {} hooks (entry hooks included)",
        rows.len(),
        hooks.len()
    );
    let c = evaluate(&rows);
    assert_eq!(c.len(), rows.len(), "duplicate rows in ks_tracepoints[]");
    let problems = differences(&c, &hooks);
    assert!(
        problems.is_empty(),
        "kmod-c/ks_probes.c ks_tracepoints[] and event_abi::kinds::KINDS disagree:\n  {}",
        problems.join("\n  ")
    );

    let checked = checked_probes(&source);
    let unchecked: Vec<String> = hooks
        .iter()
        .map(|(tp, _, probe)| (tp.clone(), probe.clone()))
        .filter(|pair| !checked.contains(pair))
        .map(|(tp, probe)| format!("KS_CHECK_PROBE({tp}, {probe})"))
        .collect();
    assert!(
        unchecked.is_empty(),
        "ks_probes.c does not check these probes against their tracepoint's prototype: {}",
        unchecked.join(", ")
    );
}

/// The comparison must notice a wrong kind, a missing row and a renamed probe.
#[test]
fn differences_are_reported_both_ways() {
    let rust = rust_rows();
    let mut c = rust.clone();
    let exec = c
        .iter()
        .find(|r| r.0 == "sched_process_exec")
        .unwrap()
        .clone();
    c.remove(&exec);
    c.insert((exec.0.clone(), 9, exec.2.clone()));
    let fork = c
        .iter()
        .find(|r| r.0 == "sched_process_fork")
        .unwrap()
        .clone();
    c.remove(&fork);
    let d = differences(&c, &rust);
    assert_eq!(d.len(), 3, "{d:?}");
    assert!(d[0].contains("only in ks_probes.c: { \"sched_process_exec\", 9, ks_probe_exec }"));
    assert!(
        d.iter()
            .any(|l| l.contains("only in event_abi::kinds::KINDS: { \"sched_process_fork\""))
    );
}

#[test]
fn rows_are_parsed_as_written() {
    let src = "static struct ks_tracepoint ks_tracepoints[] = {\n\
               \t{ \"a_tp\", KSIGHT_KIND_EXEC, ks_probe_a }, /* first */\n\
               \t{ \"b_tp\", 2, ks_probe_b },\n};\n\
               KS_CHECK_PROBE(a_tp, ks_probe_a);\n";
    let rows = c_rows(src).unwrap();
    assert_eq!(
        rows,
        [
            CRow {
                name: "a_tp".into(),
                kind: "KSIGHT_KIND_EXEC".into(),
                probe: "ks_probe_a".into()
            },
            CRow {
                name: "b_tp".into(),
                kind: "2".into(),
                probe: "ks_probe_b".into()
            },
        ]
    );
    assert_eq!(
        checked_probes(src),
        BTreeSet::from([("a_tp".to_string(), "ks_probe_a".to_string())])
    );
    assert!(c_rows("{ \"x\", 1 }").is_err());
}

/// The table itself: dense, named, each signal fed by some kind, lookups consistent.
#[test]
fn the_table_of_kinds_is_consistent() {
    for (i, k) in KINDS.iter().enumerate() {
        assert_eq!(usize::from(k.kind), i + 1);
        assert_eq!(event_abi::record_size(k.kind), Some(k.size), "{}", k.name);
        assert_eq!(kinds::name(k.kind), Some(k.name));
        assert_eq!(kinds::signal(k.kind), Some(k.signal));
        assert_eq!(
            kinds::by_tracepoint(&k.tracepoint.to_string()).map(|d| d.kind),
            Some(k.kind)
        );
        assert!(k.ebpf_min_kernel() >= k.min_kernel);
    }
    assert_eq!(kinds::name(0), None);
    assert_eq!(kinds::name(event_abi::kind::END), None);
    assert_eq!(kinds::by_tracepoint("sock:block_rq_issue"), None);
    for s in Signal::ALL {
        assert!(s.kinds().next().is_some(), "{s} has no record kinds");
        assert_eq!(Signal::from_name(s.name()), Some(s));
    }
    // Today's names: JSON, ksight_signal_status and tests use them.
    let names: Vec<&str> = Signal::ALL.iter().map(|s| s.name()).collect();
    assert_eq!(
        names,
        [
            "process",
            "tcp",
            "tcp_close_stats",
            "tcp_retransmits",
            "tcp_resets",
            "block",
            "socket_io"
        ]
    );
    let close: Vec<u16> = Signal::TcpCloseStats.kinds().map(|k| k.kind).collect();
    assert_eq!(close, [event_abi::kind::TCP_STATE]);
    assert_eq!(format!("{:<8}|", Signal::Tcp), "tcp     |");
}

/// Socket I/O is the kind with an entry hook: the module must hook both, the entry
/// registered first (its row before the kind's own).
#[test]
fn the_entry_hook_row_comes_before_its_kind() {
    let path = kmod_c().join("ks_probes.c");
    let source = std::fs::read_to_string(&path).unwrap();
    let rows = c_rows(&source).unwrap();
    let at = |name: &str| rows.iter().position(|r| r.name == name);
    for k in KINDS.iter() {
        if let Some(e) = k.entry {
            let (entry, own) = (at(e.tracepoint.name), at(k.tracepoint.name));
            assert!(
                entry.is_some() && entry < own,
                "{}: the entry hook's row must precede the kind's",
                k.name
            );
        }
    }
    assert!(KINDS.iter().any(|k| k.entry.is_some()));
}
