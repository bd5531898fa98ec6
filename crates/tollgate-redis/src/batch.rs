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
//! - a call is never sent twice: if the batch fails on the connection, every call in it fails
//!   (whether it ran is unknown) and the caller's failure policy decides.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use redis::{ErrorKind, RedisError, RedisResult, Value};
use tokio::sync::oneshot;

use crate::arguments::Arguments;

/// Commands of one group that may be unanswered at once. A call finding none goes out at
/// once; one finding some waits until [`MORE_PER_BATCH`] calls per unanswered command wait
/// (8 behind one, 16 behind two, 24 behind three: then they go out as one more command, so
/// that Redis has the next batch in its socket while it runs one) or until one is answered
/// (then whatever waits goes out); with this many unanswered, calls wait for one to be
/// answered, unless a whole [`MAX_BATCH`] waits: that goes out whatever is in flight.
///
/// Each command passes through redis-rs's connection task on its way out and back, so a batch
/// spends longer outside Redis than its round trip; more commands in flight keep Redis busy
/// meanwhile. Measured (BENCHMARKS.md): at most two in flight from 8 waiting was best at 16
/// callers and the slowest at 50; this rule is as good as the best fixed one at 16, 50 and 64.
const BATCHES_IN_FLIGHT: usize = 4;

/// Calls that wait, per command of their group already unanswered, before one more goes out:
/// fewer would make batches too small to be cheap, more would leave Redis idle between them.
const MORE_PER_BATCH: usize = 8;

/// Most calls in one batch, so that one script call never holds Redis long.
pub(crate) const MAX_BATCH: usize = 64;

/// A script in the two forms a batch needs. Both take the same arguments per call; the batch
/// form decides every call as a batch even when it is alone (the single form decides a lone
/// call inline, which is cheaper).
#[derive(Debug)]
pub(crate) struct ScriptForms {
    /// The form a call alone is sent in.
    pub(crate) single: &'static redis::Script,
    pub(crate) single_source: &'static str,
    /// The form of a batch.
    pub(crate) batch: &'static redis::Script,
    pub(crate) batch_source: &'static str,
}

/// What a call's batch is: calls batch only with calls of the same script and the same shared
/// arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BatchGroup {
    pub(crate) forms: &'static ScriptForms,
    /// Arguments after every call's own (mode, injected time, ...): empty in the common case,
    /// so that a group costs no allocation.
    pub(crate) shared: Vec<Vec<u8>>,
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
    /// The call alone, as a command (sent when it finds nothing in flight).
    fn alone(&self) -> redis::Cmd;
    /// Its keys into `keys` and its arguments into `arguments`, as the batch form takes them.
    fn write_parts(&self, keys: &mut Parts, arguments: &mut Parts);
}

/// A connection that runs one command and returns its reply (a server error as `Err`).
pub(crate) trait Link: Send + Sync + 'static {
    fn run(&self, command: &redis::Cmd) -> impl Future<Output = RedisResult<Value>> + Send;
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

    fn iter(&self) -> impl Iterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    fn extend_from(&mut self, other: &Parts, range: std::ops::Range<usize>) {
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

type Reply = oneshot::Sender<RedisResult<Value>>;

/// One waiting call: who waits, and where its keys and arguments end in the queue's parts.
struct Waiter {
    reply: Reply,
    keys_end: usize,
    arguments_end: usize,
}

/// The calls of one group waiting to be sent, and how many of its commands are in flight.
struct Queue {
    group: BatchGroup,
    keys: Parts,
    arguments: Parts,
    waiters: Vec<Waiter>,
    in_flight: usize,
}

impl Queue {
    fn new(group: BatchGroup) -> Self {
        Queue {
            group,
            keys: Parts::default(),
            arguments: Parts::default(),
            waiters: Vec::new(),
            in_flight: 0,
        }
    }

    /// Whether the waiting calls go out now: none of the group's commands is unanswered, or
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
                keys: std::mem::take(&mut self.keys),
                arguments: std::mem::take(&mut self.arguments),
                replies: self.waiters.drain(..).map(|w| w.reply).collect(),
            });
        }
        let mut batch = Batch {
            group: self.group.clone(),
            keys: Parts::default(),
            arguments: Parts::default(),
            replies: Vec::new(),
        };
        let (mut keys_from, mut arguments_from) = (0, 0);
        let mut rest = Queue::new(self.group.clone());
        for waiter in self.waiters.drain(..) {
            let (keys, arguments) = (
                keys_from..waiter.keys_end,
                arguments_from..waiter.arguments_end,
            );
            (keys_from, arguments_from) = (waiter.keys_end, waiter.arguments_end);
            if waiter.reply.is_closed() {
                continue;
            }
            let to = if batch.replies.len() < MAX_BATCH {
                batch.keys.extend_from(&self.keys, keys);
                batch.arguments.extend_from(&self.arguments, arguments);
                &mut batch.replies
            } else {
                rest.keys.extend_from(&self.keys, keys);
                rest.arguments.extend_from(&self.arguments, arguments);
                rest.waiters.push(Waiter {
                    reply: waiter.reply,
                    keys_end: rest.keys.len(),
                    arguments_end: rest.arguments.len(),
                });
                continue;
            };
            to.push(waiter.reply);
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
    keys: Parts,
    arguments: Parts,
    replies: Vec<Reply>,
}

