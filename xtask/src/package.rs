//! `cargo xtask package`: the `.deb`, made by cargo-deb from `[package.metadata.deb]` in
//! cli/Cargo.toml — the release binary, the systemd unit, the default configuration and the
//! module's DKMS source.
//!
//! Layout of the package:
//!   /usr/bin/ksight
//!   /lib/systemd/system/ksight.service          packaging/systemd/ksight.service
//!   /usr/share/ksight/ksight.toml               packaging/ksight.toml: the default, which
//!                                               `ksight install` writes to /etc/ksight/
//!                                               with its decision (not a dpkg conffile:
//!                                               maintainer scripts may not edit those)
//!   /usr/src/ksight-<module version>/           kmod-c/ sources + packaging/dkms/dkms.conf
//!   /usr/share/doc/ksight/                      README.md, copyright
//!   DEBIAN/{control,md5sums,postinst,prerm,postrm}
//! The maintainer scripts (packaging/deb/) and dkms.conf name the module's version: they are
//! filled into target/package/generated/ before cargo-deb runs. The post-install step runs
//! `ksight install --auto`.

use super::{cargo, cargo_bin, have, run, setup, workspace};
use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The cargo-deb that reads cli/Cargo.toml's metadata; installed on first use.
const CARGO_DEB_VERSION: &str = "3.8.0";

/// The module's version, as DKMS knows it: `MODULE_VERSION("…")` in kmod-c/ks_main.c.
fn module_version(kmod: &Path) -> Result<String> {
    let main = kmod.join("ks_main.c");
    let text =
        std::fs::read_to_string(&main).with_context(|| format!("reading {}", main.display()))?;
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("MODULE_VERSION(\"")?
                .strip_suffix("\");")
                .map(str::to_string)
        })
        .with_context(|| format!("no MODULE_VERSION(\"…\"); in {}", main.display()))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn write(to: &Path, text: &str, mode: u32) -> Result<()> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// cargo-deb at [`CARGO_DEB_VERSION`], installed from crates.io when missing or another
/// version (about 2 minutes on two cores, cold).
fn ensure_cargo_deb() -> Result<()> {
    let installed = [cargo_bin().join("cargo-deb"), PathBuf::from("cargo-deb")]
        .iter()
        .filter_map(|bin| Command::new(bin).arg("--version").output().ok())
        .any(|out| {
            String::from_utf8_lossy(&out.stdout).trim() == format!("cargo-deb {CARGO_DEB_VERSION}")
        });
    if !installed {
        cargo(&[
            "install",
            "cargo-deb",
            "--locked",
            "--version",
            CARGO_DEB_VERSION,
        ])?;
    }
    if !have("cargo-deb") {
        // `cargo deb` finds subcommands on PATH.
        let path = std::env::var("PATH").unwrap_or_default();
        // SAFETY: single-threaded at this point.
        unsafe { std::env::set_var("PATH", format!("{}:{path}", cargo_bin().display())) };
    }
    Ok(())
}

/// Builds the package; returns its path.
pub fn package() -> Result<PathBuf> {
    setup(&[("dpkg-deb", "dpkg")])?;
    ensure_cargo_deb()?;
    let ws = workspace();
    let version = env!("CARGO_PKG_VERSION");
    let kmod = ws.join("kmod-c");
    let dkms_version = module_version(&kmod)?;
    let metadata = std::fs::read_to_string(ws.join("cli/Cargo.toml"))?;
    let dkms_dir = format!("\"usr/src/ksight-{dkms_version}/\"");
    if !metadata.contains(&dkms_dir) {
        bail!(
            "kmod-c/ks_main.c says MODULE_VERSION(\"{dkms_version}\") but cli/Cargo.toml's \
             [package.metadata.deb] assets do not install the sources to {dkms_dir}"
        );
    }
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .context("dpkg --print-architecture")?
            .stdout,
    )?
    .trim()
    .to_string();

    // What names the module's version, filled in where the metadata expects it.
    let out_dir = ws.join("target/package");
    let generated = out_dir.join("generated");
    let _ = std::fs::remove_dir_all(&generated);
    let dkms_conf = std::fs::read_to_string(ws.join("packaging/dkms/dkms.conf"))
        .context("reading packaging/dkms/dkms.conf")?;
    write(
        &generated.join("dkms.conf"),
        &dkms_conf.replace("@VERSION@", &dkms_version),
        0o644,
    )?;
    for script in ["postinst", "prerm", "postrm"] {
        let path = ws.join("packaging/deb").join(script);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .replace("@DKMS_VERSION@", &dkms_version);
        write(&generated.join("scripts").join(script), &text, 0o755)?;
    }

    cargo(&["build", "--release", "-p", "ksight"])?;
    let deb = out_dir.join(format!("ksight_{version}_{arch}.deb"));
    cargo(&[
        "deb",
        "--package",
        "ksight",
        "--no-build",
        "--strip",
        "--output",
        deb.to_str().context("non-UTF-8 workspace path")?,
    ])?;
    run(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    println!("{}", deb.display());
    Ok(deb)
}

