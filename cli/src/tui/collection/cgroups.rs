//! Who owns each cgroup id, for display: its labels (Kubernetes namespace, pod, container
//! and workload, container runtime and id, systemd unit, path), from which the TUI draws
//! the owner's name and groups. An agent's snapshot comes attributed already (with
//! Kubernetes names); a live capture is attributed here from the cgroup tree.

use ksight_attribution::{Attributor, CgroupLabels};
use ksight_engine::Snapshot;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub struct CgroupOwners {
    attributor: Attributor,
    reported: HashMap<u64, Arc<CgroupLabels>>,
}

impl CgroupOwners {
    pub fn new() -> Self {
        Self {
            attributor: Attributor::host(),
            reported: HashMap::new(),
        }
    }

    /// Labels of the ids in `snapshot` not labelled before, or labelled differently now (a
    /// pod whose metadata arrived). Ids with no path (gone before they were seen) are left
    /// out until they have one.
    pub fn new_labels(&mut self, snapshot: &Snapshot) -> Vec<(u64, Arc<CgroupLabels>)> {
        let attributed: HashMap<u64, &CgroupLabels> = snapshot
            .cgroups
            .iter()
            .filter_map(|c| {
                let a = c.attribution.as_ref().filter(|a| !a.path.is_empty())?;
                Some((c.cgroup_id, a))
            })
            .collect();
        let ids: HashSet<u64> = snapshot
            .cgroups
            .iter()
            .map(|c| c.cgroup_id)
            .chain(snapshot.process.processes.iter().map(|p| p.cgroup_id))
            .chain(snapshot.tcp.connections.iter().map(|c| c.cgroup_id))
            .collect();
        let mut labelled = Vec::new();
        for id in ids {
            let reported = self.reported.get(&id);
            let labels = match attributed.get(&id) {
                Some(&a) if reported.is_some_and(|r| **r == *a) => continue,
                Some(&a) => Arc::new(a.clone()),
                None => {
                    let labels = self.attributor.labels(id);
                    if labels.path.is_empty() || reported == Some(&labels) {
                        continue;
                    }
                    labels
                }
            };
            self.reported.insert(id, labels.clone());
            labelled.push((id, labels));
        }
        labelled.sort_by_key(|(id, _)| *id);
        labelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ksight_engine::snapshot::CgroupRow;

    #[test]
    fn an_agents_attribution_labels_the_cgroup_and_updates_are_sent_again() {
        let mut owners = CgroupOwners::new();
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
        let sent = owners.new_labels(&snapshot);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, u64::MAX - 1);
        assert_eq!(*sent[0].1, labels);
        assert_eq!(
            sent[0].1.display_name(),
            "pod 0f1c6a3e-5a2b-4c1d-9e8f-123456789abc"
        );
        assert_eq!(owners.new_labels(&snapshot), []);
        // The pod's metadata arrives: named, and its workload known.
        labels.namespace = "shop".into();
        labels.pod = "web-1".into();
        labels.workload_kind = "Deployment".into();
        labels.workload = "web".into();
        labels.pending = false;
        snapshot.cgroups[0].attribution = Some(labels.clone());
        let sent = owners.new_labels(&snapshot);
        assert_eq!(sent.len(), 1);
        assert_eq!(*sent[0].1, labels);
        assert_eq!(sent[0].1.display_name(), "shop/web-1");
        assert_eq!(owners.new_labels(&snapshot), []);
    }
}
