//! The batching rule, in front of any connection that runs one command at a time.
//!
//! Calls of one script that find one of its calls already sent and unanswered wait instead,
//! and go out together as **one** script call when it is answered (or as one more when
//! enough of them wait: [`Queue::ready`]). At low load every call goes out at once, alone;
//! under load the batches grow with what queued during one round trip, and Redis pays for one
//! script call where it paid for n.
//!
//! The rule knows nothing of what a script decides. A batchable call ([`Batchable`]) names its
//! [`BatchGroup`] (the script, in its single and batch forms, and the arguments that every
//! call of the batch shares, such as the mode and an injected time) and writes its own keys and
//! arguments. A batch is `EVALSHA <batch sha> <n keys> <every call's keys> <every call's
//! arguments> <shared arguments>`; its reply is split among the calls in order: a bulk string
//! into n equal parts, an array of n elements one each; anything else (a server error, say)
//! goes to every call whole. So a new script batches by following that convention in Lua, with
//! no change here.
//!
//! Guarantees, whatever the connection under it:
//! - each call is decided by the script exactly as if it were sent alone, in the order the
//!   calls joined the batch (the script runs a batch atomically);
//! - a call whose caller gave up (timed out, dropped) while it waited is left out of its batch:
//!   it was never sent, so it never runs, not even after what its caller does next;
//! - a call is never sent twice once it may have run: if the batch fails on the connection,
//!   every call in it fails (whether it ran is unknown) and the caller's failure policy
//!   decides. Only a call that Redis refused before running it is sent again (below).
//!
//! With replica acknowledgement ([`Wait`], a group's), a batch is sent as its script call and
//! one `WAIT <replicas> <timeout>` behind it, in one pipeline on one connection: `WAIT` answers
//! once that many replicas hold every write the connection made before it, the batch's included,
//! so one `WAIT` covers the whole batch. Each call of the batch is answered with the batch's
//! count of replicas ([`Answer::acked`]) only then; what that count means for a decision is the
//! store's rule (`store.rs`). On a Cluster the pipeline goes to the batch's node, whose
//! connection took the writes: one `WAIT` per node's batch. Redis holds the connection's later
//! commands until `WAIT` answers (it blocks the client), so batches in flight on one connection
//! wait their turn for their replicas.
//!
//! On a Cluster ([`Lane`]), calls queue per node (by the slot map of `cluster.rs`) and a
//! node's batch is one call of the cross-slot form of the script, sent to that node. A call
//! that the node refused because it does not serve its key (the map was stale, or the slot is
//! migrating) did not run: it is sent again alone, with its keys declared, through redis-rs's
//! routing, which follows `MOVED` and `ASK` (a caller that gave up meanwhile is not). Where
//! the nodes refuse the cross-slot script itself (Redis before 7), the batch is sent again the
//! same way and calls queue per slot from then on.

use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::{ErrorKind, RedisError, RedisResult, Value};
use tokio::sync::oneshot;

use crate::arguments::Arguments;
use crate::cluster;

/// Commands of one queue that may be unanswered at once. A call finding none goes out at
/// once; one finding some waits until [`MORE_PER_BATCH`] calls per unanswered command wait
/// (8 behind one, 16 behind two, 24 behind three: then they go out as one more command, so
/// that Redis has the next batch in its socket while it runs one) or until one is answered
/// (then whatever waits goes out); with this many unanswered, calls wait for one to be
/// answered, unless a whole [`MAX_BATCH`] waits: that goes out whatever is in flight.
///
/// Each command passes through redis-rs's connection task on its way out and back, so a batch
/// spends longer outside Redis than its round trip; more commands in flight keep Redis busy
/// meanwhile. Of the rules measured (bench/HISTORY.md, "One Redis transport"), this one was as
/// good as the best fixed one at 16, 50 and 64 callers.
const BATCHES_IN_FLIGHT: usize = 4;

/// Calls that wait, per command of their queue already unanswered, before one more goes out:
/// fewer would make batches too small to be cheap, more would leave Redis idle between them.
const MORE_PER_BATCH: usize = 8;

/// Most calls in one batch, so that one script call never holds Redis long.
pub(crate) const MAX_BATCH: usize = 64;

/// `WAIT <replicas> <timeout_ms>` after a command, on the same connection: the command is
/// answered only once that many replicas hold its writes (or the timeout passed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wait {
    pub(crate) replicas: u32,
    /// At least 1: `WAIT` with 0 waits forever.
    pub(crate) timeout_ms: u64,
}

