//! `cargo xtask vm [KERNEL...]`: the kernel module's tests in qemu guests.
//!
//! The build machines cannot load modules, so each test boots a stock Debian kernel under
//! qemu (TCG) with an initramfs holding busybox, the module built against that kernel's
//! headers, and the ksight binaries; `tests/vm/guest-init.sh` runs the tests in the
//! guest and reports on the second serial port. What it does, in order:
//!
//! 1. installs what is missing (qemu-system-x86, cpio, xz-utils, zstd, make and each
//!    kernel's `linux-headers-<ver>` package; busybox-static is only downloaded and
//!    unpacked, so a host's own busybox stays);
//! 2. picks the kernels: the newest `linux-image-6.1.0-*-amd64` (bookworm) and
//!    `linux-image-6.12.*+deb12-amd64` (bookworm-security) that have headers, unless
//!    KERNEL arguments (`6.1`, `6.12` or full versions) or `KSIGHT_VM_KERNELS` say;
//! 3. downloads each `linux-image-<ver>` .deb into the cache (`KSIGHT_VM_CACHE`, default
//!    `/var/cache/ksight-vm`, never the repository), unpacks the uncompressed `vmlinux`
//!    (qemu boots it directly, PVH) and the loop driver, once;
//! 4. builds `ksight.ko` per kernel (`make -C /usr/src/linux-headers-<ver> M=...`), and
//!    once `ksight`, `ksight-workload` and the in-guest tool `kmod-vm`
//!    (`tests/vm/guest-tool`) (release; their shared libraries go into the initramfs as
//!    `ldd` lists them);
//! 5. boots each kernel (`-accel tcg -smp 2`), streams the console, and reads the
//!    results; fails when any test failed, the guest crashed or timed out
//!    (`KSIGHT_VM_TIMEOUT`, seconds per kernel, default 480).
//!
//! Work files go to `target/ksight-vm/`.

use anyhow::{Context, Result, bail, ensure};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The kernel series tested by default, as (label, image package regex, headers package
/// prefix).
const SERIES: [(&str, &str); 2] = [
    ("6.1", r"^linux-image-6\.1\.0-[0-9]+-amd64$"),
    ("6.12", r"^linux-image-6\.12\.[0-9]+\+deb12-amd64$"),
];

/// Entry point: `args` are what follows `cargo xtask vm`.
pub fn vm(args: &[String]) -> Result<()> {
    let started = Instant::now();
    ensure!(
        unsafe { super::libc_geteuid() } == 0,
        "the VM tests install packages and build against system headers: run them as root"
    );
    let cache = std::env::var_os("KSIGHT_VM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/ksight-vm"));
    let work = super::workspace().join("target/ksight-vm");
    std::fs::create_dir_all(cache.join("debs"))?;
    std::fs::create_dir_all(&work)?;

    // 1. Host tools; the nightly toolchain and bpf-linker for the eBPF object in ksight.
    super::setup(&[
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("cpio", "cpio"),
        ("xz", "xz-utils"),
        ("zstd", "zstd"),
        ("make", "make"),
    ])?;

    // 2. Kernels.
    let kernels = choose_kernels(args)?;
    eprintln!("xtask vm: kernels {}", kernels.join(", "));
    prune_cache(&cache, &kernels);

    // 4 (once). Userland for the guest.
    super::build_release_binaries()?;
    super::cargo(&["build", "--release", "-p", "ksight-vm-guest"])?;
    let busybox = busybox(&cache)?;
    let base = base_initramfs(&work, &busybox)?;
    eprintln!("xtask vm: userland ready after {:.0?}", started.elapsed());

    let mut outcomes = Vec::new();
    for ver in &kernels {
        let t = Instant::now();
        let outcome = prepare_kernel(&cache, &work, ver)
            .and_then(|k| boot(&work, ver, &k, &base))
            .with_context(|| format!("kernel {ver}"));
        outcomes.push((ver.clone(), t.elapsed(), outcome));
    }

    println!("\nxtask vm: results");
    let mut failed = false;
    for (ver, took, outcome) in &outcomes {
        match outcome {
            Ok(results) => {
                for line in results {
                    println!("  {ver:<22} {line}");
                }
                let bad = results.iter().filter(|l| l.contains(" FAIL")).count();
                let done = results.iter().any(|l| l.starts_with("DONE failed=0"));
                println!(
                    "  {ver:<22} {} in {took:.0?}",
                    if done && bad == 0 { "PASS" } else { "FAIL" }
                );
                failed |= !(done && bad == 0);
            }
            Err(e) => {
                println!("  {ver:<22} FAIL: {e:#}");
                failed = true;
            }
        }
    }
    println!("xtask vm: {:.0?} in all", started.elapsed());
    if failed {
        bail!("VM tests failed");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Packages whose name matches `regex` that apt knows.
fn apt_names(regex: &str) -> Result<Vec<String>> {
    let text = output(Command::new("apt-cache").args(["search", "--names-only", regex]))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').next())
        .map(str::to_string)
        .collect())
}

/// Sorts versions like `6.1.0-56-amd64` numerically, field by field.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse().ok())
        .collect()
}

