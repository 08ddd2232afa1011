//! The shared claims on Redis: the mechanism under [`super::shared`]'s decisions. Each
//! step is one Lua script, so it is one round trip and atomic on the server, and reads
//! the server's clock (`TIME`): pods with skewed clocks agree on when a lease ends.
//!
//! - **claim**: the call's key record and its transaction (or order) record are both
//!   free, or the first one found is returned; if free, a fence is drawn (`INCR`) and
//!   both are written with it and the lease's end (`HSET` + `PEXPIRE`, the semantics of
//!   `SET NX PX` for two keys at once: a call never holds one without the other).
//! - **await**: the owner waits for its check with LINE Pay; a retry is told when.
//! - **complete**: compare-and-set on the fence: the key record keeps the sealed answer
//!   for `state.redis.answer_ttl` (or is deleted when the key may be used again), the
//!   transaction record is deleted. An owner whose lease was taken over changes nothing.
//! - **take over**: an orphan (lease ended, no outcome) gets a new fence and a short
//!   lease, only if its fence is still the one seen: one taker wins.
//! - **lead** and **orphans**: the sweeper's leader lease, and the claims whose lease
//!   ended (a sorted set of record names by lease end, kept by the scripts above).
//!
//! Records live as long as `state.redis.answer_ttl` even while claimed, so an orphan is
//! still there to be found once its lease has ended.

use super::shared::{Completion, SharedRecord};
use crate::state::{Script, SharedRedis, StateError};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, Instant};

static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local epoch = redis.call('GET', KEYS[5])
if not epoch then
  redis.call('SET', KEYS[5], ARGV[4])
  if ARGV[3] ~= '' then
    return {-1, now, '', ARGV[4]}
  end
  epoch = ARGV[4]
elseif ARGV[3] ~= '' and epoch ~= ARGV[3] then
  return {-1, now, '', epoch}
end
for i = 3, 4 do
  if KEYS[i] ~= '' and redis.call('EXISTS', KEYS[i]) == 1 then
    return {i - 2, now, redis.call('HGETALL', KEYS[i]), epoch}
  end
end
local fence = redis.call('INCR', KEYS[1])
local lease_until = now + tonumber(ARGV[1])
for i = 3, 4 do
  if KEYS[i] ~= '' then
    redis.call('HSET', KEYS[i], 'fence', fence, 'lease_until', lease_until, 'state', 'claimed', unpack(ARGV, 5))
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
    redis.call('ZADD', KEYS[2], lease_until, KEYS[i])
  end
end
return {0, now, fence, epoch}
",
    )
});

static AWAIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, 2 do
  if KEYS[i] ~= '' then
    local seen = redis.call('HMGET', KEYS[i], 'fence', 'claim_id')
    if seen[1] == ARGV[1] and seen[2] == ARGV[3] then
      redis.call('HSET', KEYS[i], 'due', now + tonumber(ARGV[2]))
    end
  end
end
return 1
",
    )
});

static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local function mine(name)
  if name == '' then
    return false
  end
  local seen = redis.call('HMGET', name, 'fence', 'claim_id')
  return seen[1] == ARGV[1] and seen[2] == ARGV[4]
end
local done = 0
if mine(KEYS[2]) then
  if ARGV[2] == '1' then
    redis.call('DEL', KEYS[2])
  else
    redis.call('HSET', KEYS[2], 'state', 'done', unpack(ARGV, 5))
    redis.call('HDEL', KEYS[2], 'due')
    redis.call('PEXPIRE', KEYS[2], ARGV[3])
  end
  redis.call('ZREM', KEYS[1], KEYS[2])
  done = done + 1
end
if mine(KEYS[3]) then
  redis.call('DEL', KEYS[3])
  redis.call('ZREM', KEYS[1], KEYS[3])
  done = done + 2
end
return done
",
    )
});

static TAKE_OVER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seen = redis.call('HMGET', KEYS[3], 'fence', 'state', 'lease_until', 'claim_id')
if seen[1] ~= ARGV[1] or seen[4] ~= ARGV[4] or seen[2] == 'done' or tonumber(seen[3] or now) > now then
  return 0
