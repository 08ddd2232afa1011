-- GCRA (the generic cell rate algorithm, as governor runs it in one process) for the
-- buckets of one call (its route's, then the global one), shared by every sidecar of a
-- channel: one round trip, on Redis's own clock, so sidecars whose clocks disagree still
-- agree on the buckets. A token is taken from every bucket or from none.
--
-- KEYS[i]        bucket i: its theoretical arrival time (TAT), in microseconds of
--                Redis's clock, the moment the bucket is full again.
-- ARGV[2i-1]     bucket i's emission interval (time between two tokens), microseconds.
-- ARGV[2i]       bucket i's burst: how many tokens it holds when full.
--
-- Answers {0, 0} when a token was taken from each, else {i, wait}: bucket i, the first
-- without a token, has one in `wait` microseconds (nothing was taken). Each key expires
-- once its bucket is full again.
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local new_tats = {}
for i, key in ipairs(KEYS) do
  local emission = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then
    tat = now
  end
  local new_tat = tat + emission
  local allowed_at = new_tat - emission * burst
  if allowed_at > now then
    return {i, allowed_at - now}
  end
  new_tats[i] = new_tat
end
for i, key in ipairs(KEYS) do
  -- %d: Lua 5.1 would write a number this large as 1.7e+15, losing the microseconds.
  redis.call('SET', key, string.format('%d', new_tats[i]), 'PX',
    math.ceil((new_tats[i] - now) / 1000) + 1)
end
return {0, 0}