fn choose_kernels(args: &[String]) -> Result<Vec<String>> {
    let env: Vec<String> = std::env::var("KSIGHT_VM_KERNELS")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let wanted: Vec<String> = if args.is_empty() { env } else { args.to_vec() };
    // Full versions are taken as they are.
    if !wanted.is_empty() && wanted.iter().all(|w| w.ends_with("-amd64")) {
        return Ok(wanted);
    }
    let mut images = apt_names(r"^linux-image-6\.")?;
    if images.is_empty() {
        super::run(Command::new("apt-get").args(["update", "-qq"]))?;
        images = apt_names(r"^linux-image-6\.")?;
    }
    let headers: BTreeSet<String> = apt_names(r"^linux-headers-6\.")?.into_iter().collect();
    let mut chosen = Vec::new();
    for (label, regex) in SERIES {
        if !wanted.is_empty() && !wanted.iter().any(|w| w == label) {
            continue;
        }
        let re_prefix = regex.trim_start_matches('^').trim_end_matches('$');
        let mut versions: Vec<String> = images
            .iter()
            .filter(|n| simple_match(re_prefix, n))
            .map(|n| n.trim_start_matches("linux-image-").to_string())
            .filter(|v| headers.contains(&format!("linux-headers-{v}")))
            .collect();
        versions.sort_by_key(|v| version_key(v));
        let v = versions.pop().with_context(|| {
            format!("apt knows no linux-image for Linux {label} with headers ({regex})")
        })?;
        chosen.push(v);
    }
    for w in &wanted {
        if w.ends_with("-amd64") {
            chosen.push(w.clone());
        }
    }
    ensure!(!chosen.is_empty(), "no kernel selected by {wanted:?}");
    Ok(chosen)
}

/// Just enough of a regex for SERIES: literal text, `\.` `\+`, and `[0-9]+`.
fn simple_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < p.len() {
        if p[i..].starts_with(b"[0-9]+") {
            let start = j;
            while j < t.len() && t[j].is_ascii_digit() {
                j += 1;
            }
            if j == start {
                return false;
            }
            i += 6;
        } else {
            let c = if p[i] == b'\\' {
                i += 1;
                p[i]
            } else {
                p[i]
            };
            if j >= t.len() || t[j] != c {
                return false;
            }
            i += 1;
            j += 1;
        }
    }
    j == t.len()
}

