//! (to be written)

use crate::{Dir, Output, Parser, Role};

/// Whether `data`, the first payload seen on a connection in direction `dir`, is HTTP/2;
/// if so, which end the socket is and whether the connection is seen from its start (the
/// client preface) rather than mid-stream.
pub fn detect(_dir: Dir, _data: &[u8]) -> Option<(Role, bool)> {
    None
}

pub struct Http2Parser {
    role: Role,
}

impl Http2Parser {
    pub fn new(role: Role, _from_start: bool) -> Self {
        Self { role }
    }
}

impl Parser for Http2Parser {
    fn feed(&mut self, _dir: Dir, _data: &[u8], _unseen: u64, _out: &mut Output) {
        let _ = self.role;
    }
}