end
local fence = redis.call('INCR', KEYS[1])
local lease_until = now + tonumber(ARGV[2])
for i = 3, 4 do
  if KEYS[i] ~= '' and redis.call('HGET', KEYS[i], 'fence') == ARGV[1] and redis.call('HGET', KEYS[i], 'claim_id') == ARGV[4] then
    redis.call('HSET', KEYS[i], 'fence', fence, 'lease_until', lease_until, 'state', 'reconciling', 'taken_by', ARGV[3])
    redis.call('HDEL', KEYS[i], 'due')
    redis.call('ZADD', KEYS[2], lease_until, KEYS[i])
  end
end
return fence
",
    )
});

static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], KEYS[1])
end
return {now, redis.call('HGETALL', KEYS[1])}
",
    )
});

static LEAD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
",
    )
});

static ORPHANS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - 1, 'LIMIT', 0, tonumber(ARGV[1]))
",
    )
});

static RELEASE_UNANSWERED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local released = 0
for i = 2, 3 do
  if KEYS[i] ~= '' then
    local seen = redis.call('HMGET', KEYS[i], 'claim_id', 'state')
    if seen[1] == ARGV[1] and seen[2] == 'claimed' then
      redis.call('DEL', KEYS[i])
      redis.call('ZREM', KEYS[1], KEYS[i])
      released = released + 1
    end
  end
end
return released
",
    )
});

/// A claim held by this pod: its fence and the records it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) fence: u64,
    /// The claim's random id: with the fence, what makes it this claim. A fence alone
    /// is drawn again from 1 by a Redis that lost its data.
    pub(crate) claim_id: String,
    pub(crate) idem: Option<String>,
    pub(crate) txn: Option<String>,
}

/// What a claim found.
#[derive(Debug)]
pub(crate) enum Claimed {
    /// Both records were free: they are this pod's now.
    Held(Claim),
    /// A record was taken: the one found first (`under_key`: the key's), and the
    /// shared state's clock when it was read.
    Found {
        record: Box<SharedRecord>,
        under_key: bool,
        now_ms: i64,
    },
}

/// The claims of one sidecar on one Redis.
pub(crate) struct Claims {
    redis: SharedRedis,
    /// This pod's name in the records it owns (`HOSTNAME`, a Kubernetes pod's name, and
    /// a random suffix: a restarted pod is another owner).
    pod: String,
    answer_ttl: Duration,
    /// What tells a Redis that lost its data: the channel's epoch record, written once
    /// with a random value and never expiring; gone or changed, the records went with it.
    epoch: Mutex<Epoch>,
}

/// The epoch this pod has seen, and until when it refuses claims after a loss.
#[derive(Default)]
struct Epoch {
    seen: Option<String>,
    refuse_until: Option<Instant>,
}

fn millis(duration: Duration) -> Vec<u8> {
    u64::try_from(duration.as_millis())
        .unwrap_or(u64::MAX)
        .to_string()
        .into_bytes()
}

