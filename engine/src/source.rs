//! The backend contract, from `ksight-source` (engine/source): re-exported so the engine
//! and its users name it in one place.

pub use ksight_source::*;
