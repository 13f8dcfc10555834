//! Reader of the ksight kernel module (`/dev/ksight`).
//!
//! The module and its ring reader are built in their own step; until then this crate only
//! tells whether the module's device is present, so `detect` and `--backend kmod` can say
//! precisely why the module backend cannot run.

use std::path::Path;

pub const DEVICE: &str = "/dev/ksight";

#[derive(Debug, thiserror::Error)]
pub enum KmodError {
    #[error("{DEVICE} does not exist: the ksight kernel module is not loaded (modprobe ksight)")]
    NotLoaded,
    #[error("{DEVICE} exists, but this ksight build has no reader for the module's rings yet")]
    ReaderMissing,
}

/// Whether the module backend could run here, and why not.
pub fn probe() -> Result<(), KmodError> {
    if !Path::new(DEVICE).exists() {
        return Err(KmodError::NotLoaded);
    }
    Err(KmodError::ReaderMissing)
}