impl Claims {
    pub(crate) fn new(redis: SharedRedis, answer_ttl: Duration) -> Claims {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "sidecar".to_owned());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Claims {
            redis,
            pod: format!("{host}-{}", &suffix[..8]),
            answer_ttl,
            epoch: Mutex::new(Epoch::default()),
        }
    }

    fn epoch_name(&self) -> String {
        self.redis.keys.key("epoch", &[])
    }

    /// The refusal still running after a loss of the shared records, if any.
    fn refusing(&self) -> Option<Duration> {
        let epoch = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
        let until = epoch.refuse_until?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// Runs `script` once (see [`crate::state::RedisClient::run_script`]).
    async fn run<T: ::redis::FromRedisValue>(
        &self,
        operation: &'static str,
        script: &Script,
        keys: &[String],
        args: &[Vec<u8>],
    ) -> Result<T, StateError> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let args: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
        self.redis
            .client
            .run_script(operation, script, &keys, &args)
            .await
    }

    pub(crate) fn pod(&self) -> &str {
        &self.pod
    }

    /// The name of the record of a call's idempotency key.
    pub(crate) fn idem_name(&self, key: &str) -> String {
        self.redis.keys.key("idem", &[key])
    }

    /// The name of a money call's transaction (or order) record; `lock` is
    /// [`crate::money::CallFacts::lock_key`].
    pub(crate) fn txn_name(&self, lock: &str) -> String {
        match lock.split_once(' ') {
            Some(("order", id)) => self.redis.keys.key("order", &[id]),
            Some((_, id)) => self.redis.keys.key("txn", &[id]),
            None => self.redis.keys.key("txn", &[lock]),
        }
    }

    fn fence_name(&self) -> String {
        self.redis.keys.key("fence", &[])
    }

    fn index_name(&self) -> String {
        self.redis.keys.key("claims", &[])
    }

    /// Claims `record`'s key and transaction records (named in it) for `lease`.
    ///
    /// Refused with [`StateError::DataLost`] when the channel's epoch record is gone or
    /// changed since this pod last saw it: Redis lost its records (a restart without
    /// persistence, a failover to a replica without them), so a call in flight, or an
    /// answer kept for replay, may be missing, and a retry would be sent again. Claims
    /// are then refused for `refusal` (the longest lease a call holds), by which time
    /// every call the lost records guarded has ended.
    pub(crate) async fn claim(
        &self,
        record: &SharedRecord,
        lease: Duration,
        refusal: Duration,
    ) -> Result<Claimed, StateError> {
        if let Some(left) = self.refusing() {
            return Err(StateError::DataLost(left));
        }
        let idem = record.idem_record.clone().unwrap_or_default();
        let txn = record.txn_record.clone().unwrap_or_default();
        let seen = {
            let epoch = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
            epoch.seen.clone().unwrap_or_default()
        };
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        let mut args = vec![
            millis(lease),
            millis(self.answer_ttl),
            seen.into_bytes(),
            fresh.into_bytes(),
        ];
        for (name, value) in record.claim_fields() {
            args.push(name.as_bytes().to_vec());
            args.push(value);
        }
        let keys = [
            self.fence_name(),
            self.index_name(),
            idem.clone(),
            txn.clone(),
            self.epoch_name(),
        ];
        let (found, now_ms, rest, current): (i64, i64, ::redis::Value, String) =
            self.run("claim", &CLAIM, &keys, &args).await?;
        {
            let mut epoch = self.epoch.lock().unwrap_or_else(PoisonError::into_inner);
            epoch.seen = Some(current);
            if found < 0 {
                epoch.refuse_until = Some(Instant::now() + refusal);
            }
        }
        if found < 0 {
            return Err(StateError::DataLost(refusal));
        }
        if found == 0 {
            let fence: u64 = ::redis::from_redis_value(rest.clone())
                .map_err(|e| StateError::Protocol(e.to_string()))?;
            return Ok(Claimed::Held(Claim {
                fence,
                claim_id: record.claim_id.clone(),
                idem: (!idem.is_empty()).then_some(idem),
                txn: (!txn.is_empty()).then_some(txn),
            }));
        }
        let pairs: Vec<(String, Vec<u8>)> = ::redis::from_redis_value(rest.clone())
            .map_err(|e| StateError::Protocol(e.to_string()))?;
        let record = SharedRecord::from_fields(&pairs).ok_or_else(|| {
            StateError::Protocol(
                "a claim record without its fields (written by something else?)".to_owned(),
            )
        })?;
        Ok(Claimed::Found {
            record: Box::new(record),
            under_key: found == 1,
            now_ms,
        })
    }

    /// Releases the claim of `record` (by its `claim_id`) whose answer was lost (the
    /// claim timed out, or its connection broke): it may have been written, and its call
    /// was not sent. The number of records released.
    pub(crate) async fn release_unanswered(
        &self,
        record: &SharedRecord,
    ) -> Result<i64, StateError> {
        let keys = [
            self.index_name(),
            record.idem_record.clone().unwrap_or_default(),
            record.txn_record.clone().unwrap_or_default(),
        ];
        let args = vec![record.claim_id.as_bytes().to_vec()];
        self.run("release", &RELEASE_UNANSWERED, &keys, &args).await
    }

    /// The claim's call waits for its check with LINE Pay, due in `due_in`.
    pub(crate) async fn await_check(
        &self,
        claim: &Claim,
        due_in: Duration,
    ) -> Result<(), StateError> {
        let keys = [
            claim.idem.clone().unwrap_or_default(),
            claim.txn.clone().unwrap_or_default(),
        ];
        let args = vec![
            claim.fence.to_string().into_bytes(),
            millis(due_in),
            claim.claim_id.as_bytes().to_vec(),
        ];
        let _: i64 = self.run("await", &AWAIT, &keys, &args).await?;
        Ok(())
    }

    /// Completes `claim` by compare-and-set on its fence; `false` when its lease was
    /// taken over (nothing was changed).
    pub(crate) async fn complete(
        &self,
        claim: &Claim,
        completion: &Completion,
    ) -> Result<bool, StateError> {
        let keys = [
            self.index_name(),
            claim.idem.clone().unwrap_or_default(),
            claim.txn.clone().unwrap_or_default(),
        ];
        let mut args = vec![claim.fence.to_string().into_bytes()];
        match completion {
            Completion::Forget => {
                args.push(b"1".to_vec());
                args.push(millis(self.answer_ttl));
                args.push(claim.claim_id.as_bytes().to_vec());
            }
            Completion::Keep(fields) => {
                args.push(b"0".to_vec());
                args.push(millis(self.answer_ttl));
                args.push(claim.claim_id.as_bytes().to_vec());
                for (name, value) in fields {
                    args.push(name.as_bytes().to_vec());
                    args.push(value.clone());
                }
            }
        }
        let done: i64 = self.run("complete", &COMPLETE, &keys, &args).await?;
        Ok(done > 0)
    }

    /// Takes over the orphan `record` (both its records) for `lease`; `None` when
    /// another pod took it first, or it is no longer an orphan.
    pub(crate) async fn take_over(
        &self,
        record: &SharedRecord,
        found_under_key: bool,
        lease: Duration,
    ) -> Result<Option<Claim>, StateError> {
        let (found, sibling) = match found_under_key {
            true => (record.idem_record.clone(), record.txn_record.clone()),
            false => (record.txn_record.clone(), record.idem_record.clone()),
        };
        let Some(found) = found else {
            return Ok(None);
        };
        let keys = [
            self.fence_name(),
            self.index_name(),
            found,
            sibling.unwrap_or_default(),
        ];
        let args = vec![
            record.fence.to_string().into_bytes(),
            millis(lease),
            self.pod.as_bytes().to_vec(),
            record.claim_id.as_bytes().to_vec(),
        ];
        let fence: u64 = self.run("takeover", &TAKE_OVER, &keys, &args).await?;
        Ok((fence > 0).then(|| Claim {
            fence,
            claim_id: record.claim_id.clone(),
            idem: record.idem_record.clone(),
            txn: record.txn_record.clone(),
        }))
    }

    /// The record named `name`, with the shared state's clock; `None` when it is gone.
    pub(crate) async fn read(&self, name: &str) -> Result<Option<(SharedRecord, i64)>, StateError> {
        let keys = [name.to_owned(), self.index_name()];
        let (now_ms, pairs): (i64, Vec<(String, Vec<u8>)>) =
            self.run("read", &READ, &keys, &[]).await?;
        Ok(SharedRecord::from_fields(&pairs).map(|record| (record, now_ms)))
    }

    /// Takes or keeps the sweeper's leader lease for `lease`: `true` while this pod
    /// leads.
    pub(crate) async fn lead(&self, lease: Duration) -> Result<bool, StateError> {
        let keys = [self.redis.keys.key("sweeper", &[])];
        let args = vec![self.pod.as_bytes().to_vec(), millis(lease)];
        let leads: i64 = self.run("lead", &LEAD, &keys, &args).await?;
        Ok(leads == 1)
    }

    /// At most `limit` records whose lease has ended.
    pub(crate) async fn orphans(&self, limit: usize) -> Result<Vec<String>, StateError> {
        let keys = [self.index_name()];
        let args = vec![limit.to_string().into_bytes()];
        self.run("orphans", &ORPHANS, &keys, &args).await
    }
}

