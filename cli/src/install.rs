//! `ksight install`: prepares this host for the agent; the package's post-install step runs
//! `ksight install --auto`.
//!
//! 1. Probes the kernel with the agent's own backend decision (`agent::choose`): eBPF when
//!    `bpf()` is allowed and the programs load and attach (they are loaded once and
//!    unloaded); otherwise — or when eBPF would run without BTF — the module: already
//!    loaded, installed for this kernel (`modprobe`), or built and installed through DKMS
//!    from the packaged source (`/usr/src/ksight-<version>`) and then loaded.
//! 2. Writes the decision into the configuration (`backend = "…"`, comments kept), a
//!    systemd drop-in giving the service only that backend's capabilities, and for the
//!    module `/etc/modules-load.d/ksight.conf` so it loads at boot.
//! 3. Enables and (re)starts `ksight.service` when systemd runs this host.
//!
//! `--dry-run` prints the same plan and changes nothing.

use crate::agent::choose::{self, Backend, EbpfFacts, Probe};
use crate::agent::config;
use crate::agent::probe::HostProbe;
use crate::args::{BackendChoice, TransportChoice};
use anyhow::{Context, Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const UNIT: &str = "ksight.service";
pub const DROPIN: &str = "/etc/systemd/system/ksight.service.d/backend.conf";
pub const MODULES_LOAD: &str = "/etc/modules-load.d/ksight.conf";

#[derive(clap::Args, Debug, Clone)]
pub struct InstallArgs {
    /// Choose the backend by probing this host (what the package's post-install runs).
    #[arg(long, conflicts_with = "backend")]
    pub auto: bool,
    /// Use this backend instead of probing for one.
    #[arg(long, value_enum)]
    pub backend: Option<BackendChoice>,
    /// Print the plan and change nothing. (eBPF support is tested by loading the programs
    /// once; they are unloaded at once.)
    #[arg(long)]
    pub dry_run: bool,
    /// The configuration to write the decision into.
    #[arg(long, value_name = "PATH", default_value = config::DEFAULT_PATH)]
    pub config: PathBuf,
    /// Write the files but neither enable nor start the service.
    #[arg(long)]
    pub no_start: bool,
    /// Write every file under this directory instead of / and run no command (tests,
    /// image builds).
    #[arg(long, hide = true, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// One change to the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Run(Vec<String>),
    Write { path: PathBuf, contents: String },
    Remove(PathBuf),
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::Run(argv) => write!(f, "run `{}`", argv.join(" ")),
            Step::Write { path, .. } => write!(f, "write {}", path.display()),
            Step::Remove(path) => write!(f, "remove {}", path.display()),
        }
    }
}

/// Steps, carried out as they are planned unless this is a dry run.
struct Plan {
    dry_run: bool,
    root: PathBuf,
    steps: Vec<Step>,
}

