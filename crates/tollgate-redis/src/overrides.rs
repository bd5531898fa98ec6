//! Overrides in Redis: where they live and the commands that set, read, list and delete them.
//!
//! An override of policy `P` for identifier `I` is a hash at `<prefix>:P:override:{I}` (in the
//! slot of `I`'s state, so the deciding script reads it in the same call, `override.lua`)
//! with the fields `algorithm`, `limit`, `period_us` and `burst` (the capacity: the limit for
//! the window algorithms). One with an expiry carries it as the key's TTL, so it disappears
//! by itself; one without stays until deleted (overrides are configuration, not state).
//!
//! Listings go through an index per policy, a sorted set of identifiers at
//! `<prefix>:P:overrides` paged by key (`ZRANGEBYLEX`). The index only lists: a decision never
//! reads it. Identifiers whose override expired are dropped from it when a listing meets them,
//! and the index itself expires with the latest expiry of what it lists ([`LIST_SCRIPT`]).
//!
//! Every set or delete is announced on `<prefix>:overrides:changed` (`P\nI`), and
//! [`watch_changes`] follows that channel, so that each instance forgets the rejections it
//! cached for the key (the over-limit cache) as soon as its limit changes, not a second later.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use tollgate::{Check, Override, OverridePage, Policy, PolicyName, StoreError};

use crate::connection::Connection;
use crate::keys;

/// What [`RedisStore::watch_override_changes`](crate::RedisStore::watch_override_changes) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideChange<'a> {
    /// The override of `policy` for `key` was set or deleted (by any instance).
    Changed {
        /// The policy's name.
        policy: &'a str,
        /// The identifier.
        key: &'a str,
    },
    /// The subscription was (re)established: changes made before may have been missed.
    Resubscribed,
}

/// Sets the hash in one atomic step: the old fields go, the new ones come with their TTL.
/// KEYS[1]: the override key. ARGV: TTL in ms ('0': none), then field, value pairs.
pub(crate) const SET_SCRIPT: &str = "\
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
if ARGV[1] ~= '0' then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return 1";

/// Lists an identifier in a policy's index, which lives as long as what it lists: it expires
/// with the latest of its overrides' expiries, and only an override without one (until
/// deleted, as configuration is) keeps it without a TTL. An index whose last member leaves
/// is deleted by Redis itself.
/// KEYS[1]: the index. ARGV: the identifier, the override's TTL in ms ('0': none).
pub(crate) const LIST_SCRIPT: &str = "\
local before = redis.call('PTTL', KEYS[1])
redis.call('ZADD', KEYS[1], 0, ARGV[1])
local ttl = tonumber(ARGV[2])
if ttl == 0 then
  redis.call('PERSIST', KEYS[1])
elseif before == -2 or (before >= 0 and before < ttl) then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1";

/// Store `value` as the override of `target`, then list it in the index.
pub(crate) async fn set(
    connection: &Connection,
    prefix: &str,
    target: &Check<'_>,
    value: &Override,
) -> Result<(), StoreError> {
    let policy = &value.policy;
    let ttl_ms = value.expires_in.map_or(0, |d| {
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
    });
    let mut set = redis::cmd("EVAL");
    set.arg(SET_SCRIPT)
        .arg(1)
        .arg(keys::override_key(prefix, target.name, target.key))
        .arg(ttl_ms)
        .arg("algorithm")
        .arg(policy.algorithm().name())
        .arg("limit")
        .arg(policy.limit())
        .arg("period_us")
        .arg(crate::script::period_argument(policy))
        .arg("burst")
        .arg(policy.capacity());
    let _: i64 = connection.query(&set).await.map_err(backend)?;
    let mut list = redis::cmd("EVAL");
    list.arg(LIST_SCRIPT)
        .arg(1)
        .arg(keys::override_index(prefix, target.name))
        .arg(target.key)
        .arg(ttl_ms);
    let _: i64 = connection.query(&list).await.map_err(backend)?;
    announce(connection, prefix, target).await;
    Ok(())
}

/// Announce a change of `target`'s override. The override stands whether or not this reaches
/// anyone: an instance that misses it forgets its cached rejections within a second anyway.
async fn announce(connection: &Connection, prefix: &str, target: &Check<'_>) {
    let message = format!("{}\n{}", target.name, target.key);
    let published: Result<i64, _> = connection
        .query(
            redis::cmd("PUBLISH")
                .arg(keys::override_channel(prefix))
                .arg(message),
        )
        .await;
    if let Err(error) = published {
        tracing::warn!(%error, policy = target.name.as_str(), "override change not announced");
    }
}

