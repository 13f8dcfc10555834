//! The in-kernel cgroup ignore filter: the `IGNORED_CGROUPS` hash map and the `FILTER_ON`
//! flag the programs check before building a record (see `event_abi::filter`).

use std::{
    collections::HashSet,
    sync::{Mutex, Weak},
};

use aya::maps::{Array, HashMap, MapData};
use ksight_source::{CgroupFilter, SourceError};

use crate::{EbpfError, layout};

/// The two maps, taken out of the `Ebpf` object so that another thread can update them
/// while the reader polls.
pub(crate) struct FilterMaps {
    ignored: HashMap<MapData, u64, u8>,
    on: Array<MapData, u32>,
    /// What `ignored` holds now (kept here: reading a hash map back is one syscall per
    /// key).
    current: HashSet<u64>,
}

impl FilterMaps {
    pub(crate) fn take(ebpf: &mut aya::Ebpf) -> Result<Self, EbpfError> {
        let ignored = HashMap::try_from(crate::take_map(ebpf, layout::maps::IGNORED_CGROUPS)?)
            .map_err(|source| EbpfError::Map {
                name: layout::maps::IGNORED_CGROUPS,
                source,
            })?;
        let on =
            Array::try_from(crate::take_map(ebpf, layout::maps::FILTER_ON)?).map_err(|source| {
                EbpfError::Map {
                    name: layout::maps::FILTER_ON,
                    source,
                }
            })?;
        Ok(Self {
            ignored,
            on,
            current: HashSet::new(),
        })
    }

    /// Makes the kernel's set equal to `ids`. Each cgroup changes state at one instant
    /// (its key is inserted or deleted once), so an id in both the old and the new set is
    /// never let through in between. Removals go first, so that old plus new never has to
    /// fit in the map at once; the flag goes off before the last removals when the new
    /// set is empty, and on after the last insertion otherwise.
    fn set(&mut self, ids: &[u64]) -> Result<(), String> {
        let new: HashSet<u64> = ids.iter().copied().collect();
        let max = event_abi::filter::MAX_IGNORED_CGROUPS;
        if new.len() > max {
            return Err(format!(
                "{} distinct cgroup ids to ignore: the kernel keeps at most {max}",
                new.len()
            ));
        }
        if new.is_empty() {
            self.set_flag(false)?;
        }
        let removed: Vec<u64> = self.current.difference(&new).copied().collect();
        for id in removed {
            self.ignored.remove(&id).map_err(|e| {
                format!(
                    "removing cgroup {id} from {}: {e}",
                    layout::maps::IGNORED_CGROUPS
                )
            })?;
            self.current.remove(&id);
        }
        let added: Vec<u64> = new.difference(&self.current).copied().collect();
        for id in added {
            self.ignored.insert(id, 1, 0).map_err(|e| {
                format!(
                    "adding cgroup {id} to {}: {e}",
                    layout::maps::IGNORED_CGROUPS
                )
            })?;
            self.current.insert(id);
        }
        if !new.is_empty() {
            self.set_flag(true)?;
        }
        Ok(())
    }

    fn set_flag(&mut self, on: bool) -> Result<(), String> {
        self.on
            .set(0, u32::from(on), 0)
            .map_err(|e| format!("setting {}: {e}", layout::maps::FILTER_ON))
    }
}

/// [`CgroupFilter`] of an [`crate::EbpfSource`]; fails once the source is dropped.
pub(crate) struct EbpfCgroupFilter {
    pub(crate) maps: Weak<Mutex<FilterMaps>>,
}

impl CgroupFilter for EbpfCgroupFilter {
    fn set_ignored(&self, ids: &[u64]) -> Result<(), SourceError> {
        let err = |message: String| SourceError {
            source_name: "ebpf".into(),
            message,
            cause: None,
        };
        let maps = self
            .maps
            .upgrade()
            .ok_or_else(|| err("setting ignored cgroups: the eBPF source is closed".into()))?;
        // A panic elsewhere while holding the lock leaves the maps as consistent as any
        // failed update does: carry on.
        let mut maps = maps.lock().unwrap_or_else(|p| p.into_inner());
        maps.set(ids)
            .map_err(|m| err(format!("setting ignored cgroups: {m}")))
    }
}
