//! The labels users group by — path, container runtime and id, systemd unit, Kubernetes
//! namespace/pod/container/workload — the filters over them, and grouping by owner.
//!
//! [`CgroupLabels`] itself is defined with the snapshot that carries it
//! ([`ksight_engine::snapshot`]), so the snapshot does not depend on attribution; attribution
//! fills it in.

pub use ksight_engine::snapshot::CgroupLabels;
use ksight_engine::snapshot::CgroupRow;
use regex::Regex;

/// Pod or namespace annotation that drops a pod's events (value `"true"`).
pub const IGNORE_ANNOTATION: &str = "ksight.io/ignore";

/// Include/exclude regexes over `namespace/pod/container`, matched whole. They apply to
/// Kubernetes containers; other cgroups are selected by path (the export settings).
#[derive(Clone, Debug, Default)]
pub struct Filters {
    include: Vec<Regex>,
    exclude: Vec<Regex>,
}

impl Filters {
    /// Compiles the patterns; an invalid one is an error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, String> {
        let compile = |list: &[String], what: &str| {
            list.iter()
                .map(|p| {
                    Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| format!("{what} pattern {p:?} is not a valid regex: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            include: compile(include, "include")?,
            exclude: compile(exclude, "exclude")?,
        })
    }

    /// Whether a cgroup with these labels is kept (not counting annotations).
    pub fn wants(&self, labels: &CgroupLabels) -> bool {
        if labels.namespace.is_empty() {
            return true;
        }
        let subject = format!("{}/{}/{}", labels.namespace, labels.pod, labels.container);
        (self.include.is_empty() || self.include.iter().any(|r| r.is_match(&subject)))
            && !self.exclude.iter().any(|r| r.is_match(&subject))
    }
}

/// Sums rows by owner ([`CgroupLabels::display_name`]): a container's sub-cgroups count
/// as the container. Rows keep the labels of the owner's outermost cgroup. Sorted by name.
pub fn group_by_owner(rows: &[CgroupRow]) -> Vec<CgroupRow> {
    let mut groups: std::collections::BTreeMap<String, CgroupRow> =
        std::collections::BTreeMap::new();
    for row in rows {
        let labels = row.attribution.clone().unwrap_or_else(|| CgroupLabels {
            path: format!("cgroup {}", row.cgroup_id),
            ..CgroupLabels::default()
        });
        let name = labels.display_name();
        let group = groups.entry(name).or_insert_with(|| CgroupRow {
            cgroup_id: row.cgroup_id,
            attribution: Some(labels.clone()),
            ..Default::default()
        });
        group.add(row);
        let outer = group.attribution.as_ref().is_some_and(|g| {
            !labels.path.is_empty() && (g.path.is_empty() || labels.path.len() < g.path.len())
        });
        if outer {
            group.cgroup_id = row.cgroup_id;
            group.attribution = Some(labels);
        }
    }
    groups.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k8s(ns: &str, pod: &str, container: &str) -> CgroupLabels {
        CgroupLabels {
            namespace: ns.into(),
            pod: pod.into(),
            container: container.into(),
            ..CgroupLabels::default()
        }
    }

    #[test]
    fn filters_match_whole_namespace_pod_container() {
        let f = Filters::new(&[], &["kube-system/.*".into(), ".*/.*/istio-proxy".into()]).unwrap();
        assert!(!f.wants(&k8s("kube-system", "coredns-1", "coredns")));
        assert!(!f.wants(&k8s("shop", "web-1", "istio-proxy")));
        assert!(f.wants(&k8s("shop", "web-1", "web")));
        // "kube-system" alone is no match for the whole string.
        let f = Filters::new(&["shop/.*".into()], &["kube-system".into()]).unwrap();
        assert!(f.wants(&k8s("shop", "web-1", "web")));
        assert!(!f.wants(&k8s("default", "x", "y")));
        assert!(!f.wants(&k8s("shopping", "x", "y")));
        // Not Kubernetes: paths decide elsewhere.
        assert!(f.wants(&CgroupLabels {
            unit: "nginx.service".into(),
            ..CgroupLabels::default()
        }));
    }

    #[test]
    fn rows_group_by_owner_with_sub_cgroups_summed() {
        let row = |id: u64, execs: u64, labels: CgroupLabels| CgroupRow {
            cgroup_id: id,
            execs,
            exit_codes: [("0".to_string(), execs)].into(),
            attribution: Some(labels),
            ..CgroupRow::default()
        };
        let web = |path: &str| CgroupLabels {
            path: path.into(),
            ..k8s("shop", "web-1", "web")
        };
        let rows = vec![
            row(11, 2, web("/kubepods/pod1/abc/init.scope")),
            row(10, 3, web("/kubepods/pod1/abc")),
            row(20, 5, k8s("shop", "web-1", "sidecar")),
            row(30, 7, CgroupLabels::default()),
        ];
        let groups = group_by_owner(&rows);
        let names: Vec<String> = groups
            .iter()
            .map(|g| g.attribution.as_ref().unwrap().display_name())
            .collect();
        assert_eq!(
            names,
            ["(unknown cgroup)", "shop/web-1/sidecar", "shop/web-1/web"]
        );
        assert_eq!(groups[2].execs, 5);
        assert_eq!(groups[2].exit_codes["0"], 5);
        assert_eq!(
            groups[2].cgroup_id, 10,
            "the outermost cgroup names the group"
        );
        assert_eq!(groups[1].execs, 5);
        assert_eq!(groups[0].execs, 7);
    }

    #[test]
    fn bad_patterns_are_named() {
        let e = Filters::new(&["ok".into()], &["a(".into()]).unwrap_err();
        assert!(
            e.starts_with("exclude pattern \"a(\" is not a valid regex"),
            "{e}"
        );
    }

    #[test]
    fn display_names_go_from_specific_to_general() {
        assert_eq!(k8s("shop", "web-1", "web").display_name(), "shop/web-1/web");
        assert_eq!(k8s("shop", "web-1", "").display_name(), "shop/web-1");
        let docker = CgroupLabels {
            runtime: "docker".into(),
            container_id: "3f4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6071829".into(),
            path: "/system.slice/docker-3f4b.scope".into(),
            ..CgroupLabels::default()
        };
        assert_eq!(docker.display_name(), "docker:3f4b5c6d7e8f");
        let unit = CgroupLabels {
            unit: "nginx.service".into(),
            path: "/system.slice/nginx.service".into(),
            ..CgroupLabels::default()
        };
        assert_eq!(unit.display_name(), "nginx.service");
        let path = CgroupLabels {
            path: "/custom/thing".into(),
            ..CgroupLabels::default()
        };
        assert_eq!(path.display_name(), "/custom/thing");
        assert_eq!(CgroupLabels::default().display_name(), "(unknown cgroup)");
    }
}
