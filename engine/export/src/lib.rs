//! Exporting the engine's aggregates from a long-running process (`ksight agent`):
//!
//! - [`view`]: from the engine's cumulative snapshots to what is exported — signals and
//!   filters applied, cgroups that disappeared dropped after a grace period, the top-N
//!   connections of a sliding window, request and service-map series with their servers
//!   named (by local cgroup, or Kubernetes names from the [`ClusterNames`] the caller hands
//!   in, which also names the Services behind a pod's server-side request series);
//! - [`prometheus`]: that view in the Prometheus/OpenMetrics text exposition format;
//! - [`protocol`]: the versioned, length-prefixed bincode frames the agent's unix socket
//!   serves snapshots with (`ksight top --connect`), each version with its own wire types;
//! - [`interval`]: from two of the agent's cumulative snapshots to the interval between
//!   them, as `top` shows (`--connect`, batch and interactive).
//!
//! Nothing here knows a backend or touches the host: time, the cgroup tree and the
//! agent's own resource usage are handed in, so all of it is testable without root.

pub mod interval;
pub mod prometheus;
pub mod protocol;
pub mod view;

pub use view::{
    AgentMeta, CgroupTree, ClusterNames, ExportSettings, ExportView, Exporter, MetadataStatus,
    ServerName, Signals,
};
