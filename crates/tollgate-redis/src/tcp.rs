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
//!   full socket (or a long run of others' commands) hands the rest to a writer task;
//! - one reader task parses the replies (RESP2) and completes the queue in order;
//! - one watchdog task closes a connection on which calls waited a whole response timeout
//!   with no reply at all (a server that froze or vanished without closing the socket). That
//!   is the response timeout of every call: Redis answers in order, so while any reply
//!   arrives the oldest call is being answered;
//! - calls of one script that find one of its commands already sent and unanswered wait
//!   instead, and go out together as **one** command when it is answered, or as a second one
//!   when enough of them wait ([`BATCHES_IN_FLIGHT`]; a caller that gives up while its call
//!   waits takes the call back): `EVALSHA <sha> <n> <their keys>
//!   <their arguments>`, whose reply is split among them (see [`Batch`]). At low load every
//!   call goes out at once, alone; under load the batches grow with what queued during one
//!   round trip, and Redis pays for one script call where it paid for n (BENCHMARKS.md).
//!
//! Writing never awaits, so a caller dropped at any point leaves no half-written command. A
//! broken connection fails every call waiting on it; the next call opens a new one (with
//! `AUTH` and `SELECT` from the URL) in a task of its own, so callers that give up early do not
//! cancel it. A call is never sent twice: whether a call that failed on a broken connection
//! ran is unknown, and the caller's failure policy decides it.
//!
//! Every command sent here must get exactly one reply (no `SUBSCRIBE`, `MONITOR` or
//! `CLIENT REPLY`): replies are matched to calls by their order alone.
//!
//! TLS, RESP3, Cluster and Sentinel keep redis-rs's connections (see `connection.rs`).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use redis::{ErrorKind, RedisError, RedisResult, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::AbortHandle;

use crate::arguments::{Arguments, Resp};

/// After a failed connection attempt, calls fail at once with its error for this long instead
/// of each trying again (a down Redis would otherwise be asked once per call).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// Rounds of writing what other callers queued meanwhile before the writer task takes over,
/// so that one caller does not keep writing for everyone else.
const WRITE_ROUNDS: usize = 8;

/// Read buffer size; replies to decisions are a few dozen bytes.
const READ_BUFFER: usize = 16 * 1024;

/// Buffers grown past this (a burst of large commands or replies) are freed once empty.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Commands of one [`Batch`] that may be unanswered at once. A call finding none goes out at
/// once; one finding one waits until [`SECOND_BATCH`] calls wait (then they go out as a second
/// command, so that Redis has the next batch in its socket while it runs one) or until the
/// first is answered (then whatever waits goes out); with two unanswered, calls wait for one
/// to be answered, unless a whole [`MAX_BATCH`] waits: that goes out whatever is in flight.
///
/// Measured on 2 cores shared by client and Redis (`tollgate bench --store`, GCRA, 150,000
/// decisions, runs alternating; decisions/s): always at most one in flight, 50 callers:
/// 74-98k; always two: 69-98k; one, and a second from 16 waiting: 114-172k (actix-extensible-
/// rate-limit 76-103k in the same runs); from 8 waiting: 16 callers 65-101k against 42-58k
/// from 16, and 50 callers 105-146k; from 4: no better than 8 (c16 73-95k, c50 101-127k).
const BATCHES_IN_FLIGHT: usize = 2;

/// Calls that wait before a second command of their batch goes out while one is unanswered:
/// fewer would make batches too small to be cheap, more would leave Redis idle between them.
const SECOND_BATCH: usize = 8;

/// Most calls in one batched command, so that one script call never holds Redis long (a
/// GCRA decision costs Redis about 40k instructions in a batch: 64 of them, well under a
/// millisecond).
pub(crate) const MAX_BATCH: usize = 64;

/// Batch queues per connection: [`Batch::queue`] is below this.
pub(crate) const BATCH_QUEUES: usize = 16;

/// Deepest nesting of arrays accepted in a reply (redis-rs allows 100).
const MAX_DEPTH: usize = 100;

/// Largest bulk string accepted in a reply (Redis's own `proto-max-bulk-len` default).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// One multiplexed connection, opened on first use and again after it breaks.
pub(crate) struct TcpConnection {
    shared: Arc<Shared>,
}

/// A script whose calls may share one command: `EVALSHA <sha> <n × keys_per_call>`, then
/// every call's keys, then every call's arguments, then `tail`. The reply is split among the calls in order: a
/// bulk string into n equal parts, an array of n elements one each; anything else (an error,
/// say) goes to every call whole. A call alone is sent as `n = 1` and gets the reply as is.
pub(crate) struct Batch {
    /// Which of the connection's queues its waiting calls join (below [`BATCH_QUEUES`]).
    pub(crate) queue: usize,
    /// The script's SHA-1.
    pub(crate) sha: &'static str,
    /// Arguments after every call's, as RESP bulk strings, and how many they are.
    pub(crate) tail: &'static [u8],
    pub(crate) tail_arguments: usize,
    /// Keys each call writes.
    pub(crate) keys_per_call: usize,
}