/// Follow the announcements of override changes under `prefix` while `alive` holds, calling
/// `on_change` for each (and with [`OverrideChange::Resubscribed`] after every (re)connection).
/// Keeps resubscribing, to the next node each time, once a second while Redis is unreachable.
pub(crate) async fn watch_changes<T: Send + Sync + 'static>(
    alive: Weak<T>,
    connection: impl Fn(&T) -> &Connection + Send,
    prefix: String,
    on_change: impl Fn(OverrideChange<'_>) + Send,
) {
    let channel = keys::override_channel(&prefix);
    for attempt in 0.. {
        let subscribed = {
            let Some(owner) = alive.upgrade() else {
                return;
            };
            let listener = connection(&owner).listener(attempt).await;
            async {
                let mut pubsub = listener?.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                redis::RedisResult::Ok(pubsub)
            }
            .await
        };
        if let Ok(pubsub) = subscribed {
            on_change(OverrideChange::Resubscribed);
            let mut messages = pubsub.into_on_message();
            while let Some(message) = messages.next().await {
                if alive.strong_count() == 0 {
                    return;
                }
                let payload: String = message.get_payload().unwrap_or_default();
                if let Some((policy, key)) = payload.split_once('\n') {
                    on_change(OverrideChange::Changed { policy, key });
                }
            }
        }
        if alive.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The override of `target` standing now.
pub(crate) async fn get(
    connection: &Connection,
    prefix: &str,
    target: &Check<'_>,
) -> Result<Option<Override>, StoreError> {
    let key = keys::override_key(prefix, target.name, target.key);
    let mut read = redis::pipe();
    read.cmd("HMGET")
        .arg(&key)
        .arg(&["algorithm", "limit", "period_us", "burst"])
        .cmd("PTTL")
        .arg(&key);
    let (fields, ttl_ms): (Vec<Option<String>>, i64) =
        connection.pipeline(&read).await.map_err(backend)?;
    parse(target.policy, &fields, ttl_ms)
}

/// Delete the override of `target` and its index entry; whether it stood.
pub(crate) async fn delete(
    connection: &Connection,
    prefix: &str,
    target: &Check<'_>,
) -> Result<bool, StoreError> {
    let stood = get(connection, prefix, target).await?.is_some();
    let _: i64 = connection
        .query(redis::cmd("DEL").arg(keys::override_key(prefix, target.name, target.key)))
        .await
        .map_err(backend)?;
    unlist(connection, prefix, target.name, target.key).await?;
    announce(connection, prefix, target).await;
    Ok(stood)
}

/// Up to `count` (at least 1) overrides of `name` after `after`, keys ascending, and a cursor
/// only when more stand after them: as the memory store pages, so a page is never empty while
/// overrides remain, whatever expired in between.
pub(crate) async fn list(
    connection: &Connection,
    prefix: &str,
    name: &PolicyName,
    policy: &Policy,
    after: Option<&str>,
    count: usize,
) -> Result<OverridePage, StoreError> {
    let index = keys::override_index(prefix, name);
    let mut start = after.map_or_else(|| "-".to_owned(), |after| format!("({after}"));
    // One more than the page, to know whether another page follows.
    let mut found: Vec<(String, Override)> = Vec::with_capacity(count + 1);
    loop {
        let wanted = count + 1 - found.len();
        let members: Vec<String> = connection
            .query(
                redis::cmd("ZRANGEBYLEX")
                    .arg(&index)
                    .arg(&start)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(wanted),
            )
            .await
            .map_err(backend)?;
        let exhausted = members.len() < wanted;
        if let Some(last) = members.last() {
            start = format!("({last}");
        }
        for key in members {
            let target = Check {
                name,
                policy,
                key: &key,
            };
            match get(connection, prefix, &target).await? {
                Some(value) => found.push((key, value)),
                None => unlist(connection, prefix, name, &key).await?,
            }
        }
        if exhausted || found.len() > count {
            break;
        }
    }
    let next_cursor = (found.len() > count).then(|| found[count - 1].0.clone());
    found.truncate(count);
    Ok(OverridePage {
        overrides: found,
        next_cursor,
    })
}

/// Drop `key` from `name`'s index.
async fn unlist(
    connection: &Connection,
    prefix: &str,
    name: &str,
    key: &str,
) -> Result<(), StoreError> {
    let _: i64 = connection
        .query(
            redis::cmd("ZREM")
                .arg(keys::override_index(prefix, name))
                .arg(key),
        )
        .await
        .map_err(backend)?;
    Ok(())
}

/// An override read back: `None` when absent or set for another algorithm than `policy`'s
/// (as `override.lua` ignores it); an error when the hash is not one tollgate wrote.
fn parse(
    policy: &Policy,
    fields: &[Option<String>],
    ttl_ms: i64,
) -> Result<Option<Override>, StoreError> {
    let [Some(algorithm), limit, period_us, burst] = fields else {
        return Ok(None);
    };
    if algorithm != policy.algorithm().name() {
        return Ok(None);
    }
    let number = |field: &Option<String>| -> Result<u64, StoreError> {
        field
            .as_deref()
            .and_then(|text| text.parse().ok())
            .ok_or_else(|| StoreError::Protocol(format!("malformed override field {field:?}")))
    };
    let (limit, period_us, burst) = (number(limit)?, number(period_us)?, number(burst)?);
    // Period 0: calendar months (as the scripts read it).
    let overriding = if period_us == 0 {
        Policy::monthly(policy.algorithm(), limit)
    } else {
        Policy::new(
            policy.algorithm(),
            limit,
            Duration::from_micros(period_us),
            policy.algorithm().has_burst().then_some(burst),
        )
    }
    .map_err(|e| StoreError::Protocol(format!("override does not make a policy: {e}")))?;
    Ok(Some(Override {
        policy: overriding,
        // -1: no TTL; -2: gone between the two reads (then HMGET found nothing either).
        expires_in: u64::try_from(ttl_ms).ok().map(Duration::from_millis),
    }))
}

fn backend(e: redis::RedisError) -> StoreError {
    StoreError::Backend(Box::new(e))
}
