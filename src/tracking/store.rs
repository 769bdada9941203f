//! Pending purge tasks in Redis, per provider, under the key prefix:
//!
//! - `{prefix}:track:{provider}:due` — sorted set, task id → Unix ms when it is next due; a
//!   claim moves it to now + lease, so other replicas leave it alone meanwhile;
//! - `{prefix}:track:{provider}:task:{id}` — the task as JSON ([`TrackedTask`]), with a TTL of
//!   [`super::MAX_TASK_AGE`] plus a day, so nothing outlives the asking;
//! - `{prefix}:track:{provider}:total:{state}` — cluster-wide counts of finished tasks.
//!
//! Every time comparison uses the Redis server's clock (`TIME`), never a replica's.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};

/// A tracked task as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackedTask {
    /// The provider's task id.
    pub id: String,
    /// `url`, `dir` or `regex`.
    pub kind: String,
    /// `flush` or `delete`.
    pub flush: String,
    /// 0 for the original call, 1 for the re-purge of a failed task.
    pub attempt: u8,
    /// Unix ms the call was accepted.
    pub submitted_ms: i64,
    /// `(cache key, Unix ms of the earliest event waiting on it)`.
    pub keys: Vec<(String, i64)>,
    /// The call's request headers (Wangsu `fileHeaders`), for a re-purge.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<crate::provider::Header>,
    /// Every item of the call was bulk (a re-purge then stays within bulk's share of the quota).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub bulk: bool,
}

/// Adds a task unless the provider already tracks `max` (then 0): SET with TTL, ZADD due.
const ADD_LUA: &str = r"
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[5])
return 1
";

/// Claims up to ARGV[1] due tasks for ARGV[2] ms; returns the ids.
const CLAIM_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id) end
return ids
";

/// Moves a still-tracked task's due time to now + ARGV[1] ms.
const RESCHEDULE_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[1]), ARGV[2])
";

/// The task store of one provider; cheap to clone.
#[derive(Clone)]
pub struct TaskStore {
    conn: ConnectionManager,
    base: String,
    add: Script,
    claim: Script,
    reschedule: Script,
}

impl std::fmt::Debug for TaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskStore")
            .field("base", &self.base)
            .finish()
    }
}

/// A Redis failure of the store.
pub type StoreError = redis::RedisError;

impl TaskStore {
    /// Connects lazily (like the quota store); `prefix` is `redis.key_prefix`.
    pub fn connect(url: &str, prefix: &str, provider: &str) -> Result<TaskStore, StoreError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(2));
        Ok(TaskStore {
            conn: client.get_connection_manager_lazy(config)?,
            base: format!("{prefix}:track:{provider}"),
            add: Script::new(ADD_LUA),
            claim: Script::new(CLAIM_LUA),
            reschedule: Script::new(RESCHEDULE_LUA),
        })
    }

    fn due_key(&self) -> String {
        format!("{}:due", self.base)
    }

    fn task_key(&self, id: &str) -> String {
        format!("{}:task:{id}", self.base)
    }

    fn total_key(&self, state: &str) -> String {
        format!("{}:total:{state}", self.base)
    }

    /// Stores `task`, first due after `first_poll`; `false` when `max` tasks are pending.
    pub async fn add(
        &self,
        task: &TrackedTask,
        first_poll: Duration,
        max: u64,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(task).unwrap_or_default();
        let ttl = (super::MAX_TASK_AGE + Duration::from_secs(86_400)).as_secs();
        let added: i64 = self
            .add
            .key(self.due_key())
            .key(self.task_key(&task.id))
            .arg(max)
            .arg(json)
            .arg(ttl)
            .arg(first_poll.as_millis() as u64)
            .arg(&task.id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(added == 1)
    }

    /// Claims up to `n` due tasks for `lease`. A task whose record is gone (expired) is dropped.
    pub async fn claim(&self, n: usize, lease: Duration) -> Result<Vec<TrackedTask>, StoreError> {
        let ids: Vec<String> = self
            .claim
            .key(self.due_key())
            .arg(n)
            .arg(lease.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        let mut conn = self.conn.clone();
        for id in ids {
            let json: Option<String> = conn.get(self.task_key(&id)).await?;
            match json.and_then(|j| serde_json::from_str::<TrackedTask>(&j).ok()) {
                Some(task) => out.push(task),
                None => {
                    let _: i64 = conn.zrem(self.due_key(), &id).await?;
                }
            }
        }
        Ok(out)
    }

    /// Asks about `id` again after `after` (if it is still tracked).
    pub async fn reschedule(&self, id: &str, after: Duration) -> Result<(), StoreError> {
        let _: i64 = self
            .reschedule
            .key(self.due_key())
            .arg(after.as_millis() as u64)
            .arg(id)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Removes a finished task; `true` only for the one caller that removed it (the one that
    /// records the outcome). Counts it under `state` when removed.
    pub async fn finish(&self, id: &str, state: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let removed: i64 = conn.zrem(self.due_key(), id).await?;
        if removed == 1 {
            let _: i64 = conn.del(self.task_key(id)).await?;
            let _: i64 = conn.incr(self.total_key(state), 1).await?;
        }
        Ok(removed == 1)
    }

    /// Cluster-wide `(running, done, failed)`.
    pub async fn counts(&self) -> Result<(u64, u64, u64), StoreError> {
        let mut conn = self.conn.clone();
        let running: u64 = conn.zcard(self.due_key()).await?;
        let done: Option<u64> = conn.get(self.total_key("done")).await?;
        let failed: Option<u64> = conn.get(self.total_key("failed")).await?;
        Ok((running, done.unwrap_or(0), failed.unwrap_or(0)))
    }
}