/// Calls of one batch waiting to be sent, and how many of its commands are in flight.
#[derive(Default)]
struct Waiting {
    /// RESP bulk strings: the waiting calls' keys, then (in `arguments`) their arguments.
    keys: Vec<u8>,
    arguments: Vec<u8>,
    /// Per call, where its part ends: in `keys`, in `arguments`, and how many bulk strings
    /// the calls up to it wrote in all.
    ends: Vec<(usize, usize, usize)>,
    senders: Vec<oneshot::Sender<RedisResult<Value>>>,
    in_flight: usize,
    /// The batch this queue holds (every call sets it; it is the same for one queue).
    batch: Option<&'static Batch>,
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
    /// Counts finished connection attempts; callers waiting for one watch it.
    attempts: watch::Sender<u64>,
    state: Mutex<State>,
}

/// Connection `generation` is the current one exactly while `link` is `Some` and `generation`
/// has not moved on: tasks and writers of an older connection check that and touch nothing.
struct State {
    /// The open connection, if any.
    link: Option<Link>,
    /// Counts connections opened.
    generation: u64,
    /// Commands not yet handed to a writer.
    out: Vec<u8>,
    /// An empty buffer kept for the next swap with `out`.
    spare: Vec<u8>,
    /// Whether a caller or the writer task is writing (then new bytes wait in `out`).
    writing: bool,
    /// Calls sent or queued, oldest first: replies arrive in this order.
    pending: VecDeque<Pending>,
    /// Per batch queue, the calls waiting to share a command (not yet in `out`).
    batches: Vec<Waiting>,
    /// Since when calls have waited with no reply arriving (`None` while none waits).
    waiting_since: Option<Instant>,
    /// Whether a connection attempt is under way.
    connecting: bool,
    /// The last connection attempt's failure, while it is recent.
    last_failure: Option<(Instant, RedisError)>,
    /// The connection handle was dropped: nothing opens again.
    closed: bool,
}

struct Link {
    socket: Arc<TcpStream>,
    reader: AbortHandle,
    watchdog: AbortHandle,
    writer: Option<AbortHandle>,
}

impl Link {
    fn stop(self) {
        self.reader.abort();
        self.watchdog.abort();
        if let Some(writer) = self.writer {
            writer.abort();
        }
    }
}

/// A command waiting for its replies: one for a command, several (as an array) for a pipeline.
struct Pending {
    replies: usize,
    array: bool,
    collected: Vec<Value>,
    to: ReplyTo,
}

/// Who gets a command's reply.
enum ReplyTo {
    /// The one call that sent it.
    Call(oneshot::Sender<RedisResult<Value>>),
    /// The calls batched into it, in order, and their queue.
    Batch {
        queue: usize,
        senders: Vec<oneshot::Sender<RedisResult<Value>>>,
    },
}