impl Plan {
    fn under_root(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// Commands only run on the real root.
    fn runs_commands(&self) -> bool {
        !self.dry_run && self.root == Path::new("/")
    }

    fn act(&mut self, step: Step, why: &str) -> Result<()> {
        let verb = if self.dry_run {
            "would"
        } else if matches!(step, Step::Run(_)) && !self.runs_commands() {
            "skipped (--root)"
        } else {
            "done:"
        };
        println!("  {verb} {step} — {why}");
        if !self.dry_run {
            match &step {
                Step::Run(argv) if self.runs_commands() => run_command(argv)?,
                Step::Run(_) => {}
                Step::Write { path, contents } => write_file(&self.under_root(path), contents)?,
                Step::Remove(path) => {
                    let path = self.under_root(path);
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing {}", path.display()))?;
                }
            }
        }
        self.steps.push(step);
        Ok(())
    }
}

fn run_command(argv: &[String]) -> Result<()> {
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .output()
        .with_context(|| format!("cannot run {}", argv[0]))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_file(path: &Path, contents: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("ksight-new");
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn have(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The kernel knows CAP_BPF and CAP_PERFMON (Linux 5.8+).
fn kernel_has_cap_bpf() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .is_some_and(|last| last >= 39)
}

/// The packaged DKMS source: `/usr/src/ksight-<version>/dkms.conf` → version.
fn dkms_source(root: &Path) -> Option<String> {
    let mut versions: Vec<String> = std::fs::read_dir(root.join("usr/src"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let version = name.strip_prefix("ksight-")?.to_string();
            e.path().join("dkms.conf").is_file().then_some(version)
        })
        .collect();
    versions.sort();
    versions.pop()
}

/// The probes of `choose`, where making the module available means installing it.
struct InstallProbe<'a> {
    host: HostProbe,
    plan: &'a mut Plan,
    release: String,
}

impl InstallProbe<'_> {
    fn module_available(&mut self) -> Result<()> {
        let installed = Command::new("modinfo")
            .args(["-k", &self.release, "ksight"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            let version = dkms_source(&self.plan.root).ok_or_else(|| {
                anyhow!(
                    "no ksight module for {} and no DKMS source in /usr/src/ksight-*",
                    self.release
                )
            })?;
            let mut missing = Vec::new();
            if !have("dkms") {
                missing.push("dkms (apt install dkms)".to_string());
            }
            if !Path::new("/lib/modules")
                .join(&self.release)
                .join("build")
                .exists()
            {
                missing.push(format!(
                    "the kernel headers (apt install linux-headers-{})",
                    self.release
                ));
            }
            if !missing.is_empty() {
                bail!("building the module needs {}", missing.join(" and "));
            }
            let registered = Command::new("dkms")
                .args(["status", "-m", "ksight", "-v", &version])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty());
            let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            if !registered {
                self.plan.act(
                    Step::Run(args(&["dkms", "add", "-m", "ksight", "-v", &version])),
                    "register the module's source with DKMS",
                )?;
            }
            self.plan.act(
                Step::Run(args(&[
                    "dkms",
                    "install",
                    "-m",
                    "ksight",
                    "-v",
                    &version,
                    "-k",
                    &self.release,
                ])),
                "build and install the module for this kernel (DKMS rebuilds it for new kernels)",
            )?;
        }
        self.plan.act(
            Step::Run(vec!["modprobe".into(), "ksight".into()]),
            "load the module",
        )
    }
}

impl Probe for InstallProbe<'_> {
    type Source = ();

    fn ebpf_facts(&mut self) -> EbpfFacts {
        self.host.ebpf_facts()
    }

    fn open_ebpf(&mut self, transport: TransportChoice) -> Result<(), String> {
        // Loaded and, on drop, unloaded: the proof that they load and attach here.
        self.host.open_ebpf(transport).map(drop)
    }

    fn kmod_loaded(&mut self) -> bool {
        Path::new(ksight_backend_kmod::DEVICE).exists()
    }

    fn modprobe(&mut self) -> Result<(), String> {
        self.module_available().map_err(|e| format!("{e:#}"))
    }

    fn open_kmod(&mut self) -> Result<(), String> {
        // The module serves one reader: a running agent may hold it. Loaded is enough.
        Ok(())
    }
}

/// The configuration with `backend` set, comments and layout kept; refused if the result
/// would not be a valid configuration.
pub fn config_with_backend(existing: &str, backend: &str, path: &Path) -> Result<String> {
    let mut doc: toml_edit::DocumentMut = existing
        .parse()
        .with_context(|| format!("{} is not valid TOML; fix it first", path.display()))?;
    doc["backend"] = toml_edit::value(backend);
    let text = doc.to_string();
    config::parse(&text, path).map_err(|e| anyhow!("{e}; fix it first"))?;
    Ok(text)
}

/// The drop-in that narrows the unit to what `backend` needs.
/// What the kernel asks of a process that loads and attaches the eBPF programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EbpfPrivileges {
    /// The kernel knows CAP_BPF and CAP_PERFMON (Linux 5.8+).
    pub cap_bpf: bool,
    /// `kernel.perf_event_paranoid` is 3 or more: Debian's and Ubuntu's kernels then let
    /// only CAP_SYS_ADMIN open perf events (how tracepoints are attached), CAP_PERFMON or not.
    pub perf_restricted: bool,
}

impl EbpfPrivileges {
    pub fn of_this_kernel() -> Self {
        Self {
            cap_bpf: kernel_has_cap_bpf(),
            perf_restricted: std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .is_some_and(|p| p >= 3),
        }
    }
}