impl Wait {
    /// `command` and this `WAIT` behind it, as one pipeline.
    pub(crate) fn after(self, command: redis::Cmd) -> redis::Pipeline {
        let mut pipeline = redis::Pipeline::with_capacity(2);
        pipeline
            .add_command(command)
            .cmd("WAIT")
            .arg(self.replicas)
            .arg(self.timeout_ms);
        pipeline
    }
}

/// A command's reply (a server error in its place is an `Err` instead), and when it was sent
/// with a [`Wait`], how many replicas acknowledged the writes of its connection up to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) value: Value,
    pub(crate) acked: Option<u32>,
}

impl Answer {
    /// The reply of a command sent without a `WAIT`.
    pub(crate) fn alone(value: Value) -> Self {
        Answer { value, acked: None }
    }
}

/// A script in the forms a batch needs. All take the same arguments per call; the batch form
/// decides every call as a batch even when it is alone (the single form decides a lone call
/// inline, which is cheaper); the cross-slot form is the batch form with its keys in `ARGV`
/// (`cluster.rs`), for a Cluster node's batch.
#[derive(Debug)]
pub(crate) struct ScriptForms {
    /// The form a call alone is sent in.
    single: &'static redis::Script,
    single_source: &'static str,
    /// The form of a batch.
    batch: &'static redis::Script,
    batch_source: &'static str,
    /// The form of a Cluster node's batch.
    cross_slot: redis::Script,
    cross_slot_source: String,
}

impl ScriptForms {
    /// The forms of a script whose single and batch forms are these (the cross-slot form is
    /// made from the batch form).
    pub(crate) fn new(
        (single, single_source): (&'static redis::Script, &'static str),
        (batch, batch_source): (&'static redis::Script, &'static str),
    ) -> Self {
        let cross_slot_source = cluster::cross_slot_source(batch_source);
        ScriptForms {
            single,
            single_source,
            batch,
            batch_source,
            cross_slot: redis::Script::new(&cross_slot_source),
            cross_slot_source,
        }
    }
}

/// What a call's batch is: calls batch only with calls of the same script and the same shared
/// arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchGroup {
    pub(crate) forms: &'static ScriptForms,
    /// Arguments after every call's own (mode, injected time, ...): empty in the common case,
    /// so that a group costs no allocation.
    pub(crate) shared: Vec<Vec<u8>>,
    /// The `WAIT` behind each of the group's commands, if its calls wait for replicas.
    pub(crate) wait: Option<Wait>,
}

impl PartialEq for ScriptForms {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for ScriptForms {}

/// A script call that may share a batch.
pub(crate) trait Batchable {
    /// Its group; `None` when it must go alone (several policies, say).
    fn group(&self) -> Option<BatchGroup>;
    /// The Cluster slot of its keys (asked only on a Cluster).
    fn slot(&self) -> u16;
    /// The call alone, as a command (sent when it finds nothing in flight).
    fn alone(&self) -> redis::Cmd;
    /// The `WAIT` behind its command, when it waits for replicas (its group's, when it has one).
    fn wait(&self) -> Option<Wait> {
        None
    }
    /// Its keys into `keys` and its arguments into `arguments`, as the batch form takes them.
    fn write_parts(&self, keys: &mut Parts, arguments: &mut Parts);
}

/// Where a queue's calls go: calls batch only with calls of the same lane (and group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    /// The one connection of a standalone server or a Sentinel master.
    Connection,
    /// One Cluster node (an index of the slot map): its batches hold keys of several of its
    /// slots, in the cross-slot form.
    Node(u16),
    /// One Cluster slot, with its keys declared: until the slot map is known, or where the
    /// nodes refuse cross-slot scripts.
    Slot(u16),
}

/// A connection that runs one command and returns its reply (a server error as `Err`).
pub(crate) trait Link: Send + Sync + 'static {
    /// Run `command`, routed by its keys, with `wait` behind it on the same connection.
    fn run(
        &self,
        command: redis::Cmd,
        wait: Option<Wait>,
    ) -> impl Future<Output = RedisResult<Answer>> + Send;

    /// The lane of a call whose keys are in `slot` (computed only when needed).
    fn lane(&self, _slot: impl FnOnce() -> u16) -> Lane {
        Lane::Connection
    }

    /// Run a [`Lane::Node`] batch on the master that serves `slot`, one of its calls' slots,
    /// with `wait` behind it on the same connection.
    fn run_on(
        &self,
        _slot: u16,
        command: redis::Cmd,
        wait: Option<Wait>,
    ) -> impl Future<Output = RedisResult<Answer>> + Send {
        async move { self.run(command, wait).await }
    }

    /// A node refused calls of a [`Lane::Node`] batch that it does not serve.
    fn misrouted(&self) {}

    /// A node refused the cross-slot form itself.
    fn refuse_cross_slot(&self) {}
}