impl ReplyTo {
    fn fail(self, error: &RedisError) {
        match self {
            ReplyTo::Call(sender) => {
                let _ = sender.send(Err(error.clone()));
            }
            ReplyTo::Batch { senders, .. } => {
                for sender in senders {
                    let _ = sender.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Outcome of [`Shared::write_rounds`].
enum Written {
    /// Everything queued is written.
    Done,
    /// The socket is full, or the rounds ran out: the writer task goes on from `written`.
    Handover { buffer: Vec<u8>, written: usize },
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
                attempts: watch::Sender::new(0),
                state: Mutex::new(State {
                    link: None,
                    generation: 0,
                    out: Vec::new(),
                    spare: Vec::new(),
                    writing: false,
                    pending: VecDeque::new(),
                    batches: (0..BATCH_QUEUES).map(|_| Waiting::default()).collect(),
                    waiting_since: None,
                    connecting: false,
                    last_failure: None,
                    closed: false,
                }),
            }),
        }
    }

    /// Send one command and wait for its reply (a server error is an `Err`).
    pub(crate) async fn command(&self, command: &redis::Cmd) -> RedisResult<Value> {
        refuse_empty(command)?;
        self.command_with(|out| command.write_packed_command(out))
            .await
    }

    /// Send the one command `write` appends (packed RESP, one reply) and wait for its reply.
    pub(crate) async fn command_with(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> RedisResult<Value> {
        match self.call(write, 1, false).await? {
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
        pipeline.cmd_iter().try_for_each(refuse_empty)?;
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
                true,
            )
            .await?;
        let first_error = match &reply {
            Value::Array(values) => values.iter().find_map(|v| match v {
                Value::ServerError(error) => Some(error),
                _ => None,
            }),
            _ => None,
        };
        match first_error {
            Some(error) => Err(error.clone().into()),
            None => Ok(reply),
        }
    }

    /// Send one call of `batch`, alone or batched with others of it (see [`Batch`]): `write`
    /// appends its keys to the first buffer and its arguments to the second, as RESP bulk
    /// strings, and returns how many it wrote. Waits for its part of the reply (a server
    /// error is an `Err`).
    pub(crate) async fn batched(
        &self,
        batch: &'static Batch,
        write: impl FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> usize,
    ) -> RedisResult<Value> {
        let receiver = match self.shared.send_batched(batch, write) {
            Ok(receiver) => receiver,
            Err(write) => {
                self.shared.connect().await?;
                self.shared
                    .send_batched(batch, write)
                    .map_err(|_| io_error(io::ErrorKind::NotConnected, "connection lost"))?
            }
        };
        match wait(receiver).await? {
            Value::ServerError(error) => Err(error.into()),
            value => Ok(value),
        }
    }

    async fn call(
        &self,
        write: impl FnOnce(&mut Vec<u8>),
        replies: usize,
        array: bool,
    ) -> RedisResult<Value> {
        let receiver = match self.shared.send(write, replies, array) {
            Ok(receiver) => receiver,
            Err(write) => {
                self.shared.connect().await?;
                // Broken again at once: fail rather than loop.
                self.shared
                    .send(write, replies, array)
                    .map_err(|_| io_error(io::ErrorKind::NotConnected, "connection lost"))?
            }
        };
        wait(receiver).await
    }
}

/// Share a batched command's reply among its calls (see [`Batch`]).
fn split(
    reply: Value,
    senders: Vec<oneshot::Sender<RedisResult<Value>>>,
    completed: &mut Vec<(oneshot::Sender<RedisResult<Value>>, Value)>,
) {
    let calls = senders.len();
    match reply {
        Value::BulkString(bytes) if calls > 1 && !bytes.is_empty() && bytes.len() % calls == 0 => {
            let part = bytes.len() / calls;
            for (sender, chunk) in senders.into_iter().zip(bytes.chunks_exact(part.max(1))) {
                completed.push((sender, Value::BulkString(chunk.to_vec())));
            }
        }
        Value::Array(values) if calls > 1 && values.len() == calls => {
            completed.extend(senders.into_iter().zip(values));
        }
        whole => {
            for sender in senders {
                completed.push((sender, whole.clone()));
            }
        }
    }
}

/// A call's reply, or why it will not come.
async fn wait(receiver: oneshot::Receiver<RedisResult<Value>>) -> RedisResult<Value> {
    // No timer per call: the watchdog fails every waiting call when the connection stays
    // silent for a response timeout.
    receiver.await.unwrap_or_else(|_| {
        Err(io_error(
            io::ErrorKind::ConnectionAborted,
            "connection closed before the reply",
        ))
    })
}

/// A command with no arguments gets no reply from Redis, which would shift every later reply
/// onto the wrong call.
fn refuse_empty(command: &redis::Cmd) -> RedisResult<()> {
    if command.args_iter().next().is_none() {
        return Err(RedisError::from((ErrorKind::Client, "empty command")));
    }
    Ok(())
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        let link = {
            let mut state = self.shared.lock();
            state.closed = true;
            state.link.take()
        };
        if let Some(link) = link {
            link.stop();
        }
    }
}

impl Waiting {
    /// Bulk strings in `keys` and `arguments` together.
    fn bulk_strings(&self) -> usize {
        self.ends.last().map_or(0, |&(_, _, bulk)| bulk)
    }

    /// Whether the waiting calls go out now: none of the batch's commands is unanswered, or
    /// enough wait to make a second one worth its price, or a whole batch waits.
    fn ready(&self) -> bool {
        let waiting = self.senders.len();
        waiting > 0
            && (self.in_flight == 0
                || (self.in_flight < BATCHES_IN_FLIGHT && waiting >= SECOND_BATCH)
                || waiting >= MAX_BATCH)
    }

    /// Forget the calls whose callers no longer wait for them, and their keys and arguments.
    fn drop_given_up(&mut self) {
        let mut keys = Vec::with_capacity(self.keys.len());
        let mut arguments = Vec::with_capacity(self.arguments.len());
        let mut ends = Vec::with_capacity(self.ends.len());
        let mut senders = Vec::with_capacity(self.senders.len());
        let (mut keys_from, mut arguments_from, mut bulk_from) = (0, 0, 0);
        let mut bulk_strings = 0;
        for (sender, (keys_end, arguments_end, bulk_end)) in
            self.senders.drain(..).zip(self.ends.drain(..))
        {
            if !sender.is_closed() {
                keys.extend_from_slice(&self.keys[keys_from..keys_end]);
                arguments.extend_from_slice(&self.arguments[arguments_from..arguments_end]);
                bulk_strings += bulk_end - bulk_from;
                ends.push((keys.len(), arguments.len(), bulk_strings));
                senders.push(sender);
            }
            (keys_from, arguments_from, bulk_from) = (keys_end, arguments_end, bulk_end);
        }
        (self.keys, self.arguments, self.ends) = (keys, arguments, ends);
        self.senders = senders;
    }
}

impl State {
    /// Expect a reply for a command just put in `out`.
    fn expect(&mut self, pending: Pending) {
        if self.pending.is_empty() {
            self.waiting_since = Some(Instant::now());
        }
        self.pending.push_back(pending);
    }

