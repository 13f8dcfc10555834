//! Names for cgroup ids, for display: who owns the cgroup (Kubernetes
//! `namespace/pod/container`, `runtime:id`, systemd unit) or else its path. An agent's
//! snapshot comes attributed already (with Kubernetes names); a live capture is attributed
//! here from the cgroup tree.

use ksight_engine::Snapshot;
use ksight_engine::attribution::Attributor;
use ksight_engine::attribution::cgroups::CgroupPaths;
use std::collections::{HashMap, HashSet};

pub struct CgroupNames {
    attributor: Attributor,
    reported: HashMap<u64, String>,
}

impl CgroupNames {
    pub fn new() -> Self {
        Self {
            attributor: Attributor::new(CgroupPaths::host(), None, Default::default()),
            reported: HashMap::new(),
        }
    }

    /// Names of the ids in `snapshot` not named before, or named differently now (a pod
    /// whose metadata arrived).
    pub fn new_names(&mut self, snapshot: &Snapshot) -> Vec<(u64, String)> {
        let attributed: HashMap<u64, String> = snapshot
            .cgroups
            .iter()
            .filter_map(|c| {
                let a = c.attribution.as_ref().filter(|a| !a.path.is_empty())?;
                Some((c.cgroup_id, a.display_name()))
            })
            .collect();
        let ids: HashSet<u64> = snapshot
            .cgroups
            .iter()
            .map(|c| c.cgroup_id)
            .chain(snapshot.process.processes.iter().map(|p| p.cgroup_id))
            .chain(snapshot.tcp.connections.iter().map(|c| c.cgroup_id))
            .collect();
        let mut named = Vec::new();
        for id in ids {
            let name = match attributed.get(&id) {
                Some(n) => n.clone(),
                None => {
                    let labels = self.attributor.labels(id);
                    if labels.path.is_empty() {
                        continue;
                    }
                    labels.display_name()
                }
            };
            if self.reported.get(&id) != Some(&name) {
                self.reported.insert(id, name.clone());
                named.push((id, name));
            }
        }
        named.sort();
        named
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksight_engine::attribution::CgroupLabels;
    use ksight_engine::snapshot::CgroupRow;

    #[test]
    fn an_agents_attribution_names_the_cgroup_and_updates_are_sent_again() {
        let mut names = CgroupNames::new();
        let mut snapshot = Snapshot::default();
        let mut labels = CgroupLabels {
            path: "/kubepods/besteffort/pod0f1c6a3e-5a2b-4c1d-9e8f-123456789abc".into(),
            pod_uid: "0f1c6a3e-5a2b-4c1d-9e8f-123456789abc".into(),
            pending: true,
            ..CgroupLabels::default()
        };
        snapshot.cgroups.push(CgroupRow {
            cgroup_id: u64::MAX - 1,
            attribution: Some(labels.clone()),
            ..CgroupRow::default()
        });
        assert_eq!(
            names.new_names(&snapshot),
            [(u64::MAX - 1, "pod 0f1c6a3e-5a2b-4c1d-9e8f-123456789abc".to_string())]
        );
        assert_eq!(names.new_names(&snapshot), []);
        labels.namespace = "shop".into();
        labels.pod = "web-1".into();
        snapshot.cgroups[0].attribution = Some(labels);
        assert_eq!(
            names.new_names(&snapshot),
            [(u64::MAX - 1, "shop/web-1".to_string())]
        );
    }
}
