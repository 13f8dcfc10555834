//! Builds `programs/` for the BPF target with aya-build and leaves the object in OUT_DIR.
//!
//! Without a BPF toolchain (bpf-linker, nightly with rust-src) the build does not fail:
//! it warns, writes an empty object and sets `cfg(ksight_no_ebpf)`, and the loader then
//! refuses to start with a message saying what to install. `AYA_BUILD_SKIP=1` does the
//! same on purpose (e.g. `cargo check` on a machine without the toolchain).

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

const PROGRAMS_PACKAGE: &str = "ksight-ebpf-programs";
/// aya-build copies each binary to `OUT_DIR/<bin name>`; the loader embeds that path.
const OBJECT_NAME: &str = "ksight-ebpf-programs";

fn main() -> anyhow::Result<()> {
    println!("cargo::rustc-check-cfg=cfg(ksight_no_ebpf)");
    println!("cargo::rerun-if-env-changed=AYA_BUILD_SKIP");
    println!("cargo::rerun-if-env-changed=PATH");
    // The programs embed event-abi; aya-build only watches the programs directory.
    println!("cargo::rerun-if-changed=../event-abi/src");

    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR")?);
    let object = out_dir.join(OBJECT_NAME);

    if let Some(reason) = skip_reason()? {
        println!("cargo::warning=building ksight without eBPF programs: {reason}");
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
        println!("cargo::rustc-cfg=ksight_no_ebpf");
        println!("cargo::rustc-env=KSIGHT_EBPF_SKIPPED={reason}");
        return Ok(());
    }

    let programs_dir = manifest_dir.join("programs");
    let programs_dir = programs_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", programs_dir.display()))?;
    aya_build::build_ebpf(
        [Package {
            name: PROGRAMS_PACKAGE,
            root_dir: programs_dir,
            ..Default::default()
        }],
        Toolchain::default(),
    )?;
    if !object.is_file() {
        return Err(anyhow!("aya-build did not produce {}", object.display()));
    }
    Ok(())
}

/// Why the eBPF programs cannot be built here, if they cannot.
fn skip_reason() -> anyhow::Result<Option<String>> {
    if let Some(v) = env::var_os("AYA_BUILD_SKIP")
        && (v == "1" || v.eq_ignore_ascii_case("true"))
    {
        return Ok(Some("AYA_BUILD_SKIP is set".into()));
    }

    // bpf-linker on PATH, or in cargo's bin directory (not always on PATH in CI shells).
    let path = env::var_os("PATH").unwrap_or_default();
    let on_path = env::split_paths(&path).any(|dir| is_executable(&dir.join("bpf-linker")));
    if !on_path {
        let cargo_bin = env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .map(|home| home.join("bin"));
        match cargo_bin {
            Some(bin) if is_executable(&bin.join("bpf-linker")) => {
                // Let the nested cargo that aya-build runs find it too.
                let mut dirs: Vec<PathBuf> = vec![bin];
                dirs.extend(env::split_paths(&path));
                let joined = env::join_paths(dirs).context("joining PATH")?;
                // SAFETY: build scripts are single-threaded at this point.
                unsafe { env::set_var("PATH", joined) };
            }
            _ => {
                return Ok(Some(
                    "bpf-linker not found on PATH or in ~/.cargo/bin".into(),
                ));
            }
        }
    }

    // aya-build compiles with `rustup run nightly` and `-Z build-std=core`, which needs
    // the nightly toolchain's rust-src component. Without rustup it uses the current
    // toolchain as is, and we let it try.
    if let Ok(out) = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
    {
        if !out.status.success() {
            return Ok(Some(
                "no nightly toolchain (rustup toolchain install nightly)".into(),
            ));
        }
        let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let core = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
        if !core.is_dir() {
            return Ok(Some(
                "nightly lacks rust-src (rustup component add rust-src --toolchain nightly)".into(),
            ));
        }
    }
    Ok(None)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