/// Arguments laid end to end, with where each ends.
#[derive(Debug, Default)]
pub(crate) struct Parts {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Parts {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let from = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[from..self.ends[i]]
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    fn extend_from(&mut self, other: &Parts, range: Range<usize>) {
        for i in range {
            self.bytes(other.get(i));
        }
    }
}

impl Arguments for Parts {
    fn bytes(&mut self, argument: &[u8]) {
        self.bytes.extend_from_slice(argument);
        self.ends.push(self.bytes.len());
    }

    fn pieces(&mut self, pieces: &[&str]) {
        for piece in pieces {
            self.bytes.extend_from_slice(piece.as_bytes());
        }
        self.ends.push(self.bytes.len());
    }
}

type Reply = oneshot::Sender<RedisResult<Answer>>;

/// Where a call's keys and arguments end in its queue's (or batch's) parts, and the slot of
/// its keys (on a Cluster; else 0).
#[derive(Debug, Clone, Copy)]
struct End {
    keys: usize,
    arguments: usize,
    slot: u16,
}

/// One waiting call: who waits, and where its parts end.
struct Waiter {
    reply: Reply,
    end: End,
}

/// The calls of one group and lane waiting to be sent, and how many of its commands are in
/// flight.
struct Queue {
    group: BatchGroup,
    lane: Lane,
    keys: Parts,
    arguments: Parts,
    waiters: Vec<Waiter>,
    in_flight: usize,
}

impl Queue {
    fn new(group: BatchGroup, lane: Lane) -> Self {
        Queue {
            group,
            lane,
            keys: Parts::default(),
            arguments: Parts::default(),
            waiters: Vec::new(),
            in_flight: 0,
        }
    }

    /// Queue a call whose keys and arguments were just written (routed by `slot` on a
    /// Cluster): it waits for its reply.
    fn wait(&mut self, slot: u16) -> oneshot::Receiver<RedisResult<Answer>> {
        let (reply, receiver) = oneshot::channel();
        self.waiters.push(Waiter {
            reply,
            end: End {
                keys: self.keys.len(),
                arguments: self.arguments.len(),
                slot,
            },
        });
        receiver
    }

    /// Whether the waiting calls go out now: none of the queue's commands is unanswered, or
    /// enough wait to make one more worth its price, or a whole batch waits.
    fn ready(&self) -> bool {
        let waiting = self.waiters.len();
        waiting > 0
            && (self.in_flight == 0
                || (self.in_flight < BATCHES_IN_FLIGHT
                    && waiting >= MORE_PER_BATCH * self.in_flight)
                || waiting >= MAX_BATCH)
    }

    /// Take up to [`MAX_BATCH`] waiting calls whose callers still wait, as one batch.
    fn take(&mut self) -> Option<Batch> {
        let fits = !self.waiters.is_empty() && self.waiters.len() <= MAX_BATCH;
        if fits && self.waiters.iter().all(|w| !w.reply.is_closed()) {
            // The common case: every waiting call goes, so its keys and arguments move as
            // they are instead of being copied call by call.
            self.in_flight += 1;
            return Some(Batch {
                group: self.group.clone(),
                lane: self.lane,
                keys: std::mem::take(&mut self.keys),
                arguments: std::mem::take(&mut self.arguments),
                ends: self.waiters.iter().map(|w| w.end).collect(),
                replies: self.waiters.drain(..).map(|w| w.reply).collect(),
            });
        }
        let mut batch = Batch {
            group: self.group.clone(),
            lane: self.lane,
            keys: Parts::default(),
            arguments: Parts::default(),
            ends: Vec::new(),
            replies: Vec::new(),
        };
        let (mut keys_from, mut arguments_from) = (0, 0);
        let mut rest = Queue::new(self.group.clone(), self.lane);
        for Waiter { reply, end } in self.waiters.drain(..) {
            let (keys, arguments) = (keys_from..end.keys, arguments_from..end.arguments);
            (keys_from, arguments_from) = (end.keys, end.arguments);
            if reply.is_closed() {
                continue;
            }
            let (to_keys, to_arguments) = if batch.replies.len() < MAX_BATCH {
                (&mut batch.keys, &mut batch.arguments)
            } else {
                (&mut rest.keys, &mut rest.arguments)
            };
            to_keys.extend_from(&self.keys, keys);
            to_arguments.extend_from(&self.arguments, arguments);
            let end = End {
                keys: to_keys.len(),
                arguments: to_arguments.len(),
                slot: end.slot,
            };
            if batch.replies.len() < MAX_BATCH {
                batch.ends.push(end);
                batch.replies.push(reply);
            } else {
                rest.waiters.push(Waiter { reply, end });
            }
        }
        (self.keys, self.arguments) = (rest.keys, rest.arguments);
        self.waiters = rest.waiters;
        if batch.replies.is_empty() {
            return None;
        }
        self.in_flight += 1;
        Some(batch)
    }

