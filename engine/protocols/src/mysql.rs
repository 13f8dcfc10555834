//! (to be written)

use crate::{Dir, Output, Parser, Role};

/// Whether `data`, the first payload seen on a connection in direction `dir`, is this
/// protocol; if so, which end the socket is.
pub fn detect(_dir: Dir, _data: &[u8]) -> Option<Role> {
    None
}

pub struct MysqlParser {
    role: Role,
}

impl MysqlParser {
    pub fn new(role: Role) -> Self {
        Self { role }
    }
}

impl Parser for MysqlParser {
    fn feed(&mut self, _dir: Dir, _data: &[u8], _unseen: u64, _out: &mut Output) {
        let _ = self.role;
    }
}