/// Drops cached kernels other than `keep` (Debian replaces its kernel packages every few
/// weeks; each costs 100-300 MB here).
fn prune_cache(cache: &Path, keep: &[String]) {
    let keep_dir = |name: &str| keep.iter().any(|k| k == name);
    let keep_deb = |name: &str| {
        keep.iter()
            .any(|k| name.starts_with(&format!("linux-image-{k}_")))
    };
    for entry in std::fs::read_dir(cache).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("-amd64") && entry.path().is_dir() && !keep_dir(&name) {
            eprintln!("xtask vm: dropping cached kernel {name}");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    for entry in std::fs::read_dir(cache.join("debs"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("linux-image-") && !keep_deb(&name) {
            eprintln!("xtask vm: dropping {name}");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The downloaded .deb of `package` in `dir` (downloading it the first time).
fn deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let find = || -> Result<Option<PathBuf>> {
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if name.starts_with(&format!("{package}_")) && name.ends_with(".deb") {
                return Ok(Some(p));
            }
        }
        Ok(None)
    };
    if let Some(p) = find()? {
        return Ok(p);
    }
    super::run(
        Command::new("apt-get")
            .args(["download", "-qq", package])
            .current_dir(dir),
    )?;
    find()?.with_context(|| {
        format!(
            "apt-get download {package} left no .deb in {}",
            dir.display()
        )
    })
}

/// busybox-static's binary, unpacked from its .deb (not installed: it would replace the
/// host's busybox).
fn busybox(cache: &Path) -> Result<PathBuf> {
    let bin = cache.join("busybox");
    if bin.exists() {
        return Ok(bin);
    }
    let deb = deb(&cache.join("debs"), "busybox-static")?;
    let tmp = cache.join("busybox-root");
    let _ = std::fs::remove_dir_all(&tmp);
    super::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&tmp))?;
    std::fs::copy(tmp.join("bin/busybox"), &bin)?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(bin)
}

struct Kernel {
    vmlinux: PathBuf,
    loop_ko: PathBuf,
    ksight_ko: PathBuf,
}

fn prepare_kernel(cache: &Path, work: &Path, ver: &str) -> Result<Kernel> {
    let headers = PathBuf::from(format!("/usr/src/linux-headers-{ver}"));
    if !headers.join("Makefile").exists() {
        super::run(
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "--no-install-recommends"])
                .arg(format!("linux-headers-{ver}"))
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
    }
    let dir = cache.join(ver);
    let vmlinux = dir.join("vmlinux");
    let loop_ko = dir.join("loop.ko");
    if !vmlinux.exists() || !loop_ko.exists() {
        let deb = deb(&cache.join("debs"), &format!("linux-image-{ver}"))?;
        let root = dir.join("root");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root)?;
        super::run(Command::new("dpkg").arg("-x").arg(&deb).arg(&root))?;
        let modules = root.join(format!("lib/modules/{ver}/kernel/drivers/block"));
        unpack_module(&modules, "loop", &loop_ko)?;
        extract_vmlinux(&root.join(format!("boot/vmlinuz-{ver}")), &vmlinux)?;
        std::fs::remove_dir_all(&root)?;
    }

    // The module, built against this kernel's headers in a copy of kmod-c.
    let build = work.join(ver).join("kmod");
    let _ = std::fs::remove_dir_all(&build);
    std::fs::create_dir_all(&build)?;
    for e in std::fs::read_dir(super::workspace().join("kmod-c"))? {
        let p = e?.path();
        let name = p
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name == "Kbuild" || name == "Makefile" || name.ends_with(".c") || name.ends_with(".h") {
            std::fs::copy(&p, build.join(&name))?;
        }
    }
    let t = Instant::now();
    let log = output(
        Command::new("make")
            .arg("-C")
            .arg(&headers)
            .arg(format!("M={}", build.display()))
            .arg("modules"),
    )
    .with_context(|| format!("building ksight.ko against {}", headers.display()))?;
    if log.contains("warning:") {
        eprintln!("{log}");
    }
    eprintln!("xtask vm: ksight.ko for {ver} built in {:.1?}", t.elapsed());
    Ok(Kernel {
        vmlinux,
        loop_ko,
        ksight_ko: build.join("ksight.ko"),
    })
}