    /// Put the calls waiting in batch queue `queue` into `out` as one command. A call whose
    /// caller gave up meanwhile (timed out, dropped) is left out: it was never sent, so it
    /// never runs, not even after commands its caller sent since.
    fn send_waiting(&mut self, queue: usize) {
        let waiting = &mut self.batches[queue];
        if waiting.senders.iter().any(|sender| sender.is_closed()) {
            waiting.drop_given_up();
        }
        let calls = waiting.senders.len();
        let Some(batch) = waiting.batch.filter(|_| calls > 0) else {
            return;
        };
        let mut head = Resp::new(
            &mut self.out,
            3 + waiting.bulk_strings() + batch.tail_arguments,
        );
        head.bytes(b"EVALSHA");
        head.bytes(batch.sha.as_bytes());
        head.integer((calls * batch.keys_per_call) as u64);
        // The rest is already RESP: written as it stands.
        self.out.extend_from_slice(&waiting.keys);
        self.out.extend_from_slice(&waiting.arguments);
        self.out.extend_from_slice(batch.tail);
        waiting.keys.clear();
        waiting.arguments.clear();
        waiting.ends.clear();
        waiting.in_flight += 1;
        let senders = std::mem::replace(&mut waiting.senders, Vec::with_capacity(calls));
        self.expect(Pending {
            replies: 1,
            array: false,
            collected: Vec::new(),
            to: ReplyTo::Batch { queue, senders },
        });
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => {
                // Code under this lock panicked (a command writer, say): `out` may end in half a
                // command. Drop everything queued (never sent) and the connection; its tasks
                // see it gone and stop; the next call opens a new one. The dropped senders fail
                // their calls as "closed before the reply".
                self.state.clear_poison();
                let mut state = poisoned.into_inner();
                if let Some(link) = state.link.take() {
                    link.stop();
                }
                state.out.clear();
                state.writing = false;
                state.waiting_since = None;
                state.pending.clear();
                for waiting in &mut state.batches {
                    *waiting = Waiting::default();
                }
                state
            }
        }
    }

    /// Queue a call and, when no one is writing, write it now. Gives `write` back when there
    /// is no connection.
    fn send<W: FnOnce(&mut Vec<u8>)>(
        self: &Arc<Self>,
        write: W,
        replies: usize,
        array: bool,
    ) -> Result<oneshot::Receiver<RedisResult<Value>>, W> {
        let mut state = self.lock();
        if state.link.is_none() {
            return Err(write);
        }
        write(&mut state.out);
        let (sender, receiver) = oneshot::channel();
        state.expect(Pending {
            replies,
            array,
            collected: Vec::new(),
            to: ReplyTo::Call(sender),
        });
        self.write_out(state);
        Ok(receiver)
    }

    /// Queue a call of `batch` among its waiting calls, and send them as one command when
    /// [`Waiting::ready`] says so. Gives `write` back when there is no connection.
    fn send_batched<W: FnOnce(&mut Vec<u8>, &mut Vec<u8>) -> usize>(
        self: &Arc<Self>,
        batch: &'static Batch,
        write: W,
    ) -> Result<oneshot::Receiver<RedisResult<Value>>, W> {
        let mut state = self.lock();
        if state.link.is_none() {
            return Err(write);
        }
        let (sender, receiver) = oneshot::channel();
        let waiting = &mut state.batches[batch.queue];
        waiting.batch = Some(batch);
        let bulk_strings =
            waiting.bulk_strings() + write(&mut waiting.keys, &mut waiting.arguments);
        waiting
            .ends
            .push((waiting.keys.len(), waiting.arguments.len(), bulk_strings));
        waiting.senders.push(sender);
        if waiting.ready() {
            state.send_waiting(batch.queue);
            self.write_out(state);
        }
        Ok(receiver)
    }