/// The drop-in that narrows the unit to what `backend` needs on this kernel.
pub fn dropin(backend: Backend, ebpf: EbpfPrivileges) -> String {
    let head =
        "# Written by `ksight install`: the capabilities of the backend it chose.\n[Service]\n";
    match (backend, ebpf.cap_bpf, ebpf.perf_restricted) {
        (Backend::Ebpf, true, false) => format!(
            "{head}# eBPF on Linux 5.8+: load programs and maps (CAP_BPF), attach to tracepoints\n\
             # and read kernel memory from them (CAP_PERFMON).\n\
             CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_BPF CAP_PERFMON\n"
        ),
        (Backend::Ebpf, true, true) => format!(
            "{head}# eBPF on Linux 5.8+: CAP_BPF and CAP_PERFMON; and kernel.perf_event_paranoid is 3\n\
             # here, with which Debian's and Ubuntu's kernels let only CAP_SYS_ADMIN open the perf\n\
             # events tracepoints are attached through.\n\
             CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN\n"
        ),
        (Backend::Ebpf, false, _) => format!(
            "{head}# eBPF before Linux 5.8: CAP_SYS_ADMIN is what bpf() and perf_event_open() check.\n\
             CapabilityBoundingSet=\nCapabilityBoundingSet=CAP_SYS_ADMIN\n"
        ),
        (Backend::Kmod, ..) => format!(
            "{head}# The kernel module: /dev/ksight is root-owned (0600); no capability, no bpf().\n\
             CapabilityBoundingSet=\nSystemCallFilter=\nSystemCallFilter=@system-service\n\
             DeviceAllow=/dev/ksight rw\n"
        ),
    }
}

