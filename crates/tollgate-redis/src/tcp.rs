//! A multiplexed connection to a standalone Redis over plain TCP, written for the decision path.
//!
//! redis-rs's `ConnectionManager` sends every call through a channel to a driver task, which
//! writes it and, with a second channel per call, hands the reply back: two task hand-offs and
//! a few allocations per decision, measured as most of the client's CPU per decision
//! (BENCHMARKS.md). Here, instead:
//!
//! - a caller appends its packed command to one write buffer under a short lock, with a
//!   oneshot for its reply behind it in a queue, in the same order;
//! - the caller that finds no write in progress writes the buffer itself, without waiting
//!   (`try_write`), so concurrent callers share one `write` and no task runs in between; only a
//!   full socket hands the rest to a writer task, which waits until it can write;
//! - one reader task parses the replies (RESP2) and completes the queue in order.
//!
//! Writing never awaits, so a caller dropped at any point leaves no half-written command. A
//! broken connection fails every call waiting on it and is opened again, with `AUTH` and
//! `SELECT` from the URL, by the next call. A call is never sent twice: whether a call that
//! failed on a broken connection ran is unknown, and the caller's failure policy decides it.
//!
//! TLS, RESP3, Cluster and Sentinel keep redis-rs's connections (see `connection.rs`).

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{ErrorKind, RedisError, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// After a failed connection attempt, calls fail at once with its error for this long instead
/// of each trying again (a down Redis would otherwise be asked once per call).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Rounds of writing what other callers queued meanwhile before the writer task takes over,
/// so that one caller does not keep writing for everyone else.
const WRITE_ROUNDS: usize = 8;

/// Read buffer size; replies to decisions are a few dozen bytes.
const READ_BUFFER: usize = 16 * 1024;

/// Deepest nesting of arrays accepted in a reply (redis-rs allows 100).
const MAX_DEPTH: usize = 100;

/// One multiplexed connection, opened on first use and again after it breaks.
pub(crate) struct TcpConnection {
    shared: Arc<Shared>,
}

/// Where to connect and how to log in.
pub(crate) struct Endpoint {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) db: i64,
}

struct Shared {
    endpoint: Endpoint,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// Serializes connection attempts.
    connecting: tokio::sync::Mutex<()>,
    /// When the reader last got bytes, in microseconds since `epoch`: a call that times out on
    /// a connection silent for its whole timeout breaks it (a server that vanished without
    /// closing the socket).
    last_read_us: AtomicU64,
    epoch: Instant,
    state: Mutex<State>,
}

struct State {
    /// The open connection, if any.
    link: Option<Link>,
    /// Counts connections opened; a reader or writer of an older one touches nothing.
    generation: u64,
    /// Commands not yet handed to a writer.
    out: Vec<u8>,
    /// An empty buffer kept for the next swap with `out`.
    spare: Vec<u8>,
    /// Whether a caller or the writer task is writing (then new bytes wait in `out`).
    writing: bool,
    /// Calls sent or queued, oldest first: replies arrive in this order.
    pending: VecDeque<Pending>,
    /// The last connection attempt's failure, while it is recent.
    last_failure: Option<(Instant, RedisError)>,
}

struct Link {
    socket: Arc<TcpStream>,
    reader: JoinHandle<()>,
}

/// A call waiting for its replies (several for a pipeline).
struct Pending {
    replies: usize,
    collected: Vec<Value>,
    sender: oneshot::Sender<RedisResult<Value>>,
}

/// Outcome of one round of writing.
enum Written {
    Done,
    /// The socket is full; the writer task goes on from `written`.
    WouldBlock {
        buffer: Vec<u8>,
        written: usize,
    },
    /// This connection is gone (broken or replaced).
    Stopped,
}

