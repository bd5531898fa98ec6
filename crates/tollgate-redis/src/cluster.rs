//! The Cluster transport under the batching rule: redis-rs's async cluster connection, and a
//! map of which node serves which slot, so that `batch.rs` can queue the calls of one node
//! together and send them as one script call to that node.
//!
//! Redis refuses a script call whose *declared* keys span slots (`CROSSSLOT`, even with the
//! `allow-cross-slot-keys` flag: checked on Redis 7.0.15), so a node's batch declares none: it
//! runs the batch form with its keys in `ARGV` ([`cross_slot_source`]), sent to the node that
//! redis-rs believes serves the batch's first slot. Redis still checks every key the script
//! touches against the slots the node serves *now*, at each access: a key of a slot that moved
//! away, or that is migrating and not here, fails that access with "Script attempted to access
//! a non local key" before its check writes anything, and only that check fails
//! ([`is_not_run`]); `batch.rs` sends it again alone, declared, through redis-rs's routing, which
//! follows `MOVED`/`ASK`. So a stale map costs round trips, never a wrong or double decision.
//!
//! The map comes from `CLUSTER SLOTS`, loaded on first use and again (at most every
//! [`REFRESH_EVERY`]) when a node refuses keys that the map gave it. Until it is loaded, or on
//! a server that refuses the cross-slot script (Redis before 7), calls queue per slot instead,
//! with their keys declared.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{FromRedisValue, RedisResult, Value};

use crate::batch::{Answer, Wait};
use crate::connection;

/// Slots of a Cluster.
const SLOTS: usize = 16_384;

/// Shortest time between two loads of the slot map.
const REFRESH_EVERY: Duration = Duration::from_millis(100);

/// The slot of keys whose hash tag is `tag`.
pub(crate) fn tag_slot(tag: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag) % SLOTS as u16
}

/// The first line of a script that may touch keys of several slots (Redis 7 shebang flags).
const CROSS_SLOT_FLAG: &str = "#!lua flags=allow-cross-slot-keys\n";

/// Turns a batch form, which reads its keys from `KEYS`, into one that takes them from `ARGV`:
/// `ARGV[1]` is their count, the keys follow, then the batch's usual arguments.
const KEYS_FROM_ARGV: &str = "\
-- A Cluster node's batch (cluster.rs): keys of several slots, which Redis refuses when they are
-- declared, so they come in ARGV after their count. Redis checks each access against the slots
-- this node serves; a key it does not serve fails its check alone, before anything is written.
local KEYS, ARGV = { unpack(ARGV, 2, tonumber(ARGV[1]) + 1) }, { unpack(ARGV, tonumber(ARGV[1]) + 2) }
";

/// The form of `batch_source` that a Cluster node runs with keys of several slots.
pub(crate) fn cross_slot_source(batch_source: &str) -> String {
    [CROSS_SLOT_FLAG, KEYS_FROM_ARGV, batch_source].concat()
}

/// Whether a script error means the script or one check of it did not run at all, so sending it
/// again (declared, routed by its keys) cannot count it twice: a node that does not serve a key
/// (any more, or not yet: moved, migrating, importing), a Cluster that is down, a write that
/// reached a replica, or a redirection or refusal of the whole call.
pub(crate) fn is_not_run(error: &redis::RedisError) -> bool {
    use redis::ServerErrorKind::{
        Ask, BusyLoading, ClusterDown, CrossSlot, MasterDown, Moved, ReadOnly, TryAgain,
    };
    match error.kind() {
        redis::ErrorKind::Server(
            Moved | Ask | TryAgain | CrossSlot | ClusterDown | MasterDown | ReadOnly | BusyLoading,
        ) => true,
        redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            error.detail().is_some_and(|detail| {
                detail.starts_with("Script attempted to access a non local key")
                    || detail.starts_with(
                        "Script attempted to execute a command while the cluster is down",
                    )
                    || detail.starts_with(
                        "Script attempted to execute a write command while the cluster is down",
                    )
            })
        }
        _ => false,
    }
}

/// Whether a node refused the cross-slot script itself (a server before Redis 7 cannot compile
/// its first line; one that does not know the flag refuses it): nothing ran.
pub(crate) fn refuses_cross_slot(error: &redis::RedisError) -> bool {
    error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError)
        && error.detail().is_some_and(|detail| {
            detail.starts_with("Error compiling script") || detail.contains("shebang")
        })
}

