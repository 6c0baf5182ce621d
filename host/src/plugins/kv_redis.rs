//! The Redis `kv` backend: every key under `<namespace>:<plugin>:`, expiry with `PX`, increment
//! and compare-and-swap as Lua scripts (atomic on the server, one round trip each). One
//! multiplexed connection (pipelined; the `redis` crate's `ConnectionManager`) that reconnects
//! by itself; every call is bounded by `kv.timeout_ms`, past which it is `unavailable`, so a
//! plugin decides (fail open or closed) instead of hanging.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, Script};

use super::kv_store::{KvError, check};

/// Adds `delta`; a counter created by this call gets the TTL. (INCRBY refuses values that are
/// not integers, and overflow.)
const INCREMENT: &str = r"
local existed = redis.call('EXISTS', KEYS[1])
local value = redis.call('INCRBY', KEYS[1], ARGV[1])
if existed == 0 and ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return value
";

/// Swaps when the current value is the expected one (`ARGV[1]` = '0': expected absent).
const COMPARE_AND_SWAP: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[2] then
  return 0
end
if ARGV[4] ~= '' then redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) else redis.call('SET', KEYS[1], ARGV[3]) end
return 1
";

/// The store on one Redis server.
pub struct RedisKv {
    connection: ConnectionManager,
    /// `<namespace>:`, put before every key.
    prefix: String,
    /// Longest wait for an answer, connecting included.
    timeout: Duration,
    increment: Script,
    compare_and_swap: Script,
}

impl RedisKv {
    /// A store on the server at `url` (connected on first use, reconnected after failures).
    pub fn new(url: &str, namespace: &str, timeout: Duration) -> Result<Self, KvError> {
        let client = redis::Client::open(url).map_err(|e| KvError::Invalid(format!("kv.url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| KvError::Invalid(format!("kv.url: {e}")))?;
        Ok(Self {
            connection,
            prefix: format!("{namespace}:"),
            timeout,
            increment: Script::new(INCREMENT),
            compare_and_swap: Script::new(COMPARE_AND_SWAP),
        })
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Runs one command within the timeout; failures to reach the server are `unavailable`
    /// (counted), refusals by the server (not a counter, overflow) are `invalid`.
    async fn run<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, KvError> {
        let unavailable = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) if matches!(error.kind(), ErrorKind::Server(_)) => {
                return Err(KvError::Invalid(error.to_string()));
            }
            Ok(Err(error)) => KvError::Unavailable(format!("Redis: {error}")),
            Err(_) => KvError::Unavailable(format!("Redis did not answer within {} ms", self.timeout.as_millis())),
        };
        crate::metrics::metrics().plugins.kv_unavailable();
        Err(unavailable)
    }

    /// The live value at `key`.
    pub async fn get(&self, key: &str) -> Result<Option<String>, KvError> {
        check(key, None)?;
        let key = self.key(key);
        let mut c = self.connection.clone();
        self.run(async move { redis::cmd("GET").arg(&key).query_async(&mut c).await }).await
    }

    /// Stores `value` at `key`, expiring after `ttl_ms` when given.
    pub async fn set(&self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), KvError> {
        check(key, Some(value))?;
        let mut command = redis::cmd("SET");
        command.arg(self.key(key)).arg(value);
        if let Some(ttl) = ttl_ms {
            command.arg("PX").arg(ttl.max(1));
        }
        let mut c = self.connection.clone();
        self.run(async move { command.query_async(&mut c).await }).await
    }

    /// Removes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), KvError> {
        check(key, None)?;
        let key = self.key(key);
        let mut c = self.connection.clone();
        self.run(async move { redis::cmd("DEL").arg(&key).query_async::<()>(&mut c).await }).await
    }

    /// Adds `delta` to the counter at `key`.
    pub async fn increment(&self, key: &str, delta: i64, ttl_ms: Option<u64>) -> Result<i64, KvError> {
        check(key, None)?;
        let mut invocation = self.increment.key(self.key(key));
        invocation.arg(delta).arg(ttl_ms.map(|t| t.max(1).to_string()).unwrap_or_default());
        let mut c = self.connection.clone();
        self.run(async move { invocation.invoke_async(&mut c).await }).await
    }

    /// Replaces the value at `key` with `new` if it equals `expected` (`None`: absent).
    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        check(key, Some(new))?;
        let mut invocation = self.compare_and_swap.key(self.key(key));
        invocation
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or(""))
            .arg(new)
            .arg(ttl_ms.map(|t| t.max(1).to_string()).unwrap_or_default());
        let mut c = self.connection.clone();
        let swapped: i64 = self.run(async move { invocation.invoke_async(&mut c).await }).await?;
        Ok(swapped == 1)
    }
}