impl TcpConnection {
    pub(crate) fn new(
        endpoint: Endpoint,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Self {
        TcpConnection {
            shared: Arc::new(Shared {
                endpoint,
                connect_timeout,
                response_timeout,
                connecting: tokio::sync::Mutex::new(()),
                last_read_us: AtomicU64::new(0),
                epoch: Instant::now(),
                state: Mutex::new(State {
                    link: None,
                    generation: 0,
                    out: Vec::new(),
                    spare: Vec::new(),
                    writing: false,
                    pending: VecDeque::new(),
                    last_failure: None,
                }),
            }),
        }
    }

    /// Send one command and wait for its reply (a server error is an `Err`).
    pub(crate) async fn command(&self, command: &redis::Cmd) -> RedisResult<Value> {
        self.command_with(|out| command.write_packed_command(out))
            .await
    }

    /// Send the one command `write` appends (packed RESP) and wait for its reply.
    pub(crate) async fn command_with(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> RedisResult<Value> {
        match self.call(write, 1).await? {
            Value::ServerError(error) => Err(error.into()),
            value => Ok(value),
        }
    }

    /// Send a pipeline and wait for all its replies, as an array (the first server error among
    /// them is an `Err`).
    pub(crate) async fn pipeline(&self, pipeline: &redis::Pipeline) -> RedisResult<Value> {
        if pipeline.is_transaction() {
            return Err(RedisError::from((
                ErrorKind::Client,
                "transactions are not sent on this connection",
            )));
        }
        let replies = pipeline.len();
        if replies == 0 {
            return Ok(Value::Array(Vec::new()));
        }
        let reply = self
            .call(
                |out| {
                    for command in pipeline.cmd_iter() {
                        command.write_packed_command(out);
                    }
                },
                replies,
            )
            .await?;
        if let Value::Array(values) = &reply {
            if let Some(Value::ServerError(error)) =
                values.iter().find(|v| matches!(v, Value::ServerError(_)))
            {
                return Err(error.clone().into());
            }
        }
        Ok(reply)
    }

    async fn call(&self, write: impl FnOnce(&mut Vec<u8>), replies: usize) -> RedisResult<Value> {
        let receiver = match self.shared.send(write, replies) {
            Ok(receiver) => receiver,
            Err(write) => {
                self.shared.connect().await?;
                // Broken again at once: fail rather than loop.
                self.shared
                    .send(write, replies)
                    .map_err(|_| io_error(io::ErrorKind::NotConnected, "connection lost"))?
            }
        };
        match tokio::time::timeout(self.shared.response_timeout, receiver).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => Err(io_error(
                io::ErrorKind::ConnectionAborted,
                "connection closed before the reply",
            )),
            Err(_) => {
                self.shared.on_timeout();
                Err(io_error(
                    io::ErrorKind::TimedOut,
                    "Redis did not reply within the response timeout",
                ))
            }
        }
    }
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        if let Some(link) = state.link.take() {
            link.reader.abort();
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // No code under this lock panics; a poisoned lock still holds consistent state.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queue a call and, when no one is writing, write it now. Gives `write` back when there
    /// is no connection.
    fn send<W: FnOnce(&mut Vec<u8>)>(
        self: &Arc<Self>,
        write: W,
        replies: usize,
    ) -> Result<oneshot::Receiver<RedisResult<Value>>, W> {
        let mut state = self.lock();
        let Some(link) = &state.link else {
            return Err(write);
        };
        let socket = Arc::clone(&link.socket);
        write(&mut state.out);
        let (sender, receiver) = oneshot::channel();
        state.pending.push_back(Pending {
            replies,
            collected: Vec::new(),
            sender,
        });
        if state.writing {
            return Ok(receiver);
        }
        state.writing = true;
        let generation = state.generation;
        let spare = std::mem::take(&mut state.spare);
        let buffer = std::mem::replace(&mut state.out, spare);
        drop(state);
        if let Written::WouldBlock { buffer, written } =
            self.write_rounds(&socket, generation, buffer, 0)
        {
            let shared = Arc::clone(self);
            tokio::spawn(async move {
                shared
                    .write_in_background(socket, generation, buffer, written)
                    .await;
            });
        }
        Ok(receiver)
    }

    /// Write `buffer` from `written` on, then whatever was queued meanwhile, without waiting.
    fn write_rounds(
        &self,
        socket: &TcpStream,
        generation: u64,
        mut buffer: Vec<u8>,
        mut written: usize,
    ) -> Written {
        for _ in 0..WRITE_ROUNDS {
            while written < buffer.len() {
                match socket.try_write(&buffer[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Written::WouldBlock { buffer, written };
                    }
                    Err(e) => {
                        self.break_link(generation, e);
                        return Written::Stopped;
                    }
                }
            }
            let mut state = self.lock();
            if state.generation != generation || state.link.is_none() {
                return Written::Stopped;
            }
            buffer.clear();
            written = 0;
            if state.out.is_empty() {
                state.writing = false;
                state.spare = buffer;
                return Written::Done;
            }
            std::mem::swap(&mut state.out, &mut buffer);
        }
        Written::WouldBlock { buffer, written }
    }

    async fn write_in_background(
        self: Arc<Self>,
        socket: Arc<TcpStream>,
        generation: u64,
        mut buffer: Vec<u8>,
        mut written: usize,
    ) {
        loop {
            if let Err(e) = socket.writable().await {
                self.break_link(generation, e);
                return;
            }
            match self.write_rounds(&socket, generation, buffer, written) {
                Written::WouldBlock {
                    buffer: rest,
                    written: at,
                } => (buffer, written) = (rest, at),
                Written::Done | Written::Stopped => return,
            }
        }
    }

    /// Read replies and complete the pending calls in order, until the connection breaks.
    async fn read_replies(self: Arc<Self>, socket: Arc<TcpStream>, generation: u64) {
        let mut buffer: Vec<u8> = Vec::with_capacity(READ_BUFFER);
        let mut values = Vec::new();
        let mut completed = Vec::new();
        let error = loop {
            if let Err(e) = socket.readable().await {
                break e;
            }
            if buffer.capacity() - buffer.len() < READ_BUFFER / 4 {
                buffer.reserve(READ_BUFFER);
            }
            match socket.try_read_buf(&mut buffer) {
                Ok(0) => break io::Error::from(io::ErrorKind::UnexpectedEof),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => break e,
            }
            self.last_read_us.store(self.now_us(), Ordering::Relaxed);
            let mut start = 0;
            let parsed = loop {
                match parse_value(&buffer[start..], 0) {
                    Ok(Some((value, length))) => {
                        values.push(value);
                        start += length;
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            buffer.drain(..start);
            if let Err(e) = parsed {
                break io::Error::new(io::ErrorKind::InvalidData, e.to_string());
            }
            if !values.is_empty() && !self.complete(generation, &mut values, &mut completed) {
                break io::Error::new(io::ErrorKind::InvalidData, "a reply nobody asked for");
            }
        };
        self.break_link(generation, error);
    }

    /// Hand `values` to the oldest pending calls; false if there were more replies than calls.
    fn complete(
        &self,
        generation: u64,
        values: &mut Vec<Value>,
        completed: &mut Vec<(oneshot::Sender<RedisResult<Value>>, Value)>,
    ) -> bool {
        let mut state = self.lock();
        if state.generation != generation {
            values.clear();
            return true;
        }
        for value in values.drain(..) {
            let Some(front) = state.pending.front_mut() else {
                return false;
            };
            let reply = if front.replies == 1 {
                value
            } else {
                front.collected.push(value);
                if front.collected.len() < front.replies {
                    continue;
                }
                Value::Array(std::mem::take(&mut front.collected))
            };
            if let Some(call) = state.pending.pop_front() {
                completed.push((call.sender, reply));
            }
        }
        drop(state);
        for (sender, reply) in completed.drain(..) {
            // A caller that gave up (timed out or dropped) no longer listens.
            let _ = sender.send(Ok(reply));
        }
        true
    }

    /// Close connection `generation` and fail every call waiting on it.
    fn break_link(&self, generation: u64, error: io::Error) {
        let mut state = self.lock();
        if state.generation != generation {
            return;
        }
        let Some(link) = state.link.take() else {
            return;
        };
        state.out.clear();
        state.writing = false;
        let pending = std::mem::take(&mut state.pending);
        drop(state);
        link.reader.abort();
        let error = RedisError::from(error);
        for call in pending {
            let _ = call.sender.send(Err(error.clone()));
        }
    }

    /// A call timed out: if nothing at all arrived during its whole wait, the connection is
    /// taken as dead.
    fn on_timeout(&self) {
        let silent_us = self
            .now_us()
            .saturating_sub(self.last_read_us.load(Ordering::Relaxed));
        if Duration::from_micros(silent_us) < self.response_timeout {
            return;
        }
        let generation = {
            let state = self.lock();
            if state.link.is_none() || state.pending.is_empty() {
                return;
            }
            state.generation
        };
        self.break_link(
            generation,
            io::Error::new(io::ErrorKind::TimedOut, "no reply from Redis"),
        );
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Open the connection if there is none (one attempt at a time).
    async fn connect(self: &Arc<Self>) -> RedisResult<()> {
        let _one_at_a_time = self.connecting.lock().await;
        {
            let state = self.lock();
            if state.link.is_some() {
                return Ok(());
            }
            if let Some((at, error)) = &state.last_failure {
                if at.elapsed() < RECONNECT_PAUSE {
                    return Err(error.clone());
                }
            }
        }
        let opened = match tokio::time::timeout(self.connect_timeout, self.open()).await {
            Ok(opened) => opened,
            Err(_) => Err(io_error(
                io::ErrorKind::TimedOut,
                "connecting to Redis timed out",
            )),
        };
        let mut state = self.lock();
        match opened {
            Ok(socket) => {
                let socket = Arc::new(socket);
                state.generation += 1;
                let generation = state.generation;
                self.last_read_us.store(self.now_us(), Ordering::Relaxed);
                let reader =
                    tokio::spawn(Arc::clone(self).read_replies(Arc::clone(&socket), generation));
                state.link = Some(Link { socket, reader });
                state.last_failure = None;
                Ok(())
            }
            Err(error) => {
                state.last_failure = Some((Instant::now(), error.clone()));
                Err(error)
            }
        }
    }

    /// A new socket, logged in and on the URL's database.
    async fn open(&self) -> RedisResult<TcpStream> {
        let endpoint = &self.endpoint;
        let mut socket = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        socket.set_nodelay(true)?;
        let mut hello = Vec::new();
        let mut replies = 0;
        if let Some(password) = &endpoint.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = &endpoint.username {
                auth.arg(username);
            }
            auth.arg(password).write_packed_command(&mut hello);
            replies += 1;
        }
        if endpoint.db != 0 {
            redis::cmd("SELECT")
                .arg(endpoint.db)
                .write_packed_command(&mut hello);
            replies += 1;
        }
        if replies == 0 {
            return Ok(socket);
        }
        socket.write_all(&hello).await?;
        let mut buffer = Vec::with_capacity(256);
        let mut start = 0;
        while replies > 0 {
            match parse_value(&buffer[start..], 0)? {
                Some((Value::ServerError(error), _)) => return Err(error.into()),
                Some((_, length)) => {
                    start += length;
                    replies -= 1;
                }
                None => {
                    if socket.read_buf(&mut buffer).await? == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                    }
                }
            }
        }
        Ok(socket)
    }
}

fn io_error(kind: io::ErrorKind, message: &'static str) -> RedisError {
    io::Error::new(kind, message).into()
}

fn protocol_error(message: &'static str) -> RedisError {
    RedisError::from((ErrorKind::Parse, message))
}

/// The RESP2 value at the front of `bytes` and its length in bytes, or `None` while it is
/// incomplete.
fn parse_value(bytes: &[u8], depth: usize) -> RedisResult<Option<(Value, usize)>> {
    let Some(&kind) = bytes.first() else {
        return Ok(None);
    };
    let Some(line_length) = bytes[1..].windows(2).position(|w| w == b"\r\n") else {
        return Ok(None);
    };
    let line = &bytes[1..1 + line_length];
    let after_line = 1 + line_length + 2;
    let value = match kind {
        b'+' => {
            let text = std::str::from_utf8(line)
                .map_err(|_| protocol_error("a status reply that is not UTF-8"))?;
            if text == "OK" {
                Value::Okay
            } else {
                Value::SimpleString(text.to_owned())
            }
        }
        // Errors are rare and redis-rs knows their kinds (NOSCRIPT, READONLY, ...).
        b'-' => redis::parse_redis_value(&bytes[..after_line])?,
        b':' => Value::Int(parse_integer(line)?),
        b'$' => {
            let Ok(length) = usize::try_from(parse_integer(line)?) else {
                return Ok(Some((Value::Nil, after_line)));
            };
            let end = after_line + length;
            if bytes.len() < end + 2 {
                return Ok(None);
            }
            if &bytes[end..end + 2] != b"\r\n" {
                return Err(protocol_error("a bulk string without its CRLF"));
            }
            return Ok(Some((
                Value::BulkString(bytes[after_line..end].to_vec()),
                end + 2,
            )));
        }
        b'*' => {
            let Ok(count) = usize::try_from(parse_integer(line)?) else {
                return Ok(Some((Value::Nil, after_line)));
            };
            if depth >= MAX_DEPTH {
                return Err(protocol_error("a reply nested too deeply"));
            }
            // Each element takes at least 3 bytes: never reserve more than the input allows.
            let mut items = Vec::with_capacity(count.min(bytes.len() / 3));
            let mut at = after_line;
            for _ in 0..count {
                match parse_value(&bytes[at..], depth + 1)? {
                    Some((item, length)) => {
                        items.push(item);
                        at += length;
                    }
                    None => return Ok(None),
                }
            }
            return Ok(Some((Value::Array(items), at)));
        }
        _ => return Err(protocol_error("not a RESP2 reply")),
    };
    Ok(Some((value, after_line)))
}

fn parse_integer(line: &[u8]) -> RedisResult<i64> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| protocol_error("an integer that does not parse"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8]) -> (Value, usize) {
        parse_value(bytes, 0).unwrap().unwrap()
    }

    #[test]
    fn every_resp2_type_parses_with_its_length() {
        assert_eq!(parse_all(b"+OK\r\n"), (Value::Okay, 5));
        assert_eq!(
            parse_all(b"+PONG\r\nrest"),
            (Value::SimpleString("PONG".into()), 7)
        );
        assert_eq!(parse_all(b":-42\r\n"), (Value::Int(-42), 6));
        assert_eq!(
            parse_all(b"$3\r\na\r\n\r\n"),
            (Value::BulkString(b"a\r\n".to_vec()), 9)
        );
        assert_eq!(parse_all(b"$-1\r\n"), (Value::Nil, 5));
        assert_eq!(parse_all(b"*-1\r\n"), (Value::Nil, 5));
        assert_eq!(
            parse_all(b"*3\r\n:1\r\n*1\r\n$0\r\n\r\n:2\r\n"),
            (
                Value::Array(vec![
                    Value::Int(1),
                    Value::Array(vec![Value::BulkString(Vec::new())]),
                    Value::Int(2)
                ]),
                22
            )
        );
    }

    #[test]
    fn server_errors_keep_their_kind() {
        let (value, length) = parse_all(b"-NOSCRIPT No matching script.\r\n");
        assert_eq!(length, 31);
        let Value::ServerError(error) = value else {
            panic!("{value:?}")
        };
        let error = RedisError::from(error);
        assert_eq!(
            error.kind(),
            ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
    }

    #[test]
    fn incomplete_replies_wait_for_more_bytes() {
        let whole = b"*2\r\n$5\r\nhello\r\n:7\r\n";
        for cut in 0..whole.len() {
            assert_eq!(parse_value(&whole[..cut], 0).unwrap(), None, "cut {cut}");
        }
        assert_eq!(parse_all(whole).1, whole.len());
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            &b"?x\r\n"[..],
            b":12a\r\n",
            b"$2\r\nabcd\r\n",
            b"*x\r\n",
            b"+\xff\r\n",
        ] {
            assert!(parse_value(bad, 0).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
        assert!(parse_value(deep.as_bytes(), 0).is_err());
        // A huge announced array does not reserve memory for it.
        assert_eq!(parse_value(b"*999999999999\r\n:1\r\n", 0).unwrap(), None);
    }

    fn connection_to(server: &tollgate_testkit::RedisServer) -> TcpConnection {
        let endpoint = Endpoint {
            host: "127.0.0.1".into(),
            port: server.port(),
            username: None,
            password: None,
            db: 0,
        };
        TcpConnection::new(endpoint, Duration::from_secs(2), Duration::from_secs(10))
    }

    /// Commands far larger than the socket's buffer, from many callers at once while Redis is
    /// paused: the writes block and go on in the writer task, and every caller still gets its
    /// own reply.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_commands_from_many_callers_each_get_their_own_reply() {
        let server = tollgate_testkit::RedisServer::start().unwrap();
        let connection = Arc::new(connection_to(&server));
        connection.command(&redis::cmd("PING")).await.unwrap();
        server.pause().unwrap();
        let tasks: Vec<_> = (0..32u8)
            .map(|i| {
                let connection = Arc::clone(&connection);
                tokio::spawn(async move {
                    let key = format!("tcp-test:large:{i}");
                    let value = vec![b'a' + i % 26; 1024 * 1024 + usize::from(i)];
                    let mut pipeline = redis::pipe();
                    pipeline.set(&key, &value).get(&key).del(&key);
                    let reply = connection.pipeline(&pipeline).await.unwrap();
                    assert_eq!(
                        reply,
                        Value::Array(vec![Value::Okay, Value::BulkString(value), Value::Int(1)])
                    );
                })
            })
            .collect();
        // Long enough for every caller to have queued its command behind the full socket.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let queued = connection.shared.lock().writing;
        server.resume().unwrap();
        assert!(
            queued,
            "the socket never filled: the test did not reach the writer task"
        );
        for task in tasks {
            task.await.unwrap();
        }
        assert!(!connection.shared.lock().writing);
    }

    #[tokio::test]
    async fn server_errors_fail_only_their_own_call() {
        let server = tollgate_testkit::shared_standalone();
        let connection = connection_to(server);
        let wrong = connection.command(&redis::cmd("NOSUCHCOMMAND")).await;
        assert!(
            matches!(wrong, Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::ResponseError))
        );
        let mut pipeline = redis::pipe();
        pipeline.cmd("PING").cmd("EVALSHA").arg("0000").arg(0);
        let noscript = connection.pipeline(&pipeline).await.unwrap_err();
        assert_eq!(
            noscript.kind(),
            ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
        let pong = connection.command(&redis::cmd("PING")).await.unwrap();
        assert_eq!(pong, Value::SimpleString("PONG".into()));
    }
}