/// Which node serves each slot, as `CLUSTER SLOTS` said.
struct SlotMap {
    /// Index into `nodes` per slot; `u16::MAX` for a slot no node serves.
    owners: Box<[u16]>,
}

/// A Cluster: redis-rs's connection (opened on first use, and again while that fails), the slot
/// map, and whether its nodes run cross-slot scripts.
pub(crate) struct Cluster {
    client: ClusterClient,
    connection: tokio::sync::OnceCell<ClusterConnection>,
    map: RwLock<Option<SlotMap>>,
    /// Node identities (`CLUSTER SLOTS` node ids) by index: only ever grows, so that an index a
    /// queue holds keeps naming the same node across loads of the map.
    nodes: Mutex<Vec<String>>,
    /// A load of the map is under way, or was started less than [`REFRESH_EVERY`] ago.
    refreshing: AtomicBool,
    last_refresh: Mutex<Option<Instant>>,
    /// Cleared for good when a node refuses the cross-slot script: calls queue per slot.
    cross_slot: AtomicBool,
}

impl Cluster {
    pub(crate) fn new(client: ClusterClient) -> Self {
        Cluster {
            client,
            connection: tokio::sync::OnceCell::new(),
            map: RwLock::new(None),
            nodes: Mutex::new(Vec::new()),
            refreshing: AtomicBool::new(false),
            last_refresh: Mutex::new(None),
            cross_slot: AtomicBool::new(true),
        }
    }