    fn idle(&self) -> bool {
        self.in_flight == 0 && self.waiters.is_empty()
    }
}

/// Calls taken from a queue, to be sent as one command.
struct Batch {
    group: BatchGroup,
    lane: Lane,
    keys: Parts,
    arguments: Parts,
    /// Where each call's keys and arguments end in `keys` and `arguments`.
    ends: Vec<End>,
    /// Who waits for each call's answer.
    replies: Vec<Reply>,
}

/// The form of a script a command runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Single,
    Batch,
    CrossSlot,
}

impl Batch {
    /// The form the batch goes in: a call alone in the single form (unless `always`), a
    /// Cluster node's batch in the cross-slot form, else the batch form.
    fn form(&self, always: bool) -> Form {
        match self.lane {
            _ if self.ends.len() == 1 && !always => Form::Single,
            Lane::Node(_) => Form::CrossSlot,
            Lane::Connection | Lane::Slot(_) => Form::Batch,
        }
    }

    /// The command of the calls at `calls` in `form`: by SHA, or with `by_source` by source
    /// (after `NOSCRIPT`).
    fn command(&self, form: Form, calls: Range<usize>, by_source: bool) -> redis::Cmd {
        let forms = self.group.forms;
        let (sha, source) = match form {
            Form::Single => (forms.single.get_hash(), forms.single_source),
            Form::Batch => (forms.batch.get_hash(), forms.batch_source),
            Form::CrossSlot => (forms.cross_slot.get_hash(), &forms.cross_slot_source[..]),
        };
        let end = |i: usize| -> (usize, usize) {
            match i.checked_sub(1) {
                Some(before) => (self.ends[before].keys, self.ends[before].arguments),
                None => (0, 0),
            }
        };
        let ((keys_from, arguments_from), (keys_to, arguments_to)) =
            (end(calls.start), end(calls.end));
        let (keys, arguments) = (keys_from..keys_to, arguments_from..arguments_to);
        let count = 4 + keys.len() + arguments.len() + self.group.shared.len();
        let bytes = self.keys.bytes.len() + self.arguments.bytes.len() + 64;
        let mut command = redis::Cmd::with_capacity(count, bytes);
        if by_source {
            command.arg("EVAL").arg(source);
        } else {
            command.arg("EVALSHA").arg(sha);
        }
        if form == Form::CrossSlot {
            // No key declared (Redis refuses declared keys of several slots): the keys lead
            // the arguments, after their count.
            command.arg(0).arg(keys.len());
        } else {
            command.arg(keys.len());
        }
        for i in keys {
            command.arg(self.keys.get(i));
        }
        for i in arguments {
            command.arg(self.arguments.get(i));
        }
        for shared in &self.group.shared {
            command.arg(&shared[..]);
        }
        command
    }

    /// Run the calls at `calls` in `form` on `link`, with the group's `WAIT` behind them (again
    /// by source after `NOSCRIPT`).
    async fn run<L: Link>(&self, link: &L, form: Form, calls: Range<usize>) -> RedisResult<Answer> {
        let wait = self.group.wait;
        let send = |by_source| {
            let command = self.command(form, calls.clone(), by_source);
            async move {
                match (form, self.lane) {
                    (Form::CrossSlot, _) => {
                        let slot = self.ends[calls.start].slot;
                        link.run_on(slot, command, wait).await
                    }
                    _ => link.run(command, wait).await,
                }
            }
        };
        match send(false).await {
            Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                send(true).await
            }
            other => other,
        }
    }
}

/// The batch queues of one connection.
#[derive(Default)]
pub(crate) struct Batcher {
    queues: Mutex<Vec<Queue>>,
    /// **Tests only**: send every call in the batch form, even alone, so that sequential
    /// tests run the batched script too.
    always: bool,
}

