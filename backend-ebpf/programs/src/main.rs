//! ksight's eBPF programs: one per tracepoint, each writing one complete event-abi record.
//!
//! Portability without CO-RE: every tracepoint field offset and kernel struct member
//! offset arrives from the loader in a read-only global (see `layout.rs`), resolved at
//! load time from tracefs format files and kernel BTF. An offset the loader could not
//! resolve is [`MISSING`]; the affected record field is then left 0 (and, for TCP close
//! counters, its `stats_valid` bit clear), never read from a guessed place.
//!
//! Each record is built in a per-CPU scratch slot (one slot per record kind, so a program
//! interrupted by another one on the same CPU cannot have its record overwritten) and then
//! copied to the ring buffer or the perf event array, whichever `OUTPUT_MODE` selects.
//!
//! Minimum kernels: tracepoint programs and the perf array 4.14 (`tcp:` events 4.15,
//! `sock:inet_sock_set_state` 4.16), `bpf_probe_read_kernel` 5.5, ring buffer 5.8.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[allow(dead_code, reason = "shared with the loader, which uses the rest")]
mod layout;
#[cfg(target_arch = "bpf")]
mod programs;

/// Built for the host (`cargo check --workspace`, clippy, IDEs) this binary is empty: the
/// programs only exist for the BPF target, built by backend-ebpf's build script.
#[cfg(not(target_arch = "bpf"))]
fn main() {}