    pub(crate) async fn connection(&self) -> RedisResult<ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }

    /// The node that serves `slot` by the map, as an index that stays its own; `None` while the
    /// map is not loaded (a load starts), when no node serves the slot, or when the nodes
    /// refused cross-slot scripts.
    pub(crate) fn node_of(self: &Arc<Self>, slot: u16) -> Option<u16> {
        if !self.cross_slot.load(Ordering::Relaxed) {
            return None;
        }
        let owner = {
            let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
            map.as_ref().map(|map| map.owners[usize::from(slot)])
        };
        match owner {
            Some(u16::MAX) => None,
            Some(node) => Some(node),
            None => {
                self.refresh();
                None
            }
        }
    }

    /// A node refused keys the map gave it: load the map again (at most every
    /// [`REFRESH_EVERY`], one load at a time).
    pub(crate) fn refresh(self: &Arc<Self>) {
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            let wait = {
                let last = cluster
                    .last_refresh
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                last.map_or(Duration::ZERO, |at| {
                    REFRESH_EVERY.saturating_sub(at.elapsed())
                })
            };
            tokio::time::sleep(wait).await;
            if let Ok(slots) = cluster.cluster_slots().await {
                let map = cluster.parse(&slots);
                *cluster.map.write().unwrap_or_else(PoisonError::into_inner) = Some(map);
            }
            *cluster
                .last_refresh
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
            cluster.refreshing.store(false, Ordering::Release);
        });
    }

    /// Queue per slot from now on: the nodes refuse the cross-slot script.
    pub(crate) fn refuse_cross_slot(&self) {
        self.cross_slot.store(false, Ordering::Relaxed);
    }

    async fn cluster_slots(&self) -> RedisResult<Value> {
        let mut connection = self.connection().await?;
        connection
            .route_command(
                redis::cmd("CLUSTER").arg("SLOTS").clone(),
                RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
            )
            .await
    }

    /// The map in a `CLUSTER SLOTS` reply: `[start, end, [host, port, id, ...], replicas...]`
    /// per range; a node is known by its id (by `host:port` from servers that send none).
    fn parse(&self, reply: &Value) -> SlotMap {
        let mut owners = vec![u16::MAX; SLOTS].into_boxed_slice();
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let Value::Array(ranges) = reply else {
            return SlotMap { owners };
        };
        for range in ranges {
            let Value::Array(fields) = range else {
                continue;
            };
            let (Some(Value::Int(start)), Some(Value::Int(end)), Some(Value::Array(master))) =
                (fields.first(), fields.get(1), fields.get(2))
            else {
                continue;
            };
            let text = |value: Option<&Value>| match value {
                Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
                Some(Value::SimpleString(text)) => text.clone(),
                Some(Value::Int(number)) => number.to_string(),
                _ => String::new(),
            };
            let mut identity = text(master.get(2));
            if identity.is_empty() {
                identity = format!("{}:{}", text(master.first()), text(master.get(1)));
            }
            let index = match nodes.iter().position(|node| *node == identity) {
                Some(index) => index,
                None => {
                    nodes.push(identity);
                    nodes.len() - 1
                }
            };
            let Ok(index) = u16::try_from(index) else {
                continue;
            };
            let (start, end) = (usize::try_from(*start), usize::try_from(*end));
            if let (Ok(start), Ok(end)) = (start, end) {
                for owner in owners.iter_mut().take(end.saturating_add(1)).skip(start) {
                    *owner = index;
                }
            }
        }
        SlotMap { owners }
    }

    /// Run `command` on every master (by redis-rs's own map): each one's reply, by address.
    pub(crate) async fn on_every_master(
        &self,
        command: redis::Cmd,
    ) -> RedisResult<Vec<(Option<String>, Value)>> {
        let mut connection = self.connection().await?;
        let routing = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        // Without a response policy, redis-rs answers a map of node address to reply, a
        // node's error (NOPERM, say) being one of the replies: it is the call's error here.
        let replies = match connection.route_command(command, routing).await? {
            Value::Map(replies) => replies,
            other => vec![(Value::Nil, other)],
        };
        replies
            .into_iter()
            .map(|(address, reply)| {
                let reply = reply.extract_error()?;
                Ok((String::from_redis_value(address).ok(), reply))
            })
            .collect()
    }

    /// Run `command` on the master that serves `slot` (by redis-rs's own map); with `wait`,
    /// it and the `WAIT` go there as one pipeline, on that node's connection, which took the
    /// writes.
    pub(crate) async fn run_on(
        &self,
        slot: u16,
        command: redis::Cmd,
        wait: Option<Wait>,
    ) -> RedisResult<Answer> {
        let mut connection = self.connection().await?;
        let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
        match wait {
            None => match connection
                .route_command(command, RoutingInfo::SingleNode(route))
                .await?
            {
                Value::ServerError(error) => Err(error.into()),
                value => Ok(Answer::alone(value)),
            },
            Some(wait) => connection::acknowledged(
                connection
                    .route_pipeline(wait.after(command), 0, 2, route)
                    .await?,
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_hash_tag_s() {
        // Known values (CLUSTER KEYSLOT a, b, tollgate:api:gcra:{user-1} on Redis 7.0.15).
        assert_eq!(tag_slot(b"a"), 15_495);
        assert_eq!(tag_slot(b"b"), 3_300);
        let key = crate::keys::Key::new("tollgate", "api", tollgate::Algorithm::Gcra, "user-1");
        assert_eq!(key.slot(), 12_542);
    }

    #[test]
    fn errors_that_mean_nothing_ran() {
        let parse = |text: &str| -> redis::RedisError {
            match redis::parse_redis_value(text.as_bytes()).unwrap() {
                Value::ServerError(error) => error.into(),
                other => panic!("{other:?}"),
            }
        };
        for not_run in [
            "-ERR Script attempted to access a non local key in a cluster node\r\n",
            "-ERR Script attempted to execute a command while the cluster is down\r\n",
            "-MOVED 3300 127.0.0.1:7001\r\n",
            "-ASK 3300 127.0.0.1:7001\r\n",
            "-TRYAGAIN Multiple keys request during rehashing of slot\r\n",
            "-CROSSSLOT Keys in request don't hash to the same slot\r\n",
            "-READONLY You can't write against a read only replica.\r\n",
        ] {
            assert!(is_not_run(&parse(not_run)), "{not_run}");
        }
        for ran in [
            "-ERR TOLLGATE malformed rate-limit state at k\r\n",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            "-ERR Error compiling script (new function): user_script:1: unexpected symbol near '#'\r\n",
        ] {
            assert!(!is_not_run(&parse(ran)), "{ran}");
        }
        assert!(refuses_cross_slot(&parse(
            "-ERR Error compiling script (new function): user_script:1: unexpected symbol near '#'\r\n"
        )));
        assert!(refuses_cross_slot(&parse(
            "-ERR Unexpected flag in script shebang: allow-cross-slot-keys\r\n"
        )));
        assert!(!refuses_cross_slot(&parse(
            "-NOSCRIPT No matching script.\r\n"
        )));
    }
}