impl Batcher {
    pub(crate) fn new(always: bool) -> Self {
        Batcher {
            queues: Mutex::new(Vec::new()),
            always,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Queue>> {
        // Nothing under this lock leaves a queue half changed.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Run `call` on `link`: alone when none of its queue is in flight, else in a batch.
    pub(crate) async fn run<L: Link>(
        self: &Arc<Self>,
        link: &Arc<L>,
        call: &impl Batchable,
    ) -> RedisResult<Answer> {
        let Some(group) = call.group() else {
            return link.run(call.alone(), call.wait()).await;
        };
        let mut slot = 0;
        let lane = link.lane(|| {
            slot = call.slot();
            slot
        });
        let turn = {
            let mut queues = self.lock();
            let at = match queues
                .iter()
                .position(|q| q.lane == lane && q.group == group)
            {
                Some(at) => at,
                None => {
                    queues.push(Queue::new(group, lane));
                    queues.len() - 1
                }
            };
            let queue = &mut queues[at];
            if queue.in_flight == 0 && queue.waiters.is_empty() && !self.always {
                // Sent alone from this task, below.
                queue.in_flight += 1;
                Turn::Alone(queue.group.clone())
            } else {
                call.write_parts(&mut queue.keys, &mut queue.arguments);
                let receiver = queue.wait(slot);
                if queue.ready() {
                    if let Some(batch) = queue.take() {
                        self.spawn(link, batch);
                    }
                }
                Turn::Wait(receiver)
            }
        };
        match turn {
            Turn::Alone(group) => {
                // Alone: sent from this task, routed by its keys. The queue learns it is
                // answered (or given up) when the guard drops.
                let _in_flight = InFlight {
                    batcher: self,
                    link,
                    group,
                    lane,
                };
                link.run(call.alone(), call.wait()).await
            }
            Turn::Wait(receiver) => receiver.await.unwrap_or_else(|_| {
                Err(RedisError::from((
                    ErrorKind::Io,
                    "the batch was dropped before its reply",
                )))
            }),
        }
    }

    /// One of the queue's commands is answered: the waiting calls that the rule now lets go,
    /// as a batch.
    fn answered(&self, group: &BatchGroup, lane: Lane) -> Option<Batch> {
        let mut queues = self.lock();
        let at = queues
            .iter()
            .position(|q| q.lane == lane && &q.group == group)?;
        let queue = &mut queues[at];
        queue.in_flight = queue.in_flight.saturating_sub(1);
        let batch = if queue.ready() { queue.take() } else { None };
        if queue.idle() {
            queues.swap_remove(at);
        }
        batch
    }

    /// Send `batch` from a task of its own (its callers may give up, the batch goes on), and
    /// from the same task whatever its answer lets go next, once the callers it answered had
    /// their turn to queue again.
    fn spawn<L: Link>(self: &Arc<Self>, link: &Arc<L>, batch: Batch) {
        let (batcher, link) = (Arc::clone(self), Arc::clone(link));
        tokio::spawn(async move {
            let mut next = Some(batch);
            while let Some(batch) = next.take() {
                let form = batch.form(batcher.always);
                let reply = batch.run(&*link, form, 0..batch.ends.len()).await;
                let (group, lane) = (batch.group.clone(), batch.lane);
                deliver(&link, batch, form, reply);
                // The callers just answered run first: under load most come straight back
                // with their next call and join the next batch instead of making one more.
                tokio::task::yield_now().await;
                next = batcher.answered(&group, lane);
            }
        });
    }
}

/// What a call does: goes alone (none of its queue in flight), or waits for a batch.
enum Turn {
    Alone(BatchGroup),
    Wait(oneshot::Receiver<RedisResult<Answer>>),
}

/// Marks a call sent alone as in flight until it is answered or its caller gives up.
struct InFlight<'a, L: Link> {
    batcher: &'a Arc<Batcher>,
    link: &'a Arc<L>,
    group: BatchGroup,
    lane: Lane,
}

impl<L: Link> Drop for InFlight<'_, L> {
    fn drop(&mut self) {
        if let Some(batch) = self.batcher.answered(&self.group, self.lane) {
            self.batcher.spawn(self.link, batch);
        }
    }
}

/// Answer `batch`'s calls from its `reply` (sent in `form`), each with the batch's count of
/// acknowledging replicas; on a Cluster node, send again alone, routed by their keys, the calls
/// that Redis refused before running them.
fn deliver<L: Link>(link: &Arc<L>, mut batch: Batch, form: Form, reply: RedisResult<Answer>) {
    let replies = std::mem::take(&mut batch.replies);
    let (reply, acked) = match reply {
        Ok(Answer { value, acked }) => (Ok(value), acked),
        Err(e) => (Err(e), None),
    };
    let again = match &reply {
        Err(e) if form == Form::CrossSlot && cluster::refuses_cross_slot(e) => {
            link.refuse_cross_slot();
            replies.into_iter().enumerate().collect()
        }
        Err(e) if form == Form::CrossSlot && cluster::is_not_run(e) => {
            link.misrouted();
            replies.into_iter().enumerate().collect()
        }
        _ if form == Form::CrossSlot => {
            let again = split(reply, acked, replies, true, cluster::is_not_run);
            if !again.is_empty() {
                link.misrouted();
            }
            again
        }
        _ => split(reply, acked, replies, form != Form::Single, |_| false),
    };
    if again.is_empty() {
        return;
    }
    let link = Arc::clone(link);
    tokio::spawn(async move {
        // In order, each alone: a call whose caller gave up meanwhile is not sent.
        for (i, reply) in again {
            if reply.is_closed() {
                continue;
            }
            let answer = batch.run(&*link, Form::Single, i..i + 1).await;
            let _ = reply.send(answer);
        }
    });
}

/// Share a batch's reply among its calls (see the module docs), each with the batch's `acked`.
/// A server error inside an array (a call that failed in the script) becomes that call's
/// `Err`, unless `again` says it did not run: those calls are returned, with their places,
/// unanswered.
fn split(
    reply: RedisResult<Value>,
    acked: Option<u32>,
    replies: Vec<Reply>,
    batch_form: bool,
    again: fn(&RedisError) -> bool,
) -> Vec<(usize, Reply)> {
    let calls = replies.len();
    let mut unanswered = Vec::new();
    match reply {
        Ok(Value::BulkString(bytes))
            if batch_form && !bytes.is_empty() && bytes.len() % calls == 0 =>
        {
            let part = bytes.len() / calls;
            for (reply, chunk) in replies.into_iter().zip(bytes.chunks_exact(part)) {
                let value = Value::BulkString(chunk.to_vec());
                let _ = reply.send(Ok(Answer { value, acked }));
            }
        }
        Ok(Value::Array(values)) if batch_form && values.len() == calls => {
            for (i, (reply, value)) in replies.into_iter().zip(values).enumerate() {
                let answer = match value {
                    Value::ServerError(error) => Err(RedisError::from(error)),
                    value => Ok(Answer { value, acked }),
                };
                match answer {
                    Err(e) if again(&e) => unanswered.push((i, reply)),
                    answer => {
                        let _ = reply.send(answer);
                    }
                }
            }
        }
        Ok(whole) => {
            let whole = match whole {
                Value::ServerError(error) => Err(RedisError::from(error)),
                value => Ok(Answer { value, acked }),
            };
            for reply in replies {
                let _ = reply.send(whole.clone());
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
    unanswered
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    static SINGLE: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new("return 1"));
    static BATCH: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new("return 2"));
    static FORMS: std::sync::LazyLock<ScriptForms> =
        std::sync::LazyLock::new(|| ScriptForms::new((&SINGLE, "return 1"), (&BATCH, "return 2")));

    fn group() -> BatchGroup {
        BatchGroup {
            forms: &FORMS,
            shared: Vec::new(),
            wait: None,
        }
    }

    fn queue() -> Queue {
        Queue::new(group(), Lane::Connection)
    }

    fn wait(queue: &mut Queue, key: &str) -> oneshot::Receiver<RedisResult<Answer>> {
        queue.keys.bytes(key.as_bytes());
        queue.arguments.bytes(b"1");
        queue.arguments.bytes(key.as_bytes());
        queue.wait(cluster::tag_slot(key.as_bytes()))
    }

    /// A command's arguments, as text.
    fn text(command: &redis::Cmd) -> Vec<String> {
        command
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                _ => String::new(),
            })
            .collect()
    }