/// Copies `<dir>/<name>.ko[.xz|.zst]` to `to`, decompressed (busybox insmod wants plain).
fn unpack_module(dir: &Path, name: &str, to: &Path) -> Result<()> {
    let plain = dir.join(format!("{name}.ko"));
    if plain.exists() {
        std::fs::copy(&plain, to)?;
        return Ok(());
    }
    for (ext, tool) in [("xz", "xz"), ("zst", "zstd")] {
        let packed = dir.join(format!("{name}.ko.{ext}"));
        if packed.exists() {
            let out = Command::new(tool).arg("-dc").arg(&packed).output()?;
            ensure!(
                out.status.success(),
                "{tool} -dc {} failed",
                packed.display()
            );
            std::fs::write(to, out.stdout)?;
            return Ok(());
        }
    }
    bail!("no {name}.ko in {}", dir.display())
}

/// Pulls the uncompressed ELF kernel out of a bzImage: finds the xz or zstd stream that
/// holds it (what the kernel's scripts/extract-vmlinux does).
fn extract_vmlinux(bzimage: &Path, to: &Path) -> Result<()> {
    let image = std::fs::read(bzimage).with_context(|| format!("reading {}", bzimage.display()))?;
    let formats: [(&[u8], &str, &[&str]); 2] = [
        (
            &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
            "xz",
            &["-dc", "--single-stream"],
        ),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd", &["-dc"]),
    ];
    for (magic, tool, args) in formats {
        let mut at = 0;
        while let Some(pos) = image[at..].windows(magic.len()).position(|w| w == magic) {
            let off = at + pos;
            at = off + 1;
            let mut child = Command::new(tool)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()?;
            let mut stdin = child.stdin.take().expect("piped");
            let data = image[off..].to_vec();
            let feeder = std::thread::spawn(move || {
                let _ = stdin.write_all(&data);
            });
            let out = child.wait_with_output()?;
            let _ = feeder.join();
            // Trailing bytes after the stream make zstd exit non-zero; the ELF is complete.
            if out.stdout.len() > 1 << 20 && out.stdout.starts_with(b"\x7fELF") {
                std::fs::write(to, &out.stdout)?;
                return Ok(());
            }
        }
    }
    bail!(
        "no xz or zstd compressed ELF kernel in {}",
        bzimage.display()
    )
}

/// Shared libraries `bin` needs, from `ldd`.
fn libraries(bin: &Path) -> Result<Vec<PathBuf>> {
    let text = output(Command::new("ldd").arg(bin))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let path = l.split("=>").nth(1).unwrap_or(l).trim();
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect())
}

/// Writes a newc cpio of everything under `dir` to `to`.
fn cpio(dir: &Path, to: &Path) -> Result<()> {
    let file = std::fs::File::create(to)?;
    let status = Command::new("sh")
        .args([
            "-c",
            "find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0",
        ])
        .current_dir(dir)
        .stdout(file)
        .status()?;
    ensure!(status.success(), "cpio of {} failed", dir.display());
    Ok(())
}

/// busybox, the binaries and their libraries, and /init: the same for every kernel.
fn base_initramfs(work: &Path, busybox: &Path) -> Result<PathBuf> {
    let root = work.join("base");
    let _ = std::fs::remove_dir_all(&root);
    for d in [
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "usr/local/bin",
        "lib/ksight",
        "etc/ksight-vm",
        "proc",
        "sys",
        "dev",
        "tmp",
    ] {
        std::fs::create_dir_all(root.join(d))?;
    }
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", root.join("bin/sh"))?;
    let ws = super::workspace();
    let init = root.join("init");
    std::fs::copy(ws.join("tests/vm/guest-init.sh"), &init)?;
    set_executable(&init)?;
    let bins = [
        ws.join("target/release/ksight"),
        ws.join("target/release/ksight-workload"),
        ws.join("target/release/kmod-vm"),
    ];
    let mut libs = BTreeSet::new();
    for bin in &bins {
        std::fs::copy(
            bin,
            root.join("usr/local/bin").join(bin.file_name().unwrap()),
        )
        .with_context(|| format!("copying {}", bin.display()))?;
        libs.extend(libraries(bin)?);
    }
    for lib in libs {
        let to = root.join(lib.strip_prefix("/")?);
        std::fs::create_dir_all(to.parent().unwrap())?;
        // Follow symlinks: the guest gets the file under the name the loader asks for.
        std::fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
    }
    let cpio_path = work.join("base.cpio");
    cpio(&root, &cpio_path)?;
    Ok(cpio_path)
}