/// `cargo xtask package-vm`: the package installed for real, the way a fleet gets it — a
/// Debian 12 root file system (debootstrap, cached) with systemd as init boots under
/// qemu; a oneshot unit installs the `.deb` (its post-install runs
/// `ksight install --auto`), checks that `ksight.service` is enabled and active with the
/// backend's capabilities only, that `/metrics` and the socket answer, that reload and stop
/// work, then purges the package. Results come back on the second serial port.
///
/// Not part of `cargo xtask test` (a cold run downloads ~250 MB and boots a whole system);
/// run it for every change to `packaging/`. `KSIGHT_INSTALL_VM_CACHE` (default
/// `/var/cache/ksight-install-vm`) keeps the root file system; `KSIGHT_INSTALL_VM_ACCEL`
/// (`tcg`, or `kvm`) and `KSIGHT_INSTALL_VM_TIMEOUT` (seconds, 900) tune the boot.
pub fn install_vm() -> Result<()> {
    super::apt_install(&[
        ("debootstrap", "debootstrap"),
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("mkfs.ext4", "e2fsprogs"),
    ])?;
    let deb = package()?;
    let ws = workspace();
    let cache = std::env::var_os("KSIGHT_INSTALL_VM_CACHE").map_or_else(
        || PathBuf::from("/var/cache/ksight-install-vm"),
        PathBuf::from,
    );
    let rootfs = cache.join("rootfs-bookworm");
    if !cache.join("rootfs-bookworm.ok").exists() {
        let tmp = cache.join("rootfs-bookworm.tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&cache)?;
        run(Command::new("debootstrap")
            .args([
                "--variant=minbase",
                "--include=systemd,systemd-sysv,udev,kmod,linux-image-amd64,initramfs-tools,curl,procps",
                "bookworm",
            ])
            .arg(&tmp)
            .arg("http://deb.debian.org/debian"))?;
        let _ = std::fs::remove_dir_all(&rootfs);
        std::fs::rename(&tmp, &rootfs)?;
        std::fs::write(cache.join("rootfs-bookworm.ok"), "")?;
    }
    // The guest's configuration and the test; rewritten every run.
    write(
        &rootfs.join("etc/fstab"),
        "/dev/vda / ext4 rw,errors=remount-ro 0 1\n",
        0o644,
    )?;
    write(&rootfs.join("etc/hostname"), "ksight-install-test\n", 0o644)?;
    let test = ws.join("packaging/deb/vm-test");
    copy(
        &test.join("ksight-install-test"),
        &rootfs.join("usr/local/sbin/ksight-install-test"),
        0o755,
    )?;
    copy(
        &test.join("ksight-install-test.service"),
        &rootfs.join("etc/systemd/system/ksight-install-test.service"),
        0o644,
    )?;
    let wants = rootfs.join("etc/systemd/system/default.target.wants");
    std::fs::create_dir_all(&wants)?;
    let link = wants.join("ksight-install-test.service");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink("/etc/systemd/system/ksight-install-test.service", &link)?;
    copy(&deb, &rootfs.join("root/ksight.deb"), 0o644)?;

    let newest = |prefix: &str| -> Result<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(rootfs.join("boot"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .collect();
        found.sort();
        found
            .pop()
            .with_context(|| format!("no /boot/{prefix}* in {}", rootfs.display()))
    };
    let (kernel, initrd) = (newest("vmlinuz-")?, newest("initrd.img-")?);

    let work = ws.join("target/ksight-install-vm");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let image = work.join("root.img");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(&rootfs)
        .arg(&image)
        .arg("3G"))?;
    let console = work.join("console.log");
    let results = work.join("results.txt");
    // TCG by default: nested KVM on the build machines fails (MSR 0x10a with `-cpu
    // host`, a silent hang without it).
    let accel = std::env::var("KSIGHT_INSTALL_VM_ACCEL").unwrap_or_else(|_| "tcg".into());
    let timeout: u64 = std::env::var("KSIGHT_INSTALL_VM_TIMEOUT")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(900);
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-m",
        "1536",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nic",
        "none",
    ])
    .args(match accel.as_str() {
        "kvm" => vec!["-accel", "kvm", "-cpu", "host"],
        // One host thread: see tests/vm/README.md on multi-threaded TCG.
        _ => vec!["-accel", "tcg,thread=single"],
    })
    .arg("-kernel")
    .arg(&kernel)
    .arg("-initrd")
    .arg(&initrd)
    .args([
        "-append",
        "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0",
    ])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", image.display()))
    .arg("-serial")
    .arg(format!("file:{}", console.display()))
    .arg("-serial")
    .arg(format!("file:{}", results.display()))
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null());
    eprintln!(
        "xtask package-vm: booting {} ({accel}); console in {}",
        kernel.display(),
        console.display()
    );
    let started = std::time::Instant::now();
    let mut child = qemu.spawn().context("starting qemu")?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if started.elapsed().as_secs() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let text = std::fs::read_to_string(&results).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("KSIGHT-INSTALL "))
        .collect();
    for line in &lines {
        println!("{line}");
    }
    let failed: Vec<&&str> = lines.iter().filter(|l| l.contains(" FAIL")).collect();
    let done = lines.contains(&"KSIGHT-INSTALL DONE");
    println!(
        "xtask package-vm: {} checks, {} failed, {:.0} s",
        lines
            .iter()
            .filter(|l| l.contains(" PASS") || l.contains(" FAIL"))
            .count(),
        failed.len(),
        started.elapsed().as_secs_f64()
    );
    if status.is_none() {
        bail!(
            "the guest did not finish within {timeout} s; see {}",
            console.display()
        );
    }
    if !done || !failed.is_empty() {
        for line in text.lines().filter(|l| l.starts_with("KSIGHT-JOURNAL ")) {
            println!("{line}");
        }
        bail!(
            "the install test failed; see {} and {}",
            results.display(),
            console.display()
        );
    }
    Ok(())
}