    #[test]
    fn waiting_calls_go_out_by_the_batching_rule() {
        let mut queue = queue();
        let mut receivers = Vec::new();
        assert!(!queue.ready(), "nothing waits");
        receivers.push(wait(&mut queue, "a"));
        assert!(queue.ready(), "none in flight: at once");
        for in_flight in 1..BATCHES_IN_FLIGHT {
            queue.in_flight = in_flight;
            while queue.waiters.len() < MORE_PER_BATCH * in_flight {
                assert!(
                    !queue.ready(),
                    "{} wait behind {in_flight}",
                    queue.waiters.len()
                );
                receivers.push(wait(&mut queue, "k"));
            }
            assert!(
                queue.ready(),
                "one more from {} behind {in_flight}",
                queue.waiters.len()
            );
        }
        queue.in_flight = BATCHES_IN_FLIGHT;
        while queue.waiters.len() < MAX_BATCH {
            assert!(!queue.ready());
            receivers.push(wait(&mut queue, "k"));
        }
        assert!(queue.ready(), "a whole batch goes whatever is in flight");
        receivers.push(wait(&mut queue, "over"));
        let batch = queue.take().unwrap();
        assert_eq!(batch.replies.len(), MAX_BATCH);
        assert_eq!(queue.waiters.len(), 1, "the 65th waits for the next batch");
        assert_eq!(queue.keys.iter().collect::<Vec<_>>(), [b"over"]);
        assert_eq!(queue.in_flight, BATCHES_IN_FLIGHT + 1);
    }

