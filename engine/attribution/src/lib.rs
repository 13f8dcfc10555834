//! Who an event belongs to: cgroup id → cgroup path → container (runtime and id) or
//! systemd unit → Kubernetes namespace/pod/container/workload. Nothing here blocks the
//! event path: unknown ids are labelled unknown and named when the metadata arrives.

pub mod attributor;
pub mod cgroups;
pub mod container;
pub mod kube;
pub mod labels;

pub use attributor::{Attributor, attribute};
pub use labels::{CgroupLabels, Filters, IGNORE_ANNOTATION, group_by_owner};