impl Batch {
    /// The command: the batch form when several calls (or `always`), else the single form;
    /// by SHA, or with `by_source` by source (after `NOSCRIPT`).
    fn command(&self, always: bool, by_source: bool) -> redis::Cmd {
        let forms = self.group.forms;
        let (script, source) = if self.replies.len() > 1 || always {
            (forms.batch, forms.batch_source)
        } else {
            (forms.single, forms.single_source)
        };
        let count = 3 + self.keys.len() + self.arguments.len() + self.group.shared.len();
        let bytes = self.keys.bytes.len() + self.arguments.bytes.len() + 64;
        let mut command = redis::Cmd::with_capacity(count, bytes);
        if by_source {
            command.arg("EVAL").arg(source);
        } else {
            command.arg("EVALSHA").arg(script.get_hash());
        }
        command.arg(self.keys.len());
        for part in self.keys.iter().chain(self.arguments.iter()) {
            command.arg(part);
        }
        for shared in &self.group.shared {
            command.arg(&shared[..]);
        }
        command
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

    /// Run `call` on `link`: alone when none of its group is in flight, else in a batch.
    pub(crate) async fn run<L: Link>(
        self: &Arc<Self>,
        link: &Arc<L>,
        call: &impl Batchable,
    ) -> RedisResult<Value> {
        let Some(group) = call.group() else {
            return link.run(&call.alone()).await;
        };
        let turn = {
            let mut queues = self.lock();
            let at = match queues.iter().position(|q| q.group == group) {
                Some(at) => at,
                None => {
                    queues.push(Queue::new(group));
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
                let (reply, receiver) = oneshot::channel();
                queue.waiters.push(Waiter {
                    reply,
                    keys_end: queue.keys.len(),
                    arguments_end: queue.arguments.len(),
                });
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
                // Alone: sent from this task. The queue learns it is answered (or given up)
                // when the guard drops.
                let _in_flight = InFlight {
                    batcher: self,
                    link,
                    group,
                };
                link.run(&call.alone()).await
            }
            Turn::Wait(receiver) => receiver.await.unwrap_or_else(|_| {
                Err(RedisError::from((
                    ErrorKind::Io,
                    "the batch was dropped before its reply",
                )))
            }),
        }
    }

    /// One of `group`'s commands is answered: the waiting calls that the rule now lets go,
    /// as a batch.
    fn answered(&self, group: &BatchGroup) -> Option<Batch> {
        let mut queues = self.lock();
        let at = queues.iter().position(|q| &q.group == group)?;
        let queue = &mut queues[at];
        queue.in_flight = queue.in_flight.saturating_sub(1);
        let batch = if queue.ready() { queue.take() } else { None };
        if queue.idle() {
            queues.swap_remove(at);
        }
        batch
    }

    /// Send `batch` from a task of its own (its callers may give up, the batch goes on), and
    /// from the same task whatever its answer lets go next.
    fn spawn<L: Link>(self: &Arc<Self>, link: &Arc<L>, batch: Batch) {
        let (batcher, link) = (Arc::clone(self), Arc::clone(link));
        tokio::spawn(async move {
            let mut next = Some(batch);
            while let Some(batch) = next.take() {
                let always = batcher.always;
                let reply = match link.run(&batch.command(always, false)).await {
                    Err(e) if e.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
                        link.run(&batch.command(always, true)).await
                    }
                    other => other,
                };
                let batch_form = batch.replies.len() > 1 || always;
                split(reply, batch.replies, batch_form);
                next = batcher.answered(&batch.group);
            }
        });
    }
}

/// What a call does: goes alone (none of its group in flight), or waits for a batch.
enum Turn {
    Alone(BatchGroup),
    Wait(oneshot::Receiver<RedisResult<Value>>),
}

/// Marks a call sent alone as in flight until it is answered or its caller gives up.
struct InFlight<'a, L: Link> {
    batcher: &'a Arc<Batcher>,
    link: &'a Arc<L>,
    group: BatchGroup,
}