    #[test]
    fn given_up_calls_leave_with_their_keys_and_arguments() {
        let mut queue = queue();
        let a = wait(&mut queue, "a");
        let b = wait(&mut queue, "b");
        let c = wait(&mut queue, "c");
        drop(b);
        let batch = queue.take().unwrap();
        assert_eq!(batch.replies.len(), 2);
        let sha = BATCH.get_hash();
        assert_eq!(
            text(&batch.command(Form::Batch, 0..2, false)),
            ["EVALSHA", sha, "2", "a", "c", "1", "a", "1", "c"]
        );
        // One call of it alone, in the single form.
        let single = SINGLE.get_hash();
        assert_eq!(
            text(&batch.command(Form::Single, 1..2, false)),
            ["EVALSHA", single, "1", "c", "1", "c"]
        );
        drop((a, c));
        assert!(queue.take().is_none(), "nothing left");
    }

    #[test]
    fn a_cluster_node_batch_declares_no_keys() {
        let mut queue = Queue::new(group(), Lane::Node(0));
        let _receivers = [wait(&mut queue, "a"), wait(&mut queue, "b")];
        let batch = queue.take().unwrap();
        assert_eq!(batch.form(false), Form::CrossSlot);
        let sha = FORMS.cross_slot.get_hash();
        assert_eq!(
            text(&batch.command(Form::CrossSlot, 0..2, false)),
            ["EVALSHA", sha, "0", "2", "a", "b", "1", "a", "1", "b"]
        );
        assert!(
            FORMS
                .cross_slot_source
                .starts_with("#!lua flags=allow-cross-slot-keys\n")
        );
        assert!(FORMS.cross_slot_source.ends_with("return 2"));
    }

