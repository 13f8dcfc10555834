//! Names for ids the kernel reports: process names for pids that did not exec while
//! captured, device names for dev_t numbers.

use std::fs;

pub trait Names {
    fn comm(&self, pid: u32) -> Option<String>;
    fn device(&self, major: u32, minor: u32) -> Option<String>;
}

/// Looks names up on this host. `live` also reads /proc for processes; a replay must not,
/// since the pids belong to another time (and maybe another host).
pub struct HostNames {
    pub live: bool,
}

impl Names for HostNames {
    fn comm(&self, pid: u32) -> Option<String> {
        if !self.live {
            return None;
        }
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        Some(comm.trim_end_matches('\n').to_string())
    }

    fn device(&self, major: u32, minor: u32) -> Option<String> {
        let uevent = fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent")).ok()?;
        uevent
            .lines()
            .find_map(|l| l.strip_prefix("DEVNAME="))
            .map(str::to_string)
    }
}

/// No lookups: names come from events only.
pub struct NoNames;

impl Names for NoNames {
    fn comm(&self, _: u32) -> Option<String> {
        None
    }
    fn device(&self, _: u32, _: u32) -> Option<String> {
        None
    }
}