pub fn run(args: &InstallArgs) -> Result<u8> {
    let wanted = match (args.auto, args.backend) {
        (_, Some(b)) => b,
        (true, None) => BackendChoice::Auto,
        (false, None) if args.dry_run => BackendChoice::Auto,
        (false, None) => {
            bail!("say --auto to choose the backend by probing, or --backend ebpf|kmod")
        }
    };
    let mut plan = Plan {
        dry_run: args.dry_run,
        root: args.root.clone(),
        steps: Vec::new(),
    };
    let release = kernel_release();
    println!("ksight install: kernel {release}");
    if args.dry_run {
        println!("dry run: nothing is changed; the plan:");
    }

    let mut probe = InstallProbe {
        host: HostProbe::default(),
        plan: &mut plan,
        release: release.clone(),
    };
    let chosen =
        choose::choose(wanted, TransportChoice::Auto, &mut probe).map_err(|e| anyhow!("{e}"))?;
    println!("  backend {}: {}", chosen.backend.name(), chosen.reason);
    for note in &chosen.notes {
        println!("  note: {note}");
    }

    // The configuration.
    let config_real = plan.under_root(&args.config);
    let existing = match std::fs::read_to_string(&config_real) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", config_real.display())),
    };
    let text = config_with_backend(
        existing.as_deref().unwrap_or(config::DEFAULT_TOML),
        chosen.backend.name(),
        &args.config,
    )?;
    if existing.as_deref() != Some(text.as_str()) {
        plan.act(
            Step::Write {
                path: args.config.clone(),
                contents: text,
            },
            &format!("backend = \"{}\"", chosen.backend.name()),
        )?;
    } else {
        println!(
            "  {} already says backend = \"{}\"",
            args.config.display(),
            chosen.backend.name()
        );
    }

    // Boot-time module loading, and the service's capabilities.
    let modules_load = Path::new(MODULES_LOAD);
    match chosen.backend {
        Backend::Kmod => plan.act(
            Step::Write {
                path: modules_load.to_path_buf(),
                contents: "# Written by `ksight install`: the agent's backend.\nksight\n".into(),
            },
            "load the module at boot",
        )?,
        Backend::Ebpf if plan.under_root(modules_load).exists() => plan.act(
            Step::Remove(modules_load.to_path_buf()),
            "the module is no longer the backend",
        )?,
        Backend::Ebpf => {}
    }
    let dropin_text = dropin(chosen.backend, EbpfPrivileges::of_this_kernel());
    let dropin_path = Path::new(DROPIN);
    if std::fs::read_to_string(plan.under_root(dropin_path))
        .ok()
        .as_deref()
        != Some(dropin_text.as_str())
    {
        plan.act(
            Step::Write {
                path: dropin_path.to_path_buf(),
                contents: dropin_text,
            },
            "give the service only this backend's capabilities",
        )?;
    }

    // The service.
    let systemd = Path::new("/run/systemd/system").exists();
    if args.no_start {
        println!("  not enabling or starting {UNIT} (--no-start)");
    } else if !systemd {
        println!(
            "  systemd is not running here: start the agent with `ksight agent --config {}`",
            args.config.display()
        );
    } else {
        for (argv, why) in [
            (vec!["systemctl", "daemon-reload"], "read the drop-in"),
            (vec!["systemctl", "enable", UNIT], "start the agent at boot"),
            (
                vec!["systemctl", "restart", UNIT],
                "start the agent with this configuration",
            ),
        ] {
            plan.act(Step::Run(argv.into_iter().map(String::from).collect()), why)?;
        }
    }
    if args.dry_run {
        println!(
            "dry run: {} step(s) planned, nothing changed",
            plan.steps.len()
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decision_goes_into_the_configuration_keeping_comments() {
        let path = Path::new("/etc/ksight/ksight.toml");
        let out = config_with_backend(config::DEFAULT_TOML, "kmod", path).unwrap();
        assert!(out.contains("backend = \"kmod\""), "{out}");
        // Everything else is untouched, comments included.
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.starts_with("backend"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&out), strip(config::DEFAULT_TOML));
        assert_eq!(
            config::parse(&out, path).unwrap().backend,
            BackendChoice::Kmod
        );
        // A file without the key gets it.
        let out = config_with_backend("[prometheus]\nlisten = \"127.0.0.1:9999\"\n", "ebpf", path)
            .unwrap();
        let c = config::parse(&out, path).unwrap();
        assert_eq!(c.backend, BackendChoice::Ebpf);
        assert_eq!(c.prometheus.listen.0.port(), 9999);
        // An invalid configuration is not rewritten.
        let err = config_with_backend("bogus = 1\n", "ebpf", path).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err:#}");
        assert!(config_with_backend("[x\n", "ebpf", path).is_err());
    }

    #[test]
    fn each_backend_gets_only_its_capabilities() {
        let modern = EbpfPrivileges {
            cap_bpf: true,
            perf_restricted: false,
        };
        let ebpf = dropin(Backend::Ebpf, modern);
        assert!(ebpf.contains("CapabilityBoundingSet=CAP_BPF CAP_PERFMON\n"));
        assert!(!ebpf.contains("SYS_ADMIN"));
        let old = EbpfPrivileges {
            cap_bpf: false,
            perf_restricted: false,
        };
        assert!(dropin(Backend::Ebpf, old).contains("CapabilityBoundingSet=CAP_SYS_ADMIN\n"));
        let debian = EbpfPrivileges {
            cap_bpf: true,
            perf_restricted: true,
        };
        assert!(
            dropin(Backend::Ebpf, debian)
                .contains("CapabilityBoundingSet=CAP_BPF CAP_PERFMON CAP_SYS_ADMIN\n")
        );
        let kmod = dropin(Backend::Kmod, modern);
        assert!(kmod.contains("CapabilityBoundingSet=\n") && !kmod.contains("CAP_"));
        assert!(kmod.contains("DeviceAllow=/dev/ksight rw"));
        assert!(
            !kmod
                .lines()
                .any(|l| l.starts_with("SystemCallFilter") && l.contains("bpf"))
        );
    }

    #[test]
    fn dkms_sources_are_found_by_version() {
        let root = std::env::temp_dir().join(format!("ksight-dkms-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        assert_eq!(dkms_source(&root), None);
        std::fs::create_dir_all(root.join("usr/src/ksight-0.1.0")).unwrap();
        std::fs::create_dir_all(root.join("usr/src/other-1.0")).unwrap();
        assert_eq!(dkms_source(&root), None, "no dkms.conf yet");
        std::fs::write(root.join("usr/src/ksight-0.1.0/dkms.conf"), "").unwrap();
        assert_eq!(dkms_source(&root).as_deref(), Some("0.1.0"));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
