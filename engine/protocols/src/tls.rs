//! (to be written)

use crate::{Dir, Role};

/// Whether `data`, the first payload seen on a connection in direction `dir`, starts a TLS
/// handshake; if so, which end the socket is.
pub fn detect(_dir: Dir, _data: &[u8]) -> Option<Role> {
    None
}
