//! A command's arguments, written once for either connection: into a redis-rs [`redis::Cmd`]
//! (Cluster, Sentinel, TLS, pipelines) or as RESP bytes straight into the plain-TCP
//! connection's write buffer (`tcp.rs`), with no command object built and copied per decision.

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

/// A RESP command (`*<count>` then `$<length>` bulk strings) appended to a buffer. The count
/// goes first, so it is given up front; [`Resp::finish`] checks it in debug builds.
pub struct Resp<'a> {
    arguments: Bulk<'a>,
    count: usize,
}

impl<'a> Resp<'a> {
    /// Start a command of `count` arguments at the end of `out`.
    pub fn new(out: &'a mut Vec<u8>, count: usize) -> Self {
        out.push(b'*');
        out.extend_from_slice(itoa::Buffer::new().format(count).as_bytes());
        out.extend_from_slice(b"\r\n");
        Resp {
            arguments: Bulk::new(out),
            count,
        }
    }

    /// End the command: every announced argument must have been written.
    pub fn finish(self) {
        debug_assert_eq!(
            self.arguments.written, self.count,
            "RESP command announced other than its arguments"
        );
    }
}

impl Arguments for Resp<'_> {
    fn bytes(&mut self, argument: &[u8]) {
        debug_assert!(
            self.arguments.written < self.count,
            "more arguments than announced"
        );
        self.arguments.bytes(argument);
    }

    fn pieces(&mut self, pieces: &[&str]) {
        debug_assert!(
            self.arguments.written < self.count,
            "more arguments than announced"
        );
        self.arguments.pieces(pieces);
    }
}

/// RESP bulk strings appended to a buffer with no command header: the arguments of a
/// [`Resp`], or parts of a command whose header is written later (the batches of `tcp.rs`).
/// Counts what it wrote.
pub struct Bulk<'a> {
    out: &'a mut Vec<u8>,
    written: usize,
}

impl<'a> Bulk<'a> {
    /// Append to the end of `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Bulk { out, written: 0 }
    }

    /// Bulk strings written so far.
    pub fn written(&self) -> usize {
        self.written
    }

    fn header(&mut self, length: usize) {
        self.written += 1;
        self.out.push(b'$');
        self.out
            .extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }
}

impl Arguments for Bulk<'_> {
    fn bytes(&mut self, argument: &[u8]) {
        self.header(argument.len());
        self.out.extend_from_slice(argument);
        self.out.extend_from_slice(b"\r\n");
    }

    fn pieces(&mut self, pieces: &[&str]) {
        self.header(pieces.iter().map(|p| p.len()).sum());
        for piece in pieces {
            self.out.extend_from_slice(piece.as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both writers give Redis the same bytes.
    #[test]
    fn resp_matches_redis_rs_packing() {
        let write = |out: &mut dyn FnMut(&mut dyn Arguments)| {
            let mut cmd = redis::Cmd::new();
            out(&mut cmd);
            cmd.get_packed_command()
        };
        let arguments = |a: &mut dyn Arguments| {
            a.bytes(b"EVALSHA");
            a.integer(0);
            a.integer(u64::MAX);
            a.pieces(&["tollgate", ":", "api", ":{", "k\r\n", "}"]);
            a.bytes(b"");
        };
        let expected = write(&mut |a| arguments(a));
        let mut bytes = Vec::new();
        let mut resp = Resp::new(&mut bytes, 5);
        arguments(&mut resp);
        resp.finish();
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            String::from_utf8_lossy(&expected)
        );
    }
}