fn set_executable(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mut perms = std::fs::metadata(path)?.permissions();
    perms.set_mode(0o755);
    std::fs::set_permissions(path, perms)?;
    Ok(())
}

/// Boots `ver` and returns the guest's result lines (without the "KSIGHT-VM " prefix).
fn boot(work: &Path, ver: &str, k: &Kernel, base: &Path) -> Result<Vec<String>> {
    let dir = work.join(ver);
    // The per-kernel part: module and loop driver, appended to the base archive.
    let extra = dir.join("extra");
    let _ = std::fs::remove_dir_all(&extra);
    std::fs::create_dir_all(extra.join("lib/ksight"))?;
    std::fs::copy(&k.ksight_ko, extra.join("lib/ksight/ksight.ko"))?;
    std::fs::copy(&k.loop_ko, extra.join("lib/ksight/loop.ko"))?;
    let extra_cpio = dir.join("extra.cpio");
    cpio(&extra, &extra_cpio)?;
    let initrd = dir.join("initrd.cpio");
    let mut bytes = std::fs::read(base)?;
    bytes.extend(std::fs::read(&extra_cpio)?);
    std::fs::write(&initrd, bytes)?;

    let results = dir.join("results.txt");
    let console = dir.join("console.log");
    let _ = std::fs::remove_file(&results);
    let timeout = std::env::var("KSIGHT_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(480));
    // One host thread runs both vCPUs by default: under multi-threaded TCG (qemu 7.2) a
    // vCPU can execute a stale int3 after the kernel finished patching a static key, and
    // 6.12 oopses ("Oops: int3" at a tracepoint site) when any tracer attaches and
    // detaches under load -- the eBPF backend alone does it too. KSIGHT_VM_TCG=multi
    // brings the parallel vCPUs back.
    let accel = match std::env::var("KSIGHT_VM_TCG").as_deref() {
        Ok("multi") => "tcg,thread=multi",
        _ => "tcg,thread=single",
    };
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-accel",
        accel,
        "-smp",
        "2",
        "-m",
        "1G",
        "-nographic",
        "-no-reboot",
        "-net",
        "none",
    ])
    .arg("-kernel")
    .arg(&k.vmlinux)
    .arg("-initrd")
    .arg(&initrd)
    .args(["-append", "console=ttyS0 quiet loglevel=1 panic=-1"])
    .args(["-serial", "mon:stdio", "-serial"])
    .arg(format!("file:{}", results.display()))
    .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit());
    eprintln!("xtask vm: booting {ver}: {cmd:?}");
    let started = Instant::now();
    let mut child = cmd.spawn().context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().expect("piped");
    let label = ver.to_string();
    let console_path = console.clone();
    let streamer = std::thread::spawn(move || {
        let mut log = std::fs::File::create(&console_path).ok();
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            let line = String::from_utf8_lossy(&line)
                .trim_end_matches('\r')
                .to_string();
            println!("[{label}] {line}");
            if let Some(f) = log.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = streamer.join();
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let lines: Vec<String> = text
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("KSIGHT-VM "))
        .map(str::to_string)
        .collect();
    let Some(status) = status else {
        bail!(
            "the guest did not finish within {timeout:?} (KSIGHT_VM_TIMEOUT); console in {}",
            console.display()
        );
    };
    eprintln!(
        "xtask vm: {ver} ran {:.1?}, qemu {status}",
        started.elapsed()
    );
    if !lines.iter().any(|l| l.starts_with("DONE ")) {
        bail!(
            "the guest stopped before reporting (qemu {status}: a kernel panic?); console in {}",
            console.display()
        );
    }
    Ok(lines)
}