    #[test]
    fn replies_are_split_in_order() {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| oneshot::channel()).unzip();
        let again = split(
            Ok(Value::BulkString(b"aabbcc".to_vec())),
            Some(1),
            senders,
            true,
            |_| true,
        );
        assert!(again.is_empty());
        let parts: Vec<_> = receivers
            .into_iter()
            .map(|mut r| r.try_recv().unwrap().unwrap())
            .collect();
        assert_eq!(
            parts,
            [b"aa", b"bb", b"cc"].map(|p| Answer {
                value: Value::BulkString(p.to_vec()),
                acked: Some(1),
            }),
            "each call with the batch's acknowledgement"
        );
        // A failed call in an array fails alone.
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..2).map(|_| oneshot::channel()).unzip();
        let failed = redis::parse_redis_value(b"-TOLLGATE bad\r\n").unwrap();
        let again = split(
            Ok(Value::Array(vec![
                Value::BulkString(b"ok".to_vec()),
                failed,
            ])),
            None,
            senders,
            true,
            cluster::is_not_run,
        );
        assert!(again.is_empty());
        let mut receivers = receivers.into_iter();
        assert!(receivers.next().unwrap().try_recv().unwrap().is_ok());
        assert!(receivers.next().unwrap().try_recv().unwrap().is_err());
    }

    /// A Cluster as the rule sees it: a node that answers a cross-slot batch with `cross_slot`
    /// (a reply, or an error), and any other command with its first key; every command it ran.
    struct FakeCluster {
        cross_slot: fn(usize) -> RedisResult<Value>,
        sent: Mutex<Vec<Vec<String>>>,
        refused: AtomicBool,
        misrouted: AtomicBool,
    }

    impl FakeCluster {
        fn new(cross_slot: fn(usize) -> RedisResult<Value>) -> Arc<Self> {
            Arc::new(FakeCluster {
                cross_slot,
                sent: Mutex::new(Vec::new()),
                refused: AtomicBool::new(false),
                misrouted: AtomicBool::new(false),
            })
        }
    }

    impl Link for FakeCluster {
        async fn run(&self, command: redis::Cmd, _wait: Option<Wait>) -> RedisResult<Answer> {
            let args = text(&command);
            self.sent.lock().unwrap().push(args.clone());
            Ok(Answer::alone(Value::BulkString(
                args[3].clone().into_bytes(),
            )))
        }

        async fn run_on(
            &self,
            _slot: u16,
            command: redis::Cmd,
            _wait: Option<Wait>,
        ) -> RedisResult<Answer> {
            let args = text(&command);
            self.sent.lock().unwrap().push(args.clone());
            (self.cross_slot)(args[3].parse().unwrap()).map(Answer::alone)
        }

        fn misrouted(&self) {
            self.misrouted.store(true, Ordering::Relaxed);
        }

        fn refuse_cross_slot(&self) {
            self.refused.store(true, Ordering::Relaxed);
        }
    }

    /// Send a node's batch of `keys` (those in `give_up` given up after it was sent) on
    /// `link`, and return every call's answer (`None`: given up) once it is answered.
    async fn node_batch(
        link: &Arc<FakeCluster>,
        keys: &[&str],
        give_up: &[&str],
    ) -> Vec<Option<RedisResult<Value>>> {
        let mut queue = Queue::new(group(), Lane::Node(0));
        let receivers: Vec<_> = keys.iter().map(|key| wait(&mut queue, key)).collect();
        let batch = queue.take().unwrap();
        let form = batch.form(false);
        let reply = batch.run(&**link, form, 0..batch.ends.len()).await;
        let receivers: Vec<_> = keys
            .iter()
            .zip(receivers)
            .map(|(key, receiver)| (!give_up.contains(key)).then_some(receiver))
            .collect();
        deliver(link, batch, form, reply);
        let mut answers = Vec::new();
        for receiver in receivers {
            answers.push(match receiver {
                Some(receiver) => Some(receiver.await.unwrap().map(|answer| answer.value)),
                None => None,
            });
        }
        answers
    }

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn server_error(text: &str) -> Value {
        redis::parse_redis_value(format!("{text}\r\n").as_bytes()).unwrap()
    }

    #[tokio::test]
    async fn calls_a_node_does_not_serve_go_again_alone_once() {
        // The node served a and c; it refused b (and d, whose caller gave up) before running
        // them; e failed in the script.
        let link = FakeCluster::new(|_| {
            let refused =
                server_error("-ERR Script attempted to access a non local key in a cluster node");
            Ok(Value::Array(vec![
                bulk("A"),
                refused.clone(),
                bulk("C"),
                refused,
                server_error("-ERR TOLLGATE malformed rate-limit state at e"),
            ]))
        });
        let answers = node_batch(&link, &["a", "b", "c", "d", "e"], &["d"]).await;
        let ok = |answer: &Option<RedisResult<Value>>| answer.as_ref().unwrap().clone().unwrap();
        assert_eq!(ok(&answers[0]), bulk("A"));
        assert_eq!(
            ok(&answers[1]),
            bulk("b"),
            "b again, alone, routed by its key"
        );
        assert_eq!(ok(&answers[2]), bulk("C"));
        assert!(answers[3].is_none());
        assert!(answers[4].as_ref().unwrap().is_err(), "e ran and failed");
        let sent = link.sent.lock().unwrap().clone();
        let single = SINGLE.get_hash();
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert_eq!(sent[0][1], FORMS.cross_slot.get_hash());
        assert_eq!(sent[1], ["EVALSHA", single, "1", "b", "1", "b"]);
        assert!(
            link.misrouted.load(Ordering::Relaxed),
            "the map is reloaded"
        );
        assert!(!link.refused.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn a_server_that_refuses_cross_slot_scripts_gets_every_call_alone() {
        let link = FakeCluster::new(|_| {
            match server_error(
                "-ERR Error compiling script (new function): user_script:1: unexpected symbol near '#'",
            ) {
                Value::ServerError(error) => Err(RedisError::from(error)),
                _ => unreachable!(),
            }
        });
        let answers = node_batch(&link, &["a", "b", "c"], &["c"]).await;
        assert_eq!(answers[0].as_ref().unwrap().clone().unwrap(), bulk("a"));
        assert_eq!(answers[1].as_ref().unwrap().clone().unwrap(), bulk("b"));
        assert!(link.refused.load(Ordering::Relaxed), "per slot from now on");
        let sent = link.sent.lock().unwrap().clone();
        // The refused batch (by SHA, then by source after no NOSCRIPT: once), then a and b
        // alone; c's caller gave up, so it was never sent.
        let keys: Vec<&str> = sent[1..].iter().map(|s| s[3].as_str()).collect();
        assert_eq!(sent.len(), 3, "{sent:?}");
        assert_eq!(keys, ["a", "b"]);
    }

    #[tokio::test]
    async fn a_batch_that_may_have_run_is_never_sent_again() {
        let link = FakeCluster::new(|_| {
            Err(RedisError::from((
                ErrorKind::Io,
                "connection reset after the batch was written",
            )))
        });
        let answers = node_batch(&link, &["a", "b"], &[]).await;
        assert!(answers.iter().all(|a| a.as_ref().unwrap().is_err()));
        assert_eq!(link.sent.lock().unwrap().len(), 1);
    }
}