/// The scripts against a real Redis (Debian's `/usr/bin/redis-server` on a free
/// loopback port), one server per test.
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::journal::shared::RecordState;
    use crate::money::CallFacts;
    use crate::state::{KeySpace, RedisClient, RedisConfig, StateMetrics, DEFAULT_FALLBACK_SHARE};
    use std::process::{Child, Command, Stdio};

    struct Server {
        child: Child,
        port: u16,
        dir: std::path::PathBuf,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn redis_server() -> Server {
        let dir = std::env::temp_dir().join(format!("claims-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let child = Command::new("/usr/bin/redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("/usr/bin/redis-server (Debian's redis-server package)");
            let mut server = Server {
                child,
                port,
                dir: dir.clone(),
            };
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return server;
                }
                if server.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = server.child.kill();
        }
        panic!("redis-server did not start");
    }

    async fn claims(server: &Server, pod: &str) -> Claims {
        let config = RedisConfig {
            url: format!("redis://127.0.0.1:{}", server.port),
            password: None,
            ca_pem: None,
            ca_file: None,
            key_prefix: "t".into(),
            command_timeout: Duration::from_secs(2),
            connect_timeout: Duration::from_secs(2),
            fallback_share: DEFAULT_FALLBACK_SHARE,
            answer_ttl: Duration::from_secs(3600),
            money_fallback: crate::state::MoneyFallback::Refuse,
        };
        let metrics = StateMetrics {
            duration: prometheus::HistogramVec::new(
                prometheus::HistogramOpts::new("d", "d"),
                &["operation"],
            )
            .unwrap(),
            errors: prometheus::IntCounterVec::new(prometheus::Opts::new("e", "e"), &["kind"])
                .unwrap(),
            up: prometheus::IntGauge::new("u", "u").unwrap(),
        };
        let client = RedisClient::start(&config, metrics).unwrap();
        let ping = ::redis::cmd("PING");
        let mut connected = false;
        for _ in 0..100 {
            if client.query::<String>("test", &ping).await.is_ok() {
                connected = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(connected, "no connection to the test's Redis");
        let redis = SharedRedis {
            client,
            keys: KeySpace::new("t", "c"),
            fallback_share: DEFAULT_FALLBACK_SHARE,
        };
        let mut claims = Claims::new(redis, Duration::from_secs(3600));
        claims.pod = pod.to_owned();
        claims
    }

    fn record(claims: &Claims, key: Option<&str>, tx: &str) -> SharedRecord {
        SharedRecord {
            fence: 0,
            state: RecordState::Claimed,
            lease_until_ms: 0,
            due_ms: None,
            pod: claims.pod.clone(),
            claim_id: uuid::Uuid::new_v4().to_string(),
            channel_id: "c".into(),
            request_id: "r".into(),
            started_at_ms: 1,
            method: "POST".into(),
            route: "/v3/payments/{transactionId}/refund".into(),
            facts: CallFacts::read(Some(tx), None, b"{}"),
            key: key.map(str::to_owned),
            binding: key.map(|k| format!("binding of {k}")),
            idem_record: key.map(|k| claims.idem_name(k)),
            txn_record: Some(claims.txn_name(&format!("transaction {tx}"))),
            outcome: None,
            status: None,
            reconciled: None,
            answer: None,
        }
    }

    fn held(claimed: Claimed) -> Claim {
        match claimed {
            Claimed::Held(claim) => claim,
            Claimed::Found { record, .. } => panic!("found {record:?}"),
        }
    }

    fn found(claimed: Claimed) -> (SharedRecord, bool, i64) {
        match claimed {
            Claimed::Found {
                record,
                under_key,
                now_ms,
            } => (*record, under_key, now_ms),
            Claimed::Held(claim) => panic!("held {claim:?}"),
        }
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn a_redis_that_lost_its_records_refuses_claims_and_an_old_fence_completes_nothing() {
        let server = redis_server();
        let (a, b) = (
            claims(&server, "pod-a").await,
            claims(&server, "pod-b").await,
        );
        let old = held(
            a.claim(&record(&a, Some("k"), "7"), LONG, LONG)
                .await
                .unwrap(),
        );
        // Redis restarts without its data: the fence starts again from 1.
        let client = ::redis::Client::open(format!("redis://127.0.0.1:{}", server.port)).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = ::redis::cmd("FLUSHALL")
            .query_async(&mut raw)
            .await
            .unwrap();
        // A pod that never saw the old records cannot tell: it claims anew, same fence.
        let new = held(
            b.claim(&record(&b, Some("k"), "7"), LONG, LONG)
                .await
                .unwrap(),
        );
        assert_eq!(new.fence, old.fence, "the fence was drawn again");
        // The old owner's completion must not clear the new owner's claim.
        assert!(!a.complete(&old, &Completion::Forget).await.unwrap());
        let (seen, _, _) = found(
            b.claim(&record(&b, Some("k"), "7"), LONG, LONG)
                .await
                .unwrap(),
        );
        assert_eq!(seen.claim_id, new.claim_id, "the new claim stands");
        // A pod that saw the old epoch notices the loss and refuses, without asking again.
        let refused = a.claim(&record(&a, None, "8"), LONG, LONG).await;
        assert!(
            matches!(refused, Err(StateError::DataLost(_))),
            "{refused:?}"
        );
        let again = a.claim(&record(&a, None, "9"), LONG, LONG).await;
        assert!(matches!(again, Err(StateError::DataLost(left)) if left <= LONG));
        // Its owner completes it by fence and id.
        assert!(b.complete(&new, &Completion::Forget).await.unwrap());
    }

    #[tokio::test]
    async fn a_claim_holds_key_and_transaction_until_completed_by_its_fence() {
        let server = redis_server();
        let claims = claims(&server, "pod-a").await;
        assert_eq!(claims.idem_name("k:1"), "t:c:idem:k%3A1");
        assert_eq!(claims.txn_name("transaction 7"), "t:c:txn:7");
        assert_eq!(claims.txn_name("order o 1"), "t:c:order:o 1");
        let call = record(&claims, Some("k"), "7");
        let claim = held(claims.claim(&call, LONG, LONG).await.unwrap());
        assert_eq!(claim.idem.as_deref(), Some("t:c:idem:k"));
        assert_eq!(claim.txn.as_deref(), Some("t:c:txn:7"));
        // The same key: its record, found under the key.
        let (seen, under_key, now) = found(claims.claim(&call, LONG, LONG).await.unwrap());
        assert!(under_key);
        assert_eq!(seen.fence, claim.fence);
        assert_eq!(seen.state, RecordState::Claimed);
        assert!(seen.lease_until_ms > now + 59_000, "{seen:?} {now}");
        assert_eq!(seen.facts, call.facts);
        assert_eq!(seen.binding, call.binding);
        // Another call on the transaction: found under the transaction.
        let keyless = record(&claims, None, "7");
        let (_, under_key, _) = found(claims.claim(&keyless, LONG, LONG).await.unwrap());
        assert!(!under_key);
        // Another transaction is free, with a later fence.
        let other = held(
            claims
                .claim(&record(&claims, None, "8"), LONG, LONG)
                .await
                .unwrap(),
        );
        assert!(other.fence > claim.fence);
        assert_eq!(other.idem, None);
        // Waiting for its check: the due time is on record.
        claims
            .await_check(&claim, Duration::from_secs(30))
            .await
            .unwrap();
        let (seen, _, now) = found(claims.claim(&call, LONG, LONG).await.unwrap());
        let due = seen.due_ms.unwrap();
        assert!((now + 29_000..=now + 30_000).contains(&due), "{due} {now}");
        // A stale fence changes nothing.
        let stale = Claim {
            fence: claim.fence + 100,
            ..claim.clone()
        };
        let keep = Completion::Keep(vec![
            ("outcome", b"answered".to_vec()),
            ("answer", vec![2, 0, 1]),
        ]);
        assert!(!claims.complete(&stale, &keep).await.unwrap());
        assert!(claims.complete(&claim, &keep).await.unwrap());
        let (done, _, _) = found(claims.claim(&call, LONG, LONG).await.unwrap());
        assert_eq!(done.state, RecordState::Done);
        assert_eq!(done.answer, Some(vec![2, 0, 1]));
        assert_eq!(done.outcome.as_deref(), Some("answered"));
        assert_eq!(done.due_ms, None);
        // The transaction is free again; the key's record is kept for the answer's time.
        let next = held(claims.claim(&keyless, LONG, LONG).await.unwrap());
        assert!(claims.complete(&next, &Completion::Forget).await.unwrap());
        let (kept, _) = claims.read("t:c:idem:k").await.unwrap().unwrap();
        assert_eq!(kept.state, RecordState::Done);
        assert!(claims
            .orphans(10)
            .await
            .unwrap()
            .iter()
            .all(|n| n != "t:c:idem:k"));
    }

    #[tokio::test]
    async fn a_claim_whose_answer_was_lost_is_released_by_its_own_id_only() {
        let server = redis_server();
        let claims = claims(&server, "pod-a").await;
        let call = record(&claims, Some("k"), "7");
        held(claims.claim(&call, LONG, LONG).await.unwrap());
        let mut other = call.clone();
        other.claim_id = "another".into();
        assert_eq!(claims.release_unanswered(&other).await.unwrap(), 0);
        assert_eq!(claims.release_unanswered(&call).await.unwrap(), 2);
        assert_eq!(claims.read("t:c:idem:k").await.unwrap(), None);
        assert_eq!(claims.read("t:c:txn:7").await.unwrap(), None);
        // Completed, it is no longer a claim to release.
        let claim = held(claims.claim(&call, LONG, LONG).await.unwrap());
        let keep = Completion::Keep(vec![("outcome", b"answered".to_vec())]);
        assert!(claims.complete(&claim, &keep).await.unwrap());
        assert_eq!(claims.release_unanswered(&call).await.unwrap(), 0);
        assert!(claims.read("t:c:idem:k").await.unwrap().is_some());
    }

    #[tokio::test]
    async fn a_forgotten_key_may_be_claimed_again() {
        let server = redis_server();
        let claims = claims(&server, "pod-a").await;
        let call = record(&claims, Some("k"), "7");
        let first = held(claims.claim(&call, LONG, LONG).await.unwrap());
        assert!(claims.complete(&first, &Completion::Forget).await.unwrap());
        assert_eq!(claims.read("t:c:idem:k").await.unwrap(), None);
        let again = held(claims.claim(&call, LONG, LONG).await.unwrap());
        assert!(again.fence > first.fence);
    }

    #[tokio::test]
    async fn an_orphan_is_taken_over_once_its_lease_ended_by_one_pod_and_its_owner_is_fenced_off() {
        let server = redis_server();
        let a = claims(&server, "pod-a").await;
        let b = claims(&server, "pod-b").await;
        let call = record(&a, Some("k"), "7");
        let claim = held(
            a.claim(&call, Duration::from_millis(300), LONG)
                .await
                .unwrap(),
        );
        let (seen, under_key, _) = found(b.claim(&call, LONG, LONG).await.unwrap());
        // Alive: not taken.
        assert_eq!(b.take_over(&seen, under_key, LONG).await.unwrap(), None);
        assert!(b.orphans(10).await.unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(400)).await;
        let mut orphans = b.orphans(10).await.unwrap();
        orphans.sort();
        assert_eq!(orphans, ["t:c:idem:k", "t:c:txn:7"]);
        // Only for the fence seen.
        let mut wrong = seen.clone();
        wrong.fence += 1;
        assert_eq!(b.take_over(&wrong, under_key, LONG).await.unwrap(), None);
        let taken = b.take_over(&seen, under_key, LONG).await.unwrap().unwrap();
        assert!(taken.fence > claim.fence);
        assert_eq!(taken.idem.as_deref(), Some("t:c:idem:k"));
        assert_eq!(taken.txn.as_deref(), Some("t:c:txn:7"));
        // One taker: the second sees another fence.
        assert_eq!(a.take_over(&seen, under_key, LONG).await.unwrap(), None);
        let (now_taken, _) = a.read("t:c:txn:7").await.unwrap().unwrap();
        assert_eq!(now_taken.state, RecordState::Reconciling);
        assert_eq!(now_taken.fence, taken.fence);
        assert!(b.orphans(10).await.unwrap().is_empty());
        // The owner that lost its lease cannot overwrite the taker's record.
        let late = Completion::Keep(vec![("outcome", b"answered".to_vec())]);
        assert!(!a.complete(&claim, &late).await.unwrap());
        let reconciled = Completion::Keep(vec![
            ("outcome", b"interrupted".to_vec()),
            ("reconciled", b"applied".to_vec()),
        ]);
        assert!(b.complete(&taken, &reconciled).await.unwrap());
        let (done, _) = a.read("t:c:idem:k").await.unwrap().unwrap();
        assert_eq!(done.reconciled.as_deref(), Some("applied"));
        assert_eq!(a.read("t:c:txn:7").await.unwrap(), None);
        // Found under its transaction, a takeover takes the key's record too.
        let keyed = record(&a, Some("k2"), "9");
        let claim = held(
            a.claim(&keyed, Duration::from_millis(100), LONG)
                .await
                .unwrap(),
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (seen, under_key, _) =
            found(b.claim(&record(&b, None, "9"), LONG, LONG).await.unwrap());
        assert!(!under_key);
        let taken = b.take_over(&seen, under_key, LONG).await.unwrap().unwrap();
        assert!(taken.fence > claim.fence);
        let (key_record, _) = b.read("t:c:idem:k2").await.unwrap().unwrap();
        assert_eq!(key_record.fence, taken.fence);
        // A done record is never taken over.
        let mut done = done;
        done.lease_until_ms = 0;
        assert_eq!(b.take_over(&done, true, LONG).await.unwrap(), None);
    }

    #[tokio::test]
    async fn one_pod_at_a_time_leads_the_sweeper_and_a_gone_record_leaves_the_index() {
        let server = redis_server();
        let a = claims(&server, "pod-a").await;
        let b = claims(&server, "pod-b").await;
        assert!(a.lead(Duration::from_millis(300)).await.unwrap());
        assert!(!b.lead(Duration::from_millis(300)).await.unwrap());
        // The leader keeps it.
        assert!(a.lead(Duration::from_millis(300)).await.unwrap());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(b.lead(LONG).await.unwrap());
        assert!(!a.lead(LONG).await.unwrap());
        // A record gone (expired) is dropped from the index when read.
        let call = record(&a, None, "7");
        held(
            a.claim(&call, Duration::from_millis(1), LONG)
                .await
                .unwrap(),
        );
        let mut delete = ::redis::cmd("DEL");
        delete.arg("t:c:txn:7");
        let deleted: i64 = a.redis.client.query("test", &delete).await.unwrap();
        assert_eq!(deleted, 1);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(a.orphans(10).await.unwrap(), ["t:c:txn:7"]);
        assert_eq!(a.read("t:c:txn:7").await.unwrap(), None);
        assert!(a.orphans(10).await.unwrap().is_empty());
    }
}