impl<L: Link> Drop for InFlight<'_, L> {
    fn drop(&mut self) {
        if let Some(batch) = self.batcher.answered(&self.group) {
            self.batcher.spawn(self.link, batch);
        }
    }
}

/// Share a batch's reply among its calls (see the module docs). A server error inside an
/// array (a call that failed in the script) becomes that call's `Err`.
fn split(reply: RedisResult<Value>, replies: Vec<Reply>, batch_form: bool) {
    let calls = replies.len();
    let send = |reply: Reply, value: Value| {
        let _ = reply.send(match value {
            Value::ServerError(error) => Err(error.into()),
            value => Ok(value),
        });
    };
    match reply {
        Ok(Value::BulkString(bytes))
            if batch_form && !bytes.is_empty() && bytes.len() % calls == 0 =>
        {
            let part = bytes.len() / calls;
            for (reply, chunk) in replies.into_iter().zip(bytes.chunks_exact(part)) {
                send(reply, Value::BulkString(chunk.to_vec()));
            }
        }
        Ok(Value::Array(values)) if batch_form && values.len() == calls => {
            for (reply, value) in replies.into_iter().zip(values) {
                send(reply, value);
            }
        }
        Ok(whole) => {
            for reply in replies {
                send(reply, whole.clone());
            }
        }
        Err(error) => {
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SCRIPT: std::sync::LazyLock<redis::Script> =
        std::sync::LazyLock::new(|| redis::Script::new("return 1"));
    static FORMS: std::sync::LazyLock<ScriptForms> = std::sync::LazyLock::new(|| ScriptForms {
        single: &SCRIPT,
        single_source: "return 1",
        batch: &SCRIPT,
        batch_source: "return 1",
    });

    fn queue() -> Queue {
        Queue::new(BatchGroup {
            forms: &FORMS,
            shared: Vec::new(),
        })
    }

    fn wait(queue: &mut Queue, key: &str) -> oneshot::Receiver<RedisResult<Value>> {
        queue.keys.bytes(key.as_bytes());
        queue.arguments.bytes(b"1");
        queue.arguments.bytes(key.as_bytes());
        let (reply, receiver) = oneshot::channel();
        queue.waiters.push(Waiter {
            reply,
            keys_end: queue.keys.len(),
            arguments_end: queue.arguments.len(),
        });
        receiver
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
        let command = batch.command(false, false);
        let args: Vec<&[u8]> = command
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(bytes) => bytes,
                _ => b"",
            })
            .collect();
        assert_eq!(
            args,
            [
                &b"EVALSHA"[..],
                SCRIPT.get_hash().as_bytes(),
                b"2",
                b"a",
                b"c",
                b"1",
                b"a",
                b"1",
                b"c"
            ]
        );
        drop((a, c));
        assert!(queue.take().is_none(), "nothing left");
    }

    #[test]
    fn replies_are_split_in_order() {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..3).map(|_| oneshot::channel()).unzip();
        split(Ok(Value::BulkString(b"aabbcc".to_vec())), senders, true);
        let parts: Vec<_> = receivers
            .into_iter()
            .map(|mut r| r.try_recv().unwrap().unwrap())
            .collect();
        assert_eq!(
            parts,
            [b"aa", b"bb", b"cc"].map(|p| Value::BulkString(p.to_vec()))
        );
        // A failed call in an array fails alone.
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..2).map(|_| oneshot::channel()).unzip();
        let failed = redis::parse_redis_value(b"-TOLLGATE bad\r\n").unwrap();
        split(
            Ok(Value::Array(vec![
                Value::BulkString(b"ok".to_vec()),
                failed,
            ])),
            senders,
            true,
        );
        let mut receivers = receivers.into_iter();
        assert!(receivers.next().unwrap().try_recv().unwrap().is_ok());
        assert!(receivers.next().unwrap().try_recv().unwrap().is_err());
    }
}
