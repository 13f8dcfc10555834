//! What ksight's tests share, written once:
//!
//! - [`workload`]: the ground-truth workload, whose kernel-visible activity is fixed by
//!   its arguments (`ksight workload …`, `ksight-workload …`, re-executed test binaries);
//! - [`truth`]: the exact values a capture of `workload all` must report, as a list of
//!   failures (the host tests panic with it, the VM guest tool prints it), and the
//!   kernel's own counters they are checked against;
//! - [`cgroup`]: a cgroup v2 child of the test's own cgroup, so what a test runs is told
//!   apart from everything else on the host by its id.
//!
//! No eBPF object and no Kubernetes client: backend-kmod's tests and the VM guest tool
//! use it without building either.

pub mod cgroup;
pub mod truth;
pub mod workload;

pub use cgroup::{TestCgroup, cgroup_mount, own_cgroup_dir, own_cgroup_id, run_in_cgroup};
pub use truth::{OtherDevices, Truth, block_dev, check_retransmits, tcp_retrans_segs};