    /// Write what `out` holds now, unless a writer is at it already (it takes it along).
    fn write_out(self: &Arc<Self>, mut state: MutexGuard<'_, State>) {
        if state.writing || state.out.is_empty() {
            return;
        }
        let Some(socket) = state.link.as_ref().map(|link| Arc::clone(&link.socket)) else {
            return;
        };
        state.writing = true;
        let generation = state.generation;
        let spare = std::mem::take(&mut state.spare);
        let buffer = std::mem::replace(&mut state.out, spare);
        drop(state);
        if let Written::Handover { buffer, written } =
            self.write_rounds(&socket, generation, buffer, 0)
        {
            let writer = tokio::spawn(
                Arc::clone(self).write_in_background(socket, generation, buffer, written),
            )
            .abort_handle();
            let mut state = self.lock();
            let current = state.generation == generation;
            match state.link.as_mut() {
                Some(link) if current => link.writer = Some(writer),
                _ => writer.abort(),
            }
        }
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
                    Ok(n) if n > 0 => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        return Written::Handover { buffer, written };
                    }
                    failed => {
                        let error = failed.err().unwrap_or(io::ErrorKind::WriteZero.into());
                        self.break_link(generation, error);
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
                if state.out.capacity() > KEEP_BUFFER {
                    state.out = Vec::new();
                }
                if buffer.capacity() <= KEEP_BUFFER {
                    state.spare = buffer;
                }
                return Written::Done;
            }
            std::mem::swap(&mut state.out, &mut buffer);
        }
        Written::Handover { buffer, written }
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
                Written::Handover {
                    buffer: rest,
                    written: at,
                } => (buffer, written) = (rest, at),
                Written::Done | Written::Stopped => return,
            }
        }
    }

    /// Read replies and complete the pending calls in order, until the connection breaks.
    async fn read_replies(self: Arc<Self>, socket: Arc<TcpStream>, generation: u64) {
        // However the reader ends (broken connection, aborted, runtime shut down), its
        // connection ends with it: calls never wait on a connection nobody reads.
        let _stop = BreakOnDrop {
            shared: &self,
            generation,
        };
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
                Ok(0) => break io::ErrorKind::UnexpectedEof.into(),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => break e,
            }
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
            if buffer.is_empty() && buffer.capacity() > KEEP_BUFFER {
                buffer = Vec::with_capacity(READ_BUFFER);
            }
            // Replies that arrived whole go to their calls even when what follows is broken.
            match self.complete(generation, &mut values, &mut completed) {
                Completed::Ok => {}
                Completed::Stale => return,
                Completed::Unasked => {
                    break io::Error::new(io::ErrorKind::InvalidData, "a reply nobody asked for");
                }
            }
            if let Err(e) = parsed {
                break io::Error::new(io::ErrorKind::InvalidData, e.to_string());
            }
        };
        self.break_link(generation, error);
    }

    /// Hand `values` to the oldest pending calls, and send the calls of a batch that waited
    /// for one of its commands to be answered.
    fn complete(
        self: &Arc<Self>,
        generation: u64,
        values: &mut Vec<Value>,
        completed: &mut Vec<(oneshot::Sender<RedisResult<Value>>, Value)>,
    ) -> Completed {
        let mut state = self.lock();
        if state.generation != generation || state.link.is_none() {
            values.clear();
            return Completed::Stale;
        }
        let mut outcome = Completed::Ok;
        for value in values.drain(..) {
            let Some(front) = state.pending.front_mut() else {
                outcome = Completed::Unasked;
                break;
            };
            let reply = if front.array {
                front.collected.push(value);
                if front.collected.len() < front.replies {
                    continue;
                }
                Value::Array(std::mem::take(&mut front.collected))
            } else {
                value
            };
            let Some(call) = state.pending.pop_front() else {
                continue;
            };
            match call.to {
                ReplyTo::Call(sender) => completed.push((sender, reply)),
                ReplyTo::Batch { queue, senders } => {
                    split(reply, senders, completed);
                    let waiting = &mut state.batches[queue];
                    debug_assert!(waiting.in_flight > 0, "a batch answered twice");
                    waiting.in_flight = waiting.in_flight.saturating_sub(1);
                }
            }
        }
        values.clear();
        // Only now, after every reply of this read found its call: a batch sent from inside
        // the loop would be owed the next reply, and a stray one would go to it. Only a queue
        // whose command was answered can have become ready.
        for queue in 0..BATCH_QUEUES {
            if state.batches[queue].ready() {
                state.send_waiting(queue);
            }
        }
        if !completed.is_empty() {
            // A reply arrived: the connection is alive, and the next call's wait starts now.
            state.waiting_since = (!state.pending.is_empty()).then(Instant::now);
        }
        // Batches sent above: written now (this task is the only one that would).
        self.write_out(state);
        for (sender, reply) in completed.drain(..) {
            // A caller that gave up (timed out or dropped) no longer listens.
            let _ = sender.send(Ok(reply));
        }
        outcome
    }

    /// Close the connection when calls have waited a whole response timeout with no reply.
    async fn watch_silence(self: Arc<Self>, generation: u64) {
        let period = (self.response_timeout / 4).max(Duration::from_millis(5));
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let silent = {
                let state = self.lock();
                if state.generation != generation || state.link.is_none() {
                    return;
                }
                state
                    .waiting_since
                    .is_some_and(|since| since.elapsed() >= self.response_timeout)
            };
            if silent {
                self.break_link(
                    generation,
                    io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!(
                            "no reply from Redis within the response timeout ({:?})",
                            self.response_timeout
                        ),
                    ),
                );
                return;
            }
        }
    }

    /// Close connection `generation` and fail every call waiting on it.
    fn break_link(&self, generation: u64, error: io::Error) {
        let (link, pending) = {
            let mut state = self.lock();
            if state.generation != generation {
                return;
            }
            let Some(link) = state.link.take() else {
                return;
            };
            state.out.clear();
            state.writing = false;
            state.waiting_since = None;
            // Calls waiting to be batched were never sent, but fail alike: simpler for
            // callers, and never wrong (a call that did not run may be taken as one that ran).
            let mut calls: Vec<ReplyTo> = std::mem::take(&mut state.pending)
                .into_iter()
                .map(|pending| pending.to)
                .collect();
            for (queue, waiting) in state.batches.iter_mut().enumerate() {
                let waiting = std::mem::take(waiting);
                if !waiting.senders.is_empty() {
                    calls.push(ReplyTo::Batch {
                        queue,
                        senders: waiting.senders,
                    });
                }
            }
            (link, calls)
        };
        link.stop();
        // These calls may have run: never let their error read as a refused connection (which
        // callers take as "certainly not run").
        let kind = match error.kind() {
            io::ErrorKind::ConnectionRefused => io::ErrorKind::ConnectionReset,
            kind => kind,
        };
        let error = RedisError::from(io::Error::new(kind, error.to_string()));
        for call in pending {
            call.fail(&error);
        }
    }

    /// Make sure there is a connection: wait for the attempt under way, or start one in a
    /// task of its own (so that a caller giving up does not cancel it).
    async fn connect(self: &Arc<Self>) -> RedisResult<()> {
        let mut attempts = self.attempts.subscribe();
        {
            let mut state = self.lock();
            if state.link.is_some() {
                return Ok(());
            }
            if let Some((at, error)) = &state.last_failure {
                if at.elapsed() < RECONNECT_PAUSE {
                    return Err(error.clone());
                }
            }
            if !state.connecting {
                state.connecting = true;
                tokio::spawn(Arc::clone(self).attempt());
            }
        }
        // The sender lives in `self`: `changed` cannot fail while we hold it.
        let _ = attempts.changed().await;
        let state = self.lock();
        match (&state.link, &state.last_failure) {
            (Some(_), _) => Ok(()),
            (None, Some((_, error))) => Err(error.clone()),
            (None, None) => Err(io_error(io::ErrorKind::NotConnected, "connection lost")),
        }
    }

    /// One connection attempt; installs the connection and its tasks, or records the failure.
    async fn attempt(self: Arc<Self>) {
        // Even if this task is dropped midway (its runtime shut down), the attempt ends and
        // its waiters wake: no later call waits on an attempt nobody makes.
        let _end = AttemptEnds(&self);
        let opened = match tokio::time::timeout(self.connect_timeout, self.open()).await {
            Ok(opened) => opened,
            Err(_) => Err(io_error(
                io::ErrorKind::TimedOut,
                "connecting to Redis timed out",
            )),
        };
        let mut state = self.lock();
        match opened {
            Ok(_) if state.closed => {}
            Ok(socket) => {
                let socket = Arc::new(socket);
                state.generation += 1;
                let generation = state.generation;
                let reader =
                    tokio::spawn(Arc::clone(&self).read_replies(Arc::clone(&socket), generation))
                        .abort_handle();
                let watchdog =
                    tokio::spawn(Arc::clone(&self).watch_silence(generation)).abort_handle();
                state.link = Some(Link {
                    socket,
                    reader,
                    watchdog,
                    writer: None,
                });
                state.last_failure = None;
            }
            Err(error) => state.last_failure = Some((Instant::now(), error)),
        }
    }

    /// A new socket, logged in and on the URL's database.
    async fn open(&self) -> RedisResult<TcpStream> {
        let endpoint = &self.endpoint;
        let mut socket = TcpStream::connect((endpoint.host.as_str(), endpoint.port)).await?;
        socket.set_nodelay(true)?;
        let mut buffer = Vec::with_capacity(256);
        if let Some(password) = &endpoint.password {
            let mut auth = redis::cmd("AUTH");
            if let Some(username) = &endpoint.username {
                auth.arg(username);
            }
            auth.arg(password);
            let mut reply = handshake(&mut socket, &mut buffer, &auth).await?;
            // Redis before 6 knows no users: `AUTH <user> <password>` is refused as a wrong
            // number of arguments, and `AUTH <password>` is what it takes (as redis-rs does).
            if endpoint.username.is_some() && is_wrong_arity(&reply) {
                let password_only = redis::cmd("AUTH").arg(password).to_owned();
                reply = handshake(&mut socket, &mut buffer, &password_only).await?;
            }
            if let Value::ServerError(error) = reply {
                return Err(RedisError::from((
                    ErrorKind::AuthenticationFailed,
                    "Redis refused the URL's credentials",
                    RedisError::from(error).to_string(),
                )));
            }
        }
        if endpoint.db != 0 {
            let select = redis::cmd("SELECT").arg(endpoint.db).to_owned();
            if let Value::ServerError(error) = handshake(&mut socket, &mut buffer, &select).await? {
                return Err(error.into());
            }
        }
        Ok(socket)
    }
}

