//! A command's arguments, written once for wherever they go: a redis-rs [`redis::Cmd`], or the
//! parts of a batch (`batch.rs`).

use std::io::Write as _;

/// Where arguments go.
pub trait Arguments {
    /// One argument, as bytes.
    fn bytes(&mut self, argument: &[u8]);

    /// One argument: a decimal integer.
    fn integer(&mut self, value: u64) {
        self.bytes(itoa::Buffer::new().format(value).as_bytes());
    }

    /// One argument made of several pieces, written one after another.
    fn pieces(&mut self, pieces: &[&str]);
}

impl Arguments for redis::Cmd {
    fn bytes(&mut self, argument: &[u8]) {
        self.arg(argument);
    }

    fn pieces(&mut self, pieces: &[&str]) {
        let mut argument = redis::RedisWrite::writer_for_next_arg(self);
        for piece in pieces {
            // The writer appends to the command's buffer: it cannot fail.
            let _ = argument.write_all(piece.as_bytes());
        }
    }
}
