//! ksight's backend-agnostic engine: event sources, decoding, reordering, aggregation,
//! snapshots and capture files. It knows no backend.
pub mod aggregate;
pub mod capture;
pub mod decode;
pub mod dns;
pub mod driver;
pub mod engine;
pub mod latency;
pub mod names;
pub mod parity;
pub mod pipeline;
pub mod reorder;
pub mod requests;
/// Typed fidelity: the backend contract's types (`ksight-source`).
pub use ksight_source::signals;
pub mod snapshot;
pub mod sockio;
pub mod source;
pub mod synthetic;

pub use aggregate::{Aggregator, Scope};
pub use driver::{Capture, DriverError, Finished, Pumped};
pub use engine::{Engine, monotonic_ns};
pub use snapshot::Snapshot;
pub use source::{EventSource, Poll, RawBatch, SourceCounters, SourceError};