/// Send one command of the connection handshake and read its reply (a server error as a
/// value, for the caller to judge).
async fn handshake(
    socket: &mut TcpStream,
    buffer: &mut Vec<u8>,
    command: &redis::Cmd,
) -> RedisResult<Value> {
    socket.write_all(&command.get_packed_command()).await?;
    loop {
        if let Some((value, length)) = parse_value(buffer, 0)? {
            buffer.drain(..length);
            return Ok(value);
        }
        if socket.read_buf(buffer).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
}

fn is_wrong_arity(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(error)
        if error.details().is_some_and(|d| d.contains("wrong number of arguments")))
}

/// What [`Shared::complete`] found.
enum Completed {
    Ok,
    /// The connection is no longer the current one: its reader stops.
    Stale,
    /// More replies than calls: the stream cannot be trusted.
    Unasked,
}

/// Ends a connection attempt: no longer under way, and its waiters woken.
struct AttemptEnds<'a>(&'a Shared);

impl Drop for AttemptEnds<'_> {
    fn drop(&mut self) {
        self.0.lock().connecting = false;
        self.0.attempts.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Breaks the reader's connection when the reader goes away.
struct BreakOnDrop<'a> {
    shared: &'a Shared,
    generation: u64,
}

impl Drop for BreakOnDrop<'_> {
    fn drop(&mut self) {
        self.shared.break_link(
            self.generation,
            io::Error::new(io::ErrorKind::ConnectionAborted, "the reader stopped"),
        );
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
            if length > MAX_BULK {
                return Err(protocol_error("a bulk string over 512 MiB"));
            }
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

    /// When waiting calls go out: at once with nothing unanswered; as a second command once
    /// `SECOND_BATCH` wait; with two unanswered, only as a whole batch.
    #[test]
    fn waiting_calls_go_out_by_the_batching_rule() {
        let waiting = |in_flight: usize, calls: usize| {
            let mut waiting = Waiting {
                in_flight,
                ..Waiting::default()
            };
            waiting.senders = (0..calls).map(|_| oneshot::channel().0).collect();
            waiting.ready()
        };
        assert!(!waiting(0, 0));
        assert!(waiting(0, 1));
        assert!(!waiting(1, SECOND_BATCH - 1));
        assert!(waiting(1, SECOND_BATCH));
        assert!(!waiting(2, MAX_BATCH - 1));
        assert!(waiting(2, MAX_BATCH));
    }

    /// Calls whose callers gave up leave the queue with exactly their own keys and arguments.
    #[test]
    fn given_up_calls_leave_with_their_keys_and_arguments() {
        let mut waiting = Waiting::default();
        let mut receivers = Vec::new();
        for (key, argument) in [("a", "1"), ("bb", "22"), ("c", "3")] {
            let (sender, receiver) = oneshot::channel();
            let mut keys = crate::arguments::Bulk::new(&mut waiting.keys);
            keys.bytes(key.as_bytes());
            let mut arguments = crate::arguments::Bulk::new(&mut waiting.arguments);
            arguments.bytes(argument.as_bytes());
            arguments.bytes(argument.as_bytes());
            let bulk_strings = waiting.bulk_strings() + 3;
            waiting
                .ends
                .push((waiting.keys.len(), waiting.arguments.len(), bulk_strings));
            waiting.senders.push(sender);
            receivers.push(receiver);
        }
        drop(receivers.remove(1));
        waiting.drop_given_up();
        assert_eq!(waiting.keys, b"$1\r\na\r\n$1\r\nc\r\n");
        assert_eq!(
            waiting.arguments,
            b"$1\r\n1\r\n$1\r\n1\r\n$1\r\n3\r\n$1\r\n3\r\n"
        );
        assert_eq!(waiting.bulk_strings(), 6);
        assert_eq!(waiting.ends, vec![(7, 14, 3), (14, 28, 6)]);
        assert_eq!(waiting.senders.len(), 2);
        assert!(waiting.senders.iter().all(|s| !s.is_closed()));
    }

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

    /// Loopback `port`, no credentials, database 0.
    fn local(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
            username: None,
            password: None,
            db: 0,
        }
    }

    fn connection_to(server: &tollgate_testkit::RedisServer) -> TcpConnection {
        TcpConnection::new(
            local(server.port()),
            Duration::from_secs(2),
            Duration::from_secs(10),
        )
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

    #[tokio::test]
    async fn a_one_command_pipeline_is_an_array_and_empty_commands_are_refused() {
        let server = tollgate_testkit::shared_standalone();
        let connection = connection_to(server);
        let mut pipeline = redis::pipe();
        pipeline.cmd("PING");
        assert_eq!(
            connection.pipeline(&pipeline).await.unwrap(),
            Value::Array(vec![Value::SimpleString("PONG".into())])
        );
        let mut pipeline = redis::pipe();
        pipeline.cmd("EVALSHA").arg("0000").arg(0);
        let noscript = connection.pipeline(&pipeline).await.unwrap_err();
        assert_eq!(
            noscript.kind(),
            ErrorKind::Server(redis::ServerErrorKind::NoScript)
        );
        let empty = connection.command(&redis::Cmd::new()).await.unwrap_err();
        assert_eq!(empty.kind(), ErrorKind::Client);
        let echo = connection
            .command(redis::cmd("ECHO").arg("after"))
            .await
            .unwrap();
        assert_eq!(echo, Value::BulkString(b"after".to_vec()));
    }

    /// A server that accepts connections, reads what it is sent, and never answers.
    async fn silent_server() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut sink = vec![0; 4096];
                    while socket.read(&mut sink).await.is_ok_and(|n| n > 0) {}
                });
            }
        });
        port
    }

    /// Callers that give up long before the response timeout (the limiter's own, shorter
    /// timeout) still get a silent connection closed, and nothing piles up on it.
    #[tokio::test]
    async fn a_silent_server_is_dropped_even_when_callers_give_up_first() {
        let port = silent_server().await;
        let connection = TcpConnection::new(
            local(port),
            Duration::from_secs(1),
            Duration::from_millis(200),
        );
        // 5 x 20 ms: well inside the 200 ms response timeout.
        for _ in 0..5 {
            let ping = redis::cmd("PING");
            let call = connection.command(&ping);
            let outcome = tokio::time::timeout(Duration::from_millis(20), call).await;
            assert!(outcome.is_err(), "{outcome:?}");
        }
        assert_eq!(connection.shared.lock().pending.len(), 5);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let state = connection.shared.lock();
        assert!(state.link.is_none(), "the silent connection is still open");
        assert!(state.pending.is_empty());
    }

    /// A caller that waits out the response timeout gets a timeout error (not a refusal).
    #[tokio::test]
    async fn a_call_on_a_silent_server_fails_after_the_response_timeout() {
        let port = silent_server().await;
        let connection = TcpConnection::new(
            local(port),
            Duration::from_secs(1),
            Duration::from_millis(100),
        );
        let started = Instant::now();
        let error = connection.command(&redis::cmd("PING")).await.unwrap_err();
        assert!(error.is_timeout(), "{error}");
        assert!(!error.is_connection_refusal());
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(100) && waited < Duration::from_secs(1),
            "{waited:?}"
        );
    }

    /// Connecting (here: a login answered after 300 ms) goes on when every caller gives up
    /// after 20 ms: one connection is opened, not one per caller, and a later call uses it.
    #[tokio::test]
    async fn connecting_survives_callers_that_give_up() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0; 4096];
                    // AUTH: answered late.
                    if socket.read(&mut buffer).await.unwrap_or(0) == 0 {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let _ = socket.write_all(b"+OK\r\n").await;
                    // Then every read is one PING.
                    while socket.read(&mut buffer).await.is_ok_and(|n| n > 0) {
                        let _ = socket.write_all(b"+PONG\r\n").await;
                    }
                });
            }
        });
        let endpoint = Endpoint {
            password: Some("secret".into()),
            ..local(port)
        };
        let connection =
            TcpConnection::new(endpoint, Duration::from_secs(2), Duration::from_secs(2));
        for _ in 0..3 {
            let ping = redis::cmd("PING");
            let call = connection.command(&ping);
            assert!(
                tokio::time::timeout(Duration::from_millis(20), call)
                    .await
                    .is_err()
            );
        }
        let pong = connection.command(&redis::cmd("PING")).await.unwrap();
        assert_eq!(pong, Value::SimpleString("PONG".into()));
        assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// A fake server that answers each read with the next of `replies`, then `+PONG`.
    async fn scripted_server(replies: &'static [&'static [u8]]) -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buffer = vec![0; 4096];
            let mut next = replies.iter();
            while socket.read(&mut buffer).await.is_ok_and(|n| n > 0) {
                let reply = next.next().copied().unwrap_or(b"+PONG\r\n");
                let _ = socket.write_all(reply).await;
            }
        });
        port
    }

    fn with_credentials(port: u16) -> TcpConnection {
        let endpoint = Endpoint {
            username: Some("default".into()),
            password: Some("secret".into()),
            ..local(port)
        };
        TcpConnection::new(endpoint, Duration::from_secs(2), Duration::from_secs(2))
    }

    /// Redis before 6 refuses `AUTH <user> <password>`; the password alone is tried next.
    #[tokio::test]
    async fn a_server_without_users_gets_the_password_alone() {
        let port = scripted_server(&[
            b"-ERR wrong number of arguments for 'auth' command\r\n",
            b"+OK\r\n",
        ])
        .await;
        let connection = with_credentials(port);
        let pong = connection.command(&redis::cmd("PING")).await.unwrap();
        assert_eq!(pong, Value::SimpleString("PONG".into()));
    }

    #[tokio::test]
    async fn refused_credentials_are_an_authentication_error() {
        let port = scripted_server(&[b"-WRONGPASS invalid username-password pair\r\n"]).await;
        let connection = with_credentials(port);
        let error = connection.command(&redis::cmd("PING")).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::AuthenticationFailed, "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    /// A connection the server closes (`CLIENT KILL`, a restart, an idle timeout) is noticed
    /// by the reader, and the next call opens a new one instead of failing.
    #[tokio::test]
    async fn a_connection_closed_by_the_server_is_reopened_by_the_next_call() {
        let server = tollgate_testkit::RedisServer::start().unwrap();
        let connection = connection_to(&server);
        connection.command(&redis::cmd("PING")).await.unwrap();
        let killed: i64 = server.query(&["CLIENT", "KILL", "TYPE", "normal"]).unwrap();
        assert_eq!(killed, 1);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            connection.shared.lock().link.is_none(),
            "the close went unnoticed"
        );
        let pong = connection.command(&redis::cmd("PING")).await.unwrap();
        assert_eq!(pong, Value::SimpleString("PONG".into()));
        assert_eq!(connection.shared.lock().generation, 2);
    }
}
