//! `cargo xtask package`: the `.deb` — the release binary, the systemd unit, the default
//! configuration and the module's DKMS source — built with `dpkg-deb`.
//!
//! Layout of the package:
//!   /usr/bin/ksight
//!   /lib/systemd/system/ksight.service          packaging/systemd/ksight.service
//!   /usr/share/ksight/ksight.toml               packaging/ksight.toml: the default, which
//!                                               `ksight install` writes to /etc/ksight/
//!                                               with its decision (not a dpkg conffile:
//!                                               maintainer scripts may not edit those)
//!   /usr/src/ksight-<module version>/           kmod-c/ sources + packaging/dkms/dkms.conf
//!   /usr/share/doc/ksight/                      README.md, packaging notes
//!   DEBIAN/{control,postinst,prerm,postrm}      packaging/deb/
//! The post-install step runs `ksight install --auto`.

use super::{cargo, run, setup, workspace};
use anyhow::{Context, Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

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

fn dir_size_kib(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => stack.push(entry.path()),
                Ok(m) => total += m.len().div_ceil(1024),
                Err(_) => {}
            }
        }
    }
    total
}

/// Builds the package; returns its path.
pub fn package() -> Result<PathBuf> {
    setup(&[("dpkg-deb", "dpkg")])?;
    cargo(&["build", "--release", "-p", "ksight"])?;
    let ws = workspace();
    let version = env!("CARGO_PKG_VERSION");
    let kmod = ws.join("kmod-c");
    let dkms_version = module_version(&kmod)?;
    let arch = String::from_utf8(
        Command::new("dpkg")
            .arg("--print-architecture")
            .output()
            .context("dpkg --print-architecture")?
            .stdout,
    )?
    .trim()
    .to_string();
    let name = format!("ksight_{version}_{arch}");
    let out_dir = ws.join("target/package");
    let stage = out_dir.join(&name);
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;

    copy(
        &ws.join("target/release/ksight"),
        &stage.join("usr/bin/ksight"),
        0o755,
    )?;
    let strip = Command::new("strip")
        .arg(stage.join("usr/bin/ksight"))
        .status();
    if !strip.is_ok_and(|s| s.success()) {
        eprintln!("xtask: strip failed or missing; packaging the unstripped binary");
    }
    copy(
        &ws.join("packaging/systemd/ksight.service"),
        &stage.join("lib/systemd/system/ksight.service"),
        0o644,
    )?;
    copy(
        &ws.join("packaging/ksight.toml"),
        &stage.join("usr/share/ksight/ksight.toml"),
        0o644,
    )?;

    // The module's DKMS source tree.
    let src = stage.join(format!("usr/src/ksight-{dkms_version}"));
    let mut sources = 0;
    for entry in std::fs::read_dir(&kmod).with_context(|| format!("reading {}", kmod.display()))? {
        let path = entry?.path();
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let wanted =
            file == "Kbuild" || file == "Makefile" || file.ends_with(".c") || file.ends_with(".h");
        if path.is_file() && wanted {
            copy(&path, &src.join(&file), 0o644)?;
            sources += 1;
        }
    }
    if sources == 0 {
        bail!("no module sources in {}", kmod.display());
    }
    let dkms_conf = std::fs::read_to_string(ws.join("packaging/dkms/dkms.conf"))
        .context("reading packaging/dkms/dkms.conf")?;
    write(
        &src.join("dkms.conf"),
        &dkms_conf.replace("@VERSION@", &dkms_version),
        0o644,
    )?;

    copy(
        &ws.join("README.md"),
        &stage.join("usr/share/doc/ksight/README.md"),
        0o644,
    )?;
    write(
        &stage.join("usr/share/doc/ksight/copyright"),
        "ksight: MIT OR Apache-2.0 (user space), GPL-2.0 OR MIT (kernel module).\n",
        0o644,
    )?;

    // Control files.
    let debian = stage.join("DEBIAN");
    let fill = |text: &str| {
        text.replace("@VERSION@", version)
            .replace("@DKMS_VERSION@", &dkms_version)
            .replace("@ARCH@", &arch)
    };
    let installed = dir_size_kib(&stage);
    let control = fill(&std::fs::read_to_string(
        ws.join("packaging/deb/control.in"),
    )?)
    .replace("@INSTALLED_SIZE@", &installed.to_string());
    write(&debian.join("control"), &control, 0o644)?;
    for script in ["postinst", "prerm", "postrm"] {
        let text = fill(&std::fs::read_to_string(
            ws.join("packaging/deb").join(script),
        )?);
        write(&debian.join(script), &text, 0o755)?;
    }

    let deb = out_dir.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group"])
        .arg(&stage)
        .arg(&deb))?;
    run(Command::new("dpkg-deb").arg("--info").arg(&deb))?;
    println!("{}", deb.display());
    Ok(deb)
}
